"""Memorization and double descent: test loss, dimensionalities and geometry against T.

Regimes, by a rule (:func:`regimes`): at each T compare the largest dimensionality of a
training point with the largest of a feature (both averaged over seeds) through ``r(T) =
log(max data dim / max feature dim)``, smooth ``r`` by a running mean over three neighbouring
T, and call every T below the crossover ``T*`` (the first T from which the smoothed ``r``
stays ≤ 0) memorizing and every T from ``T*`` on generalizing. One boundary, so the labels
cannot alternate with seed noise in the dimensionalities.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_vectors_2d, save_figure
from superpose.registry import figure_script

GEOMETRY_SIZES = (5, 15, 100, 500, 2000)
"""The data-set sizes whose feature directions and hidden vectors (of seed 0) are drawn."""

DATA_COLOR, FEATURE_COLOR = "tab:red", "tab:blue"


def _shade_regimes(ax: Axes, sizes: np.ndarray, memorizing: np.ndarray) -> None:
    """Shade each size's span (between geometric midpoints) by its regime."""
    edges = np.sqrt(sizes[1:] * sizes[:-1])
    lows = np.concatenate([[sizes[0] / 1.3], edges])
    highs = np.concatenate([edges, [sizes[-1] * 1.3]])
    for low, high, memo in zip(lows, highs, memorizing, strict=True):
        ax.axvspan(low, high, color=DATA_COLOR if memo else FEATURE_COLOR, alpha=0.07, lw=0)


SMOOTHING = 3
"""Neighbouring T in the running mean of the log dimensionality ratio."""


def regimes(max_data: np.ndarray, max_feature: np.ndarray) -> tuple[np.ndarray, int]:
    """``(memorizing, crossover)`` for per-T largest data and feature dimensionalities (T
    ascending): ``r = log(max_data / max_feature)`` smoothed by a running mean over
    :data:`SMOOTHING` neighbours (fewer at the ends); ``crossover`` is the first index from
    which the smoothed ``r`` stays ≤ 0 (``len`` if it never does) and ``memorizing`` is True
    before it."""
    ratio = np.log(np.maximum(max_data, 1e-12) / np.maximum(max_feature, 1e-12))
    half = SMOOTHING // 2
    smooth = np.array([ratio[max(0, i - half) : i + half + 1].mean() for i in range(len(ratio))])
    above = np.nonzero(smooth > 0)[0]
    crossover = int(above[-1]) + 1 if len(above) else 0
    return np.arange(len(ratio)) < crossover, crossover


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/double_descent.{png,pdf}`` from ``results/double_descent/runs.safetensors``."""
    path = Path(results) / "double_descent" / "runs.safetensors"
    stored = load_tensors(path)
    config = load_metadata(path)["config"]
    sizes = stored["dataset_sizes"].numpy()
    test_loss = stored["test_loss"].double().numpy()  # (size, seed)
    train_loss = stored["train_loss"].double().numpy()
    data_dim = [stored[f"data_dimensionality/{T}"].numpy() for T in sizes]
    feature_dim = [stored[f"feature_dimensionality/{T}"].numpy() for T in sizes]
    max_data = np.array([d.max(-1).mean() for d in data_dim])
    max_feature = np.array([d.max(-1).mean() for d in feature_dim])
    memorizing, crossover = regimes(max_data, max_feature)
    shown = [T for T in GEOMETRY_SIZES if T in sizes]
    if len(shown) < 3:  # another size list (e.g. a quick run): up to five spread over it
        shown = sorted(
            {int(sizes[k]) for k in np.linspace(0, len(sizes) - 1, 5).round().astype(int)}
        )

    fig = plt.figure(figsize=(3.0 * max(len(shown), 4), 11))
    grid = fig.add_gridspec(3, len(shown), height_ratios=[1.6, 1, 1])
    top = grid[0, :].subgridspec(1, 2, wspace=0.25)
    loss_ax, dim_ax = fig.add_subplot(top[0]), fig.add_subplot(top[1])

    _shade_regimes(loss_ax, sizes, memorizing)
    loss_ax.plot(sizes, test_loss.mean(1), "k-o", ms=4, label="test loss (fresh samples)")
    loss_ax.plot(
        sizes, train_loss.mean(1), color="0.5", ls="--", marker="s", ms=3, label="train loss"
    )
    for seed in range(test_loss.shape[1]):
        loss_ax.scatter(sizes, test_loss[:, seed], color="k", s=6, alpha=0.35, lw=0)
    peak = int(np.argmax(test_loss.mean(1)))
    loss_ax.annotate(
        f"test-loss peak, T={sizes[peak]}",
        (sizes[peak], test_loss[peak].mean()),
        xytext=(0, 14),
        textcoords="offset points",
        ha="center",
        fontsize=8,
        arrowprops={"arrowstyle": "->", "lw": 0.8},
    )
    loss_ax.set_xscale("log")
    loss_ax.set_yscale("log")
    losses = np.concatenate([test_loss.ravel(), train_loss.ravel()])
    losses = losses[losses > 0]
    loss_ax.set_ylim(max(losses.min() / 2, 1e-6), losses.max() * 3)  # the whole range
    loss_ax.axhline(1.0, color="0.3", lw=0.8, ls=":", label="1: an all-zero output")
    if 0 < crossover < len(sizes):
        boundary = float(np.sqrt(sizes[crossover - 1] * sizes[crossover]))
        loss_ax.axvline(boundary, color="0.3", lw=0.8, ls="-.")
        dim_ax_boundary = boundary
    else:
        dim_ax_boundary = None
    loss_ax.set_xlabel("training set size T")
    loss_ax.set_ylabel("loss  Σᵢ (xᵢ − x'ᵢ)²  (mean over samples)")
    loss_ax.set_title(
        "Test loss against T; shading: memorizing (red, T < T*) / generalizing (blue)\n"
        "T*: the smoothed largest data dimensionality falls below the largest feature one",
        fontsize=9,
    )
    loss_ax.legend(fontsize=8, loc="lower left")
    loss_ax.grid(alpha=0.3)

    rng = np.random.default_rng(0)
    for T, data, features in zip(sizes, data_dim, feature_dim, strict=True):
        for values, color in ((features, FEATURE_COLOR), (data, DATA_COLOR)):
            values = values.ravel()
            values = values[values > 1e-3]
            jitter = np.exp(rng.uniform(-0.08, 0.08, values.size))
            dim_ax.scatter(T * jitter, values, s=4, color=color, alpha=0.3, lw=0)
    dim_ax.plot(sizes, max_data, color=DATA_COLOR, lw=1.5, label="training points (max)")
    dim_ax.plot(sizes, max_feature, color=FEATURE_COLOR, lw=1.5, label="features (max)")
    m = config["n_hidden"]
    dim_ax.plot(sizes, np.minimum(1.0, m / sizes), "k:", lw=1, label="m/T (a regular T-gon)")
    if dim_ax_boundary is not None:
        dim_ax.axvline(dim_ax_boundary, color="0.3", lw=0.8, ls="-.", label="T* (regime rule)")
    dim_ax.set_xscale("log")
    dim_ax.set_yscale("log")
    dim_ax.set_ylim(1e-3, 1.5)
    dim_ax.set_xlabel("training set size T")
    dim_ax.set_ylabel("dimensionality  ‖v‖² / Σ (v̂·u)²")
    dim_ax.set_title("Dimensionality of each training point and each feature", fontsize=10)
    dim_ax.legend(fontsize=8, loc="lower left")
    dim_ax.grid(alpha=0.3)

    for col, T in enumerate(shown):
        W = stored[f"W/{T}"][0].numpy()  # seed 0: (m, n)
        hidden = stored[f"hidden/{T}"][0].numpy()  # (T, m)
        feature_ax = fig.add_subplot(grid[1, col])
        data_ax = fig.add_subplot(grid[2, col])
        plot_vectors_2d(feature_ax, W.T, FEATURE_COLOR, lw=0.8)
        plot_vectors_2d(data_ax, hidden, DATA_COLOR, lw=0.8)
        k = int(np.where(sizes == T)[0][0])
        feature_ax.set_title(
            f"T = {T}  ({'memorizing' if memorizing[k] else 'generalizing'})", fontsize=9
        )
    fig.axes[2].set_ylabel("features: columns of W")
    fig.axes[3].set_ylabel("training points: h = W x")
    fig.suptitle(
        f"Superposition, memorization and double descent (ReLU output, n={config['n_features']}"
        f" features, m={m}, S={1 - config['feature_probability']:g}, unit-norm samples, "
        f"{config['steps']:,} full-batch AdamW steps, {test_loss.shape[1]} seeds per T)"
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "double_descent")


if __name__ == "__main__":
    figure_script(main, __doc__)
