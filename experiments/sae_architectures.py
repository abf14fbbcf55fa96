"""SAE architectures on a scaled-down SynthSAEBench world: MCC, F1, explained variance and L0
of each kind at matched L0, beside the published full-size ranking.

The world follows SynthSAEBench-16k (Chanin & Garriga-Alonso 2026; SAELens
``sae_lens.synthetic``), scaled by :data:`SIZES`:

* Zipf firing probabilities, exponent 0.5, from 0.4 down to 5e-4 (feature 0 the most frequent);
* a hierarchy: ``n_features / 128`` roots (the most frequent features), each a complete tree
  of branching 4 and depth 3 laid out breadth first as SAELens does (two thirds of the
  features), every parent's children mutually exclusive; the Zipf profile is the target of
  the *marginal* probabilities (SAELens's ``compensate_probabilities``): a child fires with
  its marginal divided by its parent's, and where a sibling group's conditional
  probabilities sum above 1 they are scaled to sum to 1 (SAELens cannot reach those
  marginals either);
* low-rank correlated firing: a Gaussian copula of rank 25, scale 0.1 (roots and free
  features; exclusive siblings share one independent draw);
* magnitudes ``max(0, N(μ_i, σ_i²))`` with ``μ_i`` linear from 5 to 4 and ``σ_i ~ |N(0.5,
  0.5²)|``, all divided by :data:`MAGNITUDE_SCALE` so that the library's SAE defaults (made
  for unit magnitudes) apply: a constant scale of the activations, which changes none of
  the scores below;
* children scaled by their parents (SAELens's ``scale_children_by_parent``, on in
  SynthSAEBench-16k's generator): a firing child's magnitude is multiplied by its parent's
  magnitude over the parent's ``μ`` (:class:`~superpose.data.Hierarchy` ``parent_scale``),
  depth by depth from the roots;
* directions: random unit vectors made orthonormal in blocks of ``d_model``
  (:class:`~superpose.sae.Superposed` with ``orthogonal=True``; SAELens instead runs 100
  Adam steps on the pairwise overlaps).

Left out: SAELens's activation bias of norm 0.5 (the SAEs' ``b_dec`` absorbs a constant
offset).

Every kind gets ``width = n_features / 4`` latents. L0 is matched to the world's own L0 over
its ``width`` most frequent features (SynthSAEBench's L0 = 25 for 16,384 features and width
4,096): ``k`` for TopK, BatchTopK and Matryoshka (BatchTopK latents, prefixes ``width/8,
width/4, width/2, width``); for ReLU (L1) and JumpReLU a sweep of penalties trained as one
batched SAE (JumpReLU thresholds start at :data:`JUMPRELU_THRESHOLD`), keeping the instance
whose held-out L0 is nearest the target in ratio. All
train with Adam (lr 1e-3) on batches of 1,024 and are scored by
:func:`superpose.sae.evaluate` on fresh samples: MCC (Hungarian matching of decoder rows to
true directions), F1 of each matched latent's firing against its feature's, explained
variance, L0 and dead latents, and SynthSAEBench's own per-latent F1 (``latent_f1``: each
latent against the feature it best detects), the F1 its published table reports.

On CPU the world's sampler (copula, hierarchy and exclusive siblings for every feature) costs
more than an SAE step, so the training stream replays a pool of ``pool`` samples drawn once
(:class:`Replay`); evaluation draws fresh samples. ``python experiments/sae_architectures.py
--full --device cuda`` runs the published size (16,384 features in 768 dims, width 4,096,
200M fresh samples per SAE, L0 ≈ 25).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from superpose import SparseFeatures, sae
from superpose.data import Hierarchy, LowRankCorrelation, rectified_normal, zipf_probability
from superpose.io import save_json, save_rows
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

ZIPF_EXPONENT = 0.5
MAX_PROBABILITY = 0.4
MIN_PROBABILITY = 5e-4
ROOT_FRACTION = 128
"""One hierarchy root per this many features (128 roots of 16,384)."""
BRANCHING = 4
DEPTH = 3
CORRELATION_RANK = 25
CORRELATION_SCALE = 0.1
MEAN_MAGNITUDE = (5.0, 4.0)
STD_MAGNITUDE = (0.5, 0.5)
"""Mean and std of the normal whose absolute value is each feature's magnitude std."""
MAGNITUDE_SCALE = 4.5
SCALE_CHILDREN_BY_PARENT = True
"""Whether a child's magnitude is multiplied by its parent's over the parent's mean ``μ``
(SynthSAEBench-16k's generator: True)."""
BATCH_SIZE = 1024
LR = 1e-3
SEED = 0

RELU_L1 = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
"""ReLU SAE L1 coefficients swept (one batched SAE)."""
JUMPRELU_L0 = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""JumpReLU L0 coefficients swept (one batched SAE)."""
JUMPRELU_THRESHOLD = 0.5
"""JumpReLU's initial threshold: ``log θ`` moves by about ``lr`` per step, so from the library's
0.1 a threshold cannot reach the scale of unit magnitudes in a CPU-sized run (measured at 1,000
steps: L0 ≥ 25 at every coefficient up to 1, three times the target)."""
KINDS = ("relu", "jumprelu", "topk", "batchtopk", "matryoshka")

PUBLISHED = {
    "matryoshka": {"mcc": 0.793, "latent_f1": 0.879},
    "batchtopk": {"mcc": 0.757, "latent_f1": 0.732},
    "jumprelu": {"mcc": 0.753, "latent_f1": 0.732},
    "relu": {"mcc": 0.604, "latent_f1": 0.556},
}
"""SynthSAEBench-16k at L0 = 25 (16,384 features in 768 dims, width 4,096, 200M samples); its
F1 is the per-latent one (``latent_f1``)."""


class Size(NamedTuple):
    """One scale of the experiment.

    Attributes:
        n_features: true features.
        d_model: activation dimension.
        steps: training steps per SAE (batches of :data:`BATCH_SIZE`).
        pool: samples in the replayed training pool, or None to train on fresh samples.
        eval_samples: fresh samples for the scores.
    """

    n_features: int
    d_model: int
    steps: int
    pool: int | None
    eval_samples: int

    @property
    def width(self) -> int:
        """SAE latents: a quarter of the features."""
        return self.n_features // 4


SIZES = {
    "quick": Size(n_features=256, d_model=32, steps=20, pool=2**12, eval_samples=2048),
    "cpu": Size(n_features=2048, d_model=256, steps=1000, pool=2**18, eval_samples=16384),
    "full": Size(n_features=16384, d_model=768, steps=195_313, pool=None, eval_samples=500_000),
}


def hierarchy_parents(n_features: int) -> list[int]:
    """Parent of every feature (-1: none): ``n_features / ROOT_FRACTION`` roots (features
    ``0, 1, ...``), then their complete trees of :data:`BRANCHING` and :data:`DEPTH` laid out
    breadth first (root 0's children are the next ``BRANCHING`` features, and so on);
    features beyond the trees have no parent."""
    parent = [-1] * n_features
    level = list(range(max(1, n_features // ROOT_FRACTION)))
    following = len(level)
    for _ in range(DEPTH):
        children = []
        for node in level:
            for _ in range(BRANCHING):
                parent[following] = node
                children.append(following)
                following += 1
        level = children
    return parent


def conditional_probability(hierarchy: Hierarchy, marginal: torch.Tensor) -> torch.Tensor:
    """``(n_features,)`` feature probabilities (a child's conditional on its parent) aiming at
    the ``marginal: (n_features,)`` profile; an exclusive sibling group whose conditional
    probabilities sum above 1 is scaled to sum to 1."""
    conditional = hierarchy.conditional_probability(marginal)
    parent = torch.tensor(hierarchy.parent)
    for node in sorted(set(hierarchy.parent) - {-1}):
        siblings = parent == node
        total = conditional[siblings].sum()
        if total > 1:
            conditional[siblings] /= total
    return conditional


def make_world(size: Size, seed: int = SEED, device: str = "cpu") -> sae.Superposed:
    """The scaled SynthSAEBench world of ``size`` (see the module docstring)."""
    n = size.n_features
    generator = torch.Generator().manual_seed(seed)
    mean = torch.linspace(*MEAN_MAGNITUDE, n) / MAGNITUDE_SCALE
    std = (STD_MAGNITUDE[0] + STD_MAGNITUDE[1] * torch.randn(n, generator=generator)).abs()
    hierarchy = Hierarchy(
        hierarchy_parents(n),
        exclusive=True,
        parent_scale=mean if SCALE_CHILDREN_BY_PARENT else None,
    )
    marginal = zipf_probability(n, ZIPF_EXPONENT, MAX_PROBABILITY, MIN_PROBABILITY)
    features = SparseFeatures(
        n,
        conditional_probability(hierarchy, marginal),
        magnitude=rectified_normal(mean, std / MAGNITUDE_SCALE),
        hierarchy=hierarchy,
        correlation=LowRankCorrelation.random(
            n, CORRELATION_RANK, CORRELATION_SCALE, seed=seed + 1
        ),
        seed=seed + 2,
        device=device,
    )
    return sae.Superposed(features, size.d_model, orthogonal=True, seed=seed + 3)


class Replay(sae.ActivationSource):
    """A pool of ``n_samples`` activations drawn once from ``source`` and served in random
    order (with replacement), for training only: its batches carry no feature values
    (``(1, batch, 0)``), so score SAEs on ``source`` itself.

    Attributes:
        pool: ``(n_samples, d_model)`` the activations.
    """

    def __init__(self, source: sae.ActivationSource, n_samples: int, seed: int) -> None:
        self.features = source.features
        self.directions = source.directions
        generator = torch.Generator(source.features.device).manual_seed(seed)
        chunk = 4096
        self.pool = torch.cat(
            [source.sample(chunk, 1, generator)[0] for _ in range(math.ceil(n_samples / chunk))]
        )[:n_samples]

    def sample_with_features(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` pool rows ``(1, batch, d_model)`` and an empty ``(1, batch, 0)``."""
        rows = torch.randint(
            len(self.pool), (int(batch_size),), generator=generator, device=self.pool.device
        )
        x = self.pool[rows][None]
        return x, x.new_zeros(1, x.shape[1], 0)


def target_l0(world: sae.Superposed, width: int) -> float:
    """The world's expected number of firing features among its ``width`` most frequent."""
    return float(world.features.marginal_probability[0, :width].sum())


def build(
    kind: str, size: Size, k: int, seed: int = SEED
) -> tuple[sae.SparseAutoencoder, list[float | int]]:
    """The kind's batched SAE (instances initialised from seeds ``10 + 16·seed, ...``) and
    the hyper-parameter of each instance (penalty or ``k``)."""
    options: dict[str, object]
    if kind == "relu":
        options, values = {"l1_coefficient": list(RELU_L1)}, list(RELU_L1)
    elif kind == "jumprelu":
        options = {"l0_coefficient": list(JUMPRELU_L0), "threshold_init": JUMPRELU_THRESHOLD}
        values = list(JUMPRELU_L0)
    else:
        options, values = {"k": k}, [k]
    model = sae.SAE(
        kind,
        len(values),
        size.d_model,
        size.width,
        seed=list(range(10 + 16 * seed, 10 + 16 * seed + len(values))),
        **options,
    )
    return model, values


def nearest(l0: np.ndarray, target: float) -> int:
    """Index of the L0 nearest ``target`` in ratio (``|log(l0 / target)|``)."""
    return int(np.argmin(np.abs(np.log(np.maximum(l0, 1e-9) / target))))


def run(results: Path, name: str = "cpu", device: str = "cpu", seed: int = SEED) -> None:
    """Train every kind on the world of ``SIZES[name]`` drawn from ``seed`` (world, SAE
    initialisations, batches and held-out samples) and store ``metrics.csv`` (one row per kind
    and instance: hyper-parameter, MCC, F1 and precision / recall of the matched pairs,
    SynthSAEBench's per-latent ones, explained variance, L0, dead fraction, whether it is the
    kind's matched-L0 pick) and ``config.json`` (the size, seed, target L0, world, published
    values, seconds) in ``results/sae_architectures``."""
    if name not in SIZES:
        raise ValueError(f"name must be one of {sorted(SIZES)}, got {name!r}")
    size = SIZES[name]
    start = time.perf_counter()
    with cpu_threads(1):
        world = make_world(size, seed=seed, device=device)
        target = target_l0(world, size.width)
        k = max(1, round(target))
        stream = world if size.pool is None else Replay(world, size.pool, seed=seed + 4)
        rows = []
        for kind in KINDS:
            model, values = build(kind, size, k, seed)
            trained = sae.train(
                model,
                stream,
                steps=size.steps,
                batch_size=BATCH_SIZE,
                lr=LR,
                log_every=max(1, size.steps // 20),
                seed=seed + 5,
                device=device,
                progress=name != "quick",
            )
            scores = sae.evaluate(model, world, n_samples=size.eval_samples, seed=seed + 6)
            pick = nearest(scores["l0"].to_numpy(), target)
            for row, value in zip(scores.itertuples(), values, strict=True):
                rows.append(
                    {
                        "kind": kind,
                        "instance": row.instance,
                        "hyperparameter": value,
                        "chosen": row.instance == pick,
                        "mcc": row.mcc,
                        "f1": row.f1,
                        "precision": row.precision,
                        "recall": row.recall,
                        "latent_f1": row.latent_f1,
                        "latent_precision": row.latent_precision,
                        "latent_recall": row.latent_recall,
                        "explained_variance": row.explained_variance,
                        "l0": row.l0,
                        "dead_fraction": row.dead_fraction,
                        "train_seconds": trained.wall_time,
                    }
                )
    folder = Path(results) / "sae_architectures"
    save_rows(rows, folder / "metrics.csv")
    save_json(
        {
            "size": name,
            **size._asdict(),
            "width": size.width,
            "seed": seed,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "target_l0": target,
            "k": k,
            "world_l0": float(world.features.marginal_probability.sum()),
            "scale_children_by_parent": SCALE_CHILDREN_BY_PARENT,
            "relu_l1": list(RELU_L1),
            "jumprelu_l0": list(JUMPRELU_L0),
            "jumprelu_threshold_init": JUMPRELU_THRESHOLD,
            "published": PUBLISHED,
            "device": device,
            "seconds": time.perf_counter() - start,
        },
        folder / "config.json",
    )


def main(results: Path, device: str = "cpu", quick: bool = False, full: bool = False) -> None:
    """:func:`run` at ``SIZES["full" | "quick" | "cpu"]`` and seed :data:`SEED` (the
    command line's entry)."""
    run(results, "full" if full else "quick" if quick else "cpu", device, SEED)


if __name__ == "__main__":
    experiment_script(main, __doc__, flags={"full": "the published size (a GPU job)"})
