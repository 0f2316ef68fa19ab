"""course_utils.speed: the bfloat16 wrapper trains the wrapped module itself, step after step; fast_cpu keeps freed memory."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import speed

needs_bf16 = pytest.mark.skipif(not speed.cpu_bf16_supported(), reason="this CPU has no native bfloat16")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_wrapper_shares_parameters_and_returns_float32():
    model = small_cnn()
    wrapped = speed.Autocast(model)
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    out = wrapped(torch.randn(2, 3, 8, 8))
    assert out.dtype == torch.float32 and out.shape == (2, 10)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_every_step_sees_the_updated_weights():
    # One autocast region around a whole loop would reuse the first step's bfloat16 weight copies:
    # the loss of a fixed batch would then never go down.
    model = small_cnn()
    wrapped = speed.Autocast(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(wrapped(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    # The module alone, in float32, agrees with the wrapper up to bfloat16 rounding.
    with torch.no_grad():
        assert torch.allclose(model(x), wrapped(x), atol=0.1 * model(x).abs().max().item())


@needs_bf16
def test_fast_cpu_wraps_on_a_bf16_cpu_and_can_be_turned_off(monkeypatch):
    model = small_cnn()
    wrapped = speed.fast_cpu(model, "cpu")
    assert isinstance(wrapped, speed.Autocast) and wrapped.module is model
    assert speed.bf16_forward("cpu")
    monkeypatch.setenv(speed.NO_BF16_VAR, "1")
    assert speed.fast_cpu(model, "cpu") is model and not speed.bf16_forward("cpu")


def test_fast_cpu_leaves_other_devices_alone():
    model = small_cnn().to("meta")
    assert speed.fast_cpu(model) is model and not speed.bf16_forward("meta")


_PAGE_FAULTS = """
import resource, sys, torch
from course_utils import speed
kept = False
if sys.argv[1] == "keep":
    speed.fast_cpu(torch.nn.Linear(2, 2), "cpu")  # as a lab does before it trains on the CPU
    kept = speed.keep_freed_memory()  # asked before: the same answer, nothing set twice
for step in range(30):
    if step == 20:  # the heap settles within a few steps; count the last ten
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = torch.ones(16, 1024, 1024)  # one 64 MB attention map of lab 4 (batch 16, 32x32 positions)
    del maps
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory acts on glibc only")
def test_fast_cpu_keeps_freed_memory_so_large_tensors_stop_faulting_in_new_pages():
    """Each fresh 64 MB block costs 16,384 page faults (new zeroed pages); kept memory is reused instead."""
    runs = {}
    for how in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS, how], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        kept, faults = out.stdout.split()
        runs[how] = (kept == "True", int(faults))
    pages = 64 * 2**20 // 4096
    assert runs["keep"][0], "fast_cpu on a CPU should have set glibc's malloc to keep freed memory"
    assert runs["default"][1] > 5 * pages, f"without it, every 64 MB tensor faults in new pages: {runs}"
    assert runs["keep"][1] < pages, f"with it, 64 MB tensors should reuse freed memory, not fault in new pages: {runs}"


_HAND_BACK = """
import psutil, sys, torch
from torch.utils.data import DataLoader, TensorDataset
from course_utils import speed, training
rss = lambda: psutil.Process().memory_info().rss
speed.fast_cpu(torch.nn.Linear(2, 2), "cpu")
kept = rss()
# 768 MB in three 256 MB blocks from the heap: under keep_freed_memory's 1 GiB, so kept even at its top.
blocks = [torch.ones(64, 1024, 1024) for _ in range(3)]
pins = [torch.ones(1000) for _ in range(4)]  # small live blocks, perhaps above them
del blocks
held = rss()
if sys.argv[1] != "release":  # training.train hands it back when it ends, with or without evaluate's validation
    model = torch.nn.Linear(4, 2)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    training.train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
                   val_loader=loader if sys.argv[1] == "train-validate" else None)
else:
    assert speed.release_freed_memory()
print((held - kept) // 2**20, (rss() - kept) // 2**20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory acts on glibc only")
@pytest.mark.parametrize("how", ["release", "train", "train-validate"])
def test_freed_memory_goes_back_when_training_or_evaluation_ends(how):
    """What keep_freed_memory keeps, release_freed_memory hands back, also from inside the heap: otherwise
    one model's freed blocks stay with the process while the next model may not fit in them."""
    out = subprocess.run([sys.executable, "-c", _HAND_BACK, how], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    held, after = map(int, out.stdout.split())
    assert held > 700, f"the freed 768 MB should have stayed with the process first (kept: {held} MB)"
    # (training itself adds some memory of its own: about 150 MB for its first call here)
    assert after < held - 500, f"{how}: the freed 768 MB should have gone back to the system, {after} MB still held"
