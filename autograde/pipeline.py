"""Autograde: run every collected submission, sandboxed, score its models outside its kernel, merge.

Each submission runs ``nbgrader autograde`` in its own process against a
private copy of the gradebook; its kernel is sandboxed (see
:mod:`autograde.sandbox` and :mod:`autograde.kernel`). Afterwards the models
its hidden tests exported are scored by a fresh sandboxed process
(:mod:`autograde.scorer`), and the results are merged into the main gradebook
one at a time, so parallel runs never write the same SQLite file.

With ``handed_in`` the notebook is re-run quickly and the weights the student
handed in are scored instead of re-trained ones; an audited sample is also
re-trained in full (see :mod:`autograde.audit`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils.modes import BATCHES_VAR, HANDIN_VAR

from . import audit, gradebook, publish, report, scorer, sandbox
from .collect import readable
from .config import HANDIN_BATCHES, SCORER_TIMEOUT, grading_settings
from .course import Course, GradingError, tool_env
from .execute import INTEGRITY_ERROR, KERNEL_DIED, error_output
from .kernel import work_folders

log = logging.getLogger(__name__)
DONE = "autograde finished:"  # last line of a submission's log once its result is recorded


@dataclass
class Result:
    """What happened to one submission."""

    student: str
    lab: str
    status: str = "graded"          # graded | error
    score: float | None = None
    max_score: float | None = None
    seconds: float = 0.0
    message: str = ""
    log: str = ""
    outside: list[dict] = field(default_factory=list)   # the outside scorer's rows
    timings: dict[str, float] = field(default_factory=dict)  # seconds: nbgrader, scoring, merge, audit
    audit: list[dict] = field(default_factory=list)     # handed-in against re-trained scores (audited hand-ins)
    overrides: dict[str, float] = field(default_factory=dict, repr=False)
    db: Path | None = field(default=None, repr=False)   # private gradebook to merge, when grades were saved
    db_bytes: bytes | None = field(default=None, repr=False)  # the same, carried back from a Dask worker


@dataclass
class Plan:
    """How submissions are run: sandbox, limits, time limits, mode."""

    mode: str
    cell_timeout: int
    submission_timeout: float
    memory: int | None
    processes: int | None
    sandbox: bool
    cgroups: bool


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


def _error_line(text: str) -> str:
    """The most telling line of a failed nbgrader run: the last exception, else the last error."""
    lines = text.strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b.*:", line.strip()):
            return line.strip()
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or ["no output"])[-1].strip()


def log_path(course: Course, lab: str, student: str) -> Path:
    return course.config_dir / "reports" / "logs" / lab / f"{student}.log"


def needs_grading(course: Course, lab: str, student: str) -> bool:
    """False when this submission was graded (or failed to grade) after it was last collected."""
    path = log_path(course, lab, student)
    sub = course.folder("submitted") / student / lab / f"{lab}.ipynb"
    if not path.is_file() or not sub.is_file() or sub.stat().st_mtime > path.stat().st_mtime:
        return True
    return not path.read_text().rstrip().splitlines()[-1:][0].startswith(DONE)


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


def _score_outside(course: Course, lab: str, student: str, work: Path, plan: Plan, specs: list[scorer.Spec],
                   env: dict, cgroup: sandbox.Cgroup | None) -> list[dict]:
    models = work_folders(work)["models"]
    procs = cgroup.procs_files if cgroup is not None else []
    if not plan.sandbox:
        return scorer.run(specs, models, prefix=sandbox.join_cgroup(procs, []), env=env, timeout=SCORER_TIMEOUT)
    stage = sandbox.new_stage()
    try:
        prefix = sandbox.prefix([*sandbox.course_mounts(), sandbox.Mount.same(models)], stage=stage,
                                cgroup_procs=procs)
        return scorer.run(specs, models, prefix=prefix, env=sandbox.clean_env(env), timeout=SCORER_TIMEOUT)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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


def grade_one(course: Course, lab: str, student: str, work: Path, *, plan: Plan, env: dict,
              specs: list[scorer.Spec], audit_run: bool = False) -> Result:
    """Grade one submission with ``nbgrader autograde``, sandboxed, against a private copy of the gradebook.

    ``audit_run``: a second, re-training run of a hand-in graded from its weights; its graded notebook and
    gradebook stay in ``work`` (only its outside scores are used), its log goes next to the main one.
    """
    result = Result(student, lab)
    start = time.perf_counter()
    notebook = course.folder("submitted") / student / lab / f"{lab}.ipynb"
    result.log = str(log_path(course, lab, student).with_suffix(".audit.log" if audit_run else ".log"))
    Path(result.log).parent.mkdir(parents=True, exist_ok=True)
    problem = readable(notebook) if notebook.is_file() else f"{notebook} is missing"
    if problem:
        Path(result.log).write_text(problem + "\n")
        result.status, result.message = "error", problem
        return result
    for folder in work_folders(work).values():
        folder.mkdir(parents=True, exist_ok=True)
    db = work / "gradebook.db"
    gradebook.copy_db(course.db_path(), db)
    cgroup = (sandbox.Cgroup(f"{lab}-{student}", memory=plan.memory, processes=plan.processes)
              if plan.cgroups else None)
    kernel_plan = {"work": str(work), "cgroup": cgroup.procs_files if cgroup else [], "sandbox": plan.sandbox,
                   "mounts": [list(vars(m).values()) for m in sandbox.course_mounts()] if plan.sandbox else []}
    cmd = [sys.executable, "-m", "nbgrader", "autograde", lab, "--student", student, "--force",
           f"--CourseDirectory.db_url=sqlite:///{db}", f"--Execute.timeout={plan.cell_timeout}"]
    autograded = course.folder("autograded")
    if audit_run:
        autograded = work / "autograded"
        cmd.append(f"--CourseDirectory.autograded_directory={autograded}")
    try:
        with open(result.log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=course.config_dir, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env=dict(env, **{sandbox.SANDBOX_VAR: json.dumps(kernel_plan)}),
                                    preexec_fn=_die_with_parent if os.name == "posix" else None)
            code = _wait(proc, cgroup, plan.submission_timeout)
        result.timings["nbgrader"] = time.perf_counter() - start
        breaches = cgroup.breaches() if cgroup else []
        result.seconds = time.perf_counter() - start
        graded = autograded / student / lab / f"{lab}.ipynb"
        if code is None:
            shutil.rmtree(graded.parent, ignore_errors=True)
            result.status = "error"
            result.message = (f"stopped after {plan.submission_timeout:.0f} s, the limit for one whole submission: "
                              f"too slow in this mode, or stuck; look at it by hand or raise --submission-timeout")
        elif code != 0:
            result.status = "error"
            text = Path(result.log).read_text()
            if "CellTimeoutError" in text and "Interrupting kernel" in text:
                result.message = (f"a cell ran past the {plan.cell_timeout} s limit and went on running after the "
                                  f"interrupt (it ignores interrupts or hangs in native code); look at it by hand")
            else:
                result.message = f"nbgrader failed: {_error_line(text)}"
            if breaches:
                result.message = f"{'; '.join(breaches)}. {result.message}"
        else:
            result.db = db
            graded_nb = nbformat.read(graded, as_version=4)
            died, tampered = _findings(graded_nb)
            notes = []
            if breaches or died:
                result.status = "error"
                notes.append("; ".join(breaches) if breaches else f"the kernel died in {died}")
                notes.append("the tests before that keep their points, the rest score 0")
            if tampered:
                notes.append(f"grading helpers altered in the kernel, affected tests score 0 ({tampered[0][:300]})")
            if marked := publish.marker_cells(graded_nb):
                notes.append(f"{', '.join(marked)} of the hand-in hold nbgrader's hidden-test marker text; "
                             f"its feedback shows them as written")
            if specs:
                scoring_start = time.perf_counter()
                result.outside = _score_outside(course, lab, student, work, plan, specs, env, cgroup)
                result.timings["scoring"] = time.perf_counter() - scoring_start
                result.overrides = {row["grade_id"]: 0.0 for row in result.outside if not row["passed"]}
                if result.overrides:
                    _annotate(graded, result.outside)
                    notes.append("scored outside the kernel: " + "; ".join(
                        row["message"] for row in result.outside if not row["passed"]))
            result.message = ". ".join(notes)
            result.seconds = time.perf_counter() - start
    finally:
        if cgroup is not None:
            cgroup.close()
    return result


def _wait(proc: subprocess.Popen, cgroup: sandbox.Cgroup | None, timeout: float) -> int | None:
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


def make_plan(settings: dict, *, sandboxed: bool | None = None, memory: int | None = None,
              processes: int | None = None) -> Plan:
    """The sandbox and limits for this run; ``sandboxed=None`` uses what the machine offers."""
    found = sandbox.support()
    if sandboxed and not found.bwrap:
        raise GradingError(f"--sandbox asked for, but {found.bwrap_problem}; `apt-get install bubblewrap`")
    use_bwrap = bool(found.bwrap) if sandboxed is None else sandboxed
    return Plan(mode=settings["mode"], cell_timeout=int(settings["cell_timeout"]),
                submission_timeout=float(settings["submission_timeout"]),
                memory=memory or settings["memory_limit"], processes=processes or settings["process_limit"],
                sandbox=use_bwrap, cgroups=use_bwrap and found.cgroups)


_PREPARED: set[str] = set()  # datasets this process has already made sure are decoded


def _prepare_data(course: Course, labs: list[str]) -> None:
    """Decode the datasets the labs use before grading: inside the sandbox the cache is read-only.

    Runs on the worker (a remote one has its own cache), once per dataset and worker process.
    """
    from course_utils import data

    text = " ".join(p.read_text().lower() for lab in labs for p in (course.folder("source") / lab).glob("*.ipynb"))
    for name in data.DATASETS:
        if name in text and name not in _PREPARED:
            try:
                data.load_arrays(name)
            except data.DataError as exc:
                raise GradingError(f"the labs need {name}, which cannot be loaded: {exc}") from exc
            _PREPARED.add(name)
    sandbox.share_datasets()


def handin_env(env: dict) -> dict:
    """The environment for grading handed-in weights: a quick re-run that loads the weights."""
    return dict(env, **{HANDIN_VAR: "1", BATCHES_VAR: str(HANDIN_BATCHES)})


def grade_task(course_root: str, lab: str, student: str, *, settings: dict, options: dict, env: dict,
               specs: list[scorer.Spec], audited: bool = False) -> Result:
    """One submission as a Dask task: sandbox plan, grading and scoring on this worker; the private gradebook
    comes back in the result, so the client can merge it wherever the worker ran.

    With ``settings["handed_in"]`` the hand-in's weights are graded; ``audited`` re-trains it as well and
    compares the scores (``result.audit``).
    """
    course = Course(Path(course_root))
    work_root = Path(tempfile.mkdtemp(prefix="coursekit-grading-"))
    handed_in = bool(settings.get("handed_in"))
    try:
        plan = make_plan(settings, **options)
        if plan.sandbox:
            _prepare_data(course, [lab])
        result = grade_one(course, lab, student, work_root / f"{lab}-{student}", plan=plan,
                           env=handin_env(env) if handed_in else env, specs=specs)
        if handed_in and audited and result.outside:
            audit_start = time.perf_counter()
            again = grade_one(course, lab, student, work_root / f"audit-{lab}-{student}", plan=plan, env=env,
                              specs=specs, audit_run=True)
            result.audit = audit.compare(result.outside, again.outside, {s.label: s.kind for s in specs})
            if again.status != "graded" or not again.outside:
                result.audit.append({"label": "(re-training)", "kind": "", "handed_in": None, "retrained": None,
                                     "flagged": True, "note": again.message or "the re-trained run failed"})
            result.timings["audit"] = time.perf_counter() - audit_start
            if flagged := [row for row in result.audit if row["flagged"]]:
                note = "AUDIT: " + "; ".join(f"{row['label']}: {row['note']}" for row in flagged)
                result.message = f"{result.message}. {note}" if result.message else note
        if result.db is not None:
            result.db_bytes, result.db = result.db.read_bytes(), None
        return result
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


def _lost(lab: str, student: str, exc: BaseException) -> Result:
    """The error row of a task that raised on its worker, or whose worker was lost twice."""
    if type(exc).__name__ == "KilledWorker":
        why = (f"the grading worker was lost twice while grading it; grade it again with --student {student}")
    else:
        why = f"grading failed on the worker ({type(exc).__name__}: {exc})"
    return Result(student, lab, status="error", message=why)


def autograde(course: Course, labs: list[str] | None = None, *, students: list[str] | None = None,
              workers: int | None = None, force: bool = False, mode: str | None = None,
              cell_timeout: int | None = None, submission_timeout: float | None = None,
              sandboxed: bool | None = None, memory: int | None = None, processes: int | None = None,
              scheduler: str | None = None, progress: bool = False, on_result=None, handed_in: bool = False,
              audit_share: float = 0.0, audit_seed: int | None = None) -> list[Result]:
    """Grade collected submissions as Dask tasks; the gradebook gets every result, merged one at a time.

    ``scheduler`` is the address of a running Dask scheduler; without it a
    ``LocalCluster`` of ``workers`` processes is started. A submission that
    fails, dies or runs past a limit becomes an error row for that student only
    (with the grades of the tests that ran, where nbgrader saved them); one
    whose worker dies is retried once. Without ``force``, submissions already
    graded (and not collected again since) are skipped, so a run stopped with
    Ctrl-C continues where it stopped. ``on_result(result)`` is called as each
    result is recorded; ``progress`` shows a progress bar. ``handed_in`` grades the weights handed in
    with each notebook (a quick re-run); ``audit_share`` of them (a fraction, or a count per lab) are
    re-trained as well, chosen at random (``audit_seed``), and differences are flagged.
    """
    settings = dict(course.settings(), **(grading_settings(mode) if mode else {}))
    if cell_timeout:
        settings["cell_timeout"] = cell_timeout
    if submission_timeout:
        settings["submission_timeout"] = submission_timeout
    settings["handed_in"] = handed_in
    workers = max(1, workers or min(os.cpu_count() or 1, 8))
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = tool_env(COURSE_GRADING_MODE=settings["mode"],
                   **{var: os.environ.get(var, threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    main_db = course.db_path()
    submitted = course.folder("submitted")
    jobs, skipped = [], 0
    for lab in course.pick_labs(labs):
        with_lab = sorted(p.parent.name for p in submitted.glob(f"*/{lab}") if p.is_dir())
        chosen = [s for s in with_lab if students is None or s in students]
        jobs += [(lab, s) for s in chosen if force or needs_grading(course, lab, s)]
        skipped += len(chosen) - sum(1 for job in jobs if job[0] == lab)
    if skipped:
        log.info("skipping %d submission(s) graded since they were collected (--force regrades them)", skipped)
    job_labs = sorted({lab for lab, _ in jobs})
    if jobs and not gradebook.has_labs(main_db, settings["course_id"], set(job_labs)):
        raise GradingError(f"the gradebook {main_db} does not know these labs yet: run "
                           f"`python -m autograde generate` first")
    specs = {lab: scorer.specs(nbformat.read(course.folder("source") / lab / f"{lab}.ipynb", as_version=4),
                               settings["mode"]) for lab in job_labs}
    options = {"sandboxed": sandboxed, "memory": memory, "processes": processes}
    audited = audit.pick(jobs, audit_share, audit_seed) if handed_in else set()
    plan = make_plan(settings, **options)
    warnings = sandbox.support().warnings() if plan.sandbox or sandboxed is None else []
    for warning in warnings:
        log.warning(warning)
    if not plan.sandbox and not any("UNSANDBOXED" in w for w in warnings):
        log.warning("UNSANDBOXED: submissions run with the grader's rights")
    log.info("grading %d submission(s)%s in mode %s with %s; limits: %d s per cell, %.0f s per submission%s",
             len(jobs), f" from their handed-in weights ({len(audited)} re-trained as an audit)" if handed_in
             else "", plan.mode, f"the cluster at {scheduler}" if scheduler else f"{workers} process(es)",
             plan.cell_timeout, plan.submission_timeout,
             f", {sandbox.human_bytes(plan.memory)} and {plan.processes} processes, sandboxed"
             if plan.cgroups else (", sandboxed without limits" if plan.sandbox else ""))
    results: list[Result] = []
    try:
        if jobs:
            _run(course, jobs, results, scheduler=scheduler, workers=workers, progress=progress, on_result=on_result,
                 task_args={"settings": settings, "options": options, "env": env}, specs=specs,
                 main_db=main_db, course_id=settings["course_id"], audited=audited)
    finally:  # also after Ctrl-C: the report holds every result recorded so far
        path = report.write_csv(course.config_dir / "reports", results)
        if path:
            log.info("report: %s", path)
    for lab in job_labs:
        shared = audit.same_weights(submitted, lab) if handed_in else []
        for name, who in shared:
            log.warning("%s: identical %s handed in by %s", lab, name, ", ".join(who))
        log.info("course report: %s", report.write_html(course, lab, [r for r in results if r.lab == lab],
                                                         same_weights=shared))
    return results


def _run(course: Course, jobs: list[tuple[str, str]], results: list[Result], *, scheduler: str | None,
         workers: int, progress: bool, on_result, task_args: dict, specs: dict, main_db: Path,
         course_id: str, audited: set[tuple[str, str]] = frozenset()) -> None:
    """Submit every job to the cluster and record each result as it arrives (appending to ``results``)."""
    from distributed import as_completed

    from .cluster import dashboard, open_client

    with open_client(scheduler, workers) as client, tempfile.TemporaryDirectory(prefix="gradebooks-") as tmp:
        if (link := dashboard(client)) is not None:
            log.info("Dask dashboard: %s", link)
        futures = {client.submit(grade_task, str(course.root), lab, s, specs=specs[lab], **task_args,
                                 audited=(lab, s) in audited,
                                 key=f"grade-{lab}-{s}-{os.urandom(4).hex()}", retries=1, pure=False): (lab, s)
                   for lab, s in jobs}
        bar = _progress(len(jobs)) if progress else None
        for future in as_completed(futures):  # merging is serial, so writes never overlap
            lab, student = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # KilledWorker, a lost connection: not the student's doing
                result = _lost(lab, student, exc)
            _record(course, result, main_db, course_id, Path(tmp))
            results.append(result)
            if on_result:
                on_result(result)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(errors=sum(r.status != "graded" for r in results), refresh=False)
        if bar is not None:
            bar.close()


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="graded", unit="hand-in", file=sys.stderr)


def _record(course: Course, result: Result, main_db: Path, course_id: str, tmp: Path) -> None:
    """Merge one result into the main gradebook and mark its log as done (not when the merge failed)."""
    recorded = True
    if result.db_bytes is not None:
        result.db = tmp / f"{result.lab}-{result.student}.db"
        result.db.write_bytes(result.db_bytes)
        result.db_bytes = None
    if result.db is not None:
        try:
            merge_start = time.perf_counter()
            result.score, result.max_score = gradebook.merge_grades(
                result.db, main_db, course_id, result.lab, result.student, result.overrides)
            result.timings["merge"] = time.perf_counter() - merge_start
        except Exception as exc:  # not the student's fault: the next run tries again
            result.status, result.message = "error", f"could not record the grades: {exc}"
            recorded = False
    if not result.log:
        result.log = str(log_path(course, result.lab, result.student))
    if recorded and Path(result.log).is_file():
        with open(result.log, "a") as out:
            out.write(f"\n{DONE} {result.status} {result.message}\n")
