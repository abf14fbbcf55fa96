"""TMS uniform superposition: n equally important features in m dims across sparsity."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from superpose import SparseFeatures, ToyModel, analysis, train
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

N_FEATURES = 100
N_HIDDEN = 20
N_DENSITIES = 20
MIN_DENSITY = 1 / 50
STEPS = 10_000
BATCH_SIZE = 512
LR = 1e-2


def densities(n: int = N_DENSITIES, low: float = MIN_DENSITY) -> np.ndarray:
    """``(n,)`` feature probabilities ``1 − S`` from 1 down to ``low``, log-spaced."""
    return np.logspace(0.0, np.log10(low), n)


def train_uniform(
    feature_probability: np.ndarray,
    n_features: int = N_FEATURES,
    n_hidden: int = N_HIDDEN,
    *,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[ToyModel, torch.Tensor]:
    """Train one ReLU-output instance per entry of ``feature_probability`` ``(instance,)``, all
    features of importance 1; returns the model (on CPU) and its held-out loss ``(instance,)``."""
    probability = [[float(p)] for p in feature_probability]  # (instance, 1)
    data = SparseFeatures(n_features, probability, seed=seed, device=device)
    model = ToyModel("relu", len(probability), n_features, n_hidden, 1.0, seed=seed)
    with cpu_threads(1):  # small models: one thread is fastest, above all on a shared CPU
        result = train(
            model,
            data,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            schedule="cosine",
            seed=seed,
            device=device,
            eval_samples=16384,
            progress=progress,
        )
    return model.cpu(), result.loss


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the sweep and store ``weights.safetensors`` (W, b, per-feature dimensionality) and
    ``metrics.csv`` (one row per feature probability) in ``results/uniform_superposition``."""
    n_features, n_hidden, steps = (20, 4, 100) if quick else (N_FEATURES, N_HIDDEN, STEPS)
    probability = densities(4 if quick else N_DENSITIES)
    start = time.perf_counter()
    model, loss = train_uniform(
        probability, n_features, n_hidden, steps=steps, device=device, progress=not quick
    )
    seconds = time.perf_counter() - start
    W = model.W.detach()
    metrics = analysis.scalar_metrics(W)
    folder = Path(results) / "uniform_superposition"
    save_tensors(
        {
            "W": W,
            "b": model.b.detach(),
            "feature_probability": torch.tensor(probability),
            "feature_dimensionality": analysis.feature_dimensionality(W),
            "loss": loss,
        },
        folder / "weights.safetensors",
        {
            "config": {
                "n_features": n_features,
                "n_hidden": n_hidden,
                "steps": steps,
                "batch_size": BATCH_SIZE,
                "lr": LR,
                "seconds": seconds,
                "quick": quick,
            }
        },
    )
    save_rows(
        [
            {
                "feature_probability": float(p),
                "inverse_density": 1.0 / float(p),
                "loss": float(loss[k]),
                **{name: float(value[k]) for name, value in metrics.items()},
            }
            for k, p in enumerate(probability)
        ],
        folder / "metrics.csv",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
