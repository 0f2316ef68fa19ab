"""`python -m autograde exchange` without a hub: an exchange folder laid out as nbgrader's submit leaves it.

The whole loop on a real hub is tests/test_hub.py; these check collect's choices and messages, and
the settings, in a second each (a toy lab, no kernels).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os

import pytest

from autograde import exchange
from autograde.course import GradingError

from kit import TOY_LAB, copy_course, write_toy_lab

UTC = dt.timezone.utc


@pytest.fixture
def course(tmp_path):
    course = copy_course(tmp_path / "course")
    write_toy_lab(course)
    return course


@pytest.fixture
def settings(course, tmp_path, monkeypatch):
    """The exchange's settings; each folder counts as written at the time of its name (a submission made
    then would have been), except in the test of a time set back by hand."""
    monkeypatch.setattr(exchange.Submission, "written", lambda sub: sub.timestamp)
    s = exchange.settings(course, root=tmp_path / "exchange")
    return dataclasses.replace(s, check_owner=False)  # the files here all belong to the test's user


def submit(s: exchange.Settings, student: str, when: dt.datetime, text: str | None = None) -> None:
    """A submission folder as nbgrader's submit writes it: <student>+<lab>+<timestamp>+<random>."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    folder = s.inbound() / f"{student}+{TOY_LAB}+{stamp}+{os.urandom(4).hex()}"
    folder.mkdir(parents=True)
    source = text if text is not None else (s.root.parent / "course" / "solutions" / TOY_LAB / f"{TOY_LAB}.ipynb").read_text()
    (folder / f"{TOY_LAB}.ipynb").write_text(source)
    (folder / "timestamp.txt").write_text(stamp)
    (folder / "submission_secret.txt").write_text("secret")


def test_defaults_for_a_single_hub(course):
    s = exchange.settings(course)
    assert (s.course_id, str(s.root), s.roster, s.check_owner) == (
        "deep-learning-labs", exchange.DEFAULT_ROOT, None, True)
    assert "c.Exchange.root = '/srv/nbgrader/exchange'" in exchange.students_config(s)
    assert "validation.configure(c)" in exchange.students_config(s)


def test_collect_keeps_the_newest_and_says_so(course, settings):
    t0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    submit(settings, "alice", t0, text="{not json")
    submit(settings, "alice", t0 + dt.timedelta(minutes=5))
    submit(settings, "bob", t0)
    rows = {r["student"]: r for r in exchange.collect(course, settings)}
    assert rows["alice"]["status"] == "collected" and rows["alice"]["message"] == ""
    assert rows["alice"]["note"].startswith("submitted 2 times; kept the newest (2026-12-01 10:05:00 UTC)")
    assert rows["bob"]["status"] == "collected" and rows["bob"]["note"] == ""
    copy = course.folder("submitted") / "alice" / TOY_LAB
    assert (copy / "timestamp.txt").read_text().startswith("2026-12-01 10:05:00")
    assert (copy / "submission_secret.txt").is_file()  # release_feedback needs it

    again = {r["student"]: r["status"] for r in exchange.collect(course, settings)}
    assert again == {"alice": "unchanged", "bob": "unchanged"}
    submit(settings, "bob", t0 + dt.timedelta(hours=1), text="{not json")
    rows = {r["student"]: r for r in exchange.collect(course, settings)}
    assert rows["bob"]["status"] == "updated" and "not valid JSON" in rows["bob"]["message"]  # collect.py's message


def test_late_submissions_are_flagged(course, settings):
    exchange._set_duedate(course, TOY_LAB, exchange.parse_due("2026-12-01T12:00"))
    submit(settings, "alice", dt.datetime(2026, 12, 1, 11, 59, tzinfo=UTC))
    submit(settings, "bob", dt.datetime(2026, 12, 2, 13, 5, tzinfo=UTC))
    rows = {r["student"]: r for r in exchange.collect(course, settings)}
    assert rows["alice"]["note"] == ""
    assert rows["bob"]["note"] == "late: submitted 1 d 1 h 5 min after the due date (2026-12-01 12:00 UTC)"


def test_a_time_set_back_by_the_student_does_not_count(course, settings, monkeypatch):
    """nbgrader's submit runs as the student, who can write any time into the folder's name and timestamp.txt;
    the folder's status-change time, which no user can set back, counts when it is later."""
    monkeypatch.undo()  # the folders' real times
    exchange._set_duedate(course, TOY_LAB, exchange.parse_due("2026-12-01T12:00"))
    now = dt.datetime.now(UTC)
    submit(settings, "mallory", dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC))  # claims a week ago
    submit(settings, "alice", now - dt.timedelta(minutes=1))  # true: written within the slack
    rows = {r["student"]: r for r in exchange.collect(course, settings)}
    assert "its own time says 2026-11-30 09:00 UTC, but it reached the exchange at" in rows["mallory"]["note"]
    assert "late: submitted" in rows["mallory"]["note"], rows["mallory"]
    kept = exchange.term.parse_timestamp((course.folder("submitted") / "mallory" / TOY_LAB / "timestamp.txt").read_text())
    assert abs(kept - now) < dt.timedelta(minutes=1)  # what nbgrader's late penalty will read
    assert "reached the exchange" not in rows["alice"]["note"] and "late" in rows["alice"]["note"]


def test_a_folder_of_another_user_or_off_the_roster_is_not_collected(course, settings, tmp_path):
    submit(settings, "carol", dt.datetime(2026, 12, 1, tzinfo=UTC))
    rows = exchange.collect(course, dataclasses.replace(settings, check_owner=True))
    assert [(r["student"], r["status"]) for r in rows] == [("carol", "skipped")]
    assert "claims to be from carol but its folder belongs to" in rows[0]["message"]
    assert not (course.folder("submitted") / "carol").exists()

    (course.config_dir / "roster.csv").write_text("id,first_name,last_name,email\nalice,A,L,\n")
    with_roster = exchange.settings(course, root=settings.root)
    assert with_roster.roster == course.config_dir / "roster.csv"
    rows = exchange.collect(course, dataclasses.replace(with_roster, check_owner=False))
    assert [(r["student"], r["status"], r["message"].split(" (")[0]) for r in rows] == [
        ("carol", "skipped", "not on the roster")]


def test_no_exchange_yet_says_what_to_do(course, settings):
    with pytest.raises(GradingError, match="release a lab first"):
        exchange.collect(course, settings)


def test_a_due_date_must_be_iso():
    assert exchange.parse_due("2026-12-10T17:00+01:00") == dt.datetime(2026, 12, 10, 16, 0, tzinfo=UTC)
    with pytest.raises(GradingError, match="ISO 8601"):
        exchange.parse_due("next friday")
