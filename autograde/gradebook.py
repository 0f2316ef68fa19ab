"""The main gradebook: merging one submission's private results into it, and reading scores back."""
from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path


def copy_db(src: Path, dest: Path) -> None:
    """A consistent copy of an SQLite file (sqlite3's online backup)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def _open(url: str, course_id: str):
    from nbgrader.api import Gradebook

    return Gradebook(url, course_id)


def has_labs(db: Path, course_id: str, labs: set[str]) -> bool:
    """True when every lab in ``labs`` was generated into the gradebook ``db``."""
    if not db.is_file():
        return False
    with _open(f"sqlite:///{db}", course_id) as gb:
        return labs <= {a.name for a in gb.assignments}


def merge_grades(db: Path, main_db: Path, course_id: str, lab: str, student: str,
                 overrides: dict[str, float] | None = None) -> tuple[float, float]:
    """Copy one student's autograde results for ``lab`` from a private gradebook into the main one.

    The private gradebook was writable while the submission ran, so nothing in
    it is taken on trust: only automatic scores, comments, late penalty and
    timestamp are copied, each score is clamped to the main gradebook's own
    maximum, an item missing from the private copy scores 0, and
    ``overrides`` (grade id -> score, from the outside scorer) win. Manual
    grades in the main gradebook are kept. Returns (score, max_score).
    """
    from sqlalchemy.exc import SAWarning

    from nbgrader.api import MissingEntry

    overrides = overrides or {}
    with _open(f"sqlite:///{db}", course_id) as src, _open(f"sqlite:///{main_db}", course_id) as dst, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush notices, harmless
        sub = src.find_submission(lab, student)
        person = src.find_student(student)
        dst.update_or_create_student(student, first_name=person.first_name, last_name=person.last_name,
                                     email=person.email, lms_user_id=person.lms_user_id)
        dst.update_or_create_submission(lab, student, timestamp=sub.timestamp)
        for nb in dst.find_submission(lab, student).notebooks:
            try:
                theirs = src.find_submission_notebook(nb.name, lab, student)
            except MissingEntry:
                theirs = None
            nb.late_submission_penalty = max(0.0, theirs.late_submission_penalty or 0.0) if theirs else 0.0
            private = {g.name: g for g in theirs.grades} if theirs else {}
            for grade in nb.grades:
                got = private.get(grade.name)
                score = got.auto_score if got is not None else 0.0
                if grade.name in overrides and score is not None:
                    score = min(score, overrides[grade.name])
                grade.auto_score = None if score is None else min(max(float(score), 0.0), grade.max_score)
                needs = got.needs_manual_grade if got is not None else False
                grade.needs_manual_grade = grade.manual_score is not None or bool(needs)
            comments = {c.name: c for c in theirs.comments} if theirs else {}
            for comment in nb.comments:
                if comment.name in comments:
                    comment.auto_comment = comments[comment.name].auto_comment
        dst.db.commit()
        merged = dst.find_submission(lab, student)
        return merged.score, merged.max_score


def item_scores(url: str, course_id: str, lab: str, student: str) -> dict[str, tuple[float, float]]:
    """``grade_id -> (auto_score, max_score)`` of the autograded (code) items of one submission."""
    with _open(url, course_id) as gb:
        nb = gb.find_submission_notebook(lab, lab, student)
        return {g.name: (g.auto_score, g.max_score) for g in nb.grades if g.cell.cell_type == "code"}
