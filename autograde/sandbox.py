"""The grading sandbox: an allowlist of read-only mounts under bubblewrap, an unprivileged user, cgroup limits.

Student code (the notebook's kernel, and the scorer that loads its exported
models) runs under ``bwrap`` and sees only what grading needs: the system's
programs and libraries (``/usr``), the few ``/etc`` files Python and PyTorch
read at start (:data:`ETC_FILES`; ``passwd``, ``group`` and ``hosts`` are made
up for the sandbox), the Python environment, the course's code
(``course_utils`` and the ``.py`` files of ``autograde``), the decoded
datasets, read-only (:func:`course_mounts`), and its own work folders, the
only places it may write. Nothing else of the host is there: no home folders,
no ``.git``, no ``solutions/``, no gradebook, no other hand-ins or courses.
It gets a private ``/tmp``, no network, no capabilities, its own process and
user namespaces, and an environment of named variables only
(:func:`clean_env`).

Started by root, a sandbox never runs as root outside: the process drops to
the grading user (:data:`GRADING_USER`, created on first use) before bwrap
starts, so even a path the allowlist forgot would be readable only where the
world may read it. What that user cannot reach on the host (a Python under
``/root``) is bind-mounted for it in a private mount namespace that ends with
the sandbox. Memory and the number of processes and threads are capped by a
cgroup per submission (:mod:`autograde.cgroups`), disk by a size-limited tmpfs for
the folders it writes (:mod:`autograde.disk`).
Where either is missing, grading still works, unprotected, and
:func:`support` says so in words.
"""
from __future__ import annotations

import functools
import glob
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from course_utils import leftovers

from . import cgroups, disk

SANDBOX_VAR = "COURSE_SANDBOX"  # JSON for the kernel manager: work and scratch folders, mounts, cgroups (kernel_plan)
PLAN_VERSION = 3                 # of that JSON: a kernel manager refuses a plan it does not know
SANDBOX_UID = 1000               # the sandbox's user, inside; outside it is GRADING_USER
SANDBOX_HOME = "/tmp"            # HOME inside: the private, throwaway /tmp
GRADING_USER = "coursekit-grader"
SCRATCH_PREFIX = "coursekit-sandbox-"  # one hand-in's sandbox folder (new_scratch)
# The system, read-only (merged-/usr links are recreated as links).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a sandbox gets from the host: the dynamic linker's cache, the time zone, Debian's alternatives,
# fontconfig's settings (matplotlib's text).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts")
# /etc files made up for the sandbox: its one user, and name lookups from files only.
MADE_UP_ETC = {
    "passwd": f"root:x:0:0::/nonexistent:/usr/sbin/nologin\nstudent:x:{SANDBOX_UID}:{SANDBOX_UID}::{SANDBOX_HOME}:/bin/sh\n",
    "group": f"root:x:0:\nstudent:x:{SANDBOX_UID}:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
# Variables a sandboxed process may inherit from the grader (the rest of the grader's environment never
# passes): thread counts and OpenBLAS's processor settings, the GPU's, the locale. The course's own
# variables (mode, data and cache folders, the grader's) are added by name in :func:`clean_env`.
PASSED_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
               "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "LANG", "LC_ALL", "TZ", "PYTHONUNBUFFERED")


@dataclass(frozen=True)
class Mount:
    """``source`` on the host seen at ``dest`` in the sandbox, read-only unless ``writable``."""

    source: str
    dest: str
    writable: bool = False

    @classmethod
    def same(cls, path: str | os.PathLike, writable: bool = False) -> Mount:
        """``path`` at its own place."""
        return cls(str(path), str(path), writable)


@dataclass(frozen=True)
class Identity:
    """Who sandboxed processes are outside: the grading user (``drop``: root switches to it) or the caller."""

    name: str
    uid: int
    gid: int
    drop: bool

    def describe(self) -> str:
        if self.drop:
            return f"{self.name} (uid {self.uid}), an unprivileged user: root drops to it before each sandbox"
        note = " (root: hand-ins could read what root reads)" if self.uid == 0 else ""
        return f"{self.name} (uid {self.uid}), the user who runs the grader{note}"


@functools.cache
def identity() -> Identity:
    """The user sandboxes run as: as root, :data:`GRADING_USER` (created with ``useradd`` when missing)."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, drop=False)
    try:
        entry = pwd.getpwnam(GRADING_USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                               "/nonexistent", "--shell", "/usr/sbin/nologin", GRADING_USER],
                              capture_output=True, text=True)
        try:  # another grading process may have created it meanwhile
            entry = pwd.getpwnam(GRADING_USER)
        except KeyError:
            raise OSError(f"cannot create the grading user {GRADING_USER}: {proc.stderr.strip() or proc.returncode}")
    return Identity(GRADING_USER, entry.pw_uid, entry.pw_gid, drop=True)


@dataclass(frozen=True)
class Support:
    """What this machine offers: a working ``bwrap`` (as the grading user), writable cgroup v1 controllers,
    size-limited folders (a tmpfs root may mount)."""

    bwrap: str | None
    bwrap_problem: str
    cgroups: bool
    cgroups_problem: str
    disk: bool
    disk_problem: str

    def findings(self) -> list[tuple[str, str]]:
        """(what is missing, its fix) per missing protection (empty when fully sandboxed)."""
        out = []
        if not self.bwrap:
            what = (f"UNSANDBOXED: submissions run with the grader's rights and can read or delete other "
                    f"hand-ins and the gradebook ({self.bwrap_problem})")
            fix = ("`apt-get install bubblewrap` (Linux, with user namespaces allowed for unprivileged users: "
                   "`sysctl kernel.unprivileged_userns_clone=1` where that setting exists)")
            out.append((what, fix))
        if not self.cgroups:
            out.append((f"NO LIMITS: memory and process limits are not enforced ({self.cgroups_problem})",
                        "grade as root on Linux with cgroup v1 memory and pids controllers"))
        if self.bwrap and not self.disk:
            out.append((f"NO DISK LIMIT: a hand-in can fill the disk of the temp folder ({self.disk_problem})",
                        "grade as root on Linux (util-linux's `mount` makes the size-limited folders), or point "
                        "TMPDIR at a partition of its own"))
        return out

    def warnings(self) -> list[str]:
        """:meth:`findings` as sentences."""
        return [f"{what}. Fix: {fix}." for what, fix in self.findings()]


def _bwrap_problem(path: str | None) -> str:
    if path is None:
        return "bwrap is not installed"
    stage = new_stage()
    try:
        cmd = prefix([], stage=stage, bwrap=path) + ["/usr/bin/true"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not start: {exc}"
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return "" if proc.returncode == 0 else f"bwrap fails here: {proc.stderr.strip()[:200]}"


@functools.cache
def support() -> Support:
    """Probe bubblewrap (an empty sandbox, started exactly as grading starts one), cgroups and size-limited
    folders, once per process."""
    path = shutil.which("bwrap")
    missing = [tool for tool in ("unshare", "mount", "setpriv") if os.geteuid() == 0 and not shutil.which(tool)]
    try:
        identity()
    except OSError as exc:
        missing.append(str(exc))
    if missing:
        bwrap_problem = f"missing: {', '.join(missing)} (util-linux)"
    else:
        bwrap_problem = _bwrap_problem(path)
    cgroups_problem = cgroups.problem()
    disk_problem = disk.problem()
    return Support(bwrap=path if not bwrap_problem else None, bwrap_problem=bwrap_problem,
                   cgroups=not cgroups_problem, cgroups_problem=cgroups_problem,
                   disk=not disk_problem, disk_problem=disk_problem)


def namespace_args() -> list[str]:
    """bwrap options every sandbox shares: its own namespaces and user, no network, no capabilities."""
    return ["--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox"]


def gpu_devices() -> list[str]:
    """NVIDIA device nodes of this machine (bound into the sandbox so ``full`` mode can use the GPU)."""
    return sorted(glob.glob("/dev/nvidia*"))


def course_mounts() -> list[Mount]:
    """What a sandbox reads besides the system: the Python environment, the course's code, the datasets.

    ``course_utils`` whole; of ``autograde`` only its ``.py`` files and their ``__pycache__`` (the
    folder also holds the gradebook and the hand-ins); the environment (``sys.prefix``, ``sys.base_prefix``); the decoded
    dataset cache and the mirror named by ``COURSE_DATA_DIR``. All read-only.
    """
    import course_utils
    from course_utils import modes

    code = Path(course_utils.__file__).resolve().parent
    grader = Path(__file__).resolve().parent
    folders = [code, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), modes.cache_dir().resolve()]
    if (mirror := modes.data_dir()) is not None:
        folders.append(mirror)
    kept: list[Path] = []
    for folder in sorted(set(folders), key=lambda p: len(p.parts)):  # a folder inside a kept one is there already
        if not any(folder.is_relative_to(p) for p in [*kept, *map(Path, SYSTEM_DIRS)]):
            kept.append(folder)
    code_files = sorted(grader.glob("*.py"))
    if (grader / "__pycache__").is_dir():  # compiled from those files: the scorer starts without recompiling
        code_files.append(grader / "__pycache__")
    return [Mount.same(p) for p in kept] + [Mount.same(p) for p in code_files]


def mount_summary() -> list[str]:
    """What a sandbox reads from the host, in words (for the doctor's ``--grading`` report)."""
    system = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    etc = [f"/etc/{name}" for name in ETC_FILES if os.path.lexists(f"/etc/{name}")]
    grader = str(Path(__file__).resolve().parent)
    code = [m for m in course_mounts() if not m.source.startswith(grader + os.sep)]
    files = [m for m in course_mounts() if m.source.endswith(".py") and m.source.startswith(grader + os.sep)]
    out = system + etc + ["/sys (without /sys/fs/cgroup)", f"made-up /etc/{{{','.join(MADE_UP_ETC)}}}"]
    out += [m.source for m in code]
    if files:
        out.append(f"{grader}/*.py ({len(files)} files)")
    out += [m.source for m in course_mounts() if m.source.startswith(grader + os.sep) and not m.source.endswith(".py")]
    return out


def probe_python() -> str:
    """Why Python cannot import the course's code in a sandbox, or "" when it can."""
    stage = new_stage()
    try:
        cmd = prefix(course_mounts(), stage=stage) + [sys.executable, "-c", "import course_utils.data, autograde.scorer"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(dict(os.environ)), timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a sandboxed process: :data:`PASSED_VARS` and the course's variables from ``env``,
    with the paths the sandbox knows; nothing else of the grader's environment (tokens, keys) passes."""
    import course_utils
    from course_utils import modes

    course_vars = (modes.MODE_VAR, modes.BATCHES_VAR, modes.HANDIN_VAR, modes.EXPORT_VAR, modes.NO_BF16_VAR)
    out = {name: env[name] for name in (*PASSED_VARS, *course_vars) if name in env}
    out.setdefault("LANG", "C.UTF-8")
    out.update(HOME=SANDBOX_HOME, USER="student", LOGNAME="student", TMPDIR="/tmp",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
               PYTHONPATH=str(Path(course_utils.__file__).resolve().parent.parent), PYTHONDONTWRITEBYTECODE="1",
               MPLCONFIGDIR="/tmp/matplotlib", IPYTHONDIR="/tmp/ipython", JUPYTER_RUNTIME_DIR="/tmp/jupyter")
    out[modes.CACHE_VAR] = str(modes.cache_dir().resolve())
    if (mirror := modes.data_dir()) is not None:
        out[modes.DATA_VAR] = str(mirror)
    return out


def kernel_plan(work: Path, cgroup_procs: list[str], scratch: Path | None) -> str:
    """The JSON that tells the grading kernel manager (:mod:`autograde.kernel`) how to start its kernel:
    sandboxed, with its sockets and stage in ``scratch`` (:func:`new_scratch`), unless that is None."""
    import json

    sandboxed = scratch is not None
    mounts = [[m.source, m.dest, m.writable] for m in course_mounts()] if sandboxed else []
    return json.dumps({"version": PLAN_VERSION, "work": str(work), "cgroup": list(cgroup_procs),
                       "sandbox": sandboxed, "scratch": str(scratch) if sandboxed else None,
                       "mounts": mounts})


def read_plan(text: str | None) -> dict | None:
    """The plan of :func:`kernel_plan`, or None without one. Fails closed: a plan of another version or shape
    (a grader and a kernel manager from different versions of the kit) raises instead of running the kernel
    without its sandbox."""
    import json

    if not text:
        return None
    try:
        plan = json.loads(text)
        ok = (plan.get("version") == PLAN_VERSION and isinstance(plan.get("sandbox"), bool)
              and {"work", "cgroup", "mounts", "scratch"} <= plan.keys() and bool(plan["scratch"]) == plan["sandbox"])
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise RuntimeError(f"{SANDBOX_VAR} holds a sandbox plan this kernel manager does not understand (expected "
                           f"version {PLAN_VERSION}); refusing to start the kernel unsandboxed. Grade with one "
                           f"version of the kit: restart the grading workers")
    return plan


def new_stage(parent: Path | None = None) -> Path:
    """A folder for one sandbox's made-up files and staged mounts, in ``parent`` (by default
    :func:`scratch_parent`); remove it, or ``parent``, when the sandbox has ended."""
    stage = Path(tempfile.mkdtemp(prefix=leftovers.tag("coursekit-stage-"), dir=parent or scratch_parent()))
    stage.chmod(0o755)  # the grading user reads the made-up /etc files here
    return stage


def new_scratch() -> Path:
    """A folder for one hand-in's sandboxes, in :func:`scratch_parent`: its kernel's sockets and every stage.

    The worker that grades the hand-in removes it when the hand-in is done, however its nbgrader process
    ended; one of a worker that died goes with the next grading task (:mod:`course_utils.leftovers`).
    """
    folder = Path(tempfile.mkdtemp(prefix=leftovers.tag(SCRATCH_PREFIX), dir=scratch_parent()))
    folder.chmod(0o755)  # the grading user starts the sandboxes and reads their stages
    return folder


def scratch_parent() -> str:
    """Where sandbox folders go: the temp folder where the grading user can reach it and its path is short (a
    unix socket's path has at most 107 bytes), else ``/tmp``. Work folders stay in the temp folder:
    root binds them into a sandbox, so the grading user need not reach them there."""
    temp = Path(tempfile.gettempdir())
    return str(temp) if reachable_by_others(temp) and len(str(temp)) <= 40 else "/tmp"


def reachable_by_others(path: Path) -> bool:
    """Whether any user may pass through ``path`` and every folder above it (each has the others' x bit)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def share_datasets() -> None:
    """Let the grading user read the decoded datasets (caches written by older versions were private)."""
    from course_utils import modes

    if not identity().drop:
        return
    cache = modes.cache_dir()
    for item in [cache, *cache.glob("*.pt")]:
        mode = item.stat().st_mode
        wanted = mode | (0o005 if item.is_dir() else 0o004)
        if wanted != mode:
            item.chmod(wanted)


def _give(path: Path, who: Identity) -> None:
    """Make ``path`` (and what is in it) the grading user's, so the sandbox can write there."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.chown(item, who.uid, who.gid)


def prefix(mounts: list[Mount], *, stage: Path, cgroup_procs: list[str] = (), chdir: str = "/tmp",
           bwrap: str | None = None) -> list[str]:
    """The command line that starts a program in a sandbox, up to ``--``: append the program's argv.

    ``mounts`` come on top of the system and the made-up /etc; writable ones become the grading
    user's. As root, the command joins ``cgroup_procs`` (before any code of the sandbox runs), binds
    every mount's source into ``stage`` in a private mount namespace (so the grading user can reach
    it), drops to the grading user and starts bwrap.
    """
    who = identity()
    args = [bwrap or support().bwrap or "bwrap", *namespace_args()]
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--ro-bind", "/sys", "/sys"]
    if os.path.isdir("/sys/fs/cgroup"):  # the other hand-ins' cgroups are named after them: an empty folder instead
        args += ["--tmpfs", "/sys/fs/cgroup"]
    for name in ETC_FILES:
        if os.path.lexists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name, text in MADE_UP_ETC.items():
        (stage / name).write_text(text)
        (stage / name).chmod(0o644)
        args += ["--ro-bind", str(stage / name), f"/etc/{name}"]
    staged: dict[str, str] = {}  # host folder -> where the grading user finds it
    for mount in mounts:
        source = Path(mount.source)
        if mount.writable and who.drop:
            _give(source, who)
        if who.drop:
            folder = str(source if source.is_dir() else source.parent)
            if folder not in staged:
                staged[folder] = str(stage / f"m{len(staged)}")
                Path(staged[folder]).mkdir(exist_ok=True)  # a stage is reused when a kernel restarts
            source = Path(staged[folder]) / (source.relative_to(folder) if source.is_dir() else source.name)
        args += ["--bind" if mount.writable else "--ro-bind", str(source), mount.dest]
    for device in gpu_devices():
        args += ["--dev-bind", device, device]
    args += ["--remount-ro", "/", "--chdir", chdir, "--"]  # the sandbox's own root stays as built
    if not who.drop:
        return join_cgroup(list(cgroup_procs), args)
    script = "".join(f"echo $$ > {shlex.quote(f)} || exit 97; " for f in cgroup_procs)
    script += "".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)} || exit 98; " for src, dst in staged.items())
    script += disk.detach_others(stage)  # other hand-ins' boxes: not held here while this sandbox runs
    script += f'exec setpriv --reuid={who.uid} --regid={who.gid} --clear-groups -- "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sandbox", *args]


def join_cgroup(procs_files: list[str], argv: list[str]) -> list[str]:
    """``argv`` started inside the cgroups whose ``cgroup.procs`` files are given (before it runs any code)."""
    if not procs_files:
        return argv
    script = "".join(f'echo $$ > "{f}" || exit 97; ' for f in procs_files) + 'exec "$@"'
    return ["/bin/sh", "-c", script, "sandbox", *argv]
