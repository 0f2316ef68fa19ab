"""Student versions: generate notebooks/ from solutions/ and check that nobody edited them by hand."""
from __future__ import annotations

import filecmp
import logging
import tempfile
from pathlib import Path

import nbformat

from course_utils import leftovers

from . import term
from .config import RELEASE_IGNORED
from .course import Course, checked, nbgrader

log = logging.getLogger(__name__)
# A lab's own weights/ (from running the solution) never goes into a release.
_NO_WEIGHTS = [f"--CourseDirectory.ignore={pattern}" for pattern in RELEASE_IGNORED]


def generate(course: Course, labs: list[str] | None = None) -> list[str]:
    """Student versions of ``labs`` (default: all) into notebooks/, and their entries in the gradebook."""
    done = []
    for lab in course.pick_labs(labs):
        checked(nbgrader(course, "generate_assignment", lab, "--force", *_NO_WEIGHTS), f"nbgrader generate_assignment {lab}")
        done.append(lab)
        log.info("generated %s", course.folder("release") / lab)
    term.apply(course, labs=done)  # the due dates of autograde/term.toml into the gradebook
    return done


def _comparable(path: Path) -> list[dict]:
    nb = nbformat.read(path, as_version=4)
    keep = ("cell_type", "source", "metadata", "outputs", "execution_count")
    return [{k: cell.get(k) for k in keep if k in cell} for cell in nb.cells]


def _describe(cell: dict, index: int) -> str:
    gid = (cell.get("metadata") or {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" ({gid})" if gid else "")


def compare_release(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Differences between a freshly generated release folder and a committed one, in words."""
    problems = []
    if not actual_dir.is_dir():
        return [f"{actual_dir} is missing"]
    expected = {p.relative_to(expected_dir) for p in expected_dir.rglob("*") if p.is_file()}
    actual = {p.relative_to(actual_dir) for p in actual_dir.rglob("*")
              if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts}
    problems += [f"{actual_dir / rel} is missing" for rel in sorted(expected - actual)]
    problems += [f"{actual_dir / rel} is not generated from solutions/ (remove it)" for rel in sorted(actual - expected)]
    for rel in sorted(expected & actual):
        if rel.suffix != ".ipynb":
            if not filecmp.cmp(expected_dir / rel, actual_dir / rel, shallow=False):
                problems.append(f"{actual_dir / rel} differs from solutions/")
            continue
        want, got = _comparable(expected_dir / rel), _comparable(actual_dir / rel)
        if len(want) != len(got):
            problems.append(f"{actual_dir / rel}: {len(got)} cells, nbgrader generates {len(want)}")
        for i, (a, b) in enumerate(zip(want, got)):
            for key in a.keys() | b.keys():
                if a.get(key) != b.get(key):
                    problems.append(f"{actual_dir / rel}: {_describe(a, i)} {key} differs from what nbgrader generates")
                    break
    return problems


def check(course: Course, labs: list[str] | None = None) -> list[str]:
    """Regenerate ``labs`` into a temporary folder and compare with notebooks/ (cell sources, metadata).

    Returns the problems found (empty when everything matches). The course's
    gradebook and notebooks/ are not touched.
    """
    problems = []
    release = course.folder("release")
    known = course.labs()
    for extra in sorted(p.name for p in release.glob("*") if p.is_dir() and p.name not in known):
        problems.append(f"{release / extra} has no source in {course.folder('source')} (remove it)")
    with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-release-check-")) as tmp:
        for lab in course.pick_labs(labs):
            proc = nbgrader(course, "generate_assignment", lab, "--force", *_NO_WEIGHTS,
                            f"--CourseDirectory.release_directory={tmp}",
                            f"--CourseDirectory.db_url=sqlite:///{tmp}/gradebook.db")
            checked(proc, f"nbgrader generate_assignment {lab} (into {tmp})")
            problems += compare_release(Path(tmp) / lab, release / lab)
    return problems
