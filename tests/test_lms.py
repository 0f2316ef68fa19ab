"""LMS grade import files (autograde/lms.py), compared with example files written to Canvas's and Moodle's docs.

The examples are tests/fixtures/lms/ (see its README.md for the format documentation they follow):
Canvas https://community.canvaslms.com/t5/Instructor-Guide/How-do-I-import-grades-in-the-Gradebook/ta-p/807,
Moodle https://docs.moodle.org/en/Grade_import.
"""
from __future__ import annotations

import csv
import re
import shutil

import kit
import pytest

import autograde
from autograde import cli, lms
from autograde.config import SettingError

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader's autoflush notices
FIXTURES = kit.REPO / "tests" / "fixtures" / "lms"
LAB, TWO = kit.TOY_LAB, "toy_two"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A course with two toy labs whose gradebook holds Ada (3 + 1.5), Alan (3 less a 0.6 late penalty) and
    Grace (nothing); made once with nbgrader's API, no grading run."""
    from nbgrader.api import Gradebook

    course = kit.copy_course(tmp_path_factory.mktemp("lms") / "course")
    kit.write_toy_lab(course)
    kit.write_toy_lab(course, TWO)
    shutil.copy(FIXTURES / "roster.csv", course.config_dir / "roster.csv")
    (course.config_dir / "term.toml").write_text(
        f'[labs.{LAB}]\ndue = "2027-02-14T23:59:00+01:00"\nlms_name = "Toy lab (4711)"\n'
        '[lms]\nmoodle_identifier = "idnumber"\n')
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        for lab in (LAB, TWO):
            gb.add_assignment(lab)
            gb.add_notebook(lab, lab)
            gb.add_grade_cell("test_double", lab, lab, max_score=1, cell_type="code")
            gb.add_grade_cell("test_mean", lab, lab, max_score=2, cell_type="code")
        for sid in ("s001", "s002", "s003"):
            gb.add_student(sid)

        def graded(lab, sid, double, mean, penalty=0.0):
            gb.add_submission(lab, sid, timestamp="2027-02-14 20:00:00 UTC")
            for name, score in (("test_double", double), ("test_mean", mean)):  # as SaveAutoGrades leaves them
                grade = gb.find_grade(name, lab, lab, sid)
                grade.auto_score, grade.needs_manual_grade = score, False
            gb.find_submission_notebook(lab, lab, sid).late_submission_penalty = penalty
            gb.db.commit()

        graded(LAB, "s001", 1, 2)
        graded(TWO, "s001", 0, 1.5)
        graded(LAB, "s002", 1, 2, penalty=0.6)
    return course


@pytest.fixture
def course(made, tmp_path):
    """A copy of the course above, for one test to change."""
    shutil.copytree(made.root, tmp_path / "course")
    return autograde.Course(tmp_path / "course")


def rows(path):
    return list(csv.reader(path.open(newline="", encoding="utf-8")))


@pytest.mark.parametrize("which", ["canvas", "moodle"])
def test_export_matches_the_documented_example(course, tmp_path, capsys, which):
    code = cli.main(["--course", str(course.root), "export", "--lms", which, "--to", str(tmp_path / "out.csv")])
    out = capsys.readouterr().out
    assert rows(tmp_path / "out.csv") == rows(FIXTURES / f"{which}.csv")
    assert code == 1  # Alan has no toy_two grade, Grace none at all: reported, not dropped
    assert "s002: no grade for toy_two (left empty)" in out and "s003: no grade for toy_lab, toy_two" in out, out


def test_graded_students_missing_from_the_roster_are_reported(course):
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        gb.add_student("s404")
        gb.add_submission(LAB, "s404", timestamp="2027-02-14 20:00:00 UTC")
    _, problems = lms.table(course, "canvas")
    assert any(p.startswith("s404: graded (toy_lab) but not on the roster") for p in problems), problems


def test_a_missing_roster_says_what_to_write(course):
    (course.config_dir / "roster.csv").unlink()
    with pytest.raises(SettingError, match="no roster .*columns id,first_name,last_name,email"):
        lms.table(course, "moodle")


def test_answers_waiting_for_grading_by_hand_are_reported(course):
    """A written answer nobody has graded yet is not in the LMS's file: the export says so, and exits 1."""
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        gb.find_grade("test_mean", TWO, TWO, "s001").needs_manual_grade = True
        gb.db.commit()
    _, problems = lms.table(course, "canvas")
    assert any(p.startswith("s001: answers of toy_two wait for grading (or review) by hand") for p in problems), problems
    assert not any("wait for grading" in p for p in problems if not p.startswith("s001"))


def test_the_plain_export_shows_no_float_noise(course, tmp_path):
    """A late penalty of 10 % of 3 points is 0.30000000000000004 in floating point: the CSV says 0.3."""
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        gb.find_submission_notebook(LAB, LAB, "s002").late_submission_penalty = 3 * 0.1
        gb.db.commit()
    path = autograde.export(course, tmp_path / "grades.csv")
    row = next(r for r in csv.DictReader(path.open()) if r["student_id"] == "s002" and r["assignment"] == LAB)
    assert (row["late_submission_penalty"], row["score"]) == ("0.3", "2.7"), row


@pytest.mark.parametrize("header, says", [("id,name", "unknown column(s) name"),
                                          ("id;first_name;last_name", "its header reads ['id;first_name;last_name']")])
def test_a_roster_with_other_columns_is_refused_with_its_header(course, header, says):
    """A roster whose columns the exporter would misread (a `name` column, semicolons) says what it read."""
    (course.config_dir / "roster.csv").write_text(f"{header}\n{header.replace('id', 's001', 1)}\n")
    with pytest.raises(SettingError, match=re.escape(says)):
        lms.table(course, "canvas")
