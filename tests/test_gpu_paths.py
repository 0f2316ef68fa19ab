"""The CUDA speed-ups of course_utils (speed.gpu), proved on a CPU.

No GPU is needed: the dtype choice is a function of the compute capability; the GPU path of
``training.train`` / ``evaluate`` runs on a CPU when a test adds "cpu" to ``training.GPU_DEVICE_TYPES``,
and must then give what the CPU loop gives. Without that, a CPU never takes it (laptop mode unchanged).
"""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_utils import data, speed, training


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))


def images(n: int = 100, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture
def gpu_path_on_cpu(monkeypatch):
    """train/evaluate take their GPU path on this CPU, with fresh default switches."""
    monkeypatch.setattr(training, "GPU_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(speed, "gpu", speed.GpuOptions())
    return speed.gpu


# --------------------------------------------------------------------------- choosing the dtype

@pytest.mark.parametrize("capability, dtype", [
    ((9, 0), torch.bfloat16),   # H100, H200
    ((8, 0), torch.bfloat16),   # A100
    ((8, 9), torch.bfloat16),   # L4
    ((7, 5), torch.float16),    # T4 (Colab): float16 tensor cores, no bfloat16 ones
    ((7, 0), torch.float16),    # V100
    ((6, 0), None),             # P100: float32
    (None, None),
])
def test_amp_dtype_follows_the_compute_capability(capability, dtype):
    assert speed.amp_dtype_for(capability) == dtype


def test_auto_amp_only_where_it_pays_and_never_off_cuda():
    big = nn.Linear(1000, 1000)  # 1,001,000 parameters
    assert speed.amp_pays(conv_model()) and speed.amp_pays(big) and not speed.amp_pays(mlp())
    for model in (conv_model(), big, mlp()):
        assert speed.training_amp_dtype(model, "cpu") is None
        assert speed.training_amp_dtype(model, "meta") is None
    t4, h200 = (7, 5), (9, 0)
    assert speed.training_amp_dtype(conv_model(), "cuda", capability=t4) == torch.float16
    assert speed.training_amp_dtype(big, "cuda", capability=h200) == torch.bfloat16
    assert speed.training_amp_dtype(mlp(), "cuda", capability=h200) is None  # lab 1's and lab 3's models
    assert speed.training_amp_dtype(conv_model(), "cuda", speed.GpuOptions(amp="off"), capability=h200) is None
    assert speed.training_amp_dtype(mlp(), "cuda", speed.GpuOptions(amp="bf16"), capability=(7, 5)) == torch.bfloat16
    assert speed.training_amp_dtype(mlp(), "cuda", speed.GpuOptions(amp="fp16"), capability=h200) == torch.float16
    with pytest.raises(ValueError, match="amp"):
        speed.GpuOptions(amp="half")


def test_describe_says_how_training_computes(monkeypatch):
    cpu = speed.describe("cpu")
    assert cpu == ("forward passes in bfloat16 (this CPU has it natively), weights in float32"
                   if speed.bf16_forward("cpu") else "float32")
    monkeypatch.setattr(speed, "cuda_capability", lambda device: (7, 5))
    t4 = speed.describe("cuda")
    assert t4.startswith("forward passes in float16 (with a GradScaler) for models with convolutions")
    assert "compute capability 7.5" in t4 and "fused optimiser steps" in t4 and "torch.compile" not in t4
    monkeypatch.setattr(speed, "gpu", speed.GpuOptions(amp="off", compile=True, compile_mode="reduce-overhead"))
    assert speed.describe("cuda").startswith("float32 (CUDA GPU") and "reduce-overhead" in speed.describe("cuda")


# --------------------------------------------------------------------------- batches drawn on the device

@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (True, True), (False, False), (False, True)])
def test_resident_batches_are_the_loaders_own_batches(shuffle, drop_last):
    ds = images(103)
    plain = data.make_loader(ds, 16, shuffle=shuffle, seed=3, drop_last=drop_last)
    resident = data.make_loader(ds, 16, shuffle=shuffle, seed=3, drop_last=drop_last)
    for _ in range(3):  # three epochs: the generator must advance exactly as the loader's own iteration does
        expected = list(plain)
        found = list(data.resident_batches(resident, "cpu"))
        assert len(found) == len(expected) == len(plain)
        for (x1, y1), (x2, y2) in zip(expected, found):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resident_batches_stay_on_the_device_and_are_copied_there_once(monkeypatch):
    ds = images(40)
    loader = data.make_loader(ds, 16, shuffle=True, seed=0)
    copies = []
    real = data.resident_tensors
    monkeypatch.setattr(data, "resident_tensors", lambda d, device: copies.append(real(d, device)) or copies[-1])
    for _ in range(2):  # two epochs
        batches = list(data.resident_batches(loader, "meta"))  # "meta": a device other than the CPU
        assert [tuple(x.shape) for x, _ in batches] == [(16, 3, 8, 8), (16, 3, 8, 8), (8, 3, 8, 8)]
        assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in batches)
    assert len(copies) == 2 and copies[0] is copies[1]  # the second epoch reuses the first one's copy


def test_resident_batches_only_for_plain_course_loaders():
    ds = images(10)
    assert data.resident_batches([(ds.tensors[0], ds.tensors[1])], "cpu") is None
    assert data.resident_batches(DataLoader(ds, batch_size=4), "cpu") is None  # samples one by one
    assert data.resident_batches(DataLoader(list(zip(*ds.tensors)), batch_size=None), "cpu") is None
    assert data.resident_batches(data.make_loader(ds, 4), "cpu") is not None


def test_resident_tensors_are_copied_once_and_again_after_a_change():
    ds = images(10)
    device = torch.device("meta")  # a device other than the tensors' own: a real copy
    first = data.resident_tensors(ds, device)
    assert all(t.device.type == "meta" for t in first)
    assert data.resident_tensors(ds, device) is first
    ds.tensors[0].mul_(2)  # an in-place change: the copy is stale
    assert data.resident_tensors(ds, device) is not first


# --------------------------------------------------------------------------- the CPU loop is untouched

def test_a_cpu_never_takes_the_gpu_path(monkeypatch):
    calls = []
    monkeypatch.setattr(training._GpuPlan, "start", classmethod(lambda cls, *a: calls.append(a)))
    monkeypatch.setattr(training, "_evaluate_gpu", lambda *a: calls.append(a))
    model = mlp()
    loader = data.make_loader(images(), 20, shuffle=True)
    training.train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    training.evaluate(model, loader)
    assert calls == [] and training.GPU_DEVICE_TYPES == ("cuda",)


def test_train_shows_the_five_calls_once_each():
    """Lab 1 prints the lines of training.train that make the five calls of the student's loop."""
    source = inspect.getsource(training.train)
    for call in ("out = model(x)", "loss = loss_fn(", "zero_grad(", ".backward()", "optimizer.step()"):
        assert sum(call in line for line in source.splitlines()) == 1, call


# --------------------------------------------------------------------------- the GPU path, run on a CPU

def run(model, optimizer_cls=torch.optim.SGD, epochs=2, **kwargs):
    loader = data.make_loader(images(), 16, shuffle=True, seed=1)
    val = data.make_loader(images(40, seed=9), 32)
    optimizer = optimizer_cls(model.parameters(), lr=0.05)
    history = training.train(model, loader, optimizer, epochs=epochs, val_loader=val, progress=False, **kwargs)
    return history, optimizer


def test_gpu_path_trains_exactly_like_the_cpu_loop(monkeypatch):
    reference, _ = run(model_a := conv_model())
    monkeypatch.setattr(training, "GPU_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(speed, "gpu", speed.GpuOptions(channels_last=False, fused=False))
    found, _ = run(model_b := conv_model())
    assert [r["loss"] for r in found.steps] == [r["loss"] for r in reference.steps]
    assert [r["acc"] for r in found.steps] == [r["acc"] for r in reference.steps]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert [r[key] for r in found.epochs] == [r[key] for r in reference.epochs], key
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


def test_evaluate_gpu_path_gives_the_same_figures(gpu_path_on_cpu, monkeypatch):
    model, loader = conv_model(), data.make_loader(images(70), 32)
    mse = data.make_loader(TensorDataset(torch.rand(50, 3, 8, 8), torch.zeros(50)), 16)
    ae = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid())
    found = training.evaluate(model, loader), training.evaluate(ae, mse, reconstruct=True)
    monkeypatch.setattr(training, "GPU_DEVICE_TYPES", ("cuda",))
    assert found == (training.evaluate(model, loader), training.evaluate(ae, mse, reconstruct=True))


def test_all_default_switches_train_and_restore_the_model(gpu_path_on_cpu):
    model = conv_model()
    seen = []
    model[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    history, optimizer = run(model, torch.optim.Adam)
    assert len(history.steps) == 14 and all(seen[:7])  # the first epoch's 7 training batches in channels_last
    assert all(group["fused"] for group in optimizer.param_groups)  # fused Adam (the CPU has one too)
    assert model[0].weight.is_contiguous()  # the usual memory format again
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]


def test_lazy_sync_still_reports_a_nan_naming_its_step(gpu_path_on_cpu):
    model = mlp()
    loader = data.make_loader(images(64), 16)
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        loss = F.cross_entropy(out, y)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(training.TrainingDiverged, match="epoch 1, step 3"):
        training.train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn, progress=False)
    assert len(calls) == 4  # lazily: the epoch ran to its end before the losses were read


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_keeps_float32_weights_and_trains(gpu_path_on_cpu, monkeypatch, dtype):
    monkeypatch.setattr(speed, "training_amp_dtype", lambda model, device, options=None: dtype)
    seen = []
    model = conv_model()
    model[0].register_forward_hook(lambda m, inp, out: seen.append(out.dtype))
    history, _ = run(model, torch.optim.Adam, epochs=3)
    assert seen[0] == dtype and all(p.dtype == torch.float32 for p in model.parameters())
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert history.epochs[-1]["val_acc"] is not None


def test_fuse_optimizer_only_fresh_known_optimisers():
    cpu = torch.device("cpu")
    model = mlp()
    assert training.fuse_optimizer(fresh := torch.optim.AdamW(model.parameters()), cpu)
    assert fresh.param_groups[0]["fused"] and fresh._step_supports_amp_scaling
    assert not training.fuse_optimizer(torch.optim.RMSprop(model.parameters()), cpu)
    assert not training.fuse_optimizer(torch.optim.Adam(model.parameters()), torch.device("meta"))
    stepped = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    stepped.step()
    assert not training.fuse_optimizer(stepped, cpu) and not stepped.param_groups[0]["fused"]


def test_compile_runs_full_batches_only_and_falls_back_when_it_fails(gpu_path_on_cpu, monkeypatch):
    gpu_path_on_cpu.compile = True
    sizes = []

    def fake_compile(model, mode=None):
        def compiled(x):
            sizes.append(x.shape[0])
            return model(x)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    run(mlp(), epochs=1)  # 100 images in batches of 16: six full ones and one of 4, run eagerly
    assert sizes == [16] * 6

    def broken_compile(model, mode=None):
        def compiled(x):
            raise RuntimeError("no C compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history, _ = run(mlp(), epochs=1)
    assert any("torch.compile failed" in str(w.message) for w in caught) and len(history.steps) == 7


def test_a_compiled_backward_pass_that_fails_falls_back_too(gpu_path_on_cpu, monkeypatch):
    gpu_path_on_cpu.compile = True

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("inductor: the backward graph did not compile")

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: (lambda x: Broken.apply(model(x))))
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="torch.compile failed"):
        history, _ = run(model, epochs=1)
    assert len(history.steps) == 7 and all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
