"""TMS uniform superposition: dimensions per feature vs 1/(1−S), sticking at 1, 1/2, 2/5..."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_dimensions_per_feature, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/uniform_superposition.{png,pdf}`` from ``results/uniform_superposition``."""
    folder = Path(results) / "uniform_superposition"
    stored = load_tensors(folder / "weights.safetensors")
    metrics = pd.read_csv(folder / "metrics.csv")
    config = load_metadata(folder / "weights.safetensors")["config"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    plot_dimensions_per_feature(
        ax,
        metrics["inverse_density"].to_numpy(),
        metrics["dimensions_per_feature"].to_numpy(),
        stored["feature_dimensionality"].numpy(),
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        f"Uniform superposition: dimensions per feature stick at fractions "
        f"(n={config['n_features']}, m={config['n_hidden']}, equal importance)",
        fontsize=10,
    )
    return save_figure(fig, Path(out) / "uniform_superposition")


if __name__ == "__main__":
    figure_script(main, __doc__)
