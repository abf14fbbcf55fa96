"""Feature splitting and hedging against dictionary width: one world, dictionaries from a
quarter to four times the feature count, with and without correlated firing.

Chanin et al. 2025 ("Feature Hedging: Correlated Features Break Narrow Sparse Autoencoders")
argue that an SAE narrower than the number of correlated features mixes them into its latents
(hedging), and that this fades once the dictionary is wide enough; Bricken et al. 2023
("Towards Monosemanticity") saw features split over several latents as dictionaries widen.
Scores come from :func:`superpose.sae.hedging` and :func:`superpose.sae.splitting`
(definitions in :mod:`superpose.sae.pathologies`): ``hedging`` (the norm of a matched
latent's decoder direction along the other true features), ``hedging_correlated`` (along the
features of its correlated group) and ``split_count`` / ``split_fraction`` (latents per
feature that point along it, ``cos ≥ 0.8``, and fire mostly on its inputs).

The world: :data:`N_FEATURES` orthonormal features in as many dims, each firing with
probability :data:`PROBABILITY`, magnitudes uniform on ``[0, 1]``. *Correlated*: the features
form groups of :data:`GROUP` whose firing is coupled through a Gaussian copula
(:class:`~superpose.data.LowRankCorrelation`, one factor per group with loading
``√CORRELATION``, so latent correlation :data:`CORRELATION` within a group and 0 across; every
feature keeps its probability). *Independent*: the same features without the copula. For each
width in :data:`WIDTHS` (multiples of the feature count) one batched SAE of each kind in
:data:`KINDS` trains several seeds as instances (TopK with ``k`` the world's L0 rounded;
ReLU with L1 coefficient :data:`L1`), Adam (lr :data:`LR`) on fresh batches.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from superpose import SparseFeatures, sae
from superpose.data import LowRankCorrelation
from superpose.io import save_json, save_rows
from superpose.registry import experiment_script
from superpose.train import cpu_threads

N_FEATURES = 64
PROBABILITY = 0.05
GROUP = 4
CORRELATION = 0.8
WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
"""Dictionary widths as multiples of the feature count."""
KINDS = ("topk", "relu")
L1 = 0.03
"""The ReLU SAEs' L1 coefficient."""
BATCH_SIZE = 1024
LR = 3e-3
SEED = 0
QUALITY = ("l0", "explained_variance", "mcc", "dead_fraction")
"""Columns of :func:`superpose.sae.evaluate` kept beside the pathology scores."""


class Size(NamedTuple):
    """One scale of the experiment.

    Attributes:
        n_features: true features (and dims).
        steps: training steps per SAE.
        seeds: seeds per width (instances of one batched SAE).
        eval_samples: fresh samples for the splitting scores.
    """

    n_features: int
    steps: int
    seeds: int
    eval_samples: int


SIZES = {
    "quick": Size(n_features=16, steps=30, seeds=1, eval_samples=2048),
    "cpu": Size(n_features=N_FEATURES, steps=2000, seeds=2, eval_samples=16384),
}


def groups(n_features: int) -> list[list[int]]:
    """Consecutive groups of :data:`GROUP` features."""
    return [list(range(start, start + GROUP)) for start in range(0, n_features, GROUP)]


def world(n_features: int, correlated: bool, seed: int = SEED) -> sae.Superposed:
    """The world of the module docstring, with or without correlated groups."""
    correlation = None
    if correlated:
        factor = torch.zeros(n_features, n_features // GROUP)
        factor[torch.arange(n_features), torch.arange(n_features) // GROUP] = CORRELATION**0.5
        correlation = LowRankCorrelation(factor)
    features = SparseFeatures(n_features, PROBABILITY, correlation=correlation, seed=seed + 1)
    return sae.Superposed(features, n_features, orthogonal=True, seed=seed + 2)


def build(kind: str, width: int, size: Size, k: int) -> sae.SparseAutoencoder:
    """A batched SAE of ``kind`` with ``width`` latents, one instance per seed."""
    options: dict[str, object] = {"l1_coefficient": L1}
    if kind != "relu":
        options = {"k": min(k, width), "aux_k": min(width, size.n_features // 2)}
    seeds = [100 * width + seed for seed in range(size.seeds)]
    return sae.SAE(kind, size.seeds, size.n_features, width, seed=seeds, **options)


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train every width, kind and world and store ``metrics.csv`` (one row per SAE instance:
    world, kind, width, width ratio, seed, L0, explained variance, MCC, dead fraction, the
    hedging and splitting summaries, training seconds), ``split_counts.csv`` (how many
    features of each instance have each split count) and ``config.json`` in
    ``results/sae_splitting_hedging``."""
    size = SIZES["quick" if quick else "cpu"]
    n = size.n_features
    k = max(1, round(n * PROBABILITY))
    start = time.perf_counter()
    tables: list[pd.DataFrame] = []
    counts: list[pd.DataFrame] = []
    with cpu_threads(1):
        for name in ("independent", "correlated"):
            source = world(n, correlated=name == "correlated")
            for kind in KINDS:
                for ratio in WIDTHS:
                    width = max(1, round(ratio * n))
                    model = build(kind, width, size, k)
                    trained = sae.train(
                        model,
                        source,
                        steps=size.steps,
                        batch_size=BATCH_SIZE,
                        lr=LR,
                        log_every=max(1, size.steps // 10),
                        seed=SEED + 5,
                        device=device,
                        progress=False,
                    )
                    quality = sae.evaluate(model, source, n_samples=size.eval_samples, seed=6)
                    # the same groups in both worlds: the independent one is the control
                    hedged = sae.hedging(model, source, correlated=groups(n))
                    split = sae.splitting(model, source, n_samples=size.eval_samples, seed=7)
                    labels = {"world": name, "kind": kind, "width": width, "ratio": ratio}
                    scores = quality[["instance", *QUALITY]].merge(
                        sae.hedging_summary(hedged).merge(sae.splitting_summary(split))
                    )
                    tables.append(scores.assign(**labels, train_seconds=trained.wall_time))
                    tally = split.groupby(["instance", "split_count"]).size()
                    counts.append(tally.rename("features").reset_index().assign(**labels))
    folder = Path(results) / "sae_splitting_hedging"
    for parts, file in ((tables, "metrics.csv"), (counts, "split_counts.csv")):
        table = pd.concat(parts).rename(columns={"instance": "seed"})
        save_rows(table.to_dict("records"), folder / file)
    save_json(
        {
            "size": "quick" if quick else "cpu",
            **size._asdict(),
            "probability": PROBABILITY,
            "group": GROUP,
            "correlation": CORRELATION,
            "widths": list(WIDTHS),
            "kinds": list(KINDS),
            "k": k,
            "l1_coefficient": L1,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "device": device,
            "seconds": time.perf_counter() - start,
        },
        folder / "config.json",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
