"""The instructor's command line: ``python -m autograde STEP``.

    python -m autograde generate [LAB ...]       solutions/ -> notebooks/ (student versions)
    python -m autograde check [LAB ...]          notebooks/ equals what nbgrader generates?
    python -m autograde collect FOLDER           FOLDER/<student>/<lab>/<lab>.ipynb -> autograde/submitted/
    python -m autograde autograde [LAB ...]      run every collected submission (sandboxed, on Dask), fill the gradebook
        [--handed-in [--audit SHARE]]            ... or score the weights handed in, re-training a sample
    python -m autograde feedback [LAB ...]       HTML feedback per student in autograde/feedback/
    python -m autograde export [--to FILE]       all grades as CSV (default autograde/grades.csv)
        [--lms canvas|moodle]                    ... or as the LMS's grade import CSV (roster: autograde/term.toml)
    python -m autograde similar [LAB ...]        pairs of similar hand-ins in submitted/ (autograde/reports/<lab>-similar.html)
        [--threshold SHARE]
    python -m autograde exchange ACTION          on a JupyterHub: setup, release LAB, collect, feedback (nbgrader's exchange)

Exit status: 0 when all went well, 1 when something needs the instructor's
attention (the output says what), 2 for a usage or setup error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from course_utils.modes import MODES

from . import config, exchange, pipeline, publish, release, similarity
from .collect import collect
from .config import parse_size
from .course import REPO, Course, GradingError


def _print_result(result: pipeline.Result) -> None:
    if result.status == "graded":
        text = f"{result.score:g}/{result.max_score:g} points  ({result.seconds:.0f} s)"
        if result.message:
            text += f"  NOTE: {result.message}"
    else:
        points = f"{result.score:g}/{result.max_score:g} points kept; " if result.score is not None else ""
        text = f"ERROR: {points}{result.message}  (log: {result.log})"
    print(f"{result.student:>16} {result.lab:<28} {text}", flush=True)


def _share(text: str) -> float:
    """A share in (0, 1] for --threshold, else argparse's usage error (exit 2)."""
    try:
        return similarity.check_threshold(float(text))
    except (ValueError, config.SettingError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: use a share between 0 and 1, e.g. "
                                         f"{config.SIMILARITY_THRESHOLD}") from exc


def _similar(course: Course, labs: list[str], threshold: float) -> int:
    """Print each lab's pairs at or above ``threshold`` and write its page; 1 when any pair is listed."""
    found = False
    for lab in course.pick_labs(labs):
        result = similarity.compare(course, lab, threshold)
        if not result.hand_ins and not result.skipped:
            print(f"{lab:<28} no hand-ins collected: nothing to compare")
            continue
        for p in result.flagged:
            print(f"{lab:<28} {p.first.student:>16} {p.second.student:>16}  {p.first_share:4.0%} / "
                  f"{p.second_share:4.0%} similar")
        for s in result.skipped:
            print(f"{lab:<28} {s.student:>16} not compared: {s.reason}")
        print(f"{lab:<28} {len(result.hand_ins)} hand-in(s) compared, {len(result.flagged)} pair(s) at or above "
              f"{threshold:.0%}: {similarity.write_page(course, lab, result)}")
        found = found or bool(result.flagged)
    return 1 if found else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autograde", description=__doc__.split("\n")[0])
    p.add_argument("--course", type=Path, default=REPO, help="course root (default: this repository)")
    steps = p.add_subparsers(dest="step", required=True)
    for name, text in (("generate", "student versions from solutions/ into notebooks/"),
                       ("check", "check that notebooks/ is what nbgrader generates from solutions/"),
                       ("feedback", "HTML feedback for graded submissions")):
        steps.add_parser(name, help=text).add_argument("labs", nargs="*", help="lab ids (default: all)")
    s = steps.add_parser("collect", help="copy FOLDER/<student>/<lab>/ into autograde/submitted/")
    s.add_argument("folder", type=Path)
    s.add_argument("--update", action="store_true", help="replace submissions collected before")
    s = steps.add_parser("autograde", help="grade collected submissions in parallel, sandboxed")
    s.add_argument("labs", nargs="*", help="lab ids (default: all)")
    s.add_argument("--student", action="append", help="only this student (repeatable)")
    s.add_argument("--workers", type=int,
                   help="local worker processes (default: the CPU cores this process may use, at most 8)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="grade on a running Dask cluster (e.g. tcp://host:8786) "
                                                          "instead of local worker processes")
    s.add_argument("--force", action="store_true", help="regrade submissions graded before")
    default = config.settings()
    limits = config.limits(default.mode)
    s.add_argument("--mode", choices=MODES, help=f"run mode (default: {config.GRADING_MODE_VAR}, else "
                                                 f"{config.DEFAULT_MODE}; now {default.mode})")
    s.add_argument("--cell-timeout", type=int,
                   help=f"seconds per cell (default: the mode's, {limits.cell_timeout} in {default.mode}, "
                        f"for a hand-in with {config.REFERENCE_THREADS} threads: twice that with one)")
    s.add_argument("--submission-timeout", type=float, help=f"seconds per submission (default: the mode's, "
                                                            f"{limits.submission_timeout:.0f} in {default.mode}, "
                                                            "scaled like --cell-timeout's)")
    s.add_argument("--memory-limit", type=parse_size,
                   help=f"memory per submission, e.g. 6G (default: the mode's, {limits.memory_limit / (1 << 30):g} GiB "
                        f"in {default.mode})")
    s.add_argument("--process-limit", type=int,
                   help=f"processes and threads per submission (default: {config.PROCESS_LIMIT})")
    s.add_argument("--disk-limit", type=parse_size,
                   help=f"what a submission may write to disk, its working copy and exported models together, "
                        f"e.g. 2G (default: {config.DISK_LIMIT}; it is held in memory and counts in --memory-limit)")
    s.add_argument("--no-sandbox", dest="sandbox", action="store_false", default=None,
                   help="run submissions with the grader's rights (not for real hand-ins)")
    s.add_argument("--sandbox", dest="sandbox", action="store_true", help="fail unless bubblewrap works")
    s.add_argument("--handed-in", action="store_true",
                   help="grade the weights handed in with each notebook (weights/*.pt) after a quick re-run of its "
                        "code, instead of re-training")
    s.add_argument("--audit", type=float, default=0.0, metavar="SHARE",
                   help="with --handed-in: also re-train this share of each lab's hand-ins (below 1 a fraction: 0.1 = 10%%; "
                        "from 1 on a count: 3 = three) "
                        "and flag scores the re-training does not reproduce")
    s.add_argument("--audit-seed", type=int, help="seed for choosing the audited hand-ins (default: unpredictable)")
    s = steps.add_parser("export", help="grades as CSV")
    s.add_argument("--to", type=Path, help="output file (default: autograde/grades.csv, with --lms "
                                           "autograde/grades-LMS.csv)")
    s.add_argument("--lms", choices=["canvas", "moodle"], help="the LMS's grade import CSV, from the roster named "
                                                               "in autograde/term.toml and the gradebook")
    s = steps.add_parser("similar", help="list pairs of similar hand-ins (solution cells, template removed)")
    s.add_argument("labs", nargs="*", help="lab ids (default: all)")
    s.add_argument("--threshold", type=_share, default=config.SIMILARITY_THRESHOLD, metavar="SHARE",
                   help="list a pair when this share of one hand-in's code matches the other's "
                        f"(default: {config.SIMILARITY_THRESHOLD})")
    exchange.add_parser(steps)  # python -m autograde exchange setup|release|collect|feedback (a JupyterHub)
    return p


def run(args: argparse.Namespace) -> int:
    course = Course(args.course)
    if args.step == "generate":
        release.generate(course, args.labs)
    elif args.step == "check":
        problems = release.check(course, args.labs)
        for line in problems:
            print(line)
        if problems:
            print("\nnotebooks/ is not what nbgrader generates from solutions/. Never edit notebooks/ by hand: "
                  "make the change in solutions/<lab>/<lab>.ipynb, then run `python -m autograde generate <lab>` "
                  "and commit both.")
            return 1
        print("notebooks/ matches solutions/")
    elif args.step == "collect":
        rows = collect(course, args.folder, update=args.update)
        for row in rows:
            text = "; ".join(t for t in (row["message"], row.get("late", "")) if t)
            print(f"{row['student']:>16} {row['lab']:<28} {row['status']:<9} {text}".rstrip())
        if not rows:
            print(f"no submissions found in {args.folder} (expected <student>/<lab>/<lab>.ipynb): a download from "
                  f"an LMS must be unpacked into that layout first")
            return 1
        return 1 if any(r["status"] == "skipped" or r["message"] for r in rows) else 0
    elif args.step == "autograde":
        results = pipeline.autograde(course, args.labs, students=args.student, workers=args.workers,
                                     force=args.force, mode=args.mode, cell_timeout=args.cell_timeout,
                                     submission_timeout=args.submission_timeout, sandboxed=args.sandbox,
                                     memory=args.memory_limit, processes=args.process_limit,
                                     disk=args.disk_limit,
                                     scheduler=args.scheduler, progress=sys.stderr.isatty(),
                                     on_result=_print_result, handed_in=args.handed_in, audit_share=args.audit,
                                     audit_seed=args.audit_seed)
        return 1 if any(r.status != "graded" for r in results) else 0
    elif args.step == "feedback":
        publish.feedback(course, args.labs)
        if missing := publish.missing_pages(course, course.pick_labs(args.labs)):
            print(f"no feedback page for {', '.join(missing)} (the warning above says why); the others were made")
            return 1
    elif args.step == "exchange":
        return exchange.run(course, args)
    elif args.step == "export":
        if args.lms:  # the LMS's import CSV (autograde/lms.py)
            from . import lms

            return lms.run(course, args.lms, args.to)
        publish.export(course, args.to)
    elif args.step == "similar":
        return _similar(course, args.labs, args.threshold)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except GradingError as exc:  # a bad COURSE_* setting: the parser's defaults come from it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger = logging.getLogger("autograde")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return run(args)
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
