"""course_utils.plotting renders headless (Agg) and draws what it says."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from scipy.signal import savgol_filter

from course_utils import data, plotting
from course_utils.training import History


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _history(values):
    h = History()
    h.steps = [{"epoch": 1, "step": i, "loss": v, "acc": 1 - v, "time": i} for i, v in enumerate(values)]
    return h


def test_image_grid_titles_with_class_names():
    splits = data.cifar10(n_train=10, n_test=10)
    x, y = splits.train.tensors
    fig = plotting.image_grid(x, y, splits.classes, ncols=5)
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 10
    assert [ax.get_title() for ax in images] == [splits.classes[int(i)] for i in y]
    fig.canvas.draw()


def test_image_grid_undoes_normalisation_and_handles_grayscale():
    splits = data.mnist(n_train=3, n_test=3, normalize=True)
    x, y = splits.train.tensors
    fig = plotting.image_grid(x, y, ncols=8, mean=data.MNIST_MEAN, std=data.MNIST_STD)
    shown = fig.axes[0].images[0].get_array()
    raw = data.mnist(n_train=3, n_test=3).train.tensors[0][0, 0].numpy()
    assert np.allclose(shown, raw, atol=1e-5)
    assert len(fig.axes) == 3


def test_smoothing_reduces_noise_and_copes_with_short_series():
    rng = np.random.default_rng(0)
    noisy = np.linspace(1, 0, 300) + rng.normal(0, 0.2, 300)
    smooth = plotting.smooth(noisy, 51)
    assert np.std(np.diff(smooth)) < np.std(np.diff(noisy)) / 5
    assert np.allclose(plotting.smooth([1.0, 2.0], 51), [1.0, 2.0])
    assert len(plotting.smooth(list(range(10)), 51)) == 10


def test_smoothing_window_is_at_most_a_fifth_of_the_series():
    rng = np.random.default_rng(1)
    assert plotting.smoothing_window(1000) == 51
    assert plotting.smoothing_window(100) == 19
    assert plotting.smoothing_window(35) == 7
    assert plotting.smoothing_window(34) is None
    noisy = rng.normal(0, 1, 100)
    assert np.allclose(plotting.smooth(noisy), savgol_filter(noisy, 19, 2))
    short = rng.normal(0, 1, 32)
    assert np.array_equal(plotting.smooth(short), short), "a 32-step series is drawn as it is"


@pytest.mark.parametrize("n", [32, 40, 60, 100, 160, 300])
def test_smoothing_follows_noiseless_learning_curves(n):
    """Smoothing must not change the shape of a curve, least of all at its end.

    The window used to be as long as the series: one quadratic over 32 steps bent a late rise upwards
    by 14 % of its range at the last step, and moved a curve by up to 21 % of its range elsewhere.
    """
    t = np.arange(n)
    for name, curve in (("saturating loss", 2.3 * np.exp(-t / (n / 6)) + 0.5),
                        ("late rise in accuracy", 0.1 + 0.2 / (1 + np.exp(-(t - 0.75 * n) / (n / 20))))):
        error = np.abs(plotting.smooth(curve) - curve).max() / np.ptp(curve)
        assert error < 0.02, f"{name}, {n} steps: the smoothed curve strays {error:.1%} of its range from the data"


def test_training_curves_draw_short_runs_unsmoothed():
    runs = {"double": _history(np.linspace(2, 1, 32)), "vanilla": _history(np.linspace(2, 0.5, 300))}
    fig = plotting.training_curves(runs)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["double (unsmoothed)", "vanilla"]
        assert len(ax.lines) == 3  # the short run once, raw; the long one raw + smoothed
    raw = fig.axes[0].lines[0].get_ydata()
    assert np.allclose(raw, np.linspace(2, 1, 32))


def test_training_curves_for_several_runs_share_axes():
    runs = {"logistic": _history(np.linspace(2, 0.5, 100)), "mlp": _history(np.linspace(2, 0.1, 100))}
    fig = plotting.training_curves(runs)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["logistic", "mlp"]
        assert len(ax.lines) == 4  # raw + smoothed per run
    assert plotting.training_curves(runs["mlp"], keys=("loss",)).axes[0].get_ylabel() == "training loss"


def test_pca_scatter_colours_by_label():
    splits = data.mnist(n_train=0, n_test=600)
    x, y = splits.test.tensors
    fig = plotting.pca_scatter(x, y, splits.classes, title="pixels")
    ax = fig.axes[0]
    assert ax.get_title() == "pixels"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [c for c in splits.classes if int(c) in set(y.tolist())]
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 600 and np.isfinite(offsets).all()


def test_reconstruction_and_interpolation_strips():
    x = data.cifar10(n_train=0, n_test=8).test.tensors[0]
    fig = plotting.reconstructions(x, x.flip(-1), n=6)
    assert sum(1 for ax in fig.axes if ax.images) == 12
    steps = torch.stack([x[0] * (1 - t) + x[1] * t for t in torch.linspace(0, 1, 7)])
    fig = plotting.interpolation_strips({"pixel space": steps, "latent space": steps[:5]})
    assert sum(1 for ax in fig.axes if ax.images) == 12
    assert fig.axes[0].get_ylabel() == "pixel space"


def test_compare_runs_ranks_by_mean_and_draws_every_run():
    results = {"vanilla": [0.50, 0.52], "double": [0.61, 0.63, 0.62], "early": [0.55]}
    fig = plotting.compare_runs(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["double", "early", "vanilla"]
    dots = sorted(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert dots == [1, 2, 3], "one dot per run"
    assert ax.xaxis.get_major_formatter().__class__.__name__ == "PercentFormatter"
    fig.canvas.draw()
    with pytest.raises(ValueError, match="early"):
        plotting.compare_runs({"vanilla": [0.5], "early": []})


def test_compare_runs_draws_mean_plus_minus_std_error_bars():
    results = {"vanilla": [0.40, 0.42, 0.44], "double": [0.39, 0.45, 0.41]}
    ax = plotting.compare_runs(results).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2, "one error bar per model with repeated runs"
    for container, name in zip(bars, ["vanilla", "double"]):  # drawn best mean first
        (start, end), = container.lines[2][0].get_segments()
        scores = np.asarray(results[name])
        assert np.allclose([start[0], end[0]], [scores.mean() - scores.std(ddof=1), scores.mean() + scores.std(ddof=1)])
    assert "≈" in ax.get_title(), "overlapping error bars are not presented as a ranking"


def test_compare_runs_with_one_run_per_model_claims_no_ranking():
    fig = plotting.compare_runs({"vanilla": [0.305], "early": [0.28], "double": [0.30]})
    ax = fig.axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)], "a single run has no spread to draw"
    assert ax.get_title().startswith("no ranking")
    assert "1 run per model" in ax.get_xlabel() and "nan" not in ax.get_xlabel().lower()
    fig.canvas.draw()


def test_supported_ranking_separates_only_what_the_spread_allows():
    results = {"vanilla": [0.50, 0.51, 0.52], "double": [0.60, 0.61, 0.62], "late": [0.505, 0.515, 0.49]}
    assert plotting.supported_ranking(results) == "double > vanilla ≈ late"
    assert plotting.supported_ranking({"a": [0.5, 0.6], "b": [0.1, 0.2]}) == "a > b"
    assert plotting.supported_ranking({"a": [0.5], "b": [0.4, 0.41]}).startswith("no ranking")
    with pytest.raises(ValueError):
        plotting.supported_ranking({"a": []})


def test_attention_weights_reads_every_layer_even_when_the_model_asks_for_none():
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.second = torch.nn.MultiheadAttention(8, 4)  # (L, B, E) layout

        def forward(self, x):
            x = self.first(x, x, x, need_weights=False)[0]
            y = x.transpose(0, 1)
            return self.second(y, y, y)[0].transpose(0, 1)

    model = Tiny().train()
    x = torch.randn(3, 5, 8)
    maps = plotting.attention_weights(model, x)
    assert model.training, "the model's train mode is restored"
    assert [tuple(m.shape) for m in maps] == [(3, 5, 5), (3, 5, 5)]
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 5))
    expected = model.first(x, x, x, need_weights=True, average_attn_weights=True)[1]
    torch.testing.assert_close(maps[0], expected.detach())
    assert not model.first._forward_hooks, "hooks are removed afterwards"
    with pytest.raises(ValueError, match="no nn.MultiheadAttention"):
        plotting.attention_weights(torch.nn.Linear(8, 8), x)


def test_attention_maps_share_one_colour_scale_and_show_the_input():
    maps = {"no position": torch.full((4, 4), 0.25), "learned": torch.eye(4)}
    fig = plotting.attention_maps(maps, image=torch.rand(1, 4, 4))
    heat = [ax for ax in fig.axes if ax.collections and ax.get_title()]  # the colour bar has no title
    assert [ax.get_title() for ax in heat] == ["no position", "learned"]
    assert {ax.collections[0].get_clim() for ax in heat} == {(0.0, 1.0)}
    assert any(ax.get_title() == "input" and ax.images for ax in fig.axes)
    fig.canvas.draw()
    with pytest.raises(ValueError, match="shapes"):
        plotting.attention_maps({"batch": torch.ones(2, 4, 4)})


def _epochs(train_loss, val_loss, lrs):
    h = History()
    h.epochs = [{"epoch": i + 1, "train_loss": t, "train_acc": 1 - t / 3, "val_loss": v, "val_acc": None if v is None else 1 - v / 3,
                 "lr": lr} for i, (t, v, lr) in enumerate(zip(train_loss, val_loss, lrs))]
    return h


def test_epoch_curves_draw_both_splits_and_mark_each_learning_rate_drop():
    train, val = [2.0, 1.5, 1.0, 0.6, 0.3, 0.2], [2.1, 1.7, 1.6, 1.7, 1.9, 2.0]
    fig = plotting.epoch_curves(_epochs(train, val, [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5]))
    assert len(fig.axes) == 2
    loss_ax = fig.axes[0]
    curves = {line.get_label(): line for line in loss_ax.lines if line.get_linestyle() == "-"}
    assert list(curves["training"].get_ydata()) == train and list(curves["validation"].get_ydata()) == val
    drops = [line for line in loss_ax.lines if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in drops] == [3.5, 5.5]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()][2:] == [
        "learning rate 1e-03 → 1e-04", "learning rate 1e-04 → 1e-05"]


def test_epoch_curves_without_validation_or_epochs():
    h = _epochs([2.0, 1.0], [None, None], [0.1, 0.1])
    fig = plotting.epoch_curves(h, keys=("loss",))
    assert [line.get_label() for line in fig.axes[0].lines] == ["training"]
    with pytest.raises(ValueError, match="finished epoch"):
        plotting.epoch_curves(History())
