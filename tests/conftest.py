"""The test suite's setup. Tests read the real datasets: set COURSE_DATA_DIR to the offline mirror
(CI: ../shared/data) or let torchvision download them. Fixtures and helpers: the test kit, tests/kit/."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

# pytest-xdist runs about one worker per core, and each worker starts notebook kernels and
# grading processes. PyTorch's default of one thread per core would then put several
# spinning OpenMP threads on each core, which slows training 10-100x on a 2-core
# machine. One thread per process keeps the cores busy without thrashing; kernels
# and subprocesses inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

pytest_plugins = ["kit.plugin"]


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject.toml): one worker more than this process may use cores.

    Many tests spend part of their time waiting rather than computing (a cell that sleeps until its time
    limit, a server starting, a browser rendering); with one worker per core the cores were idle for
    about a tenth of the suite, which the extra worker takes up.
    """
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1
