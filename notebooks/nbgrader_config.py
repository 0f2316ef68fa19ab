"""nbgrader settings for checking your work: the Validate button in JupyterLab and `nbgrader validate`.

nbgrader reads this file from the folder JupyterLab or `nbgrader validate` is started in (this
folder, or the course folder, whose nbgrader_config.py loads this one). It gives each cell the
time your run mode needs (COURSE_MODE: 300 s in smoke, 2700 s in laptop, 3600 s in full mode; twice
that where the notebook computes with one CPU thread, as the grader gives it), and when a cell is
still cut short, validation says so instead of "Success" (see course_utils/validation.py). Another limit for one run:
    nbgrader validate --Validator.Execute.timeout=SECONDS NOTEBOOK
"""
from course_utils import validation

validation.configure(get_config())  # noqa: F821 (provided by nbgrader)
