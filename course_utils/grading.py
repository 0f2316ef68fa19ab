"""Helpers for visible and hidden tests: messages a student can act on, recomputed accuracy."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import data as course_data
from .training import evaluate


def expect_shape(tensor: torch.Tensor, expected: Sequence[int], what: str = "output") -> None:
    """Fail with 'expected ... got ...' unless ``tensor.shape == expected``."""
    if not isinstance(tensor, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor of shape {tuple(expected)}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(expected):
        raise AssertionError(f"{what}: expected shape {tuple(expected)}, got {tuple(tensor.shape)}")


def expect_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "output", atol: float = 1e-5,
                 rtol: float = 1e-5) -> None:
    """Fail with the largest difference unless the two tensors agree within tolerance."""
    expect_shape(actual, expected.shape, what)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        diff = (actual - expected).abs().max().item()
        raise AssertionError(f"{what}: values differ from the reference by up to {diff:.3g} (tolerance {atol:g})")


def expect_at_least(value: float, threshold: float, what: str = "test accuracy") -> None:
    """Fail unless ``value >= threshold``, saying both."""
    if not value >= threshold:
        raise AssertionError(f"{what} is {value:.4f}; at least {threshold:.4f} is needed")


def test_accuracy(
    model: nn.Module,
    dataset: str,
    *,
    n_test: int | None = None,
    seed: int = 0,
    normalize: bool | tuple = False,
    sequences: bool = False,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``model`` on the test split, reloaded here from ``course_utils.data``.

    Hidden tests call this so that the number comes from the student's model
    object and fresh data, never from variables the notebook could have set.
    """
    if not isinstance(model, nn.Module):
        raise AssertionError(f"expected a trained torch.nn.Module, got {type(model).__name__}")
    test = course_data.load_splits(dataset, n_train=0, n_test=n_test, seed=seed, normalize=normalize).test
    if sequences:
        test = course_data.as_sequences(test)
    return evaluate(model, course_data.make_loader(test, batch_size))["acc"]


test_accuracy.__test__ = False  # not a pytest test, despite the name


def test_reconstruction_error(
    model: nn.Module,
    dataset: str,
    *,
    n_test: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
) -> float:
    """Mean over test images of the summed squared error ``||model(x) - x||^2`` (pixels in [0, 1]).

    For autoencoders: the test split is reloaded here, unnormalised, like :func:`test_accuracy`.
    """
    if not isinstance(model, nn.Module):
        raise AssertionError(f"expected a trained torch.nn.Module, got {type(model).__name__}")
    test = course_data.load_splits(dataset, n_train=0, n_test=n_test, seed=seed).test

    def per_image_sse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape != target.shape:
            raise AssertionError(f"reconstructions: expected shape {tuple(target.shape)}, got {tuple(out.shape)}")
        return (out - target).pow(2).sum() / target.shape[0]

    loader = course_data.make_loader(test, batch_size)
    return evaluate(model, loader, loss_fn=per_image_sse, reconstruct=True)["loss"]


test_reconstruction_error.__test__ = False  # not a pytest test, despite the name
