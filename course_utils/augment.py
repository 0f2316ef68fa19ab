"""Batched image augmentation on in-memory tensors (any device).

Per-sample random horizontal flips and ``RandomResizedCrop``-style crops for a
whole batch at once: the crop boxes are sampled on the CPU from a seeded
``torch.Generator``, turned into one affine sampling grid per image
(``F.affine_grid``) and applied with a single bilinear ``F.grid_sample``
call. No per-image Python loop, no PIL, and the same seed gives the same
augmented batches on every device. On a CUDA GPU the boxes travel through pinned memory
without a synchronising copy, so the GPU never waits for the CPU (nor the CPU for the GPU).

Typical use::

    from course_utils import augment
    aug = augment.flip_and_crop(seed=0, scale=(0.8, 1.0), ratio=(0.9, 1.1))
    training.train(model, loader, optimizer, batch_transform=aug)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images with shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point images (convert with x.float() / 255), got dtype {x.dtype}")


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float) -> None:
    a, b = bounds
    if not (low < a <= b <= high):
        raise ValueError(f"{name} must be a pair (min, max) with {low} < min <= max <= {high}, got {bounds}")


def crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """Random crop boxes as fractions of the image: an (n, 4) tensor of (left, top, width, height).

    Follows ``torchvision.transforms.RandomResizedCrop``: the area is a uniform
    fraction ``scale`` of the image, the aspect ratio (width / height) is
    log-uniform in ``ratio``, and the box is placed uniformly inside the image.
    Boxes that do not fit are redrawn (``attempts`` tries per image, all drawn
    at once); an image whose tries all fail gets the whole image, whose area
    (1.0) is inside any valid ``scale``. Sizes are continuous, not rounded to
    pixels. Sampled on the CPU.
    """
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 0.0, math.inf)
    area = torch.empty(n, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = log_r.exp()
    # area fraction a of an H x W image: w * h = a * H * W and w / h = r (in pixels).
    w = torch.sqrt(area * r * height / width)  # as a fraction of the width
    h = torch.sqrt(area / r * width / height)  # as a fraction of the height
    fits = (w <= 1.0) & (h <= 1.0)
    first = fits.float().argmax(dim=1)  # first attempt that fits (0 if none)
    pick = first.unsqueeze(1)
    w = w.gather(1, pick).squeeze(1)
    h = h.gather(1, pick).squeeze(1)
    none_fit = ~fits.any(dim=1)
    w = torch.where(none_fit, torch.ones_like(w), w)
    h = torch.where(none_fit, torch.ones_like(h), h)
    u = torch.rand(n, 2, generator=generator)
    left = u[:, 0] * (1.0 - w)
    top = u[:, 1] * (1.0 - h)
    return torch.stack([left, top, w, h], dim=1)


def _to_gpu(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (drawn on the CPU) on a CUDA ``device`` without a synchronising copy: via pinned memory."""
    if t.device == device:
        return t
    return t.pin_memory().to(device, non_blocking=True)


def resized_crop(
    x: torch.Tensor,
    boxes: torch.Tensor,
    flip: torch.Tensor | None = None,
    size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Crop each image to its box, resize it to ``size`` (bilinear), and mirror where ``flip`` is True.

    ``boxes`` is (N, 4) of (left, top, width, height) as fractions of the
    image (see :func:`crop_boxes`); ``flip`` is a bool tensor (N,);
    ``size`` defaults to the input's (H, W). Deterministic given its arguments.
    """
    _check_images(x)
    n = x.shape[0]
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) for {n} images, got {tuple(boxes.shape)}")
    out_h, out_w = (x.shape[-2], x.shape[-1]) if size is None else (
        (size, size) if isinstance(size, int) else tuple(size))
    if x.is_cuda:  # copies that do not make the CPU wait for the GPU's queue to drain
        boxes, flip = _to_gpu(boxes, x.device), None if flip is None else _to_gpu(flip, x.device)
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    left, top, w, h = boxes.unbind(dim=1)
    # Output coordinates u in [-1, 1] map to input coordinates scale * u + centre.
    sx, sy = w, h
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    cx = 2 * (left + w / 2) - 1
    cy = 2 * (top + h / 2) - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], dim=1), torch.stack([zero, sy, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta, [n, x.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip_resized_crop(
    x: torch.Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random horizontal flip (probability ``flip_p``) and a random resized crop per image, batched."""
    _check_images(x)
    if not 0.0 <= flip_p <= 1.0:
        raise ValueError(f"flip_p must be a probability in [0, 1], got {flip_p}")
    n, _, height, width = x.shape
    boxes = crop_boxes(n, height, width, scale=scale, ratio=ratio, generator=generator)
    flip = torch.rand(n, generator=generator) < flip_p
    return resized_crop(x, boxes, flip, size)


def flip_and_crop(
    seed: int = 0,
    *,
    size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A seeded augmentation function for ``training.train(..., batch_transform=...)``.

    It keeps its own ``torch.Generator``, so a run repeats exactly whatever
    else draws random numbers, and works on batches on any device.
    """
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 0.0, math.inf)
    generator = torch.Generator().manual_seed(seed)

    def augment(x: torch.Tensor) -> torch.Tensor:
        return random_flip_resized_crop(x, size=size, scale=scale, ratio=ratio, flip_p=flip_p,
                                        generator=generator)

    return augment
