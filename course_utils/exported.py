"""Models a hand-in exported (``torch.export`` archives), read by the grader without running any of its code.

A hidden accuracy check exports the student's trained model from the kernel; the grader scores
that file in another process (:func:`course_utils.checks.score_exported`). The kernel can
write the file, so it is untrusted input: ``torch.export.load`` unpickles a weight or a
constant that the archive marks as pickled, and loads custom and opaque objects with
``pickle``, any of which runs code of the file's choosing in the scorer. :func:`load` reads
the archive first and refuses anything but what ``torch.export.save`` writes for a plain model:
tensors stored as raw bytes, a graph of PyTorch's own ``aten`` operators (and ``getitem``, autocast
and no-grad regions), and sample inputs that load with ``weights_only``. A refused file scores 0 for its item.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

MAX_MEMBERS = 10_000  # files in one archive (a lab's models have a few dozen)
# Graph nodes may call PyTorch's own operators (torch.ops.aten.<name>.<overload>) and getitem, no Python function;
# of its higher-order operators, the two that `with torch.autocast(...)` and `with torch.no_grad()` in a forward make.
ATEN_TARGET = re.compile(r"torch\.ops\.aten\.(\w+)\.\w+")
OTHER_TARGETS = frozenset({"_operator.getitem", "torch.ops.higher_order.wrap_with_autocast",
                           "torch.ops.higher_order.wrap_with_set_grad_enabled"})
# aten operators with an effect beyond their output: printing (a forged answer line), reading a file; and the
# indexing ones that skip bounds checks (_unsafe_index, _unsafe_index_put, _unsafe_masked_index...: a read or a
# write out of bounds in the scorer's memory), which an export of a model does not make (indexing exports as
# index, interpolation as upsample_*).
REFUSED_OPERATORS = frozenset({"_print", "from_file"})
UNCHECKED_OPERATOR = re.compile(r"_unsafe_(masked_)?index\w*")
# What torch.export.save writes below the archive's one top folder, for a program called "model".
EXPECTED_FILE = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/model\.pt)")


class RefusedArchive(ValueError):
    """The file is not a plain exported model; why, in words."""


def problems(path: Path) -> list[str]:
    """What makes ``path`` more than a plain exported model (nothing in it runs to find out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if len(names) > MAX_MEMBERS:
                return [f"{len(names)} files in the archive"]
            if len(set(names)) != len(names):  # Python's zipfile reads the last copy, PyTorch's reader another
                return ["a file name twice in the archive"]
            tops = {name.split("/", 1)[0] for name in names}
            if len(tops) != 1 or any("/" not in name for name in names):
                return ["not one folder, as torch.export.save writes"]
            top = tops.pop() + "/"
            found = [f"unexpected file {name}" for name in names
                     if not (name.endswith("/") or EXPECTED_FILE.fullmatch(name[len(top):]))]
            for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
                if top + config in names:
                    found += [f"{config}: {why}" for why in _entry_problems(archive.read(top + config))]
            if top + "models/model.json" not in names:
                return found + ["no models/model.json"]
            found += _program_problems(archive.read(top + "models/model.json"))
            if top + "data/sample_inputs/model.pt" in names:
                try:
                    torch.load(io.BytesIO(archive.read(top + "data/sample_inputs/model.pt")), weights_only=True)
                except Exception as exc:  # anything but tensors and containers
                    found.append(f"sample inputs that are not plain tensors ({type(exc).__name__})")
            return found
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError, KeyError, EOFError) as exc:
        return [f"not a readable archive ({type(exc).__name__}: {str(exc)[:100]})"]


def _entry_problems(config: bytes) -> Iterator[str]:
    """Entries of a weights or constants table that are pickled or stored as anything but raw tensors."""
    entries = json.loads(config).get("config", {})
    for name, meta in entries.items() if isinstance(entries, dict) else ():
        name = str(name)[:100]
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            yield f"{name} is stored with pickle"
        elif not re.fullmatch(r"(weight|tensor)_\d+", str(meta.get("path_name"))):
            yield f"{name} is stored as {str(meta.get('path_name'))[:100]}, not as a tensor"


def _program_problems(program: bytes) -> list[str]:
    """What in ``models/model.json`` is more than a plain model's graph, in one walk of it: a node that calls
    anything but an allowed operator, and strings torch.export.load evaluates as Python (a symbolic shape's
    expression, parsed by ``sympy.sympify``, i.e. ``eval``; range constraints, the same; guards, which
    ``.module()`` runs with ``exec``). A model exported with static shapes has none of those strings."""
    data = json.loads(program)
    top = data if isinstance(data, dict) else {}
    found = []
    if top.get("guards_code"):
        found.append("guard code in the program")
    if top.get("range_constraints"):
        found.append("range constraints in the program")
    targets, symbolic, stack = set(), False, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "target" in item:
                targets.add(str(item["target"])[:200])
            symbolic = symbolic or "as_expr" in item or "expr_str" in item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if symbolic:
        found.append("a symbolic shape expression in the program")
    return found + [f"the graph calls {target}" for target in sorted(targets) if not _allowed(target)]


def _allowed(target: str) -> bool:
    aten = ATEN_TARGET.fullmatch(target)
    return target in OTHER_TARGETS or (aten is not None and aten.group(1) not in REFUSED_OPERATORS
                                       and not UNCHECKED_OPERATOR.fullmatch(aten.group(1)))


@contextmanager
def _weights_only() -> Iterator[None]:
    """Every ``torch.load`` inside loads tensors only, even where PyTorch asks for more (a fallback)."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def load(path: Path) -> torch.nn.Module:
    """The module of the exported program in ``path``; :class:`RefusedArchive` if it is more than a plain model."""
    found = problems(Path(path))
    if found:
        raise RefusedArchive("not a plain exported model: " + "; ".join(found[:3]))
    with _weights_only():
        return torch.export.load(str(path)).module()
