"""TMS phase diagrams, n=2, m=1 and n=3, m=2: trained (best of seeds) beside exact theory."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from superpose.io import load_tensors
from superpose.phases import empirical_phase_diagram
from superpose.plotting import save_figure
from superpose.registry import figure_script
from superpose.theory import PHASES, phase_agreement

COLORS = ("#d9d9d9", "#2b8cbe", "#e6550d")
"""Not represented, dedicated dimension, superposition."""

TITLES = {
    "phase_diagram": "2 features, 1 dimension",
    "phase_diagram_n3": "3 features, 2 dimensions",
}
"""Stored sweep (``results/<name>``) → panel title."""


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/phase_diagram.{png,pdf}`` from ``results/phase_diagram{,_n3}``."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 8.2), sharex=True, sharey=True)
    cmap = ListedColormap(COLORS)
    for row, key in enumerate(TITLES):
        folder = results / key
        empirical = empirical_phase_diagram(folder)
        theory = load_tensors(folder / "theory.safetensors")
        agreement = phase_agreement(theory["labels"].numpy(), empirical.labels)
        extent = (
            empirical.relative_importance[0],
            empirical.relative_importance[-1],
            empirical.feature_probability[-1],
            empirical.feature_probability[0],
        )
        for col, (labels, name) in enumerate(
            [(empirical.labels, "trained (best of seeds)"), (theory["labels"].numpy(), "theory")]
        ):
            ax = axes[row, col]
            ax.pcolormesh(
                empirical.relative_importance,
                empirical.feature_probability,
                labels.T,
                cmap=cmap,
                vmin=-0.5,
                vmax=2.5,
                shading="nearest",
            )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(f"{TITLES[key]}: {name}", fontsize=10)
        axes[row, 0].set_ylabel("feature density 1−S")
        axes[row, 1].text(
            0.03,
            0.04,
            f"agreement {100 * agreement:.1f}% of cells",
            transform=axes[row, 1].transAxes,
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    for ax in axes[1]:
        ax.set_xlabel("relative importance of the extra feature")
    handles = [
        Patch(color=c, label=f"extra feature: {p}") for c, p in zip(COLORS, PHASES, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Phase changes: is the extra feature ignored, dedicated, or in superposition?")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, out / "phase_diagram")


if __name__ == "__main__":
    figure_script(main, __doc__)
