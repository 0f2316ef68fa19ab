"""Grading settings that do not belong to nbgrader: the grading mode, time limits, sandbox limits.

The mode names come from :mod:`course_utils.modes`. ``COURSE_GRADING_MODE``
picks the mode (default ``laptop``); ``nbgrader_config.py`` and the command
line both read it through :func:`grading_settings`.
"""
from __future__ import annotations

import os
from pathlib import Path

from course_utils.modes import CELL_TIME_LIMITS, MODES

GRADING_MODE_VAR = "COURSE_GRADING_MODE"
DEFAULT_MODE = "laptop"
# Seconds for one cell (the same as students' validation gets) and for one whole submission, per mode.
SUBMISSION_LIMITS = {"smoke": 900, "laptop": 3600, "full": 4 * 3600}
TIME_LIMITS = {mode: (CELL_TIME_LIMITS[mode], SUBMISSION_LIMITS[mode]) for mode in MODES}
MEMORY_LIMIT = "4G"      # per submission: the kernel and everything it starts
PROCESS_LIMIT = 256      # processes and threads per submission
SCORER_TIMEOUT = 600     # seconds for scoring one submission's exported models
# Files nbgrader never copies (CourseDirectory.ignore): caches, exported models, datasets. Handed-in
# weights (weights/*.pt) do travel from submitted/ to autograded/; releases leave them out.
IGNORED_FILES = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.pt2", "data"]
RELEASE_IGNORED = [*IGNORED_FILES, "weights"]
# Grading handed-in weights (--handed-in): each training epoch and evaluation of the quick re-run stops
# after this many batches; an audit flags a score that the re-trained notebook misses by more than this.
HANDIN_BATCHES = 2
MAX_HANDIN_BYTES = 200 << 20  # one student's folder for one lab (the notebook and its weights: a few MB)
AUDIT_MARGIN = {"accuracy": 0.05, "reconstruction": 0.25}  # absolute accuracy; relative error


def grading_mode(mode: str | None = None) -> str:
    """``mode`` if given, else ``COURSE_GRADING_MODE``, else ``laptop``; checked against the run modes."""
    value = (mode or os.environ.get(GRADING_MODE_VAR, "")).strip().lower() or DEFAULT_MODE
    if value not in MODES:
        raise ValueError(f"{GRADING_MODE_VAR}={value!r}: use one of {', '.join(MODES)}")
    return value


def parse_size(text: str | int) -> int:
    """Bytes from ``'4G'``, ``'512M'``, ``'1.5G'`` or a plain number."""
    if isinstance(text, int):
        return text
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def grading_settings(mode: str | None = None) -> dict:
    """Mode, time limits and sandbox limits for grading in ``mode`` (see :func:`grading_mode`)."""
    mode = grading_mode(mode)
    cell, submission = TIME_LIMITS[mode]
    return {"mode": mode, "cell_timeout": cell, "submission_timeout": submission,
            "memory_limit": parse_size(MEMORY_LIMIT), "process_limit": PROCESS_LIMIT}


def source_weights(source: Path) -> dict[str, list[str]]:
    """``lab -> [weights/... files]`` in the instructor's source folders (left there by running a solution).

    nbgrader's autograde copies a lab's source files over each submission; these must never replace
    a student's handed-in weights or stand in for missing ones (``Autograde.exclude_overwriting``).
    """
    if not source.is_dir():
        return {}
    return {lab.name: sorted(str(p.relative_to(lab)) for p in (lab / "weights").rglob("*") if p.is_file())
            for lab in sorted(source.iterdir()) if (lab / "weights").is_dir()}
