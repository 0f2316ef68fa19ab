"""Figures for the labs. Every function returns its matplotlib Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from scipy.signal import savgol_filter

from .training import History


def _to_numpy_image(img: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """(C, H, W) or (H, W) tensor to an (H, W[, 3]) array in [0, 1] for imshow."""
    img = img.detach().float().cpu()
    if img.ndim == 3 and mean is not None and std is not None:
        img = img * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
    return img.clamp(0, 1).numpy()


def _show(ax, img: torch.Tensor, mean=None, std=None) -> None:
    arr = _to_numpy_image(img, mean, std)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    mean=None,
    std=None,
    size: float = 1.4,
) -> Figure:
    """Show a batch of images (N, C, H, W) in a grid, titled by class name or label.

    Pass the ``mean``/``std`` used for normalisation to undo it for display.
    """
    n = images.shape[0]
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, n)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, images[i], mean, std)
        if labels is not None:
            label = int(labels[i])
            ax.set_title(class_names[label] if class_names else str(label), fontsize=9)
    fig.tight_layout()
    return fig


def smooth(values: Sequence[float], window: int = 51, polyorder: int = 2) -> np.ndarray:
    """Savitzky–Golay smoothing that also copes with series shorter than the window."""
    y = np.asarray(values, dtype=float)
    window = min(window, len(y) if len(y) % 2 == 1 else len(y) - 1)
    if window <= polyorder:
        return y
    return savgol_filter(y, window_length=window, polyorder=polyorder)


def training_curves(
    runs: History | Mapping[str, History],
    *,
    keys: Sequence[str] = ("loss", "acc"),
    window: int = 51,
) -> Figure:
    """Smoothed per-step training curves for one run or several named runs on shared axes.

    Faint lines are the raw values, solid lines the Savitzky–Golay smoothed ones.
    """
    if isinstance(runs, History):
        runs = {"model": runs}
    keys = [k for k in keys if any(h.series(k) for h in runs.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    colors = sns.color_palette("tab10", len(runs))
    for ax, key in zip(axes[0], keys):
        for color, (name, history) in zip(colors, runs.items()):
            y = history.series(key)
            if not y:
                continue
            x = np.arange(1, len(y) + 1)
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth(y, window), color=color, label=name, linewidth=1.8)
        ax.set_xlabel("training step")
        ax.set_ylabel({"loss": "training loss", "acc": "training accuracy"}.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def pca_scatter(
    features: torch.Tensor | np.ndarray,
    labels: Sequence[int] | torch.Tensor,
    class_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    ax=None,
    max_points: int = 3000,
    seed: int = 0,
) -> Figure:
    """Project features (N, ...) onto their first two principal components, coloured by label."""
    from sklearn.decomposition import PCA

    x = features.detach().cpu().reshape(len(features), -1).numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features).reshape(len(features), -1)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(x) > max_points:
        keep = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, y = x[keep], y[keep]
    points = PCA(n_components=2, random_state=seed).fit_transform(x)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
    else:
        fig = ax.figure
    names = [class_names[i] if class_names else str(i) for i in y]
    order = sorted(set(names), key=names.index) if not class_names else [c for c in class_names if c in set(names)]
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=names, hue_order=order, palette="tab10",
                    s=8, linewidth=0, ax=ax, legend="full")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def reconstructions(originals: torch.Tensor, reconstructed: torch.Tensor, *, n: int = 8,
                    size: float = 1.3) -> Figure:
    """Two rows: original images above, their reconstructions below."""
    n = min(n, originals.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(size * n, size * 2 + 0.4), squeeze=False)
    for i in range(n):
        _show(axes[0, i], originals[i])
        _show(axes[1, i], reconstructed[i])
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    fig.tight_layout()
    return fig


def interpolation_strips(rows: Mapping[str, torch.Tensor], *, size: float = 1.2) -> Figure:
    """One row per named interpolation, each a (steps, C, H, W) tensor of images."""
    steps = max(t.shape[0] for t in rows.values())
    fig, axes = plt.subplots(len(rows), steps, figsize=(size * steps, size * len(rows) + 0.3), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(steps):
            if c < images.shape[0]:
                _show(axes[r, c], images[c])
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig
