"""What the grading sandbox costs per submission: graded with and without it, and its parts.

    flock /tmp/coursekit-cpu.lock python benchmarks/bench_sandbox.py [--copies 6] [--lab LAB]

Grades ``--copies`` copies of the solved toy lab (no torch: the notebook itself
costs almost nothing, so the difference is the sandbox) one at a time, once
sandboxed and once with ``--no-sandbox``, and prints the seconds per
submission of each and the difference. With ``--lab`` it does the same for one
real lab in smoke mode, where the difference also holds the export of the
trained models and the outside scoring. Then it times the parts: starting an
empty bubblewrap sandbox, creating and removing a cgroup pair. Target: under
2 s per submission.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import autograde
from autograde import cgroups, sandbox
from course_utils import leftovers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test kit: throwaway courses
import kit  # noqa: E402


def per_submission(course: autograde.Course, lab: str, students: list[str], sandboxed: bool) -> float:
    start = time.perf_counter()
    results = autograde.autograde(course, [lab], students=students, workers=1, force=True, mode="smoke",
                                  sandboxed=sandboxed)
    seconds = (time.perf_counter() - start) / len(students)
    bad = [r for r in results if r.status != "graded"]
    if bad:
        raise SystemExit(f"{len(bad)} submission(s) did not grade: {bad[0].message}")
    return seconds


def compare(root: Path, lab: str | None, copies: int) -> tuple[float, float]:
    course = kit.copy_course(root, [lab] if lab else [])
    if lab is None:
        kit.write_toy_lab(course)
        lab = kit.TOY_LAB
    autograde.generate(course, [lab])
    source, release = kit.notebooks(course, lab)
    students = [f"s{i:02d}" for i in range(copies)]
    for s in students:
        kit.hand_in(root / "inbox", s, lab, kit.solved(release, source))
    autograde.collect(course, root / "inbox")
    per_submission(course, lab, students[:1], True)  # warm caches (imports, datasets) before timing
    return per_submission(course, lab, students, False), per_submission(course, lab, students, True)


def timed(fn, repeats: int = 10) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--lab", help="also measure one real lab in smoke mode")
    args = parser.parse_args()
    found = sandbox.support()
    if not found.bwrap:
        raise SystemExit("; ".join(found.warnings()))
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), "
          f"cgroup limits: {'yes' if found.cgroups else 'no'}")
    for lab in [None] + ([args.lab] if args.lab else []):
        with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-bench-sandbox-")) as tmp:
            plain, boxed = compare(Path(tmp), lab, args.copies)
        name = lab or "toy lab (no torch)"
        print(f"{name}: {plain:.2f} s per submission unsandboxed, {boxed:.2f} s sandboxed: "
              f"overhead {boxed - plain:+.2f} s ({args.copies} submissions, one worker, smoke mode)")
    scratch = sandbox.new_scratch()  # open to the grading user, as grading's is
    try:
        stage = sandbox.new_stage(scratch)
        empty = timed(lambda: subprocess.run(sandbox.prefix([], stage=stage) + ["/usr/bin/true"], check=True))
        full = timed(lambda: subprocess.run(sandbox.prefix(sandbox.course_mounts(), stage=stage) + ["/usr/bin/true"],
                                            check=True))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"empty bubblewrap sandbox: {empty * 1000:.0f} ms to start and stop; with the course's mounts "
          f"{full * 1000:.0f} ms (as {sandbox.identity().name})")
    if found.cgroups:
        def pair():
            cgroups.Cgroup("bench", memory=1 << 30, processes=64).close()
        print(f"cgroup pair (memory + pids): {timed(pair) * 1000:.0f} ms to create and remove")


if __name__ == "__main__":
    main()
