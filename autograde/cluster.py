"""Where submissions are graded: a Dask cluster, local by default.

Each submission is one Dask task (:func:`autograde.worker.grade_task`); the
client merges results into the gradebook one at a time as they arrive. By
default :func:`open_client` starts a ``LocalCluster`` with one single-threaded
worker process per requested worker; ``--scheduler ADDRESS`` connects to a
running cluster instead (workers started with ``dask worker``, on a Slurm
cluster with ``dask-jobqueue``, on Kubernetes with ``dask-kubernetes``: see
autograde/README.md). A task whose worker dies is retried once on another
worker (``distributed.scheduler.allowed-failures = 1``), then becomes an
error row.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)
ALLOWED_FAILURES = 1  # a task whose worker died is retried once, then reported


# How grading uses Dask: a task whose worker died is retried once; workers may start processes (nbgrader).
SETTINGS = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
            "distributed.worker.daemon": False,  # workers start nbgrader processes
            "distributed.logging.distributed": "error",
            # Dask's nanny writes these variables into the environment of the process that starts the
            # workers (this one, for a LocalCluster) and leaves them there. Its default OMP_NUM_THREADS=1
            # would then pass for the instructor's own setting in every later run of this process
            # (RunOptions.passed_env) and give each hand-in one thread however many cores it has. Only the
            # default's memory trim is kept; each hand-in's threads are set by RunOptions.env.
            "distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536}}


@contextlib.contextmanager
def local_cluster(workers: int = 1) -> Iterator:
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes set up for grading (:data:`SETTINGS`)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(SETTINGS), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                         dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        yield cluster


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int = 1) -> Iterator:
    """A ``distributed.Client`` on ``scheduler``, or on a new :func:`local_cluster` of ``workers`` processes."""
    import dask
    from distributed import Client

    with dask.config.set(SETTINGS):
        if scheduler:
            with Client(scheduler, timeout="30s") as client:
                yield client
            return
        with local_cluster(workers) as cluster, Client(cluster) as client:
            yield client


def dashboard(client) -> str | None:
    """The dashboard's address, when the cluster serves one (it needs ``bokeh``)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return None
    try:
        return client.dashboard_link if client.scheduler_info().get("services", {}).get("dashboard") else None
    except Exception:  # no dashboard, or an old scheduler
        return None
