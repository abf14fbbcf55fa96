"""SAE read-out phase diagram: fraction of true features recovered against n/m and 1 − S."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from superpose.plotting import plot_heatmap, save_figure
from superpose.registry import figure_script

NAMES = {
    "relu": "ReLU + L1 (best λ)",
    "topk": "TopK (k = n(1−S))",
    "batchtopk": "BatchTopK (k = n(1−S))",
    "jumprelu": "JumpReLU + L0 (best λ)",
    "matryoshka": "Matryoshka BatchTopK",
}


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_readout.{png,pdf}`` from ``results/sae_readout``."""
    folder = Path(results) / "sae_readout"
    metrics = pd.read_csv(folder / "metrics.csv")
    config = json.loads((folder / "config.json").read_text())
    best = metrics[metrics["best"] == 1]
    kinds = config["kinds"]
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(3.6 * len(kinds) + 1, 4.4), squeeze=False, sharey=True
    )
    for ax, kind in zip(axes[0], kinds, strict=True):
        table = best[best["kind"] == kind].pivot(
            index="feature_probability", columns="features_per_dimension", values="recovered"
        )
        image = plot_heatmap(
            ax,
            table.to_numpy(),
            [f"{ratio:g}\n({round(ratio * config['d_model'])})" for ratio in table.columns],
            [f"{p:g}" for p in table.index],
        )
        ax.set_title(NAMES.get(kind, kind), fontsize=10)
    axes[0, 0].set_ylabel("feature density 1−S")
    fig.supxlabel(
        f"features per dimension n/m (in brackets: n features; m = {config['d_model']} dims)",
        y=-0.04,
    )
    fig.colorbar(
        image,
        ax=axes[0].tolist(),
        shrink=0.85,
        pad=0.01,
        label=f"fraction of features recovered (|cos| > {config['threshold']:g})",
    )
    fig.suptitle(
        "Reading features out of superposition: SAEs with one latent per true feature, "
        f"{config['steps'] * config['batch_size'] / 1e6:.2g}M samples each",
        y=1.02,
    )
    return save_figure(fig, Path(out) / "sae_readout")


if __name__ == "__main__":
    figure_script(main, __doc__)
