"""TMS "superposition as sparsity varies": n=20 features (importance 0.7**i) in m=5 dims."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose import analysis
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.train import train_seed_grid

N_FEATURES = 20
N_HIDDEN = 5
IMPORTANCE_DECAY = 0.7
FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
"""The paper's columns: sparsity 0, 70, 90, 97, 99, 99.7 and 99.9 %."""
SEEDS = (0, 1)
STEPS = 10_000
BATCH_SIZE = 1024
LR = 1e-2


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train ReLU-output models, one instance per (feature probability, seed), and store the
    lowest-loss seed of each probability in ``results/sparsity_sweep``: ``weights.safetensors``
    (``W: (probability, 5, 20)``, ``b``, norms, superposition) and ``metrics.csv``."""
    steps = 100 if quick else STEPS
    importance = [IMPORTANCE_DECAY**i for i in range(N_FEATURES)]  # (n_features,)
    start = time.perf_counter()
    grid = train_seed_grid(
        "relu",
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
    metrics = analysis.scalar_metrics(W)
    folder = Path(results) / "sparsity_sweep"
    save_tensors(
        {
            "W": W,
            "b": model.b.detach().cpu()[best],
            "feature_probability": torch.tensor(FEATURE_PROBABILITY),
            "importance": torch.tensor(importance),
            "norms": analysis.feature_norms(W),
            "superposition": analysis.superposition(W),
            "loss": result.loss[best],
        },
        folder / "weights.safetensors",
        {"config": {"steps": steps, "lr": LR, "seeds": list(SEEDS), "seconds": seconds}},
    )
    save_rows(
        [
            {
                "feature_probability": p,
                "seed": SEEDS[int(best[k]) % len(SEEDS)],
                "loss": float(result.loss[best[k]]),
                **{name: float(value[k]) for name, value in metrics.items()},
            }
            for k, p in enumerate(FEATURE_PROBABILITY)
        ],
        folder / "metrics.csv",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
