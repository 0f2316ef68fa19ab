"""What goes back out: HTML feedback per student and the grades as CSV."""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import nbformat
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests
from traitlets import Bool, Unicode

from .course import Course, checked, nbgrader

log = logging.getLogger(__name__)


HIDDEN_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")  # nbgrader's delimiters (ClearHiddenTests)
FLOAT_NOISE = re.compile(r"(?<![\w.])\d+\.\d{7,}(?![\w.])")  # a float as nbgrader's export prints a sum
MISSING_ATTACHMENT = re.compile(r"attachment:([^\s)\"'>]+)")  # a markdown link to a cell's attachment


class StudentHTML(SanitizeHTML):
    """nbconvert's SanitizeHTML for what a hand-in wrote, run when it is graded (``Autograde``, see
    nbgrader_config.py): the formgrader and the feedback pages show the graded copy in a browser, the
    instructor's logged in, so a student's ``<img onerror=...>`` in markdown or a script in an output would
    run with the instructor's rights (read the solutions, change grades, edit the course's files).

    Every output's HTML is cleaned and its scripts removed; a markdown cell is cleaned unless it is the
    instructor's own text, word for word (a markdown cell of the source notebook, ``source_pattern``),
    which stays as written (a code span with ``<lab>`` in it reads as written).
    """

    enabled = Bool(True, config=True)
    source_pattern = Unicode("", config=True,
                             help="the instructor's notebook of a hand-in, with {assignment} and {notebook}")

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        self._own: set[str] = set()
        if self.source_pattern:
            path = Path(self.source_pattern.format(assignment=info.get("assignment", ""),
                                                   notebook=info.get("notebook", "")))
            try:
                self._own = {c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"}
            except (OSError, ValueError) as exc:
                log.warning("every markdown cell is cleaned: the source notebook %s cannot be read (%s)", path, exc)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and cell.source in self._own:
            return cell, resources
        return super().preprocess_cell(cell, resources, index)


class HideTests(ClearHiddenTests):
    """nbgrader's ClearHiddenTests made safe for feedback pages (``GenerateFeedback``, see nbgrader_config.py).

    - The hidden part of a test cell goes from its source *and* from its error's traceback: a
      failed check shows its message (what was expected, what was found), never its lines.
    - The hidden tests ran in the student's kernel, so its code could print them (IPython's input
      history, ``linecache``, the calling frame): every line of hidden test code is also cut from
      every output of the notebook (:func:`scrub`).
    - A student's own cell is shown as written, even when it holds the marker text (nbgrader would
      refuse the whole page).
    """

    def preprocess(self, nb, resources):
        hidden = hidden_lines(nb)
        for cell in nb.cells:  # nbconvert refuses the whole page over a link to an attachment the cell lacks
            if cell.cell_type == "markdown":
                have = set(cell.get("attachments") or {})
                cell.source = MISSING_ATTACHMENT.sub(
                    lambda m: m[0] if m[1] in have else "#missing-attachment", cell.source)
        nb, resources = super().preprocess(nb, resources)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                scrub(out, hidden)
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if not is_test(cell):
            return cell, resources
        cell, resources = super().preprocess_cell(cell, resources, index)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources


HIDDEN_LINE = "[a line of a hidden test: not shown]"
MIN_HIDDEN_LINE = 6  # characters: shorter lines (``pass``, a bracket) tell nothing


def is_test(cell) -> bool:
    """An instructor's test cell (graded, not the student's answer)."""
    return utils.is_grade(cell) and not utils.is_solution(cell)


def hidden_lines(nb) -> list[str]:
    """The lines of hidden test code in the notebook's test cells, longest first (markers excluded)."""
    found = set()
    for cell in nb.cells:
        if not is_test(cell):
            continue
        inside = False
        for line in cell.source.splitlines():
            if HIDDEN_MARKERS[0] in line:
                inside = True
            elif HIDDEN_MARKERS[1] in line:
                inside = False
            elif inside and len(line.strip()) >= MIN_HIDDEN_LINE:
                found.add(line.strip())
    return sorted(found, key=len, reverse=True)


def scrub(output, hidden: list[str]) -> None:
    """Replace every hidden test line in one output (its text, data, error message and traceback)."""
    def clean(text):
        if isinstance(text, list):
            return [clean(t) for t in text]
        if isinstance(text, dict):
            return {key: clean(value) for key, value in text.items()}
        if not isinstance(text, str):
            return text
        for line in hidden:
            for form in dict.fromkeys((line, html.escape(line, quote=False), html.escape(line))):  # as in HTML, SVG
                text = text.replace(form, HIDDEN_LINE)
        return text

    for key in ("text", "evalue", "traceback"):
        if key in output:
            output[key] = clean(output[key])
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith(("json", "+xml")):  # image/svg+xml is text too
            output["data"][mime] = clean(value)


def marker_cells(notebook) -> list[str]:
    """Where a student's own cell holds nbgrader's hidden-test marker text (shown as written in the feedback)."""
    return [cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {i}"
            for i, cell in enumerate(notebook.cells)
            if not is_test(cell) and any(marker in cell.get("source", "") for marker in HIDDEN_MARKERS)]


def feedback(course: Course, labs: list[str] | None = None) -> list[Path]:
    """HTML feedback for every graded submission of ``labs``: no hidden test's source, in cells or tracebacks.

    A page nbgrader cannot make for one hand-in is left out and named (:func:`missing_pages`); the others
    are made all the same. Raises GradingError only when nbgrader failed for a lab without leaving one out.
    """
    for lab in course.pick_labs(labs):
        if not list(course.folder("autograded").glob(f"*/{lab}/{lab}.ipynb")):
            log.info("%s: nothing graded yet", lab)
            continue
        proc = nbgrader(course, "generate_feedback", lab, "--force")
        if missing := missing_pages(course, [lab]):
            log.warning("%s: no feedback page for %s: nbgrader could not make it (%s); the others are made",
                        lab, ", ".join(missing), _last_error(proc))
        else:
            checked(proc, f"nbgrader generate_feedback {lab}")
    pages = sorted(course.folder("feedback").glob("*/*/*.html"))
    log.info("%d feedback page(s) in %s", len(pages), course.folder("feedback"))
    return pages


def missing_pages(course: Course, labs: list[str]) -> list[str]:
    """Students of ``labs`` whose graded notebook has no feedback page made since it was graded."""
    out = []
    for lab in labs:
        for graded in sorted(course.folder("autograded").glob(f"*/{lab}/{lab}.ipynb")):
            student = graded.parent.parent.name
            page = course.folder("feedback") / student / lab / f"{lab}.html"
            if not page.is_file() or page.stat().st_mtime < graded.stat().st_mtime:
                out.append(student)
    return out


def _last_error(proc) -> str:
    lines = [line for line in ((proc.stdout or "") + (proc.stderr or "")).splitlines() if "Error" in line]
    return lines[-1].strip()[:300] if lines else f"exit {proc.returncode}"


def export(course: Course, to: Path | None = None) -> Path:
    """Every student's score per lab from the gradebook, as CSV (nbgrader export)."""
    to = Path(to or course.config_dir / "grades.csv").resolve()
    checked(nbgrader(course, "export", f"--to={to}"), "nbgrader export")
    text = to.read_text(encoding="utf-8")
    to.write_text(FLOAT_NOISE.sub(lambda m: repr(round(float(m[0]), 6)), text), encoding="utf-8")  # 2.8000000000000003
    log.info("grades: %s", to)
    return to
