"""The test suite's setup. Tests read the real datasets: set COURSE_DATA_DIR to the offline mirror
(CI: ../shared/data) or let torchvision download them. Fixtures and helpers: the test kit, tests/kit/."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

# pytest-xdist runs one worker per core, and each worker starts notebook kernels and
# grading processes. PyTorch's default of one thread per core would then put several
# spinning OpenMP threads on each core, which slows training 10-100x on a 2-core
# machine. One thread per process keeps the cores busy without thrashing; kernels
# and subprocesses inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

pytest_plugins = ["kit.plugin"]
