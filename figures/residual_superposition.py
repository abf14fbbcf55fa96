"""Token superposition in a zero-layer transformer's residual stream, against token frequency.

Reads ``results/residual_superposition`` (made by ``superpose reproduce
residual-superposition``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from superpose.circuits.store import load_results
from superpose.plotting import save_figure
from superpose.registry import figure_script

EXAMPLE_EXPONENT = 1.0
"""The Zipf exponent whose per-token curves are drawn."""


def _octave_edges(d_vocab: int) -> list[int]:
    """Token-index edges ``[0, 1, 2, 4, 8, …, d_vocab]`` of the frequency-rank octaves."""
    return [0, *(2**k for k in range(d_vocab.bit_length()) if 2**k < d_vocab), d_vocab]


def rank_bins(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``values (..., d_vocab)`` over octaves of frequency rank (1, 2, 3-4, 5-8, …).

    Returns:
        The bins' geometric-mean ranks ``(n_bins,)`` and the means ``(n_bins,)`` over the bin's
        tokens and all leading axes (seeds).
    """
    edges = _octave_edges(values.shape[-1])
    centres = np.array(
        [np.sqrt(low + 1) * np.sqrt(high) for low, high in itertools.pairwise(edges)]
    )
    means = np.array(
        [values[..., low:high].mean().item() for low, high in itertools.pairwise(edges)]
    )
    return centres, means


def main(results: Path, out: Path) -> list[Path]:
    """Draw per-token geometry and loss against frequency rank, and the grid's summary."""
    metrics, tensors = load_results(Path(results) / "residual_superposition")
    exponents, d_models = metrics["zipf_exponents"], metrics["d_models"]
    example = exponents.index(EXAMPLE_EXPONENT) if EXAMPLE_EXPONENT in exponents else 0
    rank = np.arange(1, metrics["d_vocab"] + 1)
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(d_models)))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (ax_dim, ax_int, ax_kl), (ax_cos, ax_sum, ax_loss) = axes
    captured = 1 - tensors["kl"] / tensors["kl_unigram"][:, None, None]
    for j, (d_model, color) in enumerate(zip(d_models, colors, strict=True)):
        label = f"d_model = {d_model}"
        ax_dim.plot(
            *rank_bins(tensors["dimensionality"][example, j]), "o-", color=color, label=label
        )
        ax_dim.axhline(metrics["dimensionality_random"][j], color=color, ls=":", lw=1)
        ax_int.plot(*rank_bins(tensors["interference"][example, j]), "o-", color=color, label=label)
        ax_int.axhline((metrics["d_vocab"] - 1) / d_model, color=color, ls=":", lw=1)
        ax_kl.plot(*rank_bins(captured[example, j]), "o-", color=color, label=label)
        ax_kl.plot(rank, captured[example, j, 0], color=color, lw=0.5, alpha=0.4)
    title = f"Zipf exponent {exponents[example]:g}, mean of {len(metrics['seeds'])} seeds"
    ax_dim.set(
        xscale="log",
        xlabel="frequency rank of token",
        ylabel="feature dimensionality $D_t$",
        title=f"dimensions per token by rank octave ({title})\n"
        "dotted: random embedding d / (d + V - 1)",
    )
    ax_int.set(
        xscale="log",
        xlabel="frequency rank of token",
        ylabel=r"$\sum_{s \neq t} \cos^2(W_E^t, W_E^s)$",
        title="interference with other tokens\ndotted: random embedding (V - 1) / d",
    )
    ax_kl.set(
        xscale="log",
        ylim=(None, 1.02),
        xlabel="frequency rank of current token",
        ylabel="1 - KL(model) / KL(unigram)",
        title="share of the token's bigram information predicted\n"
        "(0: token dropped, predicted as the unigram law)",
    )
    ax_dim.legend()

    shown = metrics["cosine_example"]
    cosine_sq = tensors["cosine_example"] ** 2
    others = ~torch.eye(metrics["d_vocab"], dtype=torch.bool)  # a token's own pair is left out
    octaves = _octave_edges(metrics["d_vocab"])
    blocks = np.full((len(octaves) - 1, len(octaves) - 1), np.nan)
    for row, (a, b) in enumerate(itertools.pairwise(octaves)):
        for col, (c, d) in enumerate(itertools.pairwise(octaves)):
            pairs = others[a:b, c:d]
            if pairs.any():
                blocks[row, col] = cosine_sq[a:b, c:d][pairs].mean() * shown["d_model"]
    image = ax_cos.imshow(blocks, cmap="RdBu_r", vmin=0, vmax=2)
    fig.colorbar(image, ax=ax_cos, shrink=0.8, label="mean cos² × d_model (1: random)")
    labels = [f"{a + 1}" if b == a + 1 else f"{a + 1}-{b}" for a, b in itertools.pairwise(octaves)]
    ax_cos.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xlabel="token frequency ranks",
        ylabel="token frequency ranks",
        title=f"which tokens share directions: cos² of W_E columns\n"
        f"(d_model = {shown['d_model']}, Zipf exponent {shown['zipf_exponent']:g}, "
        f"seed {shown['seed']})",
    )
    ax_cos.set_xticklabels(labels, rotation=45)
    ax_cos.set_yticklabels(labels)

    markers = ("o", "s", "^", "D")
    for i, exponent in enumerate(exponents):
        marker = markers[i % len(markers)]
        ax_sum.plot(
            d_models,
            metrics["dimensionality_frequent"][i],
            marker=marker,
            color="C3",
            label=f"a = {exponent:g}, 8 most frequent",
        )
        ax_sum.plot(
            d_models,
            metrics["dimensionality_rare"][i],
            marker=marker,
            color="C0",
            ls="--",
            label=f"a = {exponent:g}, rarer half",
        )
        loss = np.array(metrics["kl_model"][i]) / metrics["kl_unigram"][i]
        ax_loss.plot(d_models, loss, marker=marker, color="k", label=f"a = {exponent:g}")
    ax_sum.plot(
        d_models, metrics["dimensionality_random"], color="grey", ls=":", label="random embedding"
    )
    ax_sum.set(
        xscale="log",
        xticks=d_models,
        xticklabels=[str(d) for d in d_models],
        xlabel="d_model",
        ylabel="mean $D_t$",
        title=f"dimensions per token (vocabulary {metrics['d_vocab']})",
    )
    ax_sum.legend(fontsize=7, ncol=2)
    ax_loss.set(
        xscale="log",
        xticks=d_models,
        xticklabels=[str(d) for d in d_models],
        ylim=(0, None),
        xlabel="d_model",
        ylabel="KL(model) / KL(unigram)",
        title="loss above the oracle, relative to the unigram baseline\n(0: oracle, 1: unigram)",
    )
    ax_loss.legend()
    for ax in (ax_sum, ax_loss):
        ax.minorticks_off()
    fig.tight_layout()
    return save_figure(fig, Path(out) / "residual_superposition")


if __name__ == "__main__":
    figure_script(main, __doc__)
