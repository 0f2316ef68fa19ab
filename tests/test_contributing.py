"""CONTRIBUTING.md's checklists ("Adding a sixth lab", "Adding a third dataset"): the steps no other test covers.

Each test names the step that was missed. The other steps are checked where they happen:
tests/test_autograde_labs.py (a lab's grading, its release run to the first TODO, alternative solutions,
notebooks/ up to date), tests/test_data.py (every registered dataset decodes to its record).
"""
from __future__ import annotations

import re

import pytest

from course_utils import data, modes

from kit import REPO

LABS = sorted(p.parent.name for p in (REPO / "solutions").glob("*/*.ipynb") if p.stem == p.parent.name)
README = (REPO / "README.md").read_text()


def _rows(marker: str) -> list[str]:
    """The rows of the table right after ``<!-- @@MARKER@@ -->`` in the README (the marker stands above the table:
    GitHub ends a table at an HTML comment)."""
    rows = []
    for line in README.split(f"<!-- @@{marker}@@ -->", 1)[1].strip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_is_in_the_readme_and_contributing(lab):
    listed = [row for row in _rows("LAB-LIST") if row.startswith(f"| [{lab}](notebooks/{lab}/{lab}.ipynb) |")]
    assert listed, f"README.md: add a row for {lab} to the lab list (after <!-- @@LAB-LIST@@ -->)"
    for mode in modes.MODES:
        assert any(row.startswith(f"| {lab} | {mode} |") for row in _rows("RESULTS")), \
            f"README.md: add the {mode}-mode row of {lab} to Results (time and accuracies, measured)"
    ids = re.search(r"Lab ids:(.*?)\n\n", (REPO / "CONTRIBUTING.md").read_text(), re.S)
    assert ids and f"`{lab}`" in ids.group(1), f"CONTRIBUTING.md: add `{lab}` to the 'Lab ids' list"


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_is_in_the_readme(name):
    hint = data.DATASETS[name].mirror_hint
    [row] = [line for line in README.splitlines() if line.startswith(f"| `{modes.DATA_VAR}` |")]
    assert hint.rstrip("/") in row, f"README.md: name {hint} in the {modes.DATA_VAR} row of the settings table"


def test_the_grader_decodes_every_dataset_before_grading(tmp_path, monkeypatch):
    """Inside the sandbox the dataset cache is read-only: the grader decodes what the labs use beforehand."""
    from autograde import worker

    lab = "lab_every_dataset"
    (tmp_path / lab).mkdir()
    (tmp_path / lab / f"{lab}.ipynb").write_text(" ".join(f'data.load_splits("{name}")' for name in data.DATASETS))

    decoded = []
    monkeypatch.setattr(data, "load_arrays", lambda name, root=None: decoded.append(name))
    monkeypatch.setattr(worker, "_PREPARED", set())
    worker.prepare_data(tmp_path, [lab])
    missing = sorted(set(data.DATASETS) - set(decoded))
    assert not missing, (f"autograde/worker.py::prepare_data does not decode {missing} before grading: "
                         f"it should take the dataset names from course_utils.data.DATASETS")


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    """#16's promise: the README's settings table names every COURSE_* variable."""
    quoted = re.compile(r"[\"'](COURSE_[A-Z0-9_]+)[\"']")
    names = {name for folder in ("course_utils", "autograde", "benchmarks", "tests")
             for path in (REPO / folder).rglob("*.py") for name in quoted.findall(path.read_text())}
    names |= set(re.findall(r"\b(COURSE_[A-Z0-9_]+)\b", (REPO / ".ci" / "run").read_text()))
    assert {modes.MODE_VAR, modes.DATA_VAR} <= names
    rows = {line.split("`")[1] for line in README.splitlines() if line.startswith("| `COURSE_")}
    assert names <= rows, f"README.md: add rows to the settings table for {sorted(names - rows)}"
