"""TMS computation in superposition: the absolute-value model, features per neuron vs sparsity."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose import SparseFeatures, ToyModel, analysis, train
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

N_FEATURES = 50
N_HIDDEN = 20
IMPORTANCE_DECAY = 0.9
FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
STEPS = 4000
BATCH_SIZE = 1024
LR = 1e-2
WEIGHT_THRESHOLD = 0.1
"""A neuron responds to a feature when ``|W[k, i]|`` exceeds this (inputs are signed)."""


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train ``"abs"`` models (target ``|x|``, inputs uniform on [-1, 1]), one instance per
    feature probability, and store ``weights.safetensors`` (input and output weights, features per
    neuron) and ``metrics.csv`` in ``results/computation``."""
    n_features, n_hidden, steps = (10, 4, 100) if quick else (N_FEATURES, N_HIDDEN, STEPS)
    probability = list(FEATURE_PROBABILITY)
    importance = [IMPORTANCE_DECAY**i for i in range(n_features)]  # (n_features,)
    data = SparseFeatures(  # one probability per instance: shape (instance, 1)
        n_features, [[p] for p in probability], magnitude="signed_uniform", seed=0, device=device
    )
    model = ToyModel("abs", len(probability), n_features, n_hidden, importance, seed=0)
    start = time.perf_counter()
    with cpu_threads(1):  # small models: one thread is fastest, above all on a shared CPU
        result = train(
            model,
            data,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            schedule="cosine",
            device=device,
            progress=not quick,
        )
    seconds = time.perf_counter() - start
    W = model.W.detach().cpu()
    # signed inputs: a neuron reads feature i with either sign of its weight
    per_neuron = analysis.features_per_neuron(W.abs(), WEIGHT_THRESHOLD)
    norms = analysis.feature_norms(W)
    folder = Path(results) / "computation"
    save_tensors(
        {
            "W": W,
            "W_out": model.W_out.detach().cpu(),
            "b": model.b.detach().cpu(),
            "b_hidden": model.b_hidden.detach().cpu(),
            "feature_probability": torch.tensor(probability),
            "features_per_neuron": per_neuron,
            "norms": norms,
            "loss": result.loss,
        },
        folder / "weights.safetensors",
        {
            "config": {
                "n_features": n_features,
                "n_hidden": n_hidden,
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
                "loss": float(result.loss[k]),
                "mean_features_per_neuron": float(per_neuron[k].float().mean()),
                "dead_neurons": int((per_neuron[k] == 0).sum()),
                "monosemantic_neurons": int((per_neuron[k] == 1).sum()),
                "polysemantic_neurons": int((per_neuron[k] >= 2).sum()),
                "represented_features": int((norms[k] > analysis.REPRESENTED_NORM).sum()),
            }
            for k, p in enumerate(probability)
        ],
        folder / "metrics.csv",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
