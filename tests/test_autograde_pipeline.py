"""The instructor's grading commands (python -m autograde) end to end, on a tiny throwaway lab.

Real nbgrader, a real gradebook, real kernels; the lab is toy-sized so the
mechanics (parallel grading, timeouts, broken files, feedback, export,
manual grades kept on regrade) are tested in seconds. The real labs are
graded in test_autograde_labs.py and test_autograde_bad.py.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

import autograde  # noqa: E402
from autograde import cli, cluster, sandbox  # noqa: E402
from autograde.options import RunOptions  # noqa: E402

import kit

LAB = kit.TOY_LAB
pytestmark = pytest.mark.slow


def run_cli(course: autograde.Course, *args: str, without: tuple[str, ...] = (),
            **env: str) -> subprocess.CompletedProcess:
    """``python -m autograde --course ROOT ARGS`` as an instructor types it (``env``: variables to add;
    ``without``: variables to leave out)."""
    env = {k: v for k, v in (autograde.tool_env() | env).items() if k not in without}
    return subprocess.run([sys.executable, "-m", "autograde", "--course", str(course.root), *args],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture
def toy(tmp_path) -> autograde.Course:
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course)
    return course


def test_whole_pipeline_from_the_command_line(toy, tmp_path):
    course = toy
    out = run_cli(course, "generate")
    assert out.returncode == 0, out.stdout + out.stderr
    release_text = (course.folder("release") / LAB / f"{LAB}.ipynb").read_text()
    assert "BEGIN SOLUTION" not in release_text and "HIDDEN" not in release_text and "2 * x" not in release_text
    source, release = kit.notebooks(course, LAB)
    solved = kit.solved(release, source)

    inbox = tmp_path / "inbox"
    kit.hand_in(inbox, "alice", LAB, solved)
    kit.hand_in(inbox, "bob", LAB, release)  # handed in untouched
    text = nbformat.writes(solved)
    kit.hand_in(inbox, "carol", LAB, text[: len(text) // 2])  # upload cut short
    # Each cell is within the 10 s limit, the whole (60 s) beyond the 45 s cap for a submission.
    slow = copy.deepcopy(solved)
    slow.cells += [nbformat.v4.new_code_cell("import time\ntime.sleep(5)") for _ in range(12)]
    kit.hand_in(inbox, "dave", LAB, slow)
    # Ignores the interrupt: nbgrader cannot go on with this notebook.
    kit.hand_in(inbox, "hank", LAB, kit.fill(solved, {
        "double": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"}))
    kit.hand_in(inbox, "frank", LAB, kit.fill(solved, {"double": "while True:\n    pass"}))
    gina = kit.fill(release, {"double": "double = lambda x: x + x", "mean": "import statistics\nmean = statistics.fmean"})
    gina.cells.append(nbformat.v4.new_markdown_cell("My sketch: ![plot](attachment:lost.png)"))  # not attached
    kit.hand_in(inbox, "gina", LAB, gina)
    # Kills its kernel in the second TODO: the first test keeps its point.
    kit.hand_in(inbox, "ivan", LAB, kit.fill(solved, {"mean": "import os\nos._exit(1)"}))
    (inbox / "erin" / "lab9_unknown").mkdir(parents=True)

    out = run_cli(course, "autograde", "--mode", "smoke")  # before collecting: says so, grades nothing
    assert out.returncode == 2 and "holds no hand-in of" in out.stderr and "collect" in out.stderr, out.stderr
    out = run_cli(course, "collect", str(inbox))
    assert out.returncode == 1, out.stdout + out.stderr  # carol's file and erin's folder need attention
    assert "not valid JSON" in out.stdout and "unknown lab" in out.stdout
    assert (course.folder("submitted") / "carol" / LAB / f"{LAB}.ipynb").read_text() == text[: len(text) // 2]

    # A temp folder of the grader's own, where its sandboxes' folders go too (short, open to the grading user).
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    temp.chmod(0o755)
    try:
        out = run_cli(course, "autograde", "--mode", "smoke", "--workers", "2",
                      "--cell-timeout", "10", "--submission-timeout", "45", TMPDIR=str(temp))
        left = sorted(p.name for p in temp.iterdir() if p.name != "dask-scratch-space")
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log  # carol, dave, hank and ivan need attention
    assert "grading 8 submission(s) in mode smoke with 2 process(es)" in log
    assert ("sandboxed" in log) == bool(sandbox.support().bwrap), log
    # Nothing of a hand-in stays behind, even where nbgrader was killed (dave's time limit, hank's interrupt).
    assert not left, left
    graded = {s: kit.item_scores(course, LAB, s) for s in ("alice", "bob", "frank", "gina", "ivan")}
    assert graded == {
        "alice": {"test_double": (1, 1), "test_mean": (2, 2)},
        "bob": {"test_double": (0, 1), "test_mean": (0, 2)},
        "frank": {"test_double": (0, 1), "test_mean": (2, 2)},  # the loop cost one item, not the notebook
        "gina": {"test_double": (1, 1), "test_mean": (2, 2)},
        "ivan": {"test_double": (1, 1), "test_mean": (0, 2)},  # points before the kernel died are kept
    }, log
    assert "CellTimeoutError" in kit.cell_errors(course, LAB, "frank")["double"]
    alice_nb = (course.folder("autograded") / "alice" / LAB / f"{LAB}.ipynb").read_text()
    assert "kernel mode: smoke" in alice_nb  # the kernel ran in the grading mode

    reports = sorted((course.config_dir / "reports").glob("autograde-*.csv"))
    rows = {r["student"]: r for r in csv.DictReader(reports[-1].open())}
    assert set(rows) == {"alice", "bob", "carol", "dave", "frank", "gina", "hank", "ivan"}
    assert rows["ivan"]["status"] == "error" and "kernel died in mean" in rows["ivan"]["message"]
    assert rows["carol"]["status"] == "error" and "not valid JSON" in rows["carol"]["message"]
    assert rows["dave"]["status"] == "error" and "stopped after 45 s" in rows["dave"]["message"]
    assert rows["frank"]["status"] == "graded"
    assert "double stopped at the limit of 10 s per cell" in rows["frank"]["message"], rows["frank"]["message"]
    assert rows["hank"]["status"] == "error" and "went on running after the interrupt" in rows["hank"]["message"]
    assert not (course.folder("autograded") / "dave" / LAB).exists()
    with pytest.raises(Exception, match="No such submitted notebook"):
        kit.item_scores(course, LAB, "carol")

    # One page nbgrader cannot make (bob's graded copy is damaged here) costs only that page.
    damaged = course.folder("autograded") / "bob" / LAB / f"{LAB}.ipynb"
    kept = damaged.read_text()
    damaged.write_text(kept.replace('"cells": [', '"cells": [{"cell_type": "no such type"}, ', 1))
    out = run_cli(course, "feedback")
    assert out.returncode == 1 and "no feedback page for bob" in out.stdout, out.stdout + out.stderr
    damaged.write_text(kept)
    assert "My sketch" in (course.folder("feedback") / "gina" / LAB / f"{LAB}.html").read_text()
    page = (course.folder("feedback") / "alice" / LAB / f"{LAB}.html").read_text()
    assert "double(2)" in page and "BEGIN HIDDEN TESTS" not in page and "double(-3)" not in page

    out = run_cli(course, "export", "--to", str(tmp_path / "grades.csv"))
    assert out.returncode == 0, out.stdout + out.stderr
    grades = {r["student_id"]: float(r["score"]) for r in csv.DictReader((tmp_path / "grades.csv").open())
              if r["assignment"] == LAB}
    assert grades == {"alice": 3, "bob": 0, "frank": 2, "gina": 3, "ivan": 1}

    # Nothing is graded twice by accident, and a changed hand-in is not replaced silently.
    out = run_cli(course, "autograde", "--mode", "smoke")
    assert "grading 0 submission(s)" in out.stdout, out.stdout + out.stderr
    out = run_cli(course, "autograde", "--mode", "smoke", "--student", "Alice")  # ids are folder names
    assert out.returncode == 2 and "for student 'Alice' (did you mean alice?)" in out.stderr, out.stderr
    kit.hand_in(inbox, "alice", LAB, release)
    assert "differs from the copy already collected" in run_cli(course, "collect", str(inbox)).stdout

    # A regrade keeps the manual grade an instructor gave and flags the item for review.
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        gb.find_grade("test_mean", LAB, LAB, "alice").manual_score = 1.5
        gb.db.commit()
    results = autograde.autograde(course, [LAB], students=["alice"], force=True, mode="smoke")
    assert [(r.student, r.status, r.score) for r in results] == [("alice", "graded", 2.5)]
    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        mean_grade = gb.find_grade("test_mean", LAB, LAB, "alice")
        assert (mean_grade.auto_score, mean_grade.manual_score, mean_grade.needs_manual_grade) == (2, 1.5, True)


def test_check_finds_hand_edits_to_student_notebooks(toy, capsys):
    autograde.generate(toy)
    assert autograde.check(toy) == []
    path = toy.folder("release") / LAB / f"{LAB}.ipynb"
    nb = nbformat.read(path, as_version=4)
    index = next(i for i, cell in enumerate(nb.cells) if kit.grade_id(cell) == "test_double")
    nb.cells[index].source += "\nassert double(0) == 0"
    nbformat.write(nb, path)
    (path.parent / "notes.txt").write_text("added by hand")
    (toy.folder("release") / "old_lab").mkdir()
    problems = autograde.check(toy)
    assert any(f"cell {index} (test_double) source differs" in p for p in problems), problems
    assert any("notes.txt is not generated" in p for p in problems), problems
    assert any("old_lab has no source" in p for p in problems), problems
    assert cli.main(["--course", str(toy.root), "check"]) == 1
    assert "python -m autograde generate <lab>" in capsys.readouterr().out


def test_collect_explains_what_it_skips(toy, tmp_path):
    with pytest.raises(autograde.GradingError, match="not a folder of submissions"):
        autograde.collect(toy, tmp_path / "nowhere")
    inbox = tmp_path / "inbox"
    (inbox / "no notebook" / LAB).mkdir(parents=True)
    (inbox / "ann" / LAB).mkdir(parents=True)
    (inbox / "ann" / LAB / f"{LAB} (1).ipynb").write_text("{}")  # renamed by a browser's download
    (inbox / "mo").mkdir()  # nothing in it
    kit.hand_in(inbox, "frank", LAB, "{}").rename(inbox / "frank" / f"{LAB}.ipynb")  # no lab folder
    kit.hand_in(inbox, "x", LAB, "{}").rename(inbox / f"{LAB}.ipynb")  # no student folder
    shutil.rmtree(inbox / "frank" / LAB)
    shutil.rmtree(inbox / "x")
    rows = {r["student"]: r for r in autograde.collect(toy, inbox)}
    assert rows["mo"]["status"] == rows["frank"]["status"] == rows["?"]["status"] == "skipped"
    assert "holds no lab folder" in rows["mo"]["message"], rows["mo"]
    assert f"holds {LAB}.ipynb directly: put each in frank/<lab>/<lab>.ipynb" in rows["frank"]["message"]
    assert f"put it in <student>/{LAB}/{LAB}.ipynb" in rows["?"]["message"]
    assert rows["no notebook"]["status"] == "skipped" and "letters, digits" in rows["no notebook"]["message"]
    assert "(not ' '); rename the folder" in rows["no notebook"]["message"]
    assert rows["ann"]["status"] == "skipped" and f"no {LAB}.ipynb" in rows["ann"]["message"]
    assert f"(it holds {LAB} (1).ipynb: rename the hand-in to {LAB}.ipynb)" in rows["ann"]["message"]
    big = kit.hand_in(inbox, "bob", LAB, kit.read(toy.folder("source") / LAB / f"{LAB}.ipynb")).parent
    (big / "weights").mkdir()
    with open(big / "weights" / "huge.pt", "wb") as out:  # sparse: no disk used
        out.truncate(autograde.config.MAX_HANDIN_BYTES + 1)
    # Links, pipes and hard links are refused; the one good hand-in among them is collected all the same.
    nb = kit.read(toy.folder("source") / LAB / f"{LAB}.ipynb")
    for student in ("cat", "dan", "eve", "fay", "Fay"):
        kit.hand_in(inbox, student, LAB, nb)
    (inbox / "cat" / LAB / "notes.txt").symlink_to(tmp_path / "elsewhere.txt")
    os.mkfifo(inbox / "dan" / LAB / "notes")
    os.link(inbox / "eve" / LAB / f"{LAB}.ipynb", tmp_path / "another-name.ipynb")
    kit.hand_in(inbox, "ari", LAB, "[" * 200_000 + "]" * 200_000)  # deeper than the JSON parser goes
    rows = {r["student"]: r for r in autograde.collect(toy, inbox)}
    assert rows["ari"]["status"] == "collected" and "nested too deeply" in rows["ari"]["message"], rows["ari"]
    assert rows["bob"]["status"] == "skipped" and "hand in the notebook and its weights/ folder only" in rows["bob"]["message"]
    assert rows["cat"]["status"] == "skipped" and "holds symbolic links (notes.txt)" in rows["cat"]["message"]
    assert rows["dan"]["status"] == "skipped" and "neither a file nor a folder (a pipe" in rows["dan"]["message"]
    assert rows["eve"]["status"] == "skipped" and "holds a hard link" in rows["eve"]["message"]
    assert rows["fay"]["status"] == rows["Fay"]["status"] == "collected", rows["fay"]
    assert "differs only in case from Fay" in rows["fay"]["message"] and "from fay" in rows["Fay"]["message"]
    assert sorted(p.name for p in toy.folder("submitted").iterdir()) == ["Fay", "ari", "fay"]  # ari: an error row later


def test_collect_never_copies_what_a_link_swapped_in_during_the_copy_points_to(toy, tmp_path):
    """A student on a hub can change their hand-in folder while it is collected: a file that turns into a link
    to a file only root may read, again and again, never gets that file copied into the course."""
    secret = tmp_path / "root-only.txt"
    token = f"coursekit-secret-{os.getpid()}-{time.time_ns()}"
    secret.write_text(token)
    secret.chmod(0o600)
    inbox = tmp_path / "inbox"
    folder = kit.hand_in(inbox, "racer", LAB, kit.read(toy.folder("source") / LAB / f"{LAB}.ipynb")).parent
    flipper = subprocess.Popen([sys.executable, "-c", f"""
import os
folder = {str(folder)!r}
plain, link, name = os.path.join(folder, "p"), os.path.join(folder, "l"), os.path.join(folder, "notes.txt")
while True:
    open(plain, "w").write("my notes")
    os.rename(plain, name)
    os.symlink({str(secret)!r}, link)
    os.rename(link, name)
"""])
    try:
        outcomes = set()
        for _ in range(150):
            outcomes |= {r["status"] for r in autograde.collect(toy, inbox, update=True)}
            for path in toy.folder("submitted").rglob("*"):
                assert not path.is_file() or token not in path.read_text(errors="replace"), path
    finally:
        flipper.kill()
        flipper.wait()
    assert outcomes & {"collected", "updated", "unchanged"} and "skipped" in outcomes, outcomes  # both were seen


def test_autograde_without_generate_says_what_to_run(toy, tmp_path):
    kit.hand_in(tmp_path / "inbox", "ann", LAB, kit.read(toy.folder("source") / LAB / f"{LAB}.ipynb"))
    autograde.collect(toy, tmp_path / "inbox")
    with pytest.raises(autograde.GradingError, match="python -m autograde generate"):
        autograde.autograde(toy, mode="smoke")


def test_grading_mode_ignores_a_mode_set_inside_the_notebook():
    """A student's ``os.environ['COURSE_MODE'] = 'smoke'`` must not lower the hidden tests' thresholds."""
    code = ("import os\nfrom course_utils import modes\nos.environ['COURSE_MODE'] = 'smoke'\n"
            "print(modes.current_mode(), modes.grading_mode())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=autograde.tool_env(COURSE_MODE="laptop"), check=True)
    assert out.stdout.split() == ["smoke", "laptop"]


def slow_batch(course: autograde.Course, inbox: Path, n: int, seconds: int) -> list[str]:
    """``n`` solved toy hand-ins, each with a cell that sleeps ``seconds`` (time to kill a worker)."""
    autograde.generate(course)
    source, release = kit.notebooks(course, LAB)
    slow = kit.insert_before_tests(kit.solved(release, source), f"import time\ntime.sleep({seconds})")
    students = [f"s{i}" for i in range(n)]
    for student in students:
        kit.hand_in(inbox, student, LAB, slow)
    autograde.collect(course, inbox)
    return students


def recorded_once(course: autograde.Course, students: list[str]) -> None:
    """Every student graded with full marks, once in the gradebook and once in their log."""
    from nbgrader.api import Gradebook

    with Gradebook(course.settings()["db_url"], course.settings()["course_id"]) as gb:
        ids = [s.student.id for s in gb.find_assignment(LAB).submissions]
    assert sorted(ids) == students
    for student in students:
        assert kit.item_scores(course, LAB, student) == {"test_double": (1, 1), "test_mean": (2, 2)}
        log = (course.config_dir / "reports" / "logs" / LAB / f"{student}.log").read_text()
        assert log.count("autograde finished: graded") == 1, log[-500:]


def test_a_worker_that_dies_mid_task_loses_no_grade(toy, tmp_path):
    """A LocalCluster of 2 workers; one worker process is killed while it grades: its task is retried once."""
    import threading

    import psutil

    from autograde import cgroups

    students = slow_batch(toy, tmp_path / "inbox", 4, 8)
    killed, left = [], []

    def kill_a_grading_worker():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "nbgrader" in " ".join(proc.cmdline()) and "autograde" in proc.cmdline():
                        worker = proc.parent()
                        time.sleep(3)  # mid-task: nbgrader and its kernel are running
                        # its work and sandbox folders, its cgroups: named with its process id
                        left.extend([*Path(tempfile.gettempdir()).glob(f"*-p{worker.pid}-*"),
                                     *(cgroups.ROOT / "pids" / cgroups.PARENT).glob(f"*-p{worker.pid}-*")])
                        worker.kill()
                        killed.append(worker.pid)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_grading_worker)
    killer.start()
    results = autograde.autograde(toy, [LAB], mode="smoke", workers=2)
    killer.join()
    assert killed, "no grading worker was found to kill"
    # what the killed worker left went with the next grading task
    assert left and not [path for path in left if path.exists()], left
    assert sorted(r.student for r in results) == students
    assert all(r.status == "graded" for r in results), [(r.student, r.message) for r in results]
    recorded_once(toy, students)
    assert (toy.config_dir / "reports" / f"{LAB}.html").read_text().count("data:image/png;base64") == 2


def test_a_local_cluster_leaves_each_later_hand_in_its_share_of_the_cores(monkeypatch):
    """Dask's nanny writes OMP_NUM_THREADS=1 into the environment of the process that starts a LocalCluster;
    it must not, or every later run of that process (a benchmark, a script grading lab after lab) would take it
    for the instructor's setting and give each hand-in one thread on a machine whose cores sit idle."""
    from autograde import options as run_options
    from autograde.cluster import open_client

    if run_options.usable_cores() < 2:
        pytest.skip("one core: one thread per hand-in is right anyway")
    threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    for var in threads:  # as an instructor's shell has them (the test suite sets them for its own processes)
        monkeypatch.delenv(var, raising=False)
    with open_client(workers=1) as client:
        assert client.submit(os.getpid, pure=False).result() != os.getpid()  # a worker process was started
    assert not [var for var in threads if var in os.environ], {v: os.environ[v] for v in threads if v in os.environ}
    later = RunOptions.build(autograde.Course(kit.REPO), workers=1).env()
    assert later["OMP_NUM_THREADS"] == later["MKL_NUM_THREADS"] == str(run_options.usable_cores())


def test_the_local_share_counts_only_the_cores_this_process_may_use():
    """A container or a Slurm job may pin the grader to fewer cores than the machine has: the default workers and each
    hand-in's threads come from those cores (the CPU affinity), not from every core the machine has."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to pin the grader to one")
    script = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
              "import autograde\nfrom autograde.options import RunOptions\n"
              "print(RunOptions.build(autograde.Course(autograde.REPO), workers=1).threads)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=autograde.tool_env(),
                         check=True)
    assert out.stdout.split() == ["1"], out.stdout + out.stderr


def test_grading_on_a_separately_started_dask_cluster(toy, tmp_path):
    """`dask scheduler` and `dask worker` as their own processes; the CLI grades through --scheduler. Each hand-in
    gets the worker machine's cores shared by the hand-ins graded there at once (here one worker, one thread: all
    of them), not a share of the instructor's machine computed for its default local workers."""
    students = slow_batch(toy, tmp_path / "inbox", 2, 1)
    address_file = tmp_path / "scheduler.json"
    env = autograde.tool_env()
    dask_cli = [str(Path(sys.executable).parent / "dask")]
    scheduler = subprocess.Popen([*dask_cli, "scheduler", "--scheduler-file", str(address_file), "--port", "0",
                                  "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = rogue = None
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(address_file.read_text())["address"]
        worker = subprocess.Popen([*dask_cli, "worker", "--scheduler-file", str(address_file), "--nthreads", "1",
                                   "--no-dashboard", "--no-nanny"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        # As an instructor's shell has it: no OMP_NUM_THREADS (the test suite sets one for its own processes).
        out = run_cli(toy, "autograde", "--mode", "smoke", "--scheduler", address,
                      without=("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"with the cluster at {address}" in out.stdout
        # Each worker machine has its own threads per hand-in, so the line gives the rule, not one machine's figure.
        assert ("limits: 300 s per cell, 900 s per submission with 2 threads or more, twice that where a worker "
                "gives a hand-in one") in out.stdout, out.stdout
        recorded_once(toy, students)
        report = max((toy.config_dir / "reports").glob("autograde-*.csv"))
        threads = {row["student"]: row["threads"] for row in csv.DictReader(report.open())}
        assert threads == {s: str(len(os.sched_getaffinity(0))) for s in students}, threads

        # A second worker with other kit code (a machine not updated): the run refuses before grading anything.
        other = tmp_path / "other-kit"
        for name, folder in cluster.PACKAGES.items():
            shutil.copytree(folder, other / name, ignore=shutil.ignore_patterns("__pycache__"))
        with (other / "autograde" / "options.py").open("a") as f:
            f.write("# a later version\n")
        rogue = subprocess.Popen([*dask_cli, "worker", "--scheduler-file", str(address_file), "--nthreads", "1",
                                  "--no-dashboard", "--no-nanny", "--name", "rogue"],
                                 env=env | {"PYTHONPATH": str(other)}, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            rogue_address = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "rogue")
        out = run_cli(toy, "autograde", "--mode", "smoke", "--scheduler", address, "--force")
        assert out.returncode == 2, out.stdout + out.stderr
        assert "1 of the cluster's 2 worker(s) run other course-kit code" in out.stderr, out.stderr
        assert f"{rogue_address}: imported " in out.stderr and "nothing was graded" in out.stderr, out.stderr
        recorded_once(toy, students)  # the grades of the first run are as they were
    finally:
        for proc in (rogue, worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_a_task_on_a_worker_with_other_kit_code_grades_nothing(tmp_path, monkeypatch):
    """The client's kit code travels with each task: a worker that imported other code, or whose code on disk (what
    its nbgrader processes import) changed during the run, refuses the hand-in at once with an error row that says
    why, and the hand-in stays ungraded, to be graded again."""
    from autograde import record, worker
    from autograde.options import Job

    opts = replace(RunOptions.build(autograde.Course(kit.REPO), workers=1), code=cluster.LOADED)
    cluster.check_task(opts.code)  # the same code: graded
    refused = r"other course-kit code .* than the run's client \(0{12}\)"
    with pytest.raises(autograde.GradingError, match=refused) as exc:
        worker.grade_task(Job(LAB, "s0"), replace(opts, code="0" * 12))
    row = record.lost(LAB, "s0", exc.value)
    assert row.status == "error" and "install the same kit on every grading machine" in row.problem, row.problem

    copy_of_kit = {name: shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
                   for name, folder in cluster.PACKAGES.items()}
    monkeypatch.setattr(cluster, "PACKAGES", copy_of_kit)
    cluster.check_task(opts.code)  # the same files elsewhere
    with (tmp_path / "course_utils" / "grading.py").open("a") as f:
        f.write("# edited while a run grades\n")
    with pytest.raises(autograde.GradingError, match=f"imported {cluster.LOADED}, on disk (?!{cluster.LOADED})"):
        cluster.check_task(opts.code)


class _AnsweringClient:
    """A stand-in for a ``distributed.Client``: each worker's answer to ``client.run(versions)`` as given."""

    def __init__(self, answers: dict):
        self.answers = answers

    def run(self, function, on_error="raise"):
        assert function is cluster.versions and on_error == "return"
        return self.answers


def test_other_library_versions_on_a_worker_warn_but_grade(caplog):
    """Same kit code, another torch or nbconvert on one worker: grading goes on (scores may differ in their last
    digits), and the warning names the library, this machine's version, the worker and its version."""
    here = cluster.versions()
    odd = here | {"torch": "2.13.0", "nbconvert": "not installed"}
    answers = {"tcp://10.0.0.5:4001": here, "tcp://10.0.0.6:4001": odd}
    with caplog.at_level(logging.WARNING, logger="autograde.cluster"):
        cluster.check_workers(_AnsweringClient(answers))
    warned = sorted(r.getMessage() for r in caplog.records if r.name == "autograde.cluster")
    assert warned == [f"nbconvert {here['nbconvert']} here, but other versions on tcp://10.0.0.6:4001 (not installed): "
                      "scores may differ in their last digits",
                      f"torch {here['torch']} here, but other versions on tcp://10.0.0.6:4001 (2.13.0): scores may "
                      "differ in their last digits"], warned
    caplog.clear()
    cluster.check_workers(_AnsweringClient({"tcp://10.0.0.5:4001": here}))  # all alike: nothing to say
    assert not [r for r in caplog.records if r.name == "autograde.cluster"]
    with pytest.raises(autograde.GradingError, match=r"1 of the cluster's 2 worker\(s\).*10\.0\.0\.6:4001: no answer"):
        cluster.check_workers(_AnsweringClient({"tcp://10.0.0.5:4001": here,
                                                "tcp://10.0.0.6:4001": AttributeError("no versions")}))


def test_time_limits_grow_for_a_hand_in_with_fewer_threads():
    """The mode's time limits are for a hand-in with two threads; one thread doubles them, more change nothing,
    and a limit the instructor set is kept as set."""
    from autograde import config

    for mode in config.MODES:
        base = config.limits(mode)
        assert base.for_threads(2) == base.for_threads(16) == base
        one = base.for_threads(1)
        assert (one.cell_timeout, one.submission_timeout) == (2 * base.cell_timeout, 2 * base.submission_timeout)
        assert (one.memory_limit, one.process_limit) == (base.memory_limit, base.process_limit)
    opts = RunOptions.build(autograde.Course(kit.REPO), mode="laptop", cell_timeout=100)
    assert opts.hand_in_limits({"OMP_NUM_THREADS": "1"}).cell_timeout == 100
    assert opts.hand_in_limits({"OMP_NUM_THREADS": "1"}).submission_timeout == 7200


def test_plain_nbgrader_gets_the_same_cell_limit_rule():
    """``nbgrader autograde`` run by hand reads autograde/nbgrader_config.py: its cell limit follows the same rule
    (one thread doubles the mode's, two keep it)."""
    from autograde import config

    load = ("from traitlets.config.loader import PyFileConfigLoader\n"
            "print(PyFileConfigLoader('nbgrader_config.py', path='autograde').load_config().Execute.timeout)")
    base = config.limits("laptop").cell_timeout
    for threads, expected in (("1", 2 * base), ("2", base)):
        env = dict(os.environ, OMP_NUM_THREADS=threads, COURSE_GRADING_MODE="laptop")
        out = subprocess.run([sys.executable, "-c", load], cwd=kit.REPO, env=env, capture_output=True, text=True,
                             check=True).stdout
        assert int(out) == expected, (threads, out)


def test_a_hand_in_with_one_thread_gets_the_longer_cell_limit(toy, monkeypatch, caplog):
    """End to end: with the mode's cell limit at 3 s and one thread per hand-in (the instructor's OMP_NUM_THREADS),
    a cell of 4.5 s keeps its point (its limit is 6 s) and a cell of 9 s is stopped; the run's log says so."""
    from autograde import config, release

    monkeypatch.setitem(config.TIME_LIMITS, "smoke", (3, 120))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    release.generate(toy, [LAB])
    source, released = kit.notebooks(toy, LAB)
    solved = kit.solved(released, source)
    inbox = toy.root / "inbox"
    for student, seconds in (("slow", 4.5), ("slower", 9)):
        kit.hand_in(inbox, student, LAB, kit.fill(solved, {
            "double": f"import time\ntime.sleep({seconds})\ndef double(x):\n    return 2 * x"}))
    autograde.collect(toy, inbox)
    with caplog.at_level(logging.INFO, logger="autograde"):
        results = {r.student: r for r in autograde.autograde(toy, [LAB], mode="smoke", workers=1)}
    logged = [r.getMessage() for r in caplog.records]
    assert (results["slow"].time_limited, results["slower"].time_limited) == ("", "cell")
    assert not [line for line in logged if "ran into" in line], logged  # one hand-in of a lab: only its own note
    # The class report's notes tell the instructor which cell was stopped, at which limit, and what to do.
    assert results["slower"].status == "graded" and not results["slow"].message, results["slow"].message
    assert ("double stopped at the limit of 6 s per cell (the tests that need it fail); if the hand-in is only slow "
            "on this machine, grade it again with a higher --cell-timeout") in results["slower"].message
    assert kit.item_scores(toy, LAB, "slow") == {"test_double": (1, 1), "test_mean": (2, 2)}
    assert kit.item_scores(toy, LAB, "slower") == {"test_double": (0, 1), "test_mean": (2, 2)}
    assert "CellTimeoutError" in kit.cell_errors(toy, LAB, "slower")["double"]
    assert any("limits: 6 s per cell, 240 s per submission (the mode's 3 s and 120 s are for 2 threads; "
               "each hand-in here has 1)" in line for line in logged), logged


def test_a_lab_where_half_the_hand_ins_ran_into_a_time_limit_is_named_after_the_run():
    """Many hand-ins of one lab stopped at a limit point at the machine, not the students: the run warns, once per
    lab; a few looping hand-ins in a batch are only their own notes."""
    from autograde import record
    from autograde.worker import Result

    def batch(lab: str, limited: list[str]) -> list[Result]:
        return [Result(f"s{i}", lab, time_limited=kind) for i, kind in enumerate(limited)]

    warned = record.time_limit_warnings(batch("lab5", ["cell", "cell", "submission", ""])
                                        + batch("lab1", ["cell", "", "", "", ""]) + batch("lab2", ["cell"]))
    assert warned == ["lab5: 3 of 4 hand-ins ran into the limit per cell and the limit per submission: the limits may "
                      "be too short for this machine. Look at one of them by hand; if it is only slow, grade them "
                      "again with a higher --cell-timeout (and --submission-timeout) and --force"], warned
    assert record.time_limit_warnings(batch("lab1", ["cell", "cell", "", "", ""])) == []


def test_each_worker_machine_shares_its_own_cores(monkeypatch):
    """The threads of a hand-in: the cores of the machine it is graded on, shared by the hand-ins the cluster grades
    there at once; the client's own share outside a Dask worker and on a host the scheduler did not list."""
    from autograde import options as run_options

    workers = {"tcp://10.0.0.5:4001": {"host": "10.0.0.5", "nthreads": 1},
               "tcp://10.0.0.5:4002": {"host": "10.0.0.5", "nthreads": 1},
               "tcp://10.0.0.6:4001": {"host": "10.0.0.6", "nthreads": 4}}
    slots = run_options.slots_by_host(workers)
    assert slots == {"10.0.0.5": 2, "10.0.0.6": 4}
    opts = replace(RunOptions.build(autograde.Course(kit.REPO), workers=1), threads=7, slots_by_host=slots)
    monkeypatch.setattr(run_options, "usable_cores", lambda: 8)  # an 8-core worker machine: 2 at once get 4 each
    assert opts.threads_here() == 7  # not in a Dask worker
    for host, expected in (("10.0.0.5", 4), ("10.0.0.6", 2), ("10.0.0.9", 7)):
        monkeypatch.setattr(run_options, "_worker_host", lambda host=host: host)
        assert opts.threads_here() == expected, host
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert replace(opts, passed_env={}).env()["OMP_NUM_THREADS"] == "7"  # 10.0.0.9: unlisted
    assert replace(opts, passed_env={"OMP_NUM_THREADS": "3"}).env()["OMP_NUM_THREADS"] == "3"  # the instructor's


def test_audit_sample_is_a_share_or_a_count_per_lab():
    from autograde import audit

    jobs = [(lab, f"s{i:02d}") for lab in ("lab_a", "lab_b") for i in range(20)]
    tenth = audit.pick(jobs, 0.1, seed=1)
    assert sorted(lab for lab, _ in tenth) == ["lab_a"] * 2 + ["lab_b"] * 2
    assert len(audit.pick(jobs, 3, seed=1)) == 6 and len(audit.pick(jobs, 0.01, seed=1)) == 2  # at least one
    assert audit.pick(jobs, 0.1, seed=1) == tenth and not audit.pick(jobs, 0)
    assert audit.differs("accuracy", 0.90, 0.84) and not audit.differs("accuracy", 0.90, 0.86)
    assert audit.differs("reconstruction", 10.0, 7.5) and not audit.differs("reconstruction", 9.0, 7.5)


def test_a_lab_where_most_hand_ins_carry_no_weights_is_named_before_a_handed_in_run(tmp_path):
    """Graded from their weights, hand-ins without any lose every accuracy item: when half of a lab's do, the
    download is the likelier cause, and the run says so before it grades; one student's forgotten folder is not
    a warning (their own rows say what it cost)."""
    from autograde import audit

    def hand_in(student: str, lab: str, weights: bool) -> tuple[str, str]:
        folder = tmp_path / student / lab
        (folder / "weights").mkdir(parents=True)
        (folder / "weights" / ("mlp.pt" if weights else "notes.txt")).write_bytes(b"w")
        return lab, student

    jobs = [hand_in(f"s{i}", "lab1", weights=i == 0) for i in range(3)]  # 2 of 3 bare (one has only notes.txt)
    jobs += [hand_in(f"s{i}", "lab2", weights=i != 0) for i in range(3)]  # 1 of 3 bare
    warned = audit.without_weights_warnings(tmp_path, jobs + [("lab3", "ghost")])  # lab3: one hand-in, none there
    assert warned == ["lab1: 2 of 3 hand-ins carry no weights (weights/*.pt next to the notebook), so each loses "
                      "every accuracy item. If the students did hand them in, the download or the collection left "
                      "them out: collect the whole folders again (collect --update); or grade without --handed-in, "
                      "which re-trains every hand-in"], warned
