"""Every lab in solutions/, graded by real nbgrader into a real gradebook (smoke mode).

One batch per lab, graded in parallel: the solution pasted into the
released notebook must earn full marks on every autograded item; the
untouched release zero, and it runs to its first TODO, where the stub's
``NotImplementedError`` stops the student (JupyterLab shows this for the first
lab only, test_browser_labs.py); the lab's alternative implementation
(tests/fixtures/<lab>/alternative.py) full marks; and a hand-in that patches the
grading helpers no accuracy points (the first lab's is in test_autograde_bad.py). New labs join by
themselves: they are discovered from solutions/<lab>/<lab>.ipynb, and each
gets a test class of its own, so pytest-xdist grades the labs on different
workers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import autograde  # noqa: E402
from autograde import scorer  # noqa: E402

import kit
from kit import REPO

LABS = autograde.Course(REPO).labs()
# The grader-patching hand-in of every lab but the first: test_autograde_bad's batch grades the first lab's, with
# more checks (the integrity error in its cells, the "altered" note), and test_autograde_handin grades it again.
PATCHED_LABS = LABS[1:]
pytestmark = pytest.mark.slow


def lab_params():
    return LABS or [pytest.param(None, marks=pytest.mark.skip(reason="no labs in solutions/ yet"))]


def alternative_path(lab: str) -> Path:
    return REPO / "tests" / "fixtures" / lab / "alternative.py"


def grade_lab(lab: str, folder: Path, scheduler: str) -> kit.Batch:
    """Generate, collect and autograde solution / release / patcher / alternative of one lab on ``scheduler``."""
    batch = kit.generated_course(folder, lab)
    good = kit.solved(batch.release, batch.source)
    hand_ins = {"solution": good, "release": batch.release}
    if lab in PATCHED_LABS:
        hand_ins["patcher"] = kit.insert_before_tests(good, kit.attack("grader_patch"))
    if alternative_path(lab).is_file():
        hand_ins["alternative"] = kit.fill(batch.release, kit.load_alternative(alternative_path(lab)))
    return kit.grade_batch(batch, hand_ins, scheduler=scheduler)


@pytest.fixture(scope="class")
def batch(request, tmp_path_factory, grading_cluster) -> kit.Batch:
    """One lab's graded batch (the lab of the test class)."""
    return grade_lab(request.cls.lab, tmp_path_factory.mktemp(request.cls.lab), grading_cluster)


def full_marks(batch: kit.Batch, student: str) -> None:
    assert batch.scores(student), f"{batch.lab} has no autograded items"
    assert batch.full_marks(student), batch.explain(student)


class _GradedLab:
    """One lab's tests on its batch; a subclass per lab below is one pytest-xdist scope (``--dist loadscope``),
    so the labs' batches are graded on different workers."""

    lab: str

    def test_solution_scores_full_marks(self, batch):
        results = batch.results
        assert results["solution"].status == "graded", results["solution"].message
        full_marks(batch, "solution")

    def test_untouched_release_scores_zero(self, batch):
        results = batch.results
        assert results["release"].status == "graded", results["release"].message
        scores = batch.scores("release")
        assert all(got == 0 for got, _ in scores.values()), batch.explain("release")

    def test_release_runs_to_its_first_todo(self, batch):
        """What a student meets first: the released notebook's cells before the first TODO run without an error,
        and the first error after it is the blank TODO's ``NotImplementedError`` (the graded release ran every cell)."""
        nb = kit.read(batch.course.folder("autograded") / "release" / batch.lab / f"{batch.lab}.ipynb")
        code = [c for c in nb.cells if c.cell_type == "code"]
        todo = next(i for i, c in enumerate(code) if kit.is_todo(c))
        errors = [(i, o) for i, c in enumerate(code) for o in c.get("outputs", []) if o.get("output_type") == "error"]
        before = [f"code cell {i}: {o.get('ename')}: {o.get('evalue')}"[:300] for i, o in errors if i < todo]
        assert not before, f"{batch.lab}: cells before the first TODO (code cell {todo}) fail:\n" + "\n".join(before)
        unrun = [i for i, c in enumerate(code[:todo]) if c.get("execution_count") is None]
        assert not unrun, f"{batch.lab}: code cells {unrun} before the first TODO did not run"
        assert errors, f"{batch.lab}: the untouched release raised nothing; its first TODO must fail"
        first, output = errors[0]
        assert output.get("ename") == "NotImplementedError", (
            f"{batch.lab}: the first error after the first TODO (code cell {todo}) should be the stub's "
            f"NotImplementedError, found {output.get('ename')}: {output.get('evalue')} in code cell {first}")

    def test_alternative_implementation_scores_full_marks(self, batch):
        results = batch.results
        if "alternative" not in results:
            pytest.fail(f"{alternative_path(batch.lab).relative_to(REPO)} is missing: every lab needs a different but "
                        f"correct implementation of its TODO cells (format in CONTRIBUTING.md)")
        assert results["alternative"].status == "graded", results["alternative"].message
        full_marks(batch, "alternative")


class _PatchedLab(_GradedLab):
    """A lab whose batch also holds the grader-patching hand-in (:data:`PATCHED_LABS`)."""

    def test_grader_patching_earns_no_accuracy_points(self, batch):
        """Rebound helpers and no-op optimisers: the in-kernel checks pass, the models are scored outside."""
        results = batch.results
        items = {spec.grade_id for spec in scorer.specs(batch.source, "smoke")}
        assert items, f"{batch.lab} has no accuracy or reconstruction check scored outside the kernel"
        scores = batch.scores("patcher")
        assert all(scores[item][0] == 0 for item in items), batch.explain("patcher")
        assert "scored outside the kernel" in results["patcher"].message, results["patcher"].message


LAB_CLASSES = {lab: type(f"TestGraded_{lab}", (_PatchedLab if lab in PATCHED_LABS else _GradedLab,),
                         {"lab": lab, "__doc__": f"{lab}, graded."})
               for lab in LABS}
globals().update({cls.__name__: cls for cls in LAB_CLASSES.values()})


@pytest.mark.parametrize("lab", lab_params())
def test_student_notebooks_are_what_nbgrader_generates(lab, tmp_path):
    """notebooks/<lab> must equal nbgrader's release of solutions/<lab> (never edit it by hand)."""
    problems = autograde.check(kit.copy_course(tmp_path, [lab]), [lab])
    assert not problems, ("\n".join(problems) + f"\nFix: edit solutions/{lab}/{lab}.ipynb only, then run "
                          f"`python -m autograde generate {lab}` and commit notebooks/{lab}.")


def test_every_student_notebook_has_a_source():
    stray = sorted(p.name for p in (REPO / "notebooks").glob("*") if p.is_dir() and p.name not in LABS)
    assert not stray, f"notebooks/{stray} have no solutions/ source: remove them or add their source"
