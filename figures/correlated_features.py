"""TMS correlated features: local orthogonal bases, antipodal anticorrelated pairs, PCA collapse."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_feature_directions_colored, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/correlated_features.{png,pdf}`` from ``results/correlated_features``."""
    folder = Path(results) / "correlated_features"
    stored = load_tensors(folder / "weights.safetensors")
    all_sets = load_metadata(folder / "weights.safetensors")["sets"]
    metrics = pd.read_csv(folder / "metrics.csv", keep_default_na=False)
    probability = stored["feature_probability"].tolist()
    settings = list(dict.fromkeys(metrics["setting"]))
    fig, axes = plt.subplots(
        len(settings),
        len(probability),
        figsize=(2.1 * len(probability), 2.3 * len(settings)),
        squeeze=False,
    )
    for row, name in enumerate(settings):
        W = stored[f"{name}/W"].numpy()
        groups = np.arange(W.shape[2])
        for k, group in enumerate(all_sets[name]):
            groups[group] = k
        table = metrics[metrics["setting"] == name].reset_index(drop=True)
        for col, p in enumerate(probability):
            ax = axes[row, col]
            plot_feature_directions_colored(ax, W[col], groups)
            label = table.loc[col, "outcome"]
            if label:
                ax.set_xlabel(label.split(";")[0], fontsize=8)
            if row == 0:
                ax.set_title(f"1−S = {p:g}", fontsize=9)
        sets = all_sets[name]
        axes[row, 0].set_ylabel(
            f"{name}\n{' '.join(str(s) for s in sets) if sets else 'no sets'}", fontsize=8
        )
    fig.suptitle(
        "Correlated features: orthogonal within a set (local orthogonal bases) or collapsed\n"
        "onto their principal component when dense; anticorrelated features: antipodal "
        "(n=4 or 6 features, m=2, colour = set)",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "correlated_features")


if __name__ == "__main__":
    figure_script(main, __doc__)
