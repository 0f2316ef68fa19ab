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
"""
from __future__ import annotations

import os

import torch
from torch import nn

NO_BF16_VAR = "COURSE_NO_BF16"  # "1": never wrap (train in float32)


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


def fast_cpu(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` wrapped in :class:`Autocast` when it trains on a CPU with native bfloat16, else ``model``.

    Pass the result to ``training.train``; keep, evaluate and grade ``model`` itself (the wrapper
    shares its parameters). ``COURSE_NO_BF16=1`` turns the wrapper off.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return Autocast(model) if bf16_forward(device) else model
