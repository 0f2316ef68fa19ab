"""Full mode, measured: every lab's solution notebook in full mode on one GPU, in one prepared run.

Each lab runs in a subprocess of its own (a failing or endless lab costs only itself), all of them at
once by default (``--jobs``): on one GPU the labs are limited by kernel launches, one CPU core each,
so they overlap well. A lab's code cells are executed one by one, as a notebook kernel would: the
notebook is read with ``json`` (no Jupyter needed: the GPU machine has only PyTorch, torchvision,
NumPy, pandas, matplotlib, seaborn, scikit-learn, SciPy and tqdm), IPython magics are dropped, the
value of a cell's last expression is printed, and every figure a cell leaves open is saved as PNG
(matplotlib's Agg backend). A cell that fails is recorded with its traceback and the next one runs.

Written under ``--out DIR``, rewritten while the labs run (a timeout still leaves results):

- ``DIR/gpu_full.json``: the machine (GPU, compute capability, torch, Triton, C compiler), the
  speed-up switches (``course_utils.speed.gpu``), and per lab: status, wall time, every cell's
  seconds and error, every ``training.train`` call (epochs, steps, seconds, the final epoch's
  figures), every graded score (label, value, bound, passed; the originals' figure) and, with
  ``--profile``, the measured effect of each switch;
- ``DIR/<lab>/log.txt`` (what the lab printed) and ``DIR/<lab>/cellNN-K.png`` (its figures).

``--profile``: before the first ``training.train`` call of each architecture and batch size (at
most ``--profile-models`` per lab) time a few hundred steps of a copy of the model on a slice of its
own data, for each setting: everything off, the defaults, the defaults with one switch off, and, for
calls of at least ``--compile-min-steps`` steps, ``torch.compile`` in its default mode and with CUDA
graphs (``reduce-overhead``). The settings take turns, twice (``--profile-rounds``; compiling only
once), and the faster round counts, since other labs share the GPU. A switch stays on unless turning
it off is at least 10 % faster; compiling is kept, in the better mode, when its measured cost plus
the compiled steps beats the eager steps by 10 %. The lab then trains with what was kept (shorter
calls never compile). The random number generators (global, the loader's and the augmentation's)
are restored afterwards, so the lab's own run is the one it would have been. On a CPU the profile
only times (the switches act on CUDA only) and decides nothing.

The ready-to-run GPU call (the working tree plus ``build/gpu_data``, 29.5 MiB, as the carried
ignored path; ``$OUT`` is the output folder)::

    for PY in python3 python; do $PY -c "import torch" 2>/dev/null && break; done; $PY benchmarks/gpu_full.py --data build/gpu_data --out "$OUT" --profile --deadline 540

(run with ``timeout_s`` 600; at 540 s labs still running are stopped and everything is written; the
last lines printed sum the run up per lab: status, time, scores, training calls and the profile).

Before it, once, on any machine with the offline mirror (``COURSE_DATA_DIR``)::

    python benchmarks/gpu_full.py --pack-data build/gpu_data

which copies the CIFAR-10 JPEG archive (19 MB) and gzips the four MNIST IDX files (53 MB -> 11 MB);
on the GPU machine ``--data`` unpacks them into a temporary mirror (checked against their SHA-256
sums by ``course_utils.data`` as always) and decodes both datasets once before the labs start.

A dry run on a CPU proves the whole path in a minute or two (``tests/test_gpu_full.py`` runs it)::

    COURSE_DATA_DIR=../shared/data python benchmarks/gpu_full.py --out /tmp/dry --mode smoke \\
        --max-batches 2 --jobs 2 --profile --profile-steps 3 --cpu-as-gpu

(``--cpu-as-gpu``: the CPU takes the GPU code path of ``training.train`` and ``evaluate``, batches
drawn from resident tensors, lazy synchronisation, fused optimisers, ``channels_last``, in float32.)
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import gzip
import io
import json
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = "gpu_full.json"
# Longest first, so that with fewer jobs than labs the slowest start at once.
ORDER = ("lab5_vision_transformer", "lab4_attention_cnn", "lab2_cifar_cnn_autoencoder", "lab1_mnist_mlp",
         "lab3_attention_sequences")
CHECKS = ("check_accuracy", "check_reconstruction", "check")  # grading.check(kind, ...) and its two shortcuts
KINDS = {"check_accuracy": "accuracy", "check_reconstruction": "reconstruction"}
PROFILE_FASTER = 0.90   # a switch is turned off when that makes a step at least 10 % faster
COMPILE_FASTER = 0.90   # torch.compile is kept when it makes the whole call at least 10 % faster


def labs() -> list[str]:
    found = sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").is_file())
    return sorted(found, key=lambda lab: ORDER.index(lab) if lab in ORDER else len(ORDER))


def originals() -> dict:
    """The originals' figures per lab and label: ``ORIGINAL`` of bench_labs.py, read without importing it
    (it needs nbformat, which the GPU machine does not have)."""
    tree = ast.parse((ROOT / "benchmarks" / "bench_labs.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "ORIGINAL":
            return ast.literal_eval(node.value)
    return {}


# --------------------------------------------------------------------------- notebooks as scripts

def code_cells(notebook: Path) -> list[dict]:
    """The code cells of a notebook file: index, grade_id, tags and source with IPython magics dropped."""
    nb = json.loads(notebook.read_text())
    cells = []
    for index, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        meta = cell.get("metadata", {})
        cells.append({"index": index, "grade_id": meta.get("nbgrader", {}).get("grade_id"),
                      "tags": meta.get("tags", []), "source": strip_magics(source)})
    return cells


def strip_magics(source: str) -> str:
    """Python only: a cell magic (``%%...`` first line) empties the cell; a line magic or shell escape
    (``%...``, ``!...``) becomes ``pass`` at its indentation. nbgrader's markers are comments already."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return ""
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass  # IPython: " + stripped
        out.append(line)
    return "\n".join(out)


def graded_labels(cells: list[dict]) -> list[str]:
    """The ``label=`` of every ``grading.check_accuracy`` / ``check_reconstruction`` call in the cells: a string,
    or a name such as lab 4's ``ACCURACY_LABELS["vanilla"]`` that an earlier cell assigns from literals."""
    labels, names = [], {}
    for cell in cells:
        try:
            tree = ast.parse(cell["source"])
        except SyntaxError:
            continue
        for node in tree.body:  # top-level NAME = <literals only>, as autograde.scorer.constants reads them
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    names[node.targets[0].id] = eval(compile(ast.Expression(node.value), "<label>", "eval"),
                                                     {**names, "__builtins__": {}})
                except Exception:
                    names.pop(node.targets[0].id, None)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in CHECKS:
                for kw in node.keywords:
                    if kw.arg != "label":
                        continue
                    try:
                        value = eval(compile(ast.Expression(kw.value), "<label>", "eval"), {**names, "__builtins__": {}})
                    except Exception:
                        continue
                    if isinstance(value, str):
                        labels.append(value)
    return labels


def display_text(value) -> str:
    """What a notebook would show for a cell's value, as text (tables via ``to_string``)."""
    for obj in (value, getattr(value, "data", None)):  # a pandas Styler holds its DataFrame in .data
        to_string = getattr(obj, "to_string", None)
        if callable(to_string):
            try:
                return str(to_string())
            except Exception:
                pass
    return repr(value)


def display(*values) -> None:
    """IPython's ``display`` for a script: each value as text."""
    for value in values:
        print(display_text(value))


def run_cell(source: str, namespace: dict, filename: str) -> None:
    """Execute one cell like a kernel: the statements, then print the last expression's value if any
    (not after a trailing semicolon)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # for inspect/tracebacks
    tree = ast.parse(source, filename)
    last = None
    quiet = source.rstrip().endswith(";")  # a trailing semicolon hides the value, as in a notebook
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not quiet:
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            print(display_text(value))


class Tee(io.TextIOBase):
    """Writes to the log and keeps what the current cell printed."""

    def __init__(self, stream):
        self.stream, self.cell = stream, io.StringIO()

    def write(self, text):
        self.stream.write(text)
        self.cell.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()


def tail(text: str, n: int = 3000) -> str:
    # A progress bar rewrites its line with carriage returns: keep what a terminal would show.
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n"))
    return text[-n:]


# --------------------------------------------------------------------------- one lab (the child process)

class LabRun:
    """Runs one lab's notebook in this process and keeps ``<out>/<lab>/result.json`` up to date."""

    def __init__(self, lab: str, out: Path, args):
        self.lab, self.args = lab, args
        self.folder = out / lab
        self.folder.mkdir(parents=True, exist_ok=True)
        self.result = {"lab": lab, "status": "running", "pid": os.getpid(), "cells": [], "scores": [],
                       "train_calls": [], "profile": [], "decisions": [], "current_cell": None}
        self.start = time.perf_counter()
        self.lock = threading.Lock()
        self.tee = None

    def save(self) -> None:
        with self.lock:
            self.result["seconds"] = round(time.perf_counter() - self.start, 2)
            if self.tee is not None and self.result["current_cell"] is not None:
                self.result["current_output"] = tail(self.tee.cell.getvalue(), 1500)
            write_json(self.folder / "result.json", self.result)

    def heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(10):
            try:
                self.save()
            except Exception:  # the main thread changed the result while it was written: next time
                pass

    def install(self) -> None:
        """Knobs from the command line, and the wrappers that record training calls and graded scores."""
        import torch
        from course_utils import grading, speed, training

        if self.args.cpu_as_gpu:  # a dry run of the GPU code path (float32: autocast is for CUDA only)
            training.GPU_DEVICE_TYPES = ("cuda", "cpu")
        for item in filter(None, self.args.gpu.split(",")):
            key, _, value = item.partition("=")
            current = getattr(speed.gpu, key)
            setattr(speed.gpu, key, value if isinstance(current, str) else value.lower() in ("1", "true", "on"))
        speed.gpu.__post_init__()
        self.result["switches"] = speed.gpu.as_dict()
        self.result["device"] = str(training.get_device())

        real_train = training.train
        profiled: set = set()
        run = self

        def train(model, loader, optimizer, **kwargs):
            signature = (tuple(type(m).__name__ for m in model.modules()),
                         tuple(tuple(p.shape) for p in model.parameters()), _batch_size(loader))
            try:
                call_steps = kwargs.get("epochs", 1) * len(loader)
            except TypeError:
                call_steps = 0
            short = call_steps < run.args.compile_min_steps
            compiling = speed.gpu.compile
            if short:  # compiling never pays for a short call (and would compile again for its batch size)
                speed.gpu.compile = False
            try:
                if run.args.profile and signature not in profiled and len(profiled) < run.args.profile_models:
                    profiled.add(signature)
                    try:
                        run.profile(real_train, model, loader, optimizer, kwargs)
                    except Exception as exc:  # the profile is an extra: never lose the lab to it
                        run.result["profile"].append({"desc": kwargs.get("desc"),
                                                      "error": f"{type(exc).__name__}: {exc}"})
                device = kwargs.get("device") or next(model.parameters()).device
                record = {"desc": kwargs.get("desc", "train"), "epochs": kwargs.get("epochs", 1),
                          "amp": str(speed.training_amp_dtype(model, device)).replace("torch.", ""),
                          "switches": speed.gpu.as_dict(), "cell": run.result["current_cell"]}
                started = time.perf_counter()
                history = real_train(model, loader, optimizer, **kwargs)
                _synchronize()
            finally:
                if short:
                    speed.gpu.compile = compiling
            last = history.epochs[-1] if history.epochs else {}
            record.update(seconds=round(time.perf_counter() - started, 2), steps=len(history.steps),
                          last_epoch={k: v for k, v in last.items() if isinstance(v, (int, float))})
            run.result["train_calls"].append(record)
            return history

        train.__wrapped__ = real_train  # inspect.getsource(training.train) still shows the real loop (lab 1)
        train.__doc__, train.__name__ = real_train.__doc__, real_train.__name__
        training.train = train

        # The shortcuts call grading.check when there is one: recording that alone records each check once.
        names = ["check"] if callable(getattr(grading, "check", None)) else list(KINDS)
        for name in names:
            setattr(grading, name, self._recorded_check(getattr(grading, name), KINDS.get(name)))
        del torch

    def _recorded_check(self, check, kind=None):
        """``check`` that also records its label, bound and value (read from what it prints, or from its
        error: ``<label>: 0.1234 (at least 0.9 needed)`` / ``<label> is 0.1234; at least ...``).
        ``kind``: the check's kind, or None for ``grading.check(kind, ...)``, whose first argument it is."""
        run = self

        def recorded(*args, **kwargs):
            bound = kwargs.get("at_least", kwargs.get("at_most"))
            label = kwargs.get("label")
            row = {"label": label, "kind": kind or (args[0] if args else kwargs.get("kind")),
                   "bound": bound, "value": None, "passed": None, "cell": run.result["current_cell"]}
            printed, found = Tee(sys.stdout), None
            try:
                with contextlib.redirect_stdout(printed):
                    check(*args, **kwargs)
                row["passed"] = True
                found = re.search(re.escape(str(label)) + r": ([0-9.eE+-]+) \(at (?:least|most) ",
                                  printed.cell.getvalue())
            except AssertionError as exc:
                row["passed"], row["error"] = False, str(exc)
                found = re.search(r" is ([0-9.eE+-]+); at (?:least|most) ", str(exc))
                raise
            finally:
                if found:
                    row["value"] = float(found.group(1))
                original = run.originals.get(row["label"])
                if original:
                    row["original"] = original[1]
                    if row["value"]:
                        row["ratio"] = round(row["value"] / original[0] if row["kind"] == "accuracy"
                                             else original[0] / row["value"], 3)
                run.result["scores"].append(row)
        return recorded

    # ------------------------------------------------------------------ the profile

    def profile(self, real_train, model, loader, optimizer, kwargs) -> None:
        import torch
        from torch.utils.data import TensorDataset
        from course_utils import data, speed

        parts = data._course_loader_parts(loader)
        if parts is None:
            self.result["profile"].append({"desc": kwargs.get("desc"), "skipped": "not a course loader"})
            return
        dataset, sampler = parts
        size, steps, warm = sampler.batch_size, self.args.profile_steps, self.args.profile_warmup
        n = len(dataset)
        if n < size * 2:
            return
        steps, warm = min(steps, n // size), min(warm, n // size)
        timed = data.make_loader(TensorDataset(*(t[: steps * size] for t in dataset.tensors)), size,
                                 shuffle=True, seed=0, drop_last=True)
        warming = data.make_loader(TensorDataset(*(t[: warm * size] for t in dataset.tensors)), size,
                                   shuffle=True, seed=1, drop_last=True)
        epochs = kwargs.get("epochs", 1)
        call_steps = epochs * len(loader)
        base = dataclasses.replace(speed.gpu)
        off = dict(resident=False, lazy_sync=False, amp="off", channels_last=False, fused=False, compile=False,
                   cudnn_benchmark=False)
        settings = [("everything off", off), ("defaults", {})]
        for knob in ("resident", "lazy_sync", "amp", "channels_last", "fused"):
            if getattr(base, knob) not in (False, "off"):
                settings.append((f"{knob} off", {knob: off[knob]}))
        if not base.compile and call_steps >= self.args.compile_min_steps:
            settings.append(("compile on", {"compile": True, "compile_mode": None}))
            settings.append(("compile reduce-overhead", {"compile": True, "compile_mode": "reduce-overhead"}))
        transform = kwargs.get("batch_transform")
        generators = [cell.cell_contents for cell in (getattr(transform, "__closure__", None) or ())
                      if isinstance(cell.cell_contents, torch.Generator)]
        states = [g.get_state() for g in generators]
        train_kwargs = {k: kwargs[k] for k in ("loss_fn", "reconstruct", "batch_transform", "device") if k in kwargs}
        cuda = torch.cuda.is_available()
        rows = {name: {"setting": name} for name, _ in settings}
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            # Two rounds, settings in turn, the faster of the two kept: other labs share the GPU.
            for round_ in range(self.args.profile_rounds):
                for name, changes in settings:
                    row = rows[name]
                    if "error" in row or (round_ and changes.get("compile")):  # compiling: one round
                        continue
                    speed.gpu = dataclasses.replace(base, **changes)
                    trial = None
                    try:
                        trial = copy.deepcopy(model)
                        trial_optimizer = type(optimizer)(trial.parameters(), **optimizer.defaults)
                        started = time.perf_counter()
                        real_train(trial, warming, trial_optimizer, epochs=1, progress=False, **train_kwargs)
                        _synchronize()
                        if round_ == 0:  # the first run of a setting: compiling, cuDNN's algorithm search
                            row["first_s"] = round(time.perf_counter() - started, 3)
                        started = time.perf_counter()
                        history = real_train(trial, timed, trial_optimizer, epochs=1, progress=False, **train_kwargs)
                        _synchronize()
                        ms = 1000 * (time.perf_counter() - started) / max(1, len(history.steps))
                        row.update(steps=len(history.steps), warmup_steps=warm,
                                   ms_per_step=round(min(ms, row.get("ms_per_step", ms)), 3))
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                    del trial
        for g, state in zip(generators, states):
            g.set_state(state)
        speed.gpu = base
        rows = list(rows.values())
        if cuda:
            decision = decide(rows, call_steps)
        else:
            decision = {"changes": {}, "notes": ["no CUDA GPU: the switches do nothing here, nothing decided"]}
        for knob, value in decision["changes"].items():
            setattr(speed.gpu, knob, value)
        self.result["profile"].append({"desc": kwargs.get("desc", "train"), "cell": self.result["current_cell"],
                                       "batch_size": size, "call_steps": call_steps, "rows": rows, **decision})
        self.save()

    # ------------------------------------------------------------------ the notebook

    def run(self) -> int:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.originals = originals().get(self.lab, {})
        notebook = ROOT / "solutions" / self.lab / f"{self.lab}.ipynb"
        cells = code_cells(notebook)
        self.result["graded_labels"] = graded_labels(cells)
        self.install()
        module = types.ModuleType(f"lab_{self.lab}")
        module.__dict__["display"] = display
        sys.modules[module.__name__] = module
        stop = threading.Event()
        threading.Thread(target=self.heartbeat, args=(stop,), daemon=True).start()
        log = open(self.folder / "log.txt", "w", buffering=1)
        self.tee = Tee(log)
        failed = 0
        try:
            for position, cell in enumerate(cells):
                self.result["current_cell"] = cell["index"]
                self.tee.cell = io.StringIO()
                print(f"\n===== cell {cell['index']} {cell['grade_id'] or ''}", file=log, flush=True)
                started = time.perf_counter()
                error = None
                with contextlib.redirect_stdout(self.tee), contextlib.redirect_stderr(self.tee):
                    try:
                        if cell["source"].strip():
                            run_cell(cell["source"], module.__dict__, f"<{self.lab} cell {cell['index']}>")
                    except BaseException as exc:  # a kernel survives anything a cell raises
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        error = tail(traceback.format_exc(), 3000)
                        print(error)
                    _synchronize()
                seconds = time.perf_counter() - started
                figures = []
                for k, number in enumerate(plt.get_fignums()):
                    path = self.folder / f"cell{cell['index']:02d}-{k}.png"
                    try:
                        plt.figure(number).savefig(path, dpi=self.args.dpi, bbox_inches="tight")
                        figures.append(path.name)
                    except Exception as exc:
                        figures.append(f"{path.name}: not saved ({type(exc).__name__}: {exc})")
                plt.close("all")
                failed += error is not None
                with self.lock:
                    self.result["cells"].append({
                        "index": cell["index"], "grade_id": cell["grade_id"], "tags": cell["tags"],
                        "seconds": round(seconds, 3), "error": error, "figures": figures,
                        "output": tail(self.tee.cell.getvalue(), self.args.output_chars)})
                    self.result["current_cell"] = None
                self.save()
        finally:
            stop.set()
            with self.lock:
                self.result["status"] = "done" if not failed else f"done, {failed} cell(s) failed"
                self.result["failed_cells"] = failed
            self.save()
            log.close()
        return 1 if failed else 0


def _batch_size(loader):
    sampler = getattr(loader, "sampler", None)
    return getattr(sampler, "batch_size", None) or getattr(loader, "batch_size", None)


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def decide(rows: list[dict], call_steps: int) -> dict:
    """What a profile keeps: each switch on unless turning it off is at least 10 % faster per step;
    ``compile`` on when its first epoch's extra time plus the compiled steps beats the eager steps by 10 %."""
    by_name = {row["setting"]: row for row in rows if "ms_per_step" in row and "error" not in row}
    default = by_name.get("defaults")
    changes, notes = {}, []
    if default is None:
        return {"changes": changes, "notes": ["the defaults did not run: nothing changed"]}
    values = {"resident": False, "lazy_sync": False, "amp": "off", "channels_last": False, "fused": False}
    for knob, value in values.items():
        row = by_name.get(f"{knob} off")
        if row and row["ms_per_step"] < PROFILE_FASTER * default["ms_per_step"]:
            changes[knob] = value
            notes.append(f"{knob} off: {row['ms_per_step']:.2f} ms/step against {default['ms_per_step']:.2f}")
    eager = call_steps * default["ms_per_step"] / 1000
    best, best_total = None, COMPILE_FASTER * eager
    for name, mode in (("compile on", None), ("compile reduce-overhead", "reduce-overhead")):
        row = by_name.get(name)
        if row is None:
            if any(r["setting"] == name for r in rows):
                notes.append(f"{name}: failed, not kept")
            continue
        cost = max(0.0, row["first_s"] - row.get("warmup_steps", 0) * row["ms_per_step"] / 1000)
        total = cost + call_steps * row["ms_per_step"] / 1000
        notes.append(f"{name}: {cost:.0f} s to compile, then {call_steps} steps: {total:.0f} s in all against "
                     f"{eager:.0f} s eagerly")
        if total < best_total:
            best, best_total = mode, total
            changes.update(compile=True, compile_mode=mode)
    if "compile" in changes:
        notes.append(f"kept: torch.compile, mode {best}")
    return {"changes": changes, "notes": notes}


# --------------------------------------------------------------------------- the parent

def write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


def pack_data(target: Path) -> dict:
    """The carried data set: CIFAR-10's archive as it is, MNIST's IDX files gzipped (from COURSE_DATA_DIR)."""
    sys.path.insert(0, str(ROOT))
    from course_utils import data, modes

    mirror = modes.data_dir()
    if mirror is None:
        raise SystemExit(f"--pack-data: set {modes.DATA_VAR} to the offline mirror first")
    sizes = {}
    for name in data.DATASETS:
        data.verify_mirror(name, mirror)
        for rel in data.mirror_files(name):
            source = mirror / rel
            if rel.endswith(".tar.gz"):
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            else:
                dest = target / (rel + ".gz")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as fin, gzip.open(dest, "wb", compresslevel=6) as fout:
                    shutil.copyfileobj(fin, fout)
            sizes[str(dest.relative_to(target))] = dest.stat().st_size
    return sizes


def unpack_data(packed: Path, mirror: Path) -> None:
    for path in sorted(packed.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(packed)
        dest = mirror / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(".gz") and not path.name.endswith(".tar.gz"):
            with gzip.open(path, "rb") as fin, open(dest.with_suffix(""), "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            os.symlink(path.resolve(), dest)


def machine() -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "cuda": torch.cuda.is_available(), "c_compiler": shutil.which("cc") or shutil.which("gcc")}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:
        info["triton"] = f"not importable ({type(exc).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=list(torch.cuda.get_device_capability(0)),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda_runtime=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.get_device_capability(0)[0] >= 8)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            info["nvidia_smi"] = subprocess.run([smi, "--query-gpu=name,driver_version,memory.used,utilization.gpu",
                                                 "--format=csv,noheader"], capture_output=True, text=True,
                                                timeout=20).stdout.strip()
        except Exception:
            pass
    return info


def run_labs(args) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chosen = labs() if args.labs == "all" else [lab for lab in labs() if lab in args.labs.split(",")]
    env = {**os.environ, "COURSE_MODE": args.mode, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.max_batches:
        env["COURSE_MAX_BATCHES"] = str(args.max_batches)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(args.jobs, len(chosen))))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    scratch = Path(tempfile.mkdtemp(prefix=f"coursekit-gpu-full-p{os.getpid()}-"))  # as course_utils.leftovers.tag
    summary = {"command": sys.argv, "mode": args.mode, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "jobs": args.jobs, "labs": {lab: {"status": "pending"} for lab in chosen}}
    if args.data:
        mirror = scratch / "mirror"
        unpack_data(Path(args.data).resolve(), mirror)
        env["COURSE_DATA_DIR"] = str(mirror)
        env["COURSE_CACHE_DIR"] = str(scratch / "cache")
    # Decode the datasets once, here, before the labs start (they then read the decoded copies).
    sys.path.insert(0, str(ROOT))
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        from course_utils import data
        summary["machine"] = machine()
        decode = {}
        for name in data.DATASETS:
            t0 = time.perf_counter()
            data.load_arrays(name)
            decode[name] = round(time.perf_counter() - t0, 2)
        summary["data_load_s"] = decode
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print(f"gpu_full: {summary['machine'].get('gpu', 'no GPU')}; datasets ready in {summary['data_load_s']}; "
          f"{len(chosen)} labs in {args.mode} mode, {args.jobs} at a time", flush=True)

    def save():
        summary["seconds"] = round(time.perf_counter() - started, 1)
        for lab, entry in summary["labs"].items():
            partial = out / lab / "result.json"
            if partial.is_file():
                try:
                    entry.update({k: v for k, v in json.loads(partial.read_text()).items() if k != "status"})
                except (OSError, ValueError):
                    pass
        write_json(out / SUMMARY, summary)

    pending, running = list(chosen), {}
    deadline = started + args.deadline if args.deadline else None
    last_save = 0.0
    while pending or running:
        while pending and len(running) < args.jobs:
            lab = pending.pop(0)
            (out / lab).mkdir(parents=True, exist_ok=True)
            command = [sys.executable, str(Path(__file__).resolve()), "--child", lab, "--out", str(out),
                       "--gpu", args.gpu, "--dpi", str(args.dpi), "--output-chars", str(args.output_chars),
                       "--profile-steps", str(args.profile_steps), "--profile-warmup", str(args.profile_warmup),
                       "--profile-models", str(args.profile_models),
                       "--profile-rounds", str(args.profile_rounds), "--compile-min-steps", str(args.compile_min_steps)]
            command += ["--profile"] * args.profile + ["--cpu-as-gpu"] * args.cpu_as_gpu
            workdir = scratch / "work" / lab
            shutil.copytree(ROOT / "solutions" / lab, workdir)  # weights/ land here, not in the tree
            stream = open(out / lab / "stdout.txt", "w")
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            running[lab] = (process, time.perf_counter(), stream)
            summary["labs"][lab].update(status="running")
            print(f"  started {lab} (pid {process.pid})", flush=True)
        time.sleep(0.5)
        now = time.perf_counter()
        for lab, (process, t0, stream) in list(running.items()):
            limit = args.lab_timeout
            over = (limit and now - t0 > limit) or (deadline and now > deadline)
            if process.poll() is None and not over:
                continue
            if process.poll() is None:
                _stop(process)
                summary["labs"][lab]["status"] = "stopped: " + ("lab time limit" if limit and now - t0 > limit
                                                                else "deadline of the whole run")
            stream.close()
            del running[lab]
            entry = summary["labs"][lab]
            entry["rc"], entry["wall_s"] = process.returncode, round(now - t0, 1)
            partial = out / lab / "result.json"
            if entry["status"] == "running":
                status = json.loads(partial.read_text()).get("status") if partial.is_file() else None
                entry["status"] = status if status and status != "running" else f"exited with {process.returncode}"
            save()
            scores = ", ".join(f"{s['label']} {s['value']:.4f}" if s.get("value") is not None else f"{s['label']} -"
                               for s in summary["labs"][lab].get("scores", []))
            print(f"  {lab}: {entry['status']} in {entry['wall_s']:.0f} s; {scores}", flush=True)
        if deadline and now > deadline:
            for lab in pending:
                summary["labs"][lab]["status"] = "not started: deadline of the whole run"
            pending = []
        if now - last_save > 10:
            save()
            last_save = now
    save()
    shutil.rmtree(scratch, ignore_errors=True)
    print(report(summary), flush=True)
    print(f"gpu_full: {summary['seconds']:.0f} s in all; {out / SUMMARY}", flush=True)
    return 0 if all(str(e.get("status")) == "done" for e in summary["labs"].values()) else 1


def report(summary: dict) -> str:
    """The run in a few lines per lab: what a caller sees without fetching the files."""
    lines = [f"machine: {json.dumps(summary.get('machine', {}))}"]
    for lab, entry in summary["labs"].items():
        calls = entry.get("train_calls", [])
        lines.append(f"{lab}: {entry.get('status')}, {entry.get('wall_s', 0):.0f} s "
                     f"({sum(c.get('seconds', 0) for c in calls):.0f} s in {len(calls)} training calls)")
        for score in entry.get("scores", []):
            value = "-" if score.get("value") is None else f"{score['value']:.4f}"
            lines.append(f"  {score['label']}: {value} (bound {score['bound']}, "
                         f"{'passed' if score.get('passed') else 'FAILED'}; original {score.get('original')})")
        for call in calls:
            last = call.get("last_epoch", {})
            lines.append(f"  train {call['desc']}: {call['epochs']} epochs, {call.get('steps')} steps, "
                         f"{call.get('seconds')} s, amp {call.get('amp')}, compile {call['switches'].get('compile')}"
                         + (f", val_acc {last['val_acc']:.4f}" if isinstance(last.get("val_acc"), float) else ""))
        for profile in entry.get("profile", []):
            timings = ", ".join(f"{r['setting']} {r['ms_per_step']:.2f}" for r in profile.get("rows", [])
                                if "ms_per_step" in r)
            lines.append(f"  profile {profile.get('desc')}: ms/step {timings}; {'; '.join(profile.get('notes', []))}"
                         + (f" ERROR {profile['error']}" if "error" in profile else ""))
        failed = [c for c in entry.get("cells", []) if c.get("error")]
        for cell in failed:
            lines.append(f"  cell {cell['index']} failed: {cell['error'].strip().splitlines()[-1][:200]}")
    return "\n".join(lines)


def _stop(process: subprocess.Popen) -> None:
    """End a lab's process group (the lab and what it started, e.g. compile workers): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder (on the GPU machine: $OUT)")
    parser.add_argument("--labs", default="all", help="comma-separated lab ids, or all (default)")
    parser.add_argument("--mode", default="full", choices=("smoke", "laptop", "full"))
    parser.add_argument("--jobs", type=int, default=5, help="labs at once (default 5: all)")
    parser.add_argument("--lab-timeout", type=float, default=0, help="seconds per lab (default: none)")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds for the whole run: labs still running then are stopped (default: none)")
    parser.add_argument("--data", help="a folder written by --pack-data: the datasets to use")
    parser.add_argument("--pack-data", metavar="DIR", help="write the carried datasets to DIR and exit")
    parser.add_argument("--max-batches", type=int, default=0, help="a quick run: COURSE_MAX_BATCHES for the labs")
    parser.add_argument("--gpu", default="", help="speed.gpu switches, e.g. compile=1,amp=off")
    parser.add_argument("--profile", action="store_true", help="measure each switch, keep what pays (see above)")
    parser.add_argument("--profile-steps", type=int, default=200, help="timed steps per setting (default 200)")
    parser.add_argument("--profile-warmup", type=int, default=30, help="untimed steps first (default 30)")
    parser.add_argument("--profile-rounds", type=int, default=2, help="rounds over the settings (default 2)")
    parser.add_argument("--profile-models", type=int, default=8, help="architectures profiled per lab (default 8)")
    parser.add_argument("--compile-min-steps", type=int, default=10000,
                        help="profile torch.compile only for training calls of at least this many steps")
    parser.add_argument("--dpi", type=int, default=72, help="resolution of the saved figures")
    parser.add_argument("--output-chars", type=int, default=2000, help="characters of each cell's output kept")
    parser.add_argument("--cpu-as-gpu", action="store_true",
                        help="dry runs: a CPU takes the GPU code path of training.train/evaluate (float32)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pack_data:
        target = Path(args.pack_data)
        sizes = pack_data(target)
        print(json.dumps(sizes, indent=1))
        print(f"{sum(sizes.values()) / 2**20:.1f} MiB in {target}")
        return 0
    if not args.out:
        parser.error("--out is required")
    if args.child:
        sys.path.insert(0, str(ROOT))
        return LabRun(args.child, Path(args.out), args).run()
    return run_labs(args)


if __name__ == "__main__":
    raise SystemExit(main())
