"""Zero-layer transformer: the learned bigram table W_U W_E against the true Markov chain.

Reads ``results/circuits_bigram`` (made by ``superpose reproduce circuits-bigram``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from superpose.circuits.store import load_results
from superpose.plotting import save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw the true and learned log transition tables and their scatter; return the files."""
    metrics, tensors = load_results(Path(results) / "circuits_bigram")
    true = tensors["true_log_transition"].numpy()
    learned = tensors["learned_log_probs"].numpy()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    low = min(true.min(), learned.min())
    for ax, table, title in (
        (axes[0], true, "true log P(next | current)"),
        (axes[1], learned, "learned log_softmax(W_U W_E)"),
    ):
        image = ax.imshow(table, cmap="viridis", vmin=low, vmax=0)
        ax.set(title=title, xlabel="next token")
    axes[0].set_ylabel("current token")
    fig.colorbar(image, ax=axes[:2], shrink=0.8, label="log probability")
    axes[2].scatter(true.ravel(), learned.ravel(), s=4, alpha=0.5)
    axes[2].plot([low, 0], [low, 0], color="black", lw=0.8)
    axes[2].set(
        xlabel="true log probability",
        ylabel="learned log probability",
        title=f"KL(true ‖ model) = {metrics['kl_model']:.1e} nats\n"
        f"(ignoring the current token: {metrics['kl_unigram']:.2f})",
    )
    return save_figure(fig, Path(out) / "circuits_bigram")


if __name__ == "__main__":
    figure_script(main, __doc__)
