"""Feature absorption measured exactly: Chanin et al.'s toy, then a scaled hierarchy, against
the sparsity penalty or k, per SAE kind.

Chanin et al. 2024 ("A is for Absorption") show that when a child feature fires only with its
parent, sparsity is cheaper if the child's latent also writes the parent's direction and the
parent's latent stays silent on the child's inputs; they argue stronger sparsity pressure
absorbs more, and Matryoshka SAEs (Bussmann et al. 2025; Nabeshima 2024) were proposed to
absorb less than BatchTopK at the same L0. Scores come from
:func:`superpose.sae.absorption` (definitions there): ``full_absorption`` (the parent's latent
silent when parent and child fire together), ``absorption_cosine`` (the parent direction in the
child's latent), ``absorption_share`` (the part of the reconstruction along the parent not
made by the parent's latent) and the control ``parent_miss_alone``.

* **Toy** (Chanin et al.'s): 4 orthonormal features in 50 dims, magnitude 1; f0 fires with
  probability 0.25, f1–f3 with 0.05. *Hierarchical*: f1 fires only with f0 (0.2 given f0, so
  still 0.05 overall); *independent*: the same probabilities, no hierarchy (the control, scored
  on the pair (f0, f1) all the same). Four-latent ReLU (L1) SAEs, as in the paper, over a sweep
  of penalties with several seeds each. The other kinds are left out here: the world's L0 is
  0.4, and TopK's ``k ≥ 1`` latents per sample fire on the 68 % of empty samples, which it
  learns to cancel through ``b_dec`` (measured: degenerate dictionaries); JumpReLU from its
  default threshold fired on empty samples too (L0 ≈ 1, MCC 0.46–0.81 after 3,000 steps).
* **Scaled**: :data:`ROOTS` roots, each with :data:`CHILDREN` mutually exclusive children
  (each fires with probability :data:`CHILD_PROBABILITY` given its root), roots firing with
  :data:`ROOT_PROBABILITY`; magnitude 1; orthonormal directions in as many dims as features;
  dictionaries as wide as the feature count. Every kind over its own sweep: ``k`` for TopK,
  BatchTopK and Matryoshka (default prefixes), the penalty for ReLU and JumpReLU (thresholds
  from :data:`JUMPRELU_THRESHOLD`, bandwidth :data:`JUMPRELU_BANDWIDTH`); one batched SAE per
  kind.

All SAEs train with Adam (lr :data:`LR`) on fresh batches (:data:`TOY_BATCH_SIZE`,
:data:`SCALED_BATCH_SIZE`); scores and L0 come from fresh samples (BatchTopK at its inference
threshold).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from superpose import SparseFeatures, sae
from superpose.data import Hierarchy
from superpose.io import save_json, save_rows
from superpose.registry import experiment_script
from superpose.train import cpu_threads

TOY_D_MODEL = 50
TOY_PROBABILITY = (0.25, 0.05, 0.05, 0.05)
TOY_HIERARCHY = Hierarchy([-1, 0, -1, -1])
TOY_SWEEPS = {"relu": ("l1_coefficient", (0.001, 0.003, 0.01, 0.03, 0.1, 0.3))}
"""The toy's kinds: the hyper-parameter swept and its values."""

ROOTS = 32
CHILDREN = 4
ROOT_PROBABILITY = 0.1
CHILD_PROBABILITY = 0.2
SCALED_SWEEPS = {
    "relu": ("l1_coefficient", (0.01, 0.02, 0.03, 0.05, 0.1, 0.3)),
    "jumprelu": ("l0_coefficient", (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    "topk": ("k", (2, 3, 4, 6, 8, 12)),
    "batchtopk": ("k", (2, 3, 4, 6, 8, 12)),
    "matryoshka": ("k", (2, 3, 4, 6, 8, 12)),
}
"""The scaled world's kinds: the hyper-parameter swept (stronger pressure: a larger penalty, a
smaller ``k``) and its values. Measured on this world: ReLU collapses from λ = 1 (36 % of
latents dead, explained variance 0.68), and JumpReLU's L0 hardly follows its coefficient."""
JUMPRELU_THRESHOLD = 0.3
JUMPRELU_BANDWIDTH = 0.1
"""JumpReLU's initial threshold and bandwidth on the scaled world. Measured over the sweep: from
the library's (0.1, 0.05) L0 stayed at 21–72 (the world's is 5.8) whatever the coefficient;
from (0.5, 0.1) 35–45 % of latents never fired; (0.3, 0.1) gave L0 4.3–6.6, 11–28 % dead."""

TOY_BATCH_SIZE = 1024
SCALED_BATCH_SIZE = 512
LR = 3e-3
"""Three times the library's default: at 1e-3 the four-latent toy SAEs were still mixtures of
features after 2,000 steps."""
SEED = 0


class Size(NamedTuple):
    """One scale of the experiment.

    Attributes:
        toy_steps: training steps of every toy SAE.
        toy_seeds: seeds per toy penalty.
        roots: roots of the scaled hierarchy.
        scaled_steps: training steps of every scaled SAE.
        eval_samples: fresh samples for the scores.
    """

    toy_steps: int
    toy_seeds: int
    roots: int
    scaled_steps: int
    eval_samples: int


SIZES = {
    "quick": Size(toy_steps=30, toy_seeds=1, roots=4, scaled_steps=30, eval_samples=2048),
    "cpu": Size(toy_steps=3000, toy_seeds=3, roots=ROOTS, scaled_steps=2000, eval_samples=16384),
}


def toy_world(hierarchical: bool, seed: int = SEED) -> sae.Superposed:
    """Chanin et al.'s toy: 4 orthonormal unit-magnitude features in 50 dims, f1 gated on f0
    when ``hierarchical``."""
    probability = list(TOY_PROBABILITY)
    if hierarchical:
        probability[1] = TOY_PROBABILITY[1] / TOY_PROBABILITY[0]  # given f0: 0.05 overall
    features = SparseFeatures(
        4,
        probability,
        magnitude="constant",
        hierarchy=TOY_HIERARCHY if hierarchical else None,
        seed=seed,
    )
    return sae.Superposed(features, TOY_D_MODEL, orthogonal=True, seed=seed + 1)


def scaled_hierarchy(roots: int) -> Hierarchy:
    """Roots ``0 … roots−1``, then each root's :data:`CHILDREN` children in turn (mutually
    exclusive)."""
    children = [root for root in range(roots) for _ in range(CHILDREN)]
    return Hierarchy([-1] * roots + children, exclusive=True)


def scaled_world(roots: int, seed: int = SEED) -> sae.Superposed:
    """The scaled hierarchy with orthonormal unit-magnitude features in ``n_features`` dims."""
    hierarchy = scaled_hierarchy(roots)
    n = len(hierarchy.parent)
    probability = [ROOT_PROBABILITY] * roots + [CHILD_PROBABILITY] * (n - roots)
    features = SparseFeatures(
        n, probability, magnitude="constant", hierarchy=hierarchy, seed=seed + 2
    )
    return sae.Superposed(features, n, orthogonal=True, seed=seed + 3)


def train_sweep(
    kind: str,
    values: list[float],
    source: sae.Superposed,
    d_sae: int,
    steps: int,
    batch_size: int,
    device: str,
    quick: bool,
) -> tuple[sae.SparseAutoencoder, float]:
    """One batched SAE of ``kind`` with one instance per value of its swept hyper-parameter
    (instance ``i`` initialised with seed ``i``), trained on ``source``; returns it and its
    training seconds."""
    name = (TOY_SWEEPS | SCALED_SWEEPS)[kind][0]
    options: dict[str, object] = {name: [int(v) for v in values] if name == "k" else values}
    if name == "k":
        options["aux_k"] = min(d_sae, source.d_model // 2)
    if kind == "jumprelu":
        options.update(threshold_init=JUMPRELU_THRESHOLD, bandwidth=JUMPRELU_BANDWIDTH)
    model = sae.SAE(
        kind, len(values), source.d_model, d_sae, seed=list(range(len(values))), **options
    )
    trained = sae.train(
        model,
        source,
        steps=steps,
        batch_size=batch_size,
        lr=LR,
        log_every=max(1, steps // 10),
        seed=SEED + 5,
        device=device,
        progress=not quick,
    )
    return model, trained.wall_time


def score(
    model: sae.SparseAutoencoder,
    source: sae.Superposed,
    hierarchy: Hierarchy,
    n_samples: int,
) -> pd.DataFrame:
    """Per-instance L0, explained variance, MCC and the absorption summary."""
    quality = sae.evaluate(model, source, n_samples=n_samples, seed=SEED + 6)
    pairs = sae.absorption(model, source, hierarchy=hierarchy, n_samples=n_samples, seed=SEED + 7)
    columns = ["instance", "l0", "explained_variance", "mcc", "dead_fraction"]
    return quality[columns].merge(sae.absorption_summary(pairs))


def run_toy(size: Size, device: str, quick: bool) -> list[dict[str, object]]:
    """The toy sweeps: one row per SAE instance (world, kind, hyper-parameter, seed, scores,
    training seconds)."""
    rows: list[dict[str, object]] = []
    for world_name in ("hierarchical", "independent"):
        world = toy_world(world_name == "hierarchical")
        for kind, (name, values) in TOY_SWEEPS.items():
            grid = [(value, seed) for seed in range(size.toy_seeds) for value in values]
            model, seconds = train_sweep(
                kind,
                [v for v, _ in grid],
                world,
                4,
                size.toy_steps,
                TOY_BATCH_SIZE,
                device,
                quick,
            )
            scores = score(model, world, TOY_HIERARCHY, size.eval_samples)
            for row, (value, seed) in zip(scores.to_dict("records"), grid, strict=True):
                labels = {"world": world_name, "kind": kind, "parameter": name, "value": value}
                rows.append({**labels, "seed": seed, **row, "train_seconds": seconds})
    return rows


def run_scaled(
    size: Size, device: str, quick: bool, kinds: tuple[str, ...] = tuple(SCALED_SWEEPS)
) -> list[dict[str, object]]:
    """The scaled sweeps of ``kinds``: one row per SAE instance (kind, hyper-parameter, scores,
    training seconds)."""
    world = scaled_world(size.roots)
    rows: list[dict[str, object]] = []
    for kind in kinds:
        name, values = SCALED_SWEEPS[kind]
        model, seconds = train_sweep(
            kind,
            list(values),
            world,
            world.n_features,
            size.scaled_steps,
            SCALED_BATCH_SIZE,
            device,
            quick,
        )
        scores = score(model, world, world.features.hierarchy, size.eval_samples)
        for row, value in zip(scores.to_dict("records"), values, strict=True):
            labels = {"kind": kind, "parameter": name, "value": value}
            rows.append({**labels, **row, "train_seconds": seconds})
    return rows


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the toy and scaled sweeps and store ``toy.csv`` and ``scaled.csv`` (one row per
    SAE instance: world, kind, hyper-parameter, seed, L0, explained variance, MCC, dead
    fraction, the absorption summary, training seconds) and ``config.json`` in
    ``results/sae_absorption``."""
    size = SIZES["quick" if quick else "cpu"]
    start = time.perf_counter()
    folder = Path(results) / "sae_absorption"
    with cpu_threads(1):
        save_rows(run_toy(size, device, quick), folder / "toy.csv")
        save_rows(run_scaled(size, device, quick), folder / "scaled.csv")
    world = scaled_world(size.roots)
    save_json(
        {
            "size": "quick" if quick else "cpu",
            **size._asdict(),
            "toy_d_model": TOY_D_MODEL,
            "toy_probability": list(TOY_PROBABILITY),
            "children": CHILDREN,
            "root_probability": ROOT_PROBABILITY,
            "child_probability": CHILD_PROBABILITY,
            "n_features": world.n_features,
            "world_l0": float(world.features.marginal_probability.sum()),
            "toy_batch_size": TOY_BATCH_SIZE,
            "scaled_batch_size": SCALED_BATCH_SIZE,
            "jumprelu_threshold_init": JUMPRELU_THRESHOLD,
            "jumprelu_bandwidth": JUMPRELU_BANDWIDTH,
            "lr": LR,
            "device": device,
            "seconds": time.perf_counter() - start,
        },
        folder / "config.json",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
