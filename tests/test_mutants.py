"""The typical mistakes of each lab are caught by Validate, with a message that names them, and cost points.

Each file ``tests/fixtures/<lab>/mutants/<mistake>.py`` is a hand-in with one typical mistake (or a few):
the TODO cells it changes, as ``# %% grade_id: <id>`` blocks like ``alternative.py``, headed by

    # Mistake: what the student got wrong
    # Validate: <test cell's grade_id>: <words its error message must contain>

(one ``Validate`` line per test cell that must fail; ``# Alone: <why>`` when a later TODO's checks build
on the changed cell, so that it shares no hand-in). A mistake that only the grader's recomputed
accuracy can reveal says ``# Validate: none (<why>)`` and ``# Grading: <item>`` instead, and the
lab's notebook lists what only the grader checks. Every other TODO cell holds the solution.

- ``test_validate_names_each_mistake``: real ``nbgrader validate`` (smoke mode, the students'
  ``notebooks/nbgrader_config.py``, training cut to two batches) fails each named test cell with the named words, and never ends
  with the verdict of a passing notebook. To keep it cheap, each notebook is cut after the last test
  cell it must fail (a failure there fails the whole notebook; later cells cannot undo it), and
  mistakes in different TODO cells share one notebook (each visible check builds its own models from
  its own TODO cell only, so one mistake cannot hide or cause another's failure).
- ``test_grading_takes_points_for_each_mistake``: the same hand-ins, whole, graded by the real
  pipeline in one batch per lab (smoke mode) the quick way (``--handed-in``, without weights: training
  stops after two batches, and the accuracy items, lost for want of weights, are not what this test
  reads; a batch where a mistake names an accuracy item is re-trained instead): every named item scores
  below its maximum. In CI: every hand-in of lab 1, and in every lab the
  hand-ins with a mistake that only grading reveals (``# Validate: none``). A mistake that Validate names
  fails the same test cell when graded (the same code, with the hidden checks after it), which lab 1's
  batch shows; ``COURSE_GRADE_ALL_MUTANTS=1`` grades every hand-in of every lab (see :func:`graded`).
- ``alternative_*.py`` beside ``alternative.py`` are further correct solutions (in a student's own
  style): they validate whole (no cut training) with the passing verdict (each lab's ``alternative.py`` also
  earns full marks when graded, ``tests/test_autograde_labs.py``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

import autograde
from autograde import scorer

from course_utils import modes, validation

from kit import REPO
import kit

LABS = autograde.Course(REPO).labs()
# Every hand-in of every lab is graded with COURSE_GRADE_ALL_MUTANTS=1; in CI, see graded().
GRADE_ALL = os.environ.get("COURSE_GRADE_ALL_MUTANTS") == "1"
_HEADER = re.compile(r"^# (Mistake|Validate|Grading|Alone): (.*)$", re.MULTILINE)


@dataclass
class Mutant:
    name: str
    code: dict[str, str]  # TODO grade_id -> cell source
    mistake: str
    validate: list[tuple[str, str]] = field(default_factory=list)  # (test cell, words of its error)
    grading: list[str] = field(default_factory=list)  # items that lose points (the Validate cells included)
    alone: bool = False  # shares no hand-in: a later TODO's checks build on the cell it changes


def fixtures(lab: str) -> Path:
    return REPO / "tests" / "fixtures" / lab


def mutants(lab: str) -> list[Mutant]:
    out = []
    for path in sorted((fixtures(lab) / "mutants").glob("*.py")):
        text = path.read_text()
        mutant = Mutant(path.stem, kit.load_alternative(path), "")
        for key, value in _HEADER.findall(text):
            if key == "Mistake":
                mutant.mistake += value
            elif key == "Validate" and not value.startswith("none"):
                cell, _, words = value.partition(": ")
                mutant.validate.append((cell.strip(), words.strip()))
            elif key == "Alone":
                mutant.alone = True
            elif key == "Grading":
                mutant.grading += [item.strip() for item in value.split(",")]
        mutant.grading = list(dict.fromkeys([cell for cell, _ in mutant.validate] + mutant.grading))
        out.append(mutant)
    return out


def controls(lab: str) -> dict[str, dict[str, str]]:
    """Further correct solutions: ``alternative_<style>.py`` -> their TODO cells."""
    return {path.stem: kit.load_alternative(path) for path in sorted(fixtures(lab).glob("alternative_*.py"))}


def pack(found: list[Mutant]) -> list[list[Mutant]]:
    """Hand-ins: mutants that change different TODO cells share one (first fit, in name order), except those alone."""
    handins: list[list[Mutant]] = []
    for mutant in found:
        home = None if mutant.alone else next(
            (h for h in handins if not h[0].alone and not set(mutant.code) & {gid for m in h for gid in m.code}), None)
        if home is None:
            handins.append([mutant])
        else:
            home.append(mutant)
    return handins


def graded(lab: str, handins: list[list[Mutant]]) -> list[int]:
    """Indexes of the hand-ins graded end to end: all of the first lab's (or every lab's with
    COURSE_GRADE_ALL_MUTANTS=1), and elsewhere those holding a mistake no visible check names (grading alone
    reveals it). Grading runs whole notebooks, the costly part of CI; a mistake that Validate names fails
    the same test cell when graded."""
    if GRADE_ALL or lab == LABS[0]:
        return list(range(len(handins)))
    return [i for i, handin in enumerate(handins) if any(not mutant.validate for mutant in handin)]


def handin_names(handins: list[list[Mutant]]) -> list[str]:
    """Student ids of the hand-ins (nbgrader wants plain ids; the failure messages name the mutants)."""
    return [f"mutants{i + 1:02d}" for i in range(len(handins))]


def build(release, source, handin: list[Mutant]) -> nbformat.NotebookNode:
    code = {gid: src for mutant in handin for gid, src in mutant.code.items()}
    return kit.fill(kit.solved(release, source), code)


def cut_after(nb: nbformat.NotebookNode, cells: set[str]) -> nbformat.NotebookNode:
    last = max(i for i, cell in enumerate(nb.cells) if kit.grade_id(cell) in cells)
    out = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    out.cells = out.cells[:last + 1]
    return out


def lab_notebooks(lab: str):
    return (kit.read(REPO / "solutions" / lab / f"{lab}.ipynb"),
            kit.read(REPO / "notebooks" / lab / f"{lab}.ipynb"))


def squash(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- the fixtures themselves

@pytest.mark.parametrize("lab", LABS)
def test_each_lab_lists_its_typical_mistakes_against_existing_cells(lab):
    found = mutants(lab)
    assert found, f"tests/fixtures/{lab}/mutants/ holds no typical mistakes"
    source, release = lab_notebooks(lab)
    todos = {kit.grade_id(c) for c in release.cells if kit.is_todo(c)}
    items = {kit.grade_id(c) for c in source.cells if kit.grade_id(c)}
    for mutant in found:
        assert mutant.mistake, f"{mutant.name}: no '# Mistake:' line"
        assert set(mutant.code) <= todos, f"{mutant.name}: changes cells that are no TODO: {set(mutant.code) - todos}"
        assert mutant.grading, f"{mutant.name}: names no test cell that catches it ('# Validate:' or '# Grading:')"
        assert set(mutant.grading) <= items, f"{mutant.name}: no such items {set(mutant.grading) - items}"


# --------------------------------------------------------------------------- Validate

def validate_all(folder: Path, names: list[str], quick: bool = True) -> dict[str, str]:
    """``nbgrader validate`` of several notebooks in ``folder`` (smoke mode), in one run; output per notebook.

    ``quick``: training stops after two batches (``COURSE_MAX_BATCHES``, the kit's quick run), for mistakes, whose
    visible checks come before any trained model is checked (labs 2-5 train between their TODO cells). A correct
    solution runs whole: lab 5's visible checks include its trained model's accuracy.
    """
    env = {**os.environ, "COURSE_MODE": "smoke", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if quick:
        env[modes.BATCHES_VAR] = "2"
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-m", "nbgrader", "validate", *[f"{n}.ipynb" for n in names]],
                            check=False, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:]
    parts = re.split(r"^.*Validating '.*?([^/']+)\.ipynb'.*$", result.stdout, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


class _MutantLab:
    lab: str

    def test_validate_names_each_mistake(self, tmp_path):
        source, release = lab_notebooks(self.lab)
        handins = pack(mutants(self.lab))
        folder, whole = tmp_path / "notebooks", tmp_path / "controls"
        names = []
        for place in (folder, whole):
            place.mkdir()
            (place / "nbgrader_config.py").write_text((REPO / "notebooks" / "nbgrader_config.py").read_text())
        for handin, name in zip(handins, handin_names(handins)):
            cells = {cell for mutant in handin for cell, _ in mutant.validate}
            if cells:
                nbformat.write(cut_after(build(release, source, handin), cells), folder / f"{name}.ipynb")
                names.append(name)
        correct = controls(self.lab)
        for name, code in correct.items():
            nbformat.write(kit.fill(kit.solved(release, source), code), whole / f"{name}.ipynb")
        reports = validate_all(folder, names)
        if correct:
            reports.update(validate_all(whole, list(correct), quick=False))
        names += list(correct)
        assert sorted(reports) == sorted(names), f"validated {sorted(reports)}, expected {sorted(names)}"
        missed = []
        for handin, name in zip(handins, handin_names(handins)):
            report = squash(reports.get(name, ""))
            for mutant in handin:
                for cell, words in mutant.validate:
                    if "VALIDATION FAILED" not in report or validation.VERDICT_START in report \
                            or squash(words) not in report:
                        missed.append(f"{mutant.name} ({mutant.mistake}): expected {cell} to fail with {words!r}")
        for name in correct:
            report = squash(reports[name])
            if validation.VERDICT_START not in report or "VALIDATION FAILED" in report:
                missed.append(f"{name} (a correct solution) did not validate: {report[-2000:]}")
        assert not missed, "\n".join(missed) + "\n\nreports:\n" + "\n".join(
            f"--- {name}\n{text[-2500:]}" for name, text in reports.items())

    def test_grading_takes_points_for_each_mistake(self, tmp_path, grading_cluster):
        handins = pack(mutants(self.lab))
        chosen = graded(self.lab, handins)
        if not chosen:
            pytest.skip(f"Validate names each of {self.lab}'s mistakes (tested above); its hand-ins are graded "
                        f"with COURSE_GRADE_ALL_MUTANTS=1")
        course = kit.copy_course(tmp_path, [self.lab])
        autograde.generate(course, [self.lab])
        source, release = kit.notebooks(course, self.lab)
        names = handin_names(handins)
        inbox = course.root / "inbox"
        for i in chosen:
            kit.hand_in(inbox, names[i], self.lab, build(release, source, handins[i]))
        autograde.collect(course, inbox)
        # Without weights every accuracy item is lost whatever the code: a mistake named by one is re-trained.
        accuracy = {spec.grade_id for spec in scorer.specs(source, "smoke")}
        quick = not accuracy & {item for i in chosen for mutant in handins[i] for item in mutant.grading}
        results = {r.student: r for r in autograde.autograde(course, [self.lab], mode="smoke", handed_in=quick,
                                                                 scheduler=grading_cluster)}
        problems = []
        for i in chosen:
            student = names[i]
            if results[student].status != "graded":
                problems.append(f"{student}: {results[student].message}")
                continue
            scores = kit.item_scores(course, self.lab, student)
            for mutant in handins[i]:
                kept = [item for item in mutant.grading if scores[item][0] >= scores[item][1]]
                if kept:
                    problems.append(f"{mutant.name} ({mutant.mistake}): full points for {kept}; scores {scores}, "
                                    f"errors {kit.cell_errors(course, self.lab, student)}")
        assert not problems, "\n".join(problems)


pytestmark = pytest.mark.slow
MUTANT_CLASSES = {lab: type(f"TestMutants_{lab}", (_MutantLab,), {"lab": lab, "__doc__": f"{lab}'s typical mistakes."})
                  for lab in LABS if (fixtures(lab) / "mutants").is_dir()}
globals().update({cls.__name__: cls for cls in MUTANT_CLASSES.values()})
