"""The kinds of graded check, each declared once (:data:`CHECKS`), and the grader's scoring of exported models.

A hidden test checks a trained model with ``grading.check_accuracy(...)``,
``grading.check_reconstruction(...)`` or, for any kind, ``grading.check(kind, ...)``
(:mod:`course_utils.grading`, the student-facing side). A :class:`Check` says
everything the kit needs to know about one kind:

- what is measured: :attr:`Check.measure` turns a model's outputs on the test
  images into a number, in the student's kernel and in the grader's scorer alike;
- which way is better and the keyword holding the bound (``at_least`` / ``at_most``);
- which keywords the call takes (``n_test``, ``seed``, ...), and whether inputs are normalised;
- the audit's margin: how far a handed-in score may differ from the re-trained one.

The grader exports the model from the kernel (``torch.export``) and scores that copy in a
fresh, sandboxed process with :func:`score_exported`, which imports only this package (and
the module that declares a kind, named by its ``measure``: the sandbox can import it only
from ``course_utils``). Adding a kind: CONTRIBUTING.md's checklist.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as course_data
from . import exported

EXPORT_BATCH = 100  # exported models take batches of exactly this many images (the last one is padded)


@dataclass(frozen=True)
class Check:
    """One kind of graded check.

    ``measure(outputs, images, labels) -> float`` scores a model's outputs on the test split;
    ``higher_is_better`` and ``bound`` (the call's keyword, ``at_least`` or ``at_most``) say
    which way it must go; ``options`` are the other keywords a call may give (with their
    defaults); ``normalized`` whether ``normalize=`` applies to the model's inputs;
    ``audit_margin`` how far two scores of one hand-in may differ (absolute, or a share of the
    re-trained score when ``relative_margin``).
    """

    name: str
    bound: str
    higher_is_better: bool
    measure: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]
    audit_margin: float
    relative_margin: bool = False
    options: tuple[tuple[str, object], ...] = (("n_test", None), ("seed", 0))
    normalized: bool = False
    unit: str = ""  # how a value reads in messages ("" for a plain number)

    def __post_init__(self) -> None:
        if self.bound not in ("at_least", "at_most"):
            raise ValueError(f"check {self.name!r}: bound must be 'at_least' or 'at_most', not {self.bound!r}")
        if self.higher_is_better != (self.bound == "at_least"):
            raise ValueError(f"check {self.name!r}: a bound {self.bound} means higher_is_better="
                             f"{self.bound == 'at_least'}")

    @property
    def function(self) -> str:
        """The ``grading`` helper that runs it, when it has one of its own (``check_accuracy``)."""
        return f"check_{self.name}"

    def passed(self, value: float, bound: float) -> bool:
        return value >= bound if self.higher_is_better else value <= bound

    def need(self, bound: float) -> str:
        """The bound in words: ``at least 0.9``."""
        return f"{self.bound.replace('_', ' ')} {bound:g}"

    def differs(self, handed_in: float, retrained: float) -> bool:
        """True when two scores of one hand-in differ by more than the audit's margin."""
        margin = self.audit_margin * (max(abs(retrained), 1e-9) if self.relative_margin else 1.0)
        return abs(handed_in - retrained) > margin

    def defaults(self) -> dict:
        return dict(self.options)


def _accuracy(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise AssertionError(f"expected logits of shape ({x.shape[0]}, classes), got {tuple(out.shape)}")
    return (out.argmax(dim=1) == y).float().mean().item()


def per_image_sse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed squared error per image, averaged over the images."""
    if out.shape != target.shape:
        raise AssertionError(f"reconstructions: expected shape {tuple(target.shape)}, got {tuple(out.shape)}")
    return (out - target).pow(2).sum() / target.shape[0]


def _reconstruction(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return per_image_sse(out, x).item()


CHECKS: dict[str, Check] = {}


def register(check: Check) -> Check:
    """Add a kind of check (one per name); returns it. The two built in are registered below."""
    if check.name in CHECKS and CHECKS[check.name] != check:
        raise ValueError(f"a check named {check.name!r} is registered already")
    CHECKS[check.name] = check
    return check


ACCURACY = register(Check("accuracy", bound="at_least", higher_is_better=True, measure=_accuracy, audit_margin=0.05,
                          options=(("n_test", None), ("seed", 0), ("normalize", False), ("sequences", False)),
                          normalized=True))
RECONSTRUCTION = register(Check("reconstruction", bound="at_most", higher_is_better=False, measure=_reconstruction,
                                audit_margin=0.25, relative_margin=True))


def get(name: str) -> Check:
    """The check called ``name``, or a ValueError naming the ones there are."""
    try:
        return CHECKS[name]
    except KeyError:
        raise ValueError(f"no kind of check called {name!r}; there are {', '.join(CHECKS)}") from None


def test_set(check: Check, dataset: str, options: dict):
    """The test split a check scores on, reloaded here from ``course_utils.data``: ``(images, labels)``."""
    opts = {**check.defaults(), **options}
    normalize = opts.get("normalize", False) if check.normalized else False
    test = course_data.load_splits(dataset, n_train=0, n_test=opts.get("n_test"), seed=opts.get("seed", 0),
                                   normalize=normalize).test
    if opts.get("sequences"):
        test = course_data.as_sequences(test)
    return test.tensors


def padded_outputs(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn`` over ``x`` in batches of exactly EXPORT_BATCH rows (the last one padded with zeros)."""
    outs = []
    for start in range(0, x.shape[0], EXPORT_BATCH):
        chunk = x[start:start + EXPORT_BATCH]
        n = chunk.shape[0]
        if n < EXPORT_BATCH:
            chunk = torch.cat([chunk, chunk.new_zeros(EXPORT_BATCH - n, *chunk.shape[1:])])
        out = fn(chunk)
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"the exported model returned {type(out).__name__}, not a tensor")
        outs.append(out[:n])
    return torch.cat(outs)


def score_exported(path: Path, kind: str | Check, dataset: str, **options) -> float:
    """What check ``kind`` measures for an exported model (``torch.export``) on freshly loaded test data."""
    check = kind if isinstance(kind, Check) else get(kind)
    fn = exported.load(path)  # refuses a file that would run code when loaded
    x, y = test_set(check, dataset, options)
    with torch.no_grad():
        out = padded_outputs(fn, x)
    return check.measure(out, x, y)
