"""Autograde: choose the hand-ins, grade each on a Dask worker, record each result as it arrives.

The three rooms of a run share one frozen :class:`~autograde.options.RunOptions`,
built once: :mod:`autograde.jobs` chooses what to grade (on the client),
:mod:`autograde.worker` grades one hand-in (on a worker: sandboxed nbgrader,
outside scoring, a structured :class:`~autograde.worker.Result`), and
:mod:`autograde.record` merges each result into the main gradebook one at a
time, so parallel runs never write the same SQLite file, then writes the reports.

With ``handed_in`` the notebook is re-run quickly and the weights the student
handed in are scored instead of re-trained ones; an audited sample is also
re-trained in full (see :mod:`autograde.audit`).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from . import jobs as job_choice
from course_utils import leftovers

from . import audit, record, sandbox, term
from .course import Course
from .options import Job, RunOptions, default_workers, slots_by_host
from .worker import Result, grade_task

log = logging.getLogger(__name__)
__all__ = ["Result", "autograde", "run"]


def autograde(course: Course, labs: list[str] | None = None, *, students: list[str] | None = None,
              workers: int | None = None, force: bool = False, mode: str | None = None,
              cell_timeout: int | None = None, submission_timeout: float | None = None,
              sandboxed: bool | None = None, memory: int | None = None, processes: int | None = None,
              disk: int | None = None, scheduler: str | None = None, progress: bool = False, on_result=None, handed_in: bool = False,
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
    workers = max(1, workers or default_workers())
    options = RunOptions.build(course, mode=mode, cell_timeout=cell_timeout, submission_timeout=submission_timeout,
                               sandboxed=sandboxed, memory=memory, processes=processes, disk=disk,
                               workers=workers, handed_in=handed_in, audit_share=audit_share, audit_seed=audit_seed)
    return run(course, options, labs, students=students, force=force, workers=workers, scheduler=scheduler,
               progress=progress, on_result=on_result, warn_unsandboxed=sandboxed is None)


def run(course: Course, options: RunOptions, labs: list[str] | None = None, *, students: list[str] | None = None,
        force: bool = False, workers: int = 1, scheduler: str | None = None, progress: bool = False,
        on_result=None, warn_unsandboxed: bool = True) -> list[Result]:
    """One run with ``options``: choose the jobs, grade them on the cluster, record and report (see :func:`autograde`)."""
    jobs = job_choice.choose(course, options, labs, students=students, force=force)
    term.apply(course, options.db, sorted({job.lab for job in jobs}))  # due dates, extensions: before the copies
    warnings = sandbox.support().warnings() if options.sandbox or warn_unsandboxed else []
    for warning in warnings:
        log.warning(warning)
    if not options.sandbox and not any("UNSANDBOXED" in w for w in warnings):
        log.warning("UNSANDBOXED: submissions run with the grader's rights")
    if options.handed_in:  # before the run, which would cost them every accuracy item
        for warning in audit.without_weights_warnings(options.submitted, [(job.lab, job.student) for job in jobs]):
            log.warning(warning)
    where = f"the cluster at {scheduler}" if scheduler else f"{workers} process(es)"
    log.info(options.describe(len(jobs), sum(job.audited for job in jobs), where, local=not scheduler))
    results: list[Result] = []
    try:
        if jobs:
            _grade_on_cluster(options, jobs, results, scheduler=scheduler, workers=workers, progress=progress,
                              on_result=on_result)
    finally:  # also after Ctrl-C: the report holds every result recorded so far
        record.reports(course, options, sorted({job.lab for job in jobs}), results)
    return results


def _grade_on_cluster(options: RunOptions, jobs: list[Job], results: list[Result], *, scheduler: str | None,
                      workers: int, progress: bool, on_result) -> None:
    """Submit every job to the cluster and record each result as it arrives (appending to ``results``)."""
    from distributed import as_completed

    from .cluster import LOADED, check_workers, dashboard, open_client

    with (open_client(scheduler, workers) as client,
          tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-gradebooks-")) as tmp):  # workers' gradebooks
        if (link := dashboard(client)) is not None:
            log.info("Dask dashboard: %s", link)
        check_workers(client)  # before anything is sent: every worker runs this code
        # Each worker machine shares its own cores among the hand-ins it grades at once (RunOptions.threads_here).
        options = replace(options, slots_by_host=slots_by_host(client.scheduler_info()["workers"]), code=LOADED)
        futures = {client.submit(grade_task, job, options, key=f"grade-{job.lab}-{job.student}-{os.urandom(4).hex()}",
                                 retries=1, pure=False): job for job in jobs}
        bar = _progress(len(jobs)) if progress else None
        for future in as_completed(futures):  # recording is serial, so writes never overlap
            job = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # KilledWorker, a lost connection: not the student's doing
                result = record.lost(job.lab, job.student, exc)
            record.record(options, result, Path(tmp))
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
