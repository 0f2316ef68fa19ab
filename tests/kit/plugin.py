"""The test kit's pytest fixtures (loaded by ``tests/conftest.py`` through ``pytest_plugins``).

Each returns a plain path or a :class:`kit.Batch`; the helpers behind them are in :mod:`kit`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import kit


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository's root folder."""
    return kit.REPO


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system package, driven by Playwright (:func:`kit.browser.launch`);
    closed at the end of the module."""
    from kit import browser as chromium

    with chromium.launch() as launched:
        yield launched


@pytest.fixture
def sandboxed() -> None:
    """The grading sandbox works here (the test skips without it, or fails with COURSE_SANDBOX_REQUIRED)."""
    kit.require_sandbox()


@pytest.fixture
def toy_batch(tmp_path) -> kit.Batch:
    """A throwaway course with the toy lab generated (two TODOs, no torch), nothing graded yet."""
    return kit.generated_course(tmp_path / "course", kit.TOY_LAB)
