"""course_utils.exported: the grader loads a hand-in's exported model without running code the file carries.

Each hostile archive is a real export rewritten the way a hand-in could (its kernel writes the file):
a weight stored with pickle, a graph node that calls a Python function or prints, a file
torch.export.save never writes, sample inputs that unpickle an object. Each payload would leave a
marker file; none may appear, and the scorer scores such a file 0 with a message.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from autograde import scorer
from course_utils import checks, exported, grading


class Payload:
    """Unpickling it runs ``code`` (what torch.load(weights_only=False) or pickle.loads would do)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


class Varied(nn.Module):
    """A correct model using what students write: buffers, a constant, chunk (getitem), autocast, no_grad."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10)
        self.register_buffer("rows", torch.arange(28), persistent=False)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x):
        x = x[:, :, self.rows] * torch.tensor(1.0) * self.scale
        left, right = x.flatten(1).chunk(2, dim=1)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            return self.linear(torch.cat([left, right], dim=1))


def export(tmp_path: Path, model: nn.Module | None = None, name: str = "model.pt2") -> Path:
    torch.manual_seed(0)
    path = tmp_path / name
    grading.export_model((model or nn.Sequential(nn.Flatten(), nn.Linear(784, 10))).eval(), path,
                         torch.rand(checks.EXPORT_BATCH, 1, 28, 28))
    return path


def rewrite(path: Path, change) -> Path:
    """Apply ``change(files)`` to the archive's {name: bytes} and write it back."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")  # (zipfile warns of a duplicate name)
        for name, content in files.items():
            archive.writestr(name.rstrip(" "), content)  # "x " is a second entry named x
    return path


def member(files: dict, suffix: str) -> str:
    return next(name for name in files if name.endswith(suffix))


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_real_export_loads_and_scores_as_the_live_model(tmp_path):
    model = Varied().eval()
    path = export(tmp_path, model)
    assert exported.problems(path) == []
    x = torch.rand(checks.EXPORT_BATCH, 1, 28, 28)
    torch.testing.assert_close(exported.load(path)(x), model(x))


def hostile_archives(tmp_path: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name: (archive, a part of the reason it must be refused for)."""
    code = f"open({str(marker)!r}, 'w').write('ran')"

    def pickled_weight(files):
        config = member(files, "weights/model_weights_config.json")
        table = json.loads(files[config])
        meta = next(iter(table["config"].values()))
        meta["use_pickle"] = True
        files[config.rsplit("/", 1)[0] + "/" + meta["path_name"]] = pickled(Payload(code))
        files[config] = json.dumps(table).encode()

    def graph(target, inputs):
        def change(files):
            name = member(files, "models/model.json")
            program = json.loads(files[name])
            node = program["graph_module"]["graph"]["nodes"][0]
            node["target"], node["inputs"] = target, inputs
            files[name] = json.dumps(program).encode()
        return change

    def renamed_entry(files):
        config = member(files, "weights/model_weights_config.json")
        table = json.loads(files[config])
        next(iter(table["config"].values()))["path_name"] = "custom_obj_0"
        files[config] = json.dumps(table).encode()

    def extra(files):
        top = next(iter(files)).split("/", 1)[0]
        files[f"{top}/data/constants/opaque_obj_0"] = pickled(Payload(code))

    def sample_inputs(files):
        files[member(files, "sample_inputs/model.pt")] = pickled(((Payload(code),), {}))

    def program(change):
        def rewrite_program(files):
            name = member(files, "models/model.json")
            files[name] = json.dumps(change(json.loads(files[name]))).encode()
        return rewrite_program

    def symbolic_size(program):  # torch.export.load parses a size's expression with sympy.sympify: eval
        sizes = [d for d in program["graph_module"]["graph"]["tensor_values"].values()][0]["sizes"]
        sizes[0] = {"as_expr": {"expr_str": f"__import__('builtins').exec({code!r}) or {checks.EXPORT_BATCH}",
                                "hint": {"as_int": checks.EXPORT_BATCH}}}
        return program

    def guards(program):  # ExportedProgram.module() pastes guard code into Python source and runs it
        program["guards_code"] = [f"__import__('builtins').exec({code!r}) or True"]
        return program

    def twice(files):  # a name twice: Python's zipfile reads the last copy, PyTorch's reader another
        pickled_weight(files)
        config = member(files, "weights/model_weights_config.json")
        clean = json.loads(files[config])
        next(iter(clean["config"].values()))["use_pickle"] = False
        files[config + " "] = json.dumps(clean).encode()  # renamed below: a second entry of the same name

    string = {"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}
    cases = {
        "pickled weight": (pickled_weight, "is stored with pickle"),
        "python function": (graph("torch.os.system", [string]), "the graph calls torch.os.system"),
        "printing operator": (graph("torch.ops.aten._print.default", [string]), "calls torch.ops.aten._print"),
        "unchecked indexing": (graph("torch.ops.aten._unsafe_index_put.default", []), "calls torch.ops.aten._unsafe"),
        "opaque object": (extra, "unexpected file"),
        "entry not stored as a tensor": (renamed_entry, "is stored as custom_obj_0, not as a tensor"),
        "pickled sample inputs": (sample_inputs, "sample inputs that are not plain tensors"),
        "symbolic size": (program(symbolic_size), "a symbolic shape expression"),
        "guard code": (program(guards), "guard code"),
        "a name twice": (twice, "a file name twice"),
    }
    return {name: (rewrite(export(tmp_path, name=f"{i}.pt2"), change), why)
            for i, (name, (change, why)) in enumerate(cases.items())}


def test_hostile_archives_are_refused_before_anything_in_them_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    for name, (path, why) in hostile_archives(tmp_path, marker).items():
        assert any(why in problem for problem in exported.problems(path)), (name, exported.problems(path))
        with pytest.raises(exported.RefusedArchive, match="not a plain exported model"):
            exported.load(path)
        assert not marker.exists(), name
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    assert exported.problems(tmp_path / "junk.pt2")[0].startswith("not a readable archive")


def test_the_scorer_scores_a_hostile_archive_zero_and_says_why(tmp_path):
    marker = tmp_path / "payload-ran"
    path, _ = hostile_archives(tmp_path, marker)["pickled weight"]
    models = tmp_path / "models"
    models.mkdir()
    spec = scorer.Spec(grade_id="acc", kind="accuracy", label="MLP test accuracy", dataset="mnist", bound=0.0,
                       options={"n_test": 100})
    path.rename(models / grading.export_name(spec.label))
    [row] = scorer.score(models, [spec])
    assert row["value"] is None and not row["passed"], row
    assert "could not be scored (RefusedArchive: not a plain exported model" in row["message"], row
    assert not marker.exists()


def test_the_scorers_answer_is_its_own_line_not_the_last_one_printed(tmp_path):
    """Whatever else the scoring process prints, even a well-formed answer after its own, is not read as the
    answer: only the line with the run's token, and each row passes or fails by the plan's own bound."""
    import os

    models = tmp_path / "models"
    models.mkdir()
    spec = scorer.Spec(grade_id="acc", kind="accuracy", label="MLP test accuracy", dataset="mnist", bound=0.5,
                       options={"n_test": 100})
    export(models, name=grading.export_name(spec.label))  # untrained: about 0.1
    forged = json.dumps([{"grade_id": "acc", "label": spec.label, "value": 0.99, "passed": True, "message": ""}])
    then_forge = ["sh", "-c", f"\"$@\"; echo '{forged}'", "sh"]  # runs the scorer, then prints a forged answer
    [row] = scorer.run([spec], models, prefix=then_forge, env=dict(os.environ), timeout=300)
    assert row["value"] < 0.5 and row["passed"] is False, row
