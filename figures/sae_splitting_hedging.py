"""Feature splitting and hedging against dictionary width, with and without correlated
firing."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from superpose.plotting import SAE_KIND_COLORS, SAE_KIND_LABELS, save_figure
from superpose.registry import figure_script

LABELS = {kind: SAE_KIND_LABELS[kind] for kind in ("topk", "relu", "batchtopk", "jumprelu")}
COLORS = SAE_KIND_COLORS
STYLES = {"independent": ":", "correlated": "-"}
LINE_PANELS = (
    ("hedging", "hedging: matched latents' decoder\nalong the other true features"),
    (
        "hedging_correlated",
        "hedging along the latent's own group\n(correlated in the correlated world)",
    ),
    ("dead_fraction", "dead latents (never fire on held-out samples)"),
    ("split_fraction", "features split over 2 or more latents\n(cos ≥ 0.8, firing mostly on it)"),
)
SPLIT_BINS = (0, 1, 2, 3)
"""Split counts shown in the distribution panels (the last bin holds 3 or more)."""


def _lines(ax: plt.Axes, metrics: pd.DataFrame, column: str, title: str) -> None:
    """``column`` against the width ratio: mean over seeds per kind and world, every seed as
    a dot."""
    for (kind, world), rows in metrics.groupby(["kind", "world"]):
        mean = rows.groupby("ratio")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), STYLES[world], marker="o", ms=4, color=COLORS[kind])
        ax.scatter(rows["ratio"], rows[column], s=8, color=COLORS[kind], alpha=0.35)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks([0.25, 0.5, 1, 2, 4], ["¼", "½", "1", "2", "4"])
    ax.set_xlabel("dictionary width / feature count", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=8)


def _distribution(ax: plt.Axes, counts: pd.DataFrame, kind: str, world: str) -> None:
    """Stacked fractions of features by split count against width, summed over seeds."""
    rows = counts[(counts["kind"] == kind) & (counts["world"] == world)].copy()
    rows["bin"] = rows["split_count"].clip(upper=SPLIT_BINS[-1])
    table = rows.pivot_table(index="ratio", columns="bin", values="features", aggfunc="sum")
    table = table.reindex(columns=list(SPLIT_BINS), fill_value=0).fillna(0)
    fractions = table.div(table.sum(axis=1), axis=0)
    positions = np.arange(len(fractions))
    bottom = np.zeros(len(fractions))
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(SPLIT_BINS)))
    for split, color in zip(SPLIT_BINS, colors, strict=True):
        label = f"{split}+" if split == SPLIT_BINS[-1] else str(split)
        ax.bar(positions, fractions[split], bottom=bottom, color=color, label=label, width=0.8)
        bottom += fractions[split].to_numpy()
    ax.set_xticks(positions, [f"{r:g}" for r in fractions.index], fontsize=8)
    ax.set_xlabel("dictionary width / feature count", fontsize=8)
    ax.set_ylabel("fraction of features", fontsize=8)
    ax.set_title(f"{LABELS[kind]}, {world}: latents per feature (split count)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(title="latents", fontsize=7, title_fontsize=7, loc="lower left")


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_splitting_hedging.{png,pdf}`` from ``results/sae_splitting_hedging``."""
    folder = Path(results) / "sae_splitting_hedging"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no stored results at {folder}; run the experiment first")
    config = json.loads((folder / "config.json").read_text())
    metrics = pd.read_csv(folder / "metrics.csv")
    counts = pd.read_csv(folder / "split_counts.csv")
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.6))
    for ax, (column, title) in zip(grid.ravel()[:4], LINE_PANELS, strict=True):
        _lines(ax, metrics, column, title)
    handles = [
        plt.Line2D([], [], color=COLORS[kind], marker="o", label=LABELS[kind])
        for kind in config["kinds"]
    ]
    handles += [
        plt.Line2D([], [], color="k", ls=style, label=f"{world} world")
        for world, style in STYLES.items()
    ]
    grid[0, 0].legend(handles=handles, fontsize=7)
    for ax, kind in zip(grid[1, 1:], ("relu", "topk"), strict=True):
        _distribution(ax, counts, kind, "independent")
    fig.suptitle(
        f"Splitting and hedging against width: {config['n_features']} orthonormal features in "
        f"{config['n_features']} dims, p = {config['probability']}, magnitudes U[0, 1]; "
        f"correlated world: groups of {config['group']} with latent correlation "
        f"{config['correlation']} (Gaussian copula)\nTopK k = {config['k']}, ReLU L1 = "
        f"{config['l1_coefficient']}; {config['steps'] * config['batch_size'] / 1e6:.2g}M "
        f"samples per SAE, {config['seeds']} seeds (dots; lines: their mean); dashed: width = "
        "feature count",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "sae_splitting_hedging")


if __name__ == "__main__":
    figure_script(main, __doc__)
