"""Throwaway courses and synthetic submissions, for the grading tests and benchmarks (and dry runs).

Nothing here touches the repository's own autograde/ folders.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader import utils

from course_utils import modes
from course_utils.grading import EXPORT_VAR

from .config import GRADING_MODE_VAR
from .course import REPO, Course
from .gradebook import item_scores as _item_scores
from .sandbox import SANDBOX_VAR

TOY_LAB = "toy_lab"
_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
_BLOCK = re.compile(r"^# %% grade_id:\s*(\S+)\s*$", re.MULTILINE)
# Rebinds the grading helpers and turns every optimiser step into a no-op: every in-kernel check
# passes and every model stays untrained. The grader must give it no accuracy points.
GRADER_PATCH = """
import torch
from course_utils import checks, grading
def _nothing(*args, **kwargs):
    return 1.0
for _name in ("check", *(c.function for c in checks.CHECKS.values()), "test_accuracy", "test_reconstruction_error",
              "expect_at_least", "expect_at_most", "expect_close", "expect_shape"):
    setattr(grading, _name, _nothing)
for _cls in [torch.optim.Optimizer, *torch.optim.Optimizer.__subclasses__()]:
    _cls.step = lambda self, closure=None: None
"""


def copy_course(dest: Path, labs: list[str] | None = None, src: Path = REPO) -> Course:
    """A course in ``dest`` with ``src``'s nbgrader config and the given labs' solutions/notebooks."""
    (dest / "autograde").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "autograde" / "nbgrader_config.py", dest / "autograde")
    for lab in labs or []:
        for top in ("solutions", "notebooks"):
            if (src / top / lab).is_dir():
                shutil.copytree(src / top / lab, dest / top / lab,
                                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "weights"))
    for top in ("solutions", "notebooks"):
        (dest / top).mkdir(exist_ok=True)
    return Course(dest)


def _cell(kind: str, source: str, grade_id: str | None = None, tags: list[str] | None = None,
          **flags) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    if grade_id:
        meta = {"grade": False, "solution": False, "locked": False, **flags}
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, "grade_id": grade_id, **meta}
    return cell


def write_toy_lab(course: Course, lab: str = TOY_LAB) -> Path:
    """A tiny nbgrader lab (two TODOs worth 1 and 2 points, no torch) under solutions/ for fast tests."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("markdown", "# Toy lab\nTwo small functions, each with a test."),
        _cell("code", "import os\nprint('kernel mode:', os.environ.get('COURSE_MODE'))", "setup", locked=True),
        _cell("code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
              "double", solution=True),
        _cell("code", "# Runs for students; the autograder skips cells tagged skip-when-grading.\n"
                      "double = None  # were it run when grading, test_double would fail", "extra", locked=True,
              tags=["skip-when-grading"]),
        _cell("code", "assert double(2) == 4, f'double(2) should be 4, got {double(2)}'\n"
                      "### BEGIN HIDDEN TESTS\nassert double(-3) == -6\n### END HIDDEN TESTS",
              "test_double", grade=True, locked=True, points=1),
        _cell("code", "def mean(values):\n    ### BEGIN SOLUTION\n    return sum(values) / len(values)\n"
                      "    ### END SOLUTION", "mean", solution=True),
        _cell("code", "assert mean([1, 2, 3]) == 2\n"
                      "### BEGIN HIDDEN TESTS\nassert mean([0.5]) == 0.5, 'hidden: one value'\n"
                      "### END HIDDEN TESTS", "test_mean", grade=True, locked=True, points=2),
    ]
    path = course.folder("source") / lab / f"{lab}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def read(path: Path) -> NotebookNode:
    return nbformat.read(path, as_version=4)


def notebooks(course: Course, lab: str) -> tuple[NotebookNode, NotebookNode]:
    """(source, release) notebooks of ``lab``."""
    return (read(course.folder("source") / lab / f"{lab}.ipynb"),
            read(course.folder("release") / lab / f"{lab}.ipynb"))


def hand_in(folder: Path, student: str, lab: str, nb: NotebookNode | str) -> Path:
    """Write ``folder/<student>/<lab>/<lab>.ipynb`` (a notebook, or raw text for broken files)."""
    path = folder / student / lab / f"{lab}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nb if isinstance(nb, str) else nbformat.writes(nb))
    return path


def grade_id(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def is_test(cell: NotebookNode) -> bool:
    """An autograded test cell (code, graded, not a solution)."""
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


def is_todo(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and utils.is_solution(cell)


def item_scores(course: Course, lab: str, student: str) -> dict[str, tuple[float, float]]:
    """``grade_id -> (auto_score, max_score)`` of the autograded (code) items, from the main gradebook."""
    return _item_scores(course.settings()["db_url"], course.settings()["course_id"], lab, student)


def cell_errors(course: Course, lab: str, student: str) -> dict[str, str]:
    """``grade_id -> its errors`` (joined by " | ") for every failing nbgrader cell of a graded notebook."""
    path = course.folder("autograded") / student / lab / f"{lab}.ipynb"
    out: dict[str, list[str]] = {}
    for cell in read(path).cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and grade_id(cell):
                out.setdefault(grade_id(cell), []).append(f"{output.get('ename')}: {output.get('evalue')}"[:600])
    return {gid: " | ".join(errors) for gid, errors in out.items()}


# --------------------------------------------------------------------------- filling released notebooks

def solution_cells(source: NotebookNode) -> dict[str, str]:
    """``grade_id -> source`` of every solution cell, with the solution markers removed."""
    out = {}
    for cell in source.cells:
        if utils.is_solution(cell):
            lines = [line for line in cell.source.splitlines() if not _MARKER.match(line)]
            out[grade_id(cell)] = "\n".join(lines)
    return out


def load_alternative(path: str | Path) -> dict[str, str]:
    """Parse a fixture file of blocks headed ``# %% grade_id: <id>`` into ``grade_id -> code``."""
    text = Path(path).read_text()
    parts = _BLOCK.split(text)
    if len(parts) < 3:
        raise ValueError(f"{path}: no '# %% grade_id: <id>' blocks found")
    return {gid: code.strip("\n") + "\n" for gid, code in zip(parts[1::2], parts[2::2])}


def fill(release: NotebookNode, code_by_id: dict[str, str]) -> NotebookNode:
    """A copy of ``release`` whose cells named in ``code_by_id`` hold that code instead.

    Raises KeyError naming any grade_id that the notebook does not have, so a
    stale fixture fails loudly instead of silently grading the stub.
    """
    filled = nbformat.from_dict(nbformat.reads(nbformat.writes(release), as_version=4))
    seen = set()
    for cell in filled.cells:
        gid = grade_id(cell)
        if gid in code_by_id:
            cell.source = code_by_id[gid]
            seen.add(gid)
    missing = set(code_by_id) - seen
    if missing:
        raise KeyError(f"no cells with grade_id {sorted(missing)} in the notebook")
    return filled


def solved(release: NotebookNode, source: NotebookNode) -> NotebookNode:
    """The released notebook with every TODO cell filled with the source notebook's solution."""
    return fill(release, solution_cells(source))


def insert_before_tests(nb: NotebookNode, code: str) -> NotebookNode:
    """A copy of ``nb`` with a new code cell ``code`` right after the setup cell (runs before every TODO)."""
    out = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    setup = next((i for i, c in enumerate(out.cells) if c.cell_type == "code"), 0)
    out.cells.insert(setup + 1, nbformat.v4.new_code_cell(code))
    return out


# --------------------------------------------------------------------------- a student's own run

# What the grader sets in its kernels; a student's run has none of it.
GRADER_VARS = (EXPORT_VAR, modes.HANDIN_VAR, modes.BATCHES_VAR, SANDBOX_VAR, GRADING_MODE_VAR)


def run_as_student(nb: NotebookNode, folder: Path, lab: str, mode: str, timeout: int = 600,
                   max_batches: int | None = None) -> Path:
    """Execute ``nb`` in ``folder`` as a student would before handing in (errors and all), in ``mode``.

    Writes the executed notebook to ``folder/<lab>.ipynb``; the graded cells' ``grading.hand_in`` calls
    save ``folder/weights/*.pt``. ``max_batches`` makes it a quick run (weights of the right shapes,
    barely trained: for benchmarks). Returns the notebook's path.
    """
    from nbclient import NotebookClient

    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in GRADER_VARS}
    env[modes.MODE_VAR] = mode
    if max_batches:
        env[modes.BATCHES_VAR] = str(max_batches)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=env, cwd=str(folder))
    path = folder / f"{lab}.ipynb"
    nbformat.write(nb, path)
    return path
