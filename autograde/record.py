"""Recording a run's results on the client: each merged into the main gradebook as it arrives, then the reports."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from . import audit, classstate, gradebook, report, similarity
from .course import Course
from .options import RunOptions
from .worker import DONE, Result

log = logging.getLogger(__name__)


def lost(lab: str, student: str, exc: BaseException) -> Result:
    """The error row of a task that raised on its worker, or whose worker was lost twice."""
    result = Result(student, lab)
    if type(exc).__name__ == "KilledWorker":
        result.fail(f"the grading worker was lost twice while grading it; grade it again with --student {student}")
    else:
        result.fail(f"grading failed on the worker ({type(exc).__name__}: {exc})")
    return result


def record(options: RunOptions, result: Result, tmp: Path) -> None:
    """Merge one result into the main gradebook and mark its log as done (not when the merge failed)."""
    recorded = True
    if result.db_bytes is not None:
        result.db = tmp / f"{result.lab}-{result.student}.db"
        result.db.write_bytes(result.db_bytes)
        result.db_bytes = None
    if result.db is not None:
        try:
            start = time.perf_counter()
            result.score, result.max_score = gradebook.merge_grades(
                result.db, options.db, options.course_id, result.lab, result.student, result.overrides)
            result.timings["merge"] = time.perf_counter() - start
        except Exception as exc:  # not the student's fault: the next run tries again
            result.fail(f"could not record the grades: {exc}")
            result.notes.clear()
            recorded = False
    if not result.log:
        result.log = str(options.log_path(result.lab, result.student))
    if recorded and Path(result.log).is_file():
        with open(result.log, "a") as out:
            out.write(f"\n{DONE} {result.status} {result.message}\n")
    try:  # the class's state (errors included), for the lab's report
        classstate.update(options.config_dir, result, options.run_id)
    except (OSError, ValueError) as exc:  # the grades are in the gradebook already; only the report lacks it
        log.warning("%s: %s's result is not in the class state: %s", result.lab, result.student, exc)


def time_limit_warnings(results: list[Result]) -> list[str]:
    """One line per lab where at least half of this run's hand-ins (two or more) ran into a time limit: then the
    limits are more likely too short for this machine than every student's code too slow."""
    lines = []
    for lab in sorted({r.lab for r in results}):
        ran = [r for r in results if r.lab == lab]
        limited = [r for r in ran if r.time_limited]
        if len(limited) >= 2 and 2 * len(limited) >= len(ran):
            kinds = " and ".join(sorted({f"the limit per {r.time_limited}" for r in limited}))
            lines.append(f"{lab}: {len(limited)} of {len(ran)} hand-ins ran into {kinds}: the limits may be too "
                         "short for this machine. Look at one of them by hand; if it is only slow, grade them again "
                         "with a higher --cell-timeout (and --submission-timeout) and --force")
    return lines


def reports(course: Course, options: RunOptions, labs: list[str], results: list[Result]) -> None:
    """The run's CSV and each lab's HTML and CSV class report (with the identical handed-in weights, when
    grading those); a warning where many hand-ins of a lab ran into a time limit."""
    path = report.write_csv(options.config_dir / "reports", results)
    if path:
        log.info("report: %s", path)
    for line in time_limit_warnings(results):
        log.warning(line)
    for lab in labs:
        shared = audit.same_weights(options.submitted, lab) if options.handed_in else []
        for name, who in shared:
            log.warning("%s: identical %s handed in by %s", lab, name, ", ".join(who))
        log.info("course report: %s", report.write_html(course, lab, [r for r in results if r.lab == lab],
                                                         same_weights=shared, run=options.run_id,
                                                         sections=[similarity.section(course, lab)],
                                                         memory_limit=options.limits.memory_limit
                                                         if options.cgroups else None))
