"""The class report (reports/<lab>.html and .csv) shows every student's latest result, not just the last run's.

The toy lab (with a written answer graded by hand) is graded for two students, one of whose hand-ins is
broken; then the other student hands in again and only that student is regraded from the command line
(``python -m autograde autograde --student bob``).
The report must still list the broken hand-in's error, mark what the second run changed, and count the
written answer in the items' share of full marks only once a person has graded it.
"""
from __future__ import annotations

import csv
import json
import re
import os
import subprocess
import sys
import time

import nbformat
import pytest
from nbgrader.api import Gradebook

import autograde
from autograde import report

import kit

LAB = kit.TOY_LAB
pytestmark = pytest.mark.slow


def run_cli(course: autograde.Course, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograde", "--course", str(course.root), *args],
                          capture_output=True, text=True, env=autograde.tool_env(), timeout=300)


def read_csv(course: autograde.Course) -> dict[str, dict]:
    return {row["student"]: row for row in csv.DictReader((course.config_dir / "reports" / f"{LAB}.csv").open())}


def section(html: str, title: str) -> str:
    """The HTML from ``<h2>title`` up to the next ``<h2>``."""
    found = re.search(rf"<h2>{re.escape(title)}</h2>(.*?)(?=<h2>|</body>)", html, re.S)
    assert found, f"no section {title!r} in the report"
    return found.group(1)


def test_report_keeps_every_students_latest_result(tmp_path):
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course, written=True)
    autograde.generate(course, [LAB])
    source, release = kit.notebooks(course, LAB)
    solved = kit.solved(release, source)
    answered = kit.fill(solved, {"written": "It sums the values, then divides by how many there are."})
    inbox = tmp_path / "inbox"
    kit.hand_in(inbox, "bob", LAB, release)  # untouched: 0 points (an unchanged written answer scores 0 too)
    text = nbformat.writes(solved)
    kit.hand_in(inbox, "carol", LAB, text[: len(text) // 2])  # cut short: an error row, nothing in the gradebook
    autograde.collect(course, inbox)
    results = autograde.autograde(course, mode="smoke", workers=2)  # as `python -m autograde autograde` does
    assert sorted((r.student, r.status) for r in results) == [("bob", "graded"), ("carol", "error")]

    state = json.loads((course.config_dir / "reports" / f"{LAB}-state.json").read_text())["students"]
    assert {s: state[s]["status"] for s in state} == {"bob": "graded", "carol": "error"}
    assert state["bob"]["run"] == state["carol"]["run"] and state["bob"]["previous"] is None
    rows = read_csv(course)
    assert {s: rows[s]["this_run"] for s in rows} == {"bob": "new", "carol": "new"}
    assert rows["bob"]["written"] == "0" and rows["bob"]["waiting_manual"] == "0"

    # bob hands in again, with an answer; only bob is regraded. His file's time is older than the first grading
    # (an unpacked LMS download keeps the upload's): what counts is when it was collected.
    old = time.time() - 86400
    os.utime(kit.hand_in(inbox, "bob", LAB, answered), (old, old))
    assert {row["student"]: row["status"] for row in autograde.collect(course, inbox, update=True)}["bob"] == "updated"
    out = run_cli(course, "autograde", "--mode", "smoke", "--student", "bob", "--workers", "1")
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "grading 1 submission(s)" in log, log

    html = (course.config_dir / "reports" / f"{LAB}.html").read_text()
    errors = section(html, "Errors")
    assert "carol" in errors and "not valid JSON" in errors, errors  # an earlier run's error is still listed
    assert "bob" not in errors
    rows = read_csv(course)
    assert set(rows) == {"bob", "carol"}
    assert rows["bob"]["this_run"] == "changed: graded 0/5 -> graded 3/5", rows["bob"]
    assert rows["carol"]["this_run"] == ""  # not graded in this run
    assert (rows["bob"]["total"], rows["carol"]["total"]) == ("3", "")
    assert (rows["bob"]["test_double"], rows["bob"]["test_mean"]) == ("1", "2")
    assert rows["carol"]["status"] == "error" and "not valid JSON" in rows["carol"]["message"]
    assert rows["bob"]["written"] == "0 (waiting)" and rows["bob"]["waiting_manual"] == "1"
    assert rows["bob"]["late_penalty"] == "0" and rows["bob"]["last_graded"]
    assert "0 new, 1 changed, 0 unchanged" in html and "1 manual item(s) waiting" in html
    assert "written: 1" in html
    totals, items = report.lab_scores(course.settings()["db_url"], course.settings()["course_id"], LAB)
    assert items["written"] == [] and items["test_double"] == [(1, 1)]  # the waiting answer is not counted

    # A person grades bob's written answer: from then on it counts.
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        grade = gb.find_grade("written", LAB, LAB, "bob")
        grade.manual_score, grade.needs_manual_grade = 2.0, False
        gb.db.commit()
    report.write_html(course, LAB, [])
    totals, items = report.lab_scores(course.settings()["db_url"], course.settings()["course_id"], LAB)
    assert items["written"] == [(2.0, 2.0)] and totals["bob"] == 5
    rows = read_csv(course)
    assert (rows["bob"]["written"], rows["bob"]["total"], rows["bob"]["waiting_manual"]) == ("2", "5", "0")
    html = (course.config_dir / "reports" / f"{LAB}.html").read_text()
    assert "0 manual item(s) waiting" in html and "written: 1" not in html
    assert "not valid JSON" in section(html, "Errors")
