"""TMS learning dynamics: each feature's dimensionality over training settles on sticky values."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_sticky_fractions, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/learning_dynamics.{png,pdf}`` from ``results/learning_dynamics``."""
    path = results / "learning_dynamics" / "dynamics.safetensors"
    stored = load_tensors(path)
    steps = stored["steps"].numpy()
    dimensionality = stored["dimensionality"].numpy()  # (log, instance, feature)
    loss = stored["loss"].numpy()  # (log, instance)
    config = load_metadata(path)["config"]
    instance = int(np.argmin(stored["final_loss"].numpy()))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    plot_sticky_fractions(top, fontsize=7)
    colors = plt.get_cmap("viridis")(dimensionality[-1, instance] / 1.0)
    for feature in range(dimensionality.shape[-1]):
        top.plot(steps, dimensionality[:, instance, feature], color=colors[feature], lw=1.2)
    top.set_ylabel("feature dimensionality $D_i$")
    top.set_ylim(-0.03, 1.05)
    top.set_title(
        f"Learning dynamics: n={config['n_features']} features, m={config['n_hidden']} dims, "
        f"1−S={config['feature_probability']:g} (best of {len(config['seeds'])} seeds)"
    )
    bottom.plot(steps, loss[:, instance], color="k", lw=1)
    bottom.set_yscale("log")
    bottom.set_xscale("log")
    bottom.set_xlabel("training step")
    bottom.set_ylabel("training loss")
    fig.tight_layout()
    return save_figure(fig, out / "learning_dynamics")


if __name__ == "__main__":
    figure_script(main, __doc__)
