"""Similar hand-ins (autograde.similarity, ``python -m autograde similar``) on real labs' code.

No grading run: the hand-ins are written straight into a throwaway course's submitted/ folder. Lab 1's
class: the reference solution, a hand-disguised copy of it (tests/fixtures/similarity/), the lab's valid
alternative solutions (independent work), the untouched release, an HTML-injection attempt and two
hand-ins that cannot be read. Every other lab with an alternative solution checks that the default
threshold leaves independent work alone.
"""
from __future__ import annotations

import itertools

import nbformat
import pytest

from autograde import cli, config, similarity

import kit

LAB = "lab1_mnist_mlp"
COPY = kit.FIXTURES / "similarity" / f"{LAB}_copy.py"
INJECTION = "</pre></td><script>alert('owned')</script><img src=x onerror=alert(1)>"


def alternatives(lab: str) -> dict[str, dict[str, str]]:
    """``name -> grade_id -> code`` of every ``tests/fixtures/<lab>/alternative*.py``."""
    return {p.stem: kit.load_alternative(p) for p in sorted((kit.FIXTURES / lab).glob("alternative*.py"))}


def labs_with_alternatives() -> list[str]:
    return [p.parent.name for p in sorted(kit.REPO.glob("solutions/*/*.ipynb"))
            if p.stem == p.parent.name and alternatives(p.stem)]


def class_of(tmp_path, lab: str) -> tuple:
    """A course with ``lab`` whose submitted/ holds the solution, the alternatives and the untouched release."""
    course = kit.copy_course(tmp_path / "course", [lab])
    source, release = kit.notebooks(course, lab)
    inbox = course.folder("submitted")
    kit.hand_in(inbox, "solution", lab, kit.solved(release, source))
    kit.hand_in(inbox, "stub", lab, release)
    for name, code in alternatives(lab).items():
        kit.hand_in(inbox, name, lab, kit.fill(release, code))
    return course, source, release


@pytest.fixture(scope="module")
def lab1(tmp_path_factory):
    course, source, release = class_of(tmp_path_factory.mktemp("similar"), LAB)
    inbox = course.folder("submitted")
    kit.hand_in(inbox, "copycat", LAB, kit.fill(release, kit.load_alternative(COPY)))
    code = kit.solution_cells(source)
    cell = next(gid for gid in code if gid.endswith("_code"))
    hostile = code[cell] + f"\n# {INJECTION}\nbanner = {INJECTION!r}\n"
    kit.hand_in(inbox, "mallory", LAB, kit.fill(kit.solved(release, source), {cell: hostile}))
    text = nbformat.writes(kit.solved(release, source))
    kit.hand_in(inbox, "truncated", LAB, text[: len(text) // 2])
    (inbox / "lost" / LAB).mkdir(parents=True)  # a folder without its notebook
    return course, similarity.compare(course, LAB)


def pair(result: similarity.Comparison, a: str, b: str) -> similarity.Pair:
    return next(p for p in result.pairs if {p.first.student, p.second.student} == {a, b})


def test_copy_with_renamed_variables_and_reordered_functions_is_flagged(lab1):
    _, result = lab1
    copied = pair(result, "copycat", "solution")
    assert copied in result.flagged, f"{copied.first_share:.2f} / {copied.second_share:.2f}"
    assert min(copied.first_share, copied.second_share) >= result.threshold
    # The matching regions are slices of each hand-in's own code: the training loop under other names.
    regions = copied.regions()
    assert regions and all(isinstance(s, slice) for s in copied.first_regions + copied.second_regions)
    copycat = copied.first if copied.first.student == "copycat" else copied.second
    found = [copycat.code[s] for s in (copied.first_regions if copycat is copied.first else copied.second_regions)]
    assert any("batch_loss.backward()" in text for text in found), found


def test_independent_correct_hand_ins_are_not_flagged(lab1):
    _, result = lab1
    independent = ["solution", *alternatives(LAB)]
    assert len(independent) >= 3
    for a, b in itertools.combinations(independent, 2):
        p = pair(result, a, b)
        assert p.similarity < result.threshold, f"{a} / {b}: {p.first_share:.2f} / {p.second_share:.2f}"
    assert {frozenset((p.first.student, p.second.student)) for p in result.flagged} == {
        frozenset(("copycat", "solution")), frozenset(("mallory", "solution")), frozenset(("copycat", "mallory"))}


def test_the_template_alone_is_similar_to_nothing(lab1):
    _, result = lab1
    stub = next(h for h in result.hand_ins if h.student == "stub")
    assert stub.code == ""  # the released stubs and scaffolding are removed: nothing of the student's own
    assert all(p.similarity == 0 for p in result.pairs if "stub" in (p.first.student, p.second.student))


def test_hand_in_code_is_escaped_in_the_report(lab1):
    course, result = lab1
    html = similarity.section(course, LAB, result=result)
    assert html.startswith("<h2>Similar hand-ins</h2>")
    assert "<h3>mallory and solution" in html or "<h3>solution and mallory" in html
    assert "<script>" not in html and "<img" not in html and "</pre></td><script" not in html
    assert "&lt;script&gt;alert(" in html
    assert "<mark>" in html  # matched tokens highlighted


def test_unreadable_hand_ins_are_skipped_with_a_reason(lab1):
    course, result = lab1
    reasons = {s.student: s.reason for s in result.skipped}
    assert set(reasons) == {"truncated", "lost"}
    assert reasons["truncated"].startswith("unreadable notebook")
    assert f"no {LAB}.ipynb" in reasons["lost"]
    html = similarity.section(course, LAB, result=result)
    assert "truncated" in html and "unreadable notebook" in html


def test_similar_command(lab1, capsys):
    course, _ = lab1
    assert cli.main(["--course", str(course.root), "similar", LAB]) == 1
    out = capsys.readouterr().out
    assert "copycat" in out and "truncated" in out and "not compared" in out
    page = (course.config_dir / "reports" / f"{LAB}-similar.html").read_text()
    assert "<h2>Similar hand-ins</h2>" in page and "<script>" not in page
    # Above every pair but the identical ones (mallory is the solution plus two lines), a stricter threshold.
    assert cli.main(["--course", str(course.root), "similar", LAB, "--threshold", "0.99"]) == 1
    assert "copycat" not in capsys.readouterr().out.split("pair(s)")[0]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--course", str(course.root), "similar", LAB, "--threshold", "1.5"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("lab", labs_with_alternatives())
def test_default_threshold_leaves_independent_work_alone(tmp_path, lab):
    course, _, _ = class_of(tmp_path, lab)
    result = similarity.compare(course, lab)
    assert result.threshold == config.SIMILARITY_THRESHOLD
    assert len(result.hand_ins) == 2 + len(alternatives(lab)) and not result.skipped
    assert not result.flagged, [(p.first.student, p.second.student, round(p.similarity, 2)) for p in result.flagged]
    assert cli.main(["--course", str(course.root), "similar", lab]) == 0


def test_a_lab_without_its_release_is_reported_not_raised(tmp_path):
    course = kit.copy_course(tmp_path / "course")
    kit.write_toy_lab(course)  # solutions/ only: never generated
    html = similarity.section(course, kit.TOY_LAB)
    assert html.startswith("<h2>Similar hand-ins</h2>") and "not compared" in html and "generate" in html
