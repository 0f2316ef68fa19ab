"""Bad submissions do not break the batch: one batch of the cheapest lab, graded in parallel (smoke mode).

The batch holds two good students (first and last in grading order) and six
bad ones: code that raises, an endless loop, a syntax error, a deleted test
cell, edited test cells, a truncated file, and hard-coded accuracies. Each bad
one gets a grade or a clear error of its own; the good ones keep full marks
and the gradebook holds every gradable student.
"""
from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "autograde"))
import grade  # noqa: E402
import testkit  # noqa: E402
from course_utils import submissions  # noqa: E402

LABS = grade.Course(REPO).labs()
# Lab ids are numbered from the simplest; lab1 (an MLP on MNIST) is also the cheapest to run.
LAB = LABS[0] if LABS else None
# The endless loop costs this much; every cell of a good submission finishes well within it
# (the slowest, the imports, took up to 47 s on a heavily shared 2-core machine).
CELL_TIMEOUT = 90
pytestmark = [pytest.mark.slow, pytest.mark.skipif(LAB is None, reason="no labs in solutions/ yet")]


def build(source, release) -> dict[str, nbformat.NotebookNode | str]:
    """The batch: student id -> notebook (or raw text)."""
    solved = submissions.solved(release, source)
    code = submissions.solution_cells(source)
    last = [testkit.grade_id(c) for c in release.cells if testkit.is_todo(c)][-1]

    deleted = copy.deepcopy(solved)
    deleted.cells.remove(next(c for c in deleted.cells if testkit.is_test(c)))
    edited = copy.deepcopy(solved)
    for cell in edited.cells:
        if testkit.is_test(cell):
            cell.source = "# I removed the tests\npass"
    text = nbformat.writes(solved)

    # Claims a high accuracy without any working code: every accuracy-like name the lab assigns.
    all_code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    names = sorted(set(re.findall(r"^\s*([A-Za-z_]\w*acc\w*)\s*=", all_code, re.M | re.I)) | {"accuracy", "test_acc"})
    hardcoded = copy.deepcopy(release)
    for i in reversed([i for i, c in enumerate(hardcoded.cells) if testkit.is_test(c)]):
        hardcoded.cells.insert(i, nbformat.v4.new_code_cell("\n".join(f"{n} = 0.99" for n in names)))

    return {
        "a_good": solved,
        "b_raises": submissions.fill(solved, {last: 'raise RuntimeError("my code is broken")\n' + code[last]}),
        # (sleeps in its loop: the toy lab's test covers a busy one; this one spares CI's CPU)
        "c_loops": submissions.fill(solved, {last: "import time\nwhile True:\n    time.sleep(0.2)\n" + code[last]}),
        "d_syntax": submissions.fill(solved, {last: code[last] + "\ndef broken(:\n    pass\n"}),
        "e_deleted_test": deleted,
        "f_edited_tests": edited,
        "g_truncated": text[: len(text) // 2],
        "h_hardcoded": hardcoded,
        "z_good": solved,
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course = testkit.copy_course(tmp_path_factory.mktemp("bad"), [LAB])
    grade.generate(course, [LAB])
    source, release = testkit.notebooks(course, LAB)
    inbox = course.root / "inbox"
    for student, nb in build(source, release).items():
        testkit.hand_in(inbox, student, LAB, nb)
    grade.collect(course, inbox)
    results = grade.autograde(course, [LAB], mode="smoke", workers=2, cell_timeout=CELL_TIMEOUT)
    return course, release, {r.student: r for r in results}


def scores(course, student):
    return testkit.item_scores(course, LAB, student)


def why(course, student):
    return f"{student}: scores {scores(course, student)}, errors {testkit.cell_errors(course, LAB, student)}"


def items_before_last_todo(release) -> list[str]:
    last = max(i for i, c in enumerate(release.cells) if testkit.is_todo(c))
    return [testkit.grade_id(c) for c in release.cells[:last] if testkit.is_test(c)]


def test_every_student_has_a_grade_or_a_clear_error(batch):
    course, _, results = batch
    assert sorted(results) == ["a_good", "b_raises", "c_loops", "d_syntax", "e_deleted_test", "f_edited_tests",
                               "g_truncated", "h_hardcoded", "z_good"]
    assert results["g_truncated"].status == "error" and "not valid JSON" in results["g_truncated"].message
    errors = {s: r.message for s, r in results.items() if s != "g_truncated" and r.status != "graded"}
    assert not errors
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        in_gradebook = sorted(s.student.id for s in gb.find_assignment(LAB).submissions)
    assert in_gradebook == sorted(s for s in results if s != "g_truncated")


@pytest.mark.parametrize("student", ["a_good", "z_good", "e_deleted_test", "f_edited_tests"])
def test_good_work_keeps_full_marks(batch, student):
    """Deleted test cells are put back and edited ones restored, so they grade like the solution."""
    course, _, _ = batch
    assert all(got == most for got, most in scores(course, student).values()), why(course, student)


@pytest.mark.parametrize("student", ["b_raises", "c_loops", "d_syntax"])
def test_broken_last_todo_costs_only_what_depends_on_it(batch, student):
    course, release, _ = batch
    got = scores(course, student)
    earlier = items_before_last_todo(release)
    assert all(got[item][0] == got[item][1] for item in earlier), why(course, student)
    assert sum(s for s, _ in got.values()) < sum(m for _, m in got.values()), why(course, student)


def test_endless_loop_is_interrupted_by_the_cell_timeout(batch):
    course, release, _ = batch
    last = [testkit.grade_id(c) for c in release.cells if testkit.is_todo(c)][-1]
    assert "CellTimeoutError" in testkit.cell_errors(course, LAB, "c_loops").get(last, ""), why(course, "c_loops")


def test_hardcoded_accuracy_earns_nothing(batch):
    course, _, _ = batch
    assert all(got == 0 for got, _ in scores(course, "h_hardcoded").values()), why(course, "h_hardcoded")
