"""Device choice, seeding, a training loop with a progress bar, and evaluation."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from itertools import islice
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import modes

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """What happened during :func:`train`.

    ``steps`` has one dict per optimisation step (epoch, step, loss, acc,
    time); ``epochs`` one dict per epoch (train_loss, train_acc, val_loss,
    val_acc, seconds, and lr: the first parameter group's learning rate
    during that epoch). ``acc`` is None for reconstruction training.
    """

    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    stopped_early: bool = False

    def series(self, key: str, per: str = "step") -> list[float]:
        """One column, e.g. ``history.series('loss')`` or ``series('val_acc', per='epoch')``."""
        rows = self.steps if per == "step" else self.epochs
        return [row[key] for row in rows if row.get(key) is not None]

    @property
    def seconds(self) -> float:
        return sum(row["seconds"] for row in self.epochs)


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU (or ``prefer`` if given)."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> float:
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"the loss became {value} at epoch {epoch}, step {step}. Lower the learning rate, "
            f"check that the model's output has no log(0) or division by zero, and that the "
            f"inputs are normalised."
        )
    return value


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    loss_fn: LossFn | None = None,
    reconstruct: bool = False,
    device: torch.device | str | None = None,
    max_batches: int | None | str = "auto",
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode and without gradients.

    For classifiers ``acc`` is the fraction of correct argmax predictions; with
    ``reconstruct=True`` the target is the input itself and ``acc`` is None.
    The model's train/eval mode is restored afterwards. ``max_batches`` stops
    early; by default only in a quick run (``COURSE_MAX_BATCHES``).
    """
    limit = modes.max_batches() if max_batches == "auto" else max_batches
    device = torch.device(device) if device is not None else _model_device(model)
    loss_fn = loss_fn or (F.mse_loss if reconstruct else F.cross_entropy)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        for x, y in islice(loader, limit):
            x, y = x.to(device), y.to(device)
            out = model(x)
            target = x if reconstruct else y
            n = x.shape[0]
            total_loss += loss_fn(out, target).item() * n
            if not reconstruct:
                correct += (out.argmax(dim=-1) == y).sum().item()
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader")
    return {"loss": total_loss / count, "acc": None if reconstruct else correct / count, "n": count}


def train(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 1,
    loss_fn: LossFn | None = None,
    reconstruct: bool = False,
    val_loader: Iterable | None = None,
    scheduler=None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``epochs`` passes over ``loader`` and return its :class:`History`.

    - ``loss_fn(output, target)``: cross-entropy by default; with
      ``reconstruct=True`` the target is the input (autoencoders) and the
      default loss is the mean squared error.
    - ``val_loader``: evaluated after every epoch (val_loss, val_acc).
    - ``scheduler``: stepped once per epoch.
    - ``batch_transform``: applied to each input batch on the device before
      the forward pass (e.g. data augmentation); not applied to validation.
    - ``max_seconds``: stop after the step that crosses this wall-clock budget.
    - The model is moved to ``device`` (default: where its parameters are).
    - In a quick run (``COURSE_MAX_BATCHES=N``, set by the grader when it scores
      handed-in weights) every epoch and validation stops after N batches.

    A progress bar shows the running loss; one summary line per epoch is
    printed so plain logs stay readable. Raises :class:`TrainingDiverged`
    when the loss becomes NaN or infinite.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    loss_fn = loss_fn or (F.mse_loss if reconstruct else F.cross_entropy)
    history = History()
    start = time.perf_counter()
    step = 0
    limit = modes.max_batches()
    if limit is not None and progress:
        print(f"quick run ({modes.BATCHES_VAR}={limit}): each epoch stops after {limit} batches", flush=True)
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        sums = {"loss": 0.0, "correct": 0, "n": 0}
        bar = tqdm(loader, desc=f"{desc} {epoch}/{epochs}", leave=False, disable=not progress,
                   file=sys.stdout, mininterval=0.5)
        for x, y in islice(bar, limit):
            x, y = x.to(device), y.to(device)
            if batch_transform is not None:
                x = batch_transform(x)
            out = model(x)
            loss = loss_fn(out, x if reconstruct else y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = _check_finite(loss, epoch, step)
            n = x.shape[0]
            acc = None
            if not reconstruct:
                hits = (out.detach().argmax(dim=-1) == y).sum().item()
                sums["correct"] += hits
                acc = hits / n
            sums["loss"] += value * n
            sums["n"] += n
            history.steps.append({"epoch": epoch, "step": step, "loss": value, "acc": acc,
                                  "time": time.perf_counter() - start})
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                history.stopped_early = True
                break
        bar.close()
        if sums["n"] == 0:
            raise ValueError("train() got an empty loader")
        row = {"epoch": epoch, "train_loss": sums["loss"] / sums["n"],
               "train_acc": None if reconstruct else sums["correct"] / sums["n"],
               "lr": optimizer.param_groups[0]["lr"]}
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn=loss_fn, reconstruct=reconstruct, device=device)
            row.update(val_loss=val["loss"], val_acc=val["acc"])
        if scheduler is not None:
            scheduler.step()
        row["seconds"] = time.perf_counter() - epoch_start
        history.epochs.append(row)
        if progress:
            print(_summary(row, epochs), flush=True)
        if history.stopped_early:
            if progress:
                print(f"stopped after {max_seconds:.0f} s (time budget)", flush=True)
            break
    return history


def _summary(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if row.get("train_acc") is not None:
        parts.append(f"acc {row['train_acc']:.1%}")
    if row.get("val_loss") is not None:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    if row.get("val_acc") is not None:
        parts.append(f"val_acc {row['val_acc']:.1%}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)
