"""Memory and process limits for one hand-in: a cgroup (v1) per submission, in ``memory`` and ``pids``.

Created by root under ``/sys/fs/cgroup/{memory,pids}/coursekit/``; the grader
joins the hand-in's processes to it before any of their code runs
(:func:`autograde.sandbox.join_cgroup`), reads which limit was hit, and kills
and removes it when the hand-in is done. Those of a grader that died are
removed by the next one (:func:`sweep`).
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from course_utils import leftovers

ROOT = Path("/sys/fs/cgroup")
PARENT = "coursekit"
CONTROLLERS = ("memory", "pids")


def problem() -> str:
    """Why this process cannot make cgroups with limits, or "" when it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "only root can create cgroups"
    for controller in CONTROLLERS:
        folder = ROOT / controller
        if not folder.is_dir():
            return f"no cgroup v1 {controller} controller at {folder}"
        try:
            (folder / PARENT).mkdir(exist_ok=True)
        except OSError as exc:
            return f"cannot create cgroups in {folder} ({exc.strerror})"
    return ""


def human_bytes(n: int) -> str:
    gib = n / (1 << 30)
    return f"{gib:g} GiB" if gib >= 1 else f"{n / (1 << 20):g} MiB"


def _pids(dirs: list[Path]) -> set[int]:
    found: set[int] = set()
    for folder in dirs:
        try:
            found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
        except OSError:
            pass
    return found


def _kill(dirs: list[Path], rounds: int = 50) -> None:
    """SIGKILL everything in the cgroups, repeatedly, until they are empty (a fork bomb keeps forking)."""
    for _ in range(rounds):
        pids = _pids(dirs)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def _remove(dirs: list[Path]) -> None:
    """Kill what runs in the cgroups, then remove them."""
    _kill(dirs)
    for folder in dirs:
        for _ in range(20):
            try:
                folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # processes still exiting
                time.sleep(0.1)


class Cgroup:
    """A memory and a pids cgroup (v1) for one submission; created with limits, removed by :meth:`close`."""

    def __init__(self, name: str, *, memory: int | None, processes: int | None):
        self.name = f"{leftovers.tag(name + '-')}{uuid.uuid4().hex[:8]}"
        self.memory, self.processes = memory, processes
        self.dirs = {c: ROOT / c / PARENT / self.name for c in CONTROLLERS}
        for folder in self.dirs.values():
            folder.mkdir(parents=True)
        if memory:
            (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory))
            swap = self.dirs["memory"] / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no escape into swap
                try:
                    swap.write_text(str(memory))
                except OSError:
                    pass
        if processes:
            (self.dirs["pids"] / "pids.max").write_text(str(processes))

    @property
    def procs_files(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.dirs.values()]

    def pids(self) -> set[int]:
        return _pids(list(self.dirs.values()))

    def _read(self, controller: str, file: str) -> str:
        try:
            return (self.dirs[controller] / file).read_text()
        except OSError:
            return ""

    def peak_memory(self) -> int | None:
        """The most memory the cgroup's processes held at once so far, in bytes (what the limit counts: their
        memory and the file cache charged to them; the kernel drops that cache before the limit kills)."""
        text = self._read("memory", "memory.max_usage_in_bytes").strip()
        return int(text) if text.isdigit() else None

    def process_limit_hit(self) -> bool:
        events = dict(line.split() for line in self._read("pids", "pids.events").splitlines() if " " in line)
        return int(events.get("max", 0)) > 0

    def memory_limit_hit(self) -> bool:
        control = dict(line.split() for line in self._read("memory", "memory.oom_control").splitlines() if " " in line)
        return int(control.get("oom_kill", 0)) > 0

    def breaches(self) -> list[str]:
        """The limits this submission ran into, in words."""
        out = []
        if self.memory and self.memory_limit_hit():
            out.append(f"used more than {human_bytes(self.memory)} of memory (the limit); its kernel was killed")
        if self.processes and self.process_limit_hit():
            out.append(f"tried to run more than {self.processes} processes or threads (the limit); its kernel "
                       f"was stopped")
        return out

    def kill(self) -> None:
        """SIGKILL everything in the cgroup until it is empty."""
        _kill(list(self.dirs.values()))

    def close(self) -> None:
        _remove(list(self.dirs.values()))


def sweep() -> list[str]:
    """Kill and remove the cgroups of graders that have ended (their names carry the maker's process id).

    Returns the names removed. Does nothing where this process cannot manage cgroups (not root).
    """
    if problem():
        return []
    names = set()
    for controller in CONTROLLERS:
        try:
            names |= {p.name for p in (ROOT / controller / PARENT).iterdir() if p.is_dir()}
        except OSError:
            continue
    gone = sorted(name for name in names if leftovers.owner_gone(name))
    for name in gone:
        _remove([ROOT / c / PARENT / name for c in CONTROLLERS])
    return gone
