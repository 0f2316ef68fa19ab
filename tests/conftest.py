"""Shared pytest fixtures. Tests read the real datasets: set COURSE_DATA_DIR to the offline mirror
(CI: ../shared/data) or let torchvision download them."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

# pytest-xdist runs one worker per core, and each worker starts notebook kernels and
# grading processes. PyTorch's default of one thread per core would then put several
# spinning OpenMP threads on each core, which slows training 10-100x on a 2-core
# machine. One thread per process keeps the cores busy without thrashing; kernels
# and subprocesses inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror folder named by COURSE_DATA_DIR (tests that need its files skip without it)."""
    value = os.environ.get("COURSE_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("COURSE_DATA_DIR does not point at the offline dataset mirror")
    return Path(value).resolve()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty decoded-dataset cache for this test only."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(cache))
    return cache
