"""The instructor's grading steps, one subcommand each, on top of nbgrader's CLI.

    python autograde/grade.py generate [LAB ...]       solutions/ -> notebooks/ (student versions)
    python autograde/grade.py check [LAB ...]          notebooks/ equals what nbgrader generates?
    python autograde/grade.py collect FOLDER           FOLDER/<student>/<lab>/<lab>.ipynb -> autograde/submitted/
    python autograde/grade.py autograde [LAB ...]      run every collected submission, fill the gradebook
    python autograde/grade.py feedback [LAB ...]       HTML feedback per student in autograde/feedback/
    python autograde/grade.py export [--to FILE]       all grades as CSV (default autograde/grades.csv)

Every step works on the course whose root holds ``autograde/nbgrader_config.py``
(this repository unless ``--course DIR`` names another one) and exits non-zero
when something needs the instructor's attention. See autograde/README.md.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import filecmp
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
CONFIG_NAME = "nbgrader_config.py"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
DONE = "grade.py finished:"  # last line of a submission's log once its result is recorded
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")


# --------------------------------------------------------------------------- the course

@dataclass
class Course:
    """A course folder: ``solutions/``, ``notebooks/`` and ``autograde/`` with the nbgrader config."""

    root: Path
    _settings: dict | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not (self.root / "autograde" / CONFIG_NAME).is_file():
            raise SystemExit(f"{self.root} is not a course: autograde/{CONFIG_NAME} is missing")

    @property
    def config_dir(self) -> Path:
        return self.root / "autograde"

    def folder(self, name: str) -> Path:
        """One of nbgrader's folders as configured (source, release, submitted, autograded, feedback)."""
        return self.root / self.settings()[f"{name}_directory"]

    def db_path(self) -> Path:
        url = self.settings()["db_url"]
        if not url.startswith("sqlite:///"):
            raise SystemExit(f"grade.py needs an SQLite gradebook, the config names {url}")
        return Path(url[len("sqlite:///"):].split("?")[0])

    def settings(self) -> dict:
        """The values grade.py needs from nbgrader_config.py (read once)."""
        if self._settings is None:
            self._settings = read_settings(self.config_dir)
        return self._settings

    def labs(self) -> list[str]:
        """Lab ids: every ``solutions/<lab>/<lab>.ipynb``."""
        source = self.folder("source")
        return sorted(p.parent.name for p in source.glob("*/*.ipynb") if p.stem == p.parent.name)

    def pick_labs(self, labs: list[str] | None) -> list[str]:
        known = self.labs()
        unknown = sorted(set(labs or []) - set(known))
        if unknown:
            raise SystemExit(f"unknown lab(s) {', '.join(unknown)}; labs in {self.folder('source')}: "
                             f"{', '.join(known) or 'none'}")
        return list(labs) if labs else known


def read_settings(config_dir: Path, mode: str | None = None) -> dict:
    """Load nbgrader_config.py with traitlets and return the paths and limits grade.py uses.

    ``mode`` overrides the grading mode as ``COURSE_GRADING_MODE`` would. The
    config sets ``COURSE_MODE`` for the kernels nbgrader starts; that side
    effect is undone here, so reading the settings changes nothing.
    """
    from traitlets.config.loader import PyFileConfigLoader

    saved = dict(os.environ)
    try:
        if mode:
            os.environ["COURSE_GRADING_MODE"] = mode
        cfg = PyFileConfigLoader(CONFIG_NAME, path=str(config_dir)).load_config()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    cd, grading = cfg.CourseDirectory, cfg.CourseGrading
    return {
        "course_id": cd.course_id,
        "db_url": cd.db_url,
        **{f"{name}_directory": cd[f"{name}_directory"]
           for name in ("source", "release", "submitted", "autograded", "feedback")},
        "mode": grading.mode,
        "cell_timeout": cfg.Execute.timeout,
        "submission_timeout": grading.submission_timeout,
    }


def nbgrader(course: Course, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course's autograde/ folder (where its config lives), capturing its output."""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course.config_dir,
                          env=tool_env(), text=True, capture_output=True)


def tool_env(**extra: str) -> dict:
    """os.environ plus this interpreter's bin/ on PATH: nbgrader runs ``alembic`` by name."""
    env = dict(os.environ, **extra)
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _checked(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{tail}")


# --------------------------------------------------------------------------- generate / check

def generate(course: Course, labs: list[str] | None = None) -> list[str]:
    """Student versions of ``labs`` (default: all) into notebooks/, and their entries in the gradebook."""
    done = []
    for lab in course.pick_labs(labs):
        proc = nbgrader(course, "generate_assignment", lab, "--force")
        _checked(proc, f"nbgrader generate_assignment {lab}")
        done.append(lab)
        print(f"generated {course.folder('release') / lab}")
    return done


def _comparable(path: Path) -> list[dict]:
    nb = nbformat.read(path, as_version=4)
    keep = ("cell_type", "source", "metadata", "outputs", "execution_count")
    return [{k: cell.get(k) for k in keep if k in cell} for cell in nb.cells]


def _describe(cell: dict, index: int) -> str:
    gid = (cell.get("metadata") or {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" ({gid})" if gid else "")


def compare_release(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Differences between a freshly generated release folder and a committed one, in words."""
    problems = []
    if not actual_dir.is_dir():
        return [f"{actual_dir} is missing"]
    expected = {p.relative_to(expected_dir) for p in expected_dir.rglob("*") if p.is_file()}
    actual = {p.relative_to(actual_dir) for p in actual_dir.rglob("*")
              if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts}
    problems += [f"{actual_dir / rel} is missing" for rel in sorted(expected - actual)]
    problems += [f"{actual_dir / rel} is not generated from solutions/ (remove it)" for rel in sorted(actual - expected)]
    for rel in sorted(expected & actual):
        if rel.suffix != ".ipynb":
            if not filecmp.cmp(expected_dir / rel, actual_dir / rel, shallow=False):
                problems.append(f"{actual_dir / rel} differs from solutions/")
            continue
        want, got = _comparable(expected_dir / rel), _comparable(actual_dir / rel)
        if len(want) != len(got):
            problems.append(f"{actual_dir / rel}: {len(got)} cells, nbgrader generates {len(want)}")
        for i, (a, b) in enumerate(zip(want, got)):
            for key in a.keys() | b.keys():
                if a.get(key) != b.get(key):
                    problems.append(f"{actual_dir / rel}: {_describe(a, i)} {key} differs from what nbgrader generates")
                    break
    return problems


def check(course: Course, labs: list[str] | None = None) -> list[str]:
    """Regenerate ``labs`` into a temporary folder and compare with notebooks/ (cell sources, metadata).

    Returns the problems found (empty when everything matches). The repository's
    gradebook and notebooks/ are not touched.
    """
    problems = []
    release = course.folder("release")
    known = course.labs()
    for extra in sorted(p.name for p in release.glob("*") if p.is_dir() and p.name not in known):
        problems.append(f"{release / extra} has no source in {course.folder('source')} (remove it)")
    with tempfile.TemporaryDirectory(prefix="release-check-") as tmp:
        for lab in course.pick_labs(labs):
            proc = nbgrader(course, "generate_assignment", lab, "--force",
                            f"--CourseDirectory.release_directory={tmp}",
                            f"--CourseDirectory.db_url=sqlite:///{tmp}/gradebook.db")
            _checked(proc, f"nbgrader generate_assignment {lab} (into {tmp})")
            problems += compare_release(Path(tmp) / lab, release / lab)
    return problems


# --------------------------------------------------------------------------- collect

def _readable(path: Path) -> str | None:
    """None if ``path`` is a readable notebook, else what is wrong with it, in words."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSON and UTF-8 errors
        return f"not valid JSON ({exc}); the file is probably truncated or not a notebook"
    try:
        nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for unreadable files
        return f"not a readable notebook ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def collect(course: Course, folder: Path, *, update: bool = False) -> list[dict]:
    """Copy ``folder/<student>/<lab>/`` into autograde/submitted/, checking each submission.

    A submission already collected and unchanged is skipped; a changed one is
    replaced only with ``update=True``. Unreadable notebooks are still copied
    (nothing is lost) and reported. Returns one row per student and lab folder:
    ``student, lab, status, message``.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder of submissions (<student>/<lab>/<lab>.ipynb)")
    labs = set(course.labs())
    submitted = course.folder("submitted")
    rows = []
    for student_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        student = student_dir.name
        for lab_dir in sorted(p for p in student_dir.iterdir() if p.is_dir()):
            row = {"student": student, "lab": lab_dir.name, "status": "collected", "message": ""}
            rows.append(row)
            notebook = lab_dir / f"{lab_dir.name}.ipynb"
            dest = submitted / student / lab_dir.name
            if not STUDENT_ID.match(student):
                row.update(status="skipped", message="student id must be letters, digits and _.@- only")
            elif lab_dir.name not in labs:
                row.update(status="skipped", message=f"unknown lab (labs: {', '.join(sorted(labs))})")
            elif not notebook.is_file():
                row.update(status="skipped", message=f"no {notebook.name} in {lab_dir}")
            elif dest.exists() and not _differs(lab_dir, dest):
                row.update(status="unchanged")
            elif dest.exists() and not update:
                row.update(status="skipped", message="differs from the copy already collected; "
                                                     "use --update to replace it")
            else:
                if dest.exists():
                    shutil.rmtree(dest)
                    row["status"] = "updated"
                shutil.copytree(lab_dir, dest, ignore=IGNORED, copy_function=shutil.copyfile)
                if not (dest / "timestamp.txt").exists():
                    mtime = dt.datetime.fromtimestamp(notebook.stat().st_mtime, dt.timezone.utc)
                    (dest / "timestamp.txt").write_text(mtime.isoformat())
            if row["status"] in ("collected", "updated", "unchanged") and (problem := _readable(notebook)):
                row["message"] = f"{problem}; it will fail to grade, ask the student to submit again"
    for row in rows:
        print(f"{row['student']:>16} {row['lab']:<28} {row['status']:<9} {row['message']}")
    if not rows:
        print(f"no submissions found in {folder} (expected <student>/<lab>/<lab>.ipynb)")
    return rows


def _differs(src: Path, dest: Path) -> bool:
    names = {p.relative_to(src) for p in src.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    return any(not (dest / n).is_file() or not filecmp.cmp(src / n, dest / n, shallow=False) for n in names)


# --------------------------------------------------------------------------- autograde

@dataclass
class Result:
    """What happened to one submission."""

    student: str
    lab: str
    status: str = "graded"          # graded | error
    score: float | None = None
    max_score: float | None = None
    seconds: float = 0.0
    message: str = ""
    log: str = ""
    db: Path | None = field(default=None, repr=False)


def _copy_db(src: Path, dest: Path) -> None:
    """A consistent copy of an SQLite file (sqlite3's online backup)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()


def _kill_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop nbgrader and every process it started (its kernels run in their own sessions)."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGINT)  # nbgrader shuts its kernel down and cleans up
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _error_line(log: str) -> str:
    """The most telling line of a failed nbgrader run: the last exception, else the last error."""
    lines = log.strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b.*:", line.strip()):
            return line.strip()
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or ["no output"])[-1].strip()


def _grade_one(course: Course, lab: str, student: str, db: Path, *, cell_timeout: int,
               submission_timeout: float, env: dict) -> Result:
    """Grade one submission with ``nbgrader autograde`` against a private copy of the gradebook."""
    result = Result(student, lab)
    start = time.perf_counter()
    notebook = course.folder("submitted") / student / lab / f"{lab}.ipynb"
    result.log = str(_log_path(course, lab, student))
    Path(result.log).parent.mkdir(parents=True, exist_ok=True)
    problem = _readable(notebook) if notebook.is_file() else f"{notebook} is missing"
    if problem:
        Path(result.log).write_text(problem + "\n")
        result.status, result.message = "error", problem
        return result
    result.db = db
    _copy_db(course.db_path(), result.db)
    cmd = [sys.executable, "-m", "nbgrader", "autograde", lab, "--student", student, "--force",
           f"--CourseDirectory.db_url=sqlite:///{result.db}", f"--Execute.timeout={cell_timeout}"]
    with open(result.log, "w") as log:
        proc = subprocess.Popen(cmd, cwd=course.config_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True)
        try:
            code = proc.wait(timeout=submission_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            code = None
    result.seconds = time.perf_counter() - start
    if code is None:
        shutil.rmtree(course.folder("autograded") / student / lab, ignore_errors=True)
        result.status = "error"
        result.message = (f"stopped after {submission_timeout:.0f} s, the limit for one whole submission: "
                          f"too slow in this mode, or stuck; look at it by hand or raise --submission-timeout")
    elif code != 0:
        result.status = "error"
        log = Path(result.log).read_text()
        if "CellTimeoutError" in log and "Interrupting kernel" in log:
            result.message = (f"a cell ran past the {cell_timeout} s limit and went on running after the "
                              f"interrupt (it ignores interrupts or hangs in native code); look at it by hand")
        else:
            result.message = f"nbgrader failed: {_error_line(log)}"
    return result


def merge_grades(db: Path, main_db: Path, course_id: str, lab: str, student: str) -> tuple[float, float]:
    """Copy one student's autograde results for ``lab`` from a private gradebook into the main one.

    Copies what ``nbgrader autograde`` writes (submission time, automatic
    scores and comments, late penalties); manual grades in the main gradebook
    are kept. Returns (score, max_score) as the main gradebook now has them.
    """
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with Gradebook(f"sqlite:///{db}", course_id) as src, Gradebook(f"sqlite:///{main_db}", course_id) as dst, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush notices, harmless
        sub = src.find_submission(lab, student)
        person = src.find_student(student)
        dst.update_or_create_student(student, first_name=person.first_name, last_name=person.last_name,
                                     email=person.email, lms_user_id=person.lms_user_id)
        dst.update_or_create_submission(lab, student, timestamp=sub.timestamp)
        for nb in sub.notebooks:
            target = dst.find_submission_notebook(nb.name, lab, student)
            target.late_submission_penalty = nb.late_submission_penalty
            for grade in nb.grades:
                mine = dst.find_grade(grade.name, nb.name, lab, student)
                mine.auto_score = grade.auto_score
                mine.needs_manual_grade = mine.manual_score is not None or grade.needs_manual_grade
            for comment in nb.comments:
                dst.find_comment(comment.name, nb.name, lab, student).auto_comment = comment.auto_comment
        dst.db.commit()
        merged = dst.find_submission(lab, student)
        return merged.score, merged.max_score


def _log_path(course: Course, lab: str, student: str) -> Path:
    return course.config_dir / "reports" / "logs" / lab / f"{student}.log"


def _needs_grading(course: Course, lab: str, student: str) -> bool:
    """False when this submission was graded (or failed to grade) after it was last collected."""
    log = _log_path(course, lab, student)
    sub = course.folder("submitted") / student / lab / f"{lab}.ipynb"
    if not log.is_file() or not sub.is_file() or sub.stat().st_mtime > log.stat().st_mtime:
        return True
    return not log.read_text().rstrip().splitlines()[-1:][0].startswith(DONE)


def autograde(course: Course, labs: list[str] | None = None, *, students: list[str] | None = None,
              workers: int | None = None, force: bool = False, mode: str | None = None,
              cell_timeout: int | None = None, submission_timeout: float | None = None) -> list[Result]:
    """Grade collected submissions in parallel processes; the gradebook gets every result.

    Each submission runs ``nbgrader autograde`` in its own process against a
    private copy of the gradebook; results are merged into the main gradebook
    one at a time, so parallel runs never write the same SQLite file. A
    submission that fails or runs past ``submission_timeout`` becomes an error
    row for that student only. Without ``force``, submissions already graded
    (and not collected again since) are skipped.
    """
    settings = read_settings(course.config_dir, mode) if mode else course.settings()
    cell_timeout = int(cell_timeout or settings["cell_timeout"])
    submission_timeout = float(submission_timeout or settings["submission_timeout"])
    workers = max(1, workers or min(os.cpu_count() or 1, 8))
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = tool_env(COURSE_GRADING_MODE=settings["mode"],
                   **{var: os.environ.get(var, threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    main_db = course.db_path()
    submitted = course.folder("submitted")
    jobs, skipped = [], 0
    for lab in course.pick_labs(labs):
        with_lab = sorted(p.parent.name for p in submitted.glob(f"*/{lab}") if p.is_dir())
        chosen = [s for s in with_lab if students is None or s in students]
        jobs += [(lab, s) for s in chosen if force or _needs_grading(course, lab, s)]
        skipped += len(chosen) - sum(1 for job in jobs if job[0] == lab)
    if skipped:
        print(f"skipping {skipped} submission(s) graded since they were collected (--force regrades them)")
    if jobs and not _labs_in_gradebook(main_db, {lab for lab, _ in jobs}):
        raise SystemExit(f"the gradebook {main_db} does not know these labs yet: run "
                         f"`python autograde/grade.py generate` first")
    print(f"grading {len(jobs)} submission(s) in mode {settings['mode']} with {workers} process(es); "
          f"limits: {cell_timeout} s per cell, {submission_timeout:.0f} s per submission")
    results = []
    with tempfile.TemporaryDirectory(prefix="gradebooks-") as tmp, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_grade_one, course, lab, s, Path(tmp) / f"{lab}-{s}.db", cell_timeout=cell_timeout,
                               submission_timeout=submission_timeout, env=env) for lab, s in jobs]
        for future in futures:  # in submission order; merging is serial, so writes never overlap
            result = future.result()
            recorded = True
            if result.status == "graded":
                try:
                    result.score, result.max_score = merge_grades(result.db, main_db, settings["course_id"],
                                                                  result.lab, result.student)
                except Exception as exc:  # not the student's fault: the next run tries again
                    result.status, result.message = "error", f"could not record the grades: {exc}"
                    recorded = False
            if recorded:
                with open(result.log, "a") as log:
                    log.write(f"\n{DONE} {result.status} {result.message}\n")
            print(f"{result.student:>16} {result.lab:<28} {_summary(result)}", flush=True)
            results.append(result)
    _write_report(course, results)
    return results


def _labs_in_gradebook(db: Path, labs: set[str]) -> bool:
    if not db.is_file():
        return False
    with sqlite3.connect(db) as con:
        try:
            have = {row[0] for row in con.execute("SELECT name FROM assignment")}
        except sqlite3.Error:
            return False
    con.close()
    return labs <= have


def _summary(result: Result) -> str:
    if result.status == "graded":
        return f"{result.score:g}/{result.max_score:g} points  ({result.seconds:.0f} s)"
    return f"ERROR: {result.message}  (log: {result.log})"


def _write_report(course: Course, results: list[Result]) -> Path | None:
    if not results:
        return None
    path = course.config_dir / "reports" / f"autograde-{dt.datetime.now():%Y%m%d-%H%M%S}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "lab", "status", "score", "max_score", "seconds", "message", "log"])
        for r in results:
            writer.writerow([r.student, r.lab, r.status, r.score, r.max_score, f"{r.seconds:.1f}", r.message, r.log])
    print(f"report: {path}")
    return path


# --------------------------------------------------------------------------- feedback / export

def feedback(course: Course, labs: list[str] | None = None) -> list[Path]:
    """HTML feedback for every graded submission of ``labs`` (hidden tests are not shown)."""
    for lab in course.pick_labs(labs):
        if not list(course.folder("autograded").glob(f"*/{lab}/{lab}.ipynb")):
            print(f"{lab}: nothing graded yet")
            continue
        _checked(nbgrader(course, "generate_feedback", lab, "--force"),
                 f"nbgrader generate_feedback {lab}")
    pages = sorted(course.folder("feedback").glob("*/*/*.html"))
    print(f"{len(pages)} feedback page(s) in {course.folder('feedback')}")
    return pages


def export(course: Course, to: Path | None = None) -> Path:
    """Every student's score per lab from the gradebook, as CSV (nbgrader export)."""
    to = Path(to or course.config_dir / "grades.csv").resolve()
    _checked(nbgrader(course, "export", f"--to={to}"), "nbgrader export")
    print(f"grades: {to}")
    return to


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python autograde/grade.py", description=__doc__.split("\n")[0])
    parser.add_argument("--course", type=Path, default=REPO, help="course root (default: this repository)")
    steps = parser.add_subparsers(dest="step", required=True)
    for name, text in (("generate", "student versions from solutions/ into notebooks/"),
                       ("check", "check that notebooks/ is what nbgrader generates from solutions/"),
                       ("feedback", "HTML feedback for graded submissions")):
        steps.add_parser(name, help=text).add_argument("labs", nargs="*", help="lab ids (default: all)")
    p = steps.add_parser("collect", help="copy FOLDER/<student>/<lab>/ into autograde/submitted/")
    p.add_argument("folder", type=Path)
    p.add_argument("--update", action="store_true", help="replace submissions collected before")
    p = steps.add_parser("autograde", help="grade collected submissions in parallel")
    p.add_argument("labs", nargs="*", help="lab ids (default: all)")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.add_argument("--workers", type=int, help="parallel processes (default: CPU cores, at most 8)")
    p.add_argument("--force", action="store_true", help="regrade submissions graded before")
    p.add_argument("--mode", choices=("smoke", "laptop", "full"), help="run mode (default: the config's)")
    p.add_argument("--cell-timeout", type=int, help="seconds per cell (default: the config's)")
    p.add_argument("--submission-timeout", type=float, help="seconds per submission (default: the config's)")
    p = steps.add_parser("export", help="grades as CSV")
    p.add_argument("--to", type=Path, help="output file (default: autograde/grades.csv)")
    args = parser.parse_args(argv)
    course = Course(args.course)

    if args.step == "generate":
        generate(course, args.labs)
    elif args.step == "check":
        problems = check(course, args.labs)
        for line in problems:
            print(line)
        if problems:
            print("\nnotebooks/ is not what nbgrader generates from solutions/. Never edit notebooks/ by hand: "
                  "make the change in solutions/<lab>/<lab>.ipynb, then run `python autograde/grade.py "
                  "generate <lab>` and commit both.")
            return 1
        print("notebooks/ matches solutions/")
    elif args.step == "collect":
        rows = collect(course, args.folder, update=args.update)
        return 1 if any(r["status"] == "skipped" or r["message"] for r in rows) else 0
    elif args.step == "autograde":
        results = autograde(course, args.labs, students=args.student, workers=args.workers, force=args.force,
                            mode=args.mode, cell_timeout=args.cell_timeout,
                            submission_timeout=args.submission_timeout)
        return 1 if any(r.status != "graded" for r in results) else 0
    elif args.step == "feedback":
        feedback(course, args.labs)
    elif args.step == "export":
        export(course, args.to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
