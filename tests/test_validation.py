"""Students' validation tells the truth: each cell gets its run mode's time, and a cut-off is named, never "Success".

The configuration is ``notebooks/nbgrader_config.py`` (loaded by the course folder's
``nbgrader_config.py``), which the Validate button's server extension and ``nbgrader validate``
read from the folder they start in; the logic is ``course_utils/validation.py``. The end-to-end
tests run real ``nbgrader validate`` on a finished lab 1 (the cheapest lab) in smoke and laptop mode, and
one cut short by the time limit in smoke mode.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograde.config import TIME_LIMITS
from course_utils import modes, validation

from kit import REPO, solved
from kit.browser import check_verdict, discover_labs

LAB = "lab1_mnist_mlp"
# A passing notebook's last line (course_utils.validation.verdict), in place of nbgrader's bare "Success!".
SUCCESS = validation.VERDICT_START
# The cell that trains lab 1's MLP, and the time per cell the cut-off test gives every cell.
TRAINING_CELL = "mlp_history = training.train("
ALLOWANCE_S = 40


# --------------------------------------------------------------------------- configuration

def test_each_mode_gives_a_cell_the_graders_time(monkeypatch):
    monkeypatch.delenv(modes.MODE_VAR, raising=False)  # "" below means: no COURSE_MODE at all
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the limits' own thread count
    for mode in modes.MODES:
        assert validation.time_limit(mode) == (TIME_LIMITS[mode][0], f"{mode} mode")
    assert validation.time_limit("")[0] == max(TIME_LIMITS["laptop"][0], TIME_LIMITS["full"][0])
    assert validation.time_limit("turbo")[0] == max(limit for limit, _ in TIME_LIMITS.values())


def test_a_kernel_with_one_thread_gets_twice_the_time(monkeypatch):
    """As the grader does for its hand-ins: the mode's limit is for two threads, and the report says so."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    limit, words = validation.time_limit("laptop")
    assert limit == 2 * TIME_LIMITS["laptop"][0]
    assert words == f"laptop mode with 1 CPU thread ({TIME_LIMITS['laptop'][0]} s with 2 or more)"


_READ_CONFIG = textwrap.dedent("""
    import json, os, sys
    from nbgrader.apps.validateapp import ValidateApp
    from nbgrader.preprocessors import Execute
    from nbgrader.server_extensions.validate_assignment.handlers import ValidateAssignmentHandler
    from nbgrader.validator import Validator
    out = {}
    for folder in sys.argv[1:]:
        os.chdir(folder)
        ValidateApp.clear_instance()
        app = ValidateApp()
        app.initialize(["x.ipynb"])
        cli = Execute(parent=Validator(parent=app))
        server = Execute(parent=Validator(config=ValidateAssignmentHandler.load_config(None)))
        other = Execute(parent=app)  # any other nbgrader step: never the students' settings
        out[folder] = [cli.timeout, server.timeout, other.timeout, cli.on_cell_error is not None,
                       server.on_cell_error is not None]
    print(json.dumps(out))
""")


def test_validate_reads_the_students_config_from_the_course_folder_and_from_notebooks(tmp_path):
    """``nbgrader validate`` and the Validate button's handler, started in either folder, give a cell its mode's time."""
    folders = [str(REPO), str(REPO / "notebooks")]
    env = {**os.environ, "COURSE_MODE": "smoke", "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
           "OMP_NUM_THREADS": "2"}  # the limits' own thread count (one thread doubles them)
    result = subprocess.run([sys.executable, "-c", _READ_CONFIG, *folders], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    for folder in folders:
        assert found[folder] == [300, 300, 30, True, True], f"started in {folder}: {found[folder]}"


def _run_hooks(report: validation.CutOffReport, cells: list[tuple[str, bool, bool]]) -> list[nbformat.NotebookNode]:
    """Call the hooks as nbclient does for cells (name, is a test cell, runs past its limit); return the cells.

    A cell past its limit gets nbgrader's CellTimeoutError output; a cell whose code was swapped
    for a ``raise`` gets the kernel's RuntimeError.
    """
    out = []
    for index, (name, grade, too_slow) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(f"{name}()")
        if grade:
            cell.metadata["nbgrader"] = {"grade": True, "grade_id": name, "points": 1, "schema_version": 3}
        report.on_cell_start(cell=cell, cell_index=index)
        report.on_cell_execute(cell=cell, cell_index=index)
        executed = cell.source
        report.on_cell_complete(cell=cell, cell_index=index)
        assert cell.source == f"{name}()", "the cell's own code is back before nbgrader computes checksums"
        ename = "CellTimeoutError" if too_slow else "RuntimeError" if executed.startswith("raise") else None
        if ename:
            cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue="", traceback=[ename])]
            report.on_cell_error(cell=cell, cell_index=index, execute_reply={"content": {"ename": ename}})
        out.append(cell)
    return out


def test_test_cells_after_a_cut_off_cell_fail_naming_it():
    report = validation.CutOffReport(300, "smoke mode")
    cells = _run_hooks(report, [("setup", False, False), ("check_a", True, False), ("train", False, True),
                                ("check_b", True, False), ("plot", False, False), ("check_c", True, False)])
    assert not cells[1].outputs, "a test before the cut-off keeps its result"
    [cut] = cells[2].outputs
    assert cut.ename == "CellTimeoutError" and "this cell was stopped after 0 s, the time limit per cell" in cut.evalue
    for index in (3, 5):
        [note] = cells[index].outputs
        assert note.ename == "CellTimeoutError"
        assert note.evalue.startswith("not checked: cell 2 above (`train()`) was stopped after 0 s, the time limit"), \
            note.evalue
        assert "notebooks/nbgrader_config.py gives each cell 300 s in smoke mode" in "\n".join(note.traceback)
        assert all(len(line) <= validation.WIDTH + 12 for line in "\n".join(note.traceback).splitlines())
    again = _run_hooks(report, [("check_a", True, False), ("check_b", True, False)])
    assert not any(cell.outputs for cell in again), "the next notebook starts afresh"
def test_the_verdict_says_what_only_the_grader_checks():
    """A pass is not a grade: the verdict names the items scored outside the kernel and the hand-graded answers."""
    words = validation.verdict(REPO / "notebooks" / LAB / f"{LAB}.ipynb")
    assert words.startswith(validation.VERDICT_START) and "not yet your grade" in words, words
    for item in ("logreg_accuracy", "mlp_accuracy", "representations_answer"):
        assert item in words, words
    assert "Success" not in words


@pytest.mark.parametrize("lab", discover_labs())
def test_every_labs_verdict_names_its_grader_only_items(lab):
    """Each lab's verdict (what its Validate dialog shows; the browser tests show the dialog for the first lab)
    names every item scored outside the kernel and every hand-graded answer of that lab: the browser tests'
    own check of the dialog's text, on the verdict itself."""
    notebook = REPO / "notebooks" / lab / f"{lab}.ipynb"
    assert validation._items(notebook)[1], f"{lab} has no item scored outside the kernel"
    check_verdict(notebook, lab, validation.verdict(notebook))


def test_the_report_wraps_long_messages_instead_of_cutting_them():
    from nbgrader.validator import Validator

    validation._install_verdict()
    message = "AssertionError: " + " ".join(f"word{i}" for i in range(60))
    wrapped = Validator()._indent(message)
    assert "word59" in wrapped and "..." not in wrapped
    assert all(len(line) <= Validator().width for line in wrapped.splitlines())


# --------------------------------------------------------------------------- nbgrader validate, end to end

def finished_lab(tmp_path: Path, slow_by: float | None = None) -> Path:
    """A students' folder: notebooks/nbgrader_config.py and lab 1 with the solutions pasted in.

    ``slow_by``: the MLP's training cell then sleeps that many seconds after training.
    """
    folder = tmp_path / "notebooks"
    (folder / LAB).mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "nbgrader_config.py", folder)
    release = nbformat.read(REPO / "notebooks" / LAB / f"{LAB}.ipynb", as_version=4)
    source = nbformat.read(REPO / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    nb = solved(release, source)
    if slow_by:
        [cell] = [c for c in nb.cells if c.cell_type == "code" and TRAINING_CELL in c.source]
        cell.source += f"\nimport time\ntime.sleep({slow_by})  # the test: slower than its allowance\n"
    nbformat.write(nb, folder / LAB / f"{LAB}.ipynb")
    return folder


def validate(folder: Path, mode: str, *options: str) -> str:
    """``nbgrader validate`` started in ``folder`` in ``mode``; its whole output."""
    env = {**os.environ, "COURSE_MODE": mode, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-m", "nbgrader", "validate", *options, f"{LAB}/{LAB}.ipynb"],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["smoke", "laptop"])
def test_a_finished_lab_validates_with_success(tmp_path, mode):
    output = validate(finished_lab(tmp_path), mode)
    assert SUCCESS in output and "Success!" not in output, output[-3000:]
    assert "recomputes the test accuracy" in " ".join(output.split()), output[-3000:]
    assert "CellTimeoutError" not in output


@pytest.mark.slow
def test_a_training_cell_cut_short_is_named_and_validation_does_not_succeed(tmp_path):
    """Smoke mode only: the cut-off comes from the command line's time limit, the same in every mode, and the
    test waits that long (the laptop-mode run above covers what changes with the mode)."""
    output = validate(finished_lab(tmp_path, slow_by=ALLOWANCE_S + 20), "smoke",
                      f"--Validator.Execute.timeout={ALLOWANCE_S}")
    assert SUCCESS not in output, "validation said Success although a training cell was cut short:\n" + output[-3000:]
    assert "VALIDATION FAILED" in output
    report = " ".join(output[output.index("VALIDATION FAILED"):].split())  # the report wraps its lines
    assert "CellTimeoutError: not checked: cell" in report, report[-3000:]
    assert "above (`training.seed_everything(SEED)`) was stopped after" in report, report[-3000:]
    assert "the time limit per cell, before it finished" in report
