"""Each student's latest grading result per lab, kept beside the reports as results arrive.

nbgrader's gradebook holds grades, not errors: a hand-in that crashed its
worker, or was cut short, may have no row there. So :func:`update` keeps
``reports/<lab>-state.json`` (git-ignored with reports/, it holds student
data): for every student the latest status, score, message, log, time and run
id, and what the entry said before that run (``previous``), from which the
report marks what a run changed. Writes are atomic (a temporary file renamed
over the old one), so a run stopped halfway leaves a whole file.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

KEPT = ("status", "score", "max_score", "message", "log", "time", "run")


def path(config_dir: Path, lab: str) -> Path:
    """``<config_dir>/reports/<lab>-state.json``."""
    return config_dir / "reports" / f"{lab}-state.json"


def read(config_dir: Path, lab: str) -> dict[str, dict]:
    """``student -> entry`` (the keys of :data:`KEPT` and ``previous``); empty when nothing was recorded yet."""
    file = path(config_dir, lab)
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())["students"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{file} is damaged ({exc}); delete it and the next report rebuilds it from the "
                         f"gradebook (errors recorded only there are lost)") from exc


def new_run_id() -> str:
    """A run id: the UTC start time plus a random tail (two runs in one second still differ)."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.urandom(2).hex()}"


def update(config_dir: Path, result, run_id: str) -> dict:
    """Make ``result`` (a :class:`~autograde.worker.Result`) its student's latest entry for its lab; return it.

    The entry it replaces becomes ``previous``, unless that entry came from the same run (then its
    ``previous`` is kept, so a run is compared with the state before it)."""
    students = read(config_dir, result.lab)
    old = students.get(result.student)
    entry = {"status": result.status, "score": result.score, "max_score": result.max_score,
             "message": result.message, "log": str(result.log),
             "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "run": run_id}
    if old is not None and old.get("run") == run_id:
        entry["previous"] = old.get("previous")
    else:
        entry["previous"] = {k: old.get(k) for k in KEPT} if old else None
    students[result.student] = entry
    _write(path(config_dir, result.lab), {"lab": result.lab, "students": students})
    return entry


def change(entry: dict | None) -> str:
    """What the entry's run changed: ``new``, ``unchanged`` or ``changed: <before> -> <now>``."""
    if not entry:
        return ""
    before = entry.get("previous")
    if before is None:
        return "new"
    if before.get("status") == entry["status"] and before.get("score") == entry["score"]:
        return "unchanged"
    return f"changed: {_short(before)} -> {_short(entry)}"


def _short(entry: dict) -> str:
    score = "no score" if entry.get("score") is None else f"{entry['score']:g}/{entry.get('max_score') or 0:g}"
    return f"{entry.get('status')} {score}"


def _write(file: Path, content: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(content, out, indent=1, sort_keys=True)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
