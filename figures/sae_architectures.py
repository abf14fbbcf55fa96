"""SAE architectures on a scaled-down SynthSAEBench world at matched L0, beside the published
full-size scores."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from superpose import sae
from superpose.plotting import (
    SAE_KIND_COLORS,
    SAE_KIND_LABELS,
    chance_label,
    plot_chance,
    save_figure,
)
from superpose.registry import figure_script

LABELS = SAE_KIND_LABELS
COLORS = SAE_KIND_COLORS
METRICS = (
    ("mcc", "MCC"),
    ("latent_f1", "F1 per latent (SynthSAEBench's)"),
    ("explained_variance", "explained variance"),
    ("l0", "L0"),
    ("dead_latents", "dead latents (never fire on the held-out samples)"),
)
CHANCE_DRAWS = 4
"""Random dictionaries behind the MCC chance line (spread ≈ 0.001 at 512 × 2,048)."""


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_architectures.{png,pdf}`` from ``results/sae_architectures``."""
    folder = Path(results) / "sae_architectures"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no stored results at {folder}; run the experiment first")
    config = json.loads((folder / "config.json").read_text())
    metrics = pd.read_csv(folder / "metrics.csv")
    metrics["dead_latents"] = (metrics["dead_fraction"] * config["width"]).round()
    chosen = metrics[metrics["chosen"]].set_index("kind")
    # MCC of random unit dictionaries of the same width against random directions (the
    # world's are orthonormal in blocks of d_model: the same chance level within the spread)
    chance = sae.random_baseline(
        config["n_features"], config["d_model"], config["width"], n_draws=CHANCE_DRAWS
    )
    kinds = [kind for kind in LABELS if kind in chosen.index]
    fig, grid = plt.subplots(2, 3, figsize=(13, 8))
    axes = grid.ravel()
    positions = range(len(kinds))
    for ax, (column, title) in zip(axes, METRICS, strict=False):
        values = [chosen.loc[kind, column] for kind in kinds]
        ax.bar(positions, values, color=[COLORS[kind] for kind in kinds], width=0.7)
        for x, value in zip(positions, values, strict=True):
            ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=7)
        published = [config["published"].get(kind, {}).get(column) for kind in kinds]
        marks = [(x, value) for x, value in zip(positions, published, strict=True) if value]
        if marks:
            ax.scatter(
                *zip(*marks, strict=True),
                marker="D",
                s=30,
                facecolor="white",
                edgecolor="k",
                zorder=3,
                label="published, full size",
            )
            ax.legend(fontsize=7, loc="upper left")
        if column == "mcc":
            plot_chance(
                ax,
                chance.loc["mcc", "mean"],
                chance.loc["mcc", "std"],
                label=f"random dictionary: {chance_label(chance, 'mcc')}",
            )
            ax.legend(fontsize=7, loc="upper left")
        if column == "l0":
            ax.axhline(config["target_l0"], color="k", ls="--", lw=0.8, label="target L0")
            ax.set_ylim(0, 1.3 * max(*values, config["target_l0"]))  # the legend above the bars
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(positions, [LABELS[kind] for kind in kinds], rotation=35, ha="right")
        ax.tick_params(labelsize=8)
        ax.set_title(title, fontsize=9)
        if column in ("mcc", "latent_f1", "explained_variance"):
            ax.set_ylim(0, 1.08)
    trade = axes[-1]
    for kind in kinds:
        rows = metrics[metrics["kind"] == kind]
        trade.plot(
            rows["l0"], rows["mcc"], marker="o", ms=4, color=COLORS[kind], lw=1, label=LABELS[kind]
        )
        trade.scatter(
            chosen.loc[kind, "l0"], chosen.loc[kind, "mcc"], s=80, facecolor="none", edgecolor="k"
        )
    plot_chance(trade, chance.loc["mcc", "mean"], chance.loc["mcc", "std"])
    trade.legend(fontsize=7, loc="lower right")
    trade.axvline(config["target_l0"], color="k", ls="--", lw=0.8)
    trade.set_xscale("log")
    trade.set_xlabel("L0 (held out)", fontsize=8)
    trade.set_ylabel("MCC", fontsize=8)
    trade.tick_params(labelsize=8)
    trade.set_title("MCC against L0: penalty sweeps (circled: the pick)", fontsize=9)
    fig.suptitle(
        f"SAE architectures on a scaled SynthSAEBench world: {config['n_features']:,} features in "
        f"{config['d_model']} dims, width {config['width']:,}, matched L0 ≈ "
        f"{config['target_l0']:.1f} (k = {config['k']}), "
        f"{config['steps'] * config['batch_size'] / 1e6:.2g}M samples per SAE, seed "
        f"{config.get('seed', 0)}\n"
        "◇ = SynthSAEBench-16k published (16,384 features in 768 dims, width 4,096, L0 25, 200M "
        "samples)",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "sae_architectures")


if __name__ == "__main__":
    figure_script(main, __doc__)
