"""The grading sandbox's parts on their own: bubblewrap, cgroup limits, the integrity probe, the outside scorer."""
from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
import torch
from torch import nn

from autograde import cgroups, disk, sandbox, scorer, worker
from autograde.sandbox import Mount
from autograde.course import Course
from course_utils import checks, grading, kernels, leftovers
from course_utils.modes import MODES

from kit import REPO

FOUND = sandbox.support()


def needs(what: str) -> pytest.MarkDecorator:
    """Skip without bubblewrap / cgroups locally; fail in CI (COURSE_SANDBOX_REQUIRED)."""
    missing = (what == "bwrap" and not FOUND.bwrap) or (what == "cgroups" and not (FOUND.bwrap and FOUND.cgroups))
    if os.environ.get("COURSE_SANDBOX_REQUIRED"):
        return pytest.mark.skipif(False, reason="COURSE_SANDBOX_REQUIRED: runs, and fails where the sandbox is missing")
    return pytest.mark.skipif(missing, reason="; ".join(FOUND.warnings()) or "sandbox available")


def run_in(prefix: list[str], code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def outside_secrets(tmp_path):
    """What no sandbox may read: a root-only file outside any course, another course's folder, a variable."""
    token = uuid.uuid4().hex
    secret = Path("/root") / f"coursekit-test-secret-{token}"
    other = Path("/srv") / f"coursekit-test-course-{token}"
    made = []
    try:
        secret.write_text("root only")
        secret.chmod(0o600)
        made.append(secret)
        (other / "solutions").mkdir(parents=True)
        made.append(other)
        (other / "solutions" / "hidden.ipynb").write_text("another course's hidden tests")
    except OSError as exc:  # not root: nothing to hide from a sandbox that is not root either
        pytest.skip(f"cannot make the outside files ({exc})")
    yield {"secret": secret, "other": other / "solutions" / "hidden.ipynb", "var": ("COURSEKIT_TEST_TOKEN", token)}
    for path in made:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@needs("bwrap")
def test_sandbox_sees_only_its_allowlist_and_writes_only_its_own(tmp_path, outside_secrets):
    mine = tmp_path / "mine"
    mine.mkdir()
    (tmp_path / "neighbour.ipynb").write_text("the next hand-in")
    var, token = outside_secrets["var"]
    private = [outside_secrets["secret"], outside_secrets["other"], REPO / ".git" / "HEAD", REPO / "solutions",
               "/etc/shadow", tmp_path / "neighbour.ipynb", Path.home() / ".bash_history"]
    code = f"""
import os, socket
for path in {[str(p) for p in private]!r}:
    print('there' if os.path.exists(path) else 'absent', path)
print('variable', {var!r} in os.environ, sorted(os.environ))
print('cgroups', os.listdir('/sys/fs/cgroup') if os.path.isdir('/sys/fs/cgroup') else [])  # no other hand-in's names
open({str(mine / 'out.txt')!r}, 'w').write('ok')
for path in ('/usr/x', '/x', {str(REPO / 'course_utils' / 'x')!r}):
    try:
        open(path, 'w')
        print('wrote', path)
    except OSError as exc:
        print('refused', path, exc.strerror)
try:
    socket.create_connection(('1.1.1.1', 80), timeout=2)
    print('network')
except OSError as exc:
    print('no network')
print(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])
import course_utils.data  # the course's code and the environment are there
"""
    stage = sandbox.new_stage()
    try:
        prefix = sandbox.prefix([*sandbox.course_mounts(), sandbox.Mount.same(mine, writable=True)], stage=stage)
        out = run_in(prefix, code, env=sandbox.clean_env(dict(os.environ, **{var: token})))
    finally:
        shutil.rmtree(stage)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert lines[:len(private)] == [f"absent {p}" for p in private], lines
    assert lines[len(private)].startswith("variable False"), lines[len(private)]
    assert lines[len(private) + 1] == "cgroups []", lines[len(private) + 1]
    assert (mine / "out.txt").read_text() == "ok"
    assert all(line.startswith("refused") for line in lines[-5:-2]), "\n".join(lines)
    assert not Path("/usr/x").exists() and not (REPO / "course_utils" / "x").exists()
    assert lines[-2] == "no network"
    assert lines[-1] == f"{sandbox.SANDBOX_UID} 0000000000000000"  # not root, no capabilities


@needs("bwrap")
def test_sandboxed_processes_are_not_root_outside():
    stage = sandbox.new_stage()
    try:
        proc = subprocess.Popen(sandbox.prefix([], stage=stage) + ["/bin/sleep", "30"])
        time.sleep(1)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        uids = {p.name(): p.uids().real for p in tree}
        proc.kill()
        proc.wait()
    finally:
        shutil.rmtree(stage)
    assert "sleep" in uids, uids
    if os.geteuid() == 0:
        assert all(uid == sandbox.identity().uid != 0 for uid in uids.values()), uids
    else:
        assert all(uid == os.geteuid() for uid in uids.values()), uids


def test_clean_env_passes_only_named_variables(monkeypatch, tmp_path):
    env = sandbox.clean_env({"AWS_SECRET_ACCESS_KEY": "x", "COURSE_MODE": "smoke", "OMP_NUM_THREADS": "1",
                             "HOME": "/root", "PATH": "/secret/bin", "SSH_AUTH_SOCK": "/tmp/agent"})
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SSH_AUTH_SOCK" not in env
    assert env["COURSE_MODE"] == "smoke" and env["OMP_NUM_THREADS"] == "1" and env["HOME"] == sandbox.SANDBOX_HOME
    assert "/secret/bin" not in env["PATH"]


@needs("cgroups")
def test_memory_limit_kills_a_hog_and_says_so():
    group = cgroups.Cgroup("test-mem", memory=256 << 20, processes=64)
    try:
        stage = sandbox.new_stage()
        prefix = sandbox.prefix(sandbox.course_mounts(), stage=stage, cgroup_procs=group.procs_files)
        out = run_in(prefix, "x = bytearray(600 << 20)\nx[::4096] = b'1' * len(x[::4096])\nprint('survived')",
                     env=sandbox.clean_env(dict(os.environ)))
        shutil.rmtree(stage)
        assert out.returncode != 0 and "survived" not in out.stdout
        assert group.breaches() == ["used more than 256 MiB of memory (the limit); its kernel was killed"]
    finally:
        group.close()
    assert not group.dirs["memory"].exists() and not group.dirs["pids"].exists()


@needs("cgroups")
def test_process_limit_stops_a_fork_bomb():
    group = cgroups.Cgroup("test-pids", memory=None, processes=20)
    try:
        prefix = sandbox.join_cgroup(group.procs_files, [])
        code = ("import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
                "    except OSError:\n        break\n    if pid == 0:\n        os.close(1)\n        time.sleep(120)\n        os._exit(0)\n"
                "    n += 1\nprint(n)")
        # The children close their copy of stdout, so reading it ends when the parent exits, not 120 s later.
        proc = subprocess.Popen([*prefix, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started = int(proc.communicate(timeout=60)[0])
        assert started < 20
        assert group.process_limit_hit() and "more than 20 processes" in group.breaches()[0]
        assert group.pids()  # the sleeping children are still there...
        group.kill()
        assert not group.pids()  # ...until the grader kills them all
    finally:
        group.close()


@needs("cgroups")
def test_a_box_holds_its_size_and_a_sandbox_holds_no_other_hand_ins_box(tmp_path):
    """A box refuses writes past its size; a sandbox's private mount namespace (where root starts bwrap) keeps its
    own box's binds and lets go of every other box, so another hand-in's box is freed when that hand-in ends."""
    mine, other = tmp_path / "mine" / "box", tmp_path / "other" / "box"
    disk.mount(mine, 4 << 20)
    disk.mount(other, 4 << 20)
    try:
        with pytest.raises(OSError) as full:
            (mine / "junk").write_bytes(b"x" * (5 << 20))
        assert full.value.errno == errno.ENOSPC and disk.full(mine) and not disk.full(other)
        stage = sandbox.new_stage()
        (mine / "cwd").mkdir()
        prefix = sandbox.prefix([Mount.same(mine / "cwd", writable=True)], stage=stage)
        proc = subprocess.Popen([*prefix, "sleep", "30"])
        try:
            deadline = time.monotonic() + 30
            while "bwrap" not in Path(f"/proc/{proc.pid}/comm").read_text() and time.monotonic() < deadline:
                time.sleep(0.05)  # unshare, then sh, setpriv and bwrap, each exec'd in the same process
            held = Path(f"/proc/{proc.pid}/mounts").read_text()
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(stage, ignore_errors=True)
        boxes = [line.split()[1] for line in held.splitlines() if line.startswith(disk.FS_NAME + " ")]
        assert boxes and all(b.startswith(str(stage)) for b in boxes), boxes
    finally:
        disk.unmount(mine)
        disk.unmount(other)
    assert not os.path.ismount(mine) and not os.path.ismount(other)


@needs("cgroups")
def test_what_a_dead_grader_left_is_swept_and_a_live_ones_is_not(monkeypatch):
    """A grader killed mid-hand-in leaves its folders (a kernel's socket folder too, a box still mounted in its
    work folder) and a cgroup with a process in it; the sweep removes those, and leaves the live grader's and
    other programs' alone."""

    code = ("import pathlib, subprocess, sys, tempfile, time\nfrom autograde import cgroups, disk, sandbox\n"
            "from course_utils import leftovers\n"
            "from course_utils import kernels\n"
            "group = cgroups.Cgroup('test-sweep', memory=64 << 20, processes=8)\n"
            "subprocess.Popen(sandbox.join_cgroup(group.procs_files, ['sleep', '300']), start_new_session=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "while not group.pids():\n    time.sleep(0.01)\n"
            "work = tempfile.mkdtemp(prefix=leftovers.tag(sys.argv[1]))\n"
            "disk.mount(pathlib.Path(work) / 'box', 1 << 20)\n"
            "km = kernels.SocketKernelManager()\nassert km.use_sockets()\n"
            "print(group.name, sandbox.new_scratch(), work, km.socket_folder, flush=True)\n"
            "sys.stdin.read()  # until the test has looked: then it dies without cleaning up")
    grader = subprocess.Popen([sys.executable, "-c", code, worker.WORK_PREFIX], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    name, scratch, work, sockets = grader.stdout.readline().split()
    dead_group = [cgroups.ROOT / c / cgroups.PARENT / name for c in cgroups.CONTROLLERS]
    sleeper = {int(pid) for folder in dead_group for pid in (folder / "cgroup.procs").read_text().split()}
    assert sleeper and Path(scratch).is_dir() and Path(work).is_dir() and Path(sockets).is_dir()
    assert os.path.ismount(Path(work) / "box")
    grader.stdin.close()
    assert grader.wait(timeout=60) == 0
    live = sandbox.new_scratch()
    mine = cgroups.Cgroup("test-sweep-live", memory=None, processes=None)
    other = Path(tempfile.mkdtemp(prefix=f"{sandbox.SCRATCH_PREFIX}notes-"))  # no process id in its name
    try:
        with monkeypatch.context() as not_root:  # a grader without root leaves root's cgroups alone, and goes on
            not_root.setattr(os, "geteuid", lambda: 1000)
            assert cgroups.sweep() == []
        worker.sweep_leftovers()  # (a grading task running beside this test may have swept them first)
        assert not any(Path(f).exists() for f in (scratch, work, sockets)) and not any(d.exists() for d in dead_group)
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in sleeper)
        assert live.is_dir() and all(d.is_dir() for d in mine.dirs.values()) and other.is_dir()
    finally:
        mine.close()
        for folder in (live, other):
            shutil.rmtree(folder, ignore_errors=True)


def test_every_folder_the_kit_makes_in_a_temp_folder_names_its_maker():
    """A folder made with mkdtemp or TemporaryDirectory is named coursekit-<what>-p<pid>-..., so that the sweep
    above can remove it when its maker is killed before it can (the benchmarks' folders too: a benchmark
    stopped with Ctrl-C twice, or killed, leaves its folder for the next grading task to sweep)."""
    unnamed = []
    for path in sorted([*(REPO / "autograde").glob("*.py"), *(REPO / "course_utils").glob("*.py"),
                        *(REPO / "benchmarks").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "func", None)
            if not (isinstance(node, ast.Call) and getattr(name, "attr", getattr(name, "id", "")) in ("mkdtemp",
                                                                                                      "TemporaryDirectory")):
                continue
            prefix = next((ast.unparse(k.value) for k in node.keywords if k.arg == "prefix"), "")
            tagged = re.fullmatch(r"leftovers\.tag\((\w+|'coursekit-[\w-]+')\)|(PREFIX \+ f'|f'coursekit-[\w-]+)p\{os\.getpid\(\)\}-'",
                                  prefix)
            if not tagged:
                unnamed.append(f"{path.relative_to(REPO)}:{node.lineno} prefix={prefix or None}")
    assert not unnamed, unnamed
    assert all(p.startswith(leftovers.KIT_PREFIX) for p in (worker.WORK_PREFIX, sandbox.SCRATCH_PREFIX, kernels.PREFIX))


def test_sandbox_folders_go_where_the_grading_user_reaches_them(monkeypatch):
    """A private temp folder (mode 700, as ``mktemp -d`` makes) or a long one must not cost the sandbox."""
    private = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    deep = private / ("d" * 40)
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(private))
        assert sandbox.scratch_parent() == "/tmp"
        private.chmod(0o755)
        assert sandbox.scratch_parent() == str(private) and sandbox.new_scratch().parent == private
        deep.mkdir(mode=0o755)
        monkeypatch.setattr(tempfile, "tempdir", str(deep))
        assert sandbox.scratch_parent() == "/tmp"
    finally:
        shutil.rmtree(private)


@needs("bwrap")
def test_sandbox_works_with_a_private_temp_folder():
    private = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    try:
        probe = "from autograde import sandbox; print(sandbox.support().bwrap_problem)"
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=dict(os.environ, TMPDIR=str(private)), timeout=120)
        assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
        assert not list(private.iterdir())  # the probe's stage went elsewhere, and went
    finally:
        shutil.rmtree(private)


def test_support_explains_what_is_missing():
    missing = sandbox.Support(bwrap=None, bwrap_problem="bwrap is not installed", cgroups=False,
                              cgroups_problem="only root can create cgroups", disk=False, disk_problem="")
    text = " ".join(missing.warnings())
    assert "UNSANDBOXED" in text and "apt-get install bubblewrap" in text and "NO LIMITS" in text
    no_disk = sandbox.Support(bwrap="/usr/bin/bwrap", bwrap_problem="", cgroups=True, cgroups_problem="",
                              disk=False, disk_problem="only root can mount the size-limited folders")
    assert "NO DISK LIMIT" in " ".join(no_disk.warnings()) and "TMPDIR" in " ".join(no_disk.warnings())
    assert sandbox.Support(bwrap="/usr/bin/bwrap", bwrap_problem="", cgroups=True, cgroups_problem="",
                           disk=True, disk_problem="").warnings() == []


# --------------------------------------------------------------------------- integrity probe

PROBE = f"import runpy; print(runpy.run_path({str(REPO / 'course_utils' / 'integrity.py')!r})['problems']())"


def probe(patch: str) -> list[str]:
    code = "import torch, torch.nn.functional as F\nfrom course_utils import grading, training\n" + patch + "\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_probe_finds_nothing_in_a_clean_process():
    assert probe("") == []


@pytest.mark.parametrize("patch, found", [
    ("grading.expect_close = lambda *a, **k: None", "course_utils.grading.expect_close"),
    ("import functools\ngrading.test_accuracy = functools.wraps(grading.test_accuracy)(lambda *a, **k: 1.0)",
     "course_utils.grading.test_accuracy"),
    ("torch.optim.SGD.step = lambda self, closure=None: None", "torch.optim.SGD.step"),
    ("torch.optim.Optimizer.zero_grad = lambda self, set_to_none=True: None", "torch.optim.Optimizer.zero_grad"),
    ("torch.Tensor.backward = lambda self, *a, **k: None", "torch.Tensor.backward"),
    ("F.softmax = lambda x, dim=None: x", "torch.nn.functional.softmax"),
    ("torch.allclose = lambda *a, **k: True", "torch.allclose"),
    ("import builtins\nbuiltins.round = lambda *a: 0", "builtins.round"),
    ("class Linear(torch.nn.Module): pass\ntorch.nn.Linear = Linear", "torch.nn.Linear"),
    # objects whose class has a __call__ method, and callables that are not the file's function at all
    ("class Yes:\n    def __call__(self, *a, **k): return True\ntorch.allclose = Yes()", "torch.allclose"),
    ("class Pass:\n    def __call__(self, *a, **k): return None\ngrading.expect_at_least = Pass()",
     "course_utils.grading.expect_at_least"),
    ("grading.expect_at_most = print", "course_utils.grading.expect_at_most is no longer the function"),
    ("import functools\ngrading.expect_shape = functools.partial(print)",
     "course_utils.grading.expect_shape is no longer the function"),
])
def test_probe_names_what_was_rebound(patch, found):
    problems = probe(patch)
    expected = found if " is no longer " in found else f"{found} was replaced"
    assert any(p.startswith(expected) for p in problems), problems
    name = found.split(" ")[0]
    assert len([p for p in problems if p.split(" ")[0] == name]) == 1, problems  # once, with the most it knows


# --------------------------------------------------------------------------- outside scoring

def lab_sources() -> list[Path]:
    return sorted(Course(REPO).folder("source").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", lab_sources(), ids=lambda p: p.stem)
def test_every_lab_scores_its_trained_models_outside_the_kernel(path):
    source = nbformat.read(path, as_version=4)
    by_mode = {mode: scorer.specs(source, mode) for mode in ("smoke", "laptop", "full")}
    assert by_mode["laptop"], f"{path.stem}: no grading.check_accuracy / check_reconstruction in a test cell"
    assert [s.label for s in by_mode["smoke"]] == [s.label for s in by_mode["full"]]
    for smoke, laptop in zip(by_mode["smoke"], by_mode["laptop"]):
        assert smoke.grade_id == laptop.grade_id and smoke.dataset in ("mnist", "cifar10")
        # smoke mode only asks for better than chance; laptop asks for more
        assert (smoke.bound <= laptop.bound) if smoke.kind == "accuracy" else (smoke.bound >= laptop.bound)
    assert "grading_mode()" not in path.read_text(), "hidden tests use grading.threshold(...)"


def test_specs_refuse_what_they_cannot_read():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('grading.check_accuracy(m, "mnist", at_least=my_threshold, label="x")')
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "acc", "points": 1}
    nb.cells = [cell]
    with pytest.raises(ValueError, match="acc: cannot read"):
        scorer.specs(nb, "smoke")
    cell.source = 'grading.check_accuracy(m, "mnist", at_least=0.5, label="x")'
    with pytest.raises(ValueError, match=r"acc: .*needs grading.hand_in\(model, 'x'\)"):
        scorer.specs(nb, "smoke")
    cell.source = 'grading.hand_in(m, "x")\n' + cell.source
    assert [s.label for s in scorer.specs(nb, "smoke")] == ["x"]


class Lookup(nn.Module):
    """Predicts from the mean pixel: a deterministic, barely trained model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 10)

    def forward(self, x):
        return self.linear(x.flatten(1).mean(dim=1, keepdim=True))


def test_exported_model_scores_as_the_live_one(tmp_path, mirror):
    torch.manual_seed(0)
    model = Lookup()
    path = grading.export_model(model, tmp_path / grading.export_name("Some Model!"), grading.example_input("mnist"))
    assert path.name == "some-model.pt2"
    live = grading.test_accuracy(model, "mnist", n_test=250, batch_size=100)
    assert checks.score_exported(path, "accuracy", "mnist", n_test=250) == pytest.approx(live)
    spec = scorer.Spec(grade_id="acc", kind="accuracy", label="Some Model!", dataset="mnist", bound=0.9,
                       options={"n_test": 250})
    row, = scorer.score(tmp_path, [spec])
    assert row["value"] == pytest.approx(live) and not row["passed"] and "needs at least 0.9" in row["message"]
    missing, = scorer.score(tmp_path / "nowhere", [spec])
    assert missing["value"] is None and "no trained model reached the grader" in missing["message"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "some-model.pt2").write_bytes(b"not a model")
    broken, = scorer.score(tmp_path / "broken", [spec])
    assert broken["value"] is None and "could not be scored" in broken["message"]


def test_check_accuracy_exports_only_when_the_grader_asks(tmp_path, mirror):
    code = ("import torch\nfrom torch import nn\nfrom course_utils import grading\n"
            "model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
            "try:\n    grading.check_accuracy(model, 'mnist', at_least=0.99, n_test=200, label='the MLP')\n"
            "except AssertionError as exc:\n    print('failed:', exc)\n")
    env = dict(os.environ, COURSE_EXPORT_DIR=str(tmp_path / "models"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "failed: the MLP is" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "models" / "the-mlp.pt2").is_file()
    # Setting the variable inside the notebook does not count: only the environment the kernel started with.
    code2 = f"import os\nos.environ['COURSE_EXPORT_DIR'] = {str(tmp_path / 'late')!r}\n" + code
    env.pop("COURSE_EXPORT_DIR")
    subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, env=env, timeout=300)
    assert not (tmp_path / "late").exists()


def test_a_plan_the_kernel_manager_does_not_know_is_refused_not_run_unsandboxed(tmp_path):
    """A grader and a kernel manager of different versions (a half-updated install) must not grade unprotected."""
    plan = sandbox.kernel_plan(tmp_path, [], tmp_path)
    assert sandbox.read_plan(plan)["sandbox"] is True and sandbox.read_plan(None) is None
    old = '{"work": "/tmp/w", "cgroup": [], "bwrap": ["bwrap", "--ro-bind", "/", "/"]}'  # the plan before version 2
    version = f'"version": {sandbox.PLAN_VERSION}'
    no_scratch = plan.replace(f'"scratch": {json.dumps(str(tmp_path))}', '"scratch": null')
    assert no_scratch != plan
    for text in (old, "not json", "[]", plan.replace(version, f'"version": {sandbox.PLAN_VERSION + 1}'), no_scratch):
        with pytest.raises(RuntimeError, match="refusing to start the kernel unsandboxed"):
            sandbox.read_plan(text)
    os.environ[sandbox.SANDBOX_VAR] = old
    try:
        from autograde.kernel import GradingKernelManager

        with pytest.raises(RuntimeError, match="refusing"):
            GradingKernelManager()
    finally:
        del os.environ[sandbox.SANDBOX_VAR]


@pytest.mark.parametrize("mode", MODES)
def test_the_limits_table_in_autograde_readme_is_what_grading_applies(mode):
    """autograde/README.md's "Grading mode and limits" table: the per-mode memory, time and process limits
    an instructor reads are the ones config.limits gives."""
    from autograde import config

    text = (REPO / "autograde" / "README.md").read_text().split("## Grading mode and limits", 1)[1]
    row = re.search(rf"^\| `{mode}` \| [^|]+ \| (\d+) s \| ([^|]+) \| ([\d.]+) GiB[^|]* \| (\d+) \|$", text, re.M)
    assert row, f"no row for {mode} in autograde/README.md's limits table"
    limits = config.limits(mode)
    submission = row[2].strip()
    seconds = float(submission[:-2]) * 3600 if submission.endswith(" h") else float(submission.removesuffix(" s"))
    assert (int(row[1]), seconds, float(row[3]), int(row[4])) == \
        (limits.cell_timeout, limits.submission_timeout, limits.memory_limit / (1 << 30), limits.process_limit)


def test_probe_sees_the_shell_between_cells_as_the_grader_asks():
    """The grader runs the probe as a user expression, after a cell and outside it, where IPython has taken
    ``get_ipython`` out of builtins again: the shell checks must still find a hook that cuts the hidden region
    out of every later cell (an object whose class has ``__call__``), and nothing in a kernel where a student
    only used what notebooks commonly use (magics and extensions that register IPython hooks of their own)."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    expr = f"__import__('runpy').run_path({str(REPO / 'course_utils' / 'integrity.py')!r})['problems']()"

    def problems_between_cells(code: str) -> list[str]:
        kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
        reply = kc.execute_interactive("", user_expressions={"p": expr}, timeout=60, output_hook=lambda msg: None)
        return eval(reply["content"]["user_expressions"]["p"]["data"]["text/plain"])

    try:
        usual = ["import torch\nfrom course_utils import grading", "%load_ext autoreload\n%autoreload 2",
                 "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",
                 "%config InlineBackend.figure_format = 'retina'", "from tqdm.auto import tqdm\nlist(tqdm(range(3)))",
                 "%timeit -n1 -r1 sum(range(10))", "%%time\nx = 1", "%xmode Minimal", "!echo hi",
                 "from IPython.display import HTML, clear_output, display\ndisplay(HTML('<b>x</b>')); clear_output()"]
        for code in usual:
            assert problems_between_cells(code) == [], code
        hook = ("class Cut:\n    def __call__(self, lines):\n        return [l for l in lines if 'HIDDEN' not in l]\n"
                "get_ipython().input_transformers_cleanup.append(Cut())")
        found = problems_between_cells(hook)
        assert any("input_transformers_cleanup hook" in p for p in found), found
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
