"""Sharkey et al. 2022: MMCS and dead latents of ReLU SAEs over L1 coefficient × dictionary size.

The L1 axis is the one the results name (``config.json``'s ``l1_axis``): ``λ`` for the default
run (the gallery's), the replication's ``α`` after ``--replication`` or ``--full``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from superpose import sae
from superpose.io import load_tensors
from superpose.plotting import CHANCE_COLOR, plot_chance, plot_heatmap, save_figure
from superpose.registry import figure_script

TITLES = {"independent": "independent firing", "correlated": "correlated firing"}
SMOOTHING = 16
"""Features per moving-average window in the per-feature panels."""
CHANCE_DRAWS = 4
"""Random dictionaries per size behind the chance levels (their spread is below 0.003)."""


AXIS_LABELS = {"l1_coefficient": "λ", "l1_alpha": "α"}
"""The symbol of each L1 axis."""


def grid(table: pd.DataFrame, column: str, l1_axis: str = "l1_coefficient") -> np.ndarray:
    """``column`` as ``(dictionary ratio, L1 value)`` values, both ascending, with the L1
    values in the column ``l1_axis``."""
    return table.pivot(index="dictionary_ratio", columns=l1_axis, values=column).to_numpy()


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_sharkey.{png,pdf}`` from ``results/sae_sharkey``."""
    folder = Path(results) / "sae_sharkey"
    metrics = pd.read_csv(folder / "metrics.csv")
    config = json.loads((folder / "config.json").read_text())
    best_cosine = load_tensors(folder / "best_cosine.safetensors")
    l1_axis = config.get("l1_axis", "l1_coefficient")  # the default run does not name it
    symbol = AXIS_LABELS[l1_axis]
    l1 = sorted(metrics[l1_axis].unique())
    ratios = sorted(metrics["dictionary_ratio"].unique())
    x_labels = [f"{value:.3g}" for value in l1]
    dense = len(l1) > 8  # the replication's 17 values: smaller cell text, upright tick labels
    cell_font = 5 if dense else 7
    sizes = [round(ratio * config["n_features"]) for ratio in ratios]
    # MMCS of random unit dictionaries of each size (random directions, as the world's are)
    chance = [
        sae.random_baseline(
            config["n_features"], config["d_model"], d_sae, n_draws=CHANCE_DRAWS
        ).loc["mmcs", "mean"]
        for d_sae in sizes
    ]
    y_labels = [
        f"{ratio:g}× ({d_sae})\nchance {level:.2f}"
        for ratio, d_sae, level in zip(ratios, sizes, chance, strict=True)
    ]
    fig, axes = plt.subplots(
        2, 3, figsize=(16, 8.6), width_ratios=[1, 1, 1.05], constrained_layout=True
    )
    for col, (variant, title) in enumerate(TITLES.items()):
        table = metrics[metrics["variant"] == variant]
        if table.empty:  # --replication-world trains the independent variant only
            for ax in (axes[0, col], axes[1, col], axes[col, 2]):
                ax.axis("off")
                ax.text(0.5, 0.5, f"{title}: not in this run", ha="center", transform=ax.transAxes)
            continue
        mmcs = grid(table, "mmcs", l1_axis)
        best = np.arange(mmcs.shape[1]) == np.nanargmax(mmcs, axis=1)[:, None]
        image = plot_heatmap(
            axes[0, col], mmcs, x_labels, y_labels, marked=best, fontsize=cell_font
        )
        axes[0, col].set_title(f"MMCS with the true features, {title}", fontsize=10)
        dead = plot_heatmap(
            axes[1, col],
            grid(table, "dead_fraction", l1_axis),
            x_labels,
            y_labels,
            cmap="magma",
            fmt="{:.0%}",
            fontsize=cell_font,
        )
        axes[1, col].set_title(f"dead latents (share of the dictionary), {title}", fontsize=10)
        for ax in axes[:, col]:
            if dense:
                ax.tick_params(axis="x", labelrotation=90)
            ax.set_xlabel(
                "L1 coefficient λ"
                if l1_axis == "l1_coefficient"
                else "L1 coefficient α (λ = α · d_model / d_sae)"
            )
            ax.set_ylabel("dictionary size / true features (latents)")
        line_ax = axes[col, 2]
        for ratio, row, level in zip(ratios, best, chance, strict=True):
            cosine = best_cosine[f"{variant}/{ratio:g}"][int(np.argmax(row))].numpy()
            smooth = np.convolve(cosine, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
            (line,) = line_ax.plot(
                np.arange(len(smooth)) + SMOOTHING / 2,
                smooth,
                label=f"{ratio:g}×, {symbol} = {l1[int(np.argmax(row))]:.2g}",
            )
            plot_chance(line_ax, level, label=None, color=line.get_color())
        line_ax.plot([], [], color=CHANCE_COLOR, ls="--", lw=1, label="random dictionary (chance)")
        line_ax.set_ylim(0, 1.02)
        line_ax.set_xlabel("true feature i (firing probability ∝ 0.99^i: rarer →)")
        line_ax.set_ylabel(f"best |cos| with a latent ({SMOOTHING}-feature mean)")
        line_ax.set_title(
            f"which features are found (best {symbol} per size), {title}", fontsize=10
        )
        line_ax.legend(fontsize=8, title="dictionary size", title_fontsize=8, loc="lower left")
        line_ax.grid(alpha=0.3)
    fig.colorbar(
        image, ax=axes[0, :2].tolist(), shrink=0.8, label=f"MMCS (box: best {symbol} per size)"
    )
    fig.colorbar(dead, ax=axes[1, :2].tolist(), shrink=0.8, label="dead latents")
    fig.suptitle(
        f"Sharkey et al. 2022: ReLU SAEs on {config['n_features']} sparse features in "
        f"{config['d_model']} dims ({config['expected_active']:.3g} active on average, "
        f"{config['steps'] * config['batch_size'] / 1e6:.2g}M samples per SAE)"
    )
    return save_figure(fig, Path(out) / "sae_sharkey")


if __name__ == "__main__":
    figure_script(main, __doc__)
