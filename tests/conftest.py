"""Shared pytest fixtures. Tests read the real datasets: set COURSE_DATA_DIR to the offline mirror
(CI: ../shared/data) or let torchvision download them."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

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
