"""autograde.testing: filling released notebooks by grade_id."""
from __future__ import annotations

import nbformat
import pytest

from autograde import testing


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
    filled = testing.solved(release, source)
    assert filled.cells[0].source == "def f(x):\n    return 2 * x"
    assert filled.cells[1].source == "assert f(2) == 4"
    assert "NotImplementedError" in release.cells[0].source  # the original is untouched
    namespace = {}
    exec(filled.cells[0].source + "\n" + filled.cells[1].source, namespace)


def test_alternative_fixture_blocks(tmp_path):
    path = tmp_path / "alternative.py"
    path.write_text("# %% grade_id: f\nf = lambda x: x + x\n\n# %% grade_id: g\nimport math\n")
    code = testing.load_alternative(path)
    assert code == {"f": "f = lambda x: x + x\n", "g": "import math\n"}
    _, release = _notebooks()
    with pytest.raises(KeyError, match="'g'"):
        testing.fill(release, code)
    assert testing.fill(release, {"f": code["f"]}).cells[0].source == code["f"]
    (tmp_path / "empty.py").write_text("print('no blocks')\n")
    with pytest.raises(ValueError, match="grade_id"):
        testing.load_alternative(tmp_path / "empty.py")
