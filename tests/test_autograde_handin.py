"""Grading handed-in weights (``--handed-in``): a quick re-run checks the code, the weights are scored outside.

One batch of the cheapest lab, sandboxed, in smoke mode. A student's own run
(``testing.run_as_student``) saves the weights every hand-in carries; most
hand-ins carry the good run's weights, whatever their code, so each test
shows what the code still costs when the weights are good: each TODO left
blank, and the bad batch's mutants that lose marks (``test_autograde_bad``:
broken code, a syntax error, a truncated file, hard-coded accuracies, patched
grading helpers). Its other hand-ins meet the sandbox, the limits and the
restored test cells before any weights are read, the same in both ways. A
second, audited run re-trains two hand-ins: one honest, one whose weights were
trained on the test images.
"""
from __future__ import annotations

import copy
import re
import shutil

import nbformat
import pytest

import autograde
from autograde import scorer
from course_utils import grading

import kit

LABS = autograde.Course(kit.REPO).labs()
LAB = LABS[0] if LABS else None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(LAB is None, reason="no labs in solutions/ yet")]
# A cell that makes the run train on the test images, for longer: what a cheating student does elsewhere
# before handing in the clean notebook with those weights.
CHEAT = """
train_loader = data.make_loader(splits.test, BATCH_SIZE, shuffle=True, seed=SEED)
splits.train = splits.test
BUDGET.update(logreg_epochs=40, mlp_epochs=40)
"""


def cheating(nb):
    """A copy of ``nb`` with :data:`CHEAT` right after the cell that loads the data."""
    out = nbformat.from_dict(copy.deepcopy(nb))
    at = next(i for i, c in enumerate(out.cells) if c.cell_type == "code" and "make_loaders(" in c.source)
    out.cells.insert(at + 1, nbformat.v4.new_code_cell(CHEAT))
    return out


@pytest.fixture(scope="module")
def batch(tmp_path_factory, grading_cluster) -> kit.Batch:
    """Hand-ins with weights: good, missing, damaged, trained on the test images, and the bad ones of
    :func:`kit.bad_hand_ins`; graded from their weights, two of them audited. ``extra``: specs, and blanks
    (hand-in -> the TODOs it leaves blank)."""
    kit.require_sandbox()
    batch = kit.generated_course(tmp_path_factory.mktemp("handin"), LAB)
    course, source, release = batch.course, batch.source, batch.release
    solved = kit.solved(release, source)
    runs = course.root / "student-runs"
    good = kit.run_as_student(solved, runs / "good", LAB, "smoke").parent / "weights"
    cheat = kit.run_as_student(cheating(solved), runs / "cheat", LAB, "smoke").parent / "weights"
    mutants = kit.bad_hand_ins(batch)
    hand_ins = {name: (mutants[name], good) for name in ("b_raises", "d_syntax", "g_truncated", "h_hardcoded",
                                                         "j_patcher")}
    hand_ins |= {"a_good": (solved, good), "n_no_weights": (solved, None), "w_bad_weights": (solved, good),
                 "x_cheat": (solved, cheat)}
    # Every other TODO left blank, in two hand-ins: the test right after each blank one fails whatever came before.
    released = {kit.grade_id(c): c.source for c in release.cells if kit.is_todo(c)}
    blanks = {f"blank_{half}": list(released)[half::2] for half in (0, 1)}
    hand_ins |= {name: (kit.fill(solved, {todo: released[todo] for todo in left}), good)
                 for name, left in blanks.items()}
    inbox = course.root / "inbox"
    for student, (nb, weights) in hand_ins.items():
        folder = kit.hand_in(inbox, student, LAB, nb).parent
        if weights is not None:
            shutil.copytree(weights, folder / "weights")
    specs = scorer.specs(source, "smoke")
    first, second = (inbox / "w_bad_weights" / LAB / grading.weights_path(s.label) for s in specs[:2])
    shutil.copyfile(second, first)         # the second model's weights where the first one's belong
    second.write_bytes(b"not a torch file")  # and a damaged file
    autograde.collect(course, inbox)
    # The instructor ran the solution too: its weights sit in the source folder and must reach nobody.
    shutil.copytree(cheat, course.folder("source") / LAB / "weights")
    options = dict(mode="smoke", scheduler=grading_cluster, sandboxed=True, handed_in=True)
    results = {r.student: r for r in autograde.autograde(
        course, [LAB], students=[s for s in hand_ins if s not in ("a_good", "x_cheat")], **options)}
    results |= {r.student: r for r in autograde.autograde(course, [LAB], students=["a_good", "x_cheat"],
                                                          audit_share=2, **options)}
    batch.results = results
    batch.extra.update(specs=specs, blanks=blanks)
    return batch


def test_good_hand_in_keeps_full_marks_and_passes_its_audit(batch):
    assert batch.results["a_good"].status == "graded", batch.results["a_good"].message
    assert batch.full_marks("a_good"), batch.explain("a_good")
    audit = batch.results["a_good"].audit
    assert [row["label"] for row in audit] == [s.label for s in batch.extra["specs"]]
    assert not any(row["flagged"] for row in audit), audit
    # the handed-in weights and the re-trained model are the same run of the same seeded code
    assert all(abs(row["handed_in"] - row["retrained"]) <= 0.02 for row in audit), audit


def test_each_blank_todo_still_loses_its_tests(batch):
    """Good weights do not buy back the code: the test right after each TODO left blank scores 0 (each
    hand-in leaves every other TODO blank)."""
    cells = batch.release.cells
    assert sorted(todo for left in batch.extra["blanks"].values() for todo in left) == \
        sorted(kit.grade_id(c) for c in cells if kit.is_todo(c))
    for student, left in batch.extra["blanks"].items():
        got = batch.scores(student)
        for todo in left:
            at = next(i for i, c in enumerate(cells) if kit.grade_id(c) == todo)
            test = next(kit.grade_id(c) for c in cells[at:] if kit.is_test(c))
            assert got[test][0] == 0, f"blank {todo}: {batch.explain(student)}"


def test_mutants_lose_what_they_lose_when_re_trained(batch):
    accuracy = {s.grade_id for s in batch.extra["specs"]}
    assert batch.results["g_truncated"].status == "error" and "not valid JSON" in batch.results["g_truncated"].message
    assert sum(s for s, _ in batch.scores("h_hardcoded").values()) == 0, batch.explain("h_hardcoded")
    patched = batch.scores("j_patcher")
    assert all(patched[gid][0] == 0 for gid in accuracy), batch.explain("j_patcher")
    last = max(i for i, c in enumerate(batch.release.cells) if kit.is_todo(c))
    after = [kit.grade_id(c) for c in batch.release.cells[last:] if kit.is_test(c)]
    for student in ("b_raises", "d_syntax"):
        got = batch.scores(student)
        assert all(got[gid][0] == 0 for gid in after), batch.explain(student)
        assert all(got[gid][0] == got[gid][1] for gid in got if gid not in after), batch.explain(student)


def test_missing_weights_cost_only_the_accuracy_items_with_the_reason(batch):
    accuracy = {s.grade_id for s in batch.extra["specs"]}
    got = batch.scores("n_no_weights")
    assert all(got[gid][0] == 0 for gid in accuracy) and all(s == m for g, (s, m) in got.items()
                                                               if g not in accuracy), batch.explain("n_no_weights")
    errors = kit.cell_errors(batch.course, LAB, "n_no_weights")
    assert all("no trained weights were handed in" in errors[gid] for gid in accuracy), errors


def test_weights_that_do_not_fit_or_are_damaged_are_caught(batch):
    first, second = batch.extra["specs"][0].grade_id, batch.extra["specs"][1].grade_id
    got, errors = batch.scores("w_bad_weights"), kit.cell_errors(batch.course, LAB, "w_bad_weights")
    assert got[first][0] == 0 and "do not fit the model this notebook builds" in errors[first], errors
    assert re.search(r"Missing key|Unexpected key|size mismatch", errors[first]), errors  # says which tensors
    assert got[second][0] == 0 and "cannot be read" in errors[second], errors
    assert all(s == m for g, (s, m) in got.items() if g not in (first, second)), batch.explain("w_bad_weights")


def test_weights_trained_on_the_test_images_are_flagged_by_the_audit(batch):
    cheat = batch.results["x_cheat"]
    assert batch.full_marks("x_cheat")  # the weights do pass...
    flagged = [row for row in cheat.audit if row["flagged"]]
    assert flagged and all(row["handed_in"] > row["retrained"] + 0.05 for row in flagged), cheat.audit
    assert "AUDIT" in cheat.message and "handed-in weights score better" in cheat.message


def test_report_shows_audit_flags_and_identical_weights(batch):
    html = (batch.course.config_dir / "reports" / f"{LAB}.html").read_text()
    assert "Audit: handed-in weights against re-training" in html and "FLAGGED" in html
    assert "Identical handed-in weights" in html and "blank_" in html and "<img" in html
    rows = [line for line in sorted((batch.course.config_dir / "reports").glob("autograde-*.csv"))[-1].read_text()
            .splitlines() if line.startswith("x_cheat")]
    assert rows and "FLAGGED" in rows[0]
