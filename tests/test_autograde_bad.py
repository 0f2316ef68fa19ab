"""Bad submissions do not break the batch: one batch of the cheapest lab, graded in parallel, sandboxed (smoke mode).

The batch holds two good students (first and last in grading order) and bad
ones: code that raises, an endless loop, a syntax error (and every test cell tagged to be
skipped), a deleted test cell, edited test cells, a truncated file, hard-coded accuracies, a vandal (deletes
gradebooks, overwrites other hand-ins, tries the network), a grader-patching
hand-in with untrained models, a memory hog and a process bomb. The vandal also fills the disk. Each bad one
gets a grade or a clear error of its own; the good ones keep full marks, every
other student's grade reaches the export and every collected file is intact.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import re
from pathlib import Path

import pytest

import autograde
from autograde import report, scorer

import kit

LABS = autograde.Course(kit.REPO).labs()
# Lab ids are numbered from the simplest; lab1 (an MLP on MNIST) is also the cheapest to run.
LAB = LABS[0] if LABS else None
# The endless loop costs this much; every cell of a good submission finishes well within it
# (the slowest, the imports, took up to 47 s on a heavily shared 2-core machine).
CELL_TIMEOUT = 90
MEMORY_LIMIT = 3 << 29  # 1.5 GiB: a lab-1 kernel needs well under 1 GiB in smoke mode
PROCESS_LIMIT = 128
DISK_LIMIT = 1 << 28     # 256 MiB: a lab-1 hand-in writes a few MB (its exported models)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(LAB is None, reason="no labs in solutions/ yet")]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, grading_cluster) -> kit.Batch:
    """The troublemakers of :func:`kit.bad_hand_ins`, graded sandboxed with tight limits, then exported."""
    kit.require_sandbox()
    batch = kit.generated_course(tmp_path_factory.mktemp("bad"), LAB)
    hand_ins = kit.bad_hand_ins(batch)
    for student, nb in hand_ins.items():
        kit.hand_in(batch.course.root / "inbox", student, LAB, nb)
    autograde.collect(batch.course, batch.course.root / "inbox")
    batch.extra["before"] = digest(batch.course.folder("submitted"))
    results = autograde.autograde(batch.course, [LAB], mode="smoke", scheduler=grading_cluster,
                                  cell_timeout=CELL_TIMEOUT,
                                  sandboxed=True, memory=MEMORY_LIMIT, processes=PROCESS_LIMIT, disk=DISK_LIMIT)
    batch.results = {r.student: r for r in results}
    batch.export = autograde.export(batch.course, batch.course.root / "grades.csv")
    return batch


def run_report(batch: kit.Batch) -> dict[str, dict]:
    """The run's CSV (``reports/autograde-<time>.csv``, not the class's ``<lab>.csv``): student -> row."""
    path = max((batch.course.config_dir / "reports").glob("autograde-*.csv"))
    return {row["student"]: row for row in csv.DictReader(path.open())}


def items_before_last_todo(release) -> list[str]:
    last = max(i for i, c in enumerate(release.cells) if kit.is_todo(c))
    return [kit.grade_id(c) for c in release.cells[:last] if kit.is_test(c)]


def accuracy_items(batch: kit.Batch) -> set[str]:
    return {spec.grade_id for spec in scorer.specs(batch.source, "smoke")}


def test_every_student_has_a_grade_or_a_clear_error(batch):
    course, results = batch.course, batch.results
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
    assert batch.full_marks(student), batch.explain(student)


@pytest.mark.parametrize("student", ["b_raises", "c_loops", "d_syntax"])
def test_broken_last_todo_costs_only_what_depends_on_it(batch, student):
    got = batch.scores(student)
    earlier = items_before_last_todo(batch.release)
    assert all(got[item][0] == got[item][1] for item in earlier), batch.explain(student)
    assert sum(s for s, _ in got.values()) < sum(m for _, m in got.values()), batch.explain(student)


def test_endless_loop_is_interrupted_by_the_cell_timeout(batch):
    last = [kit.grade_id(c) for c in batch.release.cells if kit.is_todo(c)][-1]
    assert "CellTimeoutError" in kit.cell_errors(batch.course, LAB, "c_loops").get(last, ""), batch.explain("c_loops")
    note = f"{last} stopped at the limit of {CELL_TIMEOUT} s per cell"  # the class report's note for the instructor
    assert note in batch.results["c_loops"].message, batch.results["c_loops"].message


def test_hardcoded_accuracy_earns_nothing(batch):
    assert all(got == 0 for got, _ in batch.scores("h_hardcoded").values()), batch.explain("h_hardcoded")


def test_vandal_harms_nobody_else(batch):
    course, results = batch.course, batch.results
    assert digest(course.folder("submitted")) == batch.extra["before"], "a collected hand-in was changed while grading"
    grades = {r["student_id"]: float(r["score"]) for r in csv.DictReader(batch.export.open()) if r["assignment"] == LAB}
    assert set(grades) == set(results) - {"g_truncated"}
    assert grades["a_good"] == grades["z_good"] == results["a_good"].score > 0
    graded = (course.folder("autograded") / "i_vandal" / LAB / f"{LAB}.ipynb").read_text()
    printed = re.search(r"VANDAL \[(.*?)\]", graded)
    assert printed, "the vandal's cell did not run"
    assert "deleted " not in printed[1] and "overwrote " not in printed[1] and "removed " not in printed[1], printed[1]
    assert "network: connected" not in printed[1] and "network:" in printed[1], printed[1]


def test_grader_patching_earns_no_accuracy_points(batch):
    results = batch.results
    got = batch.scores("j_patcher")
    for item in accuracy_items(batch):
        assert got[item][0] == 0, batch.explain("j_patcher")
    assert "altered" in results["j_patcher"].message and "scored outside" in results["j_patcher"].message
    errors = kit.cell_errors(batch.course, LAB, "j_patcher")
    assert any("GradingIntegrityError" in e for e in errors.values()), errors


@pytest.mark.parametrize("student, reason", [("k_memory_hog", "used more than 1.5 GiB of memory"),
                                             ("l_process_bomb", f"more than {PROCESS_LIMIT} processes")])
def test_limits_make_error_rows_with_reasons(batch, student, reason):
    result = batch.results[student]
    assert result.status == "error" and reason in result.message, result.message
    rows = run_report(batch)
    assert reason in rows[student]["message"]


def test_peak_memory_is_measured_and_the_report_names_hand_ins_near_the_limit(batch):
    """Each hand-in's cgroup gives its peak memory: the hog's reached the limit, a good one's stayed well below,
    and the class report lists the hog (only) among those that passed report.NEAR_LIMIT of the limit."""
    results = batch.results
    hog, good = results["k_memory_hog"].peak_memory, results["a_good"].peak_memory
    assert hog is not None and hog >= 0.95 * MEMORY_LIMIT, hog
    assert good is not None and 100e6 < good < report.NEAR_LIMIT * MEMORY_LIMIT, good
    assert results["g_truncated"].peak_memory is None  # never ran: nothing measured
    rows = run_report(batch)
    assert float(rows["k_memory_hog"]["peak_memory_mb"]) >= 0.95 * MEMORY_LIMIT / 1e6
    assert rows["g_truncated"]["peak_memory_mb"] == ""
    html = (batch.course.config_dir / "reports" / f"{LAB}.html").read_text()
    memory = re.search(r"<h2>Memory \(this run\)</h2>(.*?)(?=<h2>|</body>)", html, re.S)
    assert memory, "the class report has no memory section"
    near = re.findall(r"<tr><td>([^<]+)</td><td>\d+</td><td>(\d+)%</td>", memory.group(1))
    assert [student for student, _ in near] == ["k_memory_hog"], memory.group(1)
    assert int(near[0][1]) >= 95


def test_a_hand_in_cannot_fill_the_disk(batch):
    """The vandal writes until its writes fail: its working copy and its models share a box of DISK_LIMIT, so
    they fail there (ENOSPC), and once it removed its junk the rest of its notebook scores as usual."""
    graded = (batch.course.folder("autograded") / "i_vandal" / LAB / f"{LAB}.ipynb").read_text()
    printed = re.search(r"DISK \[(.*?)\]", graded)
    assert printed, "the disk filler's cell did not run"
    working, models = re.findall(r"errno (\d+) after (\d+) MiB", printed[1])
    assert working[0] == models[0] == str(errno.ENOSPC), printed[1]
    assert 128 < int(working[1]) + int(models[1]) <= DISK_LIMIT >> 20, printed[1]
    assert not any("disk" in r.message for r in batch.results.values())  # nothing filled at the end
