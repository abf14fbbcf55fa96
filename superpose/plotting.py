"""Matplotlib/seaborn drawing primitives. They take arrays or result tables; they never train."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from superpose.geometry import POLYTOPES

FEATURE_CMAP = "viridis"
"""Colour map for features ordered by importance (most important first)."""

SAE_KIND_LABELS = {
    "relu": "ReLU (L1)",
    "jumprelu": "JumpReLU",
    "topk": "TopK",
    "batchtopk": "BatchTopK",
    "matryoshka": "Matryoshka",
}
"""Each SAE kind's name in figures, in the order figures list them."""

SAE_KIND_COLORS = {
    "relu": "tab:gray",
    "jumprelu": "tab:orange",
    "topk": "tab:blue",
    "batchtopk": "tab:green",
    "matryoshka": "tab:purple",
}
"""Each SAE kind's colour, the same in every figure."""


def save_figure(
    fig: Figure, path: str | Path, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150
) -> list[Path]:
    """Save ``fig`` as ``path.<fmt>`` for each format (creating folders) and close it.

    Returns the written paths, in ``formats`` order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def plot_gram(ax: Axes, gram: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Draw ``WᵀW`` ``(n_features, n_features)`` as a red-blue heatmap on [-1, 1], with the
    bias ``(n_features,)`` as an extra column on the right when given."""
    matrix = gram if bias is None else np.column_stack([gram, np.full(len(gram), np.nan), bias])
    ax.imshow(matrix, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_directions(ax: Axes, W: np.ndarray) -> None:
    """Draw the columns of a 2-D ``W: (2, n_features)`` as arrows from the origin, coloured
    by feature index (importance order)."""
    if W.shape[0] != 2:
        raise ValueError(f"plot_feature_directions needs W shaped (2, n_features), got {W.shape}")
    colors = plt.get_cmap(FEATURE_CMAP)(np.linspace(0, 0.9, W.shape[1]))
    for i in range(W.shape[1]):
        ax.plot([0, W[0, i]], [0, W[1, i]], color=colors[i], lw=2)
        ax.scatter(W[0, i], W[1, i], color=colors[i], s=18, zorder=3)
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5, zorder=0)
    ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_norm_bars(ax: Axes, norms: np.ndarray, superposition: np.ndarray) -> None:
    """Horizontal bars of ``‖W_i‖`` ``(n_features,)`` coloured by ``Σ_{j≠i}(Ŵ_i·W_j)²``
    (black: a dedicated dimension, yellow: heavy interference), as in the paper."""
    colors = plt.get_cmap("plasma")(np.clip(superposition, 0, 1) * 0.9)
    ax.barh(np.arange(len(norms)), norms, color=colors, height=0.8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.2, float(norms.max()) * 1.05))
    ax.set_yticks([])


def intro_figure(
    weights: dict[str, np.ndarray],
    biases: dict[str, np.ndarray],
    feature_probability: Sequence[float],
    n_seeds: int = 1,
) -> Figure:
    """The TMS intro figure: per model kind, ``WᵀW`` (+ bias) and the 2-D feature directions
    across feature probabilities.

    Args:
        weights: kind name → ``W: (instance, 2, n_features)``, one instance per probability.
        biases: kind name → ``b: (instance, n_features)``.
        feature_probability: ``(instance,)`` the probability each instance was trained at.
        n_seeds: seeds each shown instance was the best of (named in the title when > 1).
    """
    kinds = list(weights)
    n_cols = len(feature_probability)
    fig, axes = plt.subplots(
        2 * len(kinds), n_cols, figsize=(1.9 * n_cols, 3.8 * len(kinds)), squeeze=False
    )
    for row, kind in enumerate(kinds):
        W, b = weights[kind], biases[kind]
        for col, probability in enumerate(feature_probability):
            plot_gram(axes[2 * row, col], W[col].T @ W[col], b[col])
            plot_feature_directions(axes[2 * row + 1, col], W[col])
            axes[2 * row, col].set_title(f"1−S = {probability:g}", fontsize=9)
        axes[2 * row, 0].set_ylabel(f"{kind}\nWᵀW | b")
        axes[2 * row + 1, 0].set_ylabel(f"{kind}\nW columns")
    protocol = f", best of {n_seeds} seeds each" if n_seeds > 1 else ""
    fig.suptitle(
        f"Superposition appears as features get sparser (n=5 features, m=2 dims{protocol})"
    )
    fig.tight_layout()
    return fig


STICKY_FRACTIONS = tuple(
    (polytope.fraction, str(Fraction(polytope.n_dimensions, polytope.n_features)))
    for polytope in POLYTOPES
)
"""The feature-dimensionality fractions TMS finds models stick at (one per polytope of
:data:`superpose.geometry.POLYTOPES`), with their labels: 1, 3/4, 2/3, 1/2, 2/5, 3/8."""


def plot_sticky_fractions(ax: Axes, fontsize: float = 8) -> None:
    """Mark the sticky fractions as dashed horizontal lines, labelled at the right edge."""
    for fraction, label in STICKY_FRACTIONS:
        ax.axhline(fraction, color="0.65", lw=0.8, ls="--", zorder=0)
        ax.annotate(
            label,
            (1.0, fraction),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=fontsize,
        )


def sparsity_sweep_figure(
    W: np.ndarray,
    norms: np.ndarray,
    superposition: np.ndarray,
    feature_probability: Sequence[float],
    title: str,
) -> Figure:
    """Per feature probability (one column each): ``WᵀW`` on top and the norm bars coloured by
    superposition below, as in the TMS figure "superposition as sparsity varies".

    Args:
        W: ``(instance, n_hidden, n_features)``, one instance per probability.
        norms: ``(instance, n_features)`` ``‖W_i‖``.
        superposition: ``(instance, n_features)`` ``Σ_{j≠i}(Ŵ_i·W_j)²``.
        feature_probability: ``(instance,)``.
        title: the figure's title.
    """
    n_cols = len(feature_probability)
    fig, axes = plt.subplots(2, n_cols, figsize=(1.75 * n_cols, 4.2), squeeze=False)
    for col, probability in enumerate(feature_probability):
        plot_gram(axes[0, col], W[col].T @ W[col])
        plot_norm_bars(axes[1, col], norms[col], superposition[col])
        axes[0, col].set_title(
            f"1−S = {probability:g}\nS = {100 * (1 - probability):.1f}%", fontsize=9
        )
        axes[1, col].set_xlabel(r"$\|W_i\|$", fontsize=8)
    axes[0, 0].set_ylabel("WᵀW")
    axes[1, 0].set_ylabel("features (by importance)")
    mappable = plt.cm.ScalarMappable(cmap="plasma", norm=plt.Normalize(0, 1 / 0.9))
    bar = fig.colorbar(mappable, ax=axes[1, :].tolist(), shrink=0.8, pad=0.01)
    bar.set_label(r"$\sum_{j\neq i}(\hat{W}_i\cdot W_j)^2$", fontsize=9)
    fig.suptitle(title)
    return fig


def plot_dimensions_per_feature(
    ax: Axes,
    inverse_density: np.ndarray,
    dimensions_per_feature: np.ndarray,
    feature_dimensionality: np.ndarray | None = None,
) -> None:
    """Dimensions per feature ``(instance,)`` against ``1/(1−S)`` ``(instance,)`` on a log x
    axis, the sticky fractions as dashed horizontal lines, and optionally each feature's
    dimensionality ``(instance, n_features)`` as a faint scatter behind the curve."""
    plot_sticky_fractions(ax)
    if feature_dimensionality is not None:
        rng = np.random.default_rng(0)
        x = np.repeat(inverse_density[:, None], feature_dimensionality.shape[1], axis=1)
        jitter = np.exp(rng.uniform(-0.04, 0.04, size=x.shape))
        ax.scatter(
            (x * jitter).ravel(),
            feature_dimensionality.ravel(),
            s=4,
            alpha=0.25,
            color="tab:blue",
            lw=0,
            label="feature dimensionality D_i",
            zorder=1,
        )
    ax.plot(
        inverse_density,
        dimensions_per_feature,
        color="k",
        marker="o",
        ms=3,
        lw=1.5,
        label="dimensions per feature m/‖W‖²_F",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.1)
    ax.set_xlabel("1/(1−S)")
    ax.set_ylabel("dimensions per feature")


def plot_stacked_counts(
    ax: Axes, x_labels: Sequence[str], counts: np.ndarray, names: Sequence[str]
) -> None:
    """Stacked bars: one bar per row of ``counts: (n_bars, n_kinds)``, a segment per kind
    coloured consistently, labelled ``names`` ``(n_kinds,)`` in the legend."""
    colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    bottom = np.zeros(len(counts))
    positions = np.arange(len(counts))
    for k, name in enumerate(names):
        if counts[:, k].any():
            ax.bar(positions, counts[:, k], bottom=bottom, color=colors[k], label=name, width=0.8)
        bottom += counts[:, k]
    ax.set_xticks(positions, x_labels, rotation=45, ha="right", fontsize=8)


def plot_neuron_weights(ax: Axes, W: np.ndarray, threshold: float = 0.1) -> None:
    """Each neuron's input weights ``W: (n_neurons, n_features)`` as a horizontal stacked bar:
    positive weights to the right, negative to the left, one colour per feature (importance
    order); a neuron is marked "mono" or "poly" by how many weights exceed ``threshold``."""
    n_neurons, n_features = W.shape
    colors = plt.get_cmap(FEATURE_CMAP)(np.linspace(0, 0.9, n_features))
    for k in range(n_neurons):
        right = left = 0.0
        for i in range(n_features):
            w = float(W[k, i])
            if w > 0:
                ax.barh(k, w, left=right, color=colors[i], height=0.8, lw=0)
                right += w
            elif w < 0:
                ax.barh(k, w, left=left, color=colors[i], height=0.8, lw=0)
                left += w
    ax.axvline(0, color="k", lw=0.6)
    ax.invert_yaxis()
    ax.set_yticks(np.arange(n_neurons))
    ax.tick_params(axis="y", labelsize=6)


def plot_feature_directions_colored(
    ax: Axes, W: np.ndarray, groups: Sequence[int], labels: bool = True
) -> None:
    """The columns of ``W: (2, n_features)`` as arrows from the origin coloured by ``groups``
    ``(n_features,)`` (e.g. the correlated set a feature belongs to), numbered when ``labels``."""
    if W.shape[0] != 2:
        raise ValueError(f"needs W shaped (2, n_features), got {W.shape}")
    palette = plt.get_cmap("tab10")
    for i in range(W.shape[1]):
        color = palette(int(groups[i]) % 10)
        ax.annotate(
            "",
            xy=(W[0, i], W[1, i]),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6},
        )
        if labels:
            ax.text(
                1.12 * W[0, i],
                1.12 * W[1, i],
                str(i),
                color=color,
                fontsize=7,
                ha="center",
                va="center",
            )
    limit = max(1.3, 1.25 * float(np.abs(W).max()))
    _square_axes(ax, limit)


def neuron_weights_figure(
    W: np.ndarray,
    feature_probability: Sequence[float],
    counts: dict[str, np.ndarray],
    title: str,
    counts_label: str = "neurons",
) -> Figure:
    """Per feature probability (one column each), each neuron's input weights as stacked bars
    (:func:`plot_neuron_weights`), and below them ``counts`` against ``1 − S``.

    Args:
        W: ``(instance, n_neurons, n_features)`` input weights, one instance per probability.
        feature_probability: ``(instance,)``.
        counts: legend label → ``(instance,)`` values drawn as lines over ``1 − S`` (log x),
            e.g. monosemantic and polysemantic neuron counts.
        title: the figure's title.
        counts_label: y label of the counts panel.
    """
    n_cols = len(feature_probability)
    n_neurons = W.shape[1]
    fig = plt.figure(figsize=(max(8.0, 1.8 * n_cols), 2.2 + 0.22 * n_neurons + 2.6))
    grid = fig.add_gridspec(2, n_cols, height_ratios=[0.22 * n_neurons + 1.0, 2.4])
    for col, probability in enumerate(feature_probability):
        ax = fig.add_subplot(grid[0, col])
        plot_neuron_weights(ax, W[col])
        ax.set_title(f"1−S = {probability:g}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        if col == 0:
            ax.set_ylabel("neuron")
        else:
            ax.set_yticklabels([])
    mappable = plt.cm.ScalarMappable(
        cmap=FEATURE_CMAP, norm=plt.Normalize(0, (W.shape[2] - 1) / 0.9)
    )
    bar = fig.colorbar(mappable, ax=fig.axes, shrink=0.6, pad=0.01)
    bar.set_label("feature (by importance)", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    for label, values in counts.items():
        ax.plot(feature_probability, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("feature probability 1−S (sparser →)")
    ax.set_ylabel(counts_label)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_dimensionality_by_group(
    ax: Axes,
    inverse_density: np.ndarray,
    feature_dimensionality: np.ndarray,
    group: np.ndarray,
    names: Sequence[str],
) -> None:
    """Each feature's dimensionality ``(instance, n_features)`` against ``1/(1−S)``
    ``(instance,)`` (log x, slightly jittered), coloured by ``group: (instance, n_features)``
    indices into ``names`` (e.g. the polytope a feature's tegum factor forms), with the
    sticky fractions as dashed lines."""
    plot_sticky_fractions(ax, fontsize=7)
    colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    rng = np.random.default_rng(0)
    x = np.repeat(inverse_density[:, None], feature_dimensionality.shape[1], axis=1)
    x = x * np.exp(rng.uniform(-0.03, 0.03, size=x.shape))
    for k, name in enumerate(names):
        chosen = group == k
        if chosen.any():
            ax.scatter(
                x[chosen],
                feature_dimensionality[chosen],
                s=6,
                color=colors[k],
                alpha=0.6,
                lw=0,
                label=name,
            )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("1/(1−S)")
    ax.set_ylabel("feature dimensionality D_i")


def plot_vectors_2d(ax: Axes, vectors: np.ndarray, color: str, lw: float = 1.2) -> None:
    """Draw 2-D ``vectors: (n_vectors, 2)`` (feature directions or hidden vectors) as lines
    from the origin with a dot at each tip, on square axes scaled to the longest vector."""
    if vectors.ndim != 2 or vectors.shape[1] != 2:
        raise ValueError(
            f"plot_vectors_2d needs vectors shaped (n_vectors, 2), got {vectors.shape}"
        )
    segments = np.stack([np.zeros_like(vectors), vectors], axis=1)
    ax.add_collection(LineCollection(segments, colors=color, linewidths=lw, alpha=0.8))
    ax.scatter(vectors[:, 0], vectors[:, 1], color=color, s=8, zorder=3, lw=0)
    limit = 1.15 * max(float(np.abs(vectors).max()), 1e-6)
    _square_axes(ax, limit)


def plot_heatmap(
    ax: Axes,
    values: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    cmap: str = "viridis",
    vmin: float = 0.0,
    vmax: float = 1.0,
    fmt: str = "{:.2f}",
    marked: np.ndarray | None = None,
    fontsize: float = 7,
) -> AxesImage:
    """``values: (n_rows, n_columns)`` as coloured cells with each value written in it
    (``fmt``; NaN cells blank), row 0 at the bottom; ``x_labels`` ``(n_columns,)`` and
    ``y_labels`` ``(n_rows,)`` name the cells; cells where ``marked`` (bool, same shape) is
    true get a black frame (e.g. the best of each row). Returns the image, for a colour bar."""
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
    colormap = plt.get_cmap(cmap)
    for row, col in np.ndindex(values.shape):
        value = values[row, col]
        if np.isnan(value):
            continue
        red, green, blue, _ = colormap((value - vmin) / (vmax - vmin))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(
            col,
            row,
            fmt.format(value),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if dark else "black",
        )
        if marked is not None and marked[row, col]:
            ax.add_patch(
                plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="k", lw=2, zorder=3)
            )
    ax.set_xticks(np.arange(values.shape[1]), x_labels)
    ax.set_yticks(np.arange(values.shape[0]), y_labels)
    return image


CHANCE_COLOR = "0.35"
"""Colour of a chance-level line (:func:`plot_chance`)."""


def plot_chance(
    ax: Axes,
    level: float,
    spread: float = 0.0,
    *,
    label: str | None = "chance (random dictionary)",
    color: str = CHANCE_COLOR,
) -> None:
    """Mark a score's chance level on ``ax``: a dashed horizontal line at ``level`` (e.g.
    the ``mean`` of :func:`superpose.sae.random_baseline`) with ``level ± spread`` (its
    ``std``) shaded. ``label`` names the line in a legend (None: no entry)."""
    if spread > 0:
        ax.axhspan(level - spread, level + spread, color=color, alpha=0.12, lw=0, zorder=0)
    ax.axhline(level, color=color, ls="--", lw=1, label=label, zorder=1)


def chance_label(baseline: pd.DataFrame, score: str) -> str:
    """``"chance 0.51 ± 0.01"`` for ``score`` (``"mmcs"``, ``"mcc"``, ``"recovered"``) of a
    :func:`superpose.sae.random_baseline` table."""
    return f"chance {baseline.loc[score, 'mean']:.2f} ± {baseline.loc[score, 'std']:.2f}"


def _square_axes(ax: Axes, limit: float) -> None:
    """Square, tick-free axes over ``[-limit, limit]²`` with faint lines through the origin
    (for 2-D feature directions and hidden vectors)."""
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5, zorder=0)
    ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])
