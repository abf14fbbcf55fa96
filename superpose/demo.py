"""The TMS intro experiment: n=5 features into m=2 dimensions, linear vs ReLU output,
across feature probabilities. ``superpose demo`` runs it.

Training follows the paper's protocol: every (kind, feature probability) trains from
:data:`SEEDS` initialisations at once (:func:`superpose.train.train_seed_grid`) and the one
with the lowest held-out loss is kept. One seed is not enough: seed 0 alone drops the most
important feature at 1−S = 0.3 (loss 0.123 against 0.102 for the best of four) and keeps two
antipodal pairs instead of the pentagon at 1−S = 0.01 (0.0028 against 0.0008)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from superpose import analysis
from superpose._checks import resolve_device
from superpose.io import load_metadata, load_tensors, save_rows, save_tensors
from superpose.plotting import intro_figure, save_figure
from superpose.train import train_seed_grid

FEATURE_PROBABILITY = (1.0, 0.3, 0.1, 0.03, 0.01)
IMPORTANCE_DECAY = 0.9
SEEDS = (0, 1, 2, 3)
"""Initialisations per (kind, feature probability); the lowest held-out loss is kept."""


def train_intro(
    results: str | Path,
    steps: int = 5000,
    lr: float = 1e-2,
    seeds: Sequence[int] = SEEDS,
    device: str = "cpu",
    progress: bool | None = None,
) -> list[Path]:
    """Train linear and ReLU-output models, ``len(seeds)`` instances per feature probability,
    keep each probability's lowest-loss instance, and write ``weights.safetensors``
    (``<kind>/W: (probability, 2, 5)``, ``<kind>/b: (probability, 5)``, the kept instances)
    and ``metrics.csv`` (one row per kind and probability: the kept ``seed``, its ``loss``,
    the ``worst_seed_loss`` and :func:`superpose.analysis.scalar_metrics`) under ``results``.

    The data stream is seeded with 0, the batches with 0 (every seed sees the same batches).

    Returns the written paths.
    """
    device = str(resolve_device(device))
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    n_features, n_hidden = 5, 2
    importance = [IMPORTANCE_DECAY**i for i in range(n_features)]  # (n_features,)
    tensors, rows = {}, []
    kinds = ("linear", "relu")
    for kind in kinds:
        grid = train_seed_grid(
            kind,
            n_features,
            n_hidden,
            FEATURE_PROBABILITY,
            seeds,
            importance=importance,
            steps=steps,
            lr=lr,
            schedule="cosine",
            seed=0,
            device=device,
            progress=progress,
        )
        best = grid.best.cpu()  # (probability,) instance index of each probability's best seed
        loss = grid.result.loss.cpu().view(len(FEATURE_PROBABILITY), len(seeds))
        W = grid.model.W.detach().cpu()[best]  # (probability, n_hidden, n_features)
        tensors[f"{kind}/W"] = W
        tensors[f"{kind}/b"] = grid.model.b.detach().cpu()[best]  # (probability, n_features)
        metrics = analysis.scalar_metrics(W)
        for k, probability in enumerate(FEATURE_PROBABILITY):
            rows.append(
                {
                    "kind": kind,
                    "feature_probability": probability,
                    "seed": seeds[int(best[k]) % len(seeds)],
                    "loss": float(loss[k].min()),
                    "worst_seed_loss": float(loss[k].max()),
                    **{name: float(value[k]) for name, value in metrics.items()},
                }
            )
    results = Path(results)
    metadata = {
        "kinds": list(kinds),
        "feature_probability": list(FEATURE_PROBABILITY),
        "seeds": seeds,
    }
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
        n_seeds=len(metadata.get("seeds", [0])),
    )
    return save_figure(figure, Path(out) / "intro")


def run_demo(
    out: str | Path = "superpose-demo",
    steps: int = 5000,
    device: str = "cpu",
    progress: bool | None = None,
) -> list[Path]:
    """``superpose demo``: :func:`train_intro` then :func:`draw_intro`, both into ``out``."""
    return [*train_intro(out, steps, device=device, progress=progress), *draw_intro(out, out)]
