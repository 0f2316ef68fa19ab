"""Every lab one click from Google Colab: the "Open in Colab" link and the first code cell, kept in one place.

Each lab starts with two cells made here (:func:`add_cells`, applied to ``solutions/`` by
``python -m course_utils.colab solutions/*/*.ipynb``; ``python -m autograde generate`` carries
them into ``notebooks/``):

- a markdown cell with the "Open in Colab" badge (:func:`colab_url`) and how to hand in from
  Colab (:data:`HAND_IN`);
- the bootstrap code cell (:func:`bootstrap_source`). Where ``course_utils`` is importable (the
  course environment, the grader's sandbox) it does nothing. Elsewhere (Colab) it installs the
  kit at the notebook's version, from the wheel named by ``COURSE_KIT_WHEEL`` (a path or URL)
  or from the repository at the tag ``v<version>``, without its dependencies, then only those
  of the labs' packages that are missing, unpinned: Colab's own torch and numpy stay as they
  are (pinning them breaks first cells when Colab moves on). Datasets download on first use
  (no ``COURSE_DATA_DIR`` there), and the run mode is chosen as anywhere else (``full`` on a
  GPU). It says what it did in one line.

The cell runs before ``course_utils`` exists, so its code uses the standard library only.
"""
from __future__ import annotations

import sys
from pathlib import Path

# The course's public repository (the Colab links and the bootstrap's install source): change it here only.
REPOSITORY = "https://github.com/deep-learning-labs/course-kit"
BRANCH = "main"
WHEEL_VAR = "COURSE_KIT_WHEEL"  # a wheel's path or URL to install instead of the repository's tag
PACKAGE = "course-utils"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_ID = "colab_link"
BOOTSTRAP_ID = "colab_setup"
# What the labs import, as (module, package to install when it is missing); no versions on purpose.
LAB_PACKAGES = (("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"), ("pandas", "pandas"),
                ("matplotlib", "matplotlib"), ("seaborn", "seaborn"), ("sklearn", "scikit-learn"),
                ("scipy", "scipy"), ("tqdm", "tqdm"))

HAND_IN = (
    "**Handing in from Colab.** Run the notebook to the end in the mode your instructor grades in, then "
    "download it (*File > Download > Download .ipynb*) and its `weights/` folder (run `!zip -r weights.zip weights` "
    "in a cell, then download `weights.zip` from the *Files* panel on the left; Colab forgets both when the "
    "session ends). Hand in the notebook and the unzipped `weights/` folder side by side, as your instructor "
    "asks: on the course's JupyterHub, upload both into the lab's folder (the one *Fetch* made) and press "
    "*Submit* in the *Assignment List*; anywhere else, through the course's upload (keep the file name `<lab>.ipynb`)."
)


def version() -> str:
    """The kit's version: the installed distribution's, else pyproject.toml's (a checkout that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        for line in pyproject.read_text().splitlines():
            if line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
        raise


def colab_url(lab: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The address that opens ``notebooks/<lab>/<lab>.ipynb`` of the repository in Colab."""
    path = repository.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{lab}/{lab}.ipynb"


def badge(lab: str) -> str:
    """The "Open in Colab" badge as markdown."""
    return f"[![Open In Colab]({BADGE})]({colab_url(lab)})"


def link_source(lab: str) -> str:
    return (f"{badge(lab)}\n\n"
            f"**On Colab** (a free GPU, where `full` mode runs), run the next cell first: it installs the course kit "
            f"and says so in one line. Anywhere the kit is installed it does nothing.\n\n{HAND_IN}")


def bootstrap_source(kit_version: str | None = None, repository: str = REPOSITORY) -> str:
    """The first code cell: install the kit where it is missing (Colab), else do nothing; one line of output."""
    kit_version = kit_version or version()
    packages = ", ".join(f"({m!r}, {p!r})" for m, p in LAB_PACKAGES)
    return f'''# Colab setup: installs the course kit where it is missing; does nothing where it is installed.
import importlib, importlib.util, os, subprocess, sys
KIT_VERSION = "{kit_version}"
if importlib.util.find_spec("course_utils") is not None:
    print("course kit: already installed, nothing to do")
else:
    source = os.environ.get("{WHEEL_VAR}") or "{PACKAGE} @ git+{repository}@v{kit_version}"
    missing = [pkg for mod, pkg in ({packages}) if importlib.util.find_spec(mod) is None]
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore"]
    subprocess.run(pip + ["--no-deps", source], check=True)  # the kit alone: Colab keeps its torch and numpy
    if missing:
        subprocess.run(pip + missing, check=True)
    importlib.invalidate_caches()
    from course_utils import modes
    print(f"course kit {{KIT_VERSION}}: installed from {{source}}" + (f" with {{', '.join(missing)}}" if missing else "")
          + f"; datasets download on first use; run mode {{modes.current_mode()}} ({{modes.mode_source()}})")'''


def _meta(grade_id: str) -> dict:
    return {"nbgrader": {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
                         "solution": False, "task": False}}


def add_cells(nb: dict, lab: str, kit_version: str | None = None) -> dict:
    """Put (or refresh) the Colab link cell and the bootstrap cell at the top of a notebook (nbformat 4 JSON)."""
    cells = [c for c in nb["cells"]
             if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in (BADGE_ID, BOOTSTRAP_ID)]
    link = {"cell_type": "markdown", "metadata": _meta(BADGE_ID), "source": link_source(lab)}
    code = {"cell_type": "code", "execution_count": None, "metadata": _meta(BOOTSTRAP_ID), "outputs": [],
            "source": bootstrap_source(kit_version)}
    if nb.get("nbformat_minor", 0) >= 5:
        link["id"], code["id"] = "colab-link", "colab-setup"
    nb["cells"] = [_node(link), _node(code), *cells]
    return nb


def _node(cell: dict):
    """The cell as nbformat's NotebookNode when nbformat is there (nbformat.write needs one), else as it is."""
    try:
        from nbformat import from_dict
    except ImportError:
        return cell
    return from_dict(cell)


def has_cells(nb: dict, lab: str, kit_version: str | None = None) -> list[str]:
    """What is missing or out of date in a notebook's Colab cells (empty: both are there, first, as made here)."""
    problems = []
    cells = nb["cells"][:2]
    ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in cells]
    if ids != [BADGE_ID, BOOTSTRAP_ID]:
        return [f"the first two cells are not the Colab link and setup cells (grade_ids {ids})"]
    source = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]  # noqa: E731
    if source(cells[0]) != link_source(lab):
        problems.append("the Colab link cell is not what course_utils.colab makes (link or hand-in text changed)")
    if source(cells[1]) != bootstrap_source(kit_version):
        problems.append("the Colab setup cell is not what course_utils.colab makes (another kit version?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m course_utils.colab NOTEBOOK ...``: add or refresh the Colab cells of source notebooks."""
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__.split("\n")[0] + "\nusage: python -m course_utils.colab solutions/<lab>/<lab>.ipynb ...")
        return 2
    import nbformat

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        add_cells(nb, path.stem)
        nbformat.write(nb, path)
        print(f"{path}: Colab link and setup cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
