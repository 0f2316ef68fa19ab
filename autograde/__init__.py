"""The instructor's grading steps on top of nbgrader, as a package: ``python -m autograde STEP``.

Modules, one concern each: ``course`` (the course folder and settings),
``config`` (grading mode and limits), ``release`` (generate / check),
``collect``, ``options`` (one run's frozen options), ``pipeline`` (autograde:
``jobs`` chooses, ``worker`` grades one hand-in, ``record`` merges and reports),
``cluster`` (the Dask cluster; every worker runs the client's kit code),
``sandbox`` (the allowlist sandbox: bubblewrap, the grading user), ``cgroups``
(memory and process limits; with ``course_utils.leftovers``, what a grader that
died left behind), ``disk`` (the disk limit: a size-limited tmpfs),
``kernel`` (the kernel manager nbgrader uses), ``execute`` (nbgrader's Execute
step, hardened), ``scorer`` (scores computed outside the kernel),
``gradebook`` (merging results), ``report`` and ``classstate`` (the class's state),
``publish`` (feedback / export), ``term`` (due dates, late policy), ``lms`` (grade
export for Canvas and Moodle), ``similarity`` (similar hand-ins), ``exchange``, ``cli``.
"""
import importlib

# ``collect`` is bound here because a submodule of the same name would otherwise shadow the function
# once anything imports ``autograde.collect``; the module itself imports nothing heavy.
from .collect import collect

# Each other name loads its module on first use, so a process that needs one module (the outside
# scorer, nbgrader's configuration in each grading run) does not import the rest (nbgrader, Dask, PyTorch).
_EXPORTS = {"REPO": "course", "Course": "course", "GradingError": "course",
            "read_settings": "course", "tool_env": "course", "merge_grades": "gradebook", "Result": "pipeline",
            "autograde": "pipeline", "export": "publish", "feedback": "publish", "check": "release",
            "generate": "release"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, "collect"])
