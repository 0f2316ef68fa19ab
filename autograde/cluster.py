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

Every worker must run the same kit code as the client: :func:`check_workers`
refuses a cluster where one does not (a machine not updated, a worker started
before an update), and :func:`check_task` refuses a task that reaches one later
(a worker that joined during the run, code edited while it runs).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import course_utils

from .course import GradingError

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


# The kit's modules that grading runs: in the worker's process, and in the nbgrader processes it starts.
PACKAGES = {"autograde": Path(__file__).parent, "course_utils": Path(course_utils.__file__).parent}
LIBRARIES = ("torch", "torchvision", "nbgrader", "nbconvert")  # others may change scores in their last digits


def code_fingerprint() -> str:
    """A short hash of the kit's Python modules (``autograde/*.py``, ``course_utils/*.py``) as they are on disk now."""
    digest = hashlib.sha256()
    for name, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{name}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


LOADED = code_fingerprint()  # the code this process imported (with the grading modules, which import this one)


def versions() -> dict[str, str]:
    """What grading in this process runs: the kit's code as imported and as on disk now, Python, :data:`LIBRARIES`."""
    found = {"kit": LOADED, "kit on disk": code_fingerprint(), "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def check_workers(client) -> None:
    """Refuse to grade on a cluster whose workers run other kit code than this process (a :class:`GradingError`
    naming them, before any hand-in is sent); warn where only Python or a library differs."""
    here = versions()
    if here["kit"] != here["kit on disk"]:
        raise GradingError(f"the course kit's code changed on disk (now {here['kit on disk']}) since this process "
                           f"imported it ({here['kit']}): start the grading command again")
    theirs = client.run(versions, on_error="return")  # a worker too old to have versions() answers an error
    other = {addr: (f"imported {v.get('kit')}, on disk {v.get('kit on disk')}" if isinstance(v, dict)
                    else f"no answer ({type(v).__name__}: {v})")
             for addr, v in theirs.items()
             if not isinstance(v, dict) or {v.get("kit"), v.get("kit on disk")} != {here["kit"]}}
    if other:
        listed = "; ".join(f"{addr}: {code}" for addr, code in sorted(other.items()))
        raise GradingError(f"{len(other)} of the cluster's {len(theirs)} worker(s) run other course-kit code than "
                           f"this machine ({here['kit']}), so nothing was graded: {listed}. Install this version of "
                           "the kit on every grading machine and restart its workers (`dask worker ...`).")
    for name in ("python", *LIBRARIES):
        if off := sorted(f"{addr} ({v.get(name)})" for addr, v in theirs.items() if v.get(name) != here[name]):
            log.warning("%s %s here, but other versions on %s: scores may differ in their last digits",
                        name, here[name], ", ".join(off))


def check_task(code: str) -> None:
    """Refuse to grade a hand-in in a worker whose kit code (imported, or on disk for the nbgrader processes it
    starts) is not the client's ``code``; nothing is recorded for it but an error row, so it can be graded again."""
    if code and {LOADED, on_disk := code_fingerprint()} != {code}:
        raise GradingError(f"this worker runs other course-kit code (imported {LOADED}, on disk {on_disk}) "
                           f"than the run's client ({code}): install the same kit on every grading machine, restart "
                           "its workers and grade this hand-in again")


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
