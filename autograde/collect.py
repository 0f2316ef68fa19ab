"""Collect hand-ins laid out as ``FOLDER/<student>/<lab>/<lab>.ipynb`` into nbgrader's submitted/ folder."""
from __future__ import annotations

import datetime as dt
import errno
import filecmp
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from course_utils import leftovers

from .config import MAX_HANDIN_BYTES
from .course import ID_CHAR, IGNORED, STUDENT_ID, Course, GradingError


def readable(path: Path) -> str | None:
    """None if ``path`` is a readable notebook, else what is wrong with it, in words."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # nested deeper than the parser goes (not a ValueError)
        return "not a readable notebook (its JSON is nested too deeply); the file is probably not a notebook"
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


class _Refused(Exception):
    """Why a hand-in folder is not copied, in words for the student."""


_OPEN = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# Folders opened by descriptor (Linux, macOS); elsewhere (Windows) the same checks run on a copy made by path.
BY_DESCRIPTOR = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd and os.listdir in os.supports_fd
MAX_DEPTH = 16          # nested folders in one hand-in
MAX_ENTRIES = 10_000    # files and folders in one hand-in


def _open(name: str, dir_fd: int | None, flags: int) -> int:
    try:
        return os.open(name, _OPEN | flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _link(Path(name).name) from None
        raise


def copy_plain(src: Path, dest: Path, limit: int = MAX_HANDIN_BYTES) -> None:
    """Copy the folder ``src`` to ``dest`` (new), plain files and folders only, at most ``limit`` bytes.

    The owner of ``src`` may change it while this runs (a student on a JupyterHub writes the exchange's
    folders): each entry is opened relative to its folder's descriptor, never by path, without following
    links, and a file is checked once open (``fstat``), so a link, a pipe or a hard link to another
    file swapped in at any moment makes the hand-in refused (:class:`_Refused`), never copies another
    file. ``src`` itself may not be a link either; folders it lives in may.
    """
    if not BY_DESCRIPTOR:
        return _copy_then_check(src, dest, limit)
    parent = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        top = _open(src.name, parent, os.O_DIRECTORY)
    finally:
        os.close(parent)
    try:
        _copy_folder(top, src.name, dest, {"bytes": 0, "entries": 0}, limit, depth=0)
    finally:
        os.close(top)


def _copy_folder(fd: int, where: str, dest: Path, seen: dict, limit: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Refused(f"has folders nested more than {MAX_DEPTH} deep; hand in the notebook and its weights/ folder")
    dest.mkdir()
    names = os.listdir(fd)
    skip = IGNORED(where, names)
    for name in sorted(n for n in names if n not in skip):
        seen["entries"] += 1
        if seen["entries"] > MAX_ENTRIES:
            raise _too_many()
        kind = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(kind):
            raise _link(name)
        if not (stat.S_ISDIR(kind) or stat.S_ISREG(kind)):
            raise _special(name)
        child = _open(name, fd, os.O_DIRECTORY if stat.S_ISDIR(kind) else os.O_NONBLOCK)
        try:
            info = os.fstat(child)
            if stat.S_ISDIR(info.st_mode):
                _copy_folder(child, name, dest / name, seen, limit, depth + 1)
            elif not stat.S_ISREG(info.st_mode):
                raise _special(name)
            elif info.st_nlink > 1:
                raise _Refused(f"holds a hard link ({name}); hand in plain copies of your files")
            elif seen["bytes"] + info.st_size > limit:
                raise _too_large(limit)
            else:
                _copy_file(child, dest / name, seen, limit)
                os.utime(dest / name, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(child)


def _copy_file(fd: int, dest: Path, seen: dict, limit: int) -> None:
    with open(fd, "rb", closefd=False) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            seen["bytes"] += len(chunk)
            if seen["bytes"] > limit:
                raise _too_large(limit)
            out.write(chunk)


def _copy_then_check(src: Path, dest: Path, limit: int) -> None:
    """:func:`copy_plain` by path, for systems without descriptor-relative calls: copy, links as links, then check."""
    if src.is_symlink():
        raise _link(src.name)
    shutil.copytree(src, dest, symlinks=True, ignore=IGNORED)
    found = list(dest.rglob("*"))
    if links := [p for p in found if p.is_symlink()]:
        raise _link(links[0].name)
    if len(found) > MAX_ENTRIES:
        raise _too_many()
    if sum(p.stat().st_size for p in found if p.is_file()) > limit:
        raise _too_large(limit)


def _link(name: str) -> _Refused:
    return _Refused(f"holds symbolic links ({name}); hand in plain files")


def _special(name: str) -> _Refused:
    return _Refused(f"holds {name}, which is neither a file nor a folder (a pipe, socket or device); "
                    f"hand in plain files")


def _too_many() -> _Refused:
    return _Refused(f"holds more than {MAX_ENTRIES:,} files; hand in the notebook and its weights/ folder")


def _too_large(limit: int) -> _Refused:
    return _Refused(f"more than the {limit / 1e6:.0f} MB allowed; hand in the notebook and its weights/ folder only")


def collect(course: Course, folder: Path, *, update: bool = False) -> list[dict]:
    """Copy ``folder/<student>/<lab>/`` into autograde/submitted/, checking each submission.

    A submission already collected and unchanged is skipped; a changed one is
    replaced only with ``update=True``. Unreadable notebooks are still copied
    (nothing is lost) and reported; a hand-in holding symbolic links, hard links,
    pipes or devices is not copied (a link could make the grader read or overwrite
    other files), nor one larger than ``MAX_HANDIN_BYTES`` (the notebook and its
    ``weights/`` take a few MB). A hand-in that cannot be read is a ``skipped`` row;
    the others are collected all the same.
    Returns one row per student and lab folder: ``student, lab, status, message, late``; ``late`` says how
    late a hand-in came by its ``timestamp.txt`` and ``autograde/term.toml`` (empty when on time or not due).
    A notebook or a student's folder in the wrong place is a ``skipped`` row that says where it belongs.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder of submissions (<student>/<lab>/<lab>.ipynb)")
    found = [(student_dir.name, lab_dir.name, lab_dir)
             for student_dir in sorted(p for p in folder.iterdir() if p.is_dir())
             for lab_dir in sorted(p for p in student_dir.iterdir() if p.is_dir())]
    return _misplaced(folder) + collect_hand_ins(course, found, update=update)


def _row(student: str, lab: str, status: str = "collected", message: str = "") -> dict:
    """One line of collect's report."""
    return {"student": student, "lab": lab, "status": status, "message": message, "late": ""}


def _misplaced(folder: Path) -> list[dict]:
    """Rows for what ``folder`` holds outside the <student>/<lab>/<lab>.ipynb layout: notebooks at its top,
    notebooks straight in a student's folder, student folders with no lab folder in them."""
    rows = []
    for entry in sorted(folder.iterdir()):
        if entry.suffix == ".ipynb" and not entry.is_dir():
            rows.append(_row("?", entry.stem, "skipped", f"{entry.name} is not in a student's folder: put it in "
                                                          f"<student>/{entry.stem}/{entry.name}"))
        elif entry.is_dir() and not entry.is_symlink():
            try:
                if any(p.is_dir() for p in entry.iterdir()):
                    continue
                loose = sorted(p.name for p in entry.glob("*.ipynb"))
            except OSError as exc:
                rows.append(_row(entry.name, "?", "skipped", f"could not be read ({exc.strerror or exc})"))
                continue
            where = (f"holds {', '.join(loose)} directly: put each in {entry.name}/<lab>/<lab>.ipynb" if loose
                     else "holds no lab folder (<lab>/<lab>.ipynb)")
            rows.append(_row(entry.name, "?", "skipped", where))
    return rows


def collect_hand_ins(course: Course, hand_ins: list[tuple[str, str, Path]], *, update: bool = False,
                     times: dict[str, dt.datetime] | None = None) -> list[dict]:
    """:func:`collect` for ``(student, lab, folder)`` triples (the exchange names its folders this way);
    ``times``: student -> the time their hand-in counts as handed in, over its own ``timestamp.txt``."""
    labs = set(course.labs())
    rows = []
    from . import term  # nbgrader's plugins: loaded when collecting, not by `import autograde`

    the_term = term.load(course)  # due dates: a late hand-in's row says so ("late")
    for student, lab, lab_dir in hand_ins:
        row = _row(student, lab)
        rows.append(row)
        if not STUDENT_ID.match(student):
            bad = sorted({c for c in student if not ID_CHAR.fullmatch(c)} or {student[:1]})
            row.update(status="skipped", message=f"the folder name is a student id: letters, digits and _.@- only "
                                                 f"(not {' '.join(repr(c) for c in bad)}); rename the folder")
            continue
        if lab not in labs:
            row.update(status="skipped", message=f"unknown lab (labs: {', '.join(sorted(labs))})")
            continue
        try:
            _collect_one(course.folder("submitted") / student / lab, lab_dir, row, update, (times or {}).get(student))
        except _Refused as why:
            row.update(status="skipped", message=str(why))
        except OSError as exc:  # vanished or unreadable while copying: this hand-in only
            row.update(status="skipped", message=f"could not be read ({exc.strerror or exc}); it may have "
                                                 f"changed while it was collected: collect again")
        except Exception as exc:  # noqa: BLE001 -- whatever one hand-in holds, the others are still collected
            row.update(status="skipped", message=f"could not be collected ({type(exc).__name__}: {str(exc)[:200]})")
        if row["status"] in ("collected", "updated", "unchanged") and (
                late := term.lateness(course, lab, student, the_term)):
            row["late"] = late.describe()
    _case_twins(course, rows, {student for _, student in the_term.extensions})
    return rows


def _case_twins(course: Course, rows: list[dict], named: set[str]) -> None:
    """Note on each collected row a student id that differs from another collected one, or from one an extension
    names, only in case: ids are case-sensitive (an extension for Ivan misses ivan), macOS's and Windows's
    folders are not (Erin and erin would be one)."""
    submitted = course.folder("submitted")
    known = {p.name for p in submitted.iterdir() if p.is_dir()} if submitted.is_dir() else set()
    for row in rows:
        if row["status"] not in ("collected", "updated", "unchanged"):
            continue
        if twins := sorted(o for o in known | named if o != row["student"] and o.lower() == row["student"].lower()):
            row["message"] = "; ".join(filter(None, [row["message"], (
                f"its id differs only in case from {', '.join(twins)} (a hand-in, or an extension in term.toml): "
                f"ids are case-sensitive, and on macOS and Windows the folders would be one")]))


def _collect_one(dest: Path, lab_dir: Path, row: dict, update: bool, when: dt.datetime | None = None) -> None:
    """Copy one hand-in folder to ``dest`` by way of a private copy; ``row`` says what happened; ``when``
    replaces the hand-in's own ``timestamp.txt``."""
    lab = dest.name
    with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-collect-")) as scratch:
        copy = Path(scratch) / lab
        copy_plain(lab_dir, copy)  # everything below reads this copy, never the student's folder again
        if when is not None:
            (copy / "timestamp.txt").write_text(when.isoformat())
        notebook = copy / f"{lab}.ipynb"
        if not notebook.is_file():
            others = sorted(p.name for p in copy.glob("*.ipynb"))
            found = f" (it holds {', '.join(others)}: rename the hand-in to {notebook.name})" if others else ""
            row.update(status="skipped", message=f"no {notebook.name} in {lab_dir}{found}")
            return
        if dest.exists() and not _differs(copy, dest):
            row.update(status="unchanged")
        elif dest.exists() and not update:
            row.update(status="skipped", message="differs from the copy already collected; use --update to replace it")
            return
        else:
            if dest.exists():
                shutil.rmtree(dest)
                row["status"] = "updated"
            if not (copy / "timestamp.txt").exists():
                mtime = dt.datetime.fromtimestamp(notebook.stat().st_mtime, dt.timezone.utc)
                (copy / "timestamp.txt").write_text(mtime.isoformat())
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(copy, dest)
            # The collected notebook's time is its collection's (the student's own is in timestamp.txt): a hand-in
            # replaced with an older file time (an unpacked LMS download) is graded again, one with a time in the
            # future is not graded on every run (autograde.jobs.needs_grading).
            os.utime(dest / f"{lab}.ipynb")
    if problem := readable(dest / f"{lab}.ipynb"):
        row["message"] = f"{problem}; it will fail to grade, ask the student to submit again"
