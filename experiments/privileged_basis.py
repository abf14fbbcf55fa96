"""TMS privileged basis: hidden-ReLU models, monosemantic to polysemantic neurons with sparsity."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose import analysis
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.train import train_seed_grid

N_FEATURES = 10
N_HIDDEN = 5
IMPORTANCE_DECAY = 0.75
FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
SEEDS = (0, 1, 2)
STEPS = 10_000
BATCH_SIZE = 1024
LR = 1e-2
WEIGHT_THRESHOLD = 0.1
"""A neuron responds to a feature when its input weight exceeds this (inputs are ≥ 0)."""


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train ``"hidden_relu"`` models, one instance per (feature probability, seed), keep the
    lowest-loss seed per probability and store ``weights.safetensors`` (``W: (probability, neuron,
    feature)``, ``b``, features per neuron, monosemanticity) and ``metrics.csv`` (dead /
    monosemantic / polysemantic neuron counts) in ``results/privileged_basis``."""
    steps = 100 if quick else STEPS
    importance = [IMPORTANCE_DECAY**i for i in range(N_FEATURES)]  # (n_features,)
    start = time.perf_counter()
    grid = train_seed_grid(
        "hidden_relu",
        N_FEATURES,
        N_HIDDEN,
        FEATURE_PROBABILITY,
        SEEDS,
        importance=importance,
        device=device,
        steps=steps,
        batch_size=BATCH_SIZE,
        lr=LR,
        schedule="cosine",
        progress=not quick,
    )
    seconds = time.perf_counter() - start
    model, result, best = grid.model, grid.result, grid.best
    W = model.W.detach().cpu()[best]
    per_neuron = analysis.features_per_neuron(W, WEIGHT_THRESHOLD)
    norms = analysis.feature_norms(W)
    folder = Path(results) / "privileged_basis"
    save_tensors(
        {
            "W": W,
            "b": model.b.detach().cpu()[best],
            "feature_probability": torch.tensor(FEATURE_PROBABILITY),
            "features_per_neuron": per_neuron,
            "monosemanticity": analysis.neuron_monosemanticity(W),
            "norms": norms,
            "loss": result.loss[best],
        },
        folder / "weights.safetensors",
        {
            "config": {
                "steps": steps,
                "lr": LR,
                "importance_decay": IMPORTANCE_DECAY,
                "weight_threshold": WEIGHT_THRESHOLD,
                "seconds": seconds,
            }
        },
    )
    save_rows(
        [
            {
                "feature_probability": p,
                "seed": SEEDS[int(best[k]) % len(SEEDS)],
                "loss": float(result.loss[best[k]]),
                "dead_neurons": int((per_neuron[k] == 0).sum()),
                "monosemantic_neurons": int((per_neuron[k] == 1).sum()),
                "polysemantic_neurons": int((per_neuron[k] >= 2).sum()),
                "mean_features_per_neuron": float(per_neuron[k].float().mean()),
                "represented_features": int((norms[k] > analysis.REPRESENTED_NORM).sum()),
            }
            for k, p in enumerate(FEATURE_PROBABILITY)
        ],
        folder / "metrics.csv",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
