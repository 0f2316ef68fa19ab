"""The grading report: one CSV row per submission graded in a run."""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

COLUMNS = ["student", "lab", "status", "score", "max_score", "seconds", "message", "outside_scores", "log"]


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
            outside = "; ".join(f"{row['label']}={row['value']:.4f}" if row["value"] is not None
                                else f"{row['label']}=not scored" for row in r.outside)
            writer.writerow([r.student, r.lab, r.status, r.score, r.max_score, f"{r.seconds:.1f}", r.message,
                             outside, r.log])
    return path
