"""The registry of graded checks: each kind declared once, and a new kind added through the registry alone.

The toy kind ``brightness`` (the mean of a model's outputs on the test images, at most a bound) is
declared in a module of its own, registered with :func:`course_utils.checks.register` and nothing
else: the student-facing ``grading.check``, the grader's reading of the source notebook, the
outside scorer and the audit all find it there. A toy lab graded with it gives the right hand-in
its point, and takes it from a wrong one and from one that rebinds the helper the in-kernel check
asserts with (the outside scorer measures the exported model all the same).
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import nbformat
import pytest

import autograde
from autograde import audit, scorer
from course_utils import checks

import kit

TOY_MODULE = "coursekit_toy_check"
TOY_SOURCE = '''
"""A toy kind of graded check: the mean output of a model on the test images must stay at most a bound."""
from course_utils import checks


def brightness(out, images, labels):
    return out.float().mean().item()


BRIGHTNESS = checks.register(checks.Check("brightness", bound="at_most", higher_is_better=False, measure=brightness,
                                          audit_margin=0.1, options=(("n_test", None), ("seed", 0))))
'''


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    """The toy kind, importable in this process and (through PYTHONPATH) in the kernels and the scorer."""
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / f"{TOY_MODULE}.py").write_text(TOY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "toy"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "toy"))
    module = importlib.import_module(TOY_MODULE)
    yield module.BRIGHTNESS
    checks.CHECKS.pop("brightness", None)
    sys.modules.pop(TOY_MODULE, None)


def test_the_built_in_kinds_say_their_direction_bound_and_margin():
    acc, rec = checks.get("accuracy"), checks.get("reconstruction")
    assert acc.function == "check_accuracy" and acc.passed(0.9, 0.9) and not acc.passed(0.89, 0.9)
    assert rec.bound == "at_most" and rec.passed(7.0, 7.0) and not rec.passed(7.1, 7.0)
    assert acc.need(0.9) == "at least 0.9" and rec.need(14) == "at most 14"
    assert acc.differs(0.90, 0.84) and not acc.differs(0.90, 0.86)   # absolute margin
    assert rec.differs(10.0, 7.5) and not rec.differs(9.0, 7.5)      # a share of the re-trained error
    with pytest.raises(ValueError, match="no kind of check called 'speed'"):
        checks.get("speed")


def test_a_kind_is_declared_consistently_or_refused():
    with pytest.raises(ValueError, match="higher_is_better"):
        checks.Check("odd", bound="at_least", higher_is_better=False, measure=lambda *a: 0.0, audit_margin=0.1)
    with pytest.raises(ValueError, match="'at_least' or 'at_most'"):
        checks.Check("odd", bound="above", higher_is_better=True, measure=lambda *a: 0.0, audit_margin=0.1)
    clash = checks.Check("accuracy", bound="at_most", higher_is_better=False, measure=lambda *a: 0.0, audit_margin=1)
    with pytest.raises(ValueError, match="registered already"):
        checks.register(clash)


def toy_source() -> nbformat.NotebookNode:
    """A lab with one TODO (a linear model's bias) and one test cell graded with the toy kind."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    setup = kit._cell("code", f"import torch\nfrom torch import nn\nfrom course_utils import grading\nimport {TOY_MODULE}",
                          "setup", locked=True)
    todo = kit._cell("code", textwrap.dedent("""\
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        nn.init.zeros_(model[1].weight)
        ### BEGIN SOLUTION
        nn.init.zeros_(model[1].bias)
        ### END SOLUTION"""), "model", solution=True)
    test = kit._cell("code", textwrap.dedent("""\
        grading.hand_in(model, "dim model")
        assert isinstance(model, nn.Module)
        ### BEGIN HIDDEN TESTS
        grading.check("brightness", model, "mnist", at_most=grading.threshold(smoke=0.5, laptop=0.5, full=0.5),
                      n_test=200, label="dim model")
        ### END HIDDEN TESTS"""), "test_dim", grade=True, locked=True, points=1)
    nb.cells = [setup, todo, test]
    return nb


def test_the_grader_reads_a_new_kind_from_the_source_notebook(toy_kind):
    spec, = scorer.specs(toy_source(), "smoke")
    assert (spec.kind, spec.bound, spec.options, spec.module) == ("brightness", 0.5, {"n_test": 200}, TOY_MODULE)
    assert spec.check is toy_kind and spec.describe(0.7) == "dim model: 0.7000 (needs at most 0.5)"
    assert not spec.passed(0.7) and spec.passed(0.1)
    rows = audit.compare([{"label": "dim model", "value": 0.30}], [{"label": "dim model", "value": 0.05}],
                         {"dim model": toy_kind})
    assert rows[0]["flagged"] and rows[0]["kind"] == "brightness"


@pytest.mark.slow
def test_a_toy_lab_graded_with_a_new_kind(toy_kind, tmp_path, mirror):
    course = kit.copy_course(tmp_path / "course")
    source = toy_source()
    path = course.folder("source") / "toy_check_lab" / "toy_check_lab.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(source, path)
    autograde.generate(course, ["toy_check_lab"])
    _, release = kit.notebooks(course, "toy_check_lab")
    bright = "model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\nnn.init.zeros_(model[1].weight)\n" \
             "nn.init.constant_(model[1].bias, 3.0)"
    hand_ins = {"good": kit.solved(release, source), "bright": kit.fill(release, {"model": bright}),
                "patcher": kit.insert_before_tests(kit.fill(release, {"model": bright}),
                                                       "from course_utils import grading\n"
                                                       "grading.expect_at_most = lambda *a, **k: None")}
    for student, nb in hand_ins.items():
        kit.hand_in(tmp_path / "inbox", student, "toy_check_lab", nb)
    autograde.collect(course, tmp_path / "inbox")
    # Unsandboxed: the sandbox imports only course_utils and autograde, and the toy kind lives elsewhere.
    results = {r.student: r for r in autograde.autograde(course, ["toy_check_lab"], mode="smoke", workers=2,
                                                         sandboxed=False)}
    points = {s: kit.item_scores(course, "toy_check_lab", s)["test_dim"][0] for s in hand_ins}
    assert points == {"good": 1, "bright": 0, "patcher": 0}, {s: r.message for s, r in results.items()}
    scored = {s: r.outside[0] for s, r in results.items()}
    assert scored["good"]["passed"] and scored["good"]["value"] == pytest.approx(0.0)
    assert scored["patcher"]["value"] == pytest.approx(3.0) and not scored["patcher"]["passed"]
    assert "dim model: 3.0000 (needs at most 0.5)" in results["patcher"].message


def test_a_threshold_and_a_label_stated_once_in_a_locked_cell(toy_kind):
    """A lab names its bound and label once (a locked cell); the grader reads the instructor's values."""
    nb = toy_source()
    nb.cells.insert(1, kit._cell("code", 'NEEDED = grading.threshold(smoke=0.5, laptop=0.25, full=0.2)\n'
                                             'LABEL = "dim model"', "constants", locked=True))
    test = next(c for c in nb.cells if kit.grade_id(c) == "test_dim")
    test.source = test.source.replace('"dim model"', "LABEL").replace(
        "at_most=grading.threshold(smoke=0.5, laptop=0.5, full=0.5)", "at_most=NEEDED")
    assert scorer.constants(nb, "laptop") == {"NEEDED": 0.25, "LABEL": "dim model"}
    spec, = scorer.specs(nb, "laptop")
    assert (spec.bound, spec.label) == (0.25, "dim model")
    # a name assigned in a student's (solution) cell is not the instructor's: the grader cannot read it
    nb.cells[1].metadata["nbgrader"]["solution"] = True
    with pytest.raises(ValueError, match="cannot read"):
        scorer.specs(nb, "laptop")
