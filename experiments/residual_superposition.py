"""Superposition of tokens in the residual stream: zero-layer models on Zipfian bigram streams.

The vocabulary (128 tokens) is larger than the residual stream (``d_model`` 8 to 32), so the
token embeddings ``W_E`` (columns = tokens) must share directions. Each model is a zero-layer
attention-only transformer, whose prediction ``W_U (W_E + W_pos)`` is a bigram table of rank
at most ``d_model``, trained on a :class:`~superpose.circuits.ZipfMarkovChain` whose unigram
frequencies are exactly Zipfian with exponent ``a`` (token ``t`` has frequency rank ``t``).

Measured per token, against its frequency: the embedding norm, the feature dimensionality
``D_t`` and the interference ``Σ_{s≠t} cos²(W_E[:, t], W_E[:, s])`` (scale-free: the
embedding's scale is traded against ``W_U``'s), and the next-token KL from the true law given
the token as the current one (exact, from the weights), next to the KL of the unigram
prediction, which is what a model that dropped the token would pay. A small AdamW weight
decay picks the balanced factorisation among the equivalent ``(W_U A⁻¹, A W_E)``.

Writes ``results/residual_superposition/{metrics.json, tensors.pt}``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose import analysis
from superpose.circuits import AttnOnlyTransformer, ZipfMarkovChain, direct_path_kl, train
from superpose.circuits.store import save_results
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

D_VOCAB, N_CTX, TEMPERATURE = 128, 32, 2.0
D_MODELS, EXPONENTS, SEEDS = (8, 16, 32), (0.0, 1.0, 1.5), (0, 1)
STEPS, BATCH_SIZE, LR, WEIGHT_DECAY = 800, 64, 3e-2, 0.1
QUICK = {"d_models": (16,), "exponents": (1.0,), "seeds": (0,), "steps": 20}
EXAMPLE = {"zipf_exponent": 1.0, "d_model": 16, "seed": 0}
"""The run whose token-token cosines are stored (``cosine_example``)."""
FREQUENT, RARE = slice(0, 8), slice(D_VOCAB // 2, D_VOCAB)
"""Token ranks summarised as frequent (the 8 most frequent) and rare (the rarer half)."""


def unigram_kl(chain: ZipfMarkovChain) -> torch.Tensor:
    """``KL(transition[t] ‖ stationary)`` per current token ``t``: ``(d_vocab,)``, the loss
    above the truth of predicting the unigram law, i.e. of ignoring the current token."""
    log_true = chain.log_transition
    return (log_true.exp() * (log_true - chain.stationary.log())).sum(dim=-1)


def token_geometry(W_E: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token geometry of an embedding ``W_E (d_model, d_vocab)``: each entry ``(d_vocab,)``."""
    norms = analysis.feature_norms(W_E)[0]
    unit = W_E / norms.clamp_min(1e-8)
    return {
        "norm": norms,
        "dimensionality": analysis.feature_dimensionality(W_E)[0],
        "interference": analysis.superposition(unit)[0],
    }


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the (exponent × d_model × seed) grid and store per-token geometry and losses."""
    start = time.process_time()
    grid = QUICK if quick else {"d_models": D_MODELS, "exponents": EXPONENTS, "seeds": SEEDS}
    steps = QUICK["steps"] if quick else STEPS
    d_models, exponents, seeds = grid["d_models"], grid["exponents"], grid["seeds"]
    shape = (len(exponents), len(d_models), len(seeds), D_VOCAB)
    per_token = {
        name: torch.zeros(shape) for name in ("norm", "dimensionality", "interference", "kl")
    }
    cosine_example = torch.zeros(D_VOCAB, D_VOCAB)
    frequency, kl_unigram = torch.zeros(shape[0], D_VOCAB), torch.zeros(shape[0], D_VOCAB)
    entropy_rate = []
    for i, exponent in enumerate(exponents):
        chain = ZipfMarkovChain(
            D_VOCAB, N_CTX, zipf_exponent=exponent, temperature=TEMPERATURE, seed=0
        )
        frequency[i], kl_unigram[i] = chain.stationary, unigram_kl(chain)
        entropy_rate.append(
            -(chain.stationary[:, None] * chain.transition * chain.log_transition).sum().item()
        )
        for j, d_model in enumerate(d_models):
            for k, seed in enumerate(seeds):
                model = AttnOnlyTransformer(0, d_model, 1, D_VOCAB, N_CTX, seed=seed)
                with cpu_threads(1):
                    train(
                        model,
                        chain,
                        steps=steps,
                        batch_size=BATCH_SIZE,
                        lr=LR,
                        weight_decay=WEIGHT_DECAY,
                        seed=100 + seed,
                        device=device,
                        progress=False,
                    )
                model.cpu()
                W_E = model.W_E.detach()
                for name, value in token_geometry(W_E).items():
                    per_token[name][i, j, k] = value
                per_token["kl"][i, j, k] = direct_path_kl(model, chain)
                if (exponent, d_model, seed) == tuple(EXAMPLE.values()):
                    cosine_example = analysis.cosine_similarity(W_E)[0]
    loss_kl = (frequency[:, None, None] * per_token["kl"]).sum(-1)  # (exponent, d_model, seed)
    loss_unigram = (frequency * kl_unigram).sum(-1)
    dimensionality = per_token["dimensionality"]
    metrics = {
        "d_vocab": D_VOCAB,
        "n_ctx": N_CTX,
        "temperature": TEMPERATURE,
        "d_models": list(d_models),
        "zipf_exponents": list(exponents),
        "seeds": list(seeds),
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "quick": quick,
        "cosine_example": EXAMPLE,
        "entropy_rate": entropy_rate,
        "kl_unigram": loss_unigram.tolist(),
        # [exponent][d_model], mean over seeds
        "kl_model": loss_kl.mean(-1).tolist(),
        "dimensionality_frequent": dimensionality[..., FREQUENT].mean((-1, -2)).tolist(),
        "dimensionality_rare": dimensionality[..., RARE].mean((-1, -2)).tolist(),
        "dimensionality_random": [d / (d + D_VOCAB - 1) for d in d_models],
        "dimensions_used": dimensionality.sum(-1).mean(-1).tolist(),
        "worst_captured": (1 - per_token["kl"] / kl_unigram[:, None, None])
        .amin(-1)
        .mean(-1)
        .tolist(),
        "cpu_seconds": time.process_time() - start,
    }
    save_results(
        Path(results) / "residual_superposition",
        metrics,
        {
            "frequency": frequency,
            "kl_unigram": kl_unigram,
            "cosine_example": cosine_example,
            **per_token,
        },
    )
    for i, exponent in enumerate(exponents):
        for j, d_model in enumerate(d_models):
            print(
                f"a={exponent:g} d_model={d_model}: D frequent "
                f"{metrics['dimensionality_frequent'][i][j]:.3f}, rare "
                f"{metrics['dimensionality_rare'][i][j]:.3f} (random "
                f"{metrics['dimensionality_random'][j]:.3f}); KL {loss_kl[i, j].mean():.3f} "
                f"nats (unigram {loss_unigram[i]:.3f})"
            )
    print(f"CPU {metrics['cpu_seconds']:.1f} s")


if __name__ == "__main__":
    experiment_script(main, __doc__)
