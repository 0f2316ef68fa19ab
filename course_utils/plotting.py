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


def smoothing_window(n: int, window: int = 51, polyorder: int = 2) -> int | None:
    """The Savitzky–Golay window :func:`smooth` uses for a series of ``n`` values, or None for no smoothing.

    The window is odd and at most a fifth of the series: a window that spans most of a short series
    fits one quadratic to nearly all of it, which cannot follow the shape of a learning curve and
    bends at the ends (a 32-step curve smoothed with a 31-step window seemed to shoot up at its
    end). Below ``2 * polyorder + 3`` points per window a fit averages too little to be worth drawing.
    """
    window = min(window, n // 5)
    if window % 2 == 0:
        window -= 1
    return window if window >= 2 * polyorder + 3 else None


def smooth(values: Sequence[float], window: int = 51, polyorder: int = 2) -> np.ndarray:
    """Savitzky–Golay smoothing with a window of at most a fifth of the series (see :func:`smoothing_window`).

    Series too short for that (fewer than 35 values with the defaults) come back unchanged.
    """
    y = np.asarray(values, dtype=float)
    used = smoothing_window(len(y), window, polyorder)
    if used is None:
        return y.copy()
    return savgol_filter(y, window_length=used, polyorder=polyorder)


def training_curves(
    runs: History | Mapping[str, History],
    *,
    keys: Sequence[str] = ("loss", "acc"),
    window: int = 51,
) -> Figure:
    """Smoothed per-step training curves for one run or several named runs on shared axes.

    Faint lines are the raw values, solid lines the Savitzky–Golay smoothed ones. A run too short
    to smooth honestly (see :func:`smoothing_window`) is drawn as one solid line of its raw values,
    with a dot per step, and its legend entry says "unsmoothed".
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
            if smoothing_window(len(y), window) is None:
                ax.plot(x, y, color=color, label=f"{name} (unsmoothed)", linewidth=1.2, marker=".", markersize=4)
                continue
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth(y, window), color=color, label=name, linewidth=1.8)
        _label(ax, "training step", {"loss": "training loss", "acc": "training accuracy"}.get(key, key))
    fig.tight_layout()
    return fig


def epoch_curves(history: History, *, keys: Sequence[str] = ("loss", "acc")) -> Figure:
    """Training and validation curves per epoch, with a dashed line where the learning rate changed.

    The training values are averages over each epoch (with dropout and augmentation on), the
    validation values are measured after it: a validation loss that rises while the training loss
    keeps falling is overfitting.
    """
    epochs = [row["epoch"] for row in history.epochs]
    keys = [k for k in keys if any(row.get(f"train_{k}") is not None for row in history.epochs)]
    if not epochs or not keys:
        raise ValueError("epoch_curves needs a History with at least one finished epoch")
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    lrs = [row.get("lr") for row in history.epochs]
    for ax, key in zip(axes[0], keys):
        for split, label, color in (("train", "training", "tab:blue"), ("val", "validation", "tab:orange")):
            y = [row.get(f"{split}_{key}") for row in history.epochs]
            if any(v is not None for v in y):
                ax.plot(epochs, [np.nan if v is None else v for v in y], color=color, marker=".", label=label)
        for epoch, before, after in zip(epochs[1:], lrs, lrs[1:]):
            if before and after and not np.isclose(before, after):
                ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1,
                           label=f"learning rate {before:.0e} → {after:.0e}")
        _label(ax, "epoch", {"loss": "loss", "acc": "accuracy"}.get(key, key))
    fig.tight_layout()
    return fig


def _label(ax, xlabel: str, ylabel: str) -> None:
    """Axis labels, a light grid and the legend of one curves panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


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


def _spread(scores: Sequence[float]) -> float:
    """Sample standard deviation, or NaN for a single run (one run has no measurable spread)."""
    return float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan")


def supported_ranking(results: Mapping[str, Sequence[float]]) -> str:
    """The ranking that repeated runs support, e.g. ``"double > early ≈ late ≈ vanilla"``.

    Models are ordered by mean score. Neighbours are joined by ``>`` only when their mean ± std
    intervals (sample std) do not overlap, and by ``≈`` otherwise: a gap smaller than the
    run-to-run spread is not evidence of an order. A rule of thumb, not a significance test.
    With a single run of some model there is no spread to compare against, and the answer says so.
    """
    if not results or any(len(scores) == 0 for scores in results.values()):
        raise ValueError("supported_ranking needs at least one score per model")
    if any(len(scores) < 2 for scores in results.values()):
        return "no ranking: a single run has no spread to compare the differences with"
    names = sorted(results, key=lambda name: float(np.mean(results[name])), reverse=True)
    text = names[0]
    for better, worse in zip(names, names[1:]):
        low = np.mean(results[better]) - _spread(results[better])
        high = np.mean(results[worse]) + _spread(results[worse])
        text += f" {'>' if low > high else '≈'} {worse}"
    return text


def compare_runs(results: Mapping[str, Sequence[float]], *, xlabel: str = "test accuracy") -> Figure:
    """Models scored over repeated runs: mean ± std (sample) per model, best mean on top, every run a dot.

    ``results`` maps a model name to one score per run, e.g. ``{"vanilla": [0.61, 0.60], ...}``;
    scores in [0, 1] are shown as percentages. Error bars span mean ± std; a model with a single
    run gets none (its spread is unknown). The title states the ranking the spread supports
    (:func:`supported_ranking`), so that noise does not read as an order.
    """
    if not results or any(len(scores) == 0 for scores in results.values()):
        empty = [name for name, scores in results.items() if len(scores) == 0]
        raise ValueError(f"compare_runs needs at least one score per model; no scores for {empty or 'any model'}")
    names = sorted(results, key=lambda name: float(np.mean(results[name])), reverse=True)
    fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(names) + 1.7))
    colors = sns.color_palette("tab10", len(names))
    for rank, (name, color) in enumerate(zip(names, colors)):
        scores = np.asarray(results[name], dtype=float)
        std = _spread(scores)
        ax.scatter(scores, np.full(len(scores), rank), color=color, alpha=0.45, s=22, zorder=2)
        if np.isnan(std):
            ax.plot(scores.mean(), rank, "D", color=color, markersize=7, zorder=3)
        else:
            ax.errorbar(scores.mean(), rank, xerr=std, fmt="D", color=color, capsize=6, elinewidth=2,
                        markersize=7, zorder=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    runs = sorted({len(scores) for scores in results.values()})
    counted = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}–{runs[-1]}"
    what = "diamond: mean ± std" if runs[-1] > 1 else "diamond: the single run"
    ax.set_xlabel(f"{xlabel} ({what}, dots: runs; {counted} run{'s' if runs[-1] > 1 else ''} per model)")
    ax.set_title(supported_ranking(results), fontsize=10)
    if all(0.0 <= s <= 1.0 for scores in results.values() for s in scores):
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


@torch.no_grad()
def attention_weights(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Head-averaged weights of every ``nn.MultiheadAttention`` in ``model`` when it reads ``x``.

    Runs ``model(x)`` once in eval mode and returns one (B, L, S) tensor per
    attention call, in call order: row ``t`` holds how much query ``t``
    attends to each key. Works whatever layout the layers use
    (``batch_first`` or not) and even if the model asks for no weights.
    """
    import inspect

    captured: list[torch.Tensor] = []

    def hook(module, args, kwargs, output):
        call = inspect.signature(module.forward).bind(*args, **kwargs).arguments
        call.update(need_weights=True, average_attn_weights=True)
        captured.append(module.forward(**call)[1].detach().cpu())  # .forward: no hooks, no recursion

    layers = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.MultiheadAttention layer to read weights from")
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured


def attention_maps(maps: Mapping[str, torch.Tensor], *, image: torch.Tensor | None = None,
                   size: float = 2.8, label: str = "row") -> Figure:
    """Heatmaps of named (L, S) attention matrices side by side (queries down, keys across).

    With ``image`` (C, H, W) the input is drawn first, so that with one
    sequence element per image row the heatmap rows line up with the image's.
    All maps share one colour scale.
    """
    if not maps:
        raise ValueError("attention_maps needs at least one (L, S) matrix")
    arrays = {name: w.detach().float().cpu().numpy() for name, w in maps.items()}
    bad = {name: a.shape for name, a in arrays.items() if a.ndim != 2}
    if bad:
        raise ValueError(f"attention_maps expects (L, S) matrices, one per map; got shapes {bad}")
    panels = len(arrays) + (image is not None)
    fig, axes = plt.subplots(1, panels, figsize=(size * panels + 0.8, size + 0.4), squeeze=False,
                             layout="constrained")
    axes = list(axes[0])
    if image is not None:
        _show(axes[0], image)
        axes[0].set_title("input", fontsize=9)
        axes = axes[1:]
    vmax = max(float(a.max()) for a in arrays.values())
    for ax, (name, array) in zip(axes, arrays.items()):
        step = max(1, max(array.shape) // 4)
        sns.heatmap(array, ax=ax, vmin=0.0, vmax=vmax, cmap="viridis", square=True, cbar=False,
                    xticklabels=step, yticklabels=step)
        ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"key {label}", fontsize=8)
        ax.set_ylabel(f"query {label}", fontsize=8)
    fig.colorbar(axes[-1].collections[0], ax=axes, shrink=0.85, label="attention weight")
    return fig
