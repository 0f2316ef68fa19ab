"""course_utils.modes: one setting selects the budget; bad values say what is allowed."""
from __future__ import annotations

import pytest

from course_utils import modes


def test_explicit_mode_wins(monkeypatch):
    for value in ("smoke", "laptop", "full", " Smoke "):
        monkeypatch.setenv("COURSE_MODE", value)
        assert modes.current_mode() == value.strip().lower()
    assert "COURSE_MODE" in modes.mode_source()


def test_default_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_MODE", raising=False)
    monkeypatch.setattr(modes, "_cuda_available", lambda: False)
    assert modes.current_mode() == "laptop"
    assert "no CUDA" in modes.mode_source()
    monkeypatch.setattr(modes, "_cuda_available", lambda: True)
    assert modes.current_mode() == "full"


def test_unknown_mode_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "fast")
    with pytest.raises(modes.ConfigError, match="smoke, laptop, full"):
        modes.current_mode()
    with pytest.raises(modes.ConfigError, match="smoke, laptop, full"):
        modes.by_mode(smoke=1, laptop=2, full=3, mode="turbo")


def test_by_mode_picks_the_current_value(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "laptop")
    assert modes.by_mode(smoke=1, laptop=2, full=3) == 2
    assert modes.by_mode(smoke=1, laptop=2, full=3, mode="full") == 3
    assert modes.banner().startswith("run mode: laptop")


def test_data_and_cache_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    assert modes.data_dir() is None
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert modes.data_dir() == tmp_path.resolve()
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "c" / "d"))
    assert modes.cache_dir().is_dir()


def test_quick_run_settings_come_from_the_started_environment():
    import os
    import subprocess
    import sys

    code = ("import os\nfrom course_utils import modes\nos.environ['COURSE_MAX_BATCHES'] = '9'\n"
            "os.environ['COURSE_GRADE_HANDIN'] = '0'\nprint(modes.max_batches(), modes.grading_handin())")
    env = dict(os.environ, COURSE_MAX_BATCHES="2", COURSE_GRADE_HANDIN="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["2", "True"], out.stderr
    env.update(COURSE_MAX_BATCHES="two")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "COURSE_MAX_BATCHES='two': use a positive whole number" in out.stderr
