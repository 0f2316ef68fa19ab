"""Grading one hand-in, on a worker: sandboxed ``nbgrader autograde``, outside scoring, a structured result.

:func:`grade_task` is what a Dask worker runs for one :class:`~autograde.options.Job`.
The hand-in runs ``nbgrader autograde`` in its own process against a private
copy of the gradebook; its kernel is sandboxed (:mod:`autograde.sandbox`,
:mod:`autograde.kernel`). Afterwards the models its hidden tests exported are
scored by a fresh sandboxed process (:mod:`autograde.scorer`). Each way a run
can end has a function of its own that fills in the :class:`Result`; the
private gradebook comes back inside it, for the client to merge.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils import leftovers
from course_utils.modes import env_threads

from . import audit, cgroups, config, disk, execute, gradebook, publish, sandbox, scorer
from .cluster import check_task
from .collect import readable
from .config import SCORER_TIMEOUT
from .course import GradingError
from .execute import INTEGRITY_ERROR, KERNEL_DIED, error_output
from .kernel import work_box, work_folders
from .options import Job, RunOptions

DONE = "autograde finished:"  # last line of a submission's log once its result is recorded
WORK_PREFIX = "coursekit-grading-"  # one grading task's work folder, in the temp folder


@dataclass
class Result:
    """What happened to one hand-in: ``status`` graded or error, the points, and what the instructor should know.

    ``problem`` says why a hand-in is an error row; ``notes`` what else happened (a dead kernel, altered
    grading helpers, failed outside scores, an audit's flags). :attr:`message` joins them for people.
    """

    student: str
    lab: str
    status: str = "graded"          # graded | error
    score: float | None = None
    max_score: float | None = None
    seconds: float = 0.0
    peak_memory: int | None = None  # bytes: the most the kernel, its children and the scorer held at once (cgroup)
    threads: int | None = None      # OMP/MKL threads its processes had (RunOptions.threads_here, or the instructor's)
    time_limited: str = ""          # the time limit it ran into: "cell" (a cell was interrupted) or "submission"
    problem: str = ""
    notes: list[str] = field(default_factory=list)
    log: str = ""
    outside: list[dict] = field(default_factory=list)   # the outside scorer's rows
    timings: dict[str, float] = field(default_factory=dict)  # seconds: nbgrader, scoring, merge, audit
    audit: list[dict] = field(default_factory=list)     # handed-in against re-trained scores (audited hand-ins)
    overrides: dict[str, float] = field(default_factory=dict, repr=False)
    db: Path | None = field(default=None, repr=False)   # private gradebook to merge, when grades were saved
    db_bytes: bytes | None = field(default=None, repr=False)  # the same, carried back from a Dask worker

    @property
    def message(self) -> str:
        return ". ".join(part for part in [self.problem, *self.notes] if part)

    def fail(self, problem: str) -> None:
        """Make this an error row, for ``problem``."""
        self.status, self.problem = "error", problem


# --------------------------------------------------------------------------- running nbgrader

def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when its parent (a grading worker) dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop nbgrader and every process it started."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGINT)  # nbgrader shuts its kernel down and cleans up
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _wait(proc: subprocess.Popen, cgroup: cgroups.Cgroup | None, timeout: float) -> int | None:
    """Wait for nbgrader; stop the kernel at once when it runs into the process limit. None after a timeout."""
    deadline = time.monotonic() + timeout
    stopped = False
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if cgroup is not None and not stopped and cgroup.process_limit_hit():
            cgroup.kill()  # the kernel and its forks; nbgrader sees a dead kernel and saves what ran
            stopped = True
        if time.monotonic() > deadline:
            _kill_tree(proc)
            if cgroup is not None:
                cgroup.kill()
            return None


def _error_line(text: str) -> str:
    """The most telling line of a failed nbgrader run: the last exception, else the last error."""
    lines = text.strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b.*:", line.strip()):
            return line.strip()
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or ["no output"])[-1].strip()


# --------------------------------------------------------------------------- what a graded notebook says

def _findings(notebook: NotebookNode) -> tuple[str | None, list[str]]:
    """(where the kernel died, the integrity problems) recorded by GradingExecute in the graded notebook."""
    died, tampered = None, []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            if out.get("ename") == KERNEL_DIED and died is None and not out.get("evalue", "").startswith("not run"):
                died = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or "a cell"
            elif out.get("ename") == INTEGRITY_ERROR and not tampered:
                tampered = [out.get("evalue", "")]
    return died, tampered


def _annotate(path: Path, rows: list[dict]) -> None:
    """Put each failed outside score into the graded notebook, under its test cell, for the feedback page."""
    nb = nbformat.read(path, as_version=4)
    failed = {row["grade_id"]: row for row in rows if not row["passed"]}
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in failed:
            cell.setdefault("outputs", []).append(error_output(
                "ScoredOutsideNotebook", f"the grader re-scored your trained model outside the notebook: "
                                         f"{failed[gid]['message']}; this test scores 0"))
    nbformat.write(nb, path)


def _score_outside(options: RunOptions, job: Job, work: Path, cgroup: cgroups.Cgroup | None,
                   scratch: Path | None) -> list[dict]:
    models = work_folders(work)["models"]
    procs = cgroup.procs_files if cgroup is not None else []
    env = options.env()
    if scratch is None:
        return scorer.run(list(job.specs), models, prefix=sandbox.join_cgroup(procs, []), env=env,
                          timeout=SCORER_TIMEOUT)
    prefix = sandbox.prefix([*sandbox.course_mounts(), sandbox.Mount.same(models)], stage=sandbox.new_stage(scratch),
                            cgroup_procs=procs)
    return scorer.run(list(job.specs), models, prefix=prefix, env=sandbox.clean_env(env), timeout=SCORER_TIMEOUT)


# --------------------------------------------------------------------------- one outcome each

def _stopped(result: Result, lim: config.Limits, graded: Path) -> None:
    """nbgrader ran past the limit for a whole submission."""
    shutil.rmtree(graded.parent, ignore_errors=True)
    result.time_limited = "submission"
    result.fail(f"stopped after {lim.submission_timeout:.0f} s, the limit for one whole submission: "
                f"too slow in this mode, or stuck; look at it by hand or raise --submission-timeout")


def _crashed(result: Result, lim: config.Limits, breaches: list[str], events: list[dict]) -> None:
    """nbgrader itself failed (not one of the notebook's cells): nothing was saved. ``events``: what its
    Execute step recorded (:func:`autograde.execute.read_events`); the log is only quoted."""
    if stuck := execute.ignored_interrupt(events):
        why = (f"{stuck} ran past the {lim.cell_timeout} s limit and went on running after the "
               f"interrupt (it ignores interrupts or hangs in native code); look at it by hand")
    else:
        why = f"nbgrader failed: {_error_line(Path(result.log).read_text())}"
    result.fail(f"{'; '.join(breaches)}. {why}" if breaches else why)


def _graded(result: Result, options: RunOptions, job: Job, work: Path, graded: Path, breaches: list[str],
            cgroup: cgroups.Cgroup | None, scratch: Path | None, lim: config.Limits, events: list[dict]) -> None:
    """nbgrader saved grades: note what the graded notebook and the Execute step's ``events`` say happened, then
    score the models outside."""
    result.db = work / "gradebook.db"
    notebook = nbformat.read(graded, as_version=4)
    died, tampered = _findings(notebook)
    if breaches or died:
        result.fail("; ".join(breaches) if breaches else f"the kernel died in {died}")
        result.notes.append("the tests before that keep their points, the rest score 0")
    if stopped := execute.timed_out(events):
        result.time_limited = "cell"
        result.notes.append(f"{', '.join(stopped)} stopped at the limit of {lim.cell_timeout} s per cell (the tests "
                            "that need it fail); if the hand-in is only slow on this machine, grade it again with "
                            "a higher --cell-timeout")
    if tampered:
        result.notes.append(f"grading helpers altered in the kernel, affected tests score 0 ({tampered[0][:300]})")
    if marked := publish.marker_cells(notebook):
        result.notes.append(f"{', '.join(marked)} of the hand-in hold nbgrader's hidden-test marker text; "
                            f"its feedback shows them as written")
    if job.specs:
        start = time.perf_counter()
        result.outside = _score_outside(options, job, work, cgroup, scratch)
        result.timings["scoring"] = time.perf_counter() - start
        result.overrides = {row["grade_id"]: 0.0 for row in result.outside if not row["passed"]}
        if result.overrides:
            _annotate(graded, result.outside)
            result.notes.append("scored outside the kernel: " + "; ".join(
                row["message"] for row in result.outside if not row["passed"]))


def grade_one(options: RunOptions, job: Job, work: Path, *, quick: bool = False, audit_run: bool = False) -> Result:
    """Grade one hand-in with ``nbgrader autograde``, sandboxed, against a private copy of the gradebook.

    ``quick``: the notebook's handed-in weights are graded (a quick re-run). ``audit_run``: a second,
    re-training run of such a hand-in; its graded notebook and gradebook stay in ``work`` (only its
    outside scores are used), its log goes next to the main one.
    """
    result = Result(job.student, job.lab)
    start = time.perf_counter()
    notebook = options.notebook(job.lab, job.student)
    result.log = str(options.log_path(job.lab, job.student).with_suffix(".audit.log" if audit_run else ".log"))
    Path(result.log).parent.mkdir(parents=True, exist_ok=True)
    problem = readable(notebook) if notebook.is_file() else f"{notebook} is missing"
    if problem:
        Path(result.log).write_text(problem + "\n")
        result.fail(problem)
        return result
    box = work_box(work) if options.disk else None
    env = options.env(quick=quick)
    result.threads = env_threads(env)
    lim = options.hand_in_limits(env)
    autograded = work / "autograded" if audit_run else options.autograded
    events = work / "events.jsonl"
    cmd = options.nbgrader_args(job.lab, job.student, work / "gradebook.db", autograded if audit_run else None,
                                events=events, cell_timeout=lim.cell_timeout)
    cgroup: cgroups.Cgroup | None = None
    scratch: Path | None = None
    try:
        if box is not None:  # what it writes: at most the disk limit, in memory
            disk.mount(box, lim.disk_limit)
        for folder in work_folders(work).values():
            folder.mkdir(parents=True, exist_ok=True)
        gradebook.copy_db(options.db, work / "gradebook.db")
        if options.cgroups:
            cgroup = cgroups.Cgroup(f"{job.lab}-{job.student}", memory=lim.memory_limit, processes=lim.process_limit)
        if options.sandbox:
            scratch = sandbox.new_scratch()
        plan = sandbox.kernel_plan(work, cgroup.procs_files if cgroup else [], scratch)
        with open(result.log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=options.config_dir, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env=dict(env, **{sandbox.SANDBOX_VAR: plan}),
                                    preexec_fn=_die_with_parent if os.name == "posix" else None)
            code = _wait(proc, cgroup, lim.submission_timeout)
        result.timings["nbgrader"] = time.perf_counter() - start
        breaches = cgroup.breaches() if cgroup else []
        graded = autograded / job.student / job.lab / f"{job.lab}.ipynb"
        if code is None:
            _stopped(result, lim, graded)
        elif code != 0:
            _crashed(result, lim, breaches, execute.read_events(events))
        else:
            _graded(result, options, job, work, graded, breaches, cgroup, scratch, lim, execute.read_events(events))
        if box is not None and disk.full(box):
            result.notes.append(f"it filled its {cgroups.human_bytes(lim.disk_limit)} of disk (the limit for its "
                                f"working copy and exported models): its writes failed from then on")
        result.seconds = time.perf_counter() - start
    except disk.DiskError as exc:
        Path(result.log).write_text(f"{exc}\n")
        result.fail(str(exc))
    finally:
        if cgroup is not None:
            result.peak_memory = cgroup.peak_memory()
            cgroup.close()
        if scratch is not None:  # the kernel's sockets and the stages, however nbgrader ended
            shutil.rmtree(scratch, ignore_errors=True)
        if box is not None:  # after the cgroup: nothing of the hand-in runs any more
            disk.unmount(box)
    return result


# --------------------------------------------------------------------------- the Dask task

_PREPARED: set[str] = set()  # datasets this process has already made sure are decoded


def prepare_data(source: Path, labs: list[str]) -> None:
    """Decode the datasets the labs use before grading: inside the sandbox the cache is read-only.

    Runs on the worker (a remote one has its own cache), once per dataset and worker process.
    """
    from course_utils import data

    text = " ".join(p.read_text().lower() for lab in labs for p in (source / lab).glob("*.ipynb"))
    for name in data.DATASETS:
        if name in text and name not in _PREPARED:
            try:
                data.load_arrays(name)
            except data.DataError as exc:
                raise GradingError(f"the labs need {name}, which cannot be loaded: {exc}") from exc
            _PREPARED.add(name)
    sandbox.share_datasets()


def _audit(options: RunOptions, job: Job, work_root: Path, result: Result) -> None:
    """Re-train a hand-in graded from its weights and compare the outside scores of both runs."""
    start = time.perf_counter()
    again = grade_one(options, job, work_root / f"audit-{job.lab}-{job.student}", audit_run=True)
    result.audit = audit.compare(result.outside, again.outside, {s.label: s.check for s in job.specs})
    if again.peak_memory is not None:  # the re-training's memory counts for sizing the workers too
        result.peak_memory = max(result.peak_memory or 0, again.peak_memory)
    if again.status != "graded" or not again.outside:
        result.audit.append({"label": "(re-training)", "kind": "", "handed_in": None, "retrained": None,
                             "flagged": True, "note": again.message or "the re-trained run failed"})
    result.timings["audit"] = time.perf_counter() - start
    if flagged := [row for row in result.audit if row["flagged"]]:
        result.notes.append("AUDIT: " + "; ".join(f"{row['label']}: {row['note']}" for row in flagged))


def sweep_leftovers() -> list[str]:
    """Remove what processes of the kit that died left behind (:mod:`course_utils.leftovers`): grading
    workers' work and scratch folders, their boxes' mounts and their cgroups, the instructor's commands'
    folders, kernels' socket folders. Returns their names."""
    disk.release_stale()  # first: a work folder with a box still mounted in it cannot be removed
    folders = {Path(tempfile.gettempdir()), Path(sandbox.scratch_parent())}  # where grade_task and grade_one make them
    removed = [p.name for f in folders for p in leftovers.sweep(f, (leftovers.KIT_PREFIX,))]
    return removed + cgroups.sweep()


def grade_task(job: Job, options: RunOptions) -> Result:
    """One hand-in as a Dask task: grading and scoring on this worker; the private gradebook comes back in
    the result, so the client can merge it wherever the worker ran.

    With ``options.handed_in`` the hand-in's weights are graded; an audited job is re-trained as well
    and the scores compared (``result.audit``).
    """
    check_task(options.code)  # a worker with other kit code grades nothing (an error row, graded again later)
    sweep_leftovers()
    work_root = Path(tempfile.mkdtemp(prefix=leftovers.tag(WORK_PREFIX)))
    try:
        if options.sandbox:
            prepare_data(options.source, [job.lab])
        result = grade_one(options, job, work_root / f"{job.lab}-{job.student}", quick=options.handed_in)
        if options.handed_in and job.audited and result.outside:
            _audit(options, job, work_root, result)
        if result.db is not None:
            result.db_bytes, result.db = result.db.read_bytes(), None
        return result
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
