"""One grading run's options, built once and shipped whole to every worker.

:func:`RunOptions.build` turns the command line (or :func:`autograde.autograde`'s
keywords) and the course's nbgrader settings into one frozen object: the
course's folders, the mode, the time and sandbox limits, how hand-ins are
graded. The client chooses the jobs with it, each worker grades with it (it
never reads nbgrader's config again), and the client records with it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from course_utils.modes import BATCHES_VAR, HANDIN_VAR, env_threads, usable_cores

from . import config, sandbox
from .cgroups import human_bytes
from .classstate import new_run_id
from .course import Course, GradingError


@dataclass(frozen=True)
class Job:
    """One hand-in to grade: ``student``'s ``lab``, what is scored outside its kernel, and whether it is audited."""

    lab: str
    student: str
    specs: tuple = ()      # autograde.scorer.Spec, read from the instructor's source notebook
    audited: bool = False  # with handed_in: also re-trained, and the scores compared


@dataclass(frozen=True)
class RunOptions:
    """How one ``autograde`` run grades: the course's folders, the mode and limits, the sandbox, hand-ins."""

    course_root: Path
    course_id: str
    config_dir: Path       # autograde/: nbgrader runs there (its config), logs and reports go there
    source: Path
    submitted: Path
    autograded: Path
    db: Path               # the main gradebook (SQLite)
    mode: str
    limits: config.Limits
    sandbox: bool
    cgroups: bool
    disk: bool             # each hand-in writes to a size-limited tmpfs (autograde.disk)
    threads: int = 1       # OMP/MKL threads of each hand-in's processes where slots_by_host does not say
    handed_in: bool = False
    audit_share: float = 0.0
    audit_seed: int | None = None
    passed_env: dict = field(default_factory=dict)  # OMP_NUM_THREADS / MKL_NUM_THREADS set by the instructor
    run_id: str = field(default_factory=new_run_id)  # this run, in the class's state (autograde.classstate)
    slots_by_host: dict = field(default_factory=dict)  # host -> hand-ins graded there at once (the cluster's threads)
    code: str = ""         # the client's kit code (autograde.cluster.LOADED): a worker with other code refuses the job

    @classmethod
    def build(cls, course: Course, *, mode: str | None = None, cell_timeout: int | None = None,
              submission_timeout: float | None = None, sandboxed: bool | None = None, memory: int | None = None,
              processes: int | None = None, disk: int | None = None, workers: int = 1, handed_in: bool = False, audit_share: float = 0.0,
              audit_seed: int | None = None) -> RunOptions:
        """The options for a run in ``mode`` (default: :func:`autograde.config.settings`);
        ``sandboxed=None`` uses what the machine offers, ``True`` fails without bubblewrap."""
        if audit_share and not handed_in:
            raise GradingError("--audit re-trains hand-ins graded from their weights: use it with --handed-in")
        limits = config.limits(mode or config.settings().mode)
        limits = replace(limits, cell_timeout=cell_timeout or limits.cell_timeout,
                         submission_timeout=submission_timeout or limits.submission_timeout,
                         memory_limit=memory or limits.memory_limit, process_limit=processes or limits.process_limit,
                         disk_limit=disk or limits.disk_limit,
                         fixed=frozenset(name for name, given in (("cell_timeout", cell_timeout),
                                                                 ("submission_timeout", submission_timeout)) if given))
        found = sandbox.support()
        if sandboxed and not found.bwrap:
            raise GradingError(f"--sandbox asked for, but {found.bwrap_problem}; `apt-get install bubblewrap`")
        use_bwrap = bool(found.bwrap) if sandboxed is None else sandboxed
        names = course.settings()
        return cls(course_root=course.root, course_id=names["course_id"], config_dir=course.config_dir,
                   source=course.folder("source"), submitted=course.folder("submitted"),
                   autograded=course.folder("autograded"), db=course.db_path(), mode=limits.mode, limits=limits,
                   sandbox=use_bwrap, cgroups=use_bwrap and found.cgroups, disk=use_bwrap and found.disk,
                   threads=cores_per_hand_in(workers), handed_in=handed_in,
                   audit_share=audit_share, audit_seed=audit_seed,
                   passed_env={v: os.environ[v] for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if v in os.environ})

    def log_path(self, lab: str, student: str) -> Path:
        """Where nbgrader's output for one hand-in goes (``autograde/reports/logs/<lab>/<student>.log``)."""
        return self.config_dir / "reports" / "logs" / lab / f"{student}.log"

    def notebook(self, lab: str, student: str) -> Path:
        """The collected hand-in."""
        return self.submitted / student / lab / f"{lab}.ipynb"

    def env(self, *, quick: bool = False) -> dict[str, str]:
        """The environment nbgrader runs in: the grader's, this interpreter's bin/ on PATH (nbgrader runs
        ``alembic`` by name), the threads per hand-in; ``quick``: a hand-in graded from its weights."""
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env.pop(config.GRADING_MODE_VAR, None)  # the mode travels on nbgrader's command line
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = self.passed_env.get(var, str(self.threads_here()))
        if quick:
            env.update({HANDIN_VAR: "1", BATCHES_VAR: str(config.HANDIN_BATCHES)})
        return env

    def hand_in_limits(self, env: dict[str, str]) -> config.Limits:
        """The limits of a hand-in run in ``env`` (:meth:`env`): the time limits scaled for its threads
        (:meth:`autograde.config.Limits.for_threads`)."""
        return self.limits.for_threads(env_threads(env) or self.threads_here())

    def threads_here(self) -> int:
        """Threads for each hand-in graded on this machine: its cores shared by the hand-ins the cluster grades on
        it at once (:attr:`slots_by_host`, which the client reads from the scheduler), so a worker machine with
        other cores than the instructor's gets its own share; :attr:`threads` outside a Dask worker or on a host
        that joined later. The instructor's OMP_NUM_THREADS wins over both (:meth:`env`)."""
        host = _worker_host()
        slots = self.slots_by_host.get(host) if host else None
        if not slots:
            return self.threads
        return cores_per_hand_in(slots)

    def nbgrader_args(self, lab: str, student: str, db: Path, autograded: Path | None = None,
                      events: Path | None = None, cell_timeout: int | None = None) -> list[str]:
        """``nbgrader autograde`` for one hand-in against the private gradebook ``db``, in this run's mode, with
        ``cell_timeout`` seconds per cell (default: the mode's); the Execute step records its timeouts in
        ``events`` (:func:`autograde.execute.read_events`)."""
        args = [sys.executable, "-m", "nbgrader", "autograde", lab, "--student", student, "--force",
                f"--CourseDirectory.db_url=sqlite:///{db}",
                f"--Execute.timeout={cell_timeout or self.limits.cell_timeout}",
                f"--GradingKernelManager.mode={self.mode}"]
        if events is not None:
            args.append(f"--GradingExecute.events_path={events}")
        if autograded is not None:
            args.append(f"--CourseDirectory.autograded_directory={autograded}")
        return args

    def describe(self, jobs: int, audited: int, where: str, *, local: bool = True) -> str:
        """One line for the log: what this run grades, where, in which mode, with which limits (``local``: the
        hand-ins are graded on this machine, whose threads per hand-in are known here)."""
        lim = self.limits
        how = f" from their handed-in weights ({audited} re-trained as an audit)" if self.handed_in else ""
        caps = [f"{human_bytes(lim.memory_limit)} of memory", f"{lim.process_limit} processes"] * self.cgroups
        caps += [f"{human_bytes(lim.disk_limit)} of disk"] * self.disk
        named = " and ".join(filter(None, [", ".join(caps[:-1]), caps[-1]])) if caps else ""
        box = (f", {named}, sandboxed" if caps else ", sandboxed without limits") if self.sandbox else ""
        env = self.env()
        known = local or "OMP_NUM_THREADS" in self.passed_env  # else each worker machine has its own share
        scaled = self.hand_in_limits(env) if known else lim.for_threads(1)  # remote: would one thread change them?
        times = f"{lim.cell_timeout} s per cell, {lim.submission_timeout:.0f} s per submission"
        if scaled != lim and known:
            times = (f"{scaled.cell_timeout} s per cell, {scaled.submission_timeout:.0f} s per submission (the "
                     f"mode's {lim.cell_timeout} s and {lim.submission_timeout:.0f} s are for "
                     f"{config.REFERENCE_THREADS} threads; each hand-in {'here ' if local else ''}has "
                     f"{env['OMP_NUM_THREADS']})")
        elif scaled != lim:
            times += f" with {config.REFERENCE_THREADS} threads or more, twice that where a worker gives a hand-in one"
        return f"grading {jobs} submission(s){how} in mode {self.mode} with {where}; limits: {times}{box}"


def default_workers() -> int:
    """Hand-ins a local run grades at once unless told: one per usable core, at most 8."""
    return min(usable_cores(), 8)


def cores_per_hand_in(at_once: int) -> int:
    """Threads for each of ``at_once`` hand-ins graded at the same time on this machine: its usable cores shared."""
    return max(1, usable_cores() // max(1, at_once))


def _worker_host() -> str | None:
    """The host name of the Dask worker this runs in (as the scheduler lists it), None outside one."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        return get_address_host(get_worker().address)
    except (ImportError, ValueError):  # ValueError: not in a worker
        return None


def slots_by_host(workers: dict) -> dict[str, int]:
    """Hand-ins a cluster grades at once on each host: the threads of its workers there (from the scheduler's
    ``scheduler_info()["workers"]``, address -> info)."""
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + max(1, int(info.get("nthreads") or 1))
    return slots
