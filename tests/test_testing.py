"""The test kit (tests/kit/): filling released notebooks by grade_id, the attack cells."""
from __future__ import annotations

import nbformat
import pytest

import kit




def _cell(source, **meta):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **meta}
    return cell


def _notebooks():
    source = nbformat.v4.new_notebook()
    source.cells = [
        _cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", grade_id="f",
              solution=True, grade=False, locked=False),
        _cell("assert f(2) == 4", grade_id="test_f", solution=False, grade=True, locked=True, points=1),
    ]
    release = nbformat.from_dict(nbformat.reads(nbformat.writes(source), as_version=4))
    release.cells[0].source = "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    return source, release


def test_solved_puts_the_solution_back_without_markers():
    source, release = _notebooks()
    filled = kit.solved(release, source)
    assert filled.cells[0].source == "def f(x):\n    return 2 * x"
    assert filled.cells[1].source == "assert f(2) == 4"
    assert "NotImplementedError" in release.cells[0].source  # the original is untouched
    namespace = {}
    exec(filled.cells[0].source + "\n" + filled.cells[1].source, namespace)


def test_alternative_fixture_blocks(tmp_path):
    path = tmp_path / "alternative.py"
    path.write_text("# %% grade_id: f\nf = lambda x: x + x\n\n# %% grade_id: g\nimport math\n")
    code = kit.load_alternative(path)
    assert code == {"f": "f = lambda x: x + x\n", "g": "import math\n"}
    _, release = _notebooks()
    with pytest.raises(KeyError, match="'g'"):
        kit.fill(release, code)
    assert kit.fill(release, {"f": code["f"]}).cells[0].source == code["f"]
    (tmp_path / "empty.py").write_text("print('no blocks')\n")
    with pytest.raises(ValueError, match="grade_id"):
        kit.load_alternative(tmp_path / "empty.py")


def test_attack_cells_are_files_filled_by_name():
    """Every attack under tests/fixtures/attacks/ is valid Python once its $names are given; a missing one is named."""
    names = sorted(p.stem for p in kit.ATTACKS.glob("*.py"))
    assert {"grader_patch", "vandal", "snoop", "memory_hog", "process_bomb", "output_flood"} <= set(names)
    values = {"root": "/course", "submitted": "/course/submitted", "config_dir": "/course/autograde",
              "places": repr(["/etc/shadow"]), "token_var": "TOKEN"}
    for name in names:
        code = kit.attack(name, **values)
        compile(code, name, "exec")
        assert "$" not in code, name
    assert '"/course/submitted" + "/*/*/*.ipynb"' in kit.attack("vandal", **values)
    with pytest.raises(KeyError, match="submitted"):
        kit.attack("vandal", root="/course")


def test_a_zeromq_context_a_test_leaves_open_is_closed_when_it_ends(tmp_path):
    """The kit's pytest_runtest_call closes what a test body's kernel managers left: the next test finds the
    context and its socket closed; a context made by a fixture stays open for the tests that share it."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_left.py").write_text(
        "import pytest, zmq\n"
        "left = {}\n"
        "@pytest.fixture(scope='module')\n"
        "def shared():\n"
        "    return zmq.Context()\n"
        "def test_leaves_one(shared):\n"
        "    left['context'] = zmq.Context()\n"
        "    left['socket'] = left['context'].socket(zmq.PUSH)\n"
        "    left['socket'].connect('ipc:///nonexistent/peer')\n"
        "    left['socket'].send(b'queued for a peer that never comes', zmq.NOBLOCK)\n"
        "def test_finds_it_closed(shared):\n"
        "    assert left['context'].closed and left['socket'].closed\n"
        "    assert not shared.closed\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(kit.REPO / "tests"), str(kit.REPO)])}
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "kit.plugin", "-p", "no:cacheprovider", "-q",
                          "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_left.py")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr
