"""course_utils.data on the real datasets: contents, splits, loaders, cache and error handling."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch

from course_utils import data, modes

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# --------------------------------------------------------------------------- contents

def test_mnist_arrays_match_the_canonical_dataset():
    arrays = data.load_arrays("mnist")
    assert arrays["train_x"].shape == (60000, 1, 28, 28) and arrays["train_x"].dtype == torch.uint8
    assert arrays["test_x"].shape == (10000, 1, 28, 28)
    assert arrays["train_y"].dtype == torch.int64
    assert arrays["train_y"].bincount().tolist() == MNIST_TRAIN_COUNTS
    assert arrays["test_y"].bincount().sum() == 10000
    assert 0 < arrays["train_x"].float().mean() / 255 < 0.2  # mostly black background


def test_cifar10_arrays_are_balanced_with_known_channel_statistics():
    arrays = data.load_arrays("cifar10")
    assert arrays["train_x"].shape == (50000, 3, 32, 32) and arrays["train_x"].dtype == torch.uint8
    assert arrays["test_x"].shape == (10000, 3, 32, 32)
    assert arrays["train_y"].bincount().tolist() == [5000] * 10
    assert arrays["test_y"].bincount().tolist() == [1000] * 10
    mean = arrays["train_x"][::10].float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(data.CIFAR10_MEAN), atol=0.01), mean


def test_unknown_dataset_name_is_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; use one of 'mnist', 'cifar10'"):
        data.load_arrays("imagenet")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_splits("svhn")


# --------------------------------------------------------------------------- the registry
# These run over every record in data.DATASETS: a new dataset is checked as soon as it is registered.

@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_decodes_to_what_its_record_says(name):
    """Shapes, sizes, labels and channel statistics of the decoded data match the registry record."""
    record = data.DATASETS[name]
    arrays = data.load_arrays(name)
    for split, n in zip(("train", "test"), record.sizes):
        assert arrays[f"{split}_x"].shape == (n, *record.shape), f"{name} {split}: not {record.shape} images"
        labels = arrays[f"{split}_y"]
        assert labels.min() == 0 and labels.max() == len(record.classes) - 1, \
            f"{name} {split}: labels should cover 0..{len(record.classes) - 1} (one per class in the record)"
    sample = arrays["train_x"][::10].float().div(255)
    mean, std = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(record.mean), atol=0.01), f"{name}: record mean {record.mean}, data {mean}"
    assert torch.allclose(std, torch.tensor(record.std), atol=0.01), f"{name}: record std {record.std}, data {std}"
    splits = data.load_splits(name, n_train=8, n_test=8, normalize=True)
    assert splits.classes == record.classes and splits.train.tensors[0].shape == (8, *record.shape)


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_record_is_complete(name):
    """What the loaders and the doctor need from a record: a torchvision class, a shortcut, distinct caches."""
    import torchvision.datasets

    record = data.DATASETS[name]
    assert hasattr(torchvision.datasets, record.torchvision_class), \
        f"{name}: torchvision.datasets has no class {record.torchvision_class!r} to download it without a mirror"
    assert record.download_urls(), f"{name}: cannot tell where torchvision downloads {record.torchvision_class} from"
    assert callable(getattr(data, name, None)), f"add the shortcut `def {name}(**kwargs)` to course_utils/data.py"
    assert data.SHAPES[name] == record.shape and data.SIZES[name] == record.sizes
    others = {f for other in data.DATASETS.values() if other is not record
              for f in (other.cache_file, other.download_cache_file)}
    assert not others & {record.cache_file, record.download_cache_file}, f"{name}: a cache file name is taken"
    assert record.mirror_hint in data.mirror_layout()


def test_a_broken_record_is_refused_with_what_is_missing():
    good = data.DATASETS["mnist"]
    with pytest.raises(ValueError, match="mean and std need one value per channel"):
        dataclasses.replace(good, name="digits", mean=(0.1, 0.2), cache_file="digits-idx.pt",
                            download_cache_file="digits-idx.pt")
    with pytest.raises(ValueError, match="sha256"):
        dataclasses.replace(good, mirror_files={"x.bin": (10, "not-a-checksum")})
    with pytest.raises(ValueError, match="cache file 'mnist-idx.pt' must be named 'digits-<source>.pt'"):
        dataclasses.replace(good, name="digits")


def test_data_errors_carry_their_fix():
    err = data.DataError("missing dataset file /m/x.", "Restore it.")
    assert (err.message, err.fix, str(err)) == ("missing dataset file /m/x", "Restore it", "missing dataset file /m/x. Restore it.")
    assert str(data.DataError("no fix known")) == "no fix known."


# --------------------------------------------------------------------------- splits

def test_splits_have_requested_sizes_and_float_range():
    splits = data.mnist(n_train=1000, n_val=200, n_test=300, seed=1)
    assert splits.sizes() == {"train": 1000, "val": 200, "test": 300}
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and x.shape == (1000, 1, 28, 28)
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    assert splits.classes == data.MNIST_CLASSES


def test_train_and_validation_partition_the_training_set():
    full = data.load_arrays("mnist")
    splits = data.mnist(n_val=5000, seed=3)
    assert len(splits.train) == 55000 and len(splits.val) == 5000 and len(splits.test) == 10000
    counts = splits.train.tensors[1].bincount(minlength=10) + splits.val.tensors[1].bincount(minlength=10)
    assert counts.tolist() == full["train_y"].bincount().tolist()
    # CIFAR-10's mirror is ordered by class: a shuffled validation set must hold many classes.
    val_labels = data.cifar10(n_train=0, n_val=1000, seed=0).val.tensors[1]
    assert val_labels.bincount(minlength=10).min() > 50


def test_splits_are_deterministic_per_seed():
    a = data.mnist(n_train=500, n_val=100, n_test=100, seed=7)
    b = data.mnist(n_train=500, n_val=100, n_test=100, seed=7)
    c = data.mnist(n_train=500, n_val=100, n_test=100, seed=8)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).tensors[0], getattr(b, part).tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])


def test_normalisation_centres_the_data():
    x = data.cifar10(n_train=5000, n_test=10, normalize=True).train.tensors[0]
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    custom = data.mnist(n_train=10, n_test=10, normalize=((0.5,), (0.5,))).train.tensors[0]
    assert custom.min() >= -1 and custom.max() <= 1 and custom.min() < -0.9


def test_impossible_split_sizes_are_rejected():
    with pytest.raises(ValueError, match="exceeds"):
        data.mnist(n_train=59000, n_val=2000)
    with pytest.raises(ValueError, match="n_val"):
        data.mnist(n_val=-1)


def test_sequence_view_gives_rows_as_timesteps():
    splits = data.mnist(n_train=20, n_test=5)
    seq = data.as_sequences(splits.train)
    x, y = seq.tensors
    assert x.shape == (20, 28, 28)
    assert torch.equal(x[3, 10], splits.train.tensors[0][3, 0, 10])  # row 10 of image 3
    assert torch.equal(y, splits.train.tensors[1])
    with pytest.raises(ValueError, match="single-channel"):
        data.as_sequences(data.cifar10(n_train=2, n_test=2).train)


# --------------------------------------------------------------------------- loaders

def test_loader_visits_every_sample_once_per_epoch():
    ds = data.mnist(n_train=130, n_test=10).train
    loader = data.make_loader(ds, 64, shuffle=True, seed=0)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [64, 64, 2]
    assert batches[0][0].shape == (64, 1, 28, 28) and batches[0][1].shape == (64,)
    seen = torch.cat([b[1] for b in batches]).bincount(minlength=10)
    assert seen.tolist() == ds.tensors[1].bincount(minlength=10).tolist()
    assert len(loader) == 3


def test_shuffling_is_seeded_and_changes_between_epochs():
    ds = data.mnist(n_train=200, n_test=10).train
    first = [y for _, y in data.make_loader(ds, 50, shuffle=True, seed=1)]
    again = [y for _, y in data.make_loader(ds, 50, shuffle=True, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    loader = data.make_loader(ds, 200, shuffle=True, seed=1)
    epoch1, epoch2 = next(iter(loader))[1], next(iter(loader))[1]
    assert not torch.equal(epoch1, epoch2)
    plain = next(iter(data.make_loader(ds, 200)))[1]
    assert torch.equal(plain, ds.tensors[1])


def test_batch_size_one_and_bad_batch_size():
    ds = data.mnist(n_train=3, n_test=1).train
    shapes = [x.shape for x, _ in data.make_loader(ds, 1)]
    assert shapes == [(1, 1, 28, 28)] * 3
    with pytest.raises(ValueError, match="batch_size"):
        data.make_loader(ds, 0)


def test_make_loaders_returns_train_val_test():
    splits = data.mnist(n_train=100, n_val=50, n_test=40)
    train, val, test = data.make_loaders(splits, 32)
    assert next(iter(train))[0].shape[0] == 32
    assert sum(x.shape[0] for x, _ in val) == 50
    assert sum(x.shape[0] for x, _ in test) == 40


# --------------------------------------------------------------------------- cache and sources

def test_decoded_cache_is_written_once_and_reused(mirror, fresh_cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(mirror))
    first = data.load_arrays("mnist")
    files = sorted(p.name for p in fresh_cache.iterdir())
    assert files == ["mnist-idx.pt"]

    def must_not_decode(root):
        raise AssertionError("decoded the mirror again instead of using the cache")

    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], decode=must_not_decode))
    again = data.load_arrays("mnist")
    assert torch.equal(first["test_x"], again["test_x"])
    # Without a mirror configured, the cached copy is found too (no download attempted).
    monkeypatch.delenv("COURSE_DATA_DIR")
    monkeypatch.setattr(data, "_download", must_not_decode)
    assert torch.equal(data.load_arrays("mnist")["train_y"], first["train_y"])


def test_damaged_cache_is_rebuilt_from_the_mirror(mirror, fresh_cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(mirror))
    fresh_cache.mkdir(parents=True)
    (fresh_cache / "mnist-idx.pt").write_bytes(b"not a tensor file")
    with pytest.warns(UserWarning, match="damaged cache"):
        arrays = data.load_arrays("mnist")
    assert arrays["train_y"].bincount().tolist() == MNIST_TRAIN_COUNTS
    assert torch.load(fresh_cache / "mnist-idx.pt", weights_only=True)["train_x"].shape[0] == 60000


def test_failed_cache_write_leaves_no_partial_file(mirror, fresh_cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(mirror))
    real_save = torch.save

    def crash_midway(obj, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        data.load_arrays("mnist")
    assert list(fresh_cache.iterdir()) == []
    monkeypatch.setattr(torch, "save", real_save)


def _copy_mnist_mirror(mirror: Path, dest: Path) -> Path:
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        os.symlink(mirror / "MNIST" / "raw" / name, raw / name)
    return raw


def test_missing_mirror_file_names_the_file_and_the_fix(mirror, fresh_cache, tmp_path):
    raw = _copy_mnist_mirror(mirror, tmp_path / "mirror")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte") as err:
        data.load_arrays("mnist", root=tmp_path / "mirror")
    assert "COURSE_DATA_DIR" in str(err.value)
    assert "t10k-labels-idx1-ubyte" in err.value.message and "COURSE_DATA_DIR" in err.value.fix
    assert not any(fresh_cache.glob("*.pt"))


def test_truncated_and_corrupt_mirror_files_are_detected(mirror, fresh_cache, tmp_path):
    raw = _copy_mnist_mirror(mirror, tmp_path / "mirror")
    labels = raw / "train-labels-idx1-ubyte"
    content = (mirror / "MNIST" / "raw" / labels.name).read_bytes()
    labels.unlink()
    labels.write_bytes(content[:1000])
    with pytest.raises(data.DataError, match="1000 bytes, expected 60008"):
        data.load_arrays("mnist", root=tmp_path / "mirror")
    flipped = bytearray(content)
    flipped[500] ^= 0xFF
    labels.write_bytes(bytes(flipped))
    with pytest.raises(data.DataError, match="corrupt"):
        data.load_arrays("mnist", root=tmp_path / "mirror")


def test_corrupt_cifar_archive_is_detected(mirror, fresh_cache, tmp_path):
    bad = tmp_path / "mirror"
    bad.mkdir()
    with open(mirror / data.CIFAR10_ARCHIVE[0], "rb") as src, open(bad / data.CIFAR10_ARCHIVE[0], "wb") as dst:
        dst.write(src.read(5_000_000))
    with pytest.raises(data.DataError, match="cifar10-jpeg.tar.gz has 5000000 bytes"):
        data.load_arrays("cifar10", root=bad)


def test_data_dir_that_does_not_exist_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(modes.ConfigError, match="is not a folder"):
        data.load_arrays("mnist")


def test_failed_download_says_how_to_work_offline(fresh_cache, monkeypatch):
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(data.DataError, match="COURSE_DATA_DIR"):
        data.load_arrays("mnist")
    assert not any(fresh_cache.glob("*.pt"))


def test_cifar_decoded_from_the_jpeg_mirror(mirror, fresh_cache):
    """A full decode of the JPEG archive into a fresh cache (about 10 s)."""
    arrays = data.load_arrays("cifar10", root=mirror)
    assert (fresh_cache / "cifar10-jpeg.pt").is_file()
    assert not any(fresh_cache.glob("*.part"))
    assert arrays["test_y"][:1000].unique().tolist() == [0]  # mirror order: by class
    shutil.rmtree(fresh_cache)
