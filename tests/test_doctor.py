"""`python -m course_utils doctor`: real checks of this environment, one fix line per problem, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from course_utils import data, doctor, validate_button


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The doctor's download check (``--online``) never reaches the network in tests."""
    def refuse(url, timeout=10.0):
        raise AssertionError(f"a test asked the doctor to contact {url}")

    monkeypatch.setattr(doctor, "_probe_url", refuse)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m course_utils ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def facts(report: doctor.Report) -> dict[str, str]:
    return dict(report.facts)


def lines(report: doctor.Report, level: str) -> list[str]:
    return [f.line() for f in report.findings if f.level == level]


def test_command_line_reports_this_environment(mirror):
    result = run_cli("-m", "course_utils", "doctor", env={"COURSE_MODE": "smoke", "COURSE_DATA_DIR": str(mirror)})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"python        {sys.version.split()[0]}" in out
    assert f"torch         {torch.__version__}" in out  # with its build tag, e.g. +cpu or +cu130
    assert f"torchvision   {torchvision.__version__}" in out
    assert "run mode      smoke (set by COURSE_MODE)" in out
    for label in ("device", "MNIST", "CIFAR-10", "nbgrader"):
        assert f"\n  {label} " in out, f"no {label} line in:\n{out}"
    assert "PROBLEM" not in out


def test_unknown_mode_is_a_problem_with_its_fix(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "fast")
    report = doctor.diagnose()
    assert report.exit_code == 1
    [line] = [x for x in lines(report, "problem") if "COURSE_MODE" in x]
    assert "'fast' is not a run mode" in line and "Fix: `export COURSE_MODE=laptop`" in line
    assert "smoke, laptop, full" in line


def test_unknown_mode_exits_non_zero_on_the_command_line():
    result = run_cli("-m", "course_utils", "doctor", env={"COURSE_MODE": "turbo"})
    assert result.returncode == 1
    assert "PROBLEM: COURSE_MODE='turbo' is not a run mode" in result.stdout
    assert result.stdout.rstrip().endswith("then run the doctor again.")


def test_missing_data_dir_is_reported(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-mirror"
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.setenv("COURSE_DATA_DIR", str(missing))
    report = doctor.diagnose()
    assert report.exit_code == 1
    [line] = lines(report, "problem")
    assert str(missing) in line and "is not a folder" in line
    assert "Fix: point COURSE_DATA_DIR at the dataset mirror" in line


def test_damaged_mirror_names_the_file(monkeypatch, tmp_path, mirror, fresh_cache):
    fake = tmp_path / "mirror"
    (fake / "MNIST" / "raw").mkdir(parents=True)
    for name in data.MNIST_FILES:
        (fake / "MNIST" / "raw" / name).symlink_to(mirror / "MNIST" / "raw" / name)
    (fake / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    (fake / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 100)  # truncated
    (fake / data.CIFAR10_ARCHIVE[0]).symlink_to(mirror / data.CIFAR10_ARCHIVE[0])
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.setenv("COURSE_DATA_DIR", str(fake))
    report = doctor.diagnose()
    assert report.exit_code == 1
    [line] = lines(report, "problem")
    assert "t10k-labels-idx1-ubyte has 100 bytes, expected 10008" in line
    assert f"(truncated or wrong file). Fix: Restore the file in the mirror {fake} (compare with its README)" in line
    assert facts(report)["CIFAR-10"].startswith(f"mirror {fake}"), "the intact CIFAR-10 archive is found"


def test_where_the_data_comes_from(monkeypatch, mirror, fresh_cache):
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.setenv("COURSE_DATA_DIR", str(mirror))
    report = doctor.diagnose()
    assert report.exit_code == 0, report.render()
    assert facts(report)["MNIST"] == f"mirror {mirror} (decoded into {fresh_cache} on first use)"
    (fresh_cache / "mnist-idx.pt").write_bytes(b"stand-in")  # the loader's decoded copy
    assert facts(doctor.diagnose())["MNIST"] == f"decoded cache {fresh_cache / 'mnist-idx.pt'}"
    # CIFAR-10 decoded from torchvision's download is another file; with a mirror set only the mirror's copy counts.
    downloaded = fresh_cache / data.dataset("cifar10").download_cache_file
    downloaded.write_bytes(b"stand-in")
    assert data.source("cifar10", mirror, fresh_cache).kind == "mirror"
    assert facts(doctor.diagnose())["CIFAR-10"].startswith(f"mirror {mirror}")
    downloaded.unlink()
    monkeypatch.delenv("COURSE_DATA_DIR")
    report = doctor.diagnose()
    assert facts(report)["CIFAR-10"].startswith("not found yet: downloads with torchvision")
    assert facts(report)["MNIST"] == f"decoded cache {fresh_cache / 'mnist-idx.pt'}", "any decoded copy serves offline"
    assert report.exit_code == 0, "downloading on first use does not stop a lab"


def test_offline_without_cache_or_mirror_is_a_warning_naming_download_and_mirror(monkeypatch, fresh_cache):
    """Tried as a student would: no mirror, nothing decoded yet; the doctor must not say "no problems found"."""
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    report = doctor.diagnose()
    warnings = lines(report, "warning")
    for name, record in data.DATASETS.items():
        [line] = [w for w in warnings if w.startswith(f"WARNING: {record.label} is neither cached")]
        assert f"downloads it with torchvision (torchvision.datasets.{record.torchvision_class}, from " in line
        assert "without internet" in line
        assert f"Fix: stay online the first time a lab loads {record.label}, or point COURSE_DATA_DIR at an " \
               f"offline mirror (the folder holding {record.mirror_hint})" in line
    assert report.exit_code == 0
    summary = report.render().splitlines()[-1]
    assert "no problems found" not in summary and f"{len(data.DATASETS)} warning(s)" in summary, summary


def test_download_check_is_opt_in(monkeypatch, fresh_cache):
    """``doctor --online`` asks the download hosts; without it nothing is contacted (see no_network)."""
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    asked = []
    monkeypatch.setattr(doctor, "_probe_url", lambda url, timeout=10.0: asked.append(url) or "URLError: offline")
    report = doctor.diagnose()
    assert not asked and report.exit_code == 0
    report = doctor.diagnose(online=True)
    assert asked and report.exit_code == 1
    problems = lines(report, "problem")
    assert any(p.startswith("PROBLEM: CIFAR-10 is neither cached nor mirrored, and no host") and "URLError: offline" in p
               and "Fix: connect to the internet and run the doctor again, or point COURSE_DATA_DIR" in p
               for p in problems), problems
    monkeypatch.setattr(doctor, "_probe_url", lambda url, timeout=10.0: None)
    report = doctor.diagnose(online=True)
    assert report.exit_code == 0 and facts(report)["CIFAR-10 host"] == "www.cs.toronto.edu answers"


def test_online_flag_on_the_command_line(monkeypatch):
    from course_utils.__main__ import main

    called = {}
    monkeypatch.setattr(doctor, "main", lambda grading=False, online=False: called.update(grading=grading, online=online) or 0)
    assert main(["doctor", "--online"]) == 0
    assert called == {"grading": False, "online": True}


def test_disabled_validate_extensions_are_warnings(monkeypatch, tmp_path):
    """A user config that turns nbgrader's Validate and the kit's verdict off (lab and server extensions) is
    reported, exit 0."""
    config = tmp_path / "jupyter-config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {doctor.VALIDATE_LAB_PLUGIN: True, doctor.VERDICT_LAB_EXTENSION: True}}))
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {
        doctor.VALIDATE_SERVER_EXTENSION: False, doctor.VERDICT_SERVER_EXTENSION: False,
        doctor.KERNELS_SERVER_EXTENSION: False}}}))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")  # the user's config outranks the environment's
    validate_button.install(tmp_path / "env")  # the kit's lab extension, installed (then disabled above)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "env" / "share" / "jupyter"))
    monkeypatch.setenv("COURSE_MODE", "smoke")
    report = doctor.diagnose()
    warnings = lines(report, "warning")
    assert any("Validate button is disabled" in w and "jupyter labextension enable" in w for w in warnings), warnings
    assert any("validate server extension is not enabled" in w and "jupyter server extension enable" in w
               for w in warnings), warnings
    assert "not enabled" in facts(report)["nbgrader"]
    assert facts(report)["verdict"] == "JupyterLab extension disabled; server extension not enabled"
    lab, server = [w for w in warnings if "kit's verdict" in w]  # one per fix
    assert "is disabled" in lab and f"`jupyter labextension enable {doctor.VERDICT_LAB_EXTENSION}`" in lab, lab
    assert f"`jupyter server extension enable --sys-prefix {doctor.VERDICT_SERVER_EXTENSION}`" in server, server
    assert facts(report)["kernels"].startswith("TCP ports (server extension course_utils.kernels not enabled")
    assert report.exit_code == 0


def test_enabled_extensions_are_found():
    """This environment has nbgrader installed as the requirement files pin it, and the kit's verdict as
    scripts/setup.sh installs it (.ci/run too): all four parts are enabled."""
    report = doctor.Report()
    doctor.check_jupyter(report)
    assert facts(report)["nbgrader"].endswith("JupyterLab extension enabled; validate server extension enabled")
    assert facts(report)["verdict"] == "JupyterLab extension enabled; server extension enabled", \
        "run `python -m course_utils install-verdict` (scripts/setup.sh and .ci/run do)"
    assert facts(report)["kernels"] == "unix sockets (server extension course_utils.kernels)"
    assert not report.findings, report.render()


def test_a_slow_jsonschema_import_is_a_warning_with_its_fix(monkeypatch):
    """jsonschema 4.25+ with rfc3987-syntax: a warning naming the cost and the fix; not with the pinned jsonschema,
    nor where jsonschema uses rfc3987 instead; this environment (installed from the pins) has no such cost."""
    report = doctor.Report()
    doctor.check_slow_imports(report)
    assert not report.findings, report.render()
    for versions, warned in (({"jsonschema": "4.26.0", "rfc3987-syntax": "1.1.0"}, True),
                             ({"jsonschema": "4.24.1", "rfc3987-syntax": "1.1.0"}, False),
                             ({"jsonschema": "4.26.0", "rfc3987-syntax": "1.1.0", "rfc3987": "1.3.8"}, False),
                             ({"jsonschema": "4.26.0"}, False)):
        monkeypatch.setattr(doctor, "_installed", versions.get)
        report = doctor.Report()
        doctor.check_slow_imports(report)
        found = lines(report, "warning")
        assert bool(found) == warned, (versions, found)
        if warned:
            assert "rfc3987-syntax 1.1.0" in found[0] and "`pip uninstall rfc3987-syntax`" in found[0], found
            assert report.exit_code == 0


def test_missing_torch_is_a_problem_not_a_crash():
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['course_utils', 'doctor']; "
            "runpy.run_module('course_utils', run_name='__main__')")
    result = run_cli("-c", code, env={"COURSE_MODE": "smoke"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEM: torch is" in result.stdout and "pip install -r requirements-student.txt" in result.stdout
    assert "Traceback" not in result.stderr


def test_version_pins_are_read(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\ntorch==2.14.1\nnumpy>=2\nnbgrader == 0.9.6  # grading\n")
    assert doctor.pinned_versions(req) == {"torch": "2.14.1", "nbgrader": "0.9.6"}
    assert doctor.pinned_versions(tmp_path / "absent.txt") == {}


def test_other_torch_version_is_a_warning():
    report = doctor.Report()
    doctor.check_versions(report, {"torch": "0.0.1"})
    [line] = lines(report, "warning")
    assert f"torch {torch.__version__} is installed; the labs are tested with torch==0.0.1" in line
    assert report.exit_code == 0


def test_pinned_versions_match_this_environment():
    """requirements-student.txt and the environment agree (the doctor's version check compares exactly these)."""
    pins = doctor.pinned_versions()
    if not pins:
        pytest.skip("requirements-student.txt not found next to course_utils")
    report = doctor.Report()
    doctor.check_versions(report, pins)
    assert not report.findings, report.render()


def test_missing_grading_packages_are_named(monkeypatch):
    """``doctor --grading`` names the grading extra's packages this environment lacks."""
    monkeypatch.setattr(doctor.metadata, "requires", lambda name: [
        "torch>=2.4", 'dask>=2024.1; extra == "grading"', 'pytest>=8; extra == "test"',
        'no-such-package-xyz>=1; extra == "grading"'])
    assert doctor.missing_extra("grading") == ["no-such-package-xyz"]


@pytest.mark.parametrize("cores, line", [
    (2, "laptop mode (the default); by default 2 hand-in(s) at once here, 1 thread(s) each: 5400 s per cell, "
        "7200 s per submission, 6 GiB, 256 processes, 1 GiB of disk"),
    (4, "laptop mode (the default); by default 4 hand-in(s) at once here, 1 thread(s) each: 5400 s per cell, "
        "7200 s per submission, 6 GiB, 256 processes, 1 GiB of disk"),
    (32, "laptop mode (the default); by default 8 hand-in(s) at once here, 4 thread(s) each: 2700 s per cell, "
         "3600 s per submission, 6 GiB, 256 processes, 1 GiB of disk")])
def test_grading_report_states_the_limits_a_hand_in_gets_here(monkeypatch, cores, line):
    """An instructor sees before grading what each hand-in gets on this machine by default: the time limits are
    for two threads, and a hand-in with one (one per core) gets twice the time; a bad grading mode is a problem."""
    from autograde import options

    for var in ("COURSE_GRADING_MODE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(options, "usable_cores", lambda: cores)
    report = doctor.Report()
    doctor.check_grading(report)
    assert dict(report.facts)["grading limits"] == line
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the instructor's own setting: every hand-in gets two threads
    report = doctor.Report()
    doctor.check_grading(report)
    assert "2 thread(s) each: 2700 s per cell, 3600 s per submission" in dict(report.facts)["grading limits"]
    monkeypatch.setenv("COURSE_GRADING_MODE", "fast")
    report = doctor.Report()
    doctor.check_grading(report)
    problems = [f for f in report.findings if f.level == "problem"]
    assert "grading limits" not in dict(report.facts)
    assert problems and "COURSE_GRADING_MODE='fast' is not a run mode" in problems[0].what, report.render()


def test_grading_report_names_the_user_and_every_mount():
    """``doctor --grading`` says who hand-ins run as and what they can read (from the sandbox's own lists), and the
    hash of the kit's code that every machine of a grading cluster must share."""
    from autograde import cluster, sandbox

    report = doctor.Report()
    doctor.check_grading(report)
    facts = dict(report.facts)
    assert facts["kit code"].startswith(f"{cluster.LOADED} "), facts["kit code"]
    if not sandbox.support().bwrap:
        assert "UNSANDBOXED" in facts["grading"]
        return
    assert facts["grading user"] == sandbox.identity().describe()
    if os.geteuid() == 0:
        assert sandbox.GRADING_USER in facts["grading user"] and "unprivileged" in facts["grading user"]
    reads = facts["sandbox reads"]
    for mount in sandbox.course_mounts():
        assert (mount.source if not mount.source.endswith(".py") else str(Path(mount.source).parent)) in reads
    assert "/usr" in reads and "/etc/ld.so.cache" in reads and "passwd" in reads
    assert "/.git" not in reads and "/solutions" not in reads
    assert not [f for f in report.findings if f.level == "problem"], report.render()


def test_a_missing_protection_is_a_problem_where_the_sandbox_is_required(monkeypatch):
    """On a grading machine it is a warning; with COURSE_SANDBOX_REQUIRED (CI) `doctor --grading` exits 1."""
    from autograde import sandbox

    bare = sandbox.Support(bwrap=None, bwrap_problem="bwrap is not installed", cgroups=False,
                           cgroups_problem="only root can create cgroups", disk=False, disk_problem="")
    monkeypatch.setattr(sandbox, "support", lambda: bare)
    for required, code in (("", 0), ("1", 1)):
        monkeypatch.setenv("COURSE_SANDBOX_REQUIRED", required)
        report = doctor.Report()
        doctor.check_grading(report)
        levels = {f.level for f in report.findings if "UNSANDBOXED" in f.what}
        assert levels == {"problem" if required else "warning"} and report.exit_code == code, report.render()
