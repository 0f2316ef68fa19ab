"""nbgrader's Execute step, hardened for grading untrusted notebooks.

- **A dead kernel keeps earlier points.** When the kernel dies (``os._exit``, a
  crash, a memory or process limit), the cell it died in and every later code
  cell get an error output instead of the whole notebook failing, so nbgrader
  still saves the grades of the tests that passed before.
- **Outputs within bounds.** What one cell shows (text, figures) is kept up to
  :attr:`GradingExecute.cell_output_limit` bytes, the whole notebook's up to
  :attr:`GradingExecute.notebook_output_limit`; past that it is dropped, with one
  line that says so, so a hand-in that prints without end makes neither a huge
  graded notebook and feedback page nor a full disk.
- **What happened, recorded.** Every cell timeout, and a cell that still runs after its interrupt
  (nbgrader then gives up on the notebook), is written to :attr:`GradingExecute.events_path` (JSON
  lines; :func:`read_events`), so the worker knows why without reading nbgrader's log.
- **Every test runs.** A graded cell never skips, whatever tags the hand-in gave it
  (``skip_cells_with_tag`` applies to the instructor's other cells).
- **An integrity probe after every test cell.** :mod:`course_utils.integrity`
  is loaded afresh from disk in the kernel; if it finds the grading helpers,
  torch or IPython's result reporting rebound, the test cell gets an error
  output (``GradingIntegrityError``) and scores zero.
"""
from __future__ import annotations

import ast
import asyncio
import json
import secrets
import time
from pathlib import Path
from queue import Empty

import course_utils
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute
from traitlets import Bool, Float, Integer, Unicode

INTEGRITY_FILE = Path(course_utils.__file__).resolve().parent / "integrity.py"
KERNEL_DIED = "KernelDied"
INTEGRITY_ERROR = "GradingIntegrityError"
OUTPUT_CUT = "... output cut by the grader: this {what} showed more than {limit} bytes; the rest is not kept"


def error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def read_events(path: Path) -> list[dict]:
    """The events a grading run recorded in ``path`` (none when it has no file; unreadable lines are skipped)."""
    events = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def ignored_interrupt(events: list[dict]) -> str | None:
    """The cell that went on running after its interrupt (it ignores interrupts or hangs), if any."""
    return next((str(e.get("cell", "a cell")) for e in events if e.get("event") == "stuck"), None)


def timed_out(events: list[dict]) -> list[str]:
    """The cells stopped at the time limit per cell (interrupted; the notebook went on after them)."""
    return [str(e.get("cell", "a cell")) for e in events if e.get("event") == "timeout"]


def _where(cell: NotebookNode, index: int) -> str:
    gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" ({gid})" if gid else "")


class GradingExecute(Execute):
    """Execute that survives a dying kernel and checks the kernel after each graded test cell."""

    probe = Bool(True, help="run the integrity probe after every graded test cell").tag(config=True)
    probe_timeout = Float(60.0, help="seconds to wait for the probe's answer").tag(config=True)
    cell_output_limit = Integer(2 << 20, help="bytes of output kept per cell (text and figures)").tag(config=True)
    notebook_output_limit = Integer(20 << 20, help="bytes of output kept for the whole notebook").tag(config=True)
    events_path = Unicode("", help="JSON-lines file for what the grader did (cell timeouts and interrupts); "
                                   "empty: not recorded").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._died_in: str | None = None
        self._output_bytes: dict[int, int] = {}
        self._cut: set[int] = set()
        for cell in nb.cells:
            # nbgrader restores a test cell's source, not its tags: a student's skip tag must not skip a test.
            tags = cell.get("metadata", {}).get("tags", [])
            if utils.is_grade(cell) and self.skip_cells_with_tag in tags:
                cell.metadata["tags"] = [t for t in tags if t != self.skip_cells_with_tag]
        return super().preprocess(nb, resources, km)

    def _record(self, **event) -> None:
        if self.events_path:
            with open(self.events_path, "a") as out:
                out.write(json.dumps(event) + "\n")

    async def _async_handle_timeout(self, timeout, cell=None):
        """Record a cell's timeout, then let nbclient interrupt it."""
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") if cell is not None else None
        self._record(event="timeout", cell=gid or "a cell", seconds=timeout)
        return await super()._async_handle_timeout(timeout, cell)

    def output(self, outs, msg, display_id, cell_index):
        """Keep an output only while the cell and the notebook are within their output limits."""
        content = msg.get("content", {})
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
        size += sum(len(line) for line in content.get("traceback", []))
        cell_bytes = self._output_bytes.get(cell_index, 0) + size
        total = sum(self._output_bytes.values()) + size
        if cell_bytes <= self.cell_output_limit and total <= self.notebook_output_limit:
            self._output_bytes[cell_index] = cell_bytes
            return super().output(outs, msg, display_id, cell_index)
        if msg.get("msg_type") == "error":  # the cell's error is what a student must see: keep its message
            out = error_output(content.get("ename", "Error"), str(content.get("evalue", ""))[:2000])
            outs.append(out)
            return out
        if cell_index not in self._cut:
            self._cut.add(cell_index)
            what, limit = (("cell", self.cell_output_limit) if cell_bytes > self.cell_output_limit
                           else ("notebook", self.notebook_output_limit))
            outs.append(NotebookNode(output_type="stream", name="stderr",
                                     text=OUTPUT_CUT.format(what=what, limit=limit) + "\n"))
        return None

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        runs = cell.cell_type == "code" and cell.source.strip()
        if getattr(self, "_died_in", None) is not None:
            if runs:
                cell.outputs = [error_output(KERNEL_DIED, f"not run: the kernel died in {self._died_in}")]
            return cell
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except CellTimeoutError:  # no end of the cell after its interrupt: nbgrader stops here
            self._record(event="stuck", cell=_where(cell, cell_index))
            raise
        except DeadKernelError:
            self._died_in = _where(cell, cell_index)
            cell.setdefault("outputs", []).append(error_output(
                KERNEL_DIED, "the kernel died while this cell ran (it exited, crashed, or went over a grading "
                             "limit); the cells after it were not run"))
            self.log.warning("kernel died in %s", self._died_in)
            return cell
        if runs and self.probe and utils.is_grade(cell) and not utils.is_solution(cell):
            problems = await self._integrity_problems()
            if problems:
                cell.outputs.append(error_output(
                    INTEGRITY_ERROR, "this test cannot be trusted and scores 0, because code in the notebook "
                                     "altered what the tests rely on: " + "; ".join(problems[:6])))
        return cell

    execute_cell = run_sync(async_execute_cell)  # nbconvert calls the synchronous name

    async def _integrity_problems(self) -> list[str]:
        """Run the probe in the kernel; what it found, or why it could not answer."""
        nonce = secrets.token_hex(8)
        expr = f"__import__('runpy').run_path({str(INTEGRITY_FILE)!r})['report']({nonce!r})"
        msg_id = await ensure_async(self.kc.execute("", silent=True, store_history=False,
                                                    user_expressions={"probe": expr}))
        deadline = time.monotonic() + self.probe_timeout
        while time.monotonic() < deadline:
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=1))
            except (Empty, asyncio.TimeoutError):
                if not await ensure_async(self.km.is_alive()):
                    return []  # the next cell reports the dead kernel
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            answer = msg["content"].get("user_expressions", {}).get("probe", {})
            if answer.get("status") != "ok":
                return [f"the integrity probe failed in the kernel ({answer.get('ename')}: {answer.get('evalue')})"]
            try:
                text = ast.literal_eval(answer["data"]["text/plain"])
                if not text.startswith(nonce):
                    raise ValueError("no nonce")
                return list(json.loads(text[len(nonce):]))
            except (ValueError, KeyError, SyntaxError, TypeError):
                return ["the integrity probe's answer was altered in the kernel"]
        return [f"the kernel did not answer the integrity probe within {self.probe_timeout:.0f} s"]
