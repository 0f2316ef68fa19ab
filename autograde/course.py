"""A course folder as nbgrader sees it, its settings, and nbgrader's command line."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG_NAME = "nbgrader_config.py"
ID_CHAR = re.compile(r"[A-Za-z0-9_.@-]")  # a character a student id may hold (it is a folder's name)
STUDENT_ID = re.compile(rf"^[A-Za-z0-9]{ID_CHAR.pattern}*$")
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")
NBGRADER_FOLDERS = ("source", "release", "submitted", "autograded", "feedback")


class GradingError(RuntimeError):
    """Something the instructor must fix before this step can run; the message says what."""


@dataclass
class Course:
    """A course folder: ``solutions/``, ``notebooks/`` and ``autograde/`` with the nbgrader config."""

    root: Path
    _settings: dict | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not (self.root / "autograde" / CONFIG_NAME).is_file():
            raise GradingError(f"{self.root} is not a course: autograde/{CONFIG_NAME} is missing")

    @property
    def config_dir(self) -> Path:
        return self.root / "autograde"

    def folder(self, name: str) -> Path:
        """One of nbgrader's folders as configured (source, release, submitted, autograded, feedback)."""
        return self.root / self.settings()[f"{name}_directory"]

    def db_path(self) -> Path:
        url = self.settings()["db_url"]
        if not url.startswith("sqlite:///"):
            raise GradingError(f"autograde needs an SQLite gradebook, the config names {url}")
        return Path(url[len("sqlite:///"):].split("?")[0])

    def settings(self) -> dict:
        """The course id, gradebook and folders named in nbgrader_config.py (read once)."""
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
            raise GradingError(f"unknown lab(s) {', '.join(unknown)}; labs in {self.folder('source')}: "
                               f"{', '.join(known) or 'none'}")
        return list(labs) if labs else known


def read_settings(config_dir: Path) -> dict:
    """Load nbgrader_config.py with traitlets and return the course id, gradebook and folders it names."""
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader(CONFIG_NAME, path=str(config_dir)).load_config()
    cd = cfg.CourseDirectory
    return {
        "course_id": cd.course_id,
        "db_url": cd.db_url,
        **{f"{name}_directory": cd[f"{name}_directory"] for name in NBGRADER_FOLDERS},
    }


def tool_env(**extra: str) -> dict:
    """os.environ plus this interpreter's bin/ on PATH: nbgrader runs ``alembic`` by name."""
    env = dict(os.environ, **extra)
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def nbgrader(course: Course, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course's autograde/ folder (where its config lives), capturing its output."""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course.config_dir,
                          env=tool_env(), text=True, capture_output=True)


def checked(proc: subprocess.CompletedProcess, what: str) -> None:
    """Raise :class:`GradingError` with the end of the output when an nbgrader command failed."""
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
        raise GradingError(f"{what} failed (exit {proc.returncode}):\n{tail}")
