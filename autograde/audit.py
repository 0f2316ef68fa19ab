"""Grading handed-in weights: which hand-ins to re-train as an audit, what the audit flags, shared weights.

With ``--handed-in`` the grader scores the weights a student's own run saved
(see :func:`course_utils.grading.hand_in`) instead of re-training. That proves
that the handed-in weights, in the model the student's code builds, reach the
thresholds; not that this code trained them. The audit re-trains a sample of
hand-ins the ordinary way and flags every score that the re-trained notebook
misses or beats by more than its kind's margin (``audit_margin`` in
:data:`course_utils.checks.CHECKS`); identical weight files handed in by
different students are flagged too.
"""
from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path


def pick(jobs: list[tuple[str, str]], share: float, seed: int | None = None) -> set[tuple[str, str]]:
    """The (lab, student) jobs to audit in each lab: a fraction of them (``share`` < 1, at least one) or a count.

    Without ``seed`` the choice cannot be predicted by students.
    """
    if share <= 0:
        return set()
    rng = random.Random(seed)
    chosen: set[tuple[str, str]] = set()
    for lab in sorted({lab for lab, _ in jobs}):
        mine = sorted(job for job in jobs if job[0] == lab)
        count = max(1, math.ceil(share * len(mine))) if share < 1 else int(share)
        chosen |= set(rng.sample(mine, min(count, len(mine))))
    return chosen


def differs(kind: str, handed_in: float, retrained: float) -> bool:
    """True when two scores of one check differ by more than the audit's margin for that kind of check."""
    from course_utils import checks

    return checks.get(kind).differs(handed_in, retrained)


def compare(handed_in: list[dict], retrained: list[dict], checks: dict) -> list[dict]:
    """One row per check: the handed-in and the re-trained score, and whether the audit flags the difference.

    ``checks`` maps each label to its kind of check (:class:`course_utils.checks.Check`), whose margin decides.
    """
    again = {row["label"]: row for row in retrained}
    rows = []
    for row in handed_in:
        other = again.get(row["label"], {})
        a, b = row.get("value"), other.get("value")
        check = checks[row["label"]]
        if a is None or b is None:
            flagged = a is not None  # weights that score while the student's own training does not run
            note = "the re-trained notebook produced no model to score" if flagged else "not scored either way"
        else:
            flagged = check.differs(a, b)
            better = (a > b) == check.higher_is_better
            note = (f"{'handed-in weights score better' if better else 'the re-trained model scores better'}"
                    f" by {abs(a - b):.4f}" if flagged else "within the margin")
        rows.append({"label": row["label"], "kind": check.name, "handed_in": a, "retrained": b, "flagged": flagged,
                     "note": note})
    return rows


def without_weights_warnings(submitted: Path, jobs: list[tuple[str, str]]) -> list[str]:
    """One line per lab where at least half of the (lab, student) ``jobs`` (two or more) hand in no weights
    (``weights/*.pt``): graded from their weights, each would lose every accuracy item. So many point at the
    way the hand-ins were downloaded or collected, not at the students."""
    lines = []
    for lab in sorted({lab for lab, _ in jobs}):
        students = sorted(student for job_lab, student in jobs if job_lab == lab)
        bare = [s for s in students if not weights_digests(submitted / s / lab)]
        if len(bare) >= 2 and 2 * len(bare) >= len(students):
            lines.append(f"{lab}: {len(bare)} of {len(students)} hand-ins carry no weights (weights/*.pt next to "
                         "the notebook), so each loses every accuracy item. If the students did hand them in, the "
                         "download or the collection left them out: collect the whole folders again (collect "
                         "--update); or grade without --handed-in, which re-trains every hand-in")
    return lines


def weights_digests(folder: Path) -> dict[str, str]:
    """``file name -> sha256`` of the handed-in weights in one submission's folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "weights").glob("*.pt"))
            if p.is_file() and not p.is_symlink()}


def same_weights(submitted: Path, lab: str) -> list[tuple[str, list[str]]]:
    """Weight files handed in identically by more than one student: ``[(file, [students]), ...]``."""
    seen: dict[tuple[str, str], list[str]] = {}
    for folder in sorted(p for p in submitted.glob(f"*/{lab}") if p.is_dir()):
        for name, digest in weights_digests(folder).items():
            seen.setdefault((name, digest), []).append(folder.parent.name)
    return [(name, students) for (name, _), students in sorted(seen.items()) if len(students) > 1]
