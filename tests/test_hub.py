"""A term on a real JupyterHub through nbgrader's exchange, driven in headless Chromium.

One test walks the whole loop for lab 1 (smoke mode), with a screenshot of each step in
``build/screenshots/hub-*.png``:

1. the instructor sets up the exchange and releases lab 1 (``python -m autograde exchange setup`` and
   ``exchange release``);
2. student A logs in to the hub, fetches the lab from JupyterLab's Assignment List, runs it to its
   first TODO (``NotImplementedError``), then validates a finished copy from the list (its Validate
   button, whose dialog must show the kit's verdict, as the notebook's toolbar button does) and
   submits it;
3. student B submits twice: the blank notebook first, then a finished copy;
4. the instructor collects from the exchange (``exchange collect``: B's second submission kept, and
   said), autogrades sandboxed (``python -m autograde autograde``) and releases feedback
   (``exchange feedback``); both score full marks, so B's second version is the one graded;
5. student A fetches the feedback from the Assignment List; its page shows the score.

The hub (``tests/kit/hub.py``) runs on 127.0.0.1 with users made for the test (removed
afterwards), DummyAuthenticator and local single-user servers running as the students. Every step
has a time limit; the hub, its servers, the browser and the users are cleaned up by the fixtures'
finalizers, also when the test fails.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import kernels
from kit import REPO, copy_course, solved
from kit import hub as hub_support
from kit.browser import (SCREENSHOTS, NotebookPage, check_verdict, close_dialog, errors_in, first_todo, step,
                         validation_result)

LAB = "lab1_mnist_mlp"
LOGIN_S = hub_support.SERVER_READY_S
LIST_S = 60          # the Assignment List shows a lab / a submission / feedback
RUN_BLANK_S = 180    # Run All on the blank lab, to its first TODO
COMMAND_S = 600      # one instructor command (autograde: two lab 1 hand-ins, smoke mode, sandboxed)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def hub_world(tmp_path_factory):
    """A course copy, a world-readable scratch folder (exchange, students' settings), two students, a hub."""
    if (why := hub_support.problem()):
        if os.environ.get("COURSE_BROWSER_REQUIRED"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    data = os.environ.get("COURSE_DATA_DIR")
    if not data or not Path(data).is_dir():
        pytest.skip("COURSE_DATA_DIR does not point at the offline dataset mirror")
    course = copy_course(tmp_path_factory.mktemp("hub-course"), [LAB])
    # The students' servers read the exchange and their settings: outside pytest's own (mode 700) folder.
    shared = Path(tempfile.mkdtemp(prefix="coursekit-hub-"))
    shared.chmod(0o755)
    users = []
    hub = None
    try:
        users = hub_support.make_users(2)
        lab_settings = shared / "lab-settings" / "@jupyterlab"
        for name, content in (("notebook-extension/tracker", '{"windowingMode": "none"}'),
                              ("apputils-extension/notification", '{"checkForUpdates": false, "fetchNews": "false"}')):
            (lab_settings / f"{name}.jupyterlab-settings").parent.mkdir(parents=True, exist_ok=True)
            (lab_settings / f"{name}.jupyterlab-settings").write_text(content)
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        world = {"course": course, "shared": shared, "exchange": shared / "exchange", "users": users}
        instructor(world, "setup", "--students-config", str(shared / "etc" / "jupyter"))
        environment = {
            "COURSE_MODE": "smoke",
            "COURSE_DATA_DIR": str(Path(data).resolve()),
            "JUPYTER_CONFIG_PATH": str(shared / "etc" / "jupyter"),  # as the environment's etc/jupyter on a real hub
            "JUPYTERLAB_SETTINGS_DIR": str(shared / "lab-settings"),
            "OMP_NUM_THREADS": "1",
        }
        hub = hub_support.start_hub(shared / "hub", users, environment)
        world["hub"] = hub
        yield world
    finally:
        if hub is not None:
            hub.stop()
        hub_support.remove_users(users)
        shutil.rmtree(shared, ignore_errors=True)


def instructor(world: dict, action: str, *args: str, expect: int = 0) -> str:
    """``python -m autograde exchange ACTION`` on the test's course; return its output."""
    return run_autograde(world, "exchange", "--root", str(world["exchange"]), action, *args, expect=expect)


def run_autograde(world: dict, *args: str, expect: int = 0) -> str:
    proc = subprocess.run([sys.executable, "-m", "autograde", "--course", str(world["course"].root), *args],
                          capture_output=True, text=True, timeout=COMMAND_S)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, f"`autograde {' '.join(args)}` exited {proc.returncode}, not {expect}:\n{output}"
    return output


class HubServer:
    """What NotebookPage needs of a server: the JupyterLab address of a path, here below the student's prefix."""

    def __init__(self, hub: hub_support.Hub, user: str):
        self.hub, self.user = hub, user

    def url(self, path: str, ui: str = "lab") -> str:
        if ui == "notebook":
            return f"{self.hub.base}/user/{self.user}/notebooks/{path}"
        return f"{self.hub.base}/user/{self.user}/lab/tree/{path}?reset"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"hub-{name}.png"))


# --------------------------------------------------------------------------- the student's actions

def login(browser, hub: hub_support.Hub, user: str):
    """Log ``user`` in on the hub's login page; return the page once JupyterLab shows."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    with step(f"{user} opens the hub's login page", 60) as ms:
        page.goto(f"{hub.base}/hub/login", timeout=ms)
        page.fill("#username_input", user, timeout=ms)
        page.fill("#password_input", "any password: DummyAuthenticator", timeout=ms)
        page.click("#login_submit", timeout=ms)
    hub.wait_ready(user)  # the hub's API, not the server: a server answers the hub cookie alone with 403
    with step(f"{user}'s JupyterLab loads", LOGIN_S) as ms:
        page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=ms)
        page.locator("#jp-main-dock-panel").wait_for(timeout=ms)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand("
                               "'nbgrader:open-assignment-list')", timeout=ms)
    return page


def assignment_list(page):
    """Open nbgrader's Assignment List (the Nbgrader menu) and wait for it to list the course's labs."""
    with step("open Nbgrader > Assignment List", 30) as ms:
        page.locator("#jp-MainMenu").get_by_text("Nbgrader", exact=True).click(timeout=ms)
        page.locator(".lm-Menu-content").get_by_text("Assignment List", exact=True).click(timeout=ms)
    with step("the Assignment List shows the course's labs", LIST_S) as ms:
        page.get_by_text(LAB).first.wait_for(timeout=ms)


def refresh_list(page):
    with step("refresh the Assignment List", 30) as ms:
        page.locator("#refresh_assignments_list, button[title*='efresh']").first.click(timeout=ms)


def click_in_list(page, label: str, seconds: float = LIST_S):
    """Press the button ``label`` (Fetch, Submit, Fetch Feedback) on the lab's row of the Assignment List."""
    with step(f"press {label} in the Assignment List", seconds) as ms:
        page.get_by_role("button", name=label, exact=True).first.click(timeout=ms)


def fetch(page, user: str):
    assignment_list(page)
    click_in_list(page, "Fetch")
    home = Path(f"/home/{user}") / LAB / f"{LAB}.ipynb"
    deadline = time.monotonic() + LIST_S
    while not home.is_file():
        assert time.monotonic() < deadline, f"{user}: Fetch put no {home}"
        time.sleep(0.5)
    with step("the fetched lab shows under Downloaded assignments", LIST_S) as ms:
        page.get_by_role("button", name="Submit", exact=True).first.wait_for(timeout=ms)
    return home


def submit(page, user: str, count: int, exchange: Path):
    """Press Submit and wait until the list shows ``count`` submissions of the lab for ``user``."""
    click_in_list(page, "Submit")
    inbound = lambda: list(exchange.glob(f"*/inbound/{user}+{LAB}+*"))  # noqa: E731
    deadline = time.monotonic() + LIST_S
    while len(inbound()) < count:
        assert time.monotonic() < deadline, f"{user}: submission {count} did not reach the exchange"
        time.sleep(0.5)


def validate_in_list(page) -> tuple[str, str]:
    """Expand the fetched lab in the Assignment List and press Validate on its notebook's row; return the
    dialog's kind and text (:func:`kit.browser.validation_result`)."""
    with step("expand the fetched lab in the Assignment List", 30) as ms:
        page.locator("#fetched_assignments_list a.assignment-notebooks-link", has_text=LAB).first.click(timeout=ms)
        row = page.locator("#fetched_assignments_list .nested_list_item").filter(has_text=LAB).first
        row.wait_for(timeout=ms)
    with step("press Validate on the notebook's row", 30) as ms:
        row.get_by_role("button", name="Validate", exact=True).click(timeout=ms)
    return validation_result(page)


def hand_over(path: Path, nb, user: str) -> None:
    """Put ``nb`` at ``path`` in the student's home, as the student's own file."""
    nbformat.write(nb, path)
    hub_support.give(path, user)


def finished_copy() -> nbformat.NotebookNode:
    release = nbformat.read(REPO / "notebooks" / LAB / f"{LAB}.ipynb", as_version=4)
    source = nbformat.read(REPO / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    return solved(release, source)


def close_all(page):
    """Save the notebook, close every tab and shut the kernels down (as File > Save, Close All Tabs would)."""
    with step("save, close every tab and shut the kernels down", 30) as ms:
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
        page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
        page.locator(".jp-NotebookPanel").wait_for(state="detached", timeout=ms)


# --------------------------------------------------------------------------- the test

def test_a_term_on_the_hub(hub_world, browser):  # noqa: F811 (browser: the test kit's fixture)
    hub, (a, b), times = hub_world["hub"], hub_world["users"], {}
    start = time.monotonic()

    def lap(name):
        times[name] = round(time.monotonic() - start, 1)
        print(f"hub loop: {name} after {times[name]} s", flush=True)

    # 1. The instructor releases lab 1.
    out = instructor(hub_world, "release", LAB)
    assert f"released {LAB}" in out, out
    assert (hub_world["exchange"] / "deep-learning-labs" / "outbound" / LAB / f"{LAB}.ipynb").is_file()
    lap("released")

    # 2. Student A: fetch, run to the first TODO, submit a finished copy.
    page_a = login(browser, hub, a)
    lap("a logged in")
    notebook = fetch(page_a, a)
    shot(page_a, "1-assignment-list-fetched")
    nb = NotebookPage(page_a, HubServer(hub, a))
    nb.open(f"{LAB}/{LAB}.ipynb")
    nb.run_all(RUN_BLANK_S)
    cells = nb.cells()
    todo = first_todo(cells)
    assert not errors_in(cells[:todo]), f"cells before the first TODO fail on the hub:\n{errors_in(cells[:todo])}"
    errors = [o for c in cells[todo:] for o in c["outputs"] if o["type"] == "error"]
    assert errors and errors[0]["ename"] == "NotImplementedError", errors[:1]
    with step("the NotImplementedError shows", 15) as ms:
        page_a.locator(".jp-OutputArea-output").filter(has_text="NotImplementedError").first.scroll_into_view_if_needed(
            timeout=ms)
    shot(page_a, "2-student-a-runs-to-first-todo")
    # The student's kernel talks over unix sockets (the kit's server extension) in a folder only they can enter.
    uid = pwd.getpwnam(a).pw_uid
    folders = [p for p in Path(tempfile.gettempdir()).glob(f"{kernels.PREFIX}p*") if p.stat().st_uid == uid]
    assert folders and all(p.stat().st_mode & 0o777 == 0o700 for p in folders), folders
    lap("a ran to the first TODO")
    close_all(page_a)
    hand_over(notebook, finished_copy(), a)
    assignment_list(page_a)
    kind, text = validate_in_list(page_a)
    shot(page_a, "3-student-a-validates-from-the-list")
    assert kind == "success", f"Validate from the Assignment List should succeed, got {kind}:\n{text[:1500]}"
    check_verdict(notebook, LAB, text)
    close_dialog(page_a)
    lap("a validated from the list")
    submit(page_a, a, 1, hub_world["exchange"])
    shot(page_a, "4-student-a-submitted")
    lap("a submitted")

    # 3. Student B submits twice: the blank lab, then a finished copy.
    page_b = login(browser, hub, b)
    notebook_b = fetch(page_b, b)
    submit(page_b, b, 1, hub_world["exchange"])
    time.sleep(1.1)  # a later timestamp for the second submission
    hand_over(notebook_b, finished_copy(), b)
    refresh_list(page_b)
    submit(page_b, b, 2, hub_world["exchange"])
    shot(page_b, "5-student-b-submitted-twice")
    lap("b submitted twice")

    # 4. The instructor collects, autogrades (sandboxed) and releases feedback.
    out = instructor(hub_world, "collect", LAB)
    print(out)
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith(hub_support.USER_PREFIX)}
    assert set(rows) == {a, b} and all(re.search(rf"{LAB}\s+collected\b", rows[u]) for u in (a, b)), out
    assert "submitted 2 times; kept the newest" in rows[b], out
    assert "times" not in rows[a], out
    lap("collected")
    out = run_autograde(hub_world, "autograde", LAB, "--mode", "smoke", "--workers", "2")
    print(out)
    from kit import item_scores
    scores = {u: item_scores(hub_world["course"], LAB, u) for u in (a, b)}
    for user, items in scores.items():
        got, most = sum(s for s, _ in items.values()), sum(m for _, m in items.values())
        assert items and got == most, f"{user}: {got}/{most} points, expected full marks: {items}"
    lap("graded")
    out = instructor(hub_world, "feedback", LAB)
    assert all(re.search(rf"{u}\s+{LAB}\s+released", out) for u in (a, b)), out
    lap("feedback released")

    # 5. Student A fetches the feedback; the page shows the score.
    assignment_list(page_a)
    click_in_list(page_a, "Fetch Feedback")
    with step("the Assignment List offers the feedback", LIST_S) as ms:
        page_a.get_by_text("view feedback").first.wait_for(timeout=ms)
    shot(page_a, "6-student-a-feedback-fetched")
    pages = sorted(Path(f"/home/{a}/{LAB}/feedback").glob(f"*/{LAB}.html"))
    assert pages, f"fetch_feedback left no page in /home/{a}/{LAB}/feedback"
    relative = pages[-1].relative_to(f"/home/{a}")
    with step("open the feedback page", 60) as ms:
        page_a.goto(f"{hub.base}/user/{a}/files/{relative}", timeout=ms)
    text = page_a.inner_text("body")
    shot(page_a, "7-student-a-feedback-page")
    # The page's score is the gradebook's: every autograded item in full (the written answer waits for a person).
    total = sum(s for s, _ in scores[a].values())
    shown = re.search(rf"{LAB} \(Score: ([0-9.]+) / ([0-9.]+)\)", text)
    assert shown and float(shown.group(1)) == total, f"feedback does not show the score {total:g}:\n{text[:800]}"
    lap("a read the feedback")
    print(f"hub loop, seconds since the start: {times}")


def test_servers_reach_the_environment_through_a_closed_folder():
    """NamespaceSpawner's layout: a folder only root may enter (CI's /root) shows the student only what is bound back."""
    if (why := hub_support.problem()) and os.environ.get("COURSE_BROWSER_REQUIRED"):
        pytest.fail(why, pytrace=False)  # as the hub's other tests do
    if os.geteuid() != 0 or why:
        pytest.skip(why or "needs root")
    closed = Path(tempfile.mkdtemp(prefix="coursekit-closed-"))  # mode 0700, like /root
    users = []
    try:
        (closed / "env").mkdir()
        (closed / "env" / "python").write_text("the environment\n")
        (closed / "secret").write_text("root's\n")
        users = hub_support.make_users(1)
        hide, expose = hub_support.namespace_plan([closed / "env"])
        assert (hide, expose) == ([str(closed)], [str(closed / "env")])
        probe = f"id -un; cat {closed}/env/python; ls -A {closed}; echo x > {closed}/env/new || echo read-only"
        cmd = hub_support.namespace_cmd(hide, expose, ["/bin/sh", "-c", probe])
        home = f"/home/{users[0]}"
        proc = subprocess.run(cmd, env={"USER": users[0], "HOME": home, "PATH": os.environ["PATH"]},
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[:4] == [users[0], "the environment", "env", "read-only"], proc.stdout + proc.stderr
        assert (closed / "secret").is_file() and not (closed / "env" / "new").exists()
    finally:
        hub_support.remove_users(users)
        shutil.rmtree(closed, ignore_errors=True)
