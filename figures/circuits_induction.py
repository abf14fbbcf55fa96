"""One- vs two-layer transformers on repeated tokens: the induction-head phase change and circuit.

Reads ``results/circuits_induction`` (made by ``superpose reproduce circuits-induction``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from superpose.circuits.store import load_results
from superpose.plotting import save_figure
from superpose.registry import figure_script


def _head(name: str) -> int:
    """Head index of a name ``"L<layer>H<head>"``."""
    return int(name.split("H")[1])


def main(results: Path, out: Path) -> list[Path]:
    """Draw loss by position, the training curves, attention patterns and composition scores."""
    metrics, tensors = load_results(Path(results) / "circuits_induction")
    one, two = metrics["1_layer"], metrics["2_layer"]
    previous, induction = _head(two["previous_token_head"]), _head(two["induction_head"])
    n_ctx, log_vocab = metrics["n_ctx"], metrics["log_vocab"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), layout="constrained")

    ax = axes[0, 0]
    for n_layers, color in ((1, "tab:orange"), (2, "tab:blue")):
        losses = tensors[f"{n_layers}_layer_loss_by_position"].numpy()
        ax.plot(
            np.arange(len(losses)),
            losses,
            color=color,
            marker=".",
            label=f"{n_layers} layer{'s' * (n_layers > 1)}: "
            f"{metrics[f'{n_layers}_layer']['repeated_loss']:.2f} on the copy",
        )
    ax.axhline(log_vocab, color="black", ls="--", lw=0.8, label="log d_vocab")
    ax.axvspan(n_ctx // 2 - 0.5, n_ctx - 1.5, color="gray", alpha=0.15, label="inside the copy")
    ax.set(
        xlabel="prediction position",
        ylabel="next-token loss (nats)",
        title="random tokens, first half repeated",
    )
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    for n_layers, color in ((1, "tab:orange"), (2, "tab:blue")):
        ax.plot(
            tensors[f"{n_layers}_layer_history_steps"],
            tensors[f"{n_layers}_layer_history_repeated_loss"],
            color=color,
            label=f"{n_layers} layer{'s' * (n_layers > 1)}: loss on the copy",
        )
    ax.axhline(log_vocab, color="black", ls="--", lw=0.8)
    ax.set(
        xlabel="training step",
        ylabel="loss on the copy (nats)",
        title="induction-head phase change",
    )
    scores = ax.twinx()
    steps = tensors["2_layer_history_steps"]
    scores.plot(
        steps,
        tensors["2_layer_history_previous_token"],
        color="tab:green",
        ls=":",
        label="2 layers: best previous-token score (L0)",
    )
    scores.plot(
        steps,
        tensors["2_layer_history_prefix_matching"],
        color="tab:red",
        ls=":",
        label="2 layers: best prefix-matching score (L1)",
    )
    scores.set(ylim=(0, 1), ylabel="attention score")
    lines = ax.get_legend_handles_labels()
    more = scores.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")

    patterns = tensors["2_layer_patterns"].numpy()  # (layer, head, query, key)
    for ax, layer, head, title in (
        (axes[0, 2], 0, previous, "previous-token head"),
        (axes[1, 0], 1, induction, "induction head"),
    ):
        ax.imshow(patterns[layer, head], cmap="Blues", vmin=0, vmax=1)
        ax.set(
            xlabel="key position",
            ylabel="query position",
            title=f"{title} L{layer}H{head} on one sequence",
        )

    ax = axes[1, 1]
    n_heads = metrics["n_heads"]
    block = np.concatenate([tensors[f"{kind}_composition"].numpy() for kind in "qkv"], axis=1)
    image = ax.imshow(block, cmap="magma", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="composition score")
    ax.set_xticks(
        range(3 * n_heads),
        [f"{kind.upper()}·L0H{h}" for kind in "qkv" for h in range(n_heads)],
        rotation=60,
        fontsize=7,
    )
    ax.set_yticks(range(n_heads), [f"L1H{h}" for h in range(n_heads)])
    ax.set_title(
        f"composition with layer-0 heads (random ≈ {two['composition_baseline']:.3f})\n"
        f"K: L1H{induction}·L0H{previous} = "
        f"{two['k_composition_induction_previous']:.3f}"
    )

    ax = axes[1, 2]
    names = [f"L{layer}H{head}" for layer in range(2) for head in range(n_heads)]
    x = np.arange(len(names))
    ax.bar(
        x - 0.2,
        np.ravel(two["previous_token_scores"]),
        width=0.4,
        color="tab:green",
        label="previous-token score",
    )
    ax.bar(
        x + 0.2,
        np.ravel(two["prefix_matching_scores"]),
        width=0.4,
        color="tab:red",
        label="prefix-matching score",
    )
    ax.set_xticks(x, names)
    ax.set(
        ylim=(0, 1),
        title=f"2-layer heads (1 layer: best prefix matching "
        f"{max(np.ravel(one['prefix_matching_scores'])):.2f})",
    )
    ax.legend(fontsize=8)
    return save_figure(fig, Path(out) / "circuits_induction")


if __name__ == "__main__":
    figure_script(main, __doc__)
