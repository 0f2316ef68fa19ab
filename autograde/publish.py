"""What goes back out: HTML feedback per student and the grades as CSV."""
from __future__ import annotations

import logging
from pathlib import Path

from .course import Course, checked, nbgrader

log = logging.getLogger(__name__)


def feedback(course: Course, labs: list[str] | None = None) -> list[Path]:
    """HTML feedback for every graded submission of ``labs`` (hidden tests are not shown)."""
    for lab in course.pick_labs(labs):
        if not list(course.folder("autograded").glob(f"*/{lab}/{lab}.ipynb")):
            log.info("%s: nothing graded yet", lab)
            continue
        checked(nbgrader(course, "generate_feedback", lab, "--force"), f"nbgrader generate_feedback {lab}")
    pages = sorted(course.folder("feedback").glob("*/*/*.html"))
    log.info("%d feedback page(s) in %s", len(pages), course.folder("feedback"))
    return pages


def export(course: Course, to: Path | None = None) -> Path:
    """Every student's score per lab from the gradebook, as CSV (nbgrader export)."""
    to = Path(to or course.config_dir / "grades.csv").resolve()
    checked(nbgrader(course, "export", f"--to={to}"), "nbgrader export")
    log.info("grades: %s", to)
    return to
