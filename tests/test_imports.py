"""What each grading process imports: every hand-in starts an nbgrader process and an outside scorer, so
their imports are paid once per hand-in (``autograde/__init__.py`` loads its names on first use)."""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types

import pytest

import autograde

# The heavy packages a process can do without, and what it costs to import them anyway.
HEAVY = ("torch", "nbgrader", "nbformat", "distributed", "copydetect")


def imported_by(statement: str) -> set[str]:
    """The top-level packages of :data:`HEAVY` that a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1])) & set(HEAVY)


def test_the_outside_scorer_imports_neither_nbgrader_nor_dask():
    """``python -m autograde.scorer`` runs once per hand-in: it needs PyTorch and course_utils, nothing of the grader."""
    assert imported_by("import autograde.scorer; from course_utils import checks") == {"torch"}


def test_nbgraders_grading_configuration_imports_no_torch():
    """Each hand-in's ``nbgrader autograde`` loads these through autograde/nbgrader_config.py; the kernel imports
    PyTorch, the nbgrader process need not."""
    loaded = imported_by("import autograde.config, autograde.kernel, autograde.execute, autograde.term")
    assert "torch" not in loaded and "distributed" not in loaded, loaded


def test_the_package_names_stay_functions_after_every_module_is_imported():
    """A submodule import binds its name on the package: ``autograde.collect`` must stay the function."""
    for info in pkgutil.iter_modules(autograde.__path__):
        if info.name not in ("__main__", "nbgrader_config"):
            importlib.import_module(f"autograde.{info.name}")
    for name in autograde.__all__:
        value = getattr(autograde, name)
        assert not isinstance(value, types.ModuleType), f"autograde.{name} is the module, not what __all__ promises"
    with pytest.raises(AttributeError):
        autograde.no_such_name  # noqa: B018
