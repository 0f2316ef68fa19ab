"""Shared plumbing for the course labs: run modes, data, training, plotting, grading.

Typical notebook use::

    from course_utils import data, training, plotting, modes
    splits = data.mnist(n_train=modes.by_mode(smoke=2000, laptop=None, full=None))
"""
import importlib

from . import modes
from .modes import by_mode, current_mode

# The torch-based modules load on first use (``from course_utils import data`` as
# usual), so ``python -m course_utils doctor`` can still report a missing PyTorch.
_LAZY = ("augment", "data", "grading", "integrity", "kernels", "plotting", "speed", "training", "validation")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["augment", "data", "grading", "integrity", "kernels", "modes", "plotting", "speed", "training", "validation", "by_mode",
           "current_mode"]
__version__ = "0.1.0"
