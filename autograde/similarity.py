"""Similar hand-ins: every pair of one lab's collected notebooks compared on the students' own code.

Only the solution cells count (the cells the released notebook marks ``solution: true``, matched by
grade_id), with the released template's code removed from them, so the given scaffolding (signatures,
docstrings, ``# YOUR CODE HERE``) never makes two hand-ins look alike. The comparison is copydetect's
(the fingerprinting behind MOSS: winnowed k-gram hashes of the code after Pygments has replaced every
variable, function and class name with one letter), so renamed variables and reordered functions still
match. A flag is a question for a person, not a verdict.

Why copydetect: it is maintained, pure Python (numpy and Pygments), takes code from strings, tokenizes
Python so that names do not matter, drops template fingerprints itself (``boilerplate``), and gives the
matching regions as slices of the original text plus an escaping highlighter. The alternatives read
were MOSS (a web service: hand-ins would leave the machine), JPlag (Java) and pycode_similar (AST
diff of whole functions, no regions, fails on code that does not parse).
"""
from __future__ import annotations

import html
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .course import Course, GradingError

# copydetect's noise threshold k: matches shorter than this many characters of tokenized code (names
# already one letter, spaces and comments gone; ~ a dozen tokens) are noise. Its guarantee threshold is
# the same, so every k-gram is kept (window 1): hand-ins are small, and exact coverage is worth more here.
NOISE = 25
WINDOW = 1


@dataclass(frozen=True)
class HandIn:
    """One student's code for one lab: each solution cell's text (by grade_id), the template's lines removed."""

    student: str
    cells: dict[str, str] = field(default_factory=dict)

    def spans(self) -> dict[str, int]:
        """``grade_id -> where its text starts in`` :attr:`code`."""
        out, at = {}, 0
        for gid, text in self.cells.items():
            at += len(self.header(gid))
            out[gid] = at
            at += len(text) + 1
        return out

    @staticmethod
    def header(gid: str) -> str:
        return f"# --- {gid}\n"

    @property
    def code(self) -> str:
        """The cells one after the other, each under a ``# --- grade_id`` line."""
        return "".join(f"{self.header(gid)}{text}\n" for gid, text in self.cells.items())


@dataclass(frozen=True)
class Skipped:
    """A hand-in that could not be compared, and why."""

    student: str
    reason: str


@dataclass(frozen=True)
class Pair:
    """Two hand-ins compared. ``first_share`` is the share of ``first``'s code found in ``second``'s, and
    the other way round; the regions are slices of each one's ``code`` that match the other's."""

    first: HandIn
    second: HandIn
    first_share: float
    second_share: float
    first_regions: tuple[slice, ...] = ()
    second_regions: tuple[slice, ...] = ()

    @property
    def similarity(self) -> float:
        """The larger share: a student who copied part of a longer hand-in is still seen."""
        return max(self.first_share, self.second_share)

    def regions(self) -> list[tuple[str, str]]:
        """The matching source slices of each, side by side in each one's own order (row i of one need not
        be the match of row i of the other: copydetect gives the regions per hand-in, not as pairs)."""
        a = [self.first.code[s] for s in self.first_regions]
        b = [self.second.code[s] for s in self.second_regions]
        return list(itertools.zip_longest(a, b, fillvalue=""))


@dataclass
class Comparison:
    """A lab's hand-ins compared pairwise: all pairs (most similar first) and the hand-ins left out."""

    lab: str
    threshold: float
    hand_ins: list[HandIn] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def flagged(self) -> list[Pair]:
        """The pairs at or above the threshold."""
        return [p for p in self.pairs if p.similarity >= self.threshold]


def check_threshold(value: float) -> float:
    """``value`` if it is a share in (0, 1], else a :class:`config.SettingError` saying so."""
    if not 0 < value <= 1:
        raise config.SettingError(f"similarity threshold {value}: use a share between 0 and 1, e.g. "
                                  f"{config.SIMILARITY_THRESHOLD} (the default)")
    return value


# --------------------------------------------------------------------------- what is compared

def template_cells(course: Course, lab: str) -> dict[str, str]:
    """``grade_id -> released text`` of every code solution cell of ``lab``'s released notebook."""
    import nbformat
    from nbgrader import utils

    path = course.folder("release") / lab / f"{lab}.ipynb"
    if not path.is_file():
        raise GradingError(f"{path} is missing: run `python -m autograde generate {lab}` first")
    nb = nbformat.read(path, as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in nb.cells
            if cell.cell_type == "code" and utils.is_solution(cell)}


def own_code(template: str, source: str) -> str:
    """``source`` without the lines the template cell already had (compared stripped), blank lines gone.

    copydetect's ``boilerplate`` also drops every fingerprint of the template (see :func:`compare`);
    removing the lines as well drops the k-grams that straddle a given line and a student's own.
    """
    given = {line.strip() for line in template.splitlines() if line.strip()}
    return "\n".join(line for line in source.splitlines() if line.strip() and line.strip() not in given)


def read_hand_in(path: Path, student: str, templates: dict[str, str]) -> HandIn | Skipped:
    """The student's own code in the solution cells of the notebook at ``path`` (in the template's order)."""
    import nbformat

    if not path.is_file():
        return Skipped(student, f"no {path.name} in {path.parent}")
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        by_id = {}
        for cell in nb.cells:
            gid = (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")
            if gid in templates and cell.get("cell_type") == "code" and gid not in by_id:
                source = cell.get("source", "")
                by_id[gid] = "".join(source) if isinstance(source, list) else str(source)
    except Exception as exc:  # noqa: BLE001 -- a hand-in is whatever the student uploaded: never crash on it
        return Skipped(student, f"unreadable notebook ({type(exc).__name__}: {str(exc)[:200]})")
    if not by_id:
        return Skipped(student, "none of the lab's solution cells found (their grade_ids were removed or changed)")
    cells = {gid: own_code(template, by_id.get(gid, "")) for gid, template in templates.items()}
    return HandIn(student, {gid: code for gid, code in cells.items() if code})


def hand_ins(course: Course, lab: str) -> tuple[list[HandIn], list[Skipped]]:
    """Every collected hand-in of ``lab`` (``submitted/<student>/<lab>/<lab>.ipynb``), read or skipped."""
    templates = template_cells(course, lab)
    submitted = course.folder("submitted")
    read, skipped = [], []
    if not submitted.is_dir():
        return read, skipped
    for folder in sorted(submitted.iterdir()):
        if folder.is_dir() and (folder / lab).is_dir():
            got = read_hand_in(folder / lab / f"{lab}.ipynb", folder.name, templates)
            (read if isinstance(got, HandIn) else skipped).append(got)
    return read, skipped


# --------------------------------------------------------------------------- the comparison

def _fingerprint(code: str, name: str, boilerplate: np.ndarray):
    from copydetect import CodeFingerprint

    return CodeFingerprint(f"{name}.py", NOISE, WINDOW, boilerplate=boilerplate, language="python",
                           fp=io.StringIO(code))


def _regions(slices: np.ndarray, length: int) -> tuple[slice, ...]:
    """copydetect's 2xN (start, end) array as sorted, non-overlapping slices clipped to the text."""
    spans = sorted((max(0, int(a)), min(length, int(b))) for a, b in zip(*slices))
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        elif b > a:
            merged.append([a, b])
    return tuple(slice(a, b) for a, b in merged)


def compare(course: Course, lab: str, threshold: float = config.SIMILARITY_THRESHOLD) -> Comparison:
    """Every pair of ``lab``'s readable hand-ins compared with copydetect, most similar first.

    Cell by cell: each solution cell's code is compared with the same cell of the other hand-in (so no
    match straddles two answers), and a hand-in's share is its matched tokens over its fingerprinted
    tokens, summed over the cells.
    """
    from copydetect import compare_files

    check_threshold(threshold)
    templates = template_cells(course, lab)
    read, skipped = hand_ins(course, lab)
    # Each template cell's fingerprints, every k-gram (window 1), as copydetect gets its boilerplate files'.
    boilerplate = {gid: np.unique(np.array(sorted(_fingerprint(text, "template", np.array([])).hashes)))
                   for gid, text in templates.items()}
    prints = {h.student: {gid: _fingerprint(text, f"{h.student}-{gid}", boilerplate[gid])
                          for gid, text in h.cells.items()} for h in read}
    pairs = []
    for a, b in itertools.combinations(read, 2):
        matched, covered = [0, 0], [0, 0]
        regions: tuple[list[slice], list[slice]] = ([], [])
        for gid in templates:
            fa, fb = prints[a.student].get(gid), prints[b.student].get(gid)
            covered[0] += fa.token_coverage if fa else 0
            covered[1] += fb.token_coverage if fb else 0
            if fa is None or fb is None:
                continue
            overlap, (share_a, share_b), slices = compare_files(fa, fb)
            if not overlap:
                continue
            sides = ((a, fa, share_a, slices[0]), (b, fb, share_b, slices[1]))
            for side, (hand, fp, share, found) in enumerate(sides):
                matched[side] += share * fp.token_coverage  # copydetect's share is over the cell's coverage
                start = hand.spans()[gid]
                regions[side].extend(slice(r.start + start, r.stop + start)
                                     for r in _regions(found, len(hand.cells[gid])))
        share = [m / c if c else 0.0 for m, c in zip(matched, covered)]
        pairs.append(Pair(a, b, share[0], share[1], tuple(regions[0]), tuple(regions[1])))
    pairs.sort(key=lambda p: (-p.similarity, p.first.student, p.second.student))
    return Comparison(lab, threshold, read, pairs, skipped)


# --------------------------------------------------------------------------- the report

def _highlighted(code: str, regions: tuple[slice, ...]) -> str:
    """``code`` HTML-escaped, the regions in ``<mark>`` (copydetect's highlighter, escaping on)."""
    from copydetect.utils import highlight_overlap

    if not regions:
        return html.escape(code)
    slices = np.array([[s.start for s in regions], [s.stop for s in regions]])
    text, _ = highlight_overlap(code, slices, "<mark>", "</mark>", escape_html=True)
    return text


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def section(course: Course, lab: str, threshold: float = config.SIMILARITY_THRESHOLD,
            result: Comparison | None = None) -> str:
    """The report's HTML block on ``lab``'s similar hand-ins: the flagged pairs, then each side by side.

    Every text from a hand-in is escaped. Never raises on a hand-in; a lab that cannot be compared at
    all (no released notebook) says so in the block.
    """
    try:
        result = result or compare(course, lab, threshold)
    except GradingError as exc:
        return f"<h2>Similar hand-ins</h2><p>not compared: {html.escape(str(exc))}</p>"
    e = html.escape
    flagged = result.flagged
    parts = ["<h2>Similar hand-ins</h2>",
             (f"<p>{len(result.hand_ins)} hand-in(s) compared pairwise on their solution cells, the released "
              f"template's code removed; {len(flagged)} pair(s) at or above {_pct(result.threshold)} similar "
              f"(the share of one hand-in's code found in the other). A flag is a question for a person, not a "
              f"verdict.</p>")]
    if flagged:
        rows = "".join(f"<tr><td>{e(p.first.student)}</td><td>{e(p.second.student)}</td>"
                       f"<td>{_pct(p.first_share)}</td><td>{_pct(p.second_share)}</td></tr>" for p in flagged)
        parts.append("<table><tr><th>student</th><th>student</th><th>share of the first's code in the second's"
                     "</th><th>share of the second's in the first's</th></tr>" + rows + "</table>")
        pre = "style='white-space:pre-wrap;font-size:small;margin:0'"
        for p in flagged:
            parts.append(
                f"<h3>{e(p.first.student)} and {e(p.second.student)}: {_pct(p.similarity)}</h3>"
                "<table style='table-layout:fixed;width:100%'><tr>"
                f"<th>{e(p.first.student)}</th><th>{e(p.second.student)}</th></tr><tr>"
                f"<td style='vertical-align:top'><pre {pre}>{_highlighted(p.first.code, p.first_regions)}</pre></td>"
                f"<td style='vertical-align:top'><pre {pre}>{_highlighted(p.second.code, p.second_regions)}</pre>"
                "</td></tr></table>")
    else:
        parts.append("<p>none</p>")
    if result.skipped:
        parts.append("<p>Not compared:</p><table><tr><th>student</th><th>why</th></tr>"
                     + "".join(f"<tr><td>{e(s.student)}</td><td>{e(s.reason)}</td></tr>" for s in result.skipped)
                     + "</table>")
    return "\n".join(parts)


def write_page(course: Course, lab: str, result: Comparison) -> Path:
    """``reports/<lab>-similar.html``: the section as a page of its own (no grading run needed)."""
    path = course.config_dir / "reports" / f"{lab}-similar.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    style = "<style>body{font-family:sans-serif;max-width:1200px}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(lab)}: similar "
                    f"hand-ins</title>{style}</head><body>{section(course, lab, result=result)}</body></html>")
    return path
