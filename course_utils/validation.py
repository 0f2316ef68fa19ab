"""Students' validation that tells the truth: nbgrader's Validate button and ``nbgrader validate``.

nbgrader validates a notebook by running it from the top in a fresh kernel and
checking the test cells. Left alone, it gives every cell 30 seconds, interrupts
a cell that takes longer, and still reports "Success! Your notebook passes all
the tests." when the test cells after an interrupted training cell happen to
pass. :func:`configure` (called by ``notebooks/nbgrader_config.py``) changes
that, for validation only (the settings live under ``Validator``, so nbgrader's
other commands, grading included, never see them):

- every cell gets the time its run mode needs, :data:`course_utils.modes.CELL_TIME_LIMITS`
  (the grader's own limit per cell): 300 s in smoke mode, 2700 s in laptop mode,
  3600 s in full mode, twice that for a kernel with one CPU thread (:func:`time_limit`);
- a cell still running at that limit is interrupted and shows a
  ``CellTimeoutError`` that says after how long it was stopped;
- every test cell after a cut-off cell fails with an error naming that cell
  (the nearest before it), so the report lists the cut-off and does not say
  "Success" (see :class:`CutOffReport`);
- a notebook that passes gets :func:`verdict` as its last line instead of nbgrader's
  "Success! Your notebook passes all the tests.", which reads as full marks: it says that
  the visible checks passed and names what only the grader checks (the recomputed
  accuracies, the written answers). The JupyterLab button's dialog is drawn by nbgrader's
  own front end; every validation in the Jupyter server records its verdict
  (:func:`last_validation`), which :mod:`course_utils.validate_button` serves to the kit's
  small JupyterLab extension, which puts it in place of nbgrader's "Success!" paragraph;
- the report wraps long lines of an error message instead of cutting them at its width, so
  that a check's whole message (which names the likely mistake) reaches the student;
- the kernel talks over unix sockets (:mod:`course_utils.kernels`), so that it cannot die at its
  start for a TCP port another process took (a hub where a whole class validates at once).

``nbgrader validate --Validator.Execute.timeout=SECONDS NOTEBOOK`` sets another limit for one run.
"""
from __future__ import annotations

import json
import os
import re
import textwrap
import time
from pathlib import Path

from . import modes

TIMEOUT_ENAME = "CellTimeoutError"  # nbgrader's name for an interrupted cell; kept, so tools still recognise it
RED, RESET = "\x1b[0;31m", "\x1b[0m"
WIDTH = 80  # nbgrader validate indents error lines by 4 and cuts them at 87 characters
VERDICT_START = "Visible checks passed"  # the first words of a passing notebook's last line


def time_limit(mode: str | None = None) -> tuple[int, str]:
    """Seconds per cell for ``mode`` (default: ``COURSE_MODE``) and the mode in words.

    The limits are for a kernel with :data:`course_utils.modes.REFERENCE_THREADS` CPU threads; one with
    fewer (``OMP_NUM_THREADS=1``, or a 1-CPU container such as a hub's student server) gets
    proportionally more time, as the grader gives its hand-ins.
    """
    limit, words = _mode_limit(mode)
    threads = modes.cpu_threads()
    if (factor := modes.time_factor(threads)) > 1:
        return round(limit * factor), (f"{words} with {threads} CPU thread ({limit} s with "
                                       f"{modes.REFERENCE_THREADS} or more)")
    return limit, words


def _mode_limit(mode: str | None) -> tuple[int, str]:
    """The mode's own limit per cell, and the mode in words.

    Without ``COURSE_MODE`` the kernel picks ``full`` on a CUDA GPU and
    ``laptop`` otherwise; deciding which would mean importing torch in the
    Jupyter server, so the larger limit of the two applies. An invalid value
    stops every lab at its setup cell anyway; the largest limit applies.
    """
    value = (mode or os.environ.get(modes.MODE_VAR, "")).strip().lower()
    if value in modes.MODES:
        return modes.CELL_TIME_LIMITS[value], f"{value} mode"
    if not value:
        return max(modes.CELL_TIME_LIMITS["laptop"], modes.CELL_TIME_LIMITS["full"]), "laptop or full mode (by hardware)"
    return max(modes.CELL_TIME_LIMITS.values()), f"{modes.MODE_VAR}={value!r}"


def _first_line(source: str, width: int = 60) -> str:
    line = next((x.strip() for x in source.splitlines() if x.strip() and not x.strip().startswith("#")), "")
    return line if len(line) <= width else line[:width - 3] + "..."


def _is_grade(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def _error(evalue: str, hint: str = "") -> dict:
    """An error output; its traceback is wrapped, as ``nbgrader validate`` cuts lines at 90 characters."""
    text = textwrap.wrap(f"{TIMEOUT_ENAME}: {evalue}", WIDTH, break_on_hyphens=False)
    text[0] = text[0].replace(TIMEOUT_ENAME, f"{RED}{TIMEOUT_ENAME}{RESET}", 1)
    traceback = ["\n".join(text)] + (["\n".join(textwrap.wrap(hint, WIDTH, break_on_hyphens=False))] if hint else [])
    return {"output_type": "error", "ename": TIMEOUT_ENAME, "evalue": evalue, "traceback": traceback}


# State of the notebook being validated. nbgrader loads its config files several times (and
# nbclient re-applies the config), so one run's hooks may belong to different CutOffReport
# instances; they share this. A run starts at cell 0 (notebooks are validated one at a time).
_RUN: dict = {}


def _run() -> dict:
    if not _RUN:
        _RUN.update(cut=[], started={}, swapped={}, replaced=set())
    return _RUN


class CutOffReport:
    """nbclient's hooks (``Execute.on_cell_*``) that make a cut-off visible in the validation report.

    nbclient offers no hook after a cell that passes, and none at the end of a
    notebook run the way nbgrader runs it, so a test cell after a cut-off is
    made to fail instead of being checked: just before it runs, its code is
    swapped for a ``raise`` (and put back as soon as the kernel has it, so
    nbgrader's checksums still match); its error is then replaced by a note
    naming the cut-off cell. A cell cut short after the last test cell changes
    no test result (nor a grade) and is not reported.
    """

    def __init__(self, limit: int, mode: str):
        self.limit, self.mode = limit, mode

    def hint(self) -> str:
        return (f"notebooks/nbgrader_config.py gives each cell {self.limit} s in {self.mode}. Validate on a less "
                f"busy machine, or check quickly in smoke mode: COURSE_MODE=smoke")

    def on_cell_start(self, cell, cell_index, **kwargs) -> None:
        if cell_index == 0:
            _RUN.clear()

    def on_cell_execute(self, cell, cell_index, **kwargs) -> None:
        run = _run()
        run["started"][id(cell)] = time.monotonic()
        if run["cut"] and _is_grade(cell):
            run["swapped"][id(cell)] = cell["source"]
            cell["source"] = "raise RuntimeError('not checked: a cell above was stopped at its time limit')"

    def on_cell_complete(self, cell, cell_index, **kwargs) -> None:
        original = _run()["swapped"].pop(id(cell), None)
        if original is not None:
            cell["source"] = original
            _run()["replaced"].add(id(cell))

    def on_cell_error(self, cell, cell_index, execute_reply, **kwargs) -> None:
        run = _run()
        if id(cell) in run["replaced"]:
            run["replaced"].discard(id(cell))
            index, first_line, seconds = run["cut"][-1]
            evalue = (f"not checked: cell {index} above (`{first_line}`) was stopped after {seconds:.0f} s, the time "
                      f"limit per cell, before it finished, so this test would run on unfinished work")
            cell["outputs"] = [type(cell)(_error(evalue, self.hint()))]
            return
        if execute_reply.get("content", {}).get("ename") != TIMEOUT_ENAME:
            return
        seconds = time.monotonic() - run["started"].get(id(cell), time.monotonic())
        run["cut"].append((cell_index, _first_line(cell["source"]), seconds))
        evalue = f"this cell was stopped after {seconds:.0f} s, the time limit per cell, before it finished"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == TIMEOUT_ENAME:
                output.update(_error(evalue, self.hint()))


def _items(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(test cells, those that hand in a trained model for the grader to score, manually graded answers) by grade_id."""
    cells = json.loads(Path(path).read_text()).get("cells", [])
    tests, scored, manual = [], [], []
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            continue
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code" and not meta.get("solution"):
            tests.append(meta.get("grade_id", "?"))
            if re.search(r"\bgrading\.hand_in\(", source):
                scored.append(meta.get("grade_id", "?"))
        else:
            manual.append(meta.get("grade_id", "?"))
    return tests, scored, manual


def verdict(path: str | Path) -> str:
    """What a passing validation of the notebook at ``path`` means, in one paragraph.

    Every test cell ran without an error; that is not the grade: the grader also runs each item's
    hidden checks, recomputes the accuracy of the trained models against the thresholds the notebook
    states, and grades the written answers by hand.
    """
    try:
        tests, scored, manual = _items(path)
    except (OSError, ValueError):
        tests, scored, manual = [], [], []
    text = (f"{VERDICT_START}: all {len(tests)} test cells ran without an error. This is not yet your grade. "
            f"Only the grader runs the hidden checks of each item")
    if scored:
        text += (f", recomputes the test accuracy of your trained models against the thresholds stated at the top "
                 f"of the notebook ({', '.join(scored)})")
    if manual:
        text += f", and grades your written answers by hand ({', '.join(manual)})"
    return text + "."


# The most recent validation in this process (the Jupyter server's, for the Validate button):
# its notebook and, when it passed, its verdict. Validations run one at a time (nbgrader's handler
# runs them on the server's event loop), so one record is enough.
_LAST: dict = {}


def last_validation() -> dict:
    """``{"path": notebook, "verdict": text or None}`` of this process's most recent validation; ``{}`` before any.

    ``verdict`` is :func:`verdict` when the notebook passed (nbgrader's "Success!" case) and
    ``None`` when it failed, had changed cells, or the validation itself raised.
    """
    return dict(_LAST)


def _install_verdict() -> None:
    """Make each validation record its verdict, and ``nbgrader validate`` end a passing report with it (once)."""
    try:
        from nbgrader.validator import Validator, strip_ansi
    except ImportError:  # outside nbgrader nothing prints a verdict
        return
    if getattr(Validator, "_course_verdict", False):
        return
    validate, print_num_failed = Validator.validate, Validator._print_num_failed

    def validate_and_record(self, filename):
        # nbgrader's Validate button (its server handler) and `nbgrader validate` both come here
        _LAST.clear()  # a validation that raises leaves no verdict of an earlier one behind
        self._course_notebook = filename
        results = validate(self, filename)
        passed = not results and not self.invert  # what nbgrader's dialog shows as "Success!"
        _LAST.update(path=os.path.abspath(filename), verdict=verdict(filename) if passed else None)
        return results

    def print_verdict(self, num_failed):
        if num_failed or not getattr(self, "_course_notebook", None):
            return print_num_failed(self, num_failed)
        self.stream.write(textwrap.fill(verdict(self._course_notebook), width=self.width) + "\n")

    def indent_wrapped(self, val: str) -> str:
        # nbgrader cuts every line of the report at its width; wrap instead, so that long messages stay whole
        lines = []
        for line in strip_ansi(val).split("\n"):
            lines += textwrap.wrap(line, self.width - 3, initial_indent=self.indent, subsequent_indent=self.indent + "  ",
                                   break_on_hyphens=False) or [self.indent]
        return "\n".join(line.rstrip() for line in lines)

    Validator.validate, Validator._print_num_failed = validate_and_record, print_verdict
    Validator._indent = indent_wrapped
    Validator._course_verdict = True


def configure(c, mode: str | None = None) -> None:
    """Set nbgrader's validation (``c.Validator.Execute``) for ``mode`` (default: ``COURSE_MODE``)."""
    limit, words = time_limit(mode)
    report = CutOffReport(limit, words)
    execute = c.Validator.Execute
    execute.timeout = limit
    # Unix sockets, not TCP ports another process can take while the kernel starts (course_utils/kernels.py).
    execute.kernel_manager_class = "course_utils.kernels.AsyncSocketKernelManager"
    execute.interrupt_on_timeout = True
    execute.error_on_timeout = {key: value for key, value in _error("this cell did not finish within the time limit "
                                                                    "per cell").items() if key != "output_type"}
    # After an interrupt, wait this long for the cell's last output (nbclient's 4 s is short on a busy CPU).
    execute.iopub_timeout = 20
    execute.on_cell_start = report.on_cell_start
    execute.on_cell_execute = report.on_cell_execute
    execute.on_cell_complete = report.on_cell_complete
    execute.on_cell_error = report.on_cell_error
    _install_verdict()
