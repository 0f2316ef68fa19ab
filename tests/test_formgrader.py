"""Manual grading in nbgrader's formgrader, driven in headless Chromium, ends up in the export.

A throwaway course with the toy lab and its written answer (a markdown cell graded by hand); one
hand-in is graded automatically (``python -m autograde autograde``), then ``jupyter server`` with
nbgrader's formgrader extension is started on 127.0.0.1 in the course's autograde/ folder (where its
nbgrader_config.py is, so the formgrader sees this course's gradebook), the submission's manual
grading page is opened, a score is typed for the written answer and saved, and ``python -m autograde
export`` then holds that score in the student's total. Chromium comes from the system package
(``apt-get install chromium``; COURSE_CHROMIUM names another), driven by Playwright for Python; without
it the test is skipped (failed with COURSE_BROWSER_REQUIRED=1). Screenshots go to
``build/screenshots/formgrader-*.png``. The server is stopped by the test, also when it fails.
"""
from __future__ import annotations

import csv
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import nbformat
from nbgrader.api import Gradebook

import autograde

import kit
from kit.browser import CHROMIUM, launch

LAB = kit.TOY_LAB
SCREENSHOTS = kit.REPO / "build" / "screenshots"
SERVER_START_S = 60
OTHER_EXTENSIONS = ("jupyterlab", "notebook", "notebook_shim", "jupyter_lsp", "jupyter_server_terminals",
                    "nbgrader.server_extensions.assignment_list", "nbgrader.server_extensions.course_list",
                    "nbgrader.server_extensions.validate_assignment")  # off: a faster start
STEP_MS = 20_000
pytestmark = pytest.mark.slow


def run_cli(course: autograde.Course, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograde", "--course", str(course.root), *args],
                          capture_output=True, text=True, env=autograde.tool_env(), timeout=300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def formgrader(course: autograde.Course, work: Path) -> Iterator[tuple[str, str]]:
    """``jupyter server`` with the formgrader on 127.0.0.1 for ``course``; yields (base url, token), then stops it."""
    port, token = _free_port(), secrets.token_hex(16)
    config = work / "jupyter-config"
    config.mkdir(parents=True)
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {**{name: False for name in OTHER_EXTENSIONS},
                                               "nbgrader.server_extensions.formgrader": True}}}))
    env = autograde.tool_env(JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(work / "jupyter-runtime"))
    log = work / "server.log"
    command = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--ServerApp.root_dir={course.root}", f"--IdentityProvider.token={token}"]
    with open(log, "w") as out:  # cwd: nbgrader_config.py of the course (CourseDirectory.root is the course)
        process = subprocess.Popen(command, cwd=course.config_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert process.poll() is None, f"jupyter server exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, f"jupyter server did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.3)
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def manual_score(course: autograde.Course, student: str) -> float | None:
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        return gb.find_grade("written", LAB, LAB, student).manual_score


def grade_by_hand(page, course: autograde.Course, base: str, notebook_id: str, answer: str) -> None:
    """In the formgrader: find alice's hand-in, type 2 points for the written answer, wait until it is saved."""
    page.goto(f"{base}/formgrader/gradebook/{LAB}/{LAB}")
    page.locator(f'a[href$="/formgrader/submissions/{notebook_id}"]').first.wait_for(state="attached")
    page.screenshot(path=str(SCREENSHOTS / "formgrader-submissions.png"), full_page=True)
    page.goto(f"{base}/formgrader/submissions/{notebook_id}")  # the link of alice's row in the list
    page.get_by_text(answer).wait_for()  # the student's written answer, rendered for the grader
    score = page.locator("input.score#written")
    score.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "formgrader-before.png"), full_page=True)
    score.fill("2")
    score.press("Tab")  # a change event: the formgrader saves the grade through its API
    deadline = time.monotonic() + STEP_MS / 1000
    while manual_score(course, "alice") != 2.0:
        assert time.monotonic() < deadline, "the formgrader did not save the typed score"
        time.sleep(0.2)
    page.screenshot(path=str(SCREENSHOTS / "formgrader-saved.png"), full_page=True)


def test_written_answer_graded_in_the_formgrader_reaches_the_export(tmp_path):
    if not CHROMIUM.is_file() and not os.environ.get("COURSE_BROWSER_REQUIRED"):
        pytest.skip(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (or set COURSE_CHROMIUM)")
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course, written=True)
    autograde.generate(course, [LAB])
    source, release = kit.notebooks(course, LAB)
    answer = "It adds the values up and divides by how many there are."
    handed_in = kit.fill(kit.solved(release, source), {"written": answer})
    # Script where the formgrader shows it to the instructor, logged in: in a markdown cell of hers, in outputs.
    handed_in.cells += [nbformat.v4.new_markdown_cell('My notes <img src=x onerror="window.pwned = 1">'),
                        nbformat.v4.new_code_cell(
                            "from IPython.display import HTML, Javascript, display\n"
                            "display(HTML('<img src=x onerror=\"window.pwned = 2\">'))\n"
                            "display(Javascript('window.pwned = 3'))")]
    kit.hand_in(tmp_path / "inbox", "alice", LAB, handed_in)
    assert [row["status"] for row in autograde.collect(course, tmp_path / "inbox")] == ["collected"]
    out = run_cli(course, "autograde", "--mode", "smoke", "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert manual_score(course, "alice") is None
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        notebook_id = gb.find_submission_notebook(LAB, LAB, "alice").id

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with formgrader(course, tmp_path / "server") as (base, token), launch() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      extra_http_headers={"Authorization": f"token {token}"})  # pages and API
        page = context.new_page()
        page.set_default_timeout(STEP_MS)
        try:
            grade_by_hand(page, course, base, notebook_id, answer)
            page.get_by_text("My notes").wait_for()
            assert page.evaluate("window.pwned") is None, "a hand-in's script ran in the instructor's formgrader"
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "formgrader-failure.png"), full_page=True)
            print(page.content()[:5000], (tmp_path / "server" / "server.log").read_text()[-4000:], sep="\n")
            raise

    out = run_cli(course, "export", "--to", str(tmp_path / "grades.csv"))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [r for r in csv.DictReader((tmp_path / "grades.csv").open()) if r["assignment"] == LAB]
    assert [(r["student_id"], float(r["score"]), float(r["max_score"])) for r in rows] == [("alice", 5.0, 5.0)]
    graded = kit.read(course.folder("autograded") / "alice" / LAB / f"{LAB}.ipynb")
    own = {c.source for c in source.cells if c.cell_type == "markdown"}
    assert [c.source for c in graded.cells if c.cell_type == "markdown" and c.source in own]  # kept as written
    assert "&lt;img" in graded.cells[-2].source and "application/javascript" not in str(graded.cells[-1].outputs)
