"""The TMS intro experiment: n=5 features into m=2 dimensions, linear vs ReLU output,
across feature probabilities. ``superpose demo`` runs it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from superpose import analysis
from superpose._checks import resolve_device
from superpose.data import SparseFeatures
from superpose.models import ToyModel
from superpose.plotting import intro_figure, save_figure
from superpose.train import train

FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01)
IMPORTANCE_DECAY = 0.9


def run_demo(
    out: str | Path = "superpose-demo",
    steps: int = 5000,
    lr: float = 1e-2,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Train linear and ReLU-output models (one instance per feature probability), then
    write ``weights.pt``, ``metrics.csv`` and the intro figure (PNG + PDF) under ``out``.

    Returns the written paths.
    """
    device = str(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_features, n_hidden = 5, 2
    importance = [[IMPORTANCE_DECAY**i for i in range(n_features)]]
    data = SparseFeatures(n_features, list(FEATURE_PROBABILITY), seed=seed, device=device)
    weights, biases, rows = {}, {}, []
    for kind in ("linear", "relu"):
        model = ToyModel(
            kind, len(FEATURE_PROBABILITY), n_features, n_hidden, importance, seed=seed
        )
        result = train(
            model,
            data,
            steps=steps,
            lr=lr,
            schedule="cosine",
            seed=seed,
            device=device,
            progress=progress,
        )
        weights[kind] = model.W.detach().cpu()
        biases[kind] = model.b.detach().cpu()
        metrics = analysis.scalar_metrics(model.W.cpu())
        for k, probability in enumerate(FEATURE_PROBABILITY):
            rows.append(
                {
                    "kind": kind,
                    "feature_probability": probability,
                    "loss": float(result.loss[k]),
                    **{name: float(value[k]) for name, value in metrics.items()},
                }
            )
    weights_path = out / "weights.pt"
    _atomic_save(
        {"W": weights, "b": biases, "feature_probability": FEATURE_PROBABILITY}, weights_path
    )
    metrics_path = out / "metrics.csv"
    tmp = metrics_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, metrics_path)
    figure = intro_figure(
        {k: w.numpy() for k, w in weights.items()},
        {k: b.numpy() for k, b in biases.items()},
        FEATURE_PROBABILITY,
    )
    return [weights_path, metrics_path, *save_figure(figure, out / "intro")]


def _atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
