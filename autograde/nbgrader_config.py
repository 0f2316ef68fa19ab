"""nbgrader configuration of the course. Run every nbgrader command from this folder.

Layout (paths relative to the repository root):
  solutions/<lab>/<lab>.ipynb                  source notebooks (solutions + hidden tests)
  notebooks/<lab>/<lab>.ipynb                  student versions, generated; never edit by hand
  autograde/submitted/<student>/<lab>/...      collected submissions (not in git)
  autograde/autograded/, autograde/feedback/   nbgrader's output (not in git)
  autograde/gradebook.db                       the gradebook (not in git)
Grading mode and limits: autograde/config.py (COURSE_GRADING_MODE picks the default mode; `python -m
autograde autograde` passes its run's mode and each hand-in's cell limit on nbgrader's command line).
"""
import os
from pathlib import Path

from autograde import config
from course_utils import modes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# A plain `nbgrader autograde` grades one hand-in at a time with this machine's cores (or OMP_NUM_THREADS):
# with fewer than config.REFERENCE_THREADS its kernel gets the longer limits the kit's own runs give it.
GRADING = config.limits(config.settings().mode).for_threads(modes.cpu_threads())

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "deep-learning-labs"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = "autograde/submitted"
c.CourseDirectory.autograded_directory = "autograde/autograded"
c.CourseDirectory.feedback_directory = "autograde/feedback"
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL", f"sqlite:///{HERE / 'gradebook.db'}")
# Datasets, caches and exported models never travel with a lab; handed-in weights (weights/) travel from
# submitted/ to autograded/ (`python -m autograde generate` leaves them out of releases).
c.CourseDirectory.ignore = config.IGNORED_FILES
# Weights left in solutions/<lab>/weights/ by running a solution never replace a student's (or fill in for missing ones).
c.Autograde.exclude_overwriting = config.source_weights(ROOT / "solutions")

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# ---------------------------------------------------------------- grading (python -m autograde autograde)
# Kernels run in the grading mode (COURSE_MODE), inside the sandbox when `python -m autograde`
# asks for one; a kernel that dies keeps the points of the tests that ran before, and every
# test cell is followed by an integrity probe (autograde/execute.py).
c.Execute.kernel_manager_class = "autograde.kernel.GradingKernelManager"
c.GradingKernelManager.mode = GRADING.mode
c.StudentHTML.source_pattern = str(ROOT / c.CourseDirectory.source_directory / "{assignment}" / "{notebook}.ipynb")
c.Autograde.autograde_preprocessors = [
    "autograde.execute.GradingExecute",
    "autograde.publish.StudentHTML",  # no student HTML or script runs in the formgrader or a feedback page
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# ---- late penalties (autograde/term.py): the due dates and extensions of autograde/term.toml are in the
# gradebook (term.apply, before each run); nbgrader's AssignLatePenalties asks this plugin for the penalty.
c.AssignLatePenalties.plugin_class = "autograde.term.TermLatePenalty"
c.TermLatePenalty.term_file = str(HERE / "term.toml")
# ---- end of late penalties
# A cell past its limit is interrupted and marked CellTimeoutError; the notebook goes on,
# so an endless loop costs that item, not the submission or the batch.
c.Execute.timeout = GRADING.cell_timeout
c.Execute.interrupt_on_timeout = True
# Cells tagged `skip-when-grading` (work no hidden test reads, e.g. lab 4's repeated runs for
# its ranking) run for students but not when grading; nbconvert's own tag stays `skip-execution`.
c.Execute.skip_cells_with_tag = "skip-when-grading"
# After a reply, wait this long for the cell's last output (nbclient's 4 s is short on a busy CPU).
c.Execute.iopub_timeout = 20
# A test cell the student deleted is put back (and graded); edited ones are restored anyway.
c.OverwriteCells.add_missing_cells = True
# Feedback shows each test's result and message but no line of hidden test code, in the cells or in
# their tracebacks; a student's own cell is shown as written (autograde/publish.py: HideTests).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "autograde.publish.HideTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
