"""Benchmark: course_utils' in-memory loaders versus the per-sample torchvision pipeline.

Prints, on this machine:
- seconds for one MNIST training epoch (batch 64, a 2-layer MLP) through
  course_utils loaders and through torchvision ``MNIST`` + ``ToTensor``, and the ratio;
- the same split into its two parts: one pass over each loader alone (the data
  pipeline, which is what course_utils changes) and the model's own compute, which both
  pipelines pay alike and which therefore bounds the whole-epoch ratio (Amdahl's law);
- the first load of CIFAR-10 from the JPEG mirror into an empty cache, and a later load.

Usage: COURSE_DATA_DIR=../shared/data python benchmarks/bench_data.py [--train-images N]
(``--train-images``: time the MNIST epochs on the first N training images instead of all 60,000)
(run it on an otherwise idle machine, e.g. under ``flock /tmp/coursekit-cpu.lock``).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from course_utils import leftovers
from course_utils import data, modes, training


def one_epoch(loader) -> tuple[float, float]:
    """Seconds and final accuracy of one SGD epoch of a 784-256-10 MLP over ``loader``."""
    training.seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    start = time.perf_counter()
    history = training.train(model, loader, opt, epochs=1, progress=False)
    return time.perf_counter() - start, history.epochs[0]["train_acc"]


def one_pass(loader) -> float:
    """Seconds to draw every batch of ``loader`` once, with no model (the data pipeline alone)."""
    start = time.perf_counter()
    for x, y in loader:
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=None, help="MNIST training images per epoch (default: all)")
    args = parser.parse_args()
    mirror = modes.data_dir()
    if mirror is None:
        raise SystemExit("set COURSE_DATA_DIR to the offline mirror (the torchvision baseline reads its MNIST files)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")

    train = data.mnist().train
    count = min(args.train_images or len(train), len(train))
    ours = data.make_loader(TensorDataset(*(t[:count] for t in train.tensors)), 64, shuffle=True)
    ours_s, ours_acc = one_epoch(ours)

    from torchvision import datasets, transforms
    baseline_ds = Subset(datasets.MNIST(str(mirror), train=True, download=False, transform=transforms.ToTensor()),
                         range(count))
    print(f"MNIST epochs over {count:,} training images")
    baseline = DataLoader(baseline_ds, batch_size=64, shuffle=True)
    base_s, base_acc = one_epoch(baseline)
    print(f"MNIST epoch, course_utils loader : {ours_s:6.2f} s (train acc {ours_acc:.3f})")
    print(f"MNIST epoch, torchvision+ToTensor: {base_s:6.2f} s (train acc {base_acc:.3f})")
    ours_data, base_data = one_pass(ours), one_pass(baseline)
    compute = max(ours_s - ours_data, 1e-9)
    print(f"whole-epoch speed-up: {base_s / ours_s:.1f}x")
    print(f"data pipeline alone, one pass: course_utils {ours_data:.3f} s, torchvision {base_data:.2f} s "
          f"-> {base_data / ours_data:.0f}x (target: at least 10x)")
    print(f"model compute (forward, backward, update) {compute:.2f} s is the same for both, so no loader "
          f"can make this epoch more than {base_s / compute:.1f}x faster than the baseline")

    with tempfile.TemporaryDirectory(prefix=leftovers.tag("coursekit-bench-cache-")) as cache:
        os.environ[modes.CACHE_VAR] = cache
        start = time.perf_counter()
        data.load_arrays("cifar10")
        first = time.perf_counter() - start
        start = time.perf_counter()
        data.load_arrays("cifar10")
        later = time.perf_counter() - start
    print(f"CIFAR-10 first load from the JPEG mirror: {first:5.1f} s (target < 20 s)")
    print(f"CIFAR-10 later load from the cache     : {later:5.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
