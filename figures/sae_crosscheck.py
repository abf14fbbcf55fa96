"""Every SAE kind three ways (superpose, SAELens's own trainer, a plain torch version) on the
same world and batches, and the ReLU / JumpReLU gaps with the decoder norms at
initialisation swapped."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from superpose import sae
from superpose.plotting import (
    SAE_KIND_COLORS,
    SAE_KIND_LABELS,
    chance_label,
    plot_chance,
    save_figure,
)
from superpose.registry import figure_script

IMPLEMENTATIONS = {
    "superpose": {"alpha": 1.0, "hatch": None},
    "saelens": {"alpha": 1.0, "hatch": "///"},
    "plain": {"alpha": 0.4, "hatch": None},
}
"""Each implementation's bar style (the colour is the kind's)."""
NAMES = {"superpose": "superpose", "saelens": "SAELens", "plain": "plain torch"}
PANELS = (
    ("mcc", "MCC (Hungarian-matched cosines)"),
    ("latent_f1", "F1 per latent (SynthSAEBench)"),
    ("dead_latents", "dead latents (never fire on the held-out samples)"),
    ("l0", "L0 (true mean active features: 3)"),
)
CHANCE_DRAWS = 8
"""Random dictionaries behind the MCC chance line."""
WIDTH = 0.26
L0_TICKS = (3, 5, 10, 20, 30)


def _bars(ax: Axes, metrics: pd.DataFrame, column: str, kinds: list[str]) -> None:
    """``column`` per kind and implementation: mean over seeds (bars), the seed range
    (error bars) and every seed (dots)."""
    for offset, (implementation, style) in zip((-1, 0, 1), IMPLEMENTATIONS.items(), strict=True):
        for x, kind in enumerate(kinds):
            values = metrics.loc[
                (metrics["kind"] == kind) & (metrics["implementation"] == implementation), column
            ]
            position = x + offset * WIDTH
            mean = values.mean()
            ax.bar(
                position,
                mean,
                WIDTH,
                color=SAE_KIND_COLORS[kind],
                alpha=style["alpha"],
                hatch=style["hatch"],
                edgecolor="white" if style["hatch"] else SAE_KIND_COLORS[kind],
                lw=0,
            )
            ax.errorbar(
                position,
                mean,
                yerr=[[mean - values.min()], [values.max() - mean]],
                color="k",
                lw=0.8,
                capsize=2,
            )
            ax.scatter([position] * len(values), values, s=6, color="k", zorder=3)
    ax.set_xticks(range(len(kinds)), [SAE_KIND_LABELS[kind] for kind in kinds], fontsize=8)
    ax.tick_params(labelsize=8)


def _swap(ax: Axes, swap: pd.DataFrame, column: str, title: str) -> None:
    """``column`` against the decoder norm at initialisation, per kind (colour) and library
    (solid: superpose, dashed: SAELens); ringed: each library's own default."""
    norms = sorted(swap["decoder_norm"].unique(), reverse=True)
    own = {"superpose": 1.0, "saelens": 0.1}
    for kind in [kind for kind in SAE_KIND_LABELS if kind in set(swap["kind"])]:
        for implementation, style in (("superpose", "-"), ("saelens", "--")):
            rows = swap[(swap["kind"] == kind) & (swap["implementation"] == implementation)]
            rows = rows.set_index("decoder_norm").loc[norms]
            ax.plot(
                range(len(norms)),
                rows[column],
                style,
                marker="o",
                ms=4,
                color=SAE_KIND_COLORS[kind],
                label=f"{SAE_KIND_LABELS[kind]}, {NAMES[implementation]}",
            )
            for x, (value, l0) in enumerate(zip(rows[column], rows["l0"], strict=True)):
                ax.annotate(
                    f"L0 {l0:.0f}", (x, value), (6, -3), textcoords="offset points", fontsize=6
                )
            mark = norms.index(own[implementation])
            ax.scatter(mark, rows[column].iloc[mark], s=90, facecolor="none", edgecolor="k")
    ax.set_xticks(range(len(norms)), [f"{norm:g}" for norm in norms])
    ax.set_xlim(-0.3, len(norms) - 0.7)
    ax.set_xlabel("decoder row norm at initialisation (W_enc = W_decᵀ)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    steps, seed = swap["steps"].iloc[0], swap["seed"].iloc[0]
    ax.set_title(
        f"{title}, norms swapped (seed {seed}, {steps:,} steps; ringed: default)", fontsize=9
    )


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sae_crosscheck.{png,pdf}`` from ``results/sae_crosscheck`` (the swap panels
    from its ``init_swap.csv``, when ``--init-swap`` has run)."""
    folder = Path(results) / "sae_crosscheck"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no stored results at {folder}; run the experiment first")
    config = json.loads((folder / "config.json").read_text())
    metrics = pd.read_csv(folder / "metrics.csv")
    metrics["dead_latents"] = (metrics["dead_fraction"] * config["d_sae"]).round()
    kinds = [kind for kind in SAE_KIND_LABELS if kind in set(metrics["kind"])]
    chance = sae.random_baseline(
        config["n_features"], config["d_model"], config["d_sae"], n_draws=CHANCE_DRAWS
    )
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.6))
    axes = [grid[0, 0], grid[0, 1], grid[0, 2], grid[1, 0]]
    for ax, (column, title) in zip(axes, PANELS, strict=True):
        _bars(ax, metrics, column, kinds)
        ax.set_title(title, fontsize=9)
        if column in ("mcc", "latent_f1"):
            ax.set_ylim(0, 1.05)
    plot_chance(
        grid[0, 0],
        chance.loc["mcc", "mean"],
        chance.loc["mcc", "std"],
        label=f"random dictionary: {chance_label(chance, 'mcc')}",
    )
    density = grid[1, 0]
    density.set_yscale("log")
    density.set_yticks(L0_TICKS, [str(tick) for tick in L0_TICKS])
    density.yaxis.set_minor_formatter(NullFormatter())
    density.axhline(3, color="k", ls=":", lw=0.8)
    handles = [
        Patch(facecolor="0.5", alpha=style["alpha"], hatch=style["hatch"], edgecolor="white")
        for style in IMPLEMENTATIONS.values()
    ]
    density.legend(
        [*handles, grid[0, 0].get_legend_handles_labels()[0][0]],
        [*NAMES.values(), f"MCC of a random dictionary: {chance_label(chance, 'mcc')}"],
        fontsize=7,
        loc="upper right",
    )
    swap_file = folder / "init_swap.csv"
    if swap_file.is_file():
        swap = pd.read_csv(swap_file)
        _swap(grid[1, 1], swap, "mcc", "MCC")
        _swap(grid[1, 2], swap, "latent_f1", "F1 per latent")
    else:
        for ax in grid[1, 1:]:
            ax.axis("off")
        grid[1, 1].text(0, 0.5, "no init_swap.csv: run the experiment with --init-swap", fontsize=9)
    seeds = ", ".join(str(seed) for seed in config["seeds"])
    fig.suptitle(
        f"SAE kinds three ways, same world and batches: {config['n_features']} features "
        f"(p = {config['probability']:.3g}) in {config['d_model']} dims, d_sae = "
        f"{config['d_sae']}, {config['steps']:,} steps of {config['batch_size']:,}, seeds "
        f"{seeds} (bars: mean, whiskers: seed range)\nsolid: superpose, hatched: SAELens's "
        f"SAETrainer, pale: plain torch; k = {config['k']}, L1 {config['l1_coefficient']:g}, "
        f"JumpReLU L0 {config['l0_coefficient']:g}",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "sae_crosscheck")


if __name__ == "__main__":
    figure_script(main, __doc__)
