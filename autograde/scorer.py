"""Scores that matter, computed outside the student's kernel.

The instructor's source notebook says what to score: each call of a graded
check in a test cell (``grading.check_<kind>(...)`` or ``grading.check("<kind>",
...)``, for the kinds in :data:`course_utils.checks.CHECKS`) is a :class:`Spec`
(read with ``ast``, never by running the student's notebook). When the grader ran the notebook, those calls exported
the trained models; this module's command line loads them in a fresh process
(sandboxed like the kernel) that imports only ``course_utils`` from disk and
the test split from the dataset cache, and prints one JSON result per spec. The files are
untrusted: :mod:`course_utils.exported` refuses any that would run code when loaded.

    python -m autograde.scorer PLAN.json      # {"models": DIR, "specs": [...]}
"""
from __future__ import annotations

import ast
import json
import secrets
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from nbformat import NotebookNode

OUTPUT_TAIL = 1 << 20  # bytes of the scoring process's output read back (its answer: the last line with the token)
@dataclass
class Spec:
    """One graded score: which cell, which kind of check on which data, its bound and its other keywords."""

    grade_id: str
    kind: str            # a key of course_utils.checks.CHECKS
    label: str
    dataset: str
    bound: float         # at least / at most, as the kind says
    options: dict = field(default_factory=dict)  # n_test, seed, ... as written in the call
    module: str = "course_utils.checks"  # where the kind is declared (imported before scoring)

    @property
    def check(self):
        import importlib

        from course_utils import checks

        importlib.import_module(self.module)
        return checks.get(self.kind)

    def passed(self, value: float) -> bool:
        return self.check.passed(value, self.bound)

    def describe(self, value: float | None) -> str:
        got = "not scored" if value is None else f"{value:.4f}"
        return f"{self.label}: {got} (needs {self.check.need(self.bound)})"


class _PerMode:
    """Stands for ``grading`` while reading a spec: ``threshold(...)`` picks the grading mode's value."""

    def __init__(self, mode: str):
        self.mode = mode

    def threshold(self, *, smoke, laptop, full):
        return {"smoke": smoke, "laptop": laptop, "full": full}[self.mode]


def _value(node: ast.expr, mode: str, names: dict | None = None):
    from course_utils import data

    code = compile(ast.Expression(node), "<spec>", "eval")
    scope = {**(names or {}), "__builtins__": {}, "grading": _PerMode(mode), "data": data}
    return eval(code, scope)  # instructor's own source


def constants(source: NotebookNode, mode: str) -> dict:
    """``NAME = value`` assignments at the top of the source notebook's locked cells (the instructor's),
    where the value is a literal, ``grading.threshold(...)``, a ``data`` constant or an earlier such name:
    a notebook states a threshold or a label once, and its visible and hidden checks both use the name.

    A student's kernel may rebind such a name; the grader takes its value from here.
    """
    names: dict = {}
    for cell in source.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("locked") or meta.get("solution"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    names[node.targets[0].id] = _value(node.value, mode, names)
                except Exception:  # not a constant the grader can read: not for graded checks
                    names.pop(node.targets[0].id, None)
    return names


def _grading_calls(tree: ast.AST, names) -> Iterator[ast.Call]:
    """The calls ``grading.<name>(...)`` in ``tree``, for each ``name`` in ``names``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "grading"
                and node.func.attr in names):
            yield node


def _check_calls(tree: ast.AST) -> Iterator[ast.Call]:
    """``grading.check(...)`` and ``grading.check_<kind>(...)`` calls, for every registered kind."""
    from course_utils import checks

    return _grading_calls(tree, {"check", *(c.function for c in checks.CHECKS.values())})


def _kind_of(node: ast.Call, mode: str, names: dict) -> tuple[str, list[ast.expr]]:
    """The check's kind and the call's positional arguments after it (model, dataset)."""
    if node.func.attr == "check":
        return _value(node.args[0], mode, names), node.args[1:]
    return node.func.attr.removeprefix("check_"), node.args


def specs(source: NotebookNode, mode: str) -> list[Spec]:
    """Every graded check call in the source notebook's test cells, evaluated for ``mode``.

    Raises ValueError for a call the grader cannot read (arguments that are
    not constants, ``grading.threshold``, ``data`` constants or names of
    :func:`constants`), a label used
    twice, or a check whose cell does not call ``grading.hand_in(model, label)``
    with the same label first (so that handed-in weights can be graded).
    """
    from nbgrader import utils

    from course_utils import checks

    names = constants(source, mode)
    found: list[Spec] = []
    for cell in source.cells:
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            continue
        gid = cell.metadata["nbgrader"]["grade_id"]
        tree = ast.parse(cell.source)
        try:
            handed_in = {_value(call.args[1], mode, names) if len(call.args) > 1
                         else _value(next(k.value for k in call.keywords if k.arg == "label"), mode, names)
                         for call in _grading_calls(tree, {"hand_in"})}
        except Exception as exc:
            raise ValueError(f"{gid}: cannot read the label of grading.hand_in(...): {exc!r}") from exc
        for node in _check_calls(tree):
            try:
                kind, args = _kind_of(node, mode, names)
                check = checks.get(kind)
                kwargs = {kw.arg: _value(kw.value, mode, names) for kw in node.keywords}
                dataset = _value(args[1], mode, names) if len(args) > 1 else kwargs.pop("dataset")
                bound = float(kwargs.pop(check.bound))
                label = kwargs.pop("label")
            except Exception as exc:
                raise ValueError(f"{gid}: cannot read grading.{node.func.attr}(...) for outside scoring: {exc}") from exc
            if label not in handed_in:
                raise ValueError(f"{gid}: grading.{node.func.attr}(..., label={label!r}) needs "
                                 f"grading.hand_in(model, {label!r}) in the visible part of its cell")
            options = json.loads(json.dumps(kwargs))  # tuples (normalize=) travel as lists
            found.append(Spec(grade_id=gid, kind=kind, label=label, dataset=dataset, bound=bound, options=options,
                              module=check.measure.__module__))
    labels = [s.label for s in found]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels of graded checks must be unique within a lab: {labels}")
    return found


def score(models: Path, plan: list[Spec]) -> list[dict]:
    """Score each exported model (this runs in the sandboxed scoring process)."""
    from course_utils import checks, grading

    results = []
    for spec in plan:
        path = models / grading.export_name(spec.label)
        row = {"grade_id": spec.grade_id, "label": spec.label, "value": None, "passed": False, "message": ""}
        if not path.is_file():
            row["message"] = (f"{spec.label}: no trained model reached the grader (the test cell failed before "
                              f"exporting it: an error in the code it tests, handed-in weights missing or not "
                              f"fitting the model, or grading helpers the notebook replaced; the test cell's "
                              f"error in the feedback says which)")
        else:
            try:
                options = {k: _as_tuples(v) for k, v in spec.options.items()}
                row["value"] = checks.score_exported(path, spec.check, spec.dataset, **options)
                row["passed"] = spec.passed(row["value"])
                row["message"] = spec.describe(row["value"])
            except Exception as exc:  # a broken or hostile file costs only this item
                row["message"] = f"{spec.label}: the exported model could not be scored ({type(exc).__name__}: {str(exc)[:200]})"
        results.append(row)
    return results


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def run(plan: list[Spec], models: Path, *, prefix: list[str], env: dict, timeout: float) -> list[dict]:
    """Score ``plan`` in a fresh process started as ``prefix + python -m autograde.scorer``; never raises.

    What the process prints goes to files, and only their last :data:`OUTPUT_TAIL` bytes are read,
    so a hostile model that prints without end costs neither memory nor the result. The answer is the
    last line that starts with a random token the plan carries (on stdin), and each row's ``passed`` is
    decided here again from its value.
    """
    token = secrets.token_hex(16)  # the answer's line starts with it: nothing else in the process knows it
    payload = json.dumps({"models": str(models), "specs": [asdict(s) for s in plan], "token": token})
    failed = [{"grade_id": s.grade_id, "label": s.label, "value": None, "passed": False, "message": ""} for s in plan]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run([*prefix, sys.executable, "-m", "autograde.scorer", "-"], input=payload.encode(),
                                  stdout=out, stderr=err, env=env, timeout=timeout)
            answers = [line[len(token):] for line in _tail(out).splitlines() if line.startswith(token)]
            if proc.returncode == 0 and answers:
                return _checked(json.loads(answers[-1]), plan)
            why = (f"the scoring process failed (exit {proc.returncode}): "
                   f"{(_tail(err).strip().splitlines() or [''])[-1][:200]}")
        except subprocess.TimeoutExpired:
            why = f"scoring took longer than {timeout:.0f} s"
        except ValueError as exc:
            why = f"the scoring process's answer could not be read ({exc})"
    for row in failed:
        row["message"] = f"{row['label']}: {why}"
    return failed


def _checked(rows: list[dict], plan: list[Spec]) -> list[dict]:
    """The scorer's rows, one per spec in order, each passed or not by its spec's own bound."""
    if not isinstance(rows, list) or [r.get("grade_id") for r in rows] != [s.grade_id for s in plan]:
        raise ValueError("the answer does not list the plan's items")
    for row, spec in zip(rows, plan):
        value = row.get("value")
        row["passed"] = isinstance(value, float) and spec.passed(value)
    return rows


def _tail(file) -> str:
    file.seek(0, 2)
    file.seek(max(0, file.tell() - OUTPUT_TAIL))
    return file.read().decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = sys.stdin.read() if not argv or argv[0] == "-" else Path(argv[0]).read_text()
    request = json.loads(text)
    plan = [Spec(**s) for s in request["specs"]]
    print(request.get("token", "") + json.dumps(score(Path(request["models"]), plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
