"""Device choice, seeding, a training loop with a progress bar, and evaluation.

On a CUDA GPU, :func:`train` and :func:`evaluate` apply the speed-ups switched in
``course_utils.speed.gpu`` (batches drawn on the GPU, no per-step synchronisation, mixed precision,
``channels_last``, fused optimiser steps, optionally ``torch.compile``); on a CPU or MPS they run the
loop shown in :func:`train` and nothing else.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
import weakref
from contextlib import nullcontext
from itertools import islice
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data as course_data
from . import modes, speed

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
    """CUDA if available, then Apple's MPS, then the CPU (or ``prefer`` if given).

    Also fits PyTorch's CPU threads to the cores a container's CPU quota allows (:func:`speed.fit_threads`).
    """
    speed.fit_threads()
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
    early; by default only in a quick run (``COURSE_MAX_BATCHES``). On a CUDA GPU the batches of a
    course loader are drawn on the GPU and the sums stay there until the end (``speed.gpu``); the
    computation is the same, in float32.
    """
    limit = modes.max_batches() if max_batches == "auto" else max_batches
    device = torch.device(device) if device is not None else _model_device(model)
    loss_fn = loss_fn or (F.mse_loss if reconstruct else F.cross_entropy)
    if _gpu_path(device):
        return _evaluate_gpu(model, loader, loss_fn, reconstruct, device, limit)
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
        speed.release_freed_memory()  # the large blocks of this evaluation (speed.keep_freed_memory)
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

    On a CUDA GPU the same steps run with the speed-ups of ``speed.gpu``
    (:class:`course_utils.speed.GpuOptions`): the model trains there, and is
    returned, with its float32 weights in their usual memory format.
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
    plan = _GpuPlan.start(model, optimizer, device) if _gpu_path(device) else None  # None on a CPU
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            epoch_start = time.perf_counter()
            sums = {"loss": 0.0, "correct": 0, "n": 0}
            if plan is not None:  # a CUDA GPU: the same steps, with the speed-ups of speed.gpu
                step = plan.epoch(model, loader, optimizer, loss_fn, reconstruct, batch_transform, epoch, epochs,
                                  step, start, history, sums, desc, progress, limit, max_seconds)
            else:
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
    finally:
        if plan is not None:
            plan.finish(model)  # the usual memory format again
        else:
            speed.release_freed_memory()  # so that the next model starts from what is in use
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


# --------------------------------------------------------------------------- CUDA GPUs

# Device types that take the GPU path of train/evaluate. Tests add "cpu" to run that path on a CPU.
GPU_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()  # model -> mode -> compiled


def _gpu_path(device: torch.device) -> bool:
    return device.type in GPU_DEVICE_TYPES


def fuse_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> bool:
    """Switch a fresh Adam, AdamW or SGD optimiser whose parameters are all on ``device`` to its fused
    update step (``speed.gpu.fused``); True if it now is fused. An optimiser that has already stepped,
    or any other kind, is left as it is."""
    groups = optimizer.param_groups
    if all(group.get("fused") for group in groups):
        return True
    if type(optimizer) not in _FUSABLE or optimizer.state:
        return False
    if any(group.get("differentiable") or "fused" not in group for group in groups):
        return False
    params = [p for group in groups for p in group["params"]]
    if not params or not all(p.device.type == device.type and p.is_floating_point() for p in params):
        return False
    for group in groups:
        group["fused"], group["foreach"] = True, False
    optimizer._step_supports_amp_scaling = True  # as the optimiser's own constructor sets it when fused
    return True


def _resolve_steps(rows: list[dict], losses: list[torch.Tensor], hits: list[torch.Tensor], reconstruct: bool,
                   history: History, sums: dict) -> None:
    """Read an epoch's losses and hits from the device in one go and book them like the CPU loop."""
    if not rows:
        return
    values = torch.stack(losses).float().tolist()
    counts = torch.stack(hits).tolist() if hits else [None] * len(rows)
    for row, value, hit in zip(rows, values, counts):
        if not math.isfinite(value):
            _check_finite(torch.tensor(value), row["epoch"], row["step"])
        n = row.pop("n")
        row["loss"] = value
        if not reconstruct:
            row["acc"] = hit / n
            sums["correct"] += hit
        sums["loss"] += value * n
        sums["n"] += n
        history.steps.append(row)


@dataclass
class _GpuPlan:
    """How :func:`train` runs on a GPU: the choices of ``speed.gpu`` for one model and optimiser."""

    device: torch.device
    options: speed.GpuOptions
    dtype: torch.dtype | None = None
    scaler: object = None
    channels_last: bool = False
    fused: bool = False
    compiled: Callable | None = None
    full_batch: int | None = None
    compiled_steps: int = 0

    @classmethod
    def start(cls, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> "_GpuPlan":
        options = speed.gpu
        plan = cls(device=device, options=options, dtype=speed.training_amp_dtype(model, device, options))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = options.cudnn_benchmark
        if plan.dtype == torch.float16:
            plan.scaler = torch.amp.GradScaler(device.type)
        if options.channels_last and speed.has_convolutions(model):
            model.to(memory_format=torch.channels_last)
            plan.channels_last = True
        if options.fused:
            plan.fused = fuse_optimizer(optimizer, device)
        if options.compile:
            compiled = _COMPILED.setdefault(model, {})
            if options.compile_mode not in compiled:
                compiled[options.compile_mode] = torch.compile(model, mode=options.compile_mode)
            plan.compiled = compiled[options.compile_mode]
        return plan

    def describe(self) -> str:
        return (f"{'float32' if self.dtype is None else str(self.dtype).replace('torch.', '')} forward passes"
                f"{' with a GradScaler' if self.scaler is not None else ''}"
                f"{', channels_last' if self.channels_last else ''}{', fused optimiser' if self.fused else ''}"
                f"{', torch.compile' if self.compiled is not None else ''}"
                f"{', batches drawn on the GPU' if self.options.resident else ''}")

    def finish(self, model: nn.Module) -> None:
        if self.channels_last:
            model.to(memory_format=torch.contiguous_format)

    def autocast(self):
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, dtype=self.dtype)

    def _compile_failed(self, model: nn.Module, exc: Exception) -> None:
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); training on without it")
        self.compiled = None
        _COMPILED.pop(model, None)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            if self.full_batch is None:
                self.full_batch = x.shape[0]
            if x.shape[0] == self.full_batch:  # the smaller last batch runs eagerly: no second compilation
                try:
                    return self.compiled(x)
                except Exception as exc:  # no Triton, no C compiler, an unsupported operation, ...
                    self._compile_failed(model, exc)
        return model(x)

    def forward_backward(self, model, x, y, loss_fn, reconstruct, optimizer):
        """Forward pass (autocast), loss and backward pass of one step; returns (output, loss)."""
        with self.autocast():
            out = self.forward(model, x)
        if self.dtype is not None and out.is_floating_point():
            out = out.float()
        loss = loss_fn(out, x if reconstruct else y)
        optimizer.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return out, loss

    def epoch(self, model, loader, optimizer, loss_fn, reconstruct, batch_transform, epoch, epochs, step, start,
              history, sums, desc, progress, limit, max_seconds) -> int:
        """One epoch of the training loop on the GPU; returns the step count."""
        device, lazy = self.device, self.options.lazy_sync
        batches = course_data.resident_batches(loader, device) if self.options.resident else None
        try:
            total = len(loader)
        except TypeError:
            total = None
        bar = tqdm(loader if batches is None else batches, total=total, desc=f"{desc} {epoch}/{epochs}",
                   leave=False, disable=not progress, file=sys.stdout, mininterval=0.5)
        rows, losses, hits = [], [], []
        for x, y in islice(bar, limit):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if batch_transform is not None:
                x = batch_transform(x)
            if self.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            first_compiled = self.compiled is not None and not self.compiled_steps
            try:
                out, loss = self.forward_backward(model, x, y, loss_fn, reconstruct, optimizer)
            except Exception as exc:  # the compiled backward pass is built at its first call
                if not first_compiled or self.compiled is None:
                    raise
                self._compile_failed(model, exc)
                out, loss = self.forward_backward(model, x, y, loss_fn, reconstruct, optimizer)
            if self.compiled is not None and x.shape[0] == self.full_batch:
                self.compiled_steps += 1
            if self.scaler is None:
                optimizer.step()
            else:
                self.scaler.step(optimizer)
                self.scaler.update()
            step += 1
            if not lazy:
                _check_finite(loss, epoch, step)
            losses.append(loss.detach())
            if not reconstruct:
                hits.append((out.detach().argmax(dim=-1) == y).sum())
            rows.append({"epoch": epoch, "step": step, "loss": None, "acc": None, "n": x.shape[0],
                         "time": time.perf_counter() - start})
            if progress and (not lazy or step % 50 == 0):
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                history.stopped_early = True
                break
        bar.close()
        _resolve_steps(rows, losses, hits, reconstruct, history, sums)
        return step


def _evaluate_gpu(model: nn.Module, loader: Iterable, loss_fn: LossFn, reconstruct: bool, device: torch.device,
                  limit: int | None) -> dict[str, float]:
    """:func:`evaluate` on a GPU: batches drawn there, sums kept there (float64) and read once."""
    batches = course_data.resident_batches(loader, device) if speed.gpu.resident else None
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    was_training = model.training
    model.eval()
    try:
        for x, y in islice(loader if batches is None else batches, limit):
            x, y = x.to(device), y.to(device)
            out = model(x)
            target = x if reconstruct else y
            n = x.shape[0]
            total += loss_fn(out, target).detach().double() * n
            if not reconstruct:
                correct += (out.argmax(dim=-1) == y).sum()
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader")
    return {"loss": total.item() / count, "acc": None if reconstruct else correct.item() / count, "n": count}
