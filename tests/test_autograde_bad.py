"""Bad submissions do not break the batch: one batch of the cheapest lab, graded in parallel, sandboxed (smoke mode).

The batch holds two good students (first and last in grading order) and bad
ones: code that raises, an endless loop, a syntax error, a deleted test cell,
edited test cells, a truncated file, hard-coded accuracies, a vandal (deletes
gradebooks, overwrites other hand-ins, tries the network), a grader-patching
hand-in with untrained models, a memory hog and a process bomb. Each bad one
gets a grade or a clear error of its own; the good ones keep full marks, every
other student's grade reaches the export and every collected file is intact.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import os
import re
from pathlib import Path

import nbformat
import pytest

import autograde
from autograde import sandbox, scorer, testing

REPO = Path(__file__).resolve().parent.parent
LABS = autograde.Course(REPO).labs()
# Lab ids are numbered from the simplest; lab1 (an MLP on MNIST) is also the cheapest to run.
LAB = LABS[0] if LABS else None
# The endless loop costs this much; every cell of a good submission finishes well within it
# (the slowest, the imports, took up to 47 s on a heavily shared 2-core machine).
CELL_TIMEOUT = 90
MEMORY_LIMIT = 3 << 29  # 1.5 GiB: a lab-1 kernel needs well under 1 GiB in smoke mode
PROCESS_LIMIT = 128
pytestmark = [pytest.mark.slow, pytest.mark.skipif(LAB is None, reason="no labs in solutions/ yet")]


def vandal_code(course: autograde.Course) -> str:
    """What a student who knows the layout tries first: destroy the class's grades, then do the work."""
    root = course.root
    return f"""
import glob, os, pathlib, shutil, socket
tried = []
for path in glob.glob({str(root)!r} + "/**/gradebook*.db", recursive=True):
    try:
        os.remove(path); tried.append("deleted " + path)
    except OSError as exc:
        tried.append(f"delete {{path}}: {{exc.strerror}}")
for path in glob.glob({str(course.folder('submitted'))!r} + "/*/*/*.ipynb"):
    try:
        pathlib.Path(path).write_text("{{}}"); tried.append("overwrote " + path)
    except OSError as exc:
        tried.append(f"overwrite {{path}}: {{exc.strerror}}")
for target in ({str(course.folder('submitted'))!r}, {str(course.config_dir)!r}, os.path.expanduser("~")):
    try:
        shutil.rmtree(target); tried.append("removed " + target)
    except OSError as exc:
        tried.append(f"remove {{target}}: {{exc.strerror}}")
try:
    socket.create_connection(("1.1.1.1", 80), timeout=3); tried.append("network: connected")
except OSError as exc:
    tried.append(f"network: {{exc.strerror or exc}}")
print("VANDAL", tried)
"""


def build(course, source, release) -> dict[str, nbformat.NotebookNode | str]:
    """The batch: student id -> notebook (or raw text)."""
    solved = testing.solved(release, source)
    code = testing.solution_cells(source)
    last = [testing.grade_id(c) for c in release.cells if testing.is_todo(c)][-1]

    deleted = copy.deepcopy(solved)
    deleted.cells.remove(next(c for c in deleted.cells if testing.is_test(c)))
    edited = copy.deepcopy(solved)
    for cell in edited.cells:
        if testing.is_test(cell):
            cell.source = "# I removed the tests\npass"
    text = nbformat.writes(solved)

    # Claims a high accuracy without any working code: every accuracy-like name the lab assigns.
    all_code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    names = sorted(set(re.findall(r"^\s*([A-Za-z_]\w*acc\w*)\s*=", all_code, re.M | re.I)) | {"accuracy", "test_acc"})
    hardcoded = copy.deepcopy(release)
    for i in reversed([i for i, c in enumerate(hardcoded.cells) if testing.is_test(c)]):
        hardcoded.cells.insert(i, nbformat.v4.new_code_cell("\n".join(f"{n} = 0.99" for n in names)))

    return {
        "a_good": solved,
        "b_raises": testing.fill(solved, {last: 'raise RuntimeError("my code is broken")\n' + code[last]}),
        # (sleeps in its loop: the toy lab's test covers a busy one; this one spares CI's CPU)
        "c_loops": testing.fill(solved, {last: "import time\nwhile True:\n    time.sleep(0.2)\n" + code[last]}),
        "d_syntax": testing.fill(solved, {last: code[last] + "\ndef broken(:\n    pass\n"}),
        "e_deleted_test": deleted,
        "f_edited_tests": edited,
        "g_truncated": text[: len(text) // 2],
        "h_hardcoded": hardcoded,
        "i_vandal": testing.insert_before_tests(solved, vandal_code(course)),
        "j_patcher": testing.insert_before_tests(solved, testing.GRADER_PATCH),
        "k_memory_hog": testing.insert_before_tests(solved, "import torch\nhog = torch.ones(3 << 28)  # 3 GiB"),
        "l_process_bomb": testing.insert_before_tests(solved, (
            "import os, time\nfor _ in range(600):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)")),
        "z_good": solved,
    }


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sandboxed_course(folder: Path) -> tuple[autograde.Course, nbformat.NotebookNode, nbformat.NotebookNode]:
    """(course, source, release) of LAB in ``folder``; skips without the sandbox (fails in CI)."""
    found = sandbox.support()
    if not (found.bwrap and found.cgroups):
        if os.environ.get("COURSE_SANDBOX_REQUIRED"):
            pytest.fail("; ".join(found.warnings()))
        pytest.skip("; ".join(found.warnings()))
    course = testing.copy_course(folder, [LAB])
    autograde.generate(course, [LAB])
    return (course, *testing.notebooks(course, LAB))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course, source, release = sandboxed_course(tmp_path_factory.mktemp("bad"))
    inbox = course.root / "inbox"
    for student, nb in build(course, source, release).items():
        testing.hand_in(inbox, student, LAB, nb)
    autograde.collect(course, inbox)
    before = digest(course.folder("submitted"))
    results = autograde.autograde(course, [LAB], mode="smoke", workers=2, cell_timeout=CELL_TIMEOUT,
                                  sandboxed=True, memory=MEMORY_LIMIT, processes=PROCESS_LIMIT)
    export = autograde.export(course, course.root / "grades.csv")
    return course, release, {r.student: r for r in results}, before, export


def scores(course, student):
    return testing.item_scores(course, LAB, student)


def why(course, student):
    return f"{student}: scores {scores(course, student)}, errors {testing.cell_errors(course, LAB, student)}"


def items_before_last_todo(release) -> list[str]:
    last = max(i for i, c in enumerate(release.cells) if testing.is_todo(c))
    return [testing.grade_id(c) for c in release.cells[:last] if testing.is_test(c)]


def accuracy_items(course) -> set[str]:
    source, _ = testing.notebooks(course, LAB)
    return {spec.grade_id for spec in scorer.specs(source, "smoke")}


def test_every_student_has_a_grade_or_a_clear_error(batch):
    course, _, results, _, _ = batch
    assert sorted(results) == ["a_good", "b_raises", "c_loops", "d_syntax", "e_deleted_test", "f_edited_tests",
                               "g_truncated", "h_hardcoded", "i_vandal", "j_patcher", "k_memory_hog",
                               "l_process_bomb", "z_good"]
    assert results["g_truncated"].status == "error" and "not valid JSON" in results["g_truncated"].message
    hogs = {"g_truncated", "k_memory_hog", "l_process_bomb"}
    errors = {s: r.message for s, r in results.items() if s not in hogs and r.status != "graded"}
    assert not errors
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        in_gradebook = sorted(s.student.id for s in gb.find_assignment(LAB).submissions)
    assert in_gradebook == sorted(s for s in results if s != "g_truncated")


@pytest.mark.parametrize("student", ["a_good", "z_good", "e_deleted_test", "f_edited_tests", "i_vandal"])
def test_good_work_keeps_full_marks(batch, student):
    """Deleted test cells are put back and edited ones restored, so they grade like the solution."""
    course, *_ = batch
    assert all(got == most for got, most in scores(course, student).values()), why(course, student)


@pytest.mark.parametrize("student", ["b_raises", "c_loops", "d_syntax"])
def test_broken_last_todo_costs_only_what_depends_on_it(batch, student):
    course, release, *_ = batch
    got = scores(course, student)
    earlier = items_before_last_todo(release)
    assert all(got[item][0] == got[item][1] for item in earlier), why(course, student)
    assert sum(s for s, _ in got.values()) < sum(m for _, m in got.values()), why(course, student)


def test_endless_loop_is_interrupted_by_the_cell_timeout(batch):
    course, release, *_ = batch
    last = [testing.grade_id(c) for c in release.cells if testing.is_todo(c)][-1]
    assert "CellTimeoutError" in testing.cell_errors(course, LAB, "c_loops").get(last, ""), why(course, "c_loops")


def test_hardcoded_accuracy_earns_nothing(batch):
    course, *_ = batch
    assert all(got == 0 for got, _ in scores(course, "h_hardcoded").values()), why(course, "h_hardcoded")


def test_vandal_harms_nobody_else(batch):
    course, _, results, before, export = batch
    assert digest(course.folder("submitted")) == before, "a collected hand-in was changed while grading"
    grades = {r["student_id"]: float(r["score"]) for r in csv.DictReader(export.open()) if r["assignment"] == LAB}
    assert set(grades) == set(results) - {"g_truncated"}
    assert grades["a_good"] == grades["z_good"] == results["a_good"].score > 0
    graded = (course.folder("autograded") / "i_vandal" / LAB / f"{LAB}.ipynb").read_text()
    printed = re.search(r"VANDAL \[(.*?)\]", graded)
    assert printed, "the vandal's cell did not run"
    assert "deleted " not in printed[1] and "overwrote " not in printed[1] and "removed " not in printed[1], printed[1]
    assert "network: connected" not in printed[1] and "network:" in printed[1], printed[1]


def test_grader_patching_earns_no_accuracy_points(batch):
    course, _, results, _, _ = batch
    got = scores(course, "j_patcher")
    for item in accuracy_items(course):
        assert got[item][0] == 0, why(course, "j_patcher")
    assert "altered" in results["j_patcher"].message and "scored outside" in results["j_patcher"].message
    errors = testing.cell_errors(course, LAB, "j_patcher")
    assert any("GradingIntegrityError" in e for e in errors.values()), errors


@pytest.mark.parametrize("student, reason", [("k_memory_hog", "used more than 1.5 GiB of memory"),
                                             ("l_process_bomb", f"more than {PROCESS_LIMIT} processes")])
def test_limits_make_error_rows_with_reasons(batch, student, reason):
    course, _, results, _, _ = batch
    result = results[student]
    assert result.status == "error" and reason in result.message, result.message
    rows = {r["student"]: r for r in csv.DictReader(max((course.config_dir / "reports").glob("*.csv")).open())}
    assert reason in rows[student]["message"]
