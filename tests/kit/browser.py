"""JupyterLab in headless Chromium, for the browser tests: a server over a scratch course, a notebook page.

Chromium comes from the system package (``apt-get install chromium``), driven by Playwright for
Python (its own browser download cannot work offline); ``launch`` starts it, and the ``browser``
fixture of :mod:`kit.plugin` uses it. Screenshots land in ``build/screenshots/``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nbformat
import pytest

from course_utils import modes, validation
from kit import REPO, solved

SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Time limits per step, in seconds (smoke mode on a busy 2-core CPU).
SERVER_START_S = 120
OPEN_S = 90           # the page renders the notebook and its kernel reports Idle
RUN_BLANK_S = 180     # Run All on the blank notebook (stops at the first TODO)
RUN_FINISHED_S = 300  # Run All on the finished notebook
VALIDATE_S = 300      # nbgrader's Validate re-executes the whole notebook (each cell: notebooks/nbgrader_config.py)
VERDICT_S = 30        # the kit's verdict replaces the success dialog's text (course_utils/validate_button.py)
NBGRADER_SUCCESS = "Success! Your notebook passes all the tests."  # nbgrader's own text, which the verdict replaces


# --------------------------------------------------------------------------- discovery

def discover_labs(repo: Path | None = None) -> list[str]:
    """Lab ids that have a student notebook ``notebooks/<lab>/<lab>.ipynb``, sorted."""
    repo = repo or REPO
    return sorted(p.parent.name for p in (repo / "notebooks").glob("*/*.ipynb") if p.stem == p.parent.name)


# --------------------------------------------------------------------------- server

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@dataclass
class LabServer:
    """A running ``jupyter lab`` serving ``root`` on localhost."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, ui: str = "lab") -> str:
        """The page for ``path`` (relative to root): JupyterLab's, with a fresh workspace, or with
        ``ui="notebook"`` Notebook 7's (what ``jupyter notebook`` opens)."""
        if ui == "notebook":
            return f"{self.base}/notebooks/{path}?token={self.token}"
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        """The server's REST API (``api/<path>``, through :meth:`call`): its JSON answer; an error status raises."""
        status, answer = self.call(f"api/{path}", method)
        if status >= 400:
            raise urllib.error.HTTPError(f"{self.base}/api/{path}", status, str(answer)[:300], None, None)
        return answer

    def call(self, path: str, method: str = "GET", body: dict | None = None, token: bool = True,
             timeout: float = 10) -> tuple[int, object]:
        """``path`` under the server's root URL, as a front end calls it: the HTTP status and the JSON answer."""
        headers = {"Authorization": f"token {self.token}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status, answer = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
        try:
            return status, json.loads(answer) if answer else None
        except ValueError:
            return status, answer.decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def shutdown_kernels(self) -> None:
        """Shut down every session's kernel (between notebooks, so they do not pile up)."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # jupyter shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(root: Path, timeout: float = SERVER_START_S) -> LabServer:
    """Start ``jupyter lab`` in ``root`` (smoke mode, COURSE_DATA_DIR passed through) and wait until it answers."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # kernels must keep matplotlib's inline backend
    env.pop(modes.BATCHES_VAR, None)  # the whole smoke run: lab 5's visible check needs its trained accuracy
    env.update(
        COURSE_MODE="smoke",
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        JUPYTER_CONFIG_DIR=str(root / ".jupyter" / "config"),  # no user config leaks in
        JUPYTER_RUNTIME_DIR=str(root / ".jupyter" / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(root / ".jupyter" / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(root / ".jupyter" / "workspaces"),
    )
    settings = root / ".jupyter" / "lab-settings"
    # Render every cell (no virtual scrolling), so the page holds all outputs; no news pop-ups.
    _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                {"checkForUpdates": False, "fetchNews": "false"})
    # Validate's time per cell comes from the students' nbgrader_config.py in root (smoke mode: 300 s).
    log = root / ".jupyter" / "server.log"
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",  # lets the test read cell outputs from the notebook model
    ]
    with open(log, "w") as fh:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    server = LabServer(root, port, token, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {process.returncode} before answering:\n"
                               f"{server.log_tail()}")
        try:
            server.api("status")
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"jupyter lab did not answer on port {port} within {timeout:.0f} s:\n"
                               f"{server.log_tail()}")
        time.sleep(0.5)


def scratch_copy(scratch: Path, repo: Path | None = None) -> Path:
    """Copy the student notebooks (with their ``nbgrader_config.py``) into ``scratch/notebooks``; return ``scratch``.

    The server starts in ``scratch`` as a student starts it in the course folder;
    nbgrader's Validate reads ``nbgrader_config.py`` from there, which loads
    ``notebooks/nbgrader_config.py``, so both come along.
    """
    repo = repo or REPO
    shutil.copytree(repo / "notebooks", scratch / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    if (repo / "nbgrader_config.py").is_file():
        shutil.copy(repo / "nbgrader_config.py", scratch / "nbgrader_config.py")
    return scratch


def write_finished(root: Path, lab: str, repo: Path | None = None) -> str:
    """Write the student notebook with the solutions pasted in as ``finished/<lab>/<lab>.ipynb``; return that path."""
    repo = repo or REPO
    source_path = repo / "solutions" / lab / f"{lab}.ipynb"
    assert source_path.is_file(), f"{lab}: notebooks/{lab}/ has no source notebook {source_path} to take solutions from"
    release = nbformat.read(repo / "notebooks" / lab / f"{lab}.ipynb", as_version=4)
    source = nbformat.read(source_path, as_version=4)
    relative = f"finished/{lab}/{lab}.ipynb"
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(solved(release, source), root / relative)
    return relative


# --------------------------------------------------------------------------- the browser

@contextmanager
def launch() -> Iterator:
    """Headless Chromium from the system package, driven by Playwright; skips (fails with
    COURSE_BROWSER_REQUIRED) without it. Closed on leaving the block."""
    if not CHROMIUM.is_file():
        message = (f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
                   f"(or set COURSE_CHROMIUM to its path)")
        if os.environ.get("COURSE_BROWSER_REQUIRED"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


# --------------------------------------------------------------------------- the page

@contextmanager
def step(what: str, seconds: float) -> Iterator[float]:
    """Run one browser step; a Playwright time-out becomes a failure naming the step and its limit."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        yield seconds * 1000
        return
    except PlaywrightTimeout as exc:
        first_line = str(exc).splitlines()[0]
    pytest.fail(f"{what}: gave up after {seconds:.0f} s ({first_line})", pytrace=False)


# Reads the open notebook from JupyterLab's model: one entry per cell.
_CELLS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const result = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    const entry = {index: i, type: cell.type, nbgrader: cell.getMetadata('nbgrader') || {},
                   count: cell.type === 'code' ? cell.executionCount : null, outputs: []};
    if (cell.type === 'code') {
      for (let j = 0; j < cell.outputs.length; j++) {
        const out = cell.outputs.get(j).toJSON();
        const data = out.data || {};
        entry.outputs.push({type: out.output_type, ename: out.ename || null, evalue: out.evalue || null,
                            mimes: Object.keys(data), plain: String(data['text/plain'] || '').slice(0, 200)});
      }
    }
    result.push(entry);
  }
  return result;
}"""

_BUSY_PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt'))
  .filter(p => p.textContent.includes('*')).length"""

RENDERED_IMAGES_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="image/png"] img'))
  .filter(img => img.complete && img.naturalWidth > 0).length"""


class NotebookPage:
    """A JupyterLab page showing one notebook, with the actions a student takes."""

    def __init__(self, page, server: LabServer):
        self.page = page
        self.server = server
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = round(time.monotonic() - start, 1)

    def open(self, path: str, ui: str = "lab") -> None:
        """Open ``path`` in JupyterLab (or ``ui="notebook"``: Notebook 7); wait until its cells render and its
        kernel reports Idle (in JupyterLab's status bar, in Notebook 7's toolbar)."""
        start = time.monotonic()
        where = "JupyterLab" if ui == "lab" else "Notebook 7"
        with step(f"open {path} in {where} (cells render)", OPEN_S) as ms:
            self.page.goto(self.server.url(path, ui), timeout=ms)
            self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=ms)
        with step(f"kernel of {path} starts ({where} shows Idle)", OPEN_S) as ms:
            if ui == "lab":
                self.page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=ms)
            else:  # the toolbar's kernel indicator: a circle, with its state in text for screen readers
                self.page.locator(".jp-NotebookPanel-toolbar").get_by_text("Kernel status: Idle").wait_for(
                    state="attached", timeout=ms)
        self._timed("open", start)

    def run_all(self, seconds: float) -> None:
        """Run > Run All Cells, then wait until no cell is queued or running and the kernel is Idle."""
        start = time.monotonic()
        with step("Run > Run All Cells", 30) as ms:
            self.page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click(timeout=ms)
            self.page.locator(".lm-Menu-content").get_by_text("Run All Cells", exact=True).click(timeout=ms)
        with step("Run All finishes", seconds) as ms:
            # Cells show [*] while queued or running; wait for them to start, then for all to finish.
            self.page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt'))"
                ".some(p => /\\[[*0-9]+\\]/.test(p.textContent))", timeout=ms)
            self.page.wait_for_function(f"() => ({_BUSY_PROMPTS_JS})() === 0", timeout=ms, polling=250)
            self.page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=ms)
        self._timed("run_all", start)

    def cells(self) -> list[dict]:
        """The notebook's cells as JupyterLab holds them (type, nbgrader metadata, count, outputs)."""
        return self.page.evaluate(_CELLS_JS)

    def rendered_images(self) -> int:
        """How many PNG outputs the page shows as decoded images."""
        return self.page.evaluate(RENDERED_IMAGES_JS)

    def validate(self, seconds: float = VALIDATE_S) -> tuple[str, str]:
        """Press nbgrader's Validate button in the notebook's toolbar; return :func:`validation_result`."""
        start = time.monotonic()
        with step("press Validate (nbgrader toolbar button)", 30) as ms:
            self.page.locator(".jp-NotebookPanel-toolbar .validate-button").first.click(timeout=ms)
        result = validation_result(self.page, seconds)
        self._timed("validate", start)
        return result

    def close_dialog(self) -> None:
        close_dialog(self.page)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


# --------------------------------------------------------------------------- checks

def validation_result(page, seconds: float = VALIDATE_S) -> tuple[str, str]:
    """Wait for the dialog of a Validate just pressed (toolbar or Assignment List); return its kind and text.

    The kind is ``success``, ``failed``, ``changed`` or ``type-changed``
    (nbgrader's ``validation-*`` classes), or ``error`` when the validate
    command itself failed. A success dialog's text is read once the kit's JupyterLab
    extension has put its verdict there (or given up: ``data-course-verdict`` is then
    ``none``), or after ``VERDICT_S`` seconds without it.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with step("Validate reports a result", seconds) as ms:
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_text("Validation Results").or_(dialog.get_by_text("Validation failed")).first.wait_for(
            timeout=ms)
    message = dialog.locator("#validation-message")
    if not message.count():
        return "error", dialog.inner_text()
    classes = message.get_attribute("class") or ""
    kind = next((c.removeprefix("validation-") for c in classes.split() if c.startswith("validation-")), "error")
    if kind == "success":
        try:
            dialog.locator("#validation-message[data-course-verdict]:not([data-course-verdict='pending'])"
                           ).wait_for(timeout=VERDICT_S * 1000)
        except PlaywrightTimeout:
            pass  # no verdict came: the caller sees nbgrader's own text
    return kind, message.inner_text()


def close_dialog(page) -> None:
    """Press the open dialog's OK button and wait until it is gone."""
    with step("close the dialog", 15) as ms:
        page.locator(".jp-Dialog button.jp-mod-accept").first.click(timeout=ms)
        page.locator(".jp-Dialog").wait_for(state="detached", timeout=ms)


def check_verdict(notebook: Path, lab: str, text: str) -> None:
    """Validate's success dialog shows the kit's verdict for ``notebook`` (course_utils/validate_button.py),
    naming the items only the grader checks, instead of nbgrader's "Success!" text."""
    shown = " ".join(text.split())
    assert NBGRADER_SUCCESS not in shown and shown.startswith(validation.VERDICT_START), (
        f"{lab}: Validate's success dialog should show the kit's verdict (is the course-kit-validate JupyterLab "
        f"extension installed? `python -m course_utils doctor`), it shows:\n{excerpt(text)}")
    _, scored, manual = validation._items(notebook)
    missing = [item for item in scored + manual if item not in shown]
    assert scored + manual and not missing, f"{lab}: the verdict does not name grader-only items {missing}:\n{shown}"
    assert shown == validation.verdict(notebook), f"{lab}: the dialog's verdict is not this notebook's:\n{shown}"


def excerpt(text: str, head: int = 600, tail: int = 1400) -> str:
    """The start and the end of a long report (a traceback's last lines say what went wrong)."""
    return text if len(text) <= head + tail else f"{text[:head]}\n[...]\n{text[-tail:]}"


def describe_output(cell: dict, output: dict) -> str:
    return f"cell {cell['index']} ({cell['nbgrader'].get('grade_id', 'no grade_id')}): {output['ename']}: " \
           f"{(output['evalue'] or '')[:200]}"


def errors_in(cells: list[dict]) -> list[str]:
    """One line per error output in ``cells``."""
    return [describe_output(c, o) for c in cells for o in c["outputs"] if o["type"] == "error"]


def first_todo(cells: list[dict]) -> int:
    """Index of the first code cell a student fills in (nbgrader solution cell)."""
    for cell in cells:
        if cell["type"] == "code" and cell["nbgrader"].get("solution"):
            return cell["index"]
    raise AssertionError("the notebook has no TODO code cell (nbgrader solution cell)")


