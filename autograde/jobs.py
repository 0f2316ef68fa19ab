"""Choosing what one ``autograde`` run grades: the hand-ins, what is scored outside, which are audited."""
from __future__ import annotations

import difflib
import logging

import nbformat

from . import audit, gradebook, scorer
from .course import Course, GradingError
from .options import Job, RunOptions
from .worker import DONE

log = logging.getLogger(__name__)


def needs_grading(options: RunOptions, lab: str, student: str) -> bool:
    """False when this submission was graded (or failed to grade) after it was last collected (the collected
    notebook's file time, :func:`autograde.collect.collect`)."""
    path = options.log_path(lab, student)
    sub = options.notebook(lab, student)
    if not path.is_file() or not sub.is_file() or sub.stat().st_mtime > path.stat().st_mtime:
        return True
    return not path.read_text().rstrip().splitlines()[-1:][0].startswith(DONE)


def choose(course: Course, options: RunOptions, labs: list[str] | None = None, *,
           students: list[str] | None = None, force: bool = False) -> list[Job]:
    """The jobs of a run: every collected hand-in of ``labs`` (of ``students``), unless graded since it was
    collected (``force`` regrades), each with its lab's outside-scoring specs; an audit sample is marked.
    Raises GradingError when nothing of ``labs`` was collected, or a student named has no hand-in of them."""
    pairs, skipped = [], 0
    picked = course.pick_labs(labs)
    collected = {lab: sorted(p.parent.name for p in options.submitted.glob(f"*/{lab}") if p.is_dir()) for lab in picked}
    _check_collected(options, collected, students)
    for lab, with_lab in collected.items():
        chosen = [s for s in with_lab if students is None or s in students]
        todo = [(lab, s) for s in chosen if force or needs_grading(options, lab, s)]
        skipped += len(chosen) - len(todo)
        pairs += todo
    if skipped:
        log.info("skipping %d submission(s) graded since they were collected (--force regrades them)", skipped)
    job_labs = sorted({lab for lab, _ in pairs})
    if pairs and not gradebook.has_labs(options.db, options.course_id, set(job_labs)):
        raise GradingError(f"the gradebook {options.db} does not know these labs yet: run "
                           f"`python -m autograde generate` first")
    specs = {lab: tuple(scorer.specs(nbformat.read(options.source / lab / f"{lab}.ipynb", as_version=4), options.mode))
             for lab in job_labs}
    audited = audit.pick(pairs, options.audit_share, options.audit_seed) if options.handed_in else set()
    return [Job(lab, student, specs[lab], (lab, student) in audited) for lab, student in pairs]


def _check_collected(options: RunOptions, collected: dict[str, list[str]], students: list[str] | None) -> None:
    """A run that would grade nothing because of a slip says so: nothing collected yet, or a student id that
    is not a collected hand-in's (ids are folder names, case and all)."""
    labs = ", ".join(collected)
    known = sorted({s for names in collected.values() for s in names})
    if not known:
        raise GradingError(f"{options.submitted} holds no hand-in of {labs}: collect them first "
                           f"(`python -m autograde collect FOLDER`)")
    for student in students or []:
        if student not in known:
            near = [s for s in known if s.lower() == student.lower()] or difflib.get_close_matches(student, known, 3)
            hint = f" (did you mean {' or '.join(near)}?)" if near else ""
            raise GradingError(f"no collected hand-in of {labs} for student {student!r}{hint}; the students are "
                               f"the folder names in {options.submitted}, case and all")
