"""The grading sandbox: bubblewrap for files and network, cgroup v1 for memory and processes.

Student code (the notebook's kernel, and the scorer that loads its exported
models) runs under ``bwrap``: the whole filesystem read-only, the course's
private folders (solutions, other hand-ins, gradebook, feedback) replaced by
empty ones, a private ``/tmp``, no network, no capabilities, its own process
and user namespaces. Memory and the number of processes and threads are
capped by a cgroup per submission (``/sys/fs/cgroup/{memory,pids}``, writable
by root). Where either is missing, grading still works, unprotected, and
:func:`support` says so in words.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "coursekit"
SANDBOX_VAR = "COURSE_SANDBOX"  # JSON for the kernel manager: work folder, bwrap prefix, cgroup files
SANDBOX_UID = 1000


@dataclass(frozen=True)
class Support:
    """What this machine offers: a working ``bwrap`` and writable cgroup v1 memory/pids controllers."""

    bwrap: str | None
    bwrap_problem: str
    cgroups: bool
    cgroups_problem: str

    def warnings(self) -> list[str]:
        """One sentence per missing protection, with its fix (empty when fully sandboxed)."""
        out = []
        if not self.bwrap:
            out.append(f"UNSANDBOXED: submissions run with the grader's rights and can read or delete other "
                       f"hand-ins and the gradebook ({self.bwrap_problem}). Fix: `apt-get install bubblewrap` "
                       f"(Linux, root or user namespaces allowed).")
        if not self.cgroups:
            out.append(f"NO LIMITS: memory and process limits are not enforced ({self.cgroups_problem}). "
                       f"Fix: grade as root on Linux with cgroup v1 memory and pids controllers.")
        return out


def _bwrap_problem(path: str | None) -> str:
    if path is None:
        return "bwrap is not installed"
    try:
        proc = subprocess.run([path, *base_args(), "--", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not start: {exc}"
    return "" if proc.returncode == 0 else f"bwrap fails here: {proc.stderr.strip()[:200]}"


def _cgroups_problem() -> str:
    if os.name != "posix" or os.geteuid() != 0:
        return "only root can create cgroups"
    for controller in ("memory", "pids"):
        folder = CGROUP_ROOT / controller
        if not folder.is_dir():
            return f"no cgroup v1 {controller} controller at {folder}"
        try:
            (folder / CGROUP_PARENT).mkdir(exist_ok=True)
        except OSError as exc:
            return f"cannot create cgroups in {folder} ({exc.strerror})"
    return ""


@functools.cache
def support() -> Support:
    """Probe bubblewrap and cgroups once per process."""
    path = shutil.which("bwrap")
    bwrap_problem = _bwrap_problem(path)
    cgroups_problem = _cgroups_problem()
    return Support(bwrap=path if not bwrap_problem else None, bwrap_problem=bwrap_problem,
                   cgroups=not cgroups_problem, cgroups_problem=cgroups_problem)


def base_args() -> list[str]:
    """bwrap options every sandbox shares: read-only root, fresh /dev, /proc and /tmp, no network, no privileges."""
    return ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox"]


@functools.cache
def _empty_file() -> str:
    """An empty read-only file to lay over private files (a device node like /dev/null cannot be opened there)."""
    fd, path = tempfile.mkstemp(prefix="coursekit-empty-")
    os.close(fd)
    os.chmod(path, 0o444)
    atexit.register(os.remove, path)
    return path


def gpu_devices() -> list[str]:
    """NVIDIA device nodes of this machine (bound into the sandbox so ``full`` mode can use the GPU)."""
    import glob

    return sorted(glob.glob("/dev/nvidia*"))


def needed_paths() -> list[Path]:
    """What the sandbox must see although it lies under /tmp (which it gets empty): the code of
    ``course_utils`` and ``autograde``, the Python environment, the dataset cache and mirror."""
    import sys

    import course_utils
    from course_utils import modes

    paths = [Path(course_utils.__file__).resolve().parent.parent, Path(__file__).resolve().parent.parent,
             Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), modes.cache_dir().resolve()]
    for var in (modes.DATA_VAR, modes.CACHE_VAR):  # as the kernel will read them, links not followed
        if value := os.environ.get(var, "").strip():
            paths += [Path(value).expanduser().absolute(), Path(value).expanduser().resolve()]
    tmp = Path("/tmp")
    return sorted({p for p in paths if p.is_relative_to(tmp) and p != tmp and p.exists()})


def bwrap_prefix(hidden: list[Path], *, writable: list[Path] = (), readonly: list[Path] = ()) -> list[str]:
    """``bwrap ...`` up to the command: ``hidden`` paths look empty, ``writable``/``readonly`` are bound back.

    The sandbox's /tmp starts empty; the code, environment and datasets it needs are bound back
    first (:func:`needed_paths`), then the masks, then the binds, so a folder inside a hidden one
    can be shown again. The GPU's device nodes, where there are any, stay usable.
    """
    bwrap = support().bwrap or "bwrap"
    args = [bwrap, *base_args()]
    for path in needed_paths():
        args += ["--ro-bind", str(path), str(path)]
    for device in gpu_devices():
        args += ["--dev-bind", device, device]
    for path in hidden:
        if path.is_dir():
            args += ["--tmpfs", str(path)]
        elif path.exists():
            args += ["--ro-bind", _empty_file(), str(path)]
    for path in readonly:
        args += ["--ro-bind", str(path), str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    return args


def join_cgroup(procs_files: list[str], argv: list[str]) -> list[str]:
    """``argv`` started inside the cgroups whose ``cgroup.procs`` files are given (before it runs any code)."""
    if not procs_files:
        return argv
    script = "".join(f'echo $$ > "{f}" || exit 97; ' for f in procs_files) + 'exec "$@"'
    return ["/bin/sh", "-c", script, "sandbox", *argv]


def human_bytes(n: int) -> str:
    gib = n / (1 << 30)
    return f"{gib:g} GiB" if gib >= 1 else f"{n / (1 << 20):g} MiB"


class Cgroup:
    """A memory and a pids cgroup (v1) for one submission; created with limits, removed by :meth:`close`."""

    def __init__(self, name: str, *, memory: int | None, processes: int | None):
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.memory, self.processes = memory, processes
        self.dirs = {c: CGROUP_ROOT / c / CGROUP_PARENT / self.name for c in ("memory", "pids")}
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
        found: set[int] = set()
        for folder in self.dirs.values():
            try:
                found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def _read(self, controller: str, file: str) -> str:
        try:
            return (self.dirs[controller] / file).read_text()
        except OSError:
            return ""

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

    def kill(self, rounds: int = 50) -> None:
        """SIGKILL everything in the cgroup, repeatedly, until it is empty (a fork bomb keeps forking)."""
        for _ in range(rounds):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def close(self) -> None:
        self.kill()
        for folder in self.dirs.values():
            for _ in range(20):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    time.sleep(0.1)
