"""Every lab in solutions/, graded by real nbgrader into a real gradebook (smoke mode).

One batch per lab, graded in parallel: the solution pasted into the
released notebook must earn full marks on every autograded item, the
untouched release zero, and the lab's alternative implementation
(tests/fixtures/<lab>/alternative.py) full marks. New labs join by
themselves: they are discovered from solutions/<lab>/<lab>.ipynb, and each
gets a test class of its own, so pytest-xdist grades the labs on different
workers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
import autograde  # noqa: E402
from autograde import scorer, testing  # noqa: E402

LABS = autograde.Course(REPO).labs()
pytestmark = pytest.mark.slow


def lab_params():
    return LABS or [pytest.param(None, marks=pytest.mark.skip(reason="no labs in solutions/ yet"))]


def alternative_path(lab: str) -> Path:
    return REPO / "tests" / "fixtures" / lab / "alternative.py"


def explain(course: autograde.Course, lab: str, student: str) -> str:
    """Item scores and cell errors of one graded student, for assertion messages."""
    return f"{student}: scores {testing.item_scores(course, lab, student)}, errors {testing.cell_errors(course, lab, student)}"


def grade_lab(lab: str, folder: Path) -> tuple[autograde.Course, str, dict]:
    """Generate, collect and autograde solution / release / patcher / alternative of one lab."""
    course = testing.copy_course(folder, [lab])
    autograde.generate(course, [lab])
    source, release = testing.notebooks(course, lab)
    inbox = course.root / "inbox"
    testing.hand_in(inbox, "solution", lab, testing.solved(release, source))
    testing.hand_in(inbox, "release", lab, release)
    testing.hand_in(inbox, "patcher", lab, testing.insert_before_tests(testing.solved(release, source),
                                                                        testing.GRADER_PATCH))
    if alternative_path(lab).is_file():
        alternative = testing.fill(release, testing.load_alternative(alternative_path(lab)))
        testing.hand_in(inbox, "alternative", lab, alternative)
    autograde.collect(course, inbox)
    results = autograde.autograde(course, [lab], mode="smoke", workers=2)
    return course, lab, {r.student: r for r in results}


@pytest.fixture(scope="class")
def batch(request, tmp_path_factory):
    """One lab's graded batch (the lab of the test class); results by student."""
    return grade_lab(request.cls.lab, tmp_path_factory.mktemp(request.cls.lab))


def full_marks(course: autograde.Course, lab: str, student: str) -> None:
    scores = testing.item_scores(course, lab, student)
    assert scores, f"{lab} has no autograded items"
    assert all(got == most for got, most in scores.values()), explain(course, lab, student)


class _GradedLab:
    """One lab's tests on its batch; a subclass per lab below is one pytest-xdist scope (``--dist loadscope``),
    so the labs' batches are graded on different workers."""

    lab: str

    def test_solution_scores_full_marks(self, batch):
        course, lab, results = batch
        assert results["solution"].status == "graded", results["solution"].message
        full_marks(course, lab, "solution")

    def test_untouched_release_scores_zero(self, batch):
        course, lab, results = batch
        assert results["release"].status == "graded", results["release"].message
        scores = testing.item_scores(course, lab, "release")
        assert all(got == 0 for got, _ in scores.values()), explain(course, lab, "release")

    def test_alternative_implementation_scores_full_marks(self, batch):
        course, lab, results = batch
        if "alternative" not in results:
            pytest.fail(f"{alternative_path(lab).relative_to(REPO)} is missing: every lab needs a different but "
                        f"correct implementation of its TODO cells (format in CONTRIBUTING.md)")
        assert results["alternative"].status == "graded", results["alternative"].message
        full_marks(course, lab, "alternative")

    def test_grader_patching_earns_no_accuracy_points(self, batch):
        """Rebound helpers and no-op optimisers: the in-kernel checks pass, the models are scored outside."""
        course, lab, results = batch
        source, _ = testing.notebooks(course, lab)
        items = {spec.grade_id for spec in scorer.specs(source, "smoke")}
        assert items, f"{lab} has no accuracy or reconstruction check scored outside the kernel"
        scores = testing.item_scores(course, lab, "patcher")
        assert all(scores[item][0] == 0 for item in items), explain(course, lab, "patcher")
        assert "scored outside the kernel" in results["patcher"].message, results["patcher"].message


LAB_CLASSES = {lab: type(f"TestGraded_{lab}", (_GradedLab,), {"lab": lab, "__doc__": f"{lab}, graded."})
               for lab in LABS}
globals().update({cls.__name__: cls for cls in LAB_CLASSES.values()})


@pytest.mark.parametrize("lab", lab_params())
def test_student_notebooks_are_what_nbgrader_generates(lab, tmp_path):
    """notebooks/<lab> must equal nbgrader's release of solutions/<lab> (never edit it by hand)."""
    problems = autograde.check(testing.copy_course(tmp_path, [lab]), [lab])
    assert not problems, ("\n".join(problems) + f"\nFix: edit solutions/{lab}/{lab}.ipynb only, then run "
                          f"`python -m autograde generate {lab}` and commit notebooks/{lab}.")


def test_every_student_notebook_has_a_source():
    stray = sorted(p.name for p in (REPO / "notebooks").glob("*") if p.is_dir() and p.name not in LABS)
    assert not stray, f"notebooks/{stray} have no solutions/ source: remove them or add their source"
