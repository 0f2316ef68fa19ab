"""Dependencies: pyproject.toml declares them per kind of user; the pinned files are generated from it."""
from __future__ import annotations

import ast
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kit import REPO

spec = importlib.util.spec_from_file_location("pin_requirements", REPO / "scripts" / "pin_requirements.py")
pin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pin)

# Test and browser tooling, with what only they pull in: never in a student's install.
TOOLING = {"pytest", "pytest-xdist", "nbval", "playwright", "execnet", "coverage", "pyee", "iniconfig", "pluggy"}
# Imported directly but provided by a declared package (module -> that package).
PROVIDED_BY = {"jupyter_core": "jupyterlab", "jupyter_server": "jupyterlab", "jupyterlab_server": "jupyterlab",
               "sqlalchemy": "nbgrader", "nbformat": "jupyterlab",  # course_utils.colab writes notebooks
               "triton": "torch",  # torch's own compiler on Linux; benchmarks/gpu_full.py reports its version
               "zmq": "jupyter-client"}  # course_utils/kernels.py asks ZeroMQ whether it has unix sockets
# Which groups of pyproject.toml a folder may import from.
FOLDERS = {"course_utils": ("",), "solutions": ("",), "notebooks": ("",),
           "autograde": ("", "grading"), "benchmarks": ("", "grading"), "tests": ("", "grading", "test"),
           "scripts": ("", "grading", "test")}


def closure(names) -> set[str]:
    """Every distribution ``names`` need, as installed here (markers evaluated without extras)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def declared(*groups: str) -> set[str]:
    found = pin.groups()
    return {canonicalize_name(r.name) for group in groups for r in found[group]}


def test_pinned_files_are_generated_from_pyproject():
    problems = pin.check()
    assert not problems, "\n".join(problems) + "\nFix: python scripts/pin_requirements.py"


def test_each_file_pins_exactly_its_groups():
    student = set(pin.read_pins(REPO / "requirements-student.txt"))
    everything = set(pin.read_pins(REPO / "requirements.txt"))
    assert student == declared("")
    assert everything == declared("", "grading", "test")
    pins = pin.read_pins(REPO / "requirements.txt")
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")
    assert {"psutil", "nbformat", "dask", "distributed"} <= declared("grading")


def test_a_package_without_a_version_or_below_its_floor_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["torch>=2.4", "numpy"]\n'
                                             '[project.optional-dependencies]\ngrading = []\ntest = []\n')
    with pytest.raises(pin.PinError, match="no version to pin for numpy: install it here"):
        pin.render("requirements-student.txt", {"torch": "2.14.1"}, tmp_path / "pyproject.toml")
    with pytest.raises(pin.PinError, match="torch==2.3.0 does not satisfy pyproject.toml's torch>=2.4"):
        pin.render("requirements-student.txt", {"torch": "2.3.0", "numpy": "2.4.6"}, tmp_path / "pyproject.toml")


def test_a_student_install_holds_no_test_or_browser_tooling():
    """What requirements-student.txt brings in (this environment's metadata): no pytest, nbval, playwright."""
    needed = closure(pin.read_pins(REPO / "requirements-student.txt"))
    assert "nbgrader" in needed and "jupyterlab" in needed, "students need JupyterLab and the Validate button"
    assert not needed & TOOLING, f"a student install would pull in {sorted(needed & TOOLING)}"


def _catches_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names.update(k.id for k in kinds if isinstance(k, ast.Name))
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(path: Path) -> set[str]:
    """Top-level modules imported by a .py file or the code cells of a notebook."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        sources = ["\n".join(line for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
                   for c in cells if c["cell_type"] == "code"]
    else:
        sources = [path.read_text()]
    found = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # a student stub or a deliberately broken fixture
        optional = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try) and _catches_import_error(node)
                    for stmt in [*node.body, *node.handlers] for inner in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue  # `try: import x / except ImportError: ...` is optional (or a fallback), not a dependency
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_every_import_is_declared(folder):
    """Each third-party module a folder imports comes from a package pyproject.toml declares for it."""
    groups = FOLDERS[folder]
    allowed = declared(*groups)
    local = {"course_utils", "autograde", "conftest", "kit"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    dists = metadata.packages_distributions()
    undeclared = {}
    for path in sorted((REPO / folder).rglob("*.py")) + sorted((REPO / folder).rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for module in _imports(path) - local - set(sys.stdlib_module_names):
            names = {canonicalize_name(d) for d in dists.get(module, [module])}
            provider = PROVIDED_BY.get(module)
            if names & allowed or (provider in allowed and names & closure([provider])):
                continue
            undeclared.setdefault(module, path.relative_to(REPO).as_posix())
    assert not undeclared, (f"{folder}/ imports {undeclared} (module: first file), not declared in pyproject.toml "
                            f"for {' + '.join(g or 'dependencies' for g in groups)}")
