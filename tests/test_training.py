"""course_utils.training on real MNIST: learning, evaluation, history, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import data, training


@pytest.fixture(scope="module")
def small_mnist():
    return data.mnist(n_train=2000, n_val=500, n_test=500, seed=0)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def test_loss_goes_down_and_history_is_complete(small_mnist):
    training.seed_everything(0)
    model = mlp()
    train, val, test = data.make_loaders(small_mnist, 64)
    before = training.evaluate(model, test)
    history = training.train(model, train, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                             epochs=2, val_loader=val, progress=False)
    after = training.evaluate(model, test)
    assert after["loss"] < before["loss"] / 2
    assert after["acc"] > 0.8 > before["acc"]
    assert len(history.steps) == 2 * len(train)
    assert [row["epoch"] for row in history.epochs] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(history.epochs[0])
    # An epoch's figures are its steps' figures, weighted by their mini-batch sizes (the last batch is smaller).
    sizes = [len(y) for _, y in train]
    assert sizes[-1] < sizes[0]
    for row in history.epochs:
        steps = [s for s in history.steps if s["epoch"] == row["epoch"]]
        for key, step_key in (("train_loss", "loss"), ("train_acc", "acc")):
            weighted = sum(s[step_key] * n for s, n in zip(steps, sizes, strict=True)) / sum(sizes)
            assert row[key] == pytest.approx(weighted, rel=1e-6), key
    assert history.epochs[1]["val_acc"] > 0.8
    assert len(history.series("loss")) == len(history.steps)
    assert history.series("val_acc", per="epoch") == [r["val_acc"] for r in history.epochs]
    times = history.series("time")
    assert times == sorted(times) and history.seconds > 0


def test_runs_repeat_exactly_with_the_same_seed(small_mnist):
    losses = []
    for _ in range(2):
        training.seed_everything(42)
        model = mlp()
        loader = data.make_loader(small_mnist.train, 100, shuffle=True, seed=42)
        h = training.train(model, loader, torch.optim.Adam(model.parameters(), 1e-3), progress=False)
        losses.append(h.series("loss"))
    assert losses[0] == losses[1]


class Constant(nn.Module):
    """Always predicts the same logits, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_evaluate_on_a_known_model(small_mnist):
    logits = [0.0] * 10
    logits[3] = 2.0
    model = Constant(logits)
    result = training.evaluate(model, data.make_loader(small_mnist.test, 64))
    labels = small_mnist.test.tensors[1]
    assert result["acc"] == pytest.approx((labels == 3).float().mean().item())
    log_p = torch.log_softmax(torch.tensor(logits), 0)
    assert result["loss"] == pytest.approx(-log_p[labels].mean().item(), rel=1e-5)
    assert result["n"] == len(labels)


def test_evaluate_uses_eval_mode_and_restores_it(small_mnist):
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(784, 10))
    loader = data.make_loader(small_mnist.test, 500)
    first, second = training.evaluate(model, loader), training.evaluate(model, loader)
    assert first["loss"] == second["loss"]  # dropout off: deterministic
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    training.evaluate(model, loader)
    assert not model.training  # put back in the mode it was in, not always in training mode


@pytest.mark.parametrize("factor", [math.nan, math.inf])
def test_a_nan_or_infinite_loss_stops_training_with_advice(small_mnist, factor):
    model = mlp()
    loader = data.make_loader(small_mnist.train, 64)
    with pytest.raises(training.TrainingDiverged, match="learning rate") as stopped:
        training.train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1),
                       loss_fn=lambda out, y: F.cross_entropy(out, y) * factor, progress=False)
    assert f"the loss became {factor} at epoch 1, step 1" in str(stopped.value)  # at once, before any update


def test_autoencoder_training_reconstructs(small_mnist):
    training.seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 784), nn.Sigmoid(),
                          nn.Unflatten(1, (1, 28, 28)))
    loader = data.make_loader(small_mnist.train, 64, shuffle=True)
    test = data.make_loader(small_mnist.test, 250)
    before = training.evaluate(model, test, reconstruct=True)["loss"]
    history = training.train(model, loader, torch.optim.Adam(model.parameters(), 3e-3), epochs=3,
                             reconstruct=True, progress=False)
    after = training.evaluate(model, test, reconstruct=True)
    assert after["acc"] is None and after["loss"] < before * 0.5
    assert history.series("acc") == []


def test_time_budget_and_scheduler(small_mnist):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = data.make_loader(small_mnist.train, 10)
    history = training.train(model, loader, opt, epochs=5, scheduler=sched, max_seconds=0.0, progress=False)
    assert history.stopped_early and len(history.steps) == 1 and len(history.epochs) == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert history.epochs[0]["lr"] == pytest.approx(0.1)  # the rate the epoch trained with


def test_history_records_the_learning_rate_of_each_epoch(small_mnist):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    loader = data.make_loader(small_mnist.train, 500)
    history = training.train(model, loader, opt, epochs=3, scheduler=sched, progress=False)
    assert history.series("lr", per="epoch") == pytest.approx([0.1, 0.1, 0.01])


def test_batch_transform_is_applied_to_training_inputs(small_mnist):
    seen = []
    model = mlp()
    loader = data.make_loader(small_mnist.train, 500)

    def zero_inputs(x):
        seen.append(x.shape[0])
        return torch.zeros_like(x)

    training.train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), batch_transform=zero_inputs,
                   progress=False)
    assert seen == [500] * 4


def test_devices_and_parameter_counts(monkeypatch):
    assert training.get_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training.get_device().type == "cuda"
    assert training.count_parameters(nn.Linear(784, 10)) == 7850
    frozen = nn.Linear(3, 2)
    frozen.bias.requires_grad_(False)
    assert training.count_parameters(frozen) == 6
    assert training.count_parameters(frozen, trainable_only=False) == 8


def test_quick_runs_stop_each_epoch_and_evaluation_after_a_few_batches(small_mnist):
    import os
    import subprocess
    import sys

    loader = data.make_loader(small_mnist.train, 100)
    assert training.evaluate(mlp(), loader, max_batches=3)["n"] == 300
    assert training.evaluate(mlp(), loader)["n"] == 2000  # no limit unless the run was started with one
    code = ("from torch import nn, optim\nfrom course_utils import data, training\n"
            "train = data.mnist(n_train=1000, n_val=200, n_test=0, seed=0)\n"
            "model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
            "h = training.train(model, data.make_loader(train.train, 50), optim.SGD(model.parameters(), lr=0.1),\n"
            "                   epochs=3, val_loader=data.make_loader(train.val, 50), progress=False)\n"
            "print(len(h.steps), len(h.epochs), training.evaluate(model, data.make_loader(train.val, 50))['n'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, COURSE_MAX_BATCHES="2"))
    assert out.stdout.split() == ["6", "3", "100"], out.stdout + out.stderr
