"""Shared plumbing for the course labs: run modes, data, training, plotting, grading.

Typical notebook use::

    from course_utils import data, training, plotting, modes
    splits = data.mnist(n_train=modes.by_mode(smoke=2000, laptop=None, full=None))
"""
from . import data, grading, modes, plotting, training
from .modes import by_mode, current_mode

__all__ = ["data", "grading", "modes", "plotting", "training", "by_mode", "current_mode"]
__version__ = "0.1.0"
