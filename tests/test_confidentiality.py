"""What a hand-in can read, and what its feedback carries back: one sandboxed batch of the toy lab.

The batch holds a snooper (looks for a root-only file outside any course, another course's
folder, the course's and the code's ``.git``, the solutions and a variable set in the grader's
environment, then does the work), a hand-in whose own cell holds nbgrader's hidden-test marker
text, one that passes every visible check and fails every hidden one, and one that prints far
more than a feedback page should hold. Each finds nothing, gets its marks for correct work and a
feedback page; no page holds a line of hidden test source.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import nbformat
import pytest

import autograde
from autograde import publish

import kit

LAB = kit.TOY_LAB
TOKEN_VAR = "COURSEKIT_TEST_GRADER_TOKEN"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> kit.Batch:
    """Toy-lab hand-ins that snoop, print the marker text, fail every hidden check, flood their output or print
    IPython's history; graded sandboxed with a secret in the grader's environment, then feedback.
    ``extra``: the feedback pages, the places the snoop tried."""
    kit.require_sandbox()
    if os.geteuid() != 0:
        pytest.skip("the outside files are made as root")
    root = tmp_path_factory.mktemp("secrets")
    course = kit.copy_course(root / "course")
    kit.write_toy_lab(course)
    subprocess.run(["git", "init", "-q", str(course.root)], check=True)
    subprocess.run(["git", "-C", str(course.root), "add", "solutions"], check=True)
    subprocess.run(["git", "-C", str(course.root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"],
                   check=True)
    autograde.generate(course, [LAB])
    batch = kit.Batch(course, LAB, *kit.notebooks(course, LAB))
    source, release = batch.source, batch.release
    token = uuid.uuid4().hex
    secret = Path("/root") / f"coursekit-secret-{token}"
    other = Path("/srv") / f"coursekit-other-course-{token}"
    secret.write_text("root's secret")
    secret.chmod(0o600)
    (other / "solutions").mkdir(parents=True)
    (other / "solutions" / "lab.ipynb").write_text("another course's solutions")
    places = [str(secret), str(other / "solutions"), str(course.root / ".git" / "HEAD"),
              str(course.folder("source")), str(kit.REPO / ".git" / "HEAD"), str(kit.REPO / "solutions"), "/etc/shadow",
              str(course.config_dir / "gradebook.db"), str(course.folder("submitted"))]
    solved = kit.solved(release, source)
    code = kit.solution_cells(source)
    students = {
        "a_snoop": kit.insert_before_tests(solved, kit.attack("snoop", places=repr(places), token_var=TOKEN_VAR)),
        "b_marker": kit.fill(solved, {"double": "# my notes: ### BEGIN HIDDEN TESTS is nbgrader's marker\n"
                                                    + code["double"]}),
        # right on every visible check, wrong on every hidden one
        "c_wrong": kit.fill(solved, {"double": "def double(x):\n    return 2 * abs(x)",
                                         "mean": "def mean(values):\n    return sum(values) / len(values) if "
                                                 "len(values) > 1 else 0.0"}),
        "d_printer": kit.insert_before_tests(solved, kit.attack("output_flood")),
        # runs after the first test cell and prints what the kernel kept of it (IPython's input history)
        "e_history": kit.fill(solved, {"mean": code["mean"] + "\nprint('\\n'.join(In))"}),
        # writes to the kernel process's own stdout and stderr, past IPython's capture
        "f_raw_fds": kit.insert_before_tests(solved, "import os, sys\nfor fd in {1, 2, *(getattr(s, "
                                             "'_original_stdstream_copy', None) for s in (sys.stdout, sys.stderr))} - "
                                             "{None}:\n    os.write(fd, b'RAW-FD-MARKER autograde finished\\n' * 1000)"),
    }
    for student, nb in students.items():
        kit.hand_in(root / "inbox", student, LAB, nb)
    autograde.collect(course, root / "inbox")
    os.environ[TOKEN_VAR] = token  # in the grader's environment, as an instructor's exported credential would be
    try:
        results = autograde.autograde(course, [LAB], mode="smoke", workers=2, sandboxed=True)
        pages = autograde.feedback(course, [LAB])
    finally:
        os.environ.pop(TOKEN_VAR)
        secret.unlink()
        shutil.rmtree(other)
    batch.results = {r.student: r for r in results}
    batch.extra.update(pages=pages, places=places)
    yield batch


def graded(course, student) -> str:
    return (course.folder("autograded") / student / LAB / f"{LAB}.ipynb").read_text()


def feedback_page(course, student) -> str:
    """The text of a student's feedback page as a reader sees it (tags removed, entities decoded)."""
    page = (course.folder("feedback") / student / LAB / f"{LAB}.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_a_snooping_hand_in_finds_nothing_and_keeps_its_marks(batch):
    texts = [out.get("text", "") for cell in nbformat.reads(graded(batch.course, "a_snoop"), as_version=4).cells
             for out in cell.get("outputs", [])]
    printed = [line for text in texts for line in text.splitlines() if line.startswith("SNOOP ")]
    assert printed, "the snooping cell did not run"
    found = json.loads(printed[0][len("SNOOP "):])
    assert found == dict.fromkeys([*batch.extra["places"], "env"]), found
    assert batch.results["a_snoop"].status == "graded" and batch.full_marks("a_snoop"), batch.results["a_snoop"]


def test_every_hand_in_gets_a_feedback_page(batch):
    assert sorted(p.parent.parent.name for p in batch.extra["pages"]) == sorted(batch.results)


def test_a_cell_holding_the_marker_text_gets_its_page_and_a_line_in_the_report(batch):
    assert "BEGIN HIDDEN TESTS is nbgrader" in feedback_page(batch.course, "b_marker")
    assert batch.full_marks("b_marker")
    assert "double of the hand-in hold nbgrader's hidden-test marker text" in batch.results["b_marker"].message
    assert "marker text" in (batch.course.config_dir / "reports" / f"{LAB}.html").read_text()


def test_feedback_of_failed_hidden_checks_shows_messages_not_source(batch):
    scores = kit.item_scores(batch.course, LAB, "c_wrong")
    assert scores["test_double"][0] == 0 and scores["test_mean"][0] == 0, scores  # the hidden checks failed
    lines = publish.hidden_lines(batch.source)
    assert len(lines) == 2, lines  # the toy lab's two hidden asserts
    for student in batch.results:
        page = feedback_page(batch.course, student)
        leaked = [line for line in lines if line in page]
        assert not leaked, f"{student}'s feedback shows hidden test source: {leaked}"
    assert "hidden: one value" in feedback_page(batch.course, "c_wrong")  # the check's own message is shown
    assert "print('\\n'.join(In))" in feedback_page(batch.course, "e_history")  # the history printer ran
    assert publish.HIDDEN_LINE in feedback_page(batch.course, "e_history")


def test_the_kernels_own_stdout_and_stderr_reach_no_file_of_the_grader(batch):
    """Written past IPython (os.write to fds 1 and 2): nbgrader's log of the hand-in would otherwise grow without
    limit and hold lines the hand-in forged."""
    assert batch.full_marks("f_raw_fds"), batch.explain("f_raw_fds")
    logs = list((batch.course.config_dir / "reports" / "logs").rglob("*.log"))
    assert any(log.stem == "f_raw_fds" for log in logs), logs
    assert not [log for log in logs if "RAW-FD-MARKER" in log.read_text(errors="replace")]


def test_output_is_capped_in_the_graded_notebook_and_the_feedback(batch):
    assert batch.full_marks("d_printer")
    notebook = batch.course.folder("autograded") / "d_printer" / LAB / f"{LAB}.ipynb"
    assert notebook.stat().st_size < 3 << 20, notebook.stat().st_size  # it printed 12 MiB
    assert "output cut by the grader" in notebook.read_text()
    assert (batch.course.folder("feedback") / "d_printer" / LAB / f"{LAB}.html").stat().st_size < 4 << 20


def test_scrub_finds_hidden_lines_in_every_text_an_output_carries():
    line = "assert mean([0.5]) == 0.5, 'hidden: one value'"
    escaped = html.escape(line)
    output = {"output_type": "display_data", "text": f"x {line}",
              "data": {"image/svg+xml": f"<svg><text>{escaped}</text></svg>", "text/html": f"<pre>{escaped}</pre>",
                       "application/json": {"a": line}, "text/plain": [line]}}
    publish.scrub(output, [line])
    assert line not in json.dumps(output) and escaped not in json.dumps(output), output
    assert output["data"]["image/svg+xml"] == f"<svg><text>{publish.HIDDEN_LINE}</text></svg>"
