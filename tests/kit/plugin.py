"""The test kit's pytest fixtures and hooks (loaded by ``tests/conftest.py`` through ``pytest_plugins``).

Each returns a plain path or a :class:`kit.Batch`; the helpers behind them are in :mod:`kit`.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import kit
from course_utils import kernels


def pytest_configure(config) -> None:
    """nbval's notebook kernels talk over unix sockets, as the kit's other kernels do (:mod:`course_utils.kernels`).

    Every worker of the suite starts kernels; with TCP, one now and then died at its start because another
    process took one of its ports first ("Address already in use"). nbval has no setting for its kernel
    manager, so its module's name for the class is replaced.
    """
    try:
        import nbval.kernel
    except ImportError:
        return
    nbval.kernel.KernelManager = kernels.SocketKernelManager


_CONTEXTS: weakref.WeakSet = weakref.WeakSet()  # every ZeroMQ context this process made (see below)


def _track_zmq_contexts() -> None:
    """Record every ZeroMQ context made in this process, so :func:`pytest_runtest_call` can close a test's."""
    import zmq.sugar.context

    made = zmq.sugar.context.Context.__init__
    if getattr(made, "tracked", False):
        return

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        _CONTEXTS.add(self)

    init.tracked = True
    zmq.sugar.context.Context.__init__ = init


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Close the ZeroMQ contexts a test body made and left open (in-process kernel managers and clients).

    Left to the garbage collector, such a context can hang this worker for good: when it and its sockets
    are collected in one cycle, the context's ``__del__`` may run first, and its ``term()`` waits for sockets
    that are still open (a fresh-clone CI run hung in an unrelated test's SQLAlchemy call that way).
    Contexts from fixtures (made in setup) are left alone; ``destroy(linger=0)`` closes the sockets first.
    """
    _track_zmq_contexts()
    before = weakref.WeakSet(_CONTEXTS)
    try:
        return (yield)
    finally:
        for context in list(_CONTEXTS):
            if context not in before and not context.closed and not context._shadow:
                context.destroy(linger=0)


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository's root folder."""
    return kit.REPO


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror folder named by COURSE_DATA_DIR (tests that need its files skip without it)."""
    value = os.environ.get("COURSE_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("COURSE_DATA_DIR does not point at the offline dataset mirror")
    return Path(value).resolve()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty decoded-dataset cache for this test only."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system package, driven by Playwright (:func:`kit.browser.launch`);
    closed at the end of the module."""
    from kit import browser as chromium

    with chromium.launch() as launched:
        yield launched


@pytest.fixture
def sandboxed() -> None:
    """The grading sandbox works here (the test skips without it, or fails with COURSE_SANDBOX_REQUIRED)."""
    kit.require_sandbox()


@pytest.fixture
def toy_batch(tmp_path) -> kit.Batch:
    """A throwaway course with the toy lab generated (two TODOs, no torch), nothing graded yet."""
    return kit.generated_course(tmp_path / "course", kit.TOY_LAB)


@pytest.fixture(scope="session")
def grading_cluster() -> Iterator[str]:
    """The address of a Dask cluster of two grading workers, shared by this test process's lab batches.

    Each ``autograde`` call otherwise starts a cluster of its own, and its workers import the grader and
    load the datasets again (about 10 s of CPU each on the project's machine). Pass it as ``scheduler=``
    where the cluster is not what a test is about, and the workers' environment (the test process's at
    the session's start) is the one the test grades in.
    """
    from autograde import cluster

    with cluster.local_cluster(workers=2) as shared:
        yield shared.scheduler_address
