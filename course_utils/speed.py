"""Faster training on a CPU without changing the model: bfloat16 autocast where the CPU has it.

Profiled on the project's 2-core CPU (lab 4's double model, one float32 training step of 32 images):
55 % of the time goes to the (HW)x(HW) matrix products (``bmm``), 28 % to the softmax and its
backward, under 10 % to the convolutions. ``torch.autocast`` in bfloat16 runs the products and the
convolutions at twice the float32 rate on CPUs with native bfloat16 instructions (AVX512-BF16 or
AMX) and halves the memory the softmax reads and writes: the step takes about half the time.
On CPUs without those instructions bfloat16 is converted in software and can be slower (not
measured here), so :func:`fast_cpu` leaves the model alone there, as it does on a GPU (the labs' full mode keeps the original protocol).

The parameters, the optimiser state and the gradients stay float32; only the forward pass computes
in bfloat16, so the trained module is the same object, with float32 weights, as without it.

:func:`fast_cpu` also asks the C library to keep freed memory for reuse (:func:`keep_freed_memory`):
every training step of lab 4 allocates and frees (N, HW, HW) attention maps of 64 MB (batch size 16),
which glibc takes from the operating system afresh each time, and the kernel then spends its time
zeroing new pages.

**On a CUDA GPU** (full mode's default) :func:`fast_cpu` does nothing; instead ``training.train``
and ``training.evaluate`` read the switches in :data:`gpu` (a :class:`GpuOptions`), one per speed-up,
each documented on its field. They act only on CUDA devices; on a CPU or MPS the loops run exactly
as before. A notebook (or ``benchmarks/gpu_full.py``) turns one off with e.g.
``speed.gpu.compile = False`` before it trains. Mixed precision follows the GPU
(:func:`amp_dtype_for`): bfloat16 from compute capability 8.0 (A100, H100, H200, L4, RTX 30xx),
float16 with a ``GradScaler`` on 7.x (V100, Colab's T4: float16 tensor cores, no bfloat16 ones),
float32 below; and only for models where it pays (:func:`amp_pays`).
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
from dataclasses import dataclass

import torch
from torch import nn

from . import modes

NO_BF16_VAR = modes.NO_BF16_VAR  # "1": never wrap (train in float32)


def fit_threads() -> int | None:
    """Give PyTorch no more threads than the cores this process may use; the new count where it changed it.

    PyTorch starts one thread per core it sees, and a container's CPU quota (a JupyterHub's ``cpu_limit``)
    hides no core: the threads take turns and every step slows down. Measured on the 2-core machine with a
    1-CPU quota, a training step of a small CNN: 60 ms with 1 thread, 73 ms with 2, 113 ms with 8. Leaves
    ``OMP_NUM_THREADS`` alone where it is set (the grader sets it).
    """
    if modes.env_threads() is not None:
        return None
    cores = modes.usable_cores()
    if torch.get_num_threads() <= cores:
        return None
    torch.set_num_threads(cores)
    return cores


def cpu_bf16_supported() -> bool:
    """True if this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


class Autocast(nn.Module):
    """Runs ``module`` under ``torch.autocast`` for each forward pass and returns float32 outputs.

    The autocast region is entered and left in every call, on purpose: autocast keeps bfloat16
    copies of the weights for as long as a region stays open, so one region around a whole
    training loop would compute every step with the weights of the first one.
    """

    def __init__(self, module: nn.Module, device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return out.float() if torch.is_tensor(out) and out.is_floating_point() else out


def bf16_forward(device: torch.device | str) -> bool:
    """True if :func:`fast_cpu` wraps models that train on ``device``: a CPU with native bfloat16,
    and ``COURSE_NO_BF16`` is not ``1``."""
    return (torch.device(device).type == "cpu" and os.environ.get(NO_BF16_VAR) != "1"
            and cpu_bf16_supported())


# glibc's mallopt() parameters (malloc.h) and what keep_freed_memory sets them to.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 1 << 30  # free memory at the top of the heap is handed back only beyond 1 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Make this process's C library (glibc) reuse freed memory instead of returning it to the system.

    glibc serves each block above 32 MB with a fresh ``mmap`` and unmaps it when freed, so a training
    loop that allocates the same large tensors every step (lab 4's attention maps: 64 MB each at
    batch size 16) makes the kernel zero new pages every step. Serving every block from the heap
    (``M_MMAP_MAX`` = 0) and trimming the heap only beyond :data:`KEEP_FREED_BYTES` removes that
    work (:func:`release_freed_memory` hands it back when a training or an evaluation ends).
    Measured on the project's 2-core CPU on 2026-12-06: lab 4's smoke run (one thread) took
    14.7 s → 1.3 s of system time and 49 s → 36 s in all (the same accuracies to the last digit), its
    peak memory 2.02 → 2.08 GB; its laptop run (two threads, tuning section off) took 8 min 54 s, where
    it took 14 min 35 s on 2026-11-30. The price: memory freed after training stays with the process
    (for its next use) instead of going back to the system.

    Once per process; True if glibc took both settings, False elsewhere (macOS, Windows, musl),
    where nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1


def release_freed_memory() -> bool:
    """Hand back to the system the freed memory that :func:`keep_freed_memory` keeps (glibc's ``malloc_trim``,
    which also returns whole free pages inside the heap); whether any went back.

    ``training.train`` and ``evaluate`` call it when they finish on a CPU, so that each model starts from the
    memory in use. Without it, what one model's large blocks left could not always serve the next model's
    (the heap fragments), and memory grew from model to model: lab 4 in smoke mode with a plausible
    attention block (no residual) held 2.9, 3.7 and 4.1 GB after its second, third and fourth model and
    went over the grader's 4 GiB limit, where the solution held 2.0 GB. With it, 0.9 GB is held between
    models for both (measured 2026-12-06 on the project's 2-core CPU). A no-op where
    :func:`keep_freed_memory` was never called or changed nothing.
    """
    if not keep_freed_memory.cache_info().currsize or not keep_freed_memory():
        return False
    return ctypes.CDLL(None).malloc_trim(0) == 1


def fast_cpu(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` wrapped in :class:`Autocast` when it trains on a CPU with native bfloat16, else ``model``.

    Pass the result to ``training.train``; keep, evaluate and grade ``model`` itself (the wrapper
    shares its parameters). ``COURSE_NO_BF16=1`` turns the wrapper off. On a CPU it also calls
    :func:`keep_freed_memory` (with or without bfloat16).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()
    return Autocast(model) if bf16_forward(device) else model


# --------------------------------------------------------------------------- CUDA GPUs

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
AMP_MIN_PARAMETERS = 1_000_000  # "auto": models without convolutions this large compute in mixed precision


@dataclass
class GpuOptions:
    """The speed-ups ``training.train`` / ``training.evaluate`` apply on a CUDA device (never elsewhere).

    None changes what a lab computes except ``amp`` (rounding, as in laptop mode's bfloat16) and
    ``compile`` (the order of floating-point operations). ``training.evaluate``, and so every graded
    score, always computes in float32 with the model as it is.
    """

    resident: bool = True
    """Course loaders (``data.make_loader``) copy their tensors to the GPU once and draw each batch
    there, in exactly the order the loader itself would (``data.resident_batches``)."""
    lazy_sync: bool = True
    """Losses and hits stay on the GPU and are read once per epoch (no ``.item()`` per step, which
    would make the CPU wait for the GPU every step); a NaN loss is then reported at the end of its
    epoch, naming its step, instead of at once."""
    amp: str = "auto"
    """Mixed-precision forward passes (``torch.autocast``) in training: ``"auto"`` picks the dtype by
    the GPU (:func:`amp_dtype_for`) for models where it pays (:func:`amp_pays`); ``"bf16"`` /
    ``"fp16"`` force one for every model (fp16 with a ``GradScaler``); ``"off"``: float32."""
    channels_last: bool = True
    """Models with ``nn.Conv2d`` train in the NHWC memory format (faster convolutions with mixed
    precision); the model is put back into the usual format when training ends."""
    fused: bool = True
    """A fresh ``Adam`` / ``AdamW`` / ``SGD`` optimiser takes the fused (one kernel) update step."""
    compile: bool = False
    """``torch.compile`` the model for its full-size training batches (the last, smaller one of an
    epoch runs eagerly, so no second compilation). Off by default: compiling costs tens of seconds
    per architecture and needs Triton and a C compiler; ``benchmarks/gpu_full.py --profile``
    measures whether it pays. If compiling fails, training goes on eagerly with a warning."""
    compile_mode: str | None = None
    """``torch.compile``'s ``mode`` when ``compile`` is on: None (the default mode), ``"reduce-overhead"``
    (CUDA graphs: the whole forward and backward pass is one launch), ``"max-autotune-no-cudagraphs"``."""
    cudnn_benchmark: bool = True
    """``torch.backends.cudnn.benchmark``: cuDNN times its convolution algorithms once per shape."""

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"GpuOptions.amp must be one of {AMP_CHOICES}, got {self.amp!r}")

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


gpu = GpuOptions()
"""The switches in force (module-wide); change a field to turn that speed-up off or on."""


def amp_dtype_for(capability: tuple[int, int] | None) -> torch.dtype | None:
    """The autocast dtype for a CUDA GPU of this compute capability: bfloat16 from 8.0 (native bfloat16
    tensor cores), float16 on 7.x (float16 tensor cores only: V100, T4), None (float32) below or for None."""
    if capability is None:
        return None
    major = capability[0]
    if major >= 8:
        return torch.bfloat16
    if major == 7:
        return torch.float16
    return None


def amp_pays(model: nn.Module) -> bool:
    """Whether ``amp="auto"`` uses mixed precision for ``model``: it has a convolution, or at least
    :data:`AMP_MIN_PARAMETERS` parameters. Smaller models (lab 1's, lab 3's) are limited by kernel
    launches, not arithmetic, and lab 1 compares ``training.train`` with the student's float32 loop."""
    if any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)) for m in model.modules()):
        return True
    return sum(p.numel() for p in model.parameters()) >= AMP_MIN_PARAMETERS


def cuda_capability(device: torch.device | str) -> tuple[int, int] | None:
    """Compute capability of a CUDA ``device``; None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))


def training_amp_dtype(model: nn.Module, device: torch.device | str,
                       options: GpuOptions | None = None,
                       capability: tuple[int, int] | None | str = "device") -> torch.dtype | None:
    """The dtype ``training.train`` autocasts ``model``'s forward passes to on ``device`` (None: float32).

    Always None off CUDA. ``capability`` overrides the device's (for tests)."""
    options = options or gpu
    device = torch.device(device)
    if device.type != "cuda" or options.amp == "off":
        return None
    if options.amp == "bf16":
        return torch.bfloat16
    if options.amp == "fp16":
        return torch.float16
    cap = cuda_capability(device) if capability == "device" else capability
    return amp_dtype_for(cap) if amp_pays(model) else None


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` contains a 2-D convolution (``channels_last`` then applies)."""
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def describe(device: torch.device | str) -> str:
    """One line for a lab's setup cell: how ``training.train`` computes on ``device``.

    On a CPU the line labs 4 and 5 print today (bfloat16 forward passes where :func:`fast_cpu`
    wraps, else float32); on a CUDA GPU the dtype :data:`gpu` and the GPU's compute capability give
    and the other switches in force.
    """
    device = torch.device(device)
    if device.type == "cpu":
        if bf16_forward(device):
            return "forward passes in bfloat16 (this CPU has it natively), weights in float32"
        return "float32"
    if device.type != "cuda":
        return "float32"
    options = gpu
    cap = cuda_capability(device)
    name = {torch.bfloat16: "bfloat16", torch.float16: "float16 (with a GradScaler)", None: "float32"}
    if options.amp == "auto":
        dtype = amp_dtype_for(cap)
        precision = (f"forward passes in {name[dtype]} for models with convolutions or at least "
                     f"{AMP_MIN_PARAMETERS:,} parameters, float32 otherwise" if dtype is not None else "float32")
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[options.amp]
        precision = f"forward passes in {name[dtype]}" if dtype is not None else "float32"
    extras = [label for on, label in ((options.resident, "batches drawn on the GPU"),
                                      (options.channels_last, "channels_last convolutions"),
                                      (options.fused, "fused optimiser steps"),
                                      (options.compile, f"torch.compile ({options.compile_mode or 'default'})"))
              if on]
    where = f"CUDA GPU, compute capability {cap[0]}.{cap[1]}" if cap else "CUDA GPU"
    weights = ", weights in float32" if dtype is not None else ""
    return f"{precision}{weights} ({where}; {', '.join(extras) or 'no other speed-ups'}; speed.gpu)"
