"""course_utils.grading: the helpers hidden tests call, on the real test sets."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils import data, grading


class LabelLookup(nn.Module):
    """Knows a table of test images: right on the first ``n_right`` of them, says class 0 for the rest
    and for any image it has not seen."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, n_right: int):
        super().__init__()
        self.keys = images.flatten(1)
        self.answers = torch.where(torch.arange(len(labels)) < n_right, labels, torch.zeros_like(labels))
        self.dummy = nn.Parameter(torch.zeros(()))  # a module with parameters, like any trained model

    def forward(self, x):
        distance, index = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        known = (distance < 1e-4).float().unsqueeze(1)
        return nn.functional.one_hot(self.answers[index], 10).float() * known + 0 * self.dummy


def test_accuracy_is_recomputed_from_the_model_on_the_seeded_test_subset():
    test = data.mnist(n_train=0, n_test=200, seed=0).test
    images, labels = test.tensors
    right = 150 + int((labels[150:] == 0).sum())
    model = LabelLookup(images, labels, n_right=150)
    assert grading.test_accuracy(model, "mnist", n_test=200, batch_size=64) == pytest.approx(right / 200)
    # A different seed draws other test images, which the lookup table does not know.
    other = grading.test_accuracy(model, "mnist", n_test=200, seed=1)
    assert other < 0.3


def test_accuracy_rejects_what_is_not_a_model():
    with pytest.raises(AssertionError, match="nn.Module"):
        grading.test_accuracy(0.99, "mnist", n_test=10)


def test_reconstruction_error_is_the_summed_squared_error_per_image():
    images = data.mnist(n_train=0, n_test=50).test.tensors[0]
    assert grading.test_reconstruction_error(nn.Identity(), "mnist", n_test=50) == pytest.approx(0.0)

    class Zeros(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    expected = images.pow(2).sum().item() / 50
    assert grading.test_reconstruction_error(Zeros(), "mnist", n_test=50, batch_size=16) == pytest.approx(expected, rel=1e-5)

    class Cropped(nn.Module):
        def forward(self, x):
            return x[..., :27, :27]

    with pytest.raises(AssertionError, match="expected shape"):
        grading.test_reconstruction_error(Cropped(), "mnist", n_test=5)


def test_expectations_say_what_was_expected_and_what_was_found():
    with pytest.raises(AssertionError, match=r"logits: expected shape \(2, 3\), got \(3, 2\)"):
        grading.expect_shape(torch.zeros(3, 2), (2, 3), "logits")
    grading.expect_shape(torch.zeros(2, 3), (2, 3))
    with pytest.raises(AssertionError, match="logits"):
        grading.expect_close(torch.zeros(3), torch.ones(3), "logits")
    grading.expect_close(torch.zeros(3), torch.full((3,), 1e-7))
    with pytest.raises(AssertionError, match="0.5"):
        grading.expect_at_least(0.42, 0.5)
    grading.expect_at_least(0.5, 0.5)
    with pytest.raises(AssertionError, match="error is 15.0000; at most 14.0000"):
        grading.expect_at_most(15.0, 14.0, "error")
    grading.expect_at_most(14.0, 14.0)


def test_threshold_reads_the_mode_the_process_started_in():
    """A notebook that sets COURSE_MODE itself gets the thresholds of the mode the grader started it in."""
    import os
    import subprocess
    import sys

    code = ("import os\nfrom course_utils import grading\nos.environ['COURSE_MODE'] = 'smoke'\n"
            "print(grading.threshold(smoke=0.2, laptop=0.9, full=0.95))")
    for started, expected in (("laptop", "0.9"), ("full", "0.95"), ("smoke", "0.2")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=dict(os.environ, COURSE_MODE=started))
        assert out.stdout.strip() == expected


def test_check_accuracy_passes_or_fails_on_the_recomputed_accuracy(capsys):
    test = data.load_splits("mnist", n_train=0, n_test=300, seed=0).test
    images, labels = test.tensors
    model = LabelLookup(images, labels, n_right=240)  # right on 240, says 0 for the other 60
    expected = (240 + (labels[240:] == 0).sum().item()) / 300
    assert grading.check_accuracy(model, "mnist", at_least=expected, n_test=300, label="lookup") is None
    assert f"lookup: {expected:.4f}" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=f"lookup is {expected:.4f}; at least 0.9500"):
        grading.check_accuracy(model, "mnist", at_least=0.95, n_test=300, label="lookup")


# --------------------------------------------------------------------------- handed-in weights

HAND_IN = """
import sys, torch
from torch import nn
from course_utils import grading
torch.manual_seed(int(sys.argv[1]))
layers = [nn.Flatten(), nn.Linear(784, int(sys.argv[2])), nn.ReLU(), nn.Linear(int(sys.argv[2]), 10)]
if sys.argv[3] == "dropout":  # the same tensors under other names: the last layer is "4.", not "3."
    layers.insert(3, nn.Dropout(0.1))
model = nn.Sequential(*layers)
try:
    grading.hand_in(model, "The MLP")
except AssertionError as exc:
    print("FAILED", exc)
print("SUM", float(sum(p.sum() for p in model.parameters())))
"""


def run_hand_in(folder, seed: int, hidden: int, layout: str = "plain", **env) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("COURSE_EXPORT_DIR", "COURSE_GRADE_HANDIN")}
    out = subprocess.run([sys.executable, "-c", HAND_IN, str(seed), str(hidden), layout], cwd=folder, capture_output=True,
                         text=True, timeout=300, env=dict(clean, **env))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_hand_in_saves_a_students_weights_and_the_grader_loads_them_strictly(tmp_path):
    saved = run_hand_in(tmp_path, seed=1, hidden=32)
    path = tmp_path / grading.weights_path("The MLP")
    assert path == tmp_path / "weights" / "the-mlp.pt" and path.is_file() and "weights saved to" in saved
    # The grader's kernel builds the model with other random weights and loads the handed-in ones over them.
    loaded = run_hand_in(tmp_path, seed=2, hidden=32, COURSE_GRADE_HANDIN="1")
    assert "loaded the handed-in weights" in loaded and "FAILED" not in loaded
    assert loaded.splitlines()[-1] == saved.splitlines()[-1]  # the same parameters
    # A model of another shape does not take them.
    misfit = run_hand_in(tmp_path, seed=2, hidden=16, COURSE_GRADE_HANDIN="1")
    assert "FAILED The MLP: the handed-in weights do not fit" in misfit and "size mismatch" in misfit
    # Nor does one whose tensors have the same shapes under other names (loaded strictly, not in part).
    renamed = run_hand_in(tmp_path, seed=2, hidden=32, layout="dropout", COURSE_GRADE_HANDIN="1")
    assert "FAILED The MLP: the handed-in weights do not fit" in renamed
    assert "Missing key" in renamed and "Unexpected key" in renamed
    path.write_bytes(b"garbage")
    assert "cannot be read" in run_hand_in(tmp_path, seed=2, hidden=32, COURSE_GRADE_HANDIN="1")
    path.unlink()
    assert "no trained weights were handed in" in run_hand_in(tmp_path, seed=2, hidden=32, COURSE_GRADE_HANDIN="1")


def test_hand_in_writes_nothing_when_the_grader_re_trains(tmp_path):
    run_hand_in(tmp_path, seed=1, hidden=32, COURSE_EXPORT_DIR=str(tmp_path / "models"))
    assert not (tmp_path / "weights").exists()
