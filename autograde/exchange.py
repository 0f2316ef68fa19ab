"""The term on a JupyterHub: nbgrader's exchange between the instructor's course folder and the students.

    python -m autograde exchange setup [--students-config DIR]   the exchange folder; the students' nbgrader settings
    python -m autograde exchange release LAB ... [--due TIME]    generate, then nbgrader release_assignment
    python -m autograde exchange collect [LAB ...]               the newest submission of each student -> autograde/submitted/
    python -m autograde exchange feedback [LAB ...]              generate feedback, then nbgrader release_feedback

Students use what nbgrader gives them in JupyterLab (the Assignment List: fetch, submit, fetch
feedback). Settings (course id, exchange folder, roster, whether a submission's folder must belong
to the student it names) come from ``autograde/nbgrader_config.py`` (:func:`settings`), with
defaults for a single hub. ``collect`` hands the newest submission of every student to
:func:`autograde.collect.collect_hand_ins`, so a hand-in from the exchange gets the same checks and
messages as one from a folder (and is copied without following links: students write these folders);
on top it says how many times a student submitted and which one it kept, flags late submissions and
submissions from students not on the roster.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from course_utils import leftovers

from . import term
from .collect import collect_hand_ins
from .config import RELEASE_IGNORED
from .course import CONFIG_NAME, STUDENT_ID, Course, GradingError, checked, nbgrader

DEFAULT_ROOT = "/srv/nbgrader/exchange"  # nbgrader's own default (Exchange.root)
DEFAULT_ROSTER = "roster.csv"            # in autograde/, nbgrader's student CSV (id, first_name, last_name, email)
STUDENTS_CONFIG_NOTE = "written by `python -m autograde exchange setup`; the students' nbgrader settings"


@dataclass(frozen=True)
class Settings:
    """What the exchange commands need from the course's nbgrader configuration."""

    course_id: str
    root: Path                 # c.Exchange.root
    roster: Path | None        # c.CourseExchange.roster (relative to autograde/); None: any user of the hub
    check_owner: bool          # c.CollectApp.check_owner: a submission's folder must belong to the student it names

    def nbgrader_args(self) -> list[str]:
        return [f"--course={self.course_id}", f"--Exchange.root={self.root}"]

    def inbound(self) -> Path:
        return self.root / self.course_id / "inbound"

    def outbound(self) -> Path:
        return self.root / self.course_id / "outbound"

    def feedback(self) -> Path:
        return self.root / self.course_id / "feedback"


def settings(course: Course, *, root: str | os.PathLike | None = None, course_id: str | None = None) -> Settings:
    """The exchange settings of ``course`` (``autograde/nbgrader_config.py``), overridden by ``root``/``course_id``."""
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader(CONFIG_NAME, path=str(course.config_dir)).load_config()
    found_id = course_id or cfg.CourseDirectory.get("course_id") or ""
    if not found_id or not STUDENT_ID.match(found_id):
        raise GradingError(f"course id {found_id!r}: set c.CourseDirectory.course_id in autograde/{CONFIG_NAME} "
                           f"(letters, digits and _.@- only)")
    found_root = Path(root or cfg.Exchange.get("root") or DEFAULT_ROOT)
    # c.CourseExchange.roster: unset -> autograde/roster.csv if there is one; "" -> no roster (any user of the hub)
    configured = cfg.CourseExchange.get("roster")
    roster_path = course.config_dir / (configured or DEFAULT_ROSTER) if configured != "" else None
    if roster_path is not None and not roster_path.is_file():
        if configured:
            raise GradingError(f"c.CourseExchange.roster names {roster_path}, which is not a file")
        roster_path = None
    return Settings(found_id, found_root, roster_path, bool(cfg.CollectApp.get("check_owner", True)))


def roster(s: Settings) -> list[str] | None:
    """Student ids of the roster file (nbgrader's CSV: an ``id`` column), or None when there is none."""
    if s.roster is None:
        return None
    with open(s.roster, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "id" not in rows[0]:
        raise GradingError(f"{s.roster}: the roster needs an `id` column (nbgrader's student CSV: "
                           f"id,first_name,last_name,email)")
    return [r["id"].strip() for r in rows if r.get("id", "").strip()]


# --------------------------------------------------------------------------- setup

def students_config(s: Settings) -> str:
    """The students' ``nbgrader_config.py``: the exchange, the course, and Validate's time per cell.

    Single-user servers start in the student's home, so these settings belong in the environment's
    ``etc/jupyter`` (``sys.prefix``), which every server reads, not only in the course folder.
    """
    return (f'"""nbgrader settings for the students of {s.course_id} ({STUDENTS_CONFIG_NOTE})."""\n'
            f"c = get_config()  # noqa: F821 (provided by nbgrader)\n"
            f"c.Exchange.root = {str(s.root)!r}\n"
            f"c.CourseDirectory.course_id = {s.course_id!r}\n"
            f"# Validate gives each cell the time the student's run mode needs (course_utils/validation.py).\n"
            f"from course_utils import validation\n"
            f"validation.configure(c)\n")


def setup(course: Course, s: Settings, students_config_dir: Path | None = None) -> list[str]:
    """Create the exchange folder as nbgrader needs it and optionally write the students' settings there."""
    done = []
    if not s.root.exists():
        s.root.mkdir(parents=True)
        done.append(f"created {s.root}")
    s.root.chmod(0o777)  # every user creates their course's inbound entries below it (nbgrader checks 0777)
    done.append(f"{s.root}: mode 0777 (nbgrader creates {s.course_id}/outbound 0755 and inbound 2733 on release)")
    if students_config_dir is not None:
        path = Path(students_config_dir) / "nbgrader_config.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(students_config(s))
        path.chmod(0o644)
        done.append(f"wrote {path}")
    return done


# --------------------------------------------------------------------------- release

def parse_due(text: str) -> dt.datetime:
    """A due date: ISO 8601 (``2026-12-10T17:00``, ``2026-12-10 17:00+01:00``); naive times are UTC."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").removesuffix(" UTC"))
    except ValueError:
        raise GradingError(f"due date {text!r}: use ISO 8601, e.g. 2026-12-10T17:00 (UTC) or 2026-12-10T17:00+01:00")
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def release(course: Course, s: Settings, labs: list[str], *, due: str | None = None, force: bool = False) -> list[str]:
    """Generate each lab's student version, then release it to the exchange (students see it in their list)."""
    from . import release as generating

    labs = course.pick_labs(labs)
    if not labs:
        raise GradingError("no labs to release")
    if (names := roster(s)) is not None:
        checked(nbgrader(course, "db", "student", "import", str(s.roster)), f"nbgrader db student import {s.roster}")
    generating.generate(course, labs)
    done = []
    for lab in labs:
        if due:
            _set_duedate(course, lab, parse_due(due))
        args = ["release_assignment", lab, *s.nbgrader_args(),
                *[f"--CourseDirectory.ignore={p}" for p in RELEASE_IGNORED]]
        if force:
            args.append("--force")
        proc = nbgrader(course, *args)
        if proc.returncode != 0 and "already exists" in (proc.stdout + proc.stderr):
            raise GradingError(f"{lab} is already released to {s.outbound() / lab}; `exchange release {lab} --force` "
                               f"replaces it (students who fetched it keep their copy; those who fetch again get "
                               f"the new one)")
        checked(proc, f"nbgrader release_assignment {lab}")
        done.append(f"released {lab} to {s.outbound() / lab}" + (f" (due {due})" if due else "")
                    + (f"; roster: {len(names)} students" if names is not None else ""))
    return done


def _set_duedate(course: Course, lab: str, when: dt.datetime) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db_path()}", course.settings()["course_id"]) as gb:
        gb.update_or_create_assignment(lab, duedate=when.astimezone(dt.timezone.utc).replace(tzinfo=None))


def _duedate(course: Course, lab: str) -> dt.datetime | None:
    from nbgrader.api import Gradebook, MissingEntry

    if not course.db_path().is_file():
        return None
    with Gradebook(f"sqlite:///{course.db_path()}", course.settings()["course_id"]) as gb:
        try:
            due = gb.find_assignment(lab).duedate
        except MissingEntry:
            return None
    return due.replace(tzinfo=dt.timezone.utc) if due is not None and due.tzinfo is None else due


# --------------------------------------------------------------------------- collect

# A submission's own time may be this much earlier than when its folder was written (copying takes a while).
CLOCK_SLACK = dt.timedelta(minutes=5)
MAX_FOLDERS = 1000  # folders of one submission looked at for its time (collect refuses more than it takes)


@dataclass
class Submission:
    """One folder in the exchange's inbound: ``<student>+<lab>+<timestamp>+<random>``."""

    path: Path
    student: str
    lab: str
    timestamp: dt.datetime

    def written(self) -> dt.datetime:
        """When the folder last changed in the exchange: the newest status-change time of it and what is in it.
        The time in its name and its ``timestamp.txt`` are written by the student's own ``nbgrader submit``;
        this one no user can set back."""
        newest = self.path.lstat().st_ctime
        for seen, (folder, dirs, files) in enumerate(os.walk(self.path)):  # links are not followed
            for name in dirs + files:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_ctime)
            if seen > MAX_FOLDERS:
                break
        return dt.datetime.fromtimestamp(newest, dt.timezone.utc)

    @property
    def owner(self) -> str:
        uid = self.path.stat().st_uid
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"


def submissions(s: Settings, lab: str) -> list[Submission]:
    """Every submission of ``lab`` in the inbound folder, oldest first (names nbgrader cannot parse are skipped)."""
    inbound = s.inbound()
    if not inbound.is_dir():
        raise GradingError(f"no inbound folder {inbound}: release a lab first (`python -m autograde exchange release "
                           f"LAB`), or fix c.Exchange.root / the course id ({s.course_id}) in autograde/{CONFIG_NAME}")
    found = []
    for entry in inbound.iterdir():
        parts = entry.name.rsplit("+", 3)  # student ids may hold '+': split from the right, as nbgrader does
        if len(parts) < 3 or parts[1] != lab or not entry.is_dir() or entry.is_symlink():
            continue
        when = term.parse_timestamp(parts[2])
        if when is not None:
            found.append(Submission(entry, parts[0], lab, when))
    return sorted(found, key=lambda sub: sub.timestamp)


def _late(timestamp: dt.datetime, due: dt.datetime | None) -> str:
    if due is None or timestamp <= due:
        return ""
    minutes = int((timestamp - due).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    span = " ".join(f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "min")) if n) or "under a minute"
    return f"late: submitted {span} after the due date ({due:%Y-%m-%d %H:%M} UTC)"


def collect(course: Course, s: Settings, labs: list[str] | None = None) -> list[dict]:
    """Collect the newest submission of every student from the exchange into autograde/submitted/.

    The chosen folders are collected by :func:`autograde.collect.collect_hand_ins` with ``update=True``
    (a newer submission replaces the one collected before; an unchanged one is left alone), so the checks and messages are those of a
    folder of hand-ins. Rows: ``student, lab, status, message, note``; ``note`` says how many
    submissions there were and which one was kept, and whether it came late.
    Not collected (status ``skipped``): a submission whose folder belongs to another user than the
    student it names (with ``CollectApp.check_owner``, the default), and with a roster, a student
    not on it.
    """
    names = roster(s)
    rows = []
    for lab in course.pick_labs(labs):
        by_student: dict[str, list[Submission]] = {}
        for sub in submissions(s, lab):
            by_student.setdefault(sub.student, []).append(sub)
        if not by_student:
            continue
        due = None if term.load(course).due(lab) else _duedate(course, lab)  # term.toml's: collect says it
        chosen, staged, refused, times = [], {}, [], {}
        for student, subs in sorted(by_student.items()):
            newest = subs[-1]
            note = ""
            if len(subs) > 1:
                note = (f"submitted {len(subs)} times; kept the newest ({newest.timestamp:%Y-%m-%d %H:%M:%S} UTC), "
                        f"the {len(subs) - 1} older ignored")
            when = newest.timestamp
            if (written := newest.written()) - when > CLOCK_SLACK:  # a time set back by hand: the exchange's counts
                times[student] = when = written
                note = "; ".join(filter(None, [note, f"its own time says {newest.timestamp:%Y-%m-%d %H:%M} UTC, "
                                                     f"but it reached the exchange at {written:%Y-%m-%d %H:%M} UTC, "
                                                     f"which counts"]))
            if late := _late(when, due):
                note = f"{note}; {late}" if note else late
            row = {"student": student, "lab": lab, "status": "skipped", "message": "", "note": note}
            if s.check_owner and newest.owner != student:
                row["message"] = (f"claims to be from {student} but its folder belongs to {newest.owner}: not "
                                  f"collected ({newest.path.name}; where every user shares one uid, as on "
                                  f"Kubernetes, set c.CollectApp.check_owner = False)")
                refused.append(row)
            elif names is not None and student not in names:
                row["message"] = f"not on the roster ({s.roster}): not collected"
                refused.append(row)
            else:
                chosen.append((student, lab, newest.path))  # copied without following links (collect.copy_plain)
                staged[student] = row
        found = collect_hand_ins(course, chosen, update=True, times=times) if chosen else []
        for row in found:
            extra = staged.get(row["student"], {})
            row["note"] = "; ".join(t for t in (extra.get("note", ""), row.pop("late", "")) if t)
        rows.extend(found + refused)
    return sorted(rows, key=lambda r: (r["lab"], r["student"]))


# --------------------------------------------------------------------------- feedback

def release_feedback(course: Course, s: Settings, labs: list[str] | None = None) -> list[dict]:
    """Feedback pages for every graded submission, released to the exchange for ``fetch_feedback``.

    A submission collected from a folder has no ``submission_secret.txt`` (only nbgrader's submit
    writes one), so nbgrader cannot release its page: the row says where the page is, to hand it
    back another way. Rows: ``student, lab, status, message``.
    """
    from . import publish

    labs = course.pick_labs(labs)
    publish.feedback(course, labs)
    rows = []
    for lab in labs:
        missing = publish.missing_pages(course, [lab])  # (an older page of theirs is out of date: kept back)
        rows += [{"student": student, "lab": lab, "status": "not released",
                  "message": "nbgrader could not make its feedback page (see the warning above)"} for student in missing]
        pages = sorted(p for p in course.folder("feedback").glob(f"*/{lab}/*.html") if p.parent.parent.name not in missing)
        if not pages:
            continue
        exchange_ready = [p for p in pages if (p.parent / "submission_secret.txt").is_file()
                          and (p.parent / "timestamp.txt").is_file()]
        for page in pages:
            if page not in exchange_ready:
                rows.append({"student": page.parent.parent.name, "lab": lab, "status": "not released",
                             "message": f"collected from a folder, not through the exchange: hand back {page} "
                                        f"another way (e-mail, the LMS)"})
        if not exchange_ready:
            continue
        with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-feedback-")) as tmp:
            # nbgrader releases every page of the lab it finds; give it only those it can release.
            for page in exchange_ready:
                dest = Path(tmp) / page.parent.parent.name / lab
                dest.mkdir(parents=True, exist_ok=True)
                for f in (page, page.parent / "submission_secret.txt", page.parent / "timestamp.txt"):
                    shutil.copyfile(f, dest / f.name)
            proc = nbgrader(course, "release_feedback", lab, *s.nbgrader_args(),
                            f"--CourseDirectory.feedback_directory={tmp}")
            checked(proc, f"nbgrader release_feedback {lab}")
        rows += [{"student": p.parent.parent.name, "lab": lab, "status": "released",
                  "message": ""} for p in exchange_ready]
    return sorted(rows, key=lambda r: (r["lab"], r["student"]))


# --------------------------------------------------------------------------- command line

def add_parser(steps: argparse._SubParsersAction) -> None:
    """``python -m autograde exchange ACTION``: the subcommands below ``exchange`` (see the module's docstring)."""
    p = steps.add_parser("exchange", help="the term on a JupyterHub: nbgrader's exchange (release, collect, feedback)")
    p.add_argument("--root", help=f"the exchange folder (default: c.Exchange.root in autograde/{CONFIG_NAME}, "
                                  f"else {DEFAULT_ROOT})")
    p.add_argument("--course-id", help=f"the course id (default: c.CourseDirectory.course_id in autograde/{CONFIG_NAME})")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("setup", help="create the exchange folder (mode 0777); write the students' nbgrader settings")
    a.add_argument("--students-config", type=Path, metavar="DIR",
                   help="write nbgrader_config.py for the students here: the etc/jupyter of the environment their "
                        "servers run (e.g. /opt/course-env/etc/jupyter)")
    a = actions.add_parser("release", help="generate the labs, then release them to the exchange")
    a.add_argument("labs", nargs="+", help="lab ids")
    a.add_argument("--due", help="due date, ISO 8601 (naive: UTC); collect flags later submissions")
    a.add_argument("--force", action="store_true", help="release again over an earlier release")
    a = actions.add_parser("collect", help="the newest submission of each student -> autograde/submitted/")
    a.add_argument("labs", nargs="*", help="lab ids (default: all)")
    a = actions.add_parser("feedback", help="feedback pages for the graded submissions, released to the exchange")
    a.add_argument("labs", nargs="*", help="lab ids (default: all)")


def run(course: Course, args: argparse.Namespace) -> int:
    """Carry out ``python -m autograde exchange ACTION``; the exit status as the other steps' (0, 1 or 2)."""
    s = settings(course, root=args.root, course_id=args.course_id)
    if args.action == "setup":
        for line in setup(course, s, args.students_config):
            print(line)
    elif args.action == "release":
        for line in release(course, s, args.labs, due=args.due, force=args.force):
            print(line)
    elif args.action == "collect":
        rows = collect(course, s, args.labs)
        for row in rows:
            text = "; ".join(t for t in (row["message"], row["note"]) if t)
            print(f"{row['student']:>16} {row['lab']:<28} {row['status']:<10} {text}".rstrip())
        if not rows:
            print(f"no submissions in {s.inbound()}")
        return 1 if any(r["status"] == "skipped" or r["message"] for r in rows) else 0
    elif args.action == "feedback":
        rows = release_feedback(course, s, args.labs)
        for row in rows:
            print(f"{row['student']:>16} {row['lab']:<28} {row['status']:<12} {row['message']}".rstrip())
        if not rows:
            print("nothing graded yet: run `python -m autograde autograde` first")
        return 1 if any(r["status"] != "released" for r in rows) else 0
    return 0
