"""Benchmark: execute whole solution notebooks and print their time and graded scores.

For each lab, in the given run mode: the wall-clock time of executing the whole solution notebook
(nbclient, kernel start included, the way `jupyter nbconvert --execute` does), the kernel's peak
resident memory (what the grader's memory limit must leave room for), and every graded
score the notebook printed (the hidden ``grading.check_accuracy`` / ``check_reconstruction`` calls,
read with the grader's own parser, ``autograde.scorer.specs``), next to the bound the grader
applies in that mode, the original assignment's figure and the ratio of the two.

The notebook runs in a temporary copy of its folder (its ``weights/`` stay out of the repository),
with ``COURSE_MODE`` set to the mode. Nothing else of the environment changes: set
``COURSE_DATA_DIR`` to the offline mirror as for the tests.

Usage (time it on an otherwise idle machine, e.g. under ``flock -x /tmp/coursekit-cpu.lock``)::

    COURSE_DATA_DIR=../shared/data python benchmarks/bench_labs.py lab1_mnist_mlp --mode smoke
    COURSE_DATA_DIR=../shared/data python benchmarks/bench_labs.py all --mode laptop
    COURSE_DATA_DIR=../shared/data python benchmarks/bench_labs.py lab2_cifar_cnn_autoencoder --seed 1

``--seed N`` runs the notebook with ``SEED = N`` instead of the seed its setup cell sets, to see how
far each graded score moves from seed to seed (what a threshold must leave room for).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograde import scorer  # the grader's own reading of the checks
from course_utils import kernels, leftovers

# The original assignments' figures for each graded score (full protocol), by lab and label.
ORIGINAL: dict[str, dict[str, tuple[float, str]]] = {
    "lab1_mnist_mlp": {
        "logistic regression test accuracy": (0.90, "> 0.90 after 1 epoch"),
        "MLP test accuracy": (0.97, "about 0.97"),
    },
    "lab2_cifar_cnn_autoencoder": {
        "CNN test accuracy": (0.60, "about 0.60"),
        "autoencoder test reconstruction error": (6.8, "about 6.8 per image"),
    },
    "lab3_attention_sequences": {
        "model 1 test accuracy": (0.807, "0.807"),
        "model 2 test accuracy": (0.944, "0.944"),
    },
    "lab4_attention_cnn": {  # measured by the original with attention over channels, not positions
        "test accuracy of trained['vanilla']": (0.595, "59.5 ± 1.3 % (4 runs)"),
        "test accuracy of trained['early']": (0.605, "60.5 ± 0.8 % (4 runs, channel attention)"),
        "test accuracy of trained['late']": (0.603, "60.3 ± 1.6 % (4 runs, channel attention)"),
        "test accuracy of trained['double']": (0.637, "63.7 ± 2.7 % (4 runs, channel attention)"),
    },
    "lab5_vision_transformer": {
        "ViT test accuracy": (0.7507, "0.7507 after 150 epochs"),
    },
}


def labs() -> list[str]:
    return sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").is_file())


def printed_scores(nb: nbformat.NotebookNode, labels: list[str]) -> dict[str, float]:
    """The value each graded check printed ("<label>: 0.1234 (at least ... needed)")."""
    text = "\n".join(
        "".join(out.get("text", "")) for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    found = {}
    for label in labels:
        match = re.search(re.escape(label) + r": ([0-9.]+) \(at (?:least|most) ", text)
        if match:
            found[label] = float(match.group(1))
    return found


SEED_LINE = re.compile(r"^SEED = \d+\b", re.M)


def with_seed(nb: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """``nb`` with its ``SEED = <n>`` line (the setup cell's) set to ``seed``."""
    cells = [cell for cell in nb.cells if cell.cell_type == "code" and SEED_LINE.search(cell.source)]
    if len(cells) != 1:
        raise ValueError(f"expected one code cell that sets `SEED = <n>`, found {len(cells)}")
    cells[0].source = SEED_LINE.sub(f"SEED = {seed}", cells[0].source, count=1)
    return nb


def peak_memory(pid: int) -> int | None:
    """The most resident memory process ``pid`` has held so far (Linux's VmHWM), in bytes; None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) * 1024 if found else None


def execute(nb: nbformat.NotebookNode, workdir: Path, env: dict[str, str], timeout: int) -> tuple[float, int | None]:
    """Execute ``nb`` in ``workdir`` with ``env`` added to this process's environment; return (seconds, the
    kernel's peak resident memory in bytes, read after its last cell; None where it cannot be read)."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            kernel_manager_class=kernels.AsyncSocketKernelManager,  # no TCP port to race for
                            resources={"metadata": {"path": str(workdir)}})
    peak: list[int | None] = [None]

    def read_peak(**_) -> None:  # nbclient's hook after each cell: the high-water mark only grows
        peak[0] = peak_memory(client.km.provisioner.process.pid)

    client.on_cell_executed = read_peak
    saved = os.environ.copy()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start, peak[0]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_lab(lab: str, mode: str, timeout: int, seed: int | None = None) -> tuple[float, int | None, list[dict]]:
    """Execute ``lab``'s solution notebook in ``mode`` (with ``SEED = seed`` if given);
    return (seconds, the kernel's peak memory in bytes, one row per graded score)."""
    source = ROOT / "solutions" / lab / f"{lab}.ipynb"
    nb = nbformat.read(source, as_version=4)
    if seed is not None:
        nb = with_seed(nb, seed)
    plan = scorer.specs(nb, mode)
    with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-bench-lab-")) as tmp:
        workdir = Path(tmp) / lab
        shutil.copytree(source.parent, workdir)
        seconds, peak = execute(nb, workdir, {"COURSE_MODE": mode}, timeout)
    values = printed_scores(nb, [s.label for s in plan])
    rows = []
    for spec in plan:
        value = values.get(spec.label)
        original, original_text = ORIGINAL.get(lab, {}).get(spec.label, (None, "unknown"))
        # Higher is better for accuracies, lower for reconstruction errors: a ratio above 1 is better.
        ratio = None
        if value is not None and original:
            ratio = value / original if spec.kind == "accuracy" else original / value
        rows.append({"label": spec.label, "kind": spec.kind, "value": value, "bound": spec.bound,
                     "passed": value is not None and spec.passed(value), "original": original_text,
                     "ratio": ratio})
    return seconds, peak, rows


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lab", help=f"a lab id or 'all' ({', '.join(labs())})")
    parser.add_argument("--mode", choices=("smoke", "laptop", "full"), default="laptop")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    parser.add_argument("--seed", type=int, default=None, help="run with SEED = this (default: the notebook's)")
    args = parser.parse_args(argv)
    chosen = labs() if args.lab == "all" else [args.lab]
    unknown = [lab for lab in chosen if lab not in labs()]
    if unknown:
        parser.error(f"unknown lab {unknown[0]!r}; one of {', '.join(labs())} or all")
    import torch
    print(f"mode {args.mode}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}", flush=True)
    failed = False
    for lab in chosen:
        seconds, peak, rows = run_lab(lab, args.mode, args.timeout, args.seed)
        seeded = "" if args.seed is None else f", SEED = {args.seed}"
        memory = "" if peak is None else f", the kernel's peak memory {peak / 1e9:.2f} GB"
        print(f"{lab} ({args.mode}{seeded}): whole notebook {minutes(seconds)}{memory}", flush=True)
        for row in rows:
            value = "not printed" if row["value"] is None else f"{row['value']:.4f}"
            need = f"{'at least' if row['kind'] == 'accuracy' else 'at most'} {row['bound']:g}"
            ratio = "" if row["ratio"] is None else f", ratio {row['ratio']:.2f}"
            print(f"  {row['label']}: {value} ({need}: {'passed' if row['passed'] else 'FAILED'}); "
                  f"original {row['original']}{ratio}", flush=True)
            failed |= not row["passed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
