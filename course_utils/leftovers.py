"""What the kit's processes leave in the temp folder when they die, and how the next one removes it.

A grading worker makes folders and cgroups for each hand-in (:mod:`autograde.worker`,
:mod:`autograde.sandbox`, :mod:`autograde.cgroups`) and removes them when the
hand-in is done; the instructor's commands make folders for a run (private
gradebook copies, staged hand-ins) and every kernel manager of the kit one for its
sockets (:mod:`course_utils.kernels`), a student's Jupyter server included. A process
that is killed (out of memory, by an instructor, a hub culling a server) cannot remove
them: so each of those names starts with :data:`KIT_PREFIX` and carries the process id
of its maker (:func:`tag`), and the next grading task, or the next Jupyter server, removes
the ones whose maker no longer runs (:func:`sweep`). A process id in use again means a
folder is left alone, never that a live process's folder is removed; processes that share
a temp folder must share a process namespace (one machine, or one container).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

KIT_PREFIX = "coursekit-"  # every folder the kit makes in a temp folder: coursekit-<what>-p<pid>-<random suffix>
_OWNER = re.compile(r"-p(\d+)-[A-Za-z0-9_]+$")  # ...-p<pid>-<random suffix>


def tag(prefix: str) -> str:
    """``prefix`` with this process's id, to start a name that :func:`owner_gone` can read back."""
    return f"{prefix}p{os.getpid()}-"


def owner_gone(name: str) -> bool:
    """Whether ``name`` (begun with :func:`tag`, ending in a random suffix) was made by a process that has ended."""
    found = _OWNER.search(name)
    if not found:
        return False
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def sweep(folder: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Remove the entries of ``folder`` that start with one of ``prefixes`` and whose makers have ended.

    Returns what was removed (not what this user may not remove: another user's, in a shared temp folder).
    """
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if path.name.startswith(prefixes) and owner_gone(path.name):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed
