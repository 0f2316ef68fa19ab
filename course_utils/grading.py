"""Helpers for visible and hidden tests: messages a student can act on, recomputed scores.

Hidden tests state their thresholds with :func:`threshold` (always the mode the
grader runs in) and check a trained model with :func:`check_accuracy`,
:func:`check_reconstruction` or :func:`check` (any kind declared in
:mod:`course_utils.checks`). When the grader runs the notebook, these also
take the model out of the kernel (``torch.export``) into the folder named by
``COURSE_EXPORT_DIR``; the grader then scores that copy in a fresh process
that imports only this package and loads the test split itself
(:func:`course_utils.checks.score_exported`), so a notebook that rebinds these
helpers cannot raise its own grade.

Each graded accuracy cell also calls :func:`hand_in` on the trained model: a
student's own run saves its weights to ``weights/`` next to the notebook, to be
handed in with it. The grader can then skip re-training (``python -m
autograde autograde --handed-in``): it re-runs the notebook quickly
(``COURSE_MAX_BATCHES``), and :func:`hand_in` loads the handed-in weights into
the model the student's code built, strictly, before it is exported and scored.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from . import checks
from . import data as course_data
from . import modes
from .training import evaluate

T = TypeVar("T")
EXPORT_VAR = modes.EXPORT_VAR
EXPORT_BATCH = checks.EXPORT_BATCH  # exported models take batches of exactly this many images
WEIGHTS_DIR = Path("weights")  # handed-in weights, next to the notebook


class ExportError(AssertionError):
    """A trained model could not be taken out of the kernel for scoring."""


def threshold(*, smoke: T, laptop: T, full: T) -> T:
    """The value for the mode the grader runs in: ``threshold(smoke=0.5, laptop=0.9, full=0.9)``.

    Reads the mode the kernel was started with (:func:`course_utils.modes.grading_mode`),
    so setting ``COURSE_MODE`` inside a notebook does not lower a threshold.
    Also used for per-mode test-set sizes.
    """
    return modes.by_mode(smoke=smoke, laptop=laptop, full=full, mode=modes.grading_mode())


def expect_shape(tensor: torch.Tensor, expected: Sequence[int], what: str = "output") -> None:
    """Fail with 'expected ... got ...' unless ``tensor.shape == expected``."""
    if not isinstance(tensor, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor of shape {tuple(expected)}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected):
        raise AssertionError(f"{what}: expected shape {tuple(expected)}, got {tuple(tensor.shape)}")


def expect_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "output", atol: float = 1e-5,
                 rtol: float = 1e-5) -> None:
    """Fail with the largest difference unless the two tensors agree within tolerance."""
    expect_shape(actual, expected.shape, what)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        diff = (actual - expected).abs().max().item()
        raise AssertionError(f"{what}: values differ from the reference by up to {diff:.3g} (tolerance {atol:g})")


def expect_match(actual: torch.Tensor, expected: torch.Tensor, what: str = "output",
                 mistakes: dict[str, torch.Tensor | Callable[[], torch.Tensor]] | None = None, atol: float = 1e-5,
                 rtol: float = 1e-5) -> None:
    """:func:`expect_close` that names the likely cause when the values differ.

    ``mistakes`` maps a message (what went wrong and how to fix it) to what that mistake computes,
    a tensor or a function returning one, built from the student's own parameters. When
    ``actual`` matches one of them, the failure says that message; otherwise it gives the largest
    difference and lists the messages as the usual causes.
    """
    expect_shape(actual, expected.shape, what)
    if torch.allclose(actual, expected, atol=atol, rtol=rtol):
        return
    for cause, wrong in (mistakes or {}).items():
        try:
            value = wrong() if callable(wrong) else wrong
        except Exception:  # a variant that cannot be computed for this input is not the mistake made
            continue
        if isinstance(value, torch.Tensor) and value.shape == actual.shape and \
                torch.allclose(actual, value.to(actual.dtype), atol=atol, rtol=rtol):
            raise AssertionError(f"{what}: {cause}")
    diff = (actual - expected).abs().max().item()
    causes = f" Usual causes: {'; '.join(mistakes)}." if mistakes else ""
    raise AssertionError(f"{what}: values differ from the reference by up to {diff:.3g} (tolerance {atol:g}).{causes}")


def expect_at_least(value: float, minimum: float, what: str = "test accuracy") -> None:
    """Fail unless ``value >= minimum``, saying both."""
    if not value >= minimum:
        raise AssertionError(f"{what} is {value:.4f}; at least {minimum:.4f} is needed")


def expect_at_most(value: float, maximum: float, what: str = "test error") -> None:
    """Fail unless ``value <= maximum``, saying both."""
    if not value <= maximum:
        raise AssertionError(f"{what} is {value:.4f}; at most {maximum:.4f} is needed")


# --------------------------------------------------------------------------- scores on fresh test data

def _test_set(dataset: str, n_test: int | None, seed: int, normalize: bool | tuple, sequences: bool):
    test = course_data.load_splits(dataset, n_train=0, n_test=n_test, seed=seed, normalize=normalize).test
    return course_data.as_sequences(test) if sequences else test


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise AssertionError(f"expected a trained torch.nn.Module, got {type(model).__name__}")


def test_accuracy(model: nn.Module, dataset: str, *, n_test: int | None = None, seed: int = 0,
                  normalize: bool | tuple = False, sequences: bool = False, batch_size: int = 500) -> float:
    """Accuracy of ``model`` on the test split, reloaded here from ``course_utils.data``."""
    _require_module(model)
    test = _test_set(dataset, n_test, seed, normalize, sequences)
    return evaluate(model, course_data.make_loader(test, batch_size), max_batches=None)["acc"]


test_accuracy.__test__ = False  # not a pytest test, despite the name


def test_reconstruction_error(model: nn.Module, dataset: str, *, n_test: int | None = None, seed: int = 0,
                              batch_size: int = 500) -> float:
    """Mean over test images of the summed squared error ``||model(x) - x||^2`` (pixels in [0, 1])."""
    _require_module(model)
    test = _test_set(dataset, n_test, seed, False, False)
    return evaluate(model, course_data.make_loader(test, batch_size), loss_fn=checks.per_image_sse,
                    reconstruct=True, max_batches=None)["loss"]


test_reconstruction_error.__test__ = False  # not a pytest test, despite the name


# --------------------------------------------------------------------------- graded checks

def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def export_name(label: str) -> str:
    """The file a check's model is exported to: its label in lower case, other characters as '-'."""
    return _slug(label) + ".pt2"


def weights_path(label: str) -> Path:
    """Where :func:`hand_in` keeps the weights for the check ``label``, relative to the notebook's folder."""
    return WEIGHTS_DIR / (_slug(label) + ".pt")


def hand_in(model: nn.Module, label: str) -> None:
    """Save ``model``'s trained weights for the grader; when the grader scores hand-ins, load them instead.

    - A student's run: writes ``weights/<label>.pt`` next to the notebook (hand
      it in with the notebook; it is small).
    - The grader re-training the notebook: does nothing.
    - The grader scoring handed-in weights (``COURSE_GRADE_HANDIN=1``): loads
      ``weights/<label>.pt`` into ``model`` strictly (every tensor must match
      the model this notebook's code built), or fails with the reason.
    """
    _require_module(model)
    path = weights_path(label)
    if modes.grading_handin():
        _load_handed_in(model, label, path)
    elif export_dir() is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        torch.save({"label": label, "mode": modes.current_mode(), "state_dict": state}, path)
        print(f"{label}: weights saved to {path} ({path.stat().st_size / 1e6:.2f} MB, {modes.current_mode()} "
              f"mode); hand in the {WEIGHTS_DIR}/ folder with this notebook")


def _load_handed_in(model: nn.Module, label: str, path: Path) -> None:
    mode = modes.grading_mode()
    if not path.is_file():
        raise AssertionError(f"{label}: no trained weights were handed in ({path} is missing). Run the whole "
                             f"notebook in {mode} mode and hand in the {WEIGHTS_DIR}/ folder with it")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, trained_in = saved["state_dict"], saved.get("mode")
    except Exception as exc:  # corrupt, truncated or not ours: costs this item only
        raise AssertionError(f"{label}: the handed-in weights {path} cannot be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); run the notebook again "
                             f"and hand in the new {WEIGHTS_DIR}/ folder") from None
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        hint = (f" They were trained in {trained_in} mode; this course grades in {mode} mode, where the model "
                f"may be built differently." if trained_in and trained_in != mode else "")
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:4] if line.strip())
        raise AssertionError(f"{label}: the handed-in weights do not fit the model this notebook builds "
                             f"({details[:400] or str(exc)[:400]}).{hint} Hand in the weights of this "
                             f"notebook's own run") from None
    print(f"{label}: loaded the handed-in weights ({trained_in or 'unknown'} mode) from {path}")


def export_dir() -> Path | None:
    """Where the grader collects models (``COURSE_EXPORT_DIR`` at kernel start), or None outside grading."""
    value = modes.started_environ().get(EXPORT_VAR, "").strip()
    return Path(value) if value else None


def example_input(dataset: str, sequences: bool = False, batch: int = EXPORT_BATCH) -> torch.Tensor:
    """A batch of zeros shaped like the test images (or row sequences) of ``dataset``."""
    shape = course_data.SHAPES[dataset.lower()]
    return torch.zeros(batch, *(shape[1:] if sequences else shape))


def export_model(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """Save an evaluation-mode copy of ``model`` as a ``torch.export`` program (runs without its Python code)."""
    frozen = copy.deepcopy(model).cpu().eval()
    try:
        program = torch.export.export(frozen, (example,))
    except Exception as exc:  # torch.export raises many types
        raise ExportError(f"the grader could not take this model out of the notebook to score it "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). Avoid Python control "
                          f"flow that depends on tensor values in forward()") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def _graded_check(model, dataset: str, label: str, sequences: bool) -> None:
    """Common start of the graded checks: a module, exported when the grader runs the notebook."""
    _require_module(model)
    folder = export_dir()
    if folder is not None:
        export_model(model, folder / export_name(label), example_input(dataset, sequences))


def _scored_outside_only(label: str) -> bool:
    """When the grader scores handed-in weights, the score is computed outside the notebook only."""
    if modes.grading_handin():
        print(f"{label}: exported; the grader scores the handed-in weights outside the notebook")
        return True
    return False


def check(kind: str, model: nn.Module, dataset: str, *, label: str, **options) -> None:
    """Hidden-test check of any kind in :data:`course_utils.checks.CHECKS`: ``check("accuracy", model,
    "mnist", at_least=0.9, label="the MLP")``.

    Measures ``model`` here for the student and, when grading, exports it so that the grader
    recomputes the score outside the notebook. ``options`` hold the kind's bound (``at_least`` or
    ``at_most``) and its other keywords (``n_test``, ``seed``, ...). ``label`` names the check in
    messages and must be unique within a lab. Returns nothing: nbgrader would read a number left
    as a cell's value as partial credit.
    """
    spec = checks.get(kind)
    if spec.bound not in options:
        raise TypeError(f"check {kind!r} needs its bound {spec.bound}=...")
    bound = options.pop(spec.bound)
    unknown = set(options) - set(spec.defaults())
    if unknown:
        raise TypeError(f"check {kind!r} takes no {', '.join(sorted(unknown))} (it takes "
                        f"{', '.join([spec.bound, *spec.defaults()])})")
    _graded_check(model, dataset, label, bool(options.get("sequences", False)))
    if _scored_outside_only(label):
        return
    _require_module(model)
    x, y = checks.test_set(spec, dataset, options)
    value = _measure(model, spec, x, y)
    if spec.higher_is_better:
        expect_at_least(value, bound, label)
    else:
        expect_at_most(value, bound, label)
    print(f"{label}: {value:.4f} ({spec.need(bound)} {'needed' if spec.higher_is_better else 'allowed'})")


def _measure(model: nn.Module, spec: checks.Check, x: torch.Tensor, y: torch.Tensor) -> float:
    """``spec``'s measure of the live model, in evaluation mode and the same batches the grader uses."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = checks.padded_outputs(lambda batch: model(batch.to(device)).cpu(), x)
    finally:
        model.train(was_training)
    return spec.measure(out, x, y)


def check_accuracy(model: nn.Module, dataset: str, *, at_least: float, label: str, n_test: int | None = None,
                   normalize: bool | tuple = False, sequences: bool = False, seed: int = 0) -> None:
    """Hidden-test check: the test accuracy of ``model`` must reach ``at_least`` (see :func:`check`)."""
    check("accuracy", model, dataset, at_least=at_least, label=label, n_test=n_test, normalize=normalize,
          sequences=sequences, seed=seed)


def check_reconstruction(model: nn.Module, dataset: str, *, at_most: float, label: str,
                         n_test: int | None = None, seed: int = 0) -> None:
    """Hidden-test check: the mean summed squared reconstruction error must stay at or below ``at_most``."""
    check("reconstruction", model, dataset, at_most=at_most, label=label, n_test=n_test, seed=seed)
