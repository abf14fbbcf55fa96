"""TMS learning dynamics: feature dimensionalities jump between discrete values during training."""

from __future__ import annotations

from pathlib import Path

import torch

from superpose import SparseFeatures, ToyModel, analysis, train
from superpose.io import save_tensors
from superpose.registry import experiment_script

N_FEATURES = 10
N_HIDDEN = 4
FEATURE_PROBABILITY = 0.3
SEEDS = (0, 1, 2, 3)


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train uniform-importance ReLU-output models (one instance per seed), recording every
    feature's dimensionality ``D_i`` and the loss along the way; store them in
    ``results/learning_dynamics/dynamics.safetensors``."""
    steps, log_every = (100, 5) if quick else (4000, 5)
    model = ToyModel("relu", len(SEEDS), N_FEATURES, N_HIDDEN, seed=list(SEEDS))
    data = SparseFeatures(N_FEATURES, FEATURE_PROBABILITY, seed=0, device=device)
    dimensionality = []

    def snapshot(step: int, metrics: dict) -> None:
        dimensionality.append(analysis.feature_dimensionality(model.W.cpu()))

    result = train(
        model,
        data,
        steps=steps,
        lr=1e-3,
        log_every=log_every,
        seed=0,
        device=device,
        on_log=snapshot,
    )
    save_tensors(
        {
            "steps": result.history_steps,
            "loss": result.history_loss,
            "dimensionality": torch.stack(dimensionality),
            "final_loss": result.loss,
        },
        results / "learning_dynamics" / "dynamics.safetensors",
        {
            "config": {
                "n_features": N_FEATURES,
                "n_hidden": N_HIDDEN,
                "feature_probability": FEATURE_PROBABILITY,
                "seeds": list(SEEDS),
            }
        },
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
