"""One-layer transformer: its head's QK and OV circuits recover the planted skip-trigrams.

Reads ``results/circuits_skip_trigram`` (made by ``superpose reproduce circuits-skip-trigram``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from superpose.circuits.store import load_results
from superpose.plotting import save_figure
from superpose.registry import figure_script

ROLE_COLORS = {
    "trigger": "tab:red",
    "output": "tab:green",
    "query": "tab:blue",
    "filler": "tab:gray",
}


def main(results: Path, out: Path) -> list[Path]:
    """Draw the query's QK row, the trigger→output OV block and the loss curve."""
    metrics, tensors = load_results(Path(results) / "circuits_skip_trigram")
    query_row = tensors["query_row"].numpy()
    roles = ["filler"] * len(query_row)
    for token in tensors["triggers"].tolist():
        roles[token] = "trigger"
    for token in tensors["outputs"].tolist():
        roles[token] = "output"
    roles[int(tensors["query"])] = "query"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")

    axes[0].bar(range(len(query_row)), query_row, color=[ROLE_COLORS[r] for r in roles])
    for role, color in ROLE_COLORS.items():
        axes[0].bar([0], [0], color=color, label=role)
    axes[0].legend(fontsize=8)
    axes[0].set(
        xlabel="key token",
        ylabel="score",
        title=f"full QK circuit, query token's row\n"
        f"triggers beat fillers by ≥ {metrics['qk_trigger_margin']:.1f}",
    )

    ov_block = tensors["ov_block"].numpy()
    ov_block = ov_block - ov_block.mean(axis=0)  # logits are compared within a column
    image = axes[1].imshow(
        ov_block, cmap="RdBu_r", vmin=-abs(ov_block).max(), vmax=abs(ov_block).max()
    )
    fig.colorbar(image, ax=axes[1], label="logit (column centred)")
    labels = [f"{i}" for i in range(len(ov_block))]
    axes[1].set_xticks(range(len(labels)), [f"trigger {i}" for i in labels], rotation=30)
    axes[1].set_yticks(range(len(labels)), [f"output {i}" for i in labels])
    axes[1].set_title(
        f"full OV circuit W_U W_OV W_E\n"
        f"trigger i → output i for {metrics['ov_accuracy']:.0%} of rules"
    )

    axes[2].plot(tensors["history_steps"], tensors["history_planted_loss"], label="one layer")
    axes[2].axhline(
        metrics["direct_path_bound"],
        color="black",
        ls="--",
        label="direct path only (log n_triggers)",
    )
    axes[2].set(
        yscale="log",
        xlabel="training step",
        ylabel="loss on planted targets (nats)",
        title=f"final loss {metrics['planted_loss']:.1e} nats",
    )
    axes[2].legend(fontsize=8)
    return save_figure(fig, Path(out) / "circuits_skip_trigram")


if __name__ == "__main__":
    figure_script(main, __doc__)
