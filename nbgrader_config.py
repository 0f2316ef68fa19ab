"""Students' nbgrader settings when JupyterLab or `nbgrader validate` starts in the course folder.

They live in notebooks/nbgrader_config.py and apply to validation only (the Validate button and
`nbgrader validate`); the instructor's grading configuration is autograde/nbgrader_config.py.
"""
load_subconfig("notebooks/nbgrader_config.py")  # noqa: F821 (provided by nbgrader), relative to this file
