"""Collect hand-ins laid out as ``FOLDER/<student>/<lab>/<lab>.ipynb`` into nbgrader's submitted/ folder."""
from __future__ import annotations

import datetime as dt
import filecmp
import json
import shutil
from pathlib import Path

from .config import MAX_HANDIN_BYTES
from .course import IGNORED, STUDENT_ID, Course, GradingError


def readable(path: Path) -> str | None:
    """None if ``path`` is a readable notebook, else what is wrong with it, in words."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSON and UTF-8 errors
        return f"not valid JSON ({exc}); the file is probably truncated or not a notebook"
    try:
        import nbformat  # here, not at the top: `import autograde` binds collect() and stays light

        nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for unreadable files
        return f"not a readable notebook ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def _differs(src: Path, dest: Path) -> bool:
    names = {p.relative_to(src) for p in src.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    return any(not (dest / n).is_file() or not filecmp.cmp(src / n, dest / n, shallow=False) for n in names)


def _links(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_symlink()]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def collect(course: Course, folder: Path, *, update: bool = False) -> list[dict]:
    """Copy ``folder/<student>/<lab>/`` into autograde/submitted/, checking each submission.

    A submission already collected and unchanged is skipped; a changed one is
    replaced only with ``update=True``. Unreadable notebooks are still copied
    (nothing is lost) and reported; a hand-in holding symbolic links is not
    copied (a link could make the grader read or overwrite other files), nor
    one larger than ``MAX_HANDIN_BYTES`` (the notebook and its ``weights/``
    take a few MB).
    Returns one row per student and lab folder: ``student, lab, status, message, late``; ``late`` says how
    late a hand-in came by its ``timestamp.txt`` and ``autograde/term.toml`` (empty when on time or not due).
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder of submissions (<student>/<lab>/<lab>.ipynb)")
    labs = set(course.labs())
    submitted = course.folder("submitted")
    rows = []
    from . import term  # nbgrader's plugins: loaded when collecting, not by `import autograde`

    the_term = term.load(course)  # due dates: a late hand-in's row says so ("late")
    for student_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        student = student_dir.name
        for lab_dir in sorted(p for p in student_dir.iterdir() if p.is_dir()):
            row = {"student": student, "lab": lab_dir.name, "status": "collected", "message": "", "late": ""}
            rows.append(row)
            notebook = lab_dir / f"{lab_dir.name}.ipynb"
            dest = submitted / student / lab_dir.name
            if not STUDENT_ID.match(student):
                row.update(status="skipped", message="student id must be letters, digits and _.@- only")
            elif lab_dir.name not in labs:
                row.update(status="skipped", message=f"unknown lab (labs: {', '.join(sorted(labs))})")
            elif not notebook.is_file() or notebook.is_symlink():
                row.update(status="skipped", message=f"no {notebook.name} in {lab_dir}")
            elif links := _links(lab_dir):
                row.update(status="skipped", message=f"holds symbolic links ({links[0].name}); hand in plain files")
            elif (size := _size(lab_dir)) > MAX_HANDIN_BYTES:
                row.update(status="skipped", message=f"{size / 1e6:.0f} MB, more than the {MAX_HANDIN_BYTES / 1e6:.0f} MB "
                                                     f"allowed; hand in the notebook and its weights/ folder only")
            elif dest.exists() and not _differs(lab_dir, dest):
                row.update(status="unchanged")
            elif dest.exists() and not update:
                row.update(status="skipped", message="differs from the copy already collected; "
                                                     "use --update to replace it")
            else:
                if dest.exists():
                    shutil.rmtree(dest)
                    row["status"] = "updated"
                shutil.copytree(lab_dir, dest, ignore=IGNORED, copy_function=shutil.copyfile)
                if not (dest / "timestamp.txt").exists():
                    mtime = dt.datetime.fromtimestamp(notebook.stat().st_mtime, dt.timezone.utc)
                    (dest / "timestamp.txt").write_text(mtime.isoformat())
            if row["status"] in ("collected", "updated", "unchanged") and (problem := readable(notebook)):
                row["message"] = f"{problem}; it will fail to grade, ask the student to submit again"
            if row["status"] in ("collected", "updated", "unchanged") and (
                    late := term.lateness(course, lab_dir.name, student, the_term)):
                row["late"] = late.describe()
    return rows
