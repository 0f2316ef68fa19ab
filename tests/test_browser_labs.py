"""The students' path in a real JupyterLab, driven in headless Chromium.

The first lab (``notebooks/<lab>/<lab>.ipynb``, the first found) is checked twice, the way a student
meets it:

- **blank**: the student notebook as released. It renders, its kernel starts,
  Run All runs the cells before the first TODO without errors and stops with
  the ``NotImplementedError`` of the first blank TODO; nbgrader's Validate
  button reports failing tests.
- **finished**: the same notebook with the solution code pasted into its TODO
  cells (:func:`kit.solved`). Run All in smoke mode gives no error output and the
  lab's figures appear as images. Validate then reports success, and its dialog shows
  the kit's verdict (which names the items only the grader checks) instead of nbgrader's
  "Success! Your notebook passes all the tests.".

The browser, the server, the kernels and the dialogs are the same for every lab, so the other labs
are not run in it again (a whole smoke run of each, twice, in CI's time). What is their own is checked
without a browser: every lab's released notebook runs to its first TODO and stops there with the stub's
``NotImplementedError`` (its graded release, ``tests/test_autograde_labs.py``), its solution runs without
an error under nbval, its alternative solutions validate whole with the passing verdict
(``tests/test_mutants.py``), and its verdict names its grader-only items (``tests/test_validation.py``).

The first lab's finished notebook is also validated in Notebook 7 (what ``jupyter notebook``
opens), which shows the same Validate button and must show the same verdict.

The server runs on a free localhost port with a token, in a scratch copy of the
course folder's ``notebooks/`` and students' ``nbgrader_config.py`` (so Validate
gives each cell its run mode's time, as it does for students); Chromium comes
from the system package (``apt-get install chromium``), driven by Playwright for
Python. Screenshots land in ``build/screenshots/``. Every browser step has a
time limit and fails with a message naming the step; the server, its kernels
and the browser are shut down by fixture finalizers, also when a test fails.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from course_utils import kernels
from kit.browser import (RENDERED_IMAGES_JS, RUN_BLANK_S, RUN_FINISHED_S, LabServer, NotebookPage, check_verdict,
                         describe_output, discover_labs, errors_in, excerpt, first_todo, scratch_copy, start_server,
                         step, write_finished)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def lab_server(tmp_path_factory) -> Iterator[LabServer]:
    """A JupyterLab server over a scratch copy of notebooks/, stopped at the end of the module."""
    if not discover_labs():
        pytest.skip("no student notebooks in notebooks/ yet")
    root = scratch_copy(tmp_path_factory.mktemp("jupyterlab"))
    server = start_server(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def notebook_page(request, browser, lab_server):
    """A fresh browser page (own profile state); its kernels are shut down afterwards.

    When the test fails, the page is saved as ``build/screenshots/<test id>-failure.png``.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    failed_before = request.session.testsfailed
    try:
        nb = NotebookPage(page, lab_server)
        yield nb
        if request.session.testsfailed > failed_before:
            nb.screenshot(request.node.name.replace("[", "-").rstrip("]") + "-failure")
    finally:
        context.close()
        try:
            lab_server.shutdown_kernels()
        except OSError:
            pass  # the server is gone already; its finalizer reports why

def check_blank(nb: NotebookPage, lab: str) -> None:
    """The released notebook: runs up to the first TODO, which shows NotImplementedError; Validate fails."""
    path = f"notebooks/{lab}/{lab}.ipynb"
    nb.open(path)
    nb.run_all(RUN_BLANK_S)
    cells = nb.cells()
    todo = first_todo(cells)
    before = errors_in(cells[:todo])
    assert not before, f"{lab}: cells before the first TODO (cell {todo}) show errors:\n" + "\n".join(before)
    unrun = [c["index"] for c in cells[:todo] if c["type"] == "code" and c["count"] is None]
    assert not unrun, f"{lab}: Run All did not run cells {unrun} before the first TODO"
    errors = [(c, o) for c in cells[todo:] for o in c["outputs"] if o["type"] == "error"]
    assert errors, f"{lab}: Run All on the blank notebook raised nothing; the first TODO (cell {todo}) must fail"
    cell, output = errors[0]
    assert output["ename"] == "NotImplementedError", (
        f"{lab}: the first error after the blank TODO (cell {todo}) should be the stub's "
        f"NotImplementedError, found {describe_output(cell, output)}")
    shown = nb.page.locator(".jp-NotebookPanel .jp-Cell").nth(cell["index"]).locator(
        ".jp-OutputArea-output").filter(has_text="NotImplementedError")
    with step(f"the NotImplementedError shows under cell {cell['index']}", 15) as ms:
        shown.first.scroll_into_view_if_needed(timeout=ms)
    nb.screenshot(f"{lab}-blank")

    kind, text = nb.validate()
    nb.screenshot(f"{lab}-blank-validate")
    assert kind == "failed", f"{lab}: Validate on the blank notebook should report failing tests, got {kind}:\n{excerpt(text)}"
    assert "NotImplementedError" in text, f"{lab}: Validate's report does not name NotImplementedError:\n{excerpt(text)}"
    nb.close_dialog()
    print(f"{lab} blank: seconds per step {nb.timings}")


def check_finished(nb: NotebookPage, lab: str) -> None:
    """The solved notebook: Run All without errors, figures rendered as images; Validate shows the kit's verdict."""
    path = write_finished(nb.server.root, lab)
    nb.open(path)
    nb.run_all(RUN_FINISHED_S)
    cells = nb.cells()
    errors = errors_in(cells)
    assert not errors, f"{lab}: the finished notebook shows errors after Run All:\n" + "\n".join(errors)
    unrun = [c["index"] for c in cells if c["type"] == "code" and c["count"] is None]
    assert not unrun, f"{lab}: Run All left code cells {unrun} unexecuted"
    images = [o for c in cells for o in c["outputs"] if "image/png" in o["mimes"]]
    bare = [f"cell {c['index']}: {o['plain']}" for c in cells for o in c["outputs"]
            if o["plain"].startswith("<Figure") and "image/png" not in o["mimes"]]
    assert not bare, f"{lab}: figures printed as text instead of images (is MPLBACKEND set?):\n" + "\n".join(bare)
    assert images, f"{lab}: the finished notebook drew no figure"
    with step(f"{len(images)} figures render as images", 30) as ms:
        nb.page.wait_for_function(f"() => ({RENDERED_IMAGES_JS})() >= {len(images)}", timeout=ms)
        nb.page.locator(".jp-OutputArea-output[data-mime-type='image/png'] img").first.scroll_into_view_if_needed(
            timeout=ms)
    nb.screenshot(f"{lab}-finished")

    kind, text = nb.validate()
    nb.screenshot(f"{lab}-finished-validate")
    assert kind == "success", f"{lab}: Validate on the finished notebook should succeed, got {kind}:\n{excerpt(text)}"
    check_verdict(nb.server.root / path, lab, text)
    nb.close_dialog()
    print(f"{lab} finished: seconds per step {nb.timings}")


# --------------------------------------------------------------------------- the tests

# The lab a browser runs (see the module's docstring); without labs, the lab_server fixture skips every test.
LAB = (discover_labs() or [None])[0]


def test_blank_notebook_stops_at_the_first_todo(notebook_page):
    check_blank(notebook_page, LAB)


def test_finished_notebook_runs_and_validates(notebook_page):
    check_finished(notebook_page, LAB)


def test_notebook_7_validates_with_the_verdict_too(notebook_page):
    """Students who start ``jupyter notebook`` get Notebook 7: the same Validate button, and the kit's verdict
    in its success dialog (the JupyterLab extension loads there as well)."""
    path = write_finished(notebook_page.server.root, LAB)
    notebook_page.open(path, ui="notebook")
    kind, text = notebook_page.validate()
    notebook_page.screenshot(f"{LAB}-notebook7-validate")
    assert kind == "success", f"{LAB}: Validate in Notebook 7 should succeed, got {kind}:\n{excerpt(text)}"
    check_verdict(notebook_page.server.root / path, LAB, text)


# Files whose tests are split into one class per lab on purpose (their fixtures are per class).
PER_LAB_CLASSES = ("test_autograde_labs.py", "test_mutants.py")


def test_only_per_lab_files_group_tests_in_classes():
    """``--dist loadscope`` keeps a module's tests on one worker unless they are in classes (then per class).

    Notebook cells (nbval) and the module-scoped fixtures (this module's server) rely on that
    per-file grouping, so test classes belong only to the files that build one per lab.
    """
    import ast

    here = Path(__file__).resolve()
    classes = {}
    for path in sorted(here.parent.glob("test_*.py")):
        if path.name in PER_LAB_CLASSES:
            continue
        found = [node.name for node in ast.parse(path.read_text()).body
                 if isinstance(node, ast.ClassDef) and node.name.startswith("Test")]
        if found:
            classes[path.name] = found
    assert not classes, (f"test classes {classes}: pytest-xdist (--dist loadscope) would run each class on its own "
                         f"worker, apart from the rest of its file; use module-level test functions")


def test_the_servers_kernels_talk_over_unix_sockets(lab_server):
    """The kit's server settings, as installed in the environment, give JupyterLab's kernels unix sockets
    (course_utils/kernels.py): no TCP port for another process to take before the kernel binds it."""
    status, kernel = lab_server.call("api/kernels", "POST", {"name": "python3"})
    assert status == 201, (status, kernel)
    try:
        connection = lab_server.root / ".jupyter" / "runtime" / f"kernel-{kernel['id']}.json"
        info = json.loads(connection.read_text())
        assert info["transport"] == "ipc", (f"JupyterLab's kernels use {info['transport']}: is the kit's "
                                            f"jupyter_server_config.d/course_utils.json installed? "
                                            f"`python -m course_utils install-verdict`")
        folder = Path(info["ip"]).parent
        assert folder.name.startswith(kernels.PREFIX) and folder.is_dir(), info
    finally:
        lab_server.api(f"kernels/{kernel['id']}", method="DELETE")
    assert not folder.exists(), "the kernel's socket folder outlived it"
