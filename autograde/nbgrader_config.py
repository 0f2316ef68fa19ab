"""nbgrader configuration of the course. Run every nbgrader command from this folder.

Layout (paths relative to the repository root):
  solutions/<lab>/<lab>.ipynb                  source notebooks (solutions + hidden tests)
  notebooks/<lab>/<lab>.ipynb                  student versions, generated; never edit by hand
  autograde/submitted/<student>/<lab>/...      collected submissions (not in git)
  autograde/autograded/, autograde/feedback/   nbgrader's output (not in git)
  autograde/gradebook.db                       the gradebook (not in git)
"""
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "deep-learning-labs"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = "autograde/submitted"
c.CourseDirectory.autograded_directory = "autograde/autograded"
c.CourseDirectory.feedback_directory = "autograde/feedback"
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL", f"sqlite:///{HERE / 'gradebook.db'}")
# Only notebooks are graded; datasets and caches never travel with a lab.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.pt", "data"]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
