"""Every lab in solutions/, graded by real nbgrader into a real gradebook (smoke mode).

One batch per lab, graded in parallel: the solution pasted into the
released notebook must earn full marks on every autograded item, the
untouched release zero, and the lab's alternative implementation
(tests/fixtures/<lab>/alternative.py) full marks. New labs join by
themselves: they are discovered from solutions/<lab>/<lab>.ipynb.
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


@pytest.fixture(scope="module", params=lab_params())
def batch(request, tmp_path_factory):
    """Generate, collect and autograde solution / release / alternative of one lab; the results by student."""
    lab = request.param
    course = testing.copy_course(tmp_path_factory.mktemp(lab), [lab])
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


def full_marks(course: autograde.Course, lab: str, student: str) -> None:
    scores = testing.item_scores(course, lab, student)
    assert scores, f"{lab} has no autograded items"
    assert all(got == most for got, most in scores.values()), explain(course, lab, student)


def test_solution_scores_full_marks(batch):
    course, lab, results = batch
    assert results["solution"].status == "graded", results["solution"].message
    full_marks(course, lab, "solution")


def test_untouched_release_scores_zero(batch):
    course, lab, results = batch
    assert results["release"].status == "graded", results["release"].message
    scores = testing.item_scores(course, lab, "release")
    assert all(got == 0 for got, _ in scores.values()), explain(course, lab, "release")


def test_alternative_implementation_scores_full_marks(batch):
    course, lab, results = batch
    if "alternative" not in results:
        pytest.fail(f"{alternative_path(lab).relative_to(REPO)} is missing: every lab needs a different but "
                    f"correct implementation of its TODO cells (format in CONTRIBUTING.md)")
    assert results["alternative"].status == "graded", results["alternative"].message
    full_marks(course, lab, "alternative")


def test_grader_patching_earns_no_accuracy_points(batch):
    """Rebound helpers and no-op optimisers: the in-kernel checks pass, the models are scored outside."""
    course, lab, results = batch
    source, _ = testing.notebooks(course, lab)
    items = {spec.grade_id for spec in scorer.specs(source, "smoke")}
    assert items, f"{lab} has no accuracy or reconstruction check scored outside the kernel"
    scores = testing.item_scores(course, lab, "patcher")
    assert all(scores[item][0] == 0 for item in items), explain(course, lab, "patcher")
    assert "scored outside the kernel" in results["patcher"].message, results["patcher"].message


@pytest.mark.parametrize("lab", lab_params())
def test_student_notebooks_are_what_nbgrader_generates(lab, tmp_path):
    """notebooks/<lab> must equal nbgrader's release of solutions/<lab> (never edit it by hand)."""
    problems = autograde.check(testing.copy_course(tmp_path, [lab]), [lab])
    assert not problems, ("\n".join(problems) + f"\nFix: edit solutions/{lab}/{lab}.ipynb only, then run "
                          f"`python -m autograde generate {lab}` and commit notebooks/{lab}.")


def test_every_student_notebook_has_a_source():
    stray = sorted(p.name for p in (REPO / "notebooks").glob("*") if p.is_dir() and p.name not in LABS)
    assert not stray, f"notebooks/{stray} have no solutions/ source: remove them or add their source"
