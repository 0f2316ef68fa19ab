"""Grades for the LMS: Canvas's gradebook import CSV and Moodle's grade import CSV, from the roster and the gradebook.

``python -m autograde export --lms canvas|moodle [--to FILE]``. The scores are nbgrader's (the
gradebook's score of each submission less its late penalty, as ``nbgrader export`` computes them);
the students come from the roster CSV that ``autograde/term.toml`` names (``[roster] file``,
default ``autograde/roster.csv``: nbgrader's student CSV ``id,first_name,last_name,email`` plus
the LMS's ids). Students graded but not on the roster, and students on the roster without a grade
for a lab, are reported, never silently dropped.

Formats:
- Canvas (https://community.canvaslms.com/t5/Instructor-Guide/How-do-I-import-grades-in-the-Gradebook/ta-p/807):
  the columns ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per assignment
  named as in a Canvas export (``Name (assignment id)``), a ``Points Possible`` row under the header;
  Canvas matches students by ID / SIS ids; an empty cell leaves Canvas's grade unchanged.
- Moodle (https://docs.moodle.org/en/Grade_import): a column to map users by (``Email address``,
  ``ID number`` or ``Username``; chosen on the import page under "Identify user by"), then a column
  per grade item (mapped to Moodle's grade items on the same page).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from . import term as terms
from .config import SettingError
from .course import Course

log = logging.getLogger(__name__)
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_COLUMNS = {"email": "Email address", "idnumber": "ID number", "username": "Username"}


@dataclass(frozen=True)
class Student:
    """One roster row: nbgrader's student CSV columns plus the LMS's ids (empty where not given)."""

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""     # Canvas's user ID
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""
    username: str = ""        # Moodle
    idnumber: str = ""        # Moodle


def read_roster(path: Path) -> list[Student]:
    """The roster CSV (an ``id`` column, the others optional), in its order."""
    path = Path(path)
    if not path.is_file():
        raise SettingError(f"no roster {path}: write it (columns id,first_name,last_name,email and the LMS's "
                           f"ids: lms_user_id,sis_user_id,sis_login_id,section for Canvas, username,idnumber "
                           f"for Moodle), or name it in autograde/term.toml under [roster] file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    fields = Student.__dataclass_fields__
    header = [name for name in reader.fieldnames or [] if name]
    if not rows or "id" not in rows[0]:
        raise SettingError(f"{path}: the roster needs an `id` column (the student's folder name) and a row per "
                           f"student; its header reads {header!r} (comma-separated, columns: {', '.join(fields)})")
    if unknown := [name for name in header if name not in fields]:
        raise SettingError(f"{path}: unknown column(s) {', '.join(unknown)}; the roster's columns are "
                           f"{', '.join(fields)} (id is required)")
    return [Student(**{k: (v or "").strip() for k, v in row.items() if k in fields})
            for row in rows if (row.get("id") or "").strip()]


def scores(course: Course) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, list[str]]]:
    """(lab -> max score, student -> lab -> score less the late penalty, student -> labs with answers nobody
    has graded by hand yet) of every submission in the gradebook."""
    from nbgrader.api import Gradebook

    maxima, got, waiting = {}, {}, {}
    with Gradebook(f"sqlite:///{course.db_path()}", course.settings()["course_id"]) as gb:
        for assignment in gb.assignments:
            maxima[assignment.name] = assignment.max_score
            for sub in assignment.submissions:
                if sub.timestamp is None and not sub.score:
                    continue  # a row nbgrader made for an extension, never graded
                score = max(0.0, (sub.score or 0.0) - (sub.late_submission_penalty or 0.0))
                got.setdefault(sub.student.id, {})[assignment.name] = score
                if any(g.needs_manual_grade for nb in sub.notebooks for g in nb.grades):
                    waiting.setdefault(sub.student.id, []).append(assignment.name)
    return maxima, got, waiting


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def table(course: Course, lms: str) -> tuple[list[list[str]], list[str]]:
    """The LMS's CSV rows and the problems (students not on the roster, roster students without a grade)."""
    term = terms.load(course)
    roster = read_roster(term.roster or course.config_dir / terms.DEFAULT_ROSTER)
    maxima, got, waiting = scores(course)
    labs = [lab for lab in course.labs() if lab in maxima]
    names = [term.lms_name(lab) for lab in labs]
    problems = [f"{sid}: graded ({', '.join(sorted(got[sid]))}) but not on the roster {term.roster}; add them "
                f"or their grades are not exported" for sid in sorted(set(got) - {s.id for s in roster})]
    problems += [f"{sid}: answers of {', '.join(sorted(labs_))} wait for grading (or review) by hand in the "
                 f"formgrader: their points are not in this file yet" for sid, labs_ in sorted(waiting.items())]
    rows: list[list[str]] = []
    if lms == "canvas":
        rows.append(CANVAS_FIXED + names)
        rows.append(["Points Possible", "", "", "", ""] + [_number(maxima[lab]) for lab in labs])
    elif lms == "moodle":
        ident = MOODLE_COLUMNS[term.moodle_identifier]
        rows.append([ident, "First name", "Last name"] + names)
    else:
        raise SettingError(f"--lms {lms}: use canvas or moodle")
    for s in roster:
        mine = got.get(s.id, {})
        if missing := [lab for lab in labs if lab not in mine]:
            problems.append(f"{s.id}: no grade for {', '.join(missing)} (left empty)")
        cells = [_number(mine[lab]) if lab in mine else "" for lab in labs]
        if lms == "canvas":
            if not (s.lms_user_id or s.sis_user_id or s.sis_login_id):
                problems.append(f"{s.id}: no lms_user_id, sis_user_id or sis_login_id in the roster: Canvas "
                                f"cannot match the row")
            name = f"{s.last_name}, {s.first_name}" if s.last_name else (s.first_name or s.id)
            rows.append([name, s.lms_user_id, s.sis_user_id, s.sis_login_id, s.section] + cells)
        else:
            key = getattr(s, term.moodle_identifier)
            if not key:
                problems.append(f"{s.id}: no {term.moodle_identifier} in the roster: Moodle cannot match the row")
            rows.append([key, s.first_name, s.last_name] + cells)
    return rows, problems


def export(course: Course, lms: str, to: Path | None = None) -> tuple[Path, list[str]]:
    """Write the LMS's import CSV (default ``autograde/grades-<lms>.csv``); returns it and the problems."""
    rows, problems = table(course, lms)
    to = Path(to or course.config_dir / f"grades-{lms}.csv").resolve()
    with open(to, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return to, problems


def run(course: Course, lms: str, to: Path | None = None) -> int:
    """``export --lms``: write the file, print it and every problem; 1 when there are problems."""
    path, problems = export(course, lms, to)
    for line in problems:
        print(line)
    print(f"{lms} import file: {path}")
    return 1 if problems else 0
