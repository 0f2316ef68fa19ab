"""Build student submissions from a released notebook (for the instructor's end-to-end tests).

A released notebook has stubs where the solution regions were. These helpers
fill those cells, by nbgrader ``grade_id``, with the source notebook's
solution code or with any other code, so a test can grade "what a student
who solved it would hand in".
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbformat import NotebookNode

_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
_BLOCK = re.compile(r"^# %% grade_id:\s*(\S+)\s*$", re.MULTILINE)


def _grade_id(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solution_cells(source: NotebookNode) -> dict[str, str]:
    """``grade_id -> source`` of every solution cell, with the solution markers removed."""
    out = {}
    for cell in source.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            lines = [line for line in cell.source.splitlines() if not _MARKER.match(line)]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def load_alternative(path: str | Path) -> dict[str, str]:
    """Parse a fixture file of blocks headed ``# %% grade_id: <id>`` into ``grade_id -> code``."""
    text = Path(path).read_text()
    parts = _BLOCK.split(text)
    if len(parts) < 3:
        raise ValueError(f"{path}: no '# %% grade_id: <id>' blocks found")
    return {gid: code.strip("\n") + "\n" for gid, code in zip(parts[1::2], parts[2::2])}


def fill(release: NotebookNode, code_by_id: dict[str, str]) -> NotebookNode:
    """A copy of ``release`` whose cells named in ``code_by_id`` hold that code instead.

    Raises KeyError naming any grade_id that the notebook does not have, so a
    stale fixture fails loudly instead of silently grading the stub.
    """
    filled = nbformat.from_dict(nbformat.reads(nbformat.writes(release), as_version=4))
    seen = set()
    for cell in filled.cells:
        gid = _grade_id(cell)
        if gid in code_by_id:
            cell.source = code_by_id[gid]
            seen.add(gid)
    missing = set(code_by_id) - seen
    if missing:
        raise KeyError(f"no cells with grade_id {sorted(missing)} in the notebook")
    return filled


def solved(release: NotebookNode, source: NotebookNode) -> NotebookNode:
    """The released notebook with every TODO cell filled with the source notebook's solution."""
    return fill(release, solution_cells(source))
