"""SAEs on a TMS model: ReLU SAE decoder directions on the pentagon, dead latents with and
without resampling."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes

from superpose import sae
from superpose.io import load_metadata, load_tensors
from superpose.plotting import chance_label, plot_chance, save_figure
from superpose.registry import figure_script

SHOWN = 4
"""SAE instances drawn per arm."""

ARM_COLORS = ("tab:blue", "tab:red", "tab:green")
CHANCE_DRAWS = 256
"""Random dictionaries behind the chance line (a 5 × 2 matching each: cheap)."""


def draw_directions(ax: Axes, features: np.ndarray, W_dec: np.ndarray, fires: np.ndarray) -> None:
    """The true feature directions ``features: (2, n_features)`` as grey spokes and the SAE's
    decoder rows ``W_dec: (d_sae, 2)`` as unit arrows, dead latents (``fires: (d_sae,)``
    False) as dashed red lines."""
    unit = features / np.linalg.norm(features, axis=0, keepdims=True)
    for x, y in unit.T:
        ax.plot([0, x], [0, y], color="0.6", lw=5, alpha=0.45, solid_capstyle="round")
    rows = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    for (x, y), alive in zip(rows, fires, strict=True):
        if alive:
            ax.annotate(
                "",
                xy=(x, y),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "-|>", "color": "k", "lw": 1.3},
            )
        else:
            ax.plot([0, x], [0, y], color="tab:red", lw=1.3, ls="--")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_tms.{png,pdf}`` from ``results/sae_tms``."""
    folder = Path(results) / "sae_tms"
    stored = load_tensors(folder / "sae_tms.safetensors")
    metadata = load_metadata(folder / "sae_tms.safetensors")
    metrics = pd.read_csv(folder / "metrics.csv")
    config = metadata["config"]
    features = stored["W"].numpy()
    arms = metadata["arms"]
    shown = min(SHOWN, config["n_saes"])
    fig = plt.figure(figsize=(3.0 + 1.75 * shown + 4.2, 1.9 * len(arms) + 0.9))
    grid = fig.add_gridspec(len(arms), shown + 1, width_ratios=[1] * shown + [2.6])
    for row, arm in enumerate(arms):
        table = metrics[metrics["arm"] == arm]
        for col in range(shown):
            ax = fig.add_subplot(grid[row, col])
            W_dec, fires = stored[f"{arm}/W_dec"][col], stored[f"{arm}/fires"][col]
            draw_directions(ax, features, W_dec.numpy(), fires.numpy())
            dead = int(table["dead_latents"].iloc[col])
            ax.set_title(f"SAE {col}: MMCS {table['mmcs'].iloc[col]:.2f}, {dead} dead", fontsize=7)
            if col == 0:
                ax.set_ylabel(arm, fontsize=8)
    right = grid[:, shown].subgridspec(2, 1, hspace=0.45)
    over_time = fig.add_subplot(right[0])
    summary = fig.add_subplot(right[1])
    for k, arm in enumerate(arms):
        table = metrics[metrics["arm"] == arm]
        dead = stored[f"{arm}/dead_fraction"].numpy()
        steps = stored[f"{arm}/history_steps"].numpy()
        over_time.plot(steps, dead.mean(1), color=ARM_COLORS[k], lw=1.5, label=arm)
        every = metadata["resample_every"][arm]
        if every is not None:
            for step in range(every, config["sae_steps"], every):
                over_time.axvline(step, color=ARM_COLORS[k], lw=0.6, ls=":")
        jitter = np.random.default_rng(k).uniform(-0.12, 0.12, len(table))
        summary.scatter(
            table["dead_latents"] + jitter, table["mmcs"], s=14, color=ARM_COLORS[k], alpha=0.6
        )
        summary.scatter(
            table["dead_latents"].mean(),
            table["mmcs"].mean(),
            s=90,
            marker="X",
            color=ARM_COLORS[k],
            edgecolor="k",
            zorder=3,
        )
    # 5 random lines in 2 dims are all close to some feature: MMCS ≈ 0.95 by chance alone
    chance = sae.random_baseline(
        config["n_features"],
        config["n_hidden"],
        config["d_sae"],
        directions=torch.as_tensor(features.T),
        n_draws=CHANCE_DRAWS,
    )
    plot_chance(
        summary,
        chance.loc["mmcs", "mean"],
        chance.loc["mmcs", "std"],
        label=f"random {config['d_sae']}-latent dictionary: {chance_label(chance, 'mmcs')}",
    )
    summary.legend(fontsize=7, loc="lower right")
    over_time.set_xlabel("training step", fontsize=8)
    over_time.set_ylabel("dead latents (fraction)", fontsize=8)
    over_time.legend(fontsize=7)
    over_time.tick_params(labelsize=7)
    summary.set_xlabel(f"dead latents of {config['d_sae']} (held-out samples)", fontsize=8)
    summary.set_ylabel("MMCS vs the 5 features", fontsize=8)
    summary.set_xticks(range(config["d_sae"] + 1))
    summary.set_xlim(-0.5, config["d_sae"] + 0.5)
    summary.tick_params(labelsize=7)
    summary.set_title(f"{config['n_saes']} SAEs per arm (dots; ✕ = arm mean)", fontsize=8)
    fig.suptitle(
        f"ReLU SAEs ({config['d_sae']} latents) on a TMS model's hidden layer "
        f"(n={config['n_features']}, m={config['n_hidden']}, 1−S={config['feature_probability']}"
        "): grey = true features, arrows = decoder rows, red dashes = dead latents",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "sae_tms")


if __name__ == "__main__":
    figure_script(main, __doc__)
