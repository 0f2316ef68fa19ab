"""The grading reports: one CSV row per submission graded in a run, and each lab's class report
(``reports/<lab>.html`` and ``reports/<lab>.csv``: every student's latest result)."""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from html import escape
from pathlib import Path

from . import classstate

COLUMNS = ["student", "lab", "status", "score", "max_score", "seconds", "peak_memory_mb", "threads", "message",
           "outside_scores", "audit", "log"]
NEAR_LIMIT = 0.75  # a hand-in whose peak memory passed this share of the limit is named in the class report


def write_csv(folder: Path, results: list) -> Path | None:
    """``folder/autograde-<time>.csv`` with a row per result (see :data:`COLUMNS`); None when there are none."""
    if not results:
        return None
    path = folder / f"autograde-{dt.datetime.now():%Y%m%d-%H%M%S-%f}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in results:
            outside = "; ".join(f"{row['label']}={_value(row['value'])}" for row in r.outside)
            audited = "; ".join(f"{row['label']}: {_value(row['handed_in'])} handed in, {_value(row['retrained'])} "
                                f"re-trained{' FLAGGED' if row['flagged'] else ''}" for row in r.audit)
            writer.writerow([r.student, r.lab, r.status, r.score, r.max_score, f"{r.seconds:.1f}",
                             _megabytes(r.peak_memory), r.threads if r.threads is not None else "", r.message,
                             outside, audited, r.log])
    return path


def _megabytes(n: int | None) -> str:
    """``'2150'`` (MB) from bytes; '' where the hand-in ran without a cgroup, so nothing measured it."""
    return "" if n is None else f"{n / 1e6:.0f}"


def _value(value: float | None) -> str:
    return "not scored" if value is None else f"{value:.4f}"


def _figure_html(fig) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"


@dataclass
class Graded:
    """One student's submission of a lab as the gradebook holds it: totals, late penalty, and each item
    as (score, max, waiting) where ``waiting`` is a manual item nobody has graded by hand yet."""

    score: float
    max_score: float
    penalty: float
    timestamp: str
    items: dict[str, tuple[float, float, bool]]


def lab_grades(url: str, course_id: str, lab: str) -> dict[str, Graded]:
    """``student -> Graded`` for every submission of ``lab`` in the gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(url, course_id) as gb:
        for sub in gb.find_assignment(lab).submissions:
            items = {}
            for nb in sub.notebooks:
                for grade in nb.grades:  # manual: no automatic score (written answers, tasks)
                    waiting = grade.manual_score is None and grade.auto_score is None
                    items[grade.name] = (grade.score, grade.max_score, waiting)
            out[sub.student.id] = Graded(sub.score, sub.max_score, sub.late_submission_penalty or 0.0,
                                         f"{sub.timestamp:%Y-%m-%d %H:%M}" if sub.timestamp else "", items)
    return out


def lab_scores(url: str, course_id: str, lab: str) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """(student -> total score, item -> [(score, max), ...]) for every graded submission of ``lab``; manual
    items not yet graded by hand are left out."""
    grades = lab_grades(url, course_id, lab)
    items: dict[str, list[tuple[float, float]]] = {}
    for got in grades.values():
        for name, (score, most, waiting) in got.items.items():
            items.setdefault(name, [])
            if not waiting:
                items[name].append((score, most))
    return {s: g.score for s, g in grades.items()}, items


def class_rows(course, lab: str, run: str | None = None, results: list = ()) -> tuple[list[str], list[list]]:
    """(header, one row per student): each student's latest result (the state file of
    :mod:`autograde.classstate`, and the gradebook's scores), with what the run ``run`` changed (or, without
    ``run``, the students in ``results``)."""
    settings = course.settings()
    grades = lab_grades(settings["db_url"], settings["course_id"], lab)
    state = classstate.read(course.config_dir, lab)
    names = sorted({n for g in grades.values() for n in g.items})
    this_run = {r.student for r in results}
    header = ["student", "status", "total", "max_score", *names, "late_penalty", "waiting_manual", "last_graded",
              "this_run", "message", "log"]
    rows = []
    for student in sorted(set(grades) | set(state)):
        got, entry = grades.get(student), state.get(student) or {}
        status = entry.get("status") or "graded (gradebook only)"
        total = got.score if got else entry.get("score")
        most = got.max_score if got else entry.get("max_score")
        cells = [("" if got is None or n not in got.items else f"{got.items[n][0]:g}"
                  + (" (waiting)" if got.items[n][2] else "")) for n in names]
        ran = entry.get("run") == run if run else student in this_run
        rows.append([student, status, "" if total is None else f"{total:g}", "" if most is None else f"{most:g}",
                     *cells, f"{got.penalty:g}" if got else "",
                     sum(w for _, _, w in got.items.values()) if got else 0,
                     _when(entry.get("time")) or (got.timestamp if got else ""),
                     classstate.change(entry) if ran else "", entry.get("message", ""), entry.get("log", "")])
    return header, rows


def _when(iso: str | None) -> str:
    """``2026-12-03 17:01 UTC`` from the state file's ISO time ('' without one)."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else ""


def write_class_csv(course, lab: str, header: list[str], rows: list[list]) -> Path:
    """``reports/<lab>.csv``: one row per student (see :func:`class_rows`), for further analysis."""
    path = course.config_dir / "reports" / f"{lab}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
    return path


def _resources(results: list, memory_limit: int | None) -> list[str]:
    """The run's cost: the slowest hand-ins with their peak memory, and the ones whose peak memory came near
    ``memory_limit`` (a correct hand-in that comes close is a sign to raise the limit, not the student's fault)."""
    slowest = sorted(results, key=lambda r: r.seconds, reverse=True)[:10]
    parts = ["<h2>Slowest hand-ins (this run)</h2>",
             _table(["student", "seconds", "peak memory (MB)", "status"],
                    [[r.student, f"{r.seconds:.0f}", _megabytes(r.peak_memory), r.status] for r in slowest])]
    measured = [r for r in results if r.peak_memory is not None]
    if not measured or not memory_limit:
        return parts + (["<p>Peak memory was not measured: hand-ins ran without a cgroup.</p>"] if results else [])
    by_peak = sorted(measured, key=lambda r: r.peak_memory, reverse=True)
    top, median = by_peak[0], by_peak[(len(by_peak) - 1) // 2]  # the upper median for an even count
    near = [r for r in by_peak if r.peak_memory >= NEAR_LIMIT * memory_limit]
    parts += ["<h2>Memory (this run)</h2>",
              f"<p>Peak memory of a hand-in (its kernel, what that started and the outside scorer, file cache "
              f"included): median {_megabytes(median.peak_memory)} MB, most {_megabytes(top.peak_memory)} MB "
              f"({escape(top.student)}), of a limit of {_megabytes(memory_limit)} MB; a hand-in that reaches it "
              f"is stopped and gets an error row. {len(near)} hand-in(s) passed {NEAR_LIMIT:.0%} of it:</p>",
              _table(["student", "peak memory (MB)", "share of the limit", "status"],
                     [[r.student, _megabytes(r.peak_memory), f"{r.peak_memory / memory_limit:.0%}", r.status]
                      for r in near])]
    return parts


def write_html(course, lab: str, results: list, same_weights: list[tuple[str, list[str]]] = (),
               sections: list[str] = (), run: str | None = None, memory_limit: int | None = None) -> Path:
    """``reports/<lab>.html`` and ``reports/<lab>.csv``: the class as the gradebook and the class state hold it
    (every student's latest result, errors included, with what the run ``run`` changed; scores, item pass
    rates counting manual items once graded by hand), then this run's notes, outside scores, audit flags and
    identical handed-in weights, the slowest hand-ins and the memory they used (of ``memory_limit``).
    ``sections`` are further HTML blocks (each starting with its own ``<h2>``), placed before the slowest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    settings = course.settings()
    totals, items = lab_scores(settings["db_url"], settings["course_id"], lab)
    header, rows = class_rows(course, lab, run, results)
    write_class_csv(course, lab, header, rows)
    col = {name: i for i, name in enumerate(header)}
    changed = [row[col["this_run"]] for row in rows if row[col["this_run"]]]
    errors = [row for row in rows if row[col["status"]] == "error"]
    waiting = sum(row[col["waiting_manual"]] for row in rows)
    parts = [f"<h1>{lab}: the class at a glance</h1>",
             f"<p>{len(rows)} student(s), {len(totals)} with a graded submission in the gradebook; "
             f"{len(errors)} whose latest result is an error; {waiting} manual item(s) waiting for grading by "
             f"hand. This run graded {len(results)}: {sum(c == 'new' for c in changed)} new, "
             f"{sum(c.startswith('changed') for c in changed)} changed, {sum(c == 'unchanged' for c in changed)} "
             f"unchanged. Written {dt.datetime.now():%Y-%m-%d %H:%M}; every row is also in {lab}.csv.</p>"]
    if totals:
        fig, ax = plt.subplots(figsize=(6, 3))
        sns.histplot(list(totals.values()), bins=min(20, max(5, len(totals))), ax=ax)
        ax.set(xlabel="total score", ylabel="students", title="score distribution")
        parts += ["<h2>Scores</h2>", _figure_html(fig)]
    if any(items.values()):
        rates = {name: sum(s is not None and s >= m for s, m in got) / len(got) for name, got in items.items() if got}
        order = sorted(rates, key=rates.get)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
        sns.barplot(x=[rates[n] for n in order], y=order, ax=ax, color="tab:blue")
        ax.set(xlim=(0, 1), xlabel="share of graded submissions with full marks", title="graded items, hardest first")
        parts += ["<h2>Items</h2>", _figure_html(fig)]
    if waiting:
        counts = {name: sum(row[col[name]].endswith("(waiting)") for row in rows) for name in items}
        parts += [f"<p>Waiting for grading by hand (not counted above): "
                  f"{escape(', '.join(f'{n}: {c}' for n, c in counts.items() if c))}.</p>"]
    shown = ["student", "status", "total", "max_score", "late_penalty", "last_graded", "this_run"]
    parts += ["<h2>Class</h2>", _table(shown, [[row[col[c]] for c in shown] for row in rows])]
    parts += ["<h2>Errors</h2><p>Every student whose latest result is an error, from any run.</p>",
              _table(["student", "reason", "last graded", "this run", "log"],
                     [[row[col[c]] for c in ("student", "message", "last_graded", "this_run", "log")]
                      for row in errors])]
    notes = [[r.student, r.message] for r in results if r.status == "graded" and r.message]
    parts += ["<h2>Notes on graded hand-ins (this run)</h2>", _table(["student", "note"], notes)]
    flagged = [[r.student, row["label"], _value(row["value"]), row["message"]]
               for r in results for row in r.outside if not row["passed"]]
    parts += ["<h2>Failed outside scores (this run)</h2>", _table(["student", "check", "value", "why"], flagged)]
    audited = [r for r in results if r.audit]
    if audited or same_weights:
        rows = [[r.student, row["label"], _value(row["handed_in"]), _value(row["retrained"]),
                 "FLAGGED" if row["flagged"] else "ok", row["note"]] for r in audited for row in r.audit]
        rows.sort(key=lambda row: row[4] != "FLAGGED")
        parts += [f"<h2>Audit: handed-in weights against re-training</h2><p>{len(audited)} hand-in(s) re-trained; "
                  f"{sum(any(x['flagged'] for x in r.audit) for r in audited)} flagged. A flag is a question for a "
                  f"person, not a verdict.</p>",
                  _table(["student", "check", "handed in", "re-trained", "audit", "note"], rows),
                  "<h2>Identical handed-in weights</h2>",
                  _table(["file", "students"], [[name, ", ".join(who)] for name, who in same_weights])]
    parts += list(sections)
    parts += _resources(results, memory_limit)
    style = "<style>body{font-family:sans-serif;max-width:900px}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
    path = course.config_dir / "reports" / f"{lab}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{lab}</title>{style}</head><body>"
                    + "\n".join(parts) + "</body></html>")
    return path
