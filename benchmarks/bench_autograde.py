"""What grading costs: seconds per submission per lab, throughput per core for 1, 2 and N workers, overheads.

    flock /tmp/coursekit-cpu.lock python benchmarks/bench_autograde.py                 # the grading mode (laptop)
    flock /tmp/coursekit-cpu.lock python benchmarks/bench_autograde.py --mode smoke --labs lab1_mnist_mlp
    flock /tmp/coursekit-cpu.lock python benchmarks/bench_autograde.py --handed-in --workers 2   # the cheap way

For each lab, the solution pasted into the released notebook is graded (sandboxed, through the
Dask LocalCluster, as ``python -m autograde autograde`` does):

1. alone, with one worker: wall-clock seconds per submission, split into nbgrader's run (kernel
   start and the notebook itself), the outside scoring of the exported models, and the merge; and
   the hand-in's peak memory (its cgroup's high-water mark, what the memory limit counts);
2. as a batch of ``--batch`` copies with 1, 2 and N workers (N = autograde's default: one per core, at most
   8): seconds per submission, submissions per hour, and per hour per core.

Each figure comes with the CPU seconds that every process of the run used (this one, the cluster's
workers, nbgrader, the kernels and the scorers, sandboxed ones included: counted in a cgroup v1
``cpuacct`` group of the benchmark's own, or from ``getrusage`` where that cannot be made, which
misses the sandboxed processes and says so): unlike wall-clock seconds, they hardly change when
something else shares the machine, so they compare two versions of the code.

The fixed overhead that is not the notebook's own run (cluster start, nbgrader and kernel start,
sandbox, merge) is measured on the toy lab, whose notebook costs nothing. Use the figures with
the sizing rule in autograde/README.md.

``--handed-in`` measures the cheap way instead (``autograde --handed-in``): each hand-in carries
weights saved by a quick student run in the grading mode (right shapes, barely trained: the
accuracy items fail, which costs the grader the same), and is graded by a quick re-run plus
outside scoring of those weights.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import autograde
from autograde import config
from autograde.options import default_workers, usable_cores
from course_utils import leftovers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test kit: throwaway courses
import kit  # noqa: E402
from kit import REPO  # noqa: E402


CPUACCT = Path("/sys/fs/cgroup/cpuacct")
GROUP = CPUACCT / f"coursekit-bench-{os.getpid()}"  # this run's group (see count_cpu)


def count_cpu() -> str:
    """Put this process (and so every process it starts) in a cgroup v1 ``cpuacct`` group of its own.

    The sandbox moves graded processes into memory and pids cgroups only, so they stay in this group, and
    bubblewrap's processes, which ``getrusage`` never sees, are counted. Without the controller (not
    root, cgroup v2) the figures come from ``getrusage`` and miss the sandboxed processes: the answer says so.
    """
    for old in CPUACCT.glob("coursekit-bench-*"):  # earlier runs' groups, removed once their last process ended
        with contextlib.suppress(OSError):
            old.rmdir()
    try:
        GROUP.mkdir(exist_ok=True)
        (GROUP / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        return f"getrusage: sandboxed processes not counted ({exc.strerror or exc})"
    return f"cgroup {GROUP}"


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and every process it started (see :func:`count_cpu`)."""
    if (GROUP / "cpuacct.usage").is_file():
        return int((GROUP / "cpuacct.usage").read_text()) / 1e9
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def grade(course: autograde.Course, lab: str, students: list[str], workers: int, mode: str,
          handed_in: bool = False) -> tuple[float, float, list]:
    """Grade ``students`` of ``lab``: (wall-clock seconds, CPU seconds of every process involved, results)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    results = autograde.autograde(course, [lab], students=students, workers=workers, force=True, mode=mode,
                                  handed_in=handed_in)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    bad = [r for r in results if r.status != "graded"]
    if bad:
        raise SystemExit(f"{lab}: {len(bad)} submission(s) did not grade: {bad[0].message}")
    # Re-trained, the solution must pass every score the grader recomputes, or the figures time a broken run
    # (handed-in weights are barely trained on purpose: their accuracy items fail, which costs the same).
    failed = [row for r in results for row in r.outside if not row["passed"]] if not handed_in else []
    if failed:
        raise SystemExit(f"{lab}: the solution failed a score the grader recomputes ({failed[0]['label']}: "
                         f"{failed[0]['value']}; {failed[0]['message']})")
    return seconds, cpu, results


def part(results: list, name: str) -> float:
    return statistics.mean(r.timings.get(name, 0.0) for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("smoke", "laptop", "full"),
                        help="grading mode (default: COURSE_GRADING_MODE, else laptop)")
    parser.add_argument("--labs", nargs="*", help="labs to measure (default: all)")
    parser.add_argument("--batch", type=int, default=4, help="submissions per batch (0 skips the batches)")
    parser.add_argument("--workers", type=int, nargs="*",
                        help="worker counts for the batches (default: 1, 2 and autograde's default)")
    parser.add_argument("--handed-in", action="store_true", help="grade handed-in weights (the cheap way)")
    args = parser.parse_args()

    repo = autograde.Course(REPO)
    labs = repo.pick_labs(args.labs)
    cores = usable_cores()
    mode = args.mode or config.settings().mode
    counts = sorted(set(args.workers or [1, 2, default_workers()]))  # the last: `autograde`'s default
    way = "handed-in weights" if args.handed_in else "re-training"
    counting = count_cpu()
    print(f"# bench_autograde: {way}, mode {mode}, {cores} CPU cores, {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}; CPU seconds from {counting}")
    rows, batches = [], []
    with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-bench-autograde-")) as tmp:
        course = kit.copy_course(Path(tmp), labs)
        kit.write_toy_lab(course)
        autograde.generate(course)
        inbox = Path(tmp) / "inbox"
        n = max(args.batch, 1)
        for lab in course.labs():
            source, release = kit.notebooks(course, lab)
            solved = kit.solved(release, source)
            weights = None
            if args.handed_in and lab != kit.TOY_LAB:
                weights = kit.run_as_student(solved, Path(tmp) / "runs" / lab, lab, mode, max_batches=2).parent
            for i in range(n):
                folder = kit.hand_in(inbox, f"s{i:03d}", lab, solved).parent
                if weights is not None:
                    shutil.copytree(weights / "weights", folder / "weights")
        autograde.collect(course, inbox)
        for lab in [kit.TOY_LAB, *labs]:
            seconds, cpu, results = grade(course, lab, ["s000"], 1, mode, args.handed_in)
            peak = results[0].peak_memory  # the hand-in's cgroup: its kernel and the outside scorer
            peak_text = "–" if peak is None else f"{peak / 1e9:.2f}"
            rows.append((lab, seconds, part(results, "nbgrader"), part(results, "scoring"), part(results, "merge"),
                         cpu, peak_text))
            print(f"{lab}: {seconds:.1f} s alone ({cpu:.1f} CPU s, peak memory {peak_text} GB; {results[0].score:g} of "
                  f"{results[0].max_score:g} points before manual grading)", flush=True)
            for workers in counts if args.batch and lab != kit.TOY_LAB else []:
                students = [f"s{i:03d}" for i in range(args.batch)]
                seconds, cpu, _ = grade(course, lab, students, workers, mode, args.handed_in)
                batches.append((lab, workers, seconds / args.batch, cpu / args.batch))
                print(f"{lab}: batch of {args.batch} with {workers} worker(s) {seconds:.1f} s ({cpu:.1f} CPU s)",
                      flush=True)

    print(f"\n## one submission alone, one worker ({way}, mode {mode}; seconds)")
    print("| lab | whole | nbgrader run | outside scoring | merge | overhead (whole - nbgrader run) | CPU seconds "
          "| peak memory (GB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for lab, whole, run, scoring, merge, cpu, peak in rows:
        print(f"| {lab} | {whole:.1f} | {run:.1f} | {scoring:.1f} | {merge:.2f} | {whole - run:.1f} | {cpu:.1f} "
              f"| {peak} |")
    if batches:
        print(f"\n## batches of {args.batch} ({way}, mode {mode})")
        print("| lab | workers | seconds per submission | submissions per hour | per hour per core "
              "| CPU seconds per submission |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for lab, workers, per, cpu in batches:
            used = min(workers, cores)
            print(f"| {lab} | {workers} | {per:.1f} | {3600 / per:.0f} | {3600 / per / used:.0f} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
