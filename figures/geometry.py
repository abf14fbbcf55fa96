"""TMS geometry: uniform-model features grouped into tegum factors (digons, pentagons...)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_dimensionality_by_group, plot_stacked_counts, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/geometry.{png,pdf}`` from ``results/geometry/geometry.safetensors``."""
    path = Path(results) / "geometry" / "geometry.safetensors"
    stored, metadata = load_tensors(path), load_metadata(path)
    inverse_density = 1.0 / stored["feature_probability"].double().numpy()
    config = metadata["config"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=[1.1, 1])
    plot_dimensionality_by_group(
        left,
        inverse_density,
        stored["feature_dimensionality"].numpy(),
        stored["feature_polytope"].numpy(),
        metadata["polytope_names"],
    )
    left.legend(
        fontsize=7,
        markerscale=2,
        loc="upper right",
        title="feature's tegum factor",
        title_fontsize=7,
    )
    left.set_title(
        "Each feature's dimensionality, coloured by the polytope it lies on", fontsize=10
    )
    plot_stacked_counts(
        right,
        [f"{x:.3g}" for x in inverse_density],
        stored["feature_counts"].numpy(),
        metadata["polytope_names"],
    )
    counts = stored["counts"].numpy()
    for x, row in enumerate(counts):  # the number of factors above each bar
        right.annotate(
            str(int(row.sum())),
            (x, stored["feature_counts"][x].sum().item()),
            ha="center",
            va="bottom",
            fontsize=6,
        )
    right.set_xlabel("1/(1−S)")
    right.set_ylabel("features")
    right.legend(fontsize=7, title="feature's tegum factor", title_fontsize=7, loc="lower right")
    right.set_title(
        "Features per polytope kind (number of tegum factors on top)", fontsize=10, pad=12
    )
    fig.suptitle(
        f"The geometry of superposition: features organise into tegum products of polytopes "
        f"(uniform importance, n={config['n_features']}, m={config['n_hidden']})"
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "geometry")


if __name__ == "__main__":
    figure_script(main, __doc__)
