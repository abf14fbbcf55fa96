"""Feature absorption measured exactly: Chanin et al.'s toy against the sparsity penalty, and a
scaled hierarchy against L0 per SAE kind."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

from superpose.plotting import SAE_KIND_COLORS, SAE_KIND_LABELS, save_figure
from superpose.registry import figure_script

LABELS = SAE_KIND_LABELS
COLORS = SAE_KIND_COLORS
L0_TICKS = (2, 3, 4, 6, 8, 12, 24, 48)
SCALED_PANELS = (
    ("absorption", "full absorption: parent's latent silent\nwhen parent and child fire"),
    ("absorption_share", "share of the reconstruction along the parent\nnot made by its latent"),
    ("absorption_cosine", "cos(child's latent, parent direction)"),
    ("parent_miss_alone", "control: parent's latent silent\nwhen the parent fires alone"),
)


def _toy_panel(ax: plt.Axes, toy: pd.DataFrame, column: str, title: str) -> None:
    """``column`` against the penalty: mean over seeds (lines), every seed (dots)."""
    for kind in toy["kind"].unique():
        for world, style in (("hierarchical", "-"), ("independent", ":")):
            rows = toy[(toy["kind"] == kind) & (toy["world"] == world)]
            mean = rows.groupby("value")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), style, marker="o", ms=4, color=COLORS[kind])
            ax.scatter(rows["value"], rows[column], s=10, color=COLORS[kind], alpha=0.4)
    ax.set_xscale("log")
    ax.set_xlabel("L1 coefficient λ (stronger pressure →)", fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=8)


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_absorption.{png,pdf}`` from ``results/sae_absorption``."""
    folder = Path(results) / "sae_absorption"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no stored results at {folder}; run the experiment first")
    config = json.loads((folder / "config.json").read_text())
    toy = pd.read_csv(folder / "toy.csv")
    scaled = pd.read_csv(folder / "scaled.csv")
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.6))
    _toy_panel(
        grid[0, 0], toy, "absorption", "Toy: full absorption of f0 by f1 (mean of seeds, dots)"
    )
    controls = toy["parent_miss_alone"].dropna()
    _toy_panel(
        grid[0, 1],
        toy,
        "absorption_cosine",
        "Toy: cos(f1's latent, d0); 1/√2 = f1's latent writes d0 + d1\n"
        f"(control: f0's latent silent on f0 alone in {(controls > 0).sum()} of "
        f"{len(controls)} SAEs)",
    )
    grid[0, 1].axhline(2**-0.5, color="k", lw=0.6, ls="--")
    handles = [
        plt.Line2D([], [], color=COLORS[kind], marker="o", label=LABELS[kind])
        for kind in toy["kind"].unique()
    ]
    handles += [
        plt.Line2D([], [], color="k", ls="-", label="f1 fires only with f0"),
        plt.Line2D([], [], color="k", ls=":", label="independent (control)"),
    ]
    grid[0, 0].legend(handles=handles, fontsize=7, loc="center right")
    axes = [grid[0, 2], grid[1, 0], grid[1, 1], grid[1, 2]]
    for ax, (column, title) in zip(axes, SCALED_PANELS, strict=True):
        for kind in LABELS:
            rows = scaled[scaled["kind"] == kind].sort_values("l0")
            if rows.empty:
                continue
            ax.plot(
                rows["l0"], rows[column], marker="o", ms=4, color=COLORS[kind], label=LABELS[kind]
            )
        ax.axvline(config["world_l0"], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(L0_TICKS, [str(t) for t in L0_TICKS])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("L0 (held out; dashed: the world's)", fontsize=8)
        ax.set_title(f"Scaled: {title}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=7)
    roots = config["roots"]
    fig.suptitle(
        "Feature absorption measured exactly. Top left: Chanin et al.'s toy (4 orthonormal "
        f"features in {config['toy_d_model']} dims, p = 0.25 / 0.05 / 0.05 / 0.05, 4 latents, "
        f"{config['toy_seeds']} seeds). Others: {roots} roots × {config['children']} exclusive "
        f"children ({config['n_features']} features, p(root) = {config['root_probability']}, "
        f"p(child | root) = {config['child_probability']}),\nwidth {config['n_features']}, "
        f"{config['scaled_steps'] * config['scaled_batch_size'] / 1e6:.2g}M samples per SAE; "
        "each line sweeps the kind's penalty or k (stronger pressure → lower L0)",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "sae_absorption")


if __name__ == "__main__":
    figure_script(main, __doc__)
