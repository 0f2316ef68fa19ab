"""The course's datasets (MNIST, CIFAR-10) as in-memory tensors, with seeded splits and fast loaders.

Every dataset is one :class:`Dataset` record in :data:`DATASETS`: its classes,
image shape, mean/std, split sizes, the files of the offline mirror (bytes and
sha256), the function that decodes them, its torchvision class and the names
of its decoded cache files. The loaders and ``python -m course_utils doctor``
read only these records; a third dataset is one more record (CONTRIBUTING.md).

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
import re
import tarfile
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from . import modes


class DataError(RuntimeError):
    """A dataset is missing or damaged: ``message`` says what, ``fix`` what to do about it.

    ``str(error)`` is both, as one sentence each; the doctor prints them as a
    finding and its fix.
    """

    def __init__(self, message: str, fix: str = ""):
        self.message = message.rstrip(". ")
        self.fix = fix.strip().rstrip(".")
        super().__init__(f"{self.message}. {self.fix}." if self.fix else f"{self.message}.")


Arrays = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Dataset:
    """Everything the kit knows about one dataset; :data:`DATASETS` holds one per dataset.

    ``mirror_files`` maps each file of the offline mirror (path inside the
    mirror) to its bytes and sha256; ``decode(mirror_root)`` turns them into
    ``train_x, train_y, test_x, test_y`` (uint8 NCHW images, int64 labels).
    ``torchvision_class`` names the ``torchvision.datasets`` class that
    downloads it without a mirror. ``cache_file`` is the decoded copy of the
    mirror, ``download_cache_file`` that of a torchvision download (they
    differ where the two sources do, e.g. CIFAR-10's JPEGs).
    """

    name: str
    label: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: tuple[int, int]
    mirror_files: dict[str, tuple[int, str]]
    decode: Callable[[Path], Arrays]
    torchvision_class: str
    cache_file: str
    download_cache_file: str

    def __post_init__(self) -> None:
        where = f"dataset record {self.name!r} in course_utils/data.py"
        problems = []
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            problems.append("name must be lower case letters, digits and _ (it is the loaders' argument)")
        if len(self.shape) != 3 or min(self.shape) < 1:
            problems.append(f"shape must be (channels, height, width), got {self.shape}")
        elif not len(self.mean) == len(self.std) == self.shape[0]:
            problems.append(f"mean and std need one value per channel ({self.shape[0]}), "
                            f"got {len(self.mean)} and {len(self.std)}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            problems.append("classes must name every label once, in label order")
        if len(self.sizes) != 2 or min(self.sizes) < 1:
            problems.append(f"sizes must be (train images, test images), got {self.sizes}")
        if not self.mirror_files:
            problems.append("mirror_files must list the mirror's files with their bytes and sha256")
        for rel, spec in self.mirror_files.items():
            if not (len(spec) == 2 and isinstance(spec[0], int) and re.fullmatch(r"[0-9a-f]{64}", spec[1])):
                problems.append(f"mirror file {rel}: give (bytes, sha256 as 64 hex digits), got {spec}")
        for file in (self.cache_file, self.download_cache_file):
            if not (file.startswith(f"{self.name}-") and file.endswith(".pt")):
                problems.append(f"cache file {file!r} must be named '{self.name}-<source>.pt'")
        if not callable(self.decode):
            problems.append("decode must be a function: mirror folder -> arrays")
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))

    @property
    def mirror_hint(self) -> str:
        """The mirror's files in short: one file's name, or the folder holding several (``MNIST/raw/``)."""
        paths = sorted(self.mirror_files)
        if len(paths) == 1:
            return paths[0]
        return os.path.commonpath(paths) + "/"

    def cache_files(self, mirrored: bool) -> tuple[str, ...]:
        """The decoded copies a loader accepts: from the mirror only, or (without one) any it wrote."""
        if mirrored:
            return (self.cache_file,)
        return tuple(dict.fromkeys((self.download_cache_file, self.cache_file)))

    def download_urls(self) -> list[str]:
        """Where torchvision downloads this dataset from (for the doctor's messages and its opt-in check)."""
        from torchvision import datasets

        cls = getattr(datasets, self.torchvision_class)
        if getattr(cls, "url", None):
            return [cls.url]
        mirrors, resources = getattr(cls, "mirrors", []), getattr(cls, "resources", [])
        return [f"{mirror}{resources[0][0]}" for mirror in mirrors] if resources else []


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
        raise DataError(f"missing dataset file {path}", fix)
    found = path.stat().st_size
    if found != size:
        raise DataError(f"dataset file {path} has {found} bytes, expected {size} (truncated or wrong file)", fix)
    if _sha256(path) != sha256:
        raise DataError(f"dataset file {path} is corrupt (sha256 mismatch)", fix)


def _mirror_fix(root: Path) -> str:
    return (f"Restore the file in the mirror {root} (compare with its README), point "
            f"{modes.DATA_VAR} at an intact mirror, or unset it to download with torchvision")


def mirror_layout() -> str:
    """What a mirror folder holds, in words: ``MNIST/raw/ and cifar10-jpeg.tar.gz``."""
    hints = [d.mirror_hint for d in DATASETS.values()]
    return hints[0] if len(hints) == 1 else ", ".join(hints[:-1]) + " and " + hints[-1]


def dataset(name: str) -> Dataset:
    """The record of ``name`` (any case); ``ValueError`` naming the known datasets otherwise."""
    record = DATASETS.get(str(name).lower())
    if record is None:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(repr(n) for n in DATASETS)}.")
    return record


def mirror_files(name: str) -> dict[str, tuple[int, str]]:
    """Path inside the mirror -> (bytes, sha256) of every file ``name`` is decoded from."""
    return dict(dataset(name).mirror_files)


def verify_mirror(name: str, root: Path, fix: str | None = None) -> None:
    """Raise :class:`DataError` naming the first missing, truncated or corrupt mirror file of ``name``.

    ``fix`` is the error's advice (default: how to repair the mirror).
    """
    fix = _mirror_fix(root) if fix is None else fix
    for rel, (size, sha) in mirror_files(name).items():
        _verify(root / rel, size, sha, fix)


def _mnist_from_mirror(root: Path) -> Arrays:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    verify_mirror("mnist", root)
    raw = root / "MNIST" / "raw"
    return {
        "train_x": read_image_file(str(raw / "train-images-idx3-ubyte")).unsqueeze(1),
        "train_y": read_label_file(str(raw / "train-labels-idx1-ubyte")).long(),
        "test_x": read_image_file(str(raw / "t10k-images-idx3-ubyte")).unsqueeze(1),
        "test_y": read_label_file(str(raw / "t10k-labels-idx1-ubyte")).long(),
    }


def _cifar10_from_mirror(root: Path) -> Arrays:
    from torchvision.io import decode_jpeg

    verify_mirror("cifar10", root)
    [archive] = DATASETS["cifar10"].mirror_files
    blobs: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    index = {c: i for i, c in enumerate(DATASETS["cifar10"].classes)}
    with tarfile.open(root / archive) as tar:
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


# --------------------------------------------------------------------------- the registry

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

DATASETS: dict[str, Dataset] = {
    record.name: record for record in (
        Dataset(
            name="mnist", label="MNIST", classes=MNIST_CLASSES, shape=(1, 28, 28),
            mean=MNIST_MEAN, std=MNIST_STD, sizes=(60000, 10000),
            mirror_files={f"MNIST/raw/{file}": spec for file, spec in MNIST_FILES.items()},
            decode=_mnist_from_mirror, torchvision_class="MNIST",
            # The mirror's IDX bytes are the canonical ones: one decoded copy serves both sources.
            cache_file="mnist-idx.pt", download_cache_file="mnist-idx.pt",
        ),
        Dataset(
            name="cifar10", label="CIFAR-10", classes=CIFAR10_CLASSES, shape=(3, 32, 32),
            mean=CIFAR10_MEAN, std=CIFAR10_STD, sizes=(50000, 10000),
            mirror_files={CIFAR10_ARCHIVE[0]: CIFAR10_ARCHIVE[1:]},
            decode=_cifar10_from_mirror, torchvision_class="CIFAR10",
            # The mirror's JPEGs differ slightly from torchvision's pickled arrays.
            cache_file="cifar10-jpeg.pt", download_cache_file="cifar10-pickle.pt",
        ),
    )
}
# Per-name views of the registry, as other modules and notebooks use them.
SIZES = {name: record.sizes for name, record in DATASETS.items()}
SHAPES = {name: record.shape for name, record in DATASETS.items()}


# --------------------------------------------------------------------------- loading

def _download(name: str, folder: Path) -> Arrays:
    """Download with torchvision into ``folder`` and return uint8 NCHW tensors."""
    from torchvision import datasets

    record = dataset(name)
    cls = getattr(datasets, record.torchvision_class)
    try:
        train, test = (cls(str(folder), train=t, download=True) for t in (True, False))
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"could not download {record.label} with torchvision ({type(exc).__name__}: {exc})",
            f"Without internet, set {modes.DATA_VAR} to an offline mirror folder (holding {mirror_layout()})",
        ) from exc
    out = {}
    for split, ds in (("train", train), ("test", test)):
        x = torch.as_tensor(ds.data)
        out[f"{split}_x"] = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.as_tensor(ds.targets, dtype=torch.long)
    return out


def _check_arrays(name: str, arrays: Arrays) -> None:
    record = dataset(name)
    for split, n in zip(("train", "test"), record.sizes):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.shape != (n, *record.shape) or x.dtype != torch.uint8 or y.shape != (n,):
            raise DataError(f"{name} {split}: unexpected shapes {tuple(x.shape)} / {tuple(y.shape)}")


def _write_atomic(arrays: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    os.close(fd)
    try:
        torch.save(arrays, tmp)
        os.chmod(tmp, 0o644)  # public data: the grading sandbox's user reads it too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_cache(name: str, path: Path) -> Arrays | None:
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


@dataclass(frozen=True)
class Source:
    """Where a dataset will be loaded from, in the loader's order: a decoded ``cache`` file, the offline
    ``mirror``, or a torchvision ``download``; ``path`` is that file or folder, ``cache`` where the decoded
    copy is written when it is not the source itself."""

    kind: str
    path: Path
    cache: Path


def source(name: str, mirror: Path | None, cache: Path) -> Source:
    """The one place that decides where ``name`` comes from (the loaders and the doctor both ask it).

    With a mirror only the copy decoded from it counts; without one, any decoded copy, else a download.
    """
    record = dataset(name)
    for file in record.cache_files(mirrored=mirror is not None):
        if (cache / file).is_file():
            return Source("cache", cache / file, cache / file)
    if mirror is not None:
        return Source("mirror", mirror, cache / record.cache_file)
    return Source("download", cache / "downloads", cache / record.download_cache_file)


def load_arrays(name: str, root: str | os.PathLike | None = None) -> Arrays:
    """All images and labels of ``name`` (a key of :data:`DATASETS`) as uint8 NCHW / int64 tensors.

    Returns a dict with ``train_x, train_y, test_x, test_y``. See the module
    docstring for where the data comes from (:func:`source` decides).
    """
    record = dataset(name)
    name = record.name
    mirror = Path(root).expanduser().resolve() if root is not None else modes.data_dir()
    cache = modes.cache_dir()
    found = source(name, mirror, cache)
    while found.kind == "cache":
        arrays = _read_cache(name, found.path)
        if arrays is not None:
            return arrays
        found = source(name, mirror, cache)  # the damaged copy is gone: the next source in line
    if found.kind == "mirror":
        if not mirror.is_dir():
            raise DataError(f"dataset folder {mirror} does not exist", _mirror_fix(mirror))
        arrays = record.decode(mirror)
    else:
        arrays = _download(name, found.path)
    _check_arrays(name, arrays)
    _write_atomic(arrays, found.cache)
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
    record = dataset(name)
    if normalize is True:
        normalize = (record.mean, record.std)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_full, generator=gen)
    val_idx = order[:n_val]
    train_idx = order[n_val:] if n_train is None else order[n_val:n_val + n_train]
    test_idx = _subset(arrays["test_x"].shape[0], n_test, gen)
    if n_test is None:
        test_idx = test_idx.sort().values

    def make(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> TensorDataset:
        return TensorDataset(_to_float(x[idx], normalize), y[idx].clone())

    return Splits(
        train=make(arrays["train_x"], arrays["train_y"], train_idx),
        val=make(arrays["train_x"], arrays["train_y"], val_idx),
        test=make(arrays["test_x"], arrays["test_y"], test_idx),
        classes=record.classes,
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



# --------------------------------------------------------------------------- batches drawn on a GPU

# TensorDataset -> (device, the versions/pointers/shapes it was copied at, the copies on the device).
_RESIDENT: "weakref.WeakKeyDictionary[TensorDataset, tuple]" = weakref.WeakKeyDictionary()


def _course_loader_parts(loader) -> tuple[TensorDataset, BatchSampler] | None:
    """(dataset, batch sampler) if ``loader`` is a plain :func:`make_loader` loader, else None."""
    if not isinstance(loader, DataLoader) or loader.batch_size is not None or loader.num_workers != 0:
        return None
    dataset, batches = loader.dataset, loader.sampler
    if not isinstance(dataset, TensorDataset) or not isinstance(batches, BatchSampler):
        return None
    inner = batches.sampler
    if isinstance(inner, RandomSampler):
        if inner.replacement or inner.generator is None or inner.num_samples != len(dataset):
            return None
    elif not (isinstance(inner, SequentialSampler) and inner.data_source is dataset):
        return None
    return dataset, batches


def resident_tensors(dataset: TensorDataset, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """The tensors of ``dataset`` on ``device``, copied there once and reused while they are unchanged."""
    device = torch.device(device)
    stamp = tuple((t._version, t.data_ptr(), tuple(t.shape), t.dtype) for t in dataset.tensors)
    cached = _RESIDENT.get(dataset)
    if cached is not None and cached[0] == device and cached[1] == stamp:
        return cached[2]
    copies = tuple(t.to(device) for t in dataset.tensors)
    _RESIDENT[dataset] = (device, stamp, copies)
    return copies


def resident_batches(loader, device: torch.device | str) -> Iterator[tuple[torch.Tensor, ...]] | None:
    """The batches ``loader`` would deal, drawn from copies of its tensors on ``device``; None if it
    is not a plain :func:`make_loader` loader.

    The same batches in the same order as iterating ``loader`` itself: a shuffled loader's permutation
    comes from its own seeded generator, which advances exactly as it would. The tensors move to the
    device once (:func:`resident_tensors`); each batch is then one indexing on the device instead of an
    indexing on the CPU and a copy. ``training.train`` and ``evaluate`` use it on CUDA GPUs
    (``speed.gpu.resident``).
    """
    parts = _course_loader_parts(loader)
    if parts is None:
        return None
    dataset, sampler = parts
    device = torch.device(device)
    tensors = resident_tensors(dataset, device)
    n, size = len(dataset), sampler.batch_size
    inner = sampler.sampler

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        if isinstance(inner, RandomSampler):
            # RandomSampler.__iter__ draws randperm(n) from its generator for the pass, and once more
            # (for the remainder of num_samples, here none) when the pass is read to its end.
            order = torch.randperm(n, generator=inner.generator).to(device)
            for start in range(0, n, size):
                index = order[start:start + size]
                if sampler.drop_last and index.shape[0] < size:
                    break
                yield tuple(t[index] for t in tensors)
            torch.randperm(n, generator=inner.generator)
        else:
            for start in range(0, n, size):
                if sampler.drop_last and start + size > n:
                    return
                yield tuple(t[start:start + size] for t in tensors)

    return batches()
