"""Scores that matter, computed outside the student's kernel.

The instructor's source notebook says what to score: each call of
``grading.check_accuracy(...)`` or ``grading.check_reconstruction(...)`` in a
graded test cell is a :class:`Spec` (read with ``ast``, never by running the
student's notebook). When the grader ran the notebook, those calls exported
the trained models; this module's command line loads them in a fresh process
(sandboxed like the kernel) that imports only ``course_utils`` from disk and
the test split from the dataset cache, and prints one JSON result per spec.

    python -m autograde.scorer PLAN.json      # {"models": DIR, "specs": [...]}
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from nbformat import NotebookNode
from nbgrader import utils

OUTPUT_TAIL = 1 << 20  # bytes of the scoring process's output read back (its answer is the last line)
CHECKS = {"check_accuracy": ("accuracy", "at_least"), "check_reconstruction": ("reconstruction", "at_most")}


@dataclass
class Spec:
    """One graded score: which cell, what is measured on which data, and the bound it must meet."""

    grade_id: str
    kind: str            # accuracy | reconstruction
    label: str
    dataset: str
    bound: float         # at least (accuracy) / at most (reconstruction)
    n_test: int | None = None
    normalize: bool | list = False
    sequences: bool = False
    seed: int = 0

    def passed(self, value: float) -> bool:
        return value >= self.bound if self.kind == "accuracy" else value <= self.bound

    def describe(self, value: float | None) -> str:
        need = f"{'at least' if self.kind == 'accuracy' else 'at most'} {self.bound:g}"
        got = "not scored" if value is None else f"{value:.4f}"
        return f"{self.label}: {got} (needs {need})"


class _PerMode:
    """Stands for ``grading`` while reading a spec: ``threshold(...)`` picks the grading mode's value."""

    def __init__(self, mode: str):
        self.mode = mode

    def threshold(self, *, smoke, laptop, full):
        return {"smoke": smoke, "laptop": laptop, "full": full}[self.mode]


def _value(node: ast.expr, mode: str):
    from course_utils import data

    code = compile(ast.Expression(node), "<spec>", "eval")
    return eval(code, {"__builtins__": {}, "grading": _PerMode(mode), "data": data})  # instructor's own source


def _grading_calls(tree: ast.AST, names) -> Iterator[ast.Call]:
    """The calls ``grading.<name>(...)`` in ``tree``, for each ``name`` in ``names``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "grading"
                and node.func.attr in names):
            yield node


def specs(source: NotebookNode, mode: str) -> list[Spec]:
    """Every graded check call in the source notebook's test cells, evaluated for ``mode``.

    Raises ValueError for a call the grader cannot read (arguments that are
    not constants, ``grading.threshold`` or ``data`` constants), a label used
    twice, or a check whose cell does not call ``grading.hand_in(model, label)``
    with the same label first (so that handed-in weights can be graded).
    """
    found: list[Spec] = []
    for cell in source.cells:
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            continue
        gid = cell.metadata["nbgrader"]["grade_id"]
        tree = ast.parse(cell.source)
        try:
            handed_in = {_value(call.args[1], mode) if len(call.args) > 1
                         else _value(next(k.value for k in call.keywords if k.arg == "label"), mode)
                         for call in _grading_calls(tree, {"hand_in"})}
        except Exception as exc:
            raise ValueError(f"{gid}: cannot read the label of grading.hand_in(...): {exc!r}") from exc
        for node in _grading_calls(tree, CHECKS.keys()):
            kind, bound_name = CHECKS[node.func.attr]
            try:
                kwargs = {kw.arg: _value(kw.value, mode) for kw in node.keywords}
                dataset = _value(node.args[1], mode) if len(node.args) > 1 else kwargs.pop("dataset")
            except Exception as exc:
                raise ValueError(f"{gid}: cannot read grading.{node.func.attr}(...) for outside scoring: {exc}") from exc
            if kwargs["label"] not in handed_in:
                raise ValueError(f"{gid}: grading.{node.func.attr}(..., label={kwargs['label']!r}) needs "
                                 f"grading.hand_in(model, {kwargs['label']!r}) in the visible part of its cell")
            normalize = kwargs.get("normalize", False)
            found.append(Spec(grade_id=gid, kind=kind, label=kwargs["label"], dataset=dataset,
                              bound=float(kwargs[bound_name]), n_test=kwargs.get("n_test"),
                              normalize=[list(x) for x in normalize] if isinstance(normalize, (tuple, list)) else normalize,
                              sequences=bool(kwargs.get("sequences", False)), seed=int(kwargs.get("seed", 0))))
    labels = [s.label for s in found]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels of graded checks must be unique within a lab: {labels}")
    return found


def score(models: Path, plan: list[Spec]) -> list[dict]:
    """Score each exported model (this runs in the sandboxed scoring process)."""
    from course_utils import grading

    results = []
    for spec in plan:
        path = models / grading.export_name(spec.label)
        row = {"grade_id": spec.grade_id, "label": spec.label, "value": None, "passed": False, "message": ""}
        if not path.is_file():
            row["message"] = (f"{spec.label}: no trained model reached the grader (the test cell failed before "
                              f"exporting it, e.g. no handed-in weights or weights that do not fit, or the "
                              f"notebook replaced the grading helpers)")
        else:
            try:
                normalize = tuple(tuple(x) for x in spec.normalize) if isinstance(spec.normalize, list) else spec.normalize
                row["value"] = grading.score_exported(path, spec.kind, spec.dataset, n_test=spec.n_test,
                                                      seed=spec.seed, normalize=normalize, sequences=spec.sequences)
                row["passed"] = spec.passed(row["value"])
                row["message"] = spec.describe(row["value"])
            except Exception as exc:  # a broken or hostile file costs only this item
                row["message"] = f"{spec.label}: the exported model could not be scored ({type(exc).__name__}: {str(exc)[:200]})"
        results.append(row)
    return results


def run(plan: list[Spec], models: Path, *, prefix: list[str], env: dict, timeout: float) -> list[dict]:
    """Score ``plan`` in a fresh process started as ``prefix + python -m autograde.scorer``; never raises.

    What the process prints goes to files, and only their last :data:`OUTPUT_TAIL` bytes are read,
    so a hostile model that prints without end costs neither memory nor the result.
    """
    payload = json.dumps({"models": str(models), "specs": [asdict(s) for s in plan]})
    failed = [{"grade_id": s.grade_id, "label": s.label, "value": None, "passed": False, "message": ""} for s in plan]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run([*prefix, sys.executable, "-m", "autograde.scorer", "-"], input=payload.encode(),
                                  stdout=out, stderr=err, env=env, timeout=timeout)
            lines = _tail(out).strip().splitlines()
            if proc.returncode == 0 and lines:
                return json.loads(lines[-1])
            why = (f"the scoring process failed (exit {proc.returncode}): "
                   f"{(_tail(err).strip().splitlines() or [''])[-1][:200]}")
        except subprocess.TimeoutExpired:
            why = f"scoring took longer than {timeout:.0f} s"
        except ValueError as exc:
            why = f"the scoring process's answer could not be read ({exc})"
    for row in failed:
        row["message"] = f"{row['label']}: {why}"
    return failed


def _tail(file) -> str:
    file.seek(0, 2)
    file.seek(max(0, file.tell() - OUTPUT_TAIL))
    return file.read().decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = sys.stdin.read() if not argv or argv[0] == "-" else Path(argv[0]).read_text()
    request = json.loads(text)
    plan = [Spec(**s) for s in request["specs"]]
    print(json.dumps(score(Path(request["models"]), plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
