"""The grading report: one CSV row per submission graded in a run."""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

COLUMNS = ["student", "lab", "status", "score", "max_score", "seconds", "message", "outside_scores", "audit", "log"]


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
            writer.writerow([r.student, r.lab, r.status, r.score, r.max_score, f"{r.seconds:.1f}", r.message,
                             outside, audited, r.log])
    return path


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


def lab_scores(url: str, course_id: str, lab: str) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """(student -> total score, item -> [(score, max), ...]) for every graded submission of ``lab``."""
    from nbgrader.api import Gradebook

    totals, items = {}, {}
    with Gradebook(url, course_id) as gb:
        for sub in gb.find_assignment(lab).submissions:
            totals[sub.student.id] = sub.score
            for nb in sub.notebooks:
                for grade in nb.grades:
                    items.setdefault(grade.name, []).append((grade.score, grade.max_score))
    return totals, items


def write_html(course, lab: str, results: list, same_weights: list[tuple[str, list[str]]] = ()) -> Path:
    """``reports/<lab>.html``: the class at a glance (scores, item pass rates, errors, outside scores, audit
    flags and identical handed-in weights, slowest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    settings = course.settings()
    totals, items = lab_scores(settings["db_url"], settings["course_id"], lab)
    parts = [f"<h1>{lab}: the class at a glance</h1>",
             f"<p>{len(totals)} graded submission(s) in the gradebook; this run graded {len(results)}, "
             f"{sum(r.status != 'graded' for r in results)} with errors. Written {dt.datetime.now():%Y-%m-%d %H:%M}.</p>"]
    if totals:
        fig, ax = plt.subplots(figsize=(6, 3))
        sns.histplot(list(totals.values()), bins=min(20, max(5, len(totals))), ax=ax)
        ax.set(xlabel="total score", ylabel="students", title="score distribution")
        parts += ["<h2>Scores</h2>", _figure_html(fig)]
    if items:
        rates = {name: sum(s is not None and s >= m for s, m in got) / len(got) for name, got in items.items()}
        order = sorted(rates, key=rates.get)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
        sns.barplot(x=[rates[n] for n in order], y=order, ax=ax, color="tab:blue")
        ax.set(xlim=(0, 1), xlabel="share of submissions with full marks", title="graded items, hardest first")
        parts += ["<h2>Items</h2>", _figure_html(fig)]
    errors = [[r.student, r.message, r.log] for r in results if r.status != "graded"]
    parts += ["<h2>Errors</h2>", _table(["student", "reason", "log"], errors)]
    notes = [[r.student, r.message] for r in results if r.status == "graded" and r.message]
    parts += ["<h2>Notes on graded hand-ins</h2>", _table(["student", "note"], notes)]
    flagged = [[r.student, row["label"], _value(row["value"]), row["message"]]
               for r in results for row in r.outside if not row["passed"]]
    parts += ["<h2>Failed outside scores</h2>", _table(["student", "check", "value", "why"], flagged)]
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
    slowest = sorted(results, key=lambda r: r.seconds, reverse=True)[:10]
    parts += ["<h2>Slowest hand-ins</h2>",
              _table(["student", "seconds", "status"], [[r.student, f"{r.seconds:.0f}", r.status] for r in slowest])]
    style = "<style>body{font-family:sans-serif;max-width:900px}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
    path = course.config_dir / "reports" / f"{lab}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{lab}</title>{style}</head><body>"
                    + "\n".join(parts) + "</body></html>")
    return path
