"""The benchmarks run and print their figures (not how fast: that is what they are for).

Each is run as a user runs it, with its smallest arguments: a benchmark that breaks is found here, not
on the day someone needs its figures (``bench_autograde`` without ``--mode`` once stopped with a
KeyError). ``bench_labs`` and ``gpu_full`` have tests of their own (test_bench_labs.py, test_gpu_full.py).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import kit
from kit import REPO

pytestmark = pytest.mark.slow


def run(script: str, *args: str, **env: str) -> str:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_bench_autograde_grades_in_the_configured_mode():
    """Without --mode it grades in COURSE_GRADING_MODE, and prints one row per lab with the solution's points."""
    kit.require_sandbox()
    out = run("bench_autograde.py", "--labs", "lab1_mnist_mlp", "--batch", "0", COURSE_GRADING_MODE="smoke")
    assert "re-training, mode smoke" in out, out
    [(score, best)] = re.findall(r"^lab1_mnist_mlp: [\d.]+ s alone .*; ([\d.]+) of ([\d.]+) points", out, re.M)
    assert 0 < float(score) <= float(best), out
    assert re.search(r"^\| lab1_mnist_mlp \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out, re.M), out


def test_bench_sandbox_prints_what_the_sandbox_costs():
    kit.require_sandbox()
    out = run("bench_sandbox.py", "--copies", "1")
    assert re.search(r"toy lab \(no torch\): [\d.]+ s per submission unsandboxed, [\d.]+ s sandboxed", out), out
    assert re.search(r"empty bubblewrap sandbox: \d+ ms", out), out


def test_bench_data_times_both_loaders_and_the_decoding():
    if not os.environ.get("COURSE_DATA_DIR"):
        pytest.skip("bench_data times the offline mirror: set COURSE_DATA_DIR")
    out = run("bench_data.py", "--train-images", "6000")
    assert "MNIST epochs over 6,000 training images" in out, out
    assert re.search(r"whole-epoch speed-up: [\d.]+x", out), out
    assert re.search(r"CIFAR-10 first load from the JPEG mirror: +[\d.]+ s", out), out
