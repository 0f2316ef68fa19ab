"""The Validate button's verdict: a Jupyter server extension that tells JupyterLab what a pass means.

nbgrader's Validate button (in a notebook's toolbar, and in its Assignment List) asks the
Jupyter server to validate the notebook and draws the answer itself; for a passing notebook
its dialog says "Success! Your notebook passes all the tests.", which reads as full marks.
The validation runs in the server process with the students' ``nbgrader_config.py``, so
:mod:`course_utils.validation` is active there and records each validation's verdict
(:func:`course_utils.validation.last_validation`). This extension serves that record:

    GET <base_url>/course-kit/validation-verdict
    -> {"path": "notebooks/lab1/lab1.ipynb", "verdict": "Visible checks passed: ..."}
       (both null when the last validation did not pass, or before the first one)

and the kit's JupyterLab extension ``course-kit-validate`` (installed next to it, see
``course_utils/labextension/``) replaces the text of nbgrader's success dialog with
``verdict``. Without this endpoint, or without a recorded pass, the dialog keeps
nbgrader's wording. A single-user server validates one notebook at a time and the dialog
opens as soon as its validation returns, so the last validation is the one the dialog shows.

Installation: both parts live in this package (``labextension/``, and
``jupyter_server_config.d/course_utils.json``, which enables this module, and
:mod:`course_utils.kernels`, which gives the server's kernels unix sockets) and go into the
environment's ``share/jupyter/labextensions/course-kit-validate/`` and
``etc/jupyter/jupyter_server_config.d/``, where JupyterLab and Jupyter Server look. A wheel
of the kit carries them as data files (``pyproject.toml``). An editable install
(``pip install -e .``, as ``scripts/setup.sh`` and ``environment.yml`` do) does not: setuptools
writes no data files into an editable wheel (in 84.2.1 its ``editable_wheel`` asks the distribution
for ``has_data``, which does not exist, so ``install_data`` never runs), so ``scripts/setup.sh``
and ``.ci/run`` copy them with :func:`install` (``python -m course_utils install-verdict``).
``python -m course_utils doctor`` says whether both parts are enabled.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROUTE = "course-kit/validation-verdict"
MODULE = __name__  # the name Jupyter's server extension config enables
LABEXTENSION = "course-kit-validate"  # the JupyterLab extension's name (labextension/package.json)
_HERE = Path(__file__).resolve().parent
# What goes where, relative to the environment's prefix (pyproject.toml's data files say the same; a test compares).
FILES = {
    f"share/jupyter/labextensions/{LABEXTENSION}": _HERE / "labextension",
    "etc/jupyter/jupyter_server_config.d/course_utils.json": _HERE / "jupyter_server_config.d" / "course_utils.json",
}


def install(prefix: str | Path | None = None) -> list[Path]:
    """Copy both parts into the environment at ``prefix`` (default: this Python's); return what was written.

    The JupyterLab extension's folder is replaced as a whole, so a renamed ``remoteEntry`` file
    leaves no old copy behind. JupyterLab sees the change when it is started next.
    """
    prefix = Path(prefix or sys.prefix)
    written = []
    for target, source in FILES.items():
        destination = prefix / target
        if source.is_dir():
            if destination.is_symlink() or destination.is_file():
                destination.unlink()
            elif destination.exists():
                shutil.rmtree(destination)
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
        written.append(destination)
    return written


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter Server's entry point: this module is the extension."""
    return [{"module": MODULE}]


def answer(root_dir: str | None) -> dict[str, Any]:
    """The endpoint's JSON: the last validation's notebook (relative to ``root_dir``) and its verdict, if it passed."""
    from . import validation

    last = validation.last_validation()
    if not last.get("verdict"):
        return {"path": None, "verdict": None}
    path = last["path"]
    try:
        relative = os.path.relpath(path, os.path.abspath(root_dir)) if root_dir else os.pardir
    except ValueError:  # another drive (Windows)
        relative = os.pardir
    if not relative.startswith(os.pardir):
        path = relative.replace(os.sep, "/")
    return {"path": path, "verdict": last["verdict"]}


def _handler() -> type:
    """The GET handler (made on first use, so that importing this module needs no Jupyter server)."""
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import APIHandler

    class VerdictHandler(APIHandler):
        """``GET``: :func:`answer` as JSON, for a logged-in user allowed to read the server's files (else 403)."""

        auth_resource = "contents"

        @authorized  # refuses a request without a logged-in user, and one the server's authorizer does not allow
        def get(self) -> None:
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(answer(getattr(self.contents_manager, "root_dir", None))))

    return VerdictHandler


def _load_jupyter_server_extension(serverapp) -> None:
    """Register the handler under the server's base URL."""
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(".*$", [(route, _handler())])
    serverapp.log.info("course kit: Validate's verdict at %s", route)
