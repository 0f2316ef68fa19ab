"""MNIST and CIFAR-10 as in-memory tensors, with seeded splits and fast loaders.

Each dataset is decoded once into a ``uint8`` tensor file in the cache folder
(see :func:`course_utils.modes.cache_dir`); later loads take a fraction of a
second. Where the raw data comes from, in order:

1. ``root=`` given to a loader: a mirror folder (layout below);
2. the mirror named by ``COURSE_DATA_DIR``;
3. a decoded copy already in the cache;
4. a torchvision download into the cache.

Mirror layout: ``MNIST/raw/*-ubyte`` (the four IDX files) and
``cifar10-jpeg.tar.gz`` (``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from . import modes

MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Expected bytes and sha256 of the mirror's files (see the mirror's README).
MNIST_FILES = {
    "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
CIFAR10_ARCHIVE = ("cifar10-jpeg.tar.gz", 19437144, "1fab6e733a06cc26af0ccd8cfea06054bfe6fe3f0a1a296b26aac44a058c45ac")
SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000)}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class DataError(RuntimeError):
    """A dataset is missing or damaged; the message names the file and the fix."""


@dataclass
class Splits:
    """Train, validation and test sets (validation may be empty)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: tuple[str, ...]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# --------------------------------------------------------------------------- raw sources

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, size: int, sha256: str, fix: str) -> None:
    if not path.is_file():
        raise DataError(f"missing dataset file {path}. {fix}")
    found = path.stat().st_size
    if found != size:
        raise DataError(f"dataset file {path} has {found} bytes, expected {size} (truncated or wrong file). {fix}")
    if _sha256(path) != sha256:
        raise DataError(f"dataset file {path} is corrupt (sha256 mismatch). {fix}")


def _mirror_fix(root: Path) -> str:
    return (f"Restore the file in the mirror {root} (compare with its README), point "
            f"{modes.DATA_VAR} at an intact mirror, or unset it to download with torchvision.")


def mirror_files(name: str) -> dict[str, tuple[int, str]]:
    """Path inside the mirror -> (bytes, sha256) of every file ``name`` is decoded from."""
    if name == "mnist":
        return {f"MNIST/raw/{file}": spec for file, spec in MNIST_FILES.items()}
    file, size, sha = CIFAR10_ARCHIVE
    return {file: (size, sha)}


def verify_mirror(name: str, root: Path, fix: str | None = None) -> None:
    """Raise :class:`DataError` naming the first missing, truncated or corrupt mirror file of ``name``.

    ``fix`` is the advice appended to the message (default: how to repair the mirror).
    """
    fix = _mirror_fix(root) if fix is None else fix
    for rel, (size, sha) in mirror_files(name).items():
        _verify(root / rel, size, sha, fix)


def _mnist_from_mirror(root: Path) -> dict[str, torch.Tensor]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    verify_mirror("mnist", root)
    raw = root / "MNIST" / "raw"
    return {
        "train_x": read_image_file(str(raw / "train-images-idx3-ubyte")).unsqueeze(1),
        "train_y": read_label_file(str(raw / "train-labels-idx1-ubyte")).long(),
        "test_x": read_image_file(str(raw / "t10k-images-idx3-ubyte")).unsqueeze(1),
        "test_y": read_label_file(str(raw / "t10k-labels-idx1-ubyte")).long(),
    }


def _cifar10_from_mirror(root: Path) -> dict[str, torch.Tensor]:
    from torchvision.io import decode_jpeg

    verify_mirror("cifar10", root)
    archive = root / CIFAR10_ARCHIVE[0]
    blobs: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or not parts[3].endswith(".jpg"):
                continue
            _, split, cls, _ = parts
            data = tar.extractfile(member).read()
            blobs[split].append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            labels[split].append(index[cls])
    out = {}
    with warnings.catch_warnings():
        # torchvision 0.29 flags its image codecs as deprecated (in favour of TorchCodec);
        # they still decode 60,000 JPEGs in a few seconds, several times faster than Pillow.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        decoded = {split: decode_jpeg(blobs[split]) for split in ("train", "test")}
    for split in ("train", "test"):
        out[f"{split}_x"] = torch.stack(decoded[split])
        out[f"{split}_y"] = torch.tensor(labels[split], dtype=torch.long)
    return out


def _download(name: str, folder: Path) -> dict[str, torch.Tensor]:
    """Download with torchvision into ``folder`` and return uint8 NCHW tensors."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        train, test = (cls(str(folder), train=t, download=True) for t in (True, False))
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"could not download {name} with torchvision ({type(exc).__name__}: {exc}). "
            f"Without internet, set {modes.DATA_VAR} to an offline mirror folder "
            f"(holding MNIST/raw/ and cifar10-jpeg.tar.gz)."
        ) from exc
    out = {}
    for split, ds in (("train", train), ("test", test)):
        x = torch.as_tensor(ds.data)
        out[f"{split}_x"] = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.as_tensor(ds.targets, dtype=torch.long)
    return out


def _check_arrays(name: str, arrays: dict[str, torch.Tensor]) -> None:
    for split, n in zip(("train", "test"), SIZES[name]):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.shape != (n, *SHAPES[name]) or x.dtype != torch.uint8 or y.shape != (n,):
            raise DataError(f"{name} {split}: unexpected shapes {tuple(x.shape)} / {tuple(y.shape)}")


def _write_atomic(arrays: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    os.close(fd)
    try:
        torch.save(arrays, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_cache(name: str, path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        arrays = torch.load(path, weights_only=True)
        _check_arrays(name, arrays)
        return arrays
    except Exception as exc:
        warnings.warn(f"ignoring damaged cache file {path} ({exc}); decoding the dataset again.")
        path.unlink(missing_ok=True)
        return None


def load_arrays(name: str, root: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """All images and labels of ``name`` ('mnist' or 'cifar10') as uint8 NCHW / int64 tensors.

    Returns a dict with ``train_x, train_y, test_x, test_y``. See the module
    docstring for where the data comes from.
    """
    name = name.lower()
    if name not in SIZES:
        raise ValueError(f"unknown dataset {name!r}; use 'mnist' or 'cifar10'.")
    mirror = Path(root).expanduser().resolve() if root is not None else modes.data_dir()
    cache = modes.cache_dir()
    if mirror is not None:
        # MNIST's mirror bytes are the canonical ones; CIFAR-10's JPEGs differ slightly.
        kind = "idx" if name == "mnist" else "jpeg"
        path = cache / f"{name}-{kind}.pt"
        arrays = _read_cache(name, path)
        if arrays is None:
            if not mirror.is_dir():
                raise DataError(f"dataset folder {mirror} does not exist. {_mirror_fix(mirror)}")
            arrays = (_mnist_from_mirror if name == "mnist" else _cifar10_from_mirror)(mirror)
            _check_arrays(name, arrays)
            _write_atomic(arrays, path)
        return arrays
    candidates = [cache / f"{name}-{kind}.pt" for kind in ("idx", "pickle", "jpeg")]
    for path in candidates:
        arrays = _read_cache(name, path)
        if arrays is not None:
            return arrays
    arrays = _download(name, cache / "downloads")
    _check_arrays(name, arrays)
    _write_atomic(arrays, cache / f"{name}-{'idx' if name == 'mnist' else 'pickle'}.pt")
    return arrays


# --------------------------------------------------------------------------- splits

def _to_float(x: torch.Tensor, normalize: bool | tuple) -> torch.Tensor:
    out = x.float().div_(255.0)
    if normalize:
        mean, std = normalize
        shape = (1, -1, 1, 1)
        out = (out - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
    return out


def _subset(n_total: int, n: int | None, generator: torch.Generator) -> torch.Tensor:
    order = torch.randperm(n_total, generator=generator)
    return order if n is None else order[:n]


def load_splits(
    name: str,
    *,
    n_train: int | None = None,
    n_val: int = 0,
    n_test: int | None = None,
    seed: int = 0,
    normalize: bool | tuple = False,
    root: str | os.PathLike | None = None,
) -> Splits:
    """Seeded train/validation/test splits of ``name`` as float TensorDatasets.

    Images are float32 in [0, 1], shape (N, C, H, W); ``normalize=True`` applies
    the dataset's mean/std, or pass ``(mean, std)`` of your own. The validation
    set is carved out of the training set after a seeded shuffle (CIFAR-10's
    mirror is ordered by class, so unshuffled prefixes would be one class).
    ``n_train``/``n_test`` take seeded random subsets; None keeps everything.
    """
    arrays = load_arrays(name, root)
    n_full = arrays["train_x"].shape[0]
    if n_val < 0 or n_val >= n_full:
        raise ValueError(f"n_val must be between 0 and {n_full - 1}, got {n_val}")
    if n_train is not None and n_train + n_val > n_full:
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {n_full} training images")
    if normalize is True:
        normalize = (MNIST_MEAN, MNIST_STD) if name.lower() == "mnist" else (CIFAR10_MEAN, CIFAR10_STD)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_full, generator=gen)
    val_idx = order[:n_val]
    train_idx = order[n_val:] if n_train is None else order[n_val:n_val + n_train]
    test_idx = _subset(arrays["test_x"].shape[0], n_test, gen)
    if n_test is None:
        test_idx = test_idx.sort().values

    def make(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> TensorDataset:
        return TensorDataset(_to_float(x[idx], normalize), y[idx].clone())

    classes = MNIST_CLASSES if name.lower() == "mnist" else CIFAR10_CLASSES
    return Splits(
        train=make(arrays["train_x"], arrays["train_y"], train_idx),
        val=make(arrays["train_x"], arrays["train_y"], val_idx),
        test=make(arrays["test_x"], arrays["test_y"], test_idx),
        classes=classes,
    )


def mnist(**kwargs) -> Splits:
    """MNIST splits; keywords as :func:`load_splits`. Images (N, 1, 28, 28)."""
    return load_splits("mnist", **kwargs)


def cifar10(**kwargs) -> Splits:
    """CIFAR-10 splits; keywords as :func:`load_splits`. Images (N, 3, 32, 32)."""
    return load_splits("cifar10", **kwargs)


def as_sequences(dataset: TensorDataset) -> TensorDataset:
    """View (N, 1, H, W) images as sequences of H rows with W features: (N, H, W)."""
    x, y = dataset.tensors
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"as_sequences expects single-channel images (N, 1, H, W), got {tuple(x.shape)}")
    return TensorDataset(x[:, 0], y)


# --------------------------------------------------------------------------- loaders

def make_loader(
    dataset: TensorDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader that slices whole batches out of in-memory tensors.

    Each step indexes the tensors once with a list of indices instead of
    fetching and collating samples one by one, which is many times faster on
    a CPU. Shuffling uses its own seeded generator, so runs repeat exactly.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)


def make_loaders(splits: Splits, batch_size: int, *, eval_batch_size: int | None = None,
                 seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train (shuffled), validation and test loaders for ``splits``."""
    eval_bs = eval_batch_size or max(batch_size, 256)
    return (
        make_loader(splits.train, batch_size, shuffle=True, seed=seed),
        make_loader(splits.val, eval_bs),
        make_loader(splits.test, eval_bs),
    )

