"""Matplotlib/seaborn drawing primitives. They take arrays or result tables; they never train."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

FEATURE_CMAP = "viridis"
"""Colour map for features ordered by importance (most important first)."""


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
) -> Figure:
    """The TMS intro figure: per model kind, ``WᵀW`` (+ bias) and the 2-D feature directions
    across feature probabilities.

    Args:
        weights: kind name → ``W: (instance, 2, n_features)``, one instance per probability.
        biases: kind name → ``b: (instance, n_features)``.
        feature_probability: ``(instance,)`` the probability each instance was trained at.
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
    fig.suptitle("Superposition appears as features get sparser (n=5 features, m=2 dims)")
    fig.tight_layout()
    return fig
