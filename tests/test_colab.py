"""The Colab bootstrap (course_utils/colab.py), offline.

In a fresh virtual environment without the repository on the path and without the kit, a lab's
bootstrap cell installs the kit from a wheel the test builds (``COURSE_KIT_WHEEL``), and the
notebook then runs in smoke mode. The labs' other packages come from the course environment
through a ``.pth`` file (on Colab they are Colab's own): only the kit is installed, as on Colab.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from course_utils import colab, validate_button

from kit import REPO

LAB = "lab1_mnist_mlp"


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "COURSE_KIT_WHEEL")}
    return {**env, **extra}


def test_the_bootstrap_does_nothing_where_the_kit_is_installed(tmp_path):
    proc = subprocess.run([sys.executable, "-c", colab.bootstrap_source()], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "course kit: already installed, nothing to do", proc.stdout


def test_the_cells_name_the_lab_and_the_version():
    nb = colab.add_cells({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Lab"}],
                          "nbformat": 4, "nbformat_minor": 5, "metadata": {}}, LAB, kit_version="9.8.7")
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code", "markdown"]
    assert colab.colab_url(LAB) in nb["cells"][0]["source"] and "Open In Colab" in nb["cells"][0]["source"]
    assert "weights/" in nb["cells"][0]["source"] and "Submit" in nb["cells"][0]["source"]  # how to hand in
    assert 'KIT_VERSION = "9.8.7"' in nb["cells"][1]["source"] and "@v9.8.7" in nb["cells"][1]["source"]
    assert "==" not in nb["cells"][1]["source"]  # nothing pinned: Colab keeps its own torch and numpy
    assert colab.has_cells(colab.add_cells(nb, LAB, kit_version="9.8.7"), LAB, kit_version="9.8.7") == []
    assert len(nb["cells"]) == 3  # refreshing replaces the cells, never adds more


@pytest.mark.slow
def test_the_bootstrap_installs_the_kit_from_a_wheel_and_the_lab_runs(tmp_path, mirror):
    # 1. A wheel of the kit, built from a copy of its sources (nothing is written into the repository).
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src / "pyproject.toml")
    for package in ("course_utils", "autograde"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "*.db", "*.csv", "submitted", "autograded", "feedback", "reports"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path / "wheels"), str(src)],
                          capture_output=True, text=True, timeout=300, env=_clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "wheels").glob("course_utils-*.whl")

    # 2. A fresh environment: no kit, no repository; the labs' packages from the course environment.
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True, timeout=300)
    python = fresh / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "coursekit-lab-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "colab"
    work.mkdir()
    env = _clean_env(COURSE_MODE="smoke", COURSE_DATA_DIR=str(mirror), COURSE_CACHE_DIR=str(tmp_path / "cache"),
                     COURSE_KIT_WHEEL=str(wheel), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
                     JUPYTER_PATH=str(fresh / "share" / "jupyter"), PATH=f"{fresh / 'bin'}{os.pathsep}{os.environ['PATH']}")
    probe = subprocess.run([str(python), "-c", "import importlib.util, torch; print(importlib.util.find_spec('course_utils'))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "None", f"the fresh environment already finds the kit:\n{probe.stdout}{probe.stderr}"

    # 3. The lab with its Colab cells, run there from top to bottom in smoke mode.
    nb = nbformat.read(REPO / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    if colab.has_cells(nb, LAB):
        colab.add_cells(nb, LAB)
    nb.cells.append(nbformat.v4.new_code_cell("import course_utils; print('KIT FROM', course_utils.__file__)"))
    nbformat.write(nb, work / f"{LAB}.ipynb")
    run = subprocess.run([str(python), "-m", "nbconvert", "--to", "notebook", "--execute", "--output", "done.ipynb",
                          "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.kernel_name=python3",
                          f"{LAB}.ipynb"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"the lab failed in the fresh environment:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    done = json.loads((work / "done.ipynb").read_text())
    text = lambda cell: "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))  # noqa: E731
    first = text(done["cells"][1])
    assert first.startswith(f"course kit {colab.version()}: installed from {wheel}") and "run mode smoke" in first, first
    assert first.count("\n") == 1, f"the bootstrap says more than one line:\n{first}"
    assert f"KIT FROM {site}" in text(done["cells"][-1]), text(done["cells"][-1])
    # 4. The wheel's data files: the Validate button's verdict for JupyterLab (course_utils/validate_button.py).
    for target in validate_button.FILES:
        assert (fresh / target).exists(), f"installing the kit's wheel did not write {fresh / target}"


LABS = sorted(p.parent.name for p in (REPO / "solutions").glob("*/*.ipynb") if p.stem == p.parent.name)


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_starts_with_the_colab_cells(lab):
    """Each lab's source and student notebook open with the Colab link and setup cells as colab.py makes them."""
    for top in ("solutions", "notebooks"):
        nb = nbformat.read(REPO / top / lab / f"{lab}.ipynb", as_version=4)
        problems = colab.has_cells(nb, lab)
        assert not problems, (f"{top}/{lab}: {'; '.join(problems)}. Fix: python -m course_utils.colab "
                              f"solutions/{lab}/{lab}.ipynb, then python -m autograde generate {lab}")
