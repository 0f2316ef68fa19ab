"""benchmarks/bench_labs.py: reads every graded score a notebook prints, and knows each one's original figure."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

from autograde import scorer

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_labs", ROOT / "benchmarks" / "bench_labs.py")
bench_labs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_labs)


@pytest.mark.parametrize("lab", bench_labs.labs())
def test_every_graded_score_has_an_original_figure(lab):
    source = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    labels = {spec.label for spec in scorer.specs(source, "laptop")}
    assert labels == set(bench_labs.ORIGINAL.get(lab, {})), \
        f"benchmarks/bench_labs.py ORIGINAL[{lab!r}] should name exactly the graded labels {sorted(labels)}"


def test_printed_scores_reads_what_the_checks_print():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=(
        "test accuracy of trained['early']: weights saved to weights/x.pt (1.45 MB, laptop mode)\n"
        "test accuracy of trained['early']: 0.5080 (at least 0.4 needed)\n"
        "autoencoder test reconstruction error: 7.0312 (at most 14 allowed)\n"))]
    nb.cells.append(cell)
    found = bench_labs.printed_scores(nb, ["test accuracy of trained['early']", "autoencoder test reconstruction error",
                                           "MLP test accuracy"])
    assert found == {"test accuracy of trained['early']": 0.508, "autoencoder test reconstruction error": 7.0312}


@pytest.mark.parametrize("lab", bench_labs.labs())
def test_with_seed_changes_only_the_setup_cells_seed(lab):
    source = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    before = [cell.source for cell in source.cells]
    seeded = bench_labs.with_seed(nbformat.from_dict(source), 7)
    changed = [i for i, cell in enumerate(seeded.cells) if cell.source != before[i]]
    assert len(changed) == 1
    assert "\nSEED = 7\n" in f"\n{seeded.cells[changed[0]].source}\n"
    assert seeded.cells[changed[0]].source.replace("SEED = 7", "") == \
        bench_labs.SEED_LINE.sub("", before[changed[0]], count=1)


def test_with_seed_refuses_a_notebook_without_one_seed_line():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("SEED_OFFSET = 3\nx = 1")])
    with pytest.raises(ValueError, match="found 0"):
        bench_labs.with_seed(nb, 1)


def test_execute_reads_the_kernels_peak_memory(tmp_path):
    """The peak is the kernel's own high-water mark: a cell that held 400 MB shows, though it freed them."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("block = b'x' * 400_000_000\ndel block"),
                                         nbformat.v4.new_code_cell("import os\nprint(os.environ['COURSE_MODE'])")])
    seconds, peak = bench_labs.execute(nb, tmp_path, {"COURSE_MODE": "smoke"}, timeout=60)
    assert nb.cells[1].outputs[0]["text"].strip() == "smoke"  # the notebook ran with the mode given
    assert peak is not None and 400e6 < peak < 1.5e9, peak
    assert seconds > 0
