"""Grading settings that do not belong to nbgrader: the grading mode, time and memory limits, sandbox limits.

The mode names come from :mod:`course_utils.modes`. The grader's one setting of its own,
``COURSE_GRADING_MODE`` (default ``laptop``), is read by :func:`settings`, checked, and
nowhere else; the command line's defaults and ``nbgrader_config.py`` come from it, and
:func:`limits` gives a mode's time and sandbox limits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from course_utils.modes import CELL_TIME_LIMITS, MODES, REFERENCE_THREADS, time_factor

from .course import GradingError

GRADING_MODE_VAR = "COURSE_GRADING_MODE"
DEFAULT_MODE = "laptop"
# Seconds for one cell (the same as students' validation gets) and for one whole submission, per mode.
SUBMISSION_LIMITS = {"smoke": 900, "laptop": 3600, "full": 4 * 3600}
TIME_LIMITS = {mode: (CELL_TIME_LIMITS[mode], SUBMISSION_LIMITS[mode]) for mode in MODES}
# The time limits are sized for a hand-in with REFERENCE_THREADS threads (course_utils.modes). A hand-in with
# fewer (one hand-in per core, the default of a batch) gets proportionally more time: lab 5's laptop training
# takes 833 s with two threads and 1,581 s with one (bfloat16); in float32 on a CPU without bfloat16, more
# than the 2,700-s cell limit (autograde/README.md, "Measured speed").
# Memory per submission (the kernel, everything it starts and the outside scorer), per mode. Measured
# (benchmarks/bench_autograde.py prints each lab's peak; the class report shows each hand-in's): lab 4's
# solution graded in laptop mode on a CPU without native bfloat16 (AVX2: float32 forward passes) peaked
# at 4.15 and 4.64 GB in two runs, over the 4 GiB that every mode had until 2026-12-06 (lab 5: 2.44 GB);
# with bfloat16 lab 4's notebook peaks at 2.5 GB. Full mode keeps the datasets on the GPU and was not
# measured yet: its figure leaves room.
MEMORY_LIMITS = {"smoke": "4G", "laptop": "6G", "full": "8G"}
PROCESS_LIMIT = 256      # processes and threads per submission
# Disk per submission: its working copy and its exported models together (autograde.disk), in memory, so it
# counts in the memory limit too. A hand-in needs its notebook, its weights (at most MAX_HANDIN_BYTES) and
# the models its hidden tests export (lab 5's largest is under 20 MB).
DISK_LIMIT = "1G"
SCORER_TIMEOUT = 600     # seconds for scoring one submission's exported models
# Files nbgrader never copies (CourseDirectory.ignore): caches, exported models, datasets. Handed-in
# weights (weights/*.pt) do travel from submitted/ to autograded/; releases leave them out.
IGNORED_FILES = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.pt2", "data"]
RELEASE_IGNORED = [*IGNORED_FILES, "weights"]
# Grading handed-in weights (--handed-in): each training epoch and evaluation of the quick re-run stops
# after this many batches (the audit's margins are each check's own: course_utils.checks).
HANDIN_BATCHES = 2
MAX_HANDIN_BYTES = 200 << 20  # one student's folder for one lab (the notebook and its weights: a few MB)
# Similar hand-ins (autograde.similarity): a pair is listed when this share of one hand-in's own code
# (solution cells, template removed) matches the other's. Measured (tests/test_similarity.py): lab 1's
# hand-disguised copy of the solution 84-89%; independent correct solutions at most 62% (lab 1, whose
# short PyTorch loops look alike in everyone's hands), under 40% in the other labs.
SIMILARITY_THRESHOLD = 0.75


class SettingError(GradingError):
    """A setting with a value the grader cannot use; the message names the setting and its fix (exit status 2)."""


@dataclass(frozen=True)
class Settings:
    """The grader's own settings from its environment, checked."""

    mode: str  # COURSE_GRADING_MODE: the mode hand-ins are graded in unless --mode says otherwise


@dataclass(frozen=True)
class Limits:
    """What one hand-in may take in a mode: seconds per cell and per submission, memory, processes, disk."""

    mode: str
    cell_timeout: int
    submission_timeout: float
    memory_limit: int    # bytes, for the kernel and everything it starts
    process_limit: int   # processes and threads
    disk_limit: int      # bytes its working copy and exported models may take (autograde.disk)
    fixed: frozenset[str] = field(default=frozenset())  # time limits the instructor set: never scaled

    def for_threads(self, threads: int) -> Limits:
        """The limits of a hand-in that runs with ``threads`` threads: the mode's time limits are for
        :data:`REFERENCE_THREADS`, and scale up for fewer; limits the instructor set stay as set."""
        factor = time_factor(threads)
        return replace(self, cell_timeout=self.cell_timeout if "cell_timeout" in self.fixed
                       else round(self.cell_timeout * factor),
                       submission_timeout=self.submission_timeout if "submission_timeout" in self.fixed
                       else self.submission_timeout * factor)


def settings(environ: dict | None = None) -> Settings:
    """``COURSE_GRADING_MODE`` (default ``laptop``), checked against the run modes."""
    value = (environ if environ is not None else os.environ).get(GRADING_MODE_VAR, "").strip().lower()
    mode = value or DEFAULT_MODE
    if mode not in MODES:
        raise SettingError(f"{GRADING_MODE_VAR}={value!r} is not a run mode: set it to one of "
                           f"{', '.join(MODES)}, or unset it for {DEFAULT_MODE}")
    return Settings(mode=mode)


def limits(mode: str) -> Limits:
    """The time and sandbox limits of grading in ``mode``."""
    if mode not in MODES:
        raise SettingError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    cell, submission = TIME_LIMITS[mode]
    return Limits(mode=mode, cell_timeout=cell, submission_timeout=float(submission),
                  memory_limit=parse_size(MEMORY_LIMITS[mode]), process_limit=PROCESS_LIMIT,
                  disk_limit=parse_size(DISK_LIMIT))


def parse_size(text: str | int) -> int:
    """Bytes from ``'4G'``, ``'512M'``, ``'1.5G'`` or a plain number."""
    if isinstance(text, int):
        return text
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def source_weights(source: Path) -> dict[str, list[str]]:
    """``lab -> [weights/... files]`` in the instructor's source folders (left there by running a solution).

    nbgrader's autograde copies a lab's source files over each submission; these must never replace
    a student's handed-in weights or stand in for missing ones (``Autograde.exclude_overwriting``).
    """
    if not source.is_dir():
        return {}
    return {lab.name: sorted(str(p.relative_to(lab)) for p in (lab / "weights").rglob("*") if p.is_file())
            for lab in sorted(source.iterdir()) if (lab / "weights").is_dir()}
