"""The Validate button's verdict (course_utils/validate_button.py): what the server records and serves, and its install.

The browser side (the dialog shows the verdict) is checked on the first lab by tests/test_browser_labs.py; here a
real Jupyter server, started as a student starts it (in a folder with the students' nbgrader_config.py), validates
small notebooks through nbgrader's own handler and the endpoint answers about the last one.
"""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from course_utils import validate_button, validation

from kit import REPO
from kit.browser import start_server


def _notebook(check: str) -> nbformat.NotebookNode:
    """A student notebook: a cell to run, a test cell running ``check``, a written answer (graded by hand)."""
    def nbgrader(grade_id: str, **meta) -> dict:
        return {"nbgrader": {"grade_id": grade_id, "schema_version": 3, "locked": True, "solution": False,
                             "grade": False, **meta}}

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("x = 2", metadata=nbgrader("setup")),
        nbformat.v4.new_code_cell(check, metadata=nbgrader("sum_check", grade=True, points=1)),
        nbformat.v4.new_markdown_cell("Your answer", metadata=nbgrader("why_answer", grade=True, solution=True,
                                                                       locked=False, points=2)),
    ]
    return nb


@pytest.mark.slow
def test_the_server_serves_the_verdict_of_the_last_passing_validation(tmp_path):
    root = tmp_path / "course"
    (root / "lab").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((REPO / "notebooks" / "nbgrader_config.py").read_text())
    nbformat.write(_notebook("assert x + x == 4"), root / "lab" / "passing.ipynb")
    nbformat.write(_notebook("assert x + x == 5, 'not four'"), root / "lab" / "failing.ipynb")
    # The server extension is enabled here by the test's own config, so this test checks the endpoint even where
    # the kit's files are not installed (test_doctor and the browser tests check the installed ones).
    config = root / ".jupyter" / "config"
    config.mkdir(parents=True)
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {validate_button.MODULE: True}}}))
    server = start_server(root)
    try:
        route = validate_button.ROUTE
        assert server.call(route, token=False)[0] == 403, "the verdict must not be served without logging in"
        assert server.call(route) == (200, {"path": None, "verdict": None}), "before any validation: no verdict"

        status, reply = server.call("assignments/validate", "POST", {"path": "lab/passing.ipynb"}, timeout=120)
        assert status == 200 and reply["success"] and reply["value"] == {}, reply  # nbgrader's dialog: "Success!"
        status, answer = server.call(route)
        assert status == 200 and answer["path"] == "lab/passing.ipynb", answer
        assert answer["verdict"] == validation.verdict(root / "lab" / "passing.ipynb"), answer
        assert answer["verdict"].startswith(f"{validation.VERDICT_START}: all 1 test cells ran without an error")
        assert "why_answer" in answer["verdict"], answer  # the item only the grader checks (by hand)

        status, reply = server.call("assignments/validate", "POST", {"path": "lab/failing.ipynb"}, timeout=120)
        assert status == 200 and reply["success"] and reply["value"].get("failed"), reply
        assert server.call(route) == (200, {"path": None, "verdict": None}), "a failed validation leaves no verdict"
    finally:
        server.stop()


# --------------------------------------------------------------------------- installation

def _data_files() -> dict[str, Path]:
    """pyproject.toml's data files: where each one goes (relative to the environment) -> its source."""
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    return {f"{target}/{source.name}": source
            for target, patterns in table.items() for pattern in patterns for source in sorted(REPO.glob(pattern))}


def test_install_writes_what_the_wheel_carries(tmp_path):
    """``install`` (editable installs) and pyproject.toml's data files (wheels) put the same files in the same places."""
    written = validate_button.install(tmp_path)
    installed = {path.relative_to(tmp_path).as_posix(): path for path in tmp_path.rglob("*") if path.is_file()}
    assert sorted(installed) == sorted(_data_files()), "pyproject.toml's data files and validate_button.FILES differ"
    for target, source in _data_files().items():
        assert installed[target].read_bytes() == source.read_bytes(), target
    assert sorted(written) == sorted(tmp_path / target for target in validate_button.FILES)
    validate_button.install(tmp_path)  # again, over the first copy
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()) == \
        sorted(installed)


def test_the_lab_extension_loads_and_the_server_extension_is_enabled():
    """package.json names the file JupyterLab loads; that file registers the same name; the config enables the module."""
    folder = validate_button.FILES[f"share/jupyter/labextensions/{validate_button.LABEXTENSION}"]
    package = json.loads((folder / "package.json").read_text())
    assert package["name"] == validate_button.LABEXTENSION
    build = package["jupyterlab"]["_build"]
    script = (folder / build["load"]).read_text()
    assert build["extension"] == "./extension" and f"'{build['extension']}'" in script
    assert f"const NAME = '{validate_button.LABEXTENSION}';" in script
    assert f"const ROUTE = '{validate_button.ROUTE}';" in script
    config = json.loads(validate_button.FILES["etc/jupyter/jupyter_server_config.d/course_utils.json"].read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {validate_button.MODULE: True, "course_utils.kernels": True}}}
    assert validate_button._jupyter_server_extension_points() == [{"module": "course_utils.validate_button"}]


def test_the_server_extension_imports_without_torch():
    """The Jupyter server loads it at start and course_utils.validation at each request: neither may need torch."""
    import subprocess

    code = ("import sys; sys.modules['torch'] = None; import course_utils.validate_button as v; "
            "import course_utils.validation; v._handler(); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
