"""The test kit: throwaway courses, synthetic hand-ins and the attack cells, for the tests and benchmarks.

Not part of the installed package. The tests load it through ``tests/conftest.py``
(``pytest_plugins``, whose fixtures are in :mod:`kit.plugin`); a benchmark puts ``tests/`` on
``sys.path``. :data:`REPO` is the one place that knows where the repository is. Nothing here
touches the repository's own autograde/ folders.
"""
from __future__ import annotations

import os
import re
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader import utils

from course_utils import kernels, modes

from autograde.config import GRADING_MODE_VAR
from autograde.course import Course
from autograde.gradebook import item_scores as _item_scores
from autograde.sandbox import SANDBOX_VAR

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ATTACKS = FIXTURES / "attacks"
TOY_LAB = "toy_lab"
_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
_BLOCK = re.compile(r"^# %% grade_id:\s*(\S+)\s*$", re.MULTILINE)


def attack(name: str, **values: object) -> str:
    """The code of the attack cell ``tests/fixtures/attacks/<name>.py``, with its ``$names`` filled from ``values``.

    Raises KeyError naming a ``$name`` the file uses and ``values`` does not give.
    """
    return string.Template((ATTACKS / f"{name}.py").read_text()).substitute({k: str(v) for k, v in values.items()})


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


def write_toy_lab(course: Course, lab: str = TOY_LAB, *, written: bool = False) -> Path:
    """A tiny nbgrader lab (two TODOs worth 1 and 2 points, no torch) under solutions/ for fast tests;
    ``written`` adds a written answer (a markdown cell graded by hand, grade_id ``written``, 2 points)."""
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
    if written:
        nb.cells += [_cell("markdown", "Why does `mean` divide by `len(values)`? Answer below."),
                     _cell("markdown", "YOUR ANSWER HERE", "written", grade=True, solution=True, points=2)]
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
GRADER_VARS = (modes.EXPORT_VAR, modes.HANDIN_VAR, modes.BATCHES_VAR, SANDBOX_VAR, GRADING_MODE_VAR)


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
                            kernel_manager_class=kernels.AsyncSocketKernelManager,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=env, cwd=str(folder))
    path = folder / f"{lab}.ipynb"
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- graded batches

@dataclass
class Batch:
    """A graded batch: the course, the lab's source and released notebooks, and the results by student."""

    course: Course
    lab: str
    source: NotebookNode
    release: NotebookNode
    results: dict = field(default_factory=dict)   # student -> autograde.pipeline.Result
    export: Path | None = None                    # the grades CSV, when the batch exported one
    extra: dict = field(default_factory=dict)     # what a test module adds (digests, specs, ...)

    def scores(self, student: str) -> dict[str, tuple[float, float]]:
        """``grade_id -> (auto_score, max_score)`` of one student's autograded items."""
        return item_scores(self.course, self.lab, student)

    def explain(self, student: str) -> str:
        """One student's item scores and cell errors, for assertion messages."""
        return f"{student}: scores {self.scores(student)}, errors {cell_errors(self.course, self.lab, student)}"

    def full_marks(self, student: str) -> bool:
        scores = self.scores(student)
        return bool(scores) and all(got == most for got, most in scores.values())


def require_sandbox() -> None:
    """Skip the calling test without the grading sandbox and its limits (memory, processes, disk); fail instead
    with COURSE_SANDBOX_REQUIRED."""
    import pytest

    from autograde import sandbox

    found = sandbox.support()
    if not (found.bwrap and found.cgroups and found.disk):
        message = "; ".join(found.warnings())
        if os.environ.get("COURSE_SANDBOX_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)


def generated_course(folder: Path, lab: str) -> Batch:
    """A throwaway course in ``folder`` with ``lab`` generated (a toy lab when ``lab`` is :data:`TOY_LAB`)."""
    from autograde import release

    course = copy_course(folder, [] if lab == TOY_LAB else [lab])
    if lab == TOY_LAB:
        write_toy_lab(course)
    release.generate(course, [lab])
    return Batch(course, lab, *notebooks(course, lab))


def grade_batch(batch: Batch, hand_ins: dict[str, NotebookNode | str], **options) -> Batch:
    """Hand in, collect and autograde ``hand_ins`` (student -> notebook or raw text) in ``batch``'s course.

    ``options`` go to :func:`autograde.autograde` (mode defaults to smoke); the results are added to
    ``batch.results``.
    """
    import autograde

    inbox = batch.course.root / "inbox"
    for student, nb in hand_ins.items():
        hand_in(inbox, student, batch.lab, nb)
    autograde.collect(batch.course, inbox, update=True)
    options.setdefault("mode", "smoke")
    results = autograde.autograde(batch.course, [batch.lab], students=list(hand_ins), **options)
    batch.results |= {r.student: r for r in results}
    return batch


def bad_hand_ins(batch: Batch) -> dict[str, NotebookNode | str]:
    """A real lab's class of troublemakers (student id -> notebook, or raw text), with two good hand-ins.

    Every way a hand-in can go wrong short of the grader's own faults: a crash, an endless loop, a syntax
    error in the last TODO (with every test cell tagged ``skip-when-grading``), deleted and edited tests, a
    truncated file, hard-coded accuracies, and the attacks under ``tests/fixtures/attacks/`` (vandal, who also
    fills the disk, grader patch, memory hog, process bomb).
    """
    course, source, release = batch.course, batch.source, batch.release
    good = solved(release, source)
    code = solution_cells(source)
    last = [grade_id(c) for c in release.cells if is_todo(c)][-1]

    deleted = nbformat.from_dict(nbformat.reads(nbformat.writes(good), as_version=4))
    deleted.cells.remove(next(c for c in deleted.cells if is_test(c)))
    edited = nbformat.from_dict(nbformat.reads(nbformat.writes(good), as_version=4))
    for cell in edited.cells:
        if is_test(cell):
            cell.source = "# I removed the tests\npass"
    text = nbformat.writes(good)
    # A syntax error in the last TODO, and every test cell tagged to be skipped when grading (tests never skip).
    syntax = fill(good, {last: code[last] + "\ndef broken(:\n    pass\n"})
    for cell in syntax.cells:
        if is_test(cell):
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "skip-when-grading"]

    # Claims a high accuracy without any working code: every accuracy-like name the lab assigns.
    all_code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    names = sorted(set(re.findall(r"^\s*([A-Za-z_]\w*acc\w*)\s*=", all_code, re.M | re.I)) | {"accuracy", "test_acc"})
    hardcoded = nbformat.from_dict(nbformat.reads(nbformat.writes(release), as_version=4))
    for i in reversed([i for i, c in enumerate(hardcoded.cells) if is_test(c)]):
        hardcoded.cells.insert(i, nbformat.v4.new_code_cell("\n".join(f"{n} = 0.99" for n in names)))

    vandal = attack("vandal", root=course.root, submitted=course.folder("submitted"), config_dir=course.config_dir)
    return {
        "a_good": good,
        "b_raises": fill(good, {last: 'raise RuntimeError("my code is broken")\n' + code[last]}),
        # (sleeps in its loop: the toy lab's test covers a busy one; this one spares CI's CPU)
        "c_loops": fill(good, {last: "import time\nwhile True:\n    time.sleep(0.2)\n" + code[last]}),
        "d_syntax": syntax,
        "e_deleted_test": deleted,
        "f_edited_tests": edited,
        "g_truncated": text[: len(text) // 2],
        "h_hardcoded": hardcoded,
        "i_vandal": insert_before_tests(good, vandal + "\n" + attack("disk_filler")),
        "j_patcher": insert_before_tests(good, attack("grader_patch")),
        "k_memory_hog": insert_before_tests(good, attack("memory_hog")),
        "l_process_bomb": insert_before_tests(good, attack("process_bomb")),
        "z_good": good,
    }
