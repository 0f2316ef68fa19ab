"""The course's term: due dates, late policies, extensions and the roster, from ``autograde/term.toml``.

One file (read with :mod:`tomllib`) says when each lab is due, what a late hand-in costs and which
students have an extension; nbgrader applies it: :func:`apply` writes the due dates
(``Assignment.duedate``) and extensions (``SubmittedAssignment.extension``) into a gradebook, nbgrader
computes ``total_seconds_late`` from the hand-in's ``timestamp.txt``, and its ``AssignLatePenalties``
step asks :class:`TermLatePenalty` (configured in ``nbgrader_config.py``) for the penalty.
Without a term file nothing is due and nothing is penalised. :func:`lateness` says how late one
hand-in is, for collect and the reports.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Unicode

from .config import SettingError
from .course import STUDENT_ID, Course

log = logging.getLogger(__name__)

TERM_FILE = "term.toml"
DEFAULT_ROSTER = "roster.csv"
DAY = 86400
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(weeks?|days?|hours?|h|minutes?|min)\s*$", re.IGNORECASE)
_UNITS = {"w": 7 * DAY, "d": DAY, "h": 3600, "m": 60}
_POLICY_KEYS = {"penalty", "per_day", "cap", "grace_minutes"}
_LAB_KEYS = {"due", "late", "lms_name"}
_TOP_KEYS = {"late", "labs", "extensions", "roster", "lms"}
MOODLE_IDENTIFIERS = ("email", "idnumber", "username")


@dataclass(frozen=True)
class Policy:
    """What a late hand-in costs: ``per_day`` of the notebook's points per started day late, at most
    ``cap`` of them; nothing within ``grace_minutes`` of the due date (after it, days count from the due date)."""

    per_day: float = 0.0
    cap: float = 1.0
    grace_minutes: float = 0.0

    def share(self, seconds_late: float) -> float:
        """The share of the points (0..1) lost for a hand-in ``seconds_late`` after its due date."""
        if seconds_late <= 0 or seconds_late <= self.grace_minutes * 60:
            return 0.0
        return min(self.cap, self.per_day * math.ceil(seconds_late / DAY))

    def describe(self) -> str:
        if self.per_day == 0:
            return "no late penalty"
        return f"{self.per_day:.0%} per started day late, at most {self.cap:.0%}" + (
            f", {self.grace_minutes:g} min grace" if self.grace_minutes else "")


@dataclass(frozen=True)
class LabTerm:
    due: dt.datetime | None          # aware
    policy: Policy
    lms_name: str | None = None      # the lab's column name in the LMS (Canvas: "Name (id)")


@dataclass(frozen=True)
class Term:
    """The whole term file, checked; ``Term()`` is a course without one (nothing due)."""

    labs: dict[str, LabTerm] = field(default_factory=dict)
    extensions: dict[tuple[str, str], dt.timedelta] = field(default_factory=dict)
    default: Policy = Policy()
    roster: Path | None = None
    moodle_identifier: str = "email"
    path: Path | None = None

    def due(self, lab: str, student: str | None = None) -> dt.datetime | None:
        """The lab's due date, with ``student``'s extension when there is one."""
        lab_term = self.labs.get(lab)
        if lab_term is None or lab_term.due is None:
            return None
        return lab_term.due + self.extensions.get((lab, student), dt.timedelta(0))

    def policy(self, lab: str) -> Policy:
        return self.labs[lab].policy if lab in self.labs else self.default

    def lms_name(self, lab: str) -> str:
        return (self.labs[lab].lms_name if lab in self.labs else None) or lab


# --------------------------------------------------------------------------- reading and checking

def _fail(key: str, problem: str, fix: str) -> SettingError:
    return SettingError(f"{TERM_FILE}: {key} {problem}; {fix}")


def parse_time(value: object, key: str) -> dt.datetime:
    """An aware datetime from a TOML datetime or an ISO 8601 string with a time zone."""
    when = value
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _fail(key, f"= {value!r} is not an ISO 8601 date and time",
                        'write it like "2027-02-14T23:59:00+01:00"') from None
    if isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        raise _fail(key, f"= {value!r} is a date without a time and time zone",
                    f'write "{when.isoformat()}T23:59:00+01:00" (your time zone\'s offset)')
    if not isinstance(when, dt.datetime):
        raise _fail(key, f"= {value!r} is not a date", 'write it like "2027-02-14T23:59:00+01:00"')
    if when.tzinfo is None:
        raise _fail(key, f"= {value!r} has no time zone",
                    f'add its offset, e.g. "{when.isoformat()}+01:00" (or Z for UTC)')
    return when


def parse_span(value: str, key: str) -> dt.timedelta:
    """``"2 days"``, ``"36 hours"``, ``"90 min"``, ``"1 week"`` as a timedelta."""
    match = _SPAN.match(value) if isinstance(value, str) else None
    if not match:
        raise _fail(key, f"= {value!r} is neither a span nor a date",
                    'write "2 days", "36 hours", "90 minutes" or a new due date "2027-02-16T23:59:00+01:00"')
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2][0].lower()])


def _share(table: dict, name: str, key: str) -> float:
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _fail(f"{key}.{name}", f"= {value!r} is not a share", f"write a number from 0 to 1, e.g. {name} = 0.1")
    return float(value)


def parse_policy(table: object, key: str, base: Policy | None = None) -> Policy:
    """A late policy table: ``{penalty = "none"}`` or ``{per_day = 0.1, cap = 0.5, grace_minutes = 15}``."""
    if not isinstance(table, dict):
        raise _fail(key, f"= {table!r} is not a table", 'write { per_day = 0.1, cap = 0.5 } or { penalty = "none" }')
    if unknown := sorted(set(table) - _POLICY_KEYS):
        raise _fail(f"{key}.{unknown[0]}", "is not a late-policy key", f"use {', '.join(sorted(_POLICY_KEYS))}")
    if "penalty" in table:
        if table["penalty"] != "none" or set(table) - {"penalty", "grace_minutes"}:
            raise _fail(f"{key}.penalty", f"= {table['penalty']!r}",
                        'penalty = "none" is the only named policy; for a penalty write per_day and cap instead')
        return Policy()
    base = base or Policy()
    grace = table.get("grace_minutes", base.grace_minutes)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        raise _fail(f"{key}.grace_minutes", f"= {grace!r}", "write a number of minutes, 0 or more")
    per_day = _share(table, "per_day", key) if "per_day" in table else base.per_day
    cap = _share(table, "cap", key) if "cap" in table else (base.cap if "per_day" not in table else 1.0)
    return Policy(per_day=per_day, cap=cap, grace_minutes=float(grace))


def parse(data: dict, labs: list[str] | None = None, config_dir: Path | None = None,
          path: Path | None = None) -> Term:
    """A :class:`Term` from the term file's parsed TOML; ``labs``: the course's lab ids, to check names against."""
    if unknown := sorted(set(data) - _TOP_KEYS):
        raise _fail(unknown[0], "is not a term-file key", f"use {', '.join(sorted(_TOP_KEYS))}")
    default = parse_policy(data.get("late", {}), "late")
    lab_terms = {}
    for lab, table in (data.get("labs") or {}).items():
        key = f"labs.{lab}"
        if labs is not None and lab not in labs:
            raise _fail(f"[{key}]", "is not a lab of this course", f"labs: {', '.join(labs) or 'none'}")
        if not isinstance(table, dict):
            raise _fail(key, "is not a table", f'write [{key}] with due = "2027-02-14T23:59:00+01:00"')
        if unknown := sorted(set(table) - _LAB_KEYS):
            raise _fail(f"{key}.{unknown[0]}", "is not a lab key", f"use {', '.join(sorted(_LAB_KEYS))}")
        due = parse_time(table["due"], f"{key}.due") if "due" in table else None
        policy = parse_policy(table["late"], f"{key}.late", default) if "late" in table else default
        name = table.get("lms_name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise _fail(f"{key}.lms_name", f"= {name!r}", 'write the assignment\'s name in the LMS, e.g. "Lab 1 (48213)"')
        lab_terms[lab] = LabTerm(due, policy, name)
    extensions = {}
    for lab, students in (data.get("extensions") or {}).items():
        if labs is not None and lab not in labs:
            raise _fail(f"extensions.{lab}", "is not a lab of this course", f"labs: {', '.join(labs) or 'none'}")
        if not isinstance(students, dict):
            raise _fail(f"extensions.{lab}", "is not a table of students", 'write lab.student = "2 days" under [extensions]')
        due = lab_terms[lab].due if lab in lab_terms else None
        for student, value in students.items():
            key = f"extensions.{lab}.{student}"
            if due is None:
                raise _fail(key, "extends a lab without a due date", f'set due under [labs.{lab}] first')
            if not STUDENT_ID.match(student):
                raise _fail(key, "names an invalid student id", "use the id of the student's folder (letters, digits, _.@-)")
            if isinstance(value, str) and _SPAN.match(value):
                extensions[(lab, student)] = parse_span(value, key)
            elif isinstance(value, dt.datetime) or (isinstance(value, str) and value[:1].isdigit()):
                try:
                    extensions[(lab, student)] = parse_time(value, key) - due
                except SettingError:
                    if isinstance(value, dt.datetime) or "-" in value:
                        raise
                    raise _fail(key, f"= {value!r} is neither a span nor a date", 'write a span like "2 days", '
                                '"36 hours" or "90 min", or a new due date like "2027-02-16T23:59:00+01:00"') from None
                if extensions[(lab, student)] <= dt.timedelta(0):
                    raise _fail(key, "is not after the lab's due date", "give a later date, or remove the extension")
            else:
                extensions[(lab, student)] = parse_span(value, key)
    roster_table = data.get("roster") or {}
    if not isinstance(roster_table, dict) or set(roster_table) - {"file"}:
        raise _fail("roster", "takes one key, file", 'write [roster] file = "roster.csv"')
    roster_name = roster_table.get("file", DEFAULT_ROSTER)
    if not isinstance(roster_name, str) or not roster_name:
        raise _fail("roster.file", f"= {roster_name!r}", 'write the roster CSV\'s path, relative to autograde/, e.g. "roster.csv"')
    roster = (config_dir / roster_name) if config_dir is not None else Path(roster_name)
    lms_table = data.get("lms") or {}
    if not isinstance(lms_table, dict) or set(lms_table) - {"moodle_identifier"}:
        raise _fail("lms", "takes one key, moodle_identifier", 'write [lms] moodle_identifier = "email"')
    ident = lms_table.get("moodle_identifier", "email")
    if ident not in MOODLE_IDENTIFIERS:
        raise _fail("lms.moodle_identifier", f"= {ident!r}", f"use one of {', '.join(MOODLE_IDENTIFIERS)}")
    return Term(lab_terms, extensions, default, roster, ident, path)


def read(path: Path, labs: list[str] | None = None) -> Term:
    """The term file at ``path``, checked (a missing file: :class:`Term()`, nothing due)."""
    path = Path(path)
    if not path.is_file():
        return Term(roster=path.parent / DEFAULT_ROSTER)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path} is not valid TOML ({exc}); fix that line") from None
    return parse(data, labs, path.parent, path)


def load(course: Course) -> Term:
    """The course's ``autograde/term.toml``, checked against its labs."""
    return read(course.config_dir / TERM_FILE, course.labs())


# --------------------------------------------------------------------------- into nbgrader's gradebook

def _utc(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)  # nbgrader stores naive UTC


def apply(course: Course, db: Path | None = None, labs: list[str] | None = None) -> None:
    """Write the term's due dates and extensions into the gradebook ``db`` (default: the course's).

    Labs the term file names get its due date; labs it does not name keep theirs (e.g. from
    ``exchange release --due``). Every collected hand-in of such a lab gets its extension, or none;
    nbgrader then computes ``total_seconds_late`` from them. Without a term file nothing changes.
    """
    term = load(course)
    db = Path(db or course.db_path())
    if term.path is None or not term.labs or labs == [] or not db.is_file():
        return
    from nbgrader.api import Gradebook, MissingEntry

    submitted = course.folder("submitted")
    with Gradebook(f"sqlite:///{db}", course.settings()["course_id"]) as gb:
        for lab in labs or sorted(term.labs):
            if lab not in term.labs:
                continue
            try:
                assignment = gb.find_assignment(lab)
            except MissingEntry:
                continue  # not generated yet: `generate` puts it in, the next run sets its due date
            assignment.duedate = _utc(term.labs[lab].due) if term.labs[lab].due else None
            students = {p.parent.name for p in submitted.glob(f"*/{lab}") if p.is_dir()}
            students |= {s.student.id for s in assignment.submissions}
            students |= {s for (ext_lab, s) in term.extensions if ext_lab == lab and (submitted / s / lab).is_dir()}
            for student in sorted(students):
                extension = term.extensions.get((lab, student))
                try:
                    sub = gb.find_submission(lab, student)
                except MissingEntry:
                    if extension is None:
                        continue  # nbgrader creates it when grading; no extension to record
                    gb.update_or_create_student(student)
                    sub = gb.update_or_create_submission(lab, student)
                sub.extension = extension
        gb.db.commit()
        for assignment in gb.assignments:  # a due date from elsewhere (exchange release --due, an older term file)
            if assignment.duedate is None or assignment.name in term.labs or (labs and assignment.name not in labs):
                continue
            log.warning("%s: the gradebook has a due date (%s UTC) that %s does not name, and late penalties "
                        "follow it: name the lab there, with `due = ...`, or without it for no due date",
                        assignment.name, f"{assignment.duedate:%Y-%m-%d %H:%M}", term.path.name)


class TermLatePenalty(LateSubmissionPlugin):
    """nbgrader's late-penalty plugin for the term file: ``per_day`` of the notebook's points per started
    day late (after the grace period), at most ``cap``; nbgrader itself keeps it between 0 and the score.

    ``AssignLatePenalties`` calls it only for a submission whose ``total_seconds_late`` (from the
    gradebook's due date and extension, see :func:`apply`) is above 0.
    """

    term_file = Unicode("", help="path of the course's term.toml").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float | None:
        step = self.parent  # nbgrader's AssignLatePenalties, inside its gradebook session
        term = read(Path(self.term_file)) if self.term_file else Term()
        share = term.policy(step.assignment_id).share(total_seconds_late)
        notebook = step.gradebook.find_submission_notebook(step.notebook_id, step.assignment_id, student_id)
        penalty = share * (notebook.max_score or 0.0)
        self.log.info("late by %.0f s: %s -> penalty %.2f of %.2f points", total_seconds_late,
                      term.policy(step.assignment_id).describe(), penalty, notebook.max_score or 0.0)
        return penalty if penalty > 0 else None


# --------------------------------------------------------------------------- how late one hand-in is

@dataclass(frozen=True)
class Lateness:
    """One hand-in against its due date: when it came, by when it was due (with the extension), what it costs."""

    lab: str
    student: str
    submitted: dt.datetime
    due: dt.datetime                   # with the extension
    extension: dt.timedelta | None
    seconds_late: float
    share: float                       # of the notebook's points lost (0..1)
    policy: Policy

    @property
    def late(self) -> bool:
        return self.seconds_late > 0

    def describe(self) -> str:
        """``"late by 1 day 3 h (penalty 10%)"``, or ``""`` when on time."""
        if not self.late:
            return ""
        span = span_text(self.seconds_late)
        ext = f", after a {span_text(self.extension.total_seconds())} extension" if self.extension else ""
        if self.share > 0:
            return f"late by {span}{ext} (penalty {self.share:.0%})"
        if self.policy.per_day and self.seconds_late <= self.policy.grace_minutes * 60:
            return f"late by {span}{ext}, within the {self.policy.grace_minutes:g} min grace period (no penalty)"
        return f"late by {span}{ext} (no penalty)"


def span_text(seconds: float) -> str:
    """``93780`` -> ``"1 day 2 h 3 min"``."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} day{'s' if days != 1 else ''}" if days else "", f"{hours} h" if hours else "",
             f"{mins} min" if mins else ""]
    return " ".join(p for p in parts if p) or f"{int(seconds)} s"


def parse_timestamp(text: str) -> dt.datetime | None:
    """A hand-in's time as nbgrader writes it (or ISO 8601), aware UTC; None when it cannot be read."""
    from nbgrader.utils import parse_utc

    try:
        when = parse_utc(text)
    except Exception:  # nbgrader raises ValueError or dateutil's ParserError
        return None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def read_timestamp(folder: Path) -> dt.datetime | None:
    """The hand-in's ``timestamp.txt`` (:func:`parse_timestamp`); None when missing or unreadable."""
    path = Path(folder) / "timestamp.txt"
    if not path.is_file() or not (text := path.read_text().strip()):
        return None
    return parse_timestamp(text)


def judge(term: Term, lab: str, student: str, submitted: dt.datetime) -> Lateness | None:
    """How late ``submitted`` is for ``student``'s ``lab`` under ``term``; None when the lab has no due date."""
    due = term.due(lab, student)
    if due is None:
        return None
    seconds = max(0.0, (submitted - due).total_seconds())
    policy = term.policy(lab)
    return Lateness(lab, student, submitted, due, term.extensions.get((lab, student)), seconds,
                    policy.share(seconds), policy)


def lateness(course: Course, lab: str, student: str, term: Term | None = None) -> Lateness | None:
    """How late ``student``'s collected hand-in of ``lab`` is (from ``submitted/<student>/<lab>/timestamp.txt``).

    None when the lab has no due date in the term file or the hand-in has no timestamp.
    """
    term = term if term is not None else load(course)
    if term.due(lab) is None:
        return None
    when = read_timestamp(course.folder("submitted") / student / lab)
    return judge(term, lab, student, when) if when is not None else None
