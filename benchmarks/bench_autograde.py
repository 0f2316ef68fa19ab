"""How fast the instructor's pipeline grades: seconds per submission per lab, submissions per minute.

    flock /tmp/coursekit-cpu.lock python benchmarks/bench_autograde.py            # grading mode of the config
    flock /tmp/coursekit-cpu.lock python benchmarks/bench_autograde.py --mode smoke --batch 20

1. For each lab (default: all in solutions/), one solution submission graded
   alone (one process): the wall-clock seconds of ``python -m autograde autograde``,
   nbgrader start-up and kernel included.
2. A batch of ``--batch`` copies of one lab's solution (default: the first
   lab), graded with ``--workers`` processes: submissions per minute.

Everything happens in a temporary copy of the course; the repository's
gradebook is not touched. Run it under the CPU lock so other jobs do not
distort the figures.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import autograde
from autograde import testing

REPO = Path(__file__).resolve().parent.parent


def timed_batch(course: autograde.Course, lab: str, students: list[str], **kwargs) -> tuple[float, list[autograde.Result]]:
    start = time.perf_counter()
    results = autograde.autograde(course, [lab], students=students, force=True, **kwargs)
    return time.perf_counter() - start, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("smoke", "laptop", "full"), help="grading mode (default: the config's)")
    parser.add_argument("--labs", nargs="*", help="labs for the per-submission figure (default: all)")
    parser.add_argument("--batch", type=int, default=20, help="submissions in the batch (0 skips it)")
    parser.add_argument("--batch-lab", help="lab of the batch (default: the first lab)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the batch")
    args = parser.parse_args()

    repo = autograde.Course(REPO)
    labs = repo.pick_labs(args.labs)
    if not labs:
        raise SystemExit("no labs in solutions/ to benchmark")
    batch_lab = args.batch_lab or labs[0]
    mode = args.mode or autograde.read_settings(repo.config_dir)["mode"]
    print(f"# bench_autograde: mode {mode}, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-autograde-") as tmp:
        course = testing.copy_course(Path(tmp), sorted(set(labs) | {batch_lab}))
        autograde.generate(course)
        inbox = Path(tmp) / "inbox"
        for lab in course.labs():
            source, release = testing.notebooks(course, lab)
            solved = testing.solved(release, source)
            count = args.batch if lab == batch_lab else 1
            for i in range(max(count, 1)):
                testing.hand_in(inbox, f"s{i:03d}", lab, solved)
        autograde.collect(course, inbox)

        rows = []
        for lab in labs:
            seconds, results = timed_batch(course, lab, ["s000"], workers=1, mode=mode)
            r = results[0]
            rows.append((lab, seconds, f"{r.score:g}/{r.max_score:g}" if r.status == "graded" else r.message))
        if args.batch:
            students = [f"s{i:03d}" for i in range(args.batch)]
            batch_seconds, results = timed_batch(course, batch_lab, students, workers=args.workers, mode=mode)
            ok = sum(r.status == "graded" for r in results)

    print(f"\n## one submission, one process (mode {mode})")
    print("| lab | seconds | score |\n| --- | ---: | --- |")
    for lab, seconds, score in rows:
        print(f"| {lab} | {seconds:.1f} | {score} |")
    if args.batch:
        print(f"\n## batch of {args.batch} x {batch_lab}, {args.workers} processes (mode {mode})")
        print(f"{batch_seconds:.1f} s in all, {args.batch / batch_seconds * 60:.2f} submissions per minute, "
              f"{ok}/{args.batch} graded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
