"""Run modes: one environment variable, ``COURSE_MODE``, sets the budget of every lab.

- ``smoke``: tiny subsets, a whole notebook in well under a minute (CI).
- ``laptop``: minutes per lab on a CPU, with targets a CPU honestly reaches.
- ``full``: the original protocol, meant for a GPU.

Without ``COURSE_MODE`` the mode follows the hardware: ``full`` when CUDA is
available, ``laptop`` otherwise. ``COURSE_DATA_DIR`` names an offline dataset
mirror and ``COURSE_CACHE_DIR`` the folder for decoded datasets.

Two more settings are the grader's, read from the environment a kernel was
started with: ``COURSE_MAX_BATCHES`` (a quick run: every training epoch and
evaluation in ``course_utils.training`` stops after that many batches) and
``COURSE_GRADE_HANDIN=1`` (graded checks load the weights a student handed in,
see :func:`course_utils.grading.hand_in`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

MODES = ("smoke", "laptop", "full")
# Seconds one notebook cell may take in each mode: what validation gives a cell
# (notebooks/nbgrader_config.py), and the grader's per-cell limit (autograde/config.py).
CELL_TIME_LIMITS = {"smoke": 300, "laptop": 2700, "full": 3600}
# The time limits (of a cell here, and of a hand-in in autograde/config.py) are sized for a run with this many
# CPU threads: a student's 2-core laptop, what the README's Results were measured with. A run with fewer gets
# proportionally more time (time_factor): one thread, twice as long.
REFERENCE_THREADS = 2
MODE_VAR = "COURSE_MODE"
DATA_VAR = "COURSE_DATA_DIR"
CACHE_VAR = "COURSE_CACHE_DIR"
BATCHES_VAR = "COURSE_MAX_BATCHES"
HANDIN_VAR = "COURSE_GRADE_HANDIN"
EXPORT_VAR = "COURSE_EXPORT_DIR"  # set by the grader: where hidden tests export trained models
NO_BF16_VAR = "COURSE_NO_BF16"  # "1": never train in bfloat16 (course_utils.speed)

T = TypeVar("T")


class ConfigError(ValueError):
    """A course setting (environment variable) has a value we cannot use: what is wrong, and its fix."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(f"{what}; {fix}" if fix else what)
        self.what, self.fix = what, fix


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def read_mode(environ: dict[str, str] | None = None) -> str | None:
    """``COURSE_MODE`` from ``environ`` (default ``os.environ``), checked: a mode name, or None when unset.

    The one reader of the setting: :func:`current_mode`, :func:`grading_mode` and the doctor use it.
    """
    raw = (os.environ if environ is None else environ).get(MODE_VAR, "")
    value = raw.strip().lower()
    if value and value not in MODES:
        raise ConfigError(f"{MODE_VAR}={raw!r} is not a run mode",
                          f"`export {MODE_VAR}=laptop` (one of {', '.join(MODES)}), or `unset {MODE_VAR}` to choose by hardware")
    return value or None


def current_mode() -> str:
    """The run mode: ``COURSE_MODE`` if set, else ``full`` on CUDA and ``laptop`` otherwise."""
    return read_mode() or ("full" if _cuda_available() else "laptop")


def mode_source() -> str:
    """Where the mode came from, in words (for the doctor and notebook banners)."""
    if read_mode():
        return f"set by {MODE_VAR}"
    return "default: CUDA GPU found" if _cuda_available() else "default: no CUDA GPU"


def by_mode(*, smoke: T, laptop: T, full: T, mode: str | None = None) -> T:
    """Pick the value for the current (or given) mode: ``by_mode(smoke=1, laptop=5, full=10)``."""
    mode = mode or current_mode()
    if mode not in MODES:
        raise ConfigError(f"unknown run mode {mode!r}", f"use one of {', '.join(MODES)}")
    return {"smoke": smoke, "laptop": laptop, "full": full}[mode]


def started_environ() -> dict[str, str]:
    """The environment this process was STARTED with (``/proc/self/environ`` on Linux, else ``os.environ``).

    Code in a notebook can change ``os.environ``; values the grader relies on
    (the run mode, where models are exported) are read from here instead.
    """
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def grading_mode() -> str:
    """The run mode this process was STARTED in; hidden tests use it through ``grading.threshold``.

    A notebook can set ``os.environ["COURSE_MODE"]`` to pick easier
    thresholds; that change does not count here (see :func:`started_environ`).
    """
    return read_mode(started_environ()) or ("full" if _cuda_available() else "laptop")


def max_batches() -> int | None:
    """``COURSE_MAX_BATCHES`` at start (a positive whole number), or None: no limit."""
    value = started_environ().get(BATCHES_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{BATCHES_VAR}={value!r}: use a positive whole number of batches, or unset it")
    return int(value)


def grading_handin() -> bool:
    """True when the grader started this kernel to score handed-in weights (``COURSE_GRADE_HANDIN=1``)."""
    return started_environ().get(HANDIN_VAR, "").strip() == "1"


def data_dir() -> Path | None:
    """The offline mirror named by ``COURSE_DATA_DIR``, or None when unset."""
    value = os.environ.get(DATA_VAR, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"{DATA_VAR}={value!r} is not a folder. Point it at the dataset mirror "
            f"(the folder holding MNIST/raw/ and cifar10-jpeg.tar.gz), or unset it "
            f"to download the datasets with torchvision."
        )
    return path


def cache_dir() -> Path:
    """Folder for decoded datasets: ``COURSE_CACHE_DIR`` or ``~/.cache/course_kit``."""
    value = os.environ.get(CACHE_VAR, "").strip()
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "course_kit"
    base.mkdir(parents=True, exist_ok=True)
    return base


def banner() -> str:
    """One line for the top of a notebook: the mode and where it came from."""
    return f"run mode: {current_mode()} ({mode_source()})"


def usable_cores() -> int:
    """The CPU cores this process may use: its CPU affinity (a Slurm job's or a container's cpuset), and no more
    than its cgroup's CPU quota allows (what a JupyterHub's ``cpu_limit`` or a container's ``--cpus`` sets)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def cpu_quota() -> int | None:
    """Whole CPUs (rounded up) that the CPU quota of this process's cgroup allows, None where none is set."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "quota period" or "max period" in cpu.max
            places, names = [Path("/sys/fs/cgroup")], ("cpu.max",)
        elif "cpu" in controllers.split(","):  # cgroup v1: cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us
            places, names = [Path("/sys/fs/cgroup") / controllers, Path("/sys/fs/cgroup/cpu")], \
                ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        # The cgroup's own folder, or the mount's root where a container sees its cgroup as the root.
        for folder in [place / path.lstrip("/") for place in places] + places:
            try:
                values = " ".join(Path(folder, name).read_text() for name in names).split()
            except OSError:
                continue
            if values[0] not in ("max", "-1") and int(values[1]) > 0:
                found.append(-(-int(values[0]) // int(values[1])))
            break
    return min(found) if found else None


def env_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """The threads ``OMP_NUM_THREADS`` in ``environ`` (default ``os.environ``) gives PyTorch; None where it names
    no number."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def cpu_threads(environ: Mapping[str, str] | None = None) -> int:
    """The CPU threads a kernel started with ``environ`` computes with: ``OMP_NUM_THREADS``, else the usable cores."""
    return env_threads(environ) or usable_cores()


def time_factor(threads: int) -> float:
    """How much longer than the limits sized for :data:`REFERENCE_THREADS` a run with ``threads`` threads may
    take: 2 with one thread, 1 with two or more."""
    return max(1.0, REFERENCE_THREADS / max(1, threads))
