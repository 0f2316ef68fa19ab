"""The term file (autograde/term.py): due dates, late policies, extensions; applied by nbgrader when grading."""
from __future__ import annotations

import csv
import datetime as dt
import logging
import subprocess
import sys

import kit
import pytest
import tomllib

import autograde
from autograde import cli, term
from autograde.config import SettingError

LAB = kit.TOY_LAB
DUE = "2027-02-14T23:59:00+01:00"
DAY = 86400


def parsed(text: str, labs=(LAB,)) -> term.Term:
    return term.parse(tomllib.loads(text), list(labs))


def test_the_committed_term_file_is_valid_and_names_every_lab():
    course = autograde.Course(kit.REPO)
    t = term.load(course)
    assert sorted(t.labs) == course.labs() and all(lab.due.tzinfo for lab in t.labs.values())
    assert t.default == term.Policy(per_day=0.1, cap=0.5, grace_minutes=15)


def test_settings_are_read_and_each_lab_inherits_the_course_policy():
    t = parsed(f"""
        [late]
        per_day = 0.1
        cap = 0.5
        grace_minutes = 10
        [labs.{LAB}]
        due = "{DUE}"
        [labs.other]
        due = 2027-03-01T12:00:00Z
        late = {{ penalty = "none" }}
        [extensions]
        {LAB}.alice = "2 days"
        {LAB}."b.o@b" = "2027-02-16T12:00:00+01:00"
        """, labs=(LAB, "other"))
    assert t.due(LAB) == dt.datetime(2027, 2, 14, 22, 59, tzinfo=dt.timezone.utc)
    assert t.due(LAB, "alice") - t.due(LAB) == dt.timedelta(days=2)
    assert t.due(LAB, "b.o@b") == dt.datetime(2027, 2, 16, 11, 0, tzinfo=dt.timezone.utc)
    assert t.policy(LAB) == term.Policy(0.1, 0.5, 10) and t.policy("other") == term.Policy()
    assert term.read(kit.REPO / "no-such-dir" / "term.toml") == term.Term(roster=kit.REPO / "no-such-dir" / "roster.csv")


@pytest.mark.parametrize("text, names", [
    (f'[labs.{LAB}]\ndue = "2027-02-14T23:59:00"', [f"labs.{LAB}.due", "no time zone", "+01:00"]),
    (f'[labs.{LAB}]\ndue = 2027-02-14', [f"labs.{LAB}.due", "without a time", "T23:59:00"]),
    (f'[labs.{LAB}]\ndue = "next friday"', [f"labs.{LAB}.due", "ISO 8601"]),
    ('[labs.lab9]\ndue = "2027-02-14T23:59:00Z"', ["labs.lab9", "not a lab of this course", LAB]),
    (f'[labs.{LAB}]\ndew = "2027-02-14T23:59:00Z"', [f"labs.{LAB}.dew", "due"]),
    ('[late]\nper_day = 10', ["late.per_day", "from 0 to 1"]),
    ('[late]\npenalty = "zero"', ["late.penalty", "per_day"]),
    (f'[extensions]\n{LAB}.alice = "2 days"', [f"extensions.{LAB}.alice", "without a due date"]),
    (f'[labs.{LAB}]\ndue = "{DUE}"\n[extensions]\n{LAB}.alice = "a while"', [f"extensions.{LAB}.alice", "2 days"]),
    (f'[labs.{LAB}]\ndue = "{DUE}"\n[extensions]\n{LAB}.alice = "2027-01-01T00:00:00Z"', ["not after"]),
    ('[lms]\nmoodle_identifier = "name"', ["lms.moodle_identifier", "email"]),
    (f'[labs.{LAB}]\ndue = "{DUE}"\n[extensions]\n{LAB}.alice = "2d"', ["neither a span nor a date", "2 days"]),
    (f'[labs.{LAB}]\ndue = "{DUE}"\n[extensions]\nlab1.alice = "2 days"', ["extensions.lab1", "not a lab", LAB]),
])
def test_bad_values_name_the_key_and_the_fix(text, names):
    with pytest.raises(SettingError) as err:
        parsed(text)
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize("seconds, share", [
    (0, 0.0),                 # on time
    (9 * 60, 0.0),            # within the 10 minutes' grace
    (10 * 60, 0.0),           # the last second of the grace still counts as on time
    (11 * 60, 0.1),           # past the grace: a started day
    (DAY, 0.1),               # exactly one day: one started day, not two
    (DAY + 1, 0.2),           # a second more starts the second day
    (1.5 * DAY, 0.2),         # 1.5 days: two started days
    (7 * DAY, 0.5),           # capped
])
def test_penalty_per_started_day_with_grace_and_cap(seconds, share):
    assert term.Policy(per_day=0.1, cap=0.5, grace_minutes=10).share(seconds) == pytest.approx(share)


def test_lateness_counts_the_extension_and_says_so():
    t = parsed(f'[late]\nper_day = 0.1\ncap = 0.5\n[labs.{LAB}]\ndue = "{DUE}"\n'
               f'[extensions]\n{LAB}.alice = "2 days"')
    handed = t.due(LAB) + dt.timedelta(days=1, hours=3)
    assert term.judge(t, LAB, "bob", handed).describe() == "late by 1 day 3 h (penalty 20%)"
    assert not term.judge(t, LAB, "alice", handed).late  # within the extension
    later = term.judge(t, LAB, "alice", handed + dt.timedelta(days=1, hours=1))
    assert later.describe() == "late by 4 h, after a 2 days extension (penalty 10%)"
    assert term.judge(term.Term(), LAB, "bob", handed) is None  # no term file: nothing is due


def run_cli(course, *args):
    """``python -m autograde --course ROOT ARGS`` in a process of its own, as an instructor types it."""
    return subprocess.run([sys.executable, "-m", "autograde", "--course", str(course.root), *args],
                          capture_output=True, text=True, env=autograde.tool_env(), timeout=600)


def main(capsys, course, *args) -> tuple[int, str]:
    """The same command line in this process (cheaper for the steps that start no kernel): (exit status, output)."""
    code = cli.main(["--course", str(course.root), *args])
    return code, capsys.readouterr().out


@pytest.mark.slow
def test_a_late_hand_in_is_graded_with_the_penalty_and_exported(tmp_path, capsys):
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course)
    (course.config_dir / "term.toml").write_text(
        f'[late]\nper_day = 0.1\ncap = 0.5\n[labs.{LAB}]\ndue = "{DUE}"\nlms_name = "Toy lab (77)"\n'
        f'[extensions]\n{LAB}.alice = "3 days"\n')
    (course.config_dir / "roster.csv").write_text(
        "id,first_name,last_name,email,lms_user_id,sis_user_id,sis_login_id,section\n"
        "alice,Alice,Archer,alice@uni.example,101,S1,alice,A\n"
        "bob,Bob,Baker,bob@uni.example,102,S2,bob,A\n"
        "dan,Dan,Dale,dan@uni.example,104,S4,dan,B\n")
    assert main(capsys, course, "generate")[0] == 0
    source, release = kit.notebooks(course, LAB)
    solved = kit.solved(release, source)
    inbox = tmp_path / "inbox"
    due = dt.datetime.fromisoformat(DUE)
    # Both 1 day 3 h after the due date: alice is on time by her extension, bob is late.
    for student in ("alice", "bob"):
        when = due + dt.timedelta(days=1, hours=3)
        kit.hand_in(inbox, student, LAB, solved)
        (inbox / student / LAB / "timestamp.txt").write_text(when.isoformat())

    code, text = main(capsys, course, "collect", str(inbox))
    assert code == 0, text  # late is said, not an error
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "late by 1 day 3 h (penalty 20%)" in lines["bob"], text
    assert "late" not in lines["alice"], text
    assert term.lateness(course, LAB, "bob").share == pytest.approx(0.2)

    out = run_cli(course, "autograde", "--mode", "smoke", "--workers", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        got = {s: gb.find_submission(LAB, s) for s in ("alice", "bob")}
        assert {s: (sub.score, sub.late_submission_penalty) for s, sub in got.items()} == {
            "alice": (3, 0), "bob": (3, pytest.approx(0.6))}
        assert got["alice"].extension == dt.timedelta(days=3) and got["alice"].total_seconds_late == 0
        assert got["bob"].extension is None and got["bob"].total_seconds_late == (DAY + 3 * 3600)

    code, text = main(capsys, course, "export", "--lms", "canvas", "--to", str(tmp_path / "canvas.csv"))
    assert code == 1 and "dan: no grade for toy_lab (left empty)" in text, text  # on the roster, no hand-in
    rows = list(csv.reader((tmp_path / "canvas.csv").open()))
    assert rows[0][-1] == "Toy lab (77)" and rows[1] == ["Points Possible", "", "", "", "", "3"]
    assert {r[0]: r[-1] for r in rows[2:]} == {"Archer, Alice": "3", "Baker, Bob": "2.4", "Dale, Dan": ""}


def test_exchange_collect_says_how_late_by_the_term_file(tmp_path, monkeypatch):
    import dataclasses

    from autograde import exchange

    monkeypatch.setattr(exchange.Submission, "written", lambda sub: sub.timestamp)  # as if written then
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course)
    (course.config_dir / "term.toml").write_text(
        f'[late]\nper_day = 0.25\ncap = 0.5\n[labs.{LAB}]\ndue = "2026-12-01T13:00:00+01:00"\n'
        f'[extensions]\n{LAB}.alice = "1 day"\n')
    s = dataclasses.replace(exchange.settings(course, root=tmp_path / "exchange"), check_owner=False)
    for student in ("alice", "bob"):  # both 1 h 5 min after the due date; alice has a day more
        stamp = "2026-12-01 13:05:00.000000 UTC"
        folder = s.inbound() / f"{student}+{LAB}+{stamp}+abcd"
        folder.mkdir(parents=True)
        (folder / f"{LAB}.ipynb").write_text((course.folder("source") / LAB / f"{LAB}.ipynb").read_text())
        (folder / "timestamp.txt").write_text(stamp)
    rows = {r["student"]: r for r in exchange.collect(course, s)}
    assert rows["alice"]["note"] == "" and rows["alice"]["message"] == ""
    assert rows["bob"]["note"] == "late by 1 h 5 min (penalty 25%)" and rows["bob"]["message"] == ""


def test_a_due_date_the_term_file_does_not_name_is_pointed_out(tmp_path, caplog):
    """A lab dropped from the term file keeps the due date it had in the gradebook (so does one released with
    `exchange release --due`): late penalties follow it, so each run says so; naming the lab without `due` clears it."""
    from nbgrader.api import Gradebook

    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course)
    kit.write_toy_lab(course, "other")
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        gb.add_assignment(LAB, duedate=dt.datetime(2027, 2, 14, 22, 59))
        gb.add_assignment("other")
    (course.config_dir / "term.toml").write_text('[labs.other]\ndue = "2027-03-01T12:00:00+00:00"\n')
    with caplog.at_level(logging.WARNING, logger="autograde.term"):
        term.apply(course)
    assert f"{LAB}: the gradebook has a due date (2027-02-14 22:59 UTC) that term.toml does not name" in caplog.text
    assert "other:" not in caplog.text
    caplog.clear()
    (course.config_dir / "term.toml").write_text(f'[labs.other]\ndue = "2027-03-01T12:00:00+00:00"\n[labs.{LAB}]\n')
    term.apply(course)
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        assert gb.find_assignment(LAB).duedate is None
    assert "does not name" not in caplog.text
