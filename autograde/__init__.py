"""The instructor's grading steps on top of nbgrader, as a package: ``python -m autograde STEP``.

Modules, one concern each: ``course`` (the course folder and settings),
``config`` (grading mode and limits), ``release`` (generate / check),
``collect``, ``options`` (one run's frozen options), ``pipeline`` (autograde:
``jobs`` chooses, ``worker`` grades one hand-in, ``record`` merges and reports),
``sandbox`` (the allowlist sandbox: bubblewrap, the grading user, cgroups),
``kernel`` (the kernel manager nbgrader uses), ``execute`` (nbgrader's Execute
step, hardened), ``scorer`` (scores computed outside the kernel),
``gradebook`` (merging results), ``report`` and ``classstate`` (the class's state),
``publish`` (feedback / export), ``term`` (due dates, late policy), ``lms`` (grade
export for Canvas and Moodle), ``similarity`` (similar hand-ins), ``exchange``, ``cli``.
"""
from .collect import collect
from .course import REPO, Course, GradingError, read_settings, tool_env
from .gradebook import merge_grades
from .pipeline import Result, autograde
from .publish import export, feedback
from .release import check, generate

__all__ = ["REPO", "Course", "GradingError", "Result", "autograde", "check", "collect", "export", "feedback",
           "generate", "merge_grades", "read_settings", "tool_env"]
