"""The TMS intro experiment: n=5 features into m=2 dimensions, linear vs ReLU output,
across feature probabilities. ``superpose demo`` runs it."""

from __future__ import annotations

from pathlib import Path

from superpose import analysis
from superpose._checks import resolve_device
from superpose.data import SparseFeatures
from superpose.io import load_metadata, load_tensors, save_rows, save_tensors
from superpose.models import ToyModel
from superpose.plotting import intro_figure, save_figure
from superpose.train import train

FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01)
IMPORTANCE_DECAY = 0.9


def train_intro(
    results: str | Path,
    steps: int = 5000,
    lr: float = 1e-2,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Train linear and ReLU-output models (one instance per feature probability) and write
    ``weights.safetensors`` (``<kind>/W``, ``<kind>/b``) and ``metrics.csv`` under
    ``results``.

    Returns the written paths.
    """
    device = str(resolve_device(device))
    n_features, n_hidden = 5, 2
    importance = [IMPORTANCE_DECAY**i for i in range(n_features)]  # (n_features,)
    probability = [[p] for p in FEATURE_PROBABILITY]  # (instance, 1): one per instance
    data = SparseFeatures(n_features, probability, seed=seed, device=device)
    tensors, rows = {}, []
    kinds = ("linear", "relu")
    for kind in kinds:
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
        tensors[f"{kind}/W"] = model.W.detach()
        tensors[f"{kind}/b"] = model.b.detach()
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
    results = Path(results)
    metadata = {"kinds": list(kinds), "feature_probability": list(FEATURE_PROBABILITY)}
    return [
        save_tensors(tensors, results / "weights.safetensors", metadata),
        save_rows(rows, results / "metrics.csv"),
    ]


def draw_intro(results: str | Path, out: str | Path) -> list[Path]:
    """Draw the intro figure from what :func:`train_intro` stored in ``results``; writes
    ``intro.png`` and ``intro.pdf`` under ``out`` and returns their paths."""
    path = Path(results) / "weights.safetensors"
    stored, metadata = load_tensors(path), load_metadata(path)
    figure = intro_figure(
        {kind: stored[f"{kind}/W"].numpy() for kind in metadata["kinds"]},
        {kind: stored[f"{kind}/b"].numpy() for kind in metadata["kinds"]},
        metadata["feature_probability"],
    )
    return save_figure(figure, Path(out) / "intro")


def run_demo(
    out: str | Path = "superpose-demo",
    steps: int = 5000,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """``superpose demo``: :func:`train_intro` then :func:`draw_intro`, both into ``out``."""
    return [*train_intro(out, steps, device=device, progress=progress), *draw_intro(out, out)]
