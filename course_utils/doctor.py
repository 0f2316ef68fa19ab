"""``python -m course_utils doctor``: what this environment will do with the labs, and what to fix.

It prints a few lines a student can paste into a forum post (versions, device,
run mode, where the datasets come from, nbgrader's Jupyter extensions, the kit's verdict
in Validate's dialog), then one line per problem with its fix. The exit code is 1 when
something would stop a lab (a ``PROBLEM`` line) and 0 otherwise (``WARNING`` lines do not
stop a lab: a missing Validate button or verdict, versions other than the pinned ones, a
dataset that is neither cached nor mirrored and so needs the internet, a jsonschema whose
import costs every nbformat user about 2 s).

The datasets come from the registry in :mod:`course_utils.data`; their errors
carry their own fix (``DataError.fix``), printed as is. Nothing here uses the
network unless asked to: ``doctor --online`` also checks that the hosts
torchvision downloads a missing dataset from answer.

Nothing here imports torch at module level, so a broken or missing PyTorch is
reported instead of crashing the doctor.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from . import modes

# The students' pinned file (generated from pyproject.toml); requirements.txt adds grading and test tooling.
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-student.txt"
INSTALL_FIX = "run `pip install -r requirements-student.txt` in the course folder (or `bash scripts/setup.sh`)"
GRADING_INSTALL_FIX = ("run `pip install -r requirements.txt` in the course folder (the grading and test tooling; "
                       "or `bash scripts/setup.sh .venv requirements.txt`)")
GRADING_EXTRA = "grading"
VALIDATE_SERVER_EXTENSION = "nbgrader.server_extensions.validate_assignment"
VALIDATE_LAB_PLUGIN = "@jupyter/nbgrader:validate-assignment"
# The kit's verdict in Validate's dialog (course_utils/validate_button.py): a lab extension and a server extension.
VERDICT_LAB_EXTENSION = "course-kit-validate"
VERDICT_SERVER_EXTENSION = "course_utils.validate_button"
VERDICT_FIX = "run `python -m course_utils install-verdict` in the course environment, then restart JupyterLab"
KERNELS_SERVER_EXTENSION = "course_utils.kernels"  # JupyterLab's kernels over unix sockets (installed with the verdict)


@dataclass
class Finding:
    """Something to fix: ``problem`` stops a lab, ``warning`` does not."""

    level: str
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.level.upper()}: {self.what}. Fix: {self.fix}."


@dataclass
class Report:
    """The doctor's facts (label, value) and findings, and how to print them."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.facts.append((label, value))

    def problem(self, what: str, fix: str) -> None:
        self.findings.append(Finding("problem", what, fix))

    def warning(self, what: str, fix: str) -> None:
        self.findings.append(Finding("warning", what, fix))

    @property
    def exit_code(self) -> int:
        """1 when a finding would stop a lab, else 0."""
        return int(any(f.level == "problem" for f in self.findings))

    def render(self) -> str:
        width = max(len(label) for label, _ in self.facts) if self.facts else 0
        lines = ["course kit doctor"]
        lines += [f"  {label:<{width}}  {value}" for label, value in self.facts]
        lines += [f.line() for f in sorted(self.findings, key=lambda f: f.level != "problem")]
        problems = sum(f.level == "problem" for f in self.findings)
        warnings = len(self.findings) - problems
        if problems:
            lines.append(f"{problems} problem(s) would stop a lab: fix the PROBLEM lines above, then run the doctor again.")
        elif warnings:
            lines.append(f"no problem that stops a lab, but {warnings} warning(s) above: read them before you start.")
        else:
            lines.append("ready for the labs: no problems found.")
        return "\n".join(lines)


# --------------------------------------------------------------------------- checks

def pinned_versions(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a requirements file ({} when absent)."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions(report: Report, pins: dict[str, str]) -> bool:
    """Python, torch and torchvision; returns whether torch can be imported."""
    report.add("python", f"{platform.python_version()} ({sys.executable})")
    report.add("platform", f"{platform.system()} {platform.release()} {platform.machine()}")
    report.add("course_utils", f"{_installed('course-utils') or '?'} ({Path(__file__).resolve().parent})")
    if sys.version_info < (3, 10):
        report.problem(f"Python {platform.python_version()} is too old for the labs (3.10 or newer, 3.11 tested)",
                       "create the environment with Python 3.11, e.g. `PYTHON=python3.11 bash scripts/setup.sh`")
    torch_ok = True
    for name in ("torch", "torchvision"):
        version = _installed(name)
        try:
            version = __import__(name).__version__  # with its build tag, e.g. 2.14.1+cpu
        except Exception as exc:  # a broken install raises more than ImportError
            torch_ok = torch_ok and name != "torch"
            state = "not installed" if version is None else f"{version}, but importing it fails ({exc})"
            report.add(name, state)
            report.problem(f"{name} is {state}", INSTALL_FIX)
            continue
        report.add(name, version or "unknown version")
        pin = pins.get(name)
        if pin and version and version.split("+")[0] != pin:
            report.warning(f"{name} {version} is installed; the labs are tested with {name}=={pin}", INSTALL_FIX)
    return torch_ok


def check_device(report: Report) -> str | None:
    """The device the labs will use (``training.get_device``), e.g. 'cuda'."""
    import torch

    from .training import get_device

    device = get_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        detail = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    elif device.type == "mps":
        detail = "Apple GPU"
    else:
        quota = modes.cpu_quota()
        detail = f"no CUDA or MPS GPU; {torch.get_num_threads()} CPU threads" + (
            f" (a CPU quota of {quota} core(s) here)" if quota else "")
    report.add("device", f"{device.type} ({detail})")
    return device.type


def check_mode(report: Report, device: str | None) -> None:
    """The run mode and where it came from; a bad COURSE_MODE stops every lab."""
    try:
        mode = modes.current_mode()
    except modes.ConfigError as exc:
        report.add("run mode", f"invalid: {exc.what}")
        report.problem(f"{exc.what}, every lab stops at its setup cell", exc.fix)
        return
    report.add("run mode", f"{mode} ({modes.mode_source()})")
    if mode == "full" and device == "cpu":
        report.warning("full mode on a CPU trains for hours per lab",
                       f"`export {modes.MODE_VAR}=laptop` for CPU-sized runs")


def _probe_url(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url``'s host answers an HTTP HEAD request, else what went wrong (network access!)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the host answered, if only with an error status
    except Exception as exc:  # DNS, refused, timeout, TLS: all mean "cannot download"
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).netloc or url


def check_download(report: Report, record, cache: Path) -> None:
    """Opt-in (``doctor --online``): does a host torchvision downloads ``record`` from answer?"""
    urls = record.download_urls()
    errors = {}
    for url in urls:
        error = _probe_url(url)
        if error is None:
            report.add(f"{record.label} host", f"{_host(url)} answers")
            return
        errors[_host(url)] = error
    report.add(f"{record.label} host", "no download host answers")
    report.problem(f"{record.label} is neither cached nor mirrored, and no host torchvision downloads it from "
                   f"answers ({'; '.join(f'{h}: {e}' for h, e in errors.items()) or 'no address known'}), "
                   f"so the labs that use it stop at their data cell",
                   f"connect to the internet and run the doctor again, or point {modes.DATA_VAR} at an offline "
                   f"mirror (the folder holding {record.mirror_hint})")


def check_dataset(report: Report, name: str, mirror: Path | None, cache: Path, online: bool = False) -> None:
    """Where dataset ``name`` will be loaded from, in the loader's order (see course_utils.data).

    ``online``: without a mirror or a decoded copy, also check that a download host answers.
    """
    from . import data

    record = data.dataset(name)
    label = record.label
    found = data.source(name, mirror, cache)
    if found.kind == "cache":
        report.add(label, f"decoded cache {found.path}")
        return
    if found.kind == "mirror":
        try:
            data.verify_mirror(name, mirror)
        except data.DataError as exc:
            report.add(label, f"damaged or missing in the mirror {mirror}")
            report.problem(exc.message, exc.fix)
            return
        report.add(label, f"mirror {mirror} (decoded into {cache} on first use)")
        first_use = "decoded"
    else:
        report.add(label, f"not found yet: downloads with torchvision into {cache} on first use (needs internet)")
        hosts = ", ".join(dict.fromkeys(_host(url) for url in record.download_urls())) or "the internet"
        report.warning(f"{label} is neither cached nor in an offline mirror: the first lab that uses it downloads "
                       f"it with torchvision (torchvision.datasets.{record.torchvision_class}, from {hosts}), and "
                       f"stops at its data cell without internet",
                       f"stay online the first time a lab loads {label}, or point {modes.DATA_VAR} at an offline "
                       f"mirror (the folder holding {record.mirror_hint}): `export {modes.DATA_VAR}=/path/to/mirror`")
        if online:
            check_download(report, record, cache)
        first_use = "downloaded"
    if not os.access(cache, os.W_OK):
        report.problem(f"the cache folder {cache} is not writable, so {label} cannot be {first_use}",
                       f"point {modes.CACHE_VAR} at a folder you can write to")


def check_data(report: Report, online: bool = False) -> None:
    """Every dataset of the registry: mirror (COURSE_DATA_DIR), decoded cache, or download on first use."""
    from . import data

    try:
        mirror = modes.data_dir()
    except modes.ConfigError:
        value = os.environ.get(modes.DATA_VAR, "")
        report.add("data", f"{modes.DATA_VAR}={value!r} is not a folder")
        report.problem(f"{modes.DATA_VAR}={value!r} is not a folder, so no lab can load its data",
                       f"point {modes.DATA_VAR} at the dataset mirror (the folder holding {data.mirror_layout()}), "
                       f"or `unset {modes.DATA_VAR}` to download with torchvision")
        return
    try:
        cache = modes.cache_dir()
    except OSError as exc:
        report.add("data", f"cache folder unusable ({exc})")
        report.problem(f"the dataset cache folder cannot be created ({exc})",
                       f"point {modes.CACHE_VAR} at a folder you can write to")
        return
    for name in data.DATASETS:
        check_dataset(report, name, mirror, cache, online=online)


def check_jupyter(report: Report) -> None:
    """The Jupyter kernel, nbgrader's Validate button (lab plugin + server extension), and the kit's verdict in it."""
    if _installed("ipykernel") is None:
        report.problem("ipykernel is not installed, so notebooks have no Python kernel", INSTALL_FIX)
    nbgrader = _installed("nbgrader")
    if nbgrader is None:
        report.add("nbgrader", "not installed")
        report.warning("nbgrader is not installed: no Validate button to check your work", INSTALL_FIX)
        return
    try:
        from jupyter_core.paths import jupyter_config_path, jupyter_path
        from jupyter_server.extension.config import ExtensionConfigManager
        from jupyterlab_server.config import get_federated_extensions, get_page_config
    except ImportError:
        report.add("nbgrader", f"{nbgrader}; JupyterLab is not installed")
        report.warning("JupyterLab is not installed: the labs are written for it", INSTALL_FIX)
        return
    server = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
    server_on = bool(server.get(VALIDATE_SERVER_EXTENSION))
    lab_extensions = get_federated_extensions(jupyter_path("labextensions"))
    lab_ext = lab_extensions.get("@jupyter/nbgrader")
    disabled = set(get_page_config(jupyter_path("labextensions")).get("disabledExtensions", []))
    lab_on = lab_ext is not None and not disabled & {"@jupyter/nbgrader", VALIDATE_LAB_PLUGIN}
    parts = [f"{nbgrader}",
             f"JupyterLab extension {'enabled' if lab_on else 'not enabled'}"
             + (f" ({lab_ext['version']})" if lab_ext and lab_ext.get("version") != nbgrader else ""),
             f"validate server extension {'enabled' if server_on else 'not enabled'}"]
    report.add("nbgrader", "; ".join(parts))
    if lab_ext is None:
        report.warning("nbgrader's JupyterLab extension is not installed: no Validate button", INSTALL_FIX)
    elif not lab_on:
        report.warning("nbgrader's Validate button is disabled in JupyterLab",
                       f"`jupyter labextension enable {VALIDATE_LAB_PLUGIN}`, then restart JupyterLab")
    elif lab_ext.get("version") != nbgrader:
        report.warning(f"nbgrader's JupyterLab extension ({lab_ext.get('version')}) and Python package ({nbgrader}) "
                       f"differ, so Validate refuses to run", INSTALL_FIX)
    if not server_on:
        report.warning("nbgrader's validate server extension is not enabled: the Validate button cannot run",
                       f"`jupyter server extension enable --sys-prefix {VALIDATE_SERVER_EXTENSION}`, "
                       f"then restart JupyterLab")
    check_verdict(report, server, lab_extensions, disabled)
    report.add("kernels", kernel_transport(server))


def kernel_transport(server: dict) -> str:
    """How JupyterLab's kernels will talk to it here: unix sockets (course_utils/kernels.py) or TCP ports. TCP
    works too (now and then a kernel restarts at its start, for a port another process took), so it is a fact
    to read, not a warning."""
    from course_utils import kernels

    if not kernels.sockets_work():
        return "TCP ports (this ZeroMQ has no unix sockets)"
    if not server.get(KERNELS_SERVER_EXTENSION):
        return f"TCP ports (server extension {KERNELS_SERVER_EXTENSION} not enabled: {VERDICT_FIX})"
    return f"unix sockets (server extension {KERNELS_SERVER_EXTENSION})"


def check_slow_imports(report: Report) -> None:
    """A known cost outside the kit: jsonschema from 4.25 on imports rfc3987-syntax, when installed, in every
    process that imports nbformat, and that import builds ~35 parsers (python-jsonschema/jsonschema#1428)."""
    jsonschema, slow = _installed("jsonschema"), _installed("rfc3987-syntax")
    if not (jsonschema and slow) or _installed("rfc3987") is not None:  # rfc3987, when present, is used instead
        return
    try:
        if tuple(int(part) for part in jsonschema.split(".")[:2]) < (4, 25):
            return
    except ValueError:
        pass
    report.warning(f"jsonschema {jsonschema} imports rfc3987-syntax {slow}: about 2 s more for every process that "
                   f"imports nbformat (JupyterLab's start, each Validate, nbgrader's run for each graded hand-in)",
                   "`pip uninstall rfc3987-syntax` (jsonschema then skips the `iri` format check, which no notebook "
                   "uses), or install the pinned requirements, which keep jsonschema below 4.25")


def check_verdict(report: Report, server: dict, lab_extensions: dict, disabled: set) -> None:
    """The kit's verdict in Validate's dialog: its JupyterLab extension and its server extension."""
    lab = VERDICT_LAB_EXTENSION in lab_extensions
    lab_on = lab and not any(x == VERDICT_LAB_EXTENSION or x.startswith(VERDICT_LAB_EXTENSION + ":") for x in disabled)
    server_on = bool(server.get(VERDICT_SERVER_EXTENSION))
    lab_state = "enabled" if lab_on else "disabled" if lab else "not installed"
    report.add("verdict", f"JupyterLab extension {lab_state}; server extension {'enabled' if server_on else 'not enabled'}")
    what = ("Validate's dialog says nbgrader's \"Success! Your notebook passes all the tests.\" instead of the kit's "
            "verdict (what a pass means)")
    reasons: dict[str, list[str]] = {}  # fix -> what it fixes
    if not lab:
        reasons.setdefault(VERDICT_FIX, []).append(f"the JupyterLab extension {VERDICT_LAB_EXTENSION} is not installed")
    elif not lab_on:
        fix = f"`jupyter labextension enable {VERDICT_LAB_EXTENSION}`, then restart JupyterLab"
        reasons.setdefault(fix, []).append(f"the JupyterLab extension {VERDICT_LAB_EXTENSION} is disabled")
    if not server_on:
        fix = (f"`jupyter server extension enable --sys-prefix {VERDICT_SERVER_EXTENSION}`, then restart JupyterLab"
               if VERDICT_SERVER_EXTENSION in server else VERDICT_FIX)  # turned off by a config, or never installed
        reasons.setdefault(fix, []).append(f"the server extension {VERDICT_SERVER_EXTENSION} is not enabled")
    for fix, why in reasons.items():
        report.warning(f"{what}: {' and '.join(why)}", fix)


def missing_extra(extra: str) -> list[str]:
    """Packages of the course kit's ``extra`` (pyproject.toml, as installed) that are not installed."""
    try:
        requires = metadata.requires("course-utils") or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for line in requires:
        spec, _, marker = line.partition(";")
        if f'extra == "{extra}"' not in marker.replace("'", '"'):
            continue
        name = re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]
        if _installed(name) is None:
            missing.append(name)
    return missing


def check_grading(report: Report) -> None:
    """For instructors: is the grading sandbox (bubblewrap, cgroup limits) available here?"""
    import importlib.util

    if importlib.util.find_spec("autograde") is None:
        report.add("grading", "the autograde package is not installed")
        report.warning("cannot grade here: the autograde package is missing", GRADING_INSTALL_FIX)
        return
    missing = missing_extra(GRADING_EXTRA)
    if missing:
        report.warning(f"the grading packages {', '.join(missing)} are not installed", GRADING_INSTALL_FIX)
    from autograde import cluster, config, options, sandbox

    # Every machine of a Dask cluster must show the same: a worker with other kit code is refused.
    report.add("kit code", f"{cluster.code_fingerprint()} (it must match on every machine that grades)")
    try:
        mode = config.settings().mode
    except config.SettingError as exc:
        report.problem(str(exc), f"`export {config.GRADING_MODE_VAR}={config.DEFAULT_MODE}` (or another mode), "
                                 f"or `unset {config.GRADING_MODE_VAR}`")
    else:
        workers = options.default_workers()
        # The instructor's OMP_NUM_THREADS wins, as when grading.
        threads = modes.env_threads() or options.cores_per_hand_in(workers)
        lim = config.limits(mode).for_threads(threads)
        how = f"set by {config.GRADING_MODE_VAR}" if os.environ.get(config.GRADING_MODE_VAR, "").strip() \
            else "the default"
        report.add("grading limits", f"{mode} mode ({how}); by default {workers} hand-in(s) at "
                                     f"once here, {threads} thread(s) each: {lim.cell_timeout} s per cell, "
                                     f"{lim.submission_timeout:.0f} s per submission, "
                                     f"{lim.memory_limit / (1 << 30):g} GiB, {lim.process_limit} processes, "
                                     f"{lim.disk_limit / (1 << 30):g} GiB of disk")
    found = sandbox.support()
    limits = ["memory", "process"] * found.cgroups + ["disk"] * found.disk
    named = " and ".join(filter(None, [", ".join(limits[:-1]), limits[-1]])) if limits else ""
    report.add("grading", "sandboxed (bubblewrap" + (f", {named} limits)" if limits else "; limits NOT enforced)")
               if found.bwrap else "UNSANDBOXED: hand-ins would run with the grader's rights")
    required = bool(os.environ.get("COURSE_SANDBOX_REQUIRED"))  # CI: a missing protection stops the run here
    for what, fix in found.findings():
        (report.problem if required else report.warning)(what, fix)
    if not found.bwrap:
        return
    report.add("grading user", sandbox.identity().describe())
    report.add("sandbox reads", ", ".join(sandbox.mount_summary()))
    limit = (f"together at most {config.parse_size(config.DISK_LIMIT) / (1 << 30):g} GiB (a size-limited folder "
             f"in memory)" if found.disk else "NOT limited in size")
    report.add("sandbox writes", f"its own copy of the hand-in's folder and its exported models, {limit}; "
                                 f"/tmp in memory")
    if problem := sandbox.probe_python():
        report.problem(f"Python does not start in the grading sandbox: {problem}",
                       "make the Python environment and the course's code readable by all users "
                       "(`chmod -R a+rX` on them), then run `python -m course_utils doctor --grading` again")


def diagnose(grading: bool = False, online: bool = False) -> Report:
    """Run every check and return the report.

    ``grading``: also the instructor's grading sandbox; ``online``: also ask the
    download hosts of datasets that are neither cached nor mirrored whether they
    answer (network access; never the default).
    """
    report = Report()
    torch_ok = check_versions(report, pinned_versions())
    if torch_ok:
        check_mode(report, check_device(report))
        check_data(report, online=online)
    else:
        report.add("device, data", "not checked until torch imports")
        try:
            named = modes.read_mode()
        except modes.ConfigError:
            named = "invalid"
        if named:  # without it, the default mode needs torch
            check_mode(report, None)
    check_jupyter(report)
    check_slow_imports(report)
    if grading:
        check_grading(report)
    return report


def main(grading: bool = False, online: bool = False) -> int:
    """Print the report; return the exit code (1 when something would stop a lab)."""
    report = diagnose(grading, online)
    print(report.render(), flush=True)
    return report.exit_code
