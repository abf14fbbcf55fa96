"""SAE read-out phase diagram: the fraction of true features an SAE recovers against
n_features / d_model and feature probability, per SAE kind.

The world is :class:`superpose.sae.Superposed`: ``n_features`` equally likely features (each
active with probability ``1 − S``, magnitude U(0, 1)) along fixed unit directions in
``d_model`` dimensions, orthonormal as far as ``d_model`` allows (so ``n_features / d_model
≤ 1`` has no superposition at all). Every SAE has one latent per true feature (``d_sae =
n_features``). A feature counts as recovered when some decoder row has ``|cos| > 0.9`` with
its direction (:func:`superpose.sae.feature_recovery`).

Sparsity per kind: the TopK kinds (``topk``, ``batchtopk``, ``matryoshka``) keep ``k`` = the
expected number of active features ``n_features · (1 − S)``, rounded, at least 1; ``relu``
and ``jumprelu`` train a small sweep of penalty coefficients side by side and each cell keeps
the coefficient that recovers the most features (an oracle choice: the diagram shows what the
kind can read out at its best penalty; the winning coefficient is stored).

Under-complete worlds (n/m = 0.5: 8 features in 16 dims) lose features under the TopK kinds
although nothing is superposed, because the rounded ``k`` is not the number of active
features. TopK fires ``k`` latents on every sample (L0 ≈ ``k``); rounding puts ``k`` below
the mean at 1−S = 0.3 (2 for 2.4; 45 % of samples have 3 or more) and, through the floor
of 1, 4–42× above it at 1−S ≤ 0.03 (0.24 / 0.08 / 0.024), where BatchTopK's batch budget is
as oversized. The SAE then settles on another code: typically the decoder bias moves along
one feature (``|b_dec · f| ≈ 0.9``), a latent learns that feature's absence (cos −1) and
the other latents tilt off their features (cos ≈ 0.88, below the 0.9 threshold); holding
``b_dec`` at 0 by hand lets TopK with ``k = 2`` at 1−S = 0.1 recover 0.75–1 instead of
0.125–0.25 (3 seeds). What removes it: BatchTopK with the unrounded mean ``k = n(1−S)`` (a
fractional ``k``, :class:`superpose.sae.BatchTopKSAE`) recovers 0.70–0.83 of the features
over the five probabilities against 0.30–0.43 with the rounded ``k`` (0.58–0.83 against
0–0.125 at 1−S ≤ 0.03; 5 seed sets, this file's 500 steps), its L0 0.79–1.01 × ``n(1−S)``.
TopK needs ``k`` at or just above the mean: at 1−S = 0.3, ``k = 3 = ⌈n(1−S)⌉`` recovers
0.83–0.96 against 0.13–0.71 for ``k = 2`` (4 seed sets × 3 initialisations; ``k = 4``:
0.875–1, ``k = 6``: 0.125–0.5, 3 seeds); below one active feature per sample no integer
``k`` works (``k`` = 1, 2, 3, 4, 6 at 1−S = 0.03 and 0.003: 0–0.75, 3 seeds). Measured
2026-12-06 (``tests/test_sae_sharkey_readout.py`` checks both); the diagram keeps the
rounded ``k``.
"""

from __future__ import annotations

import time
from pathlib import Path

from superpose import SparseFeatures, sae
from superpose.io import save_json, save_rows
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

D_MODEL = 16
FEATURE_RATIOS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""n_features / d_model: 8 to 128 features in 16 dimensions."""
FEATURE_PROBABILITY = (0.3, 0.1, 0.03, 0.01, 0.003)
"""Feature density ``1 − S``, log-spaced."""
KINDS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
PENALTIES: dict[str, tuple[str, tuple[float, ...]]] = {
    "relu": ("l1_coefficient", (0.03, 0.1, 0.3, 1.0)),
    "jumprelu": ("l0_coefficient", (0.003, 0.01, 0.03, 0.1)),
}
"""The penalty sweep of the kinds without a fixed ``k``: keyword and coefficients."""
THRESHOLD = 0.9
STEPS = 500
BATCH_SIZE = 1024
LR = 3e-3
EVAL_SAMPLES = 16384
SEEDS = {"directions": 0, "sae": 1, "train": 2, "eval": 3}
"""Separate seeds: an SAE initialised from the directions' seed would start at the answer."""


def expected_k(n_features: int, probability: float) -> int:
    """The TopK kinds' ``k``: the expected number of active features, rounded, at least 1."""
    return max(1, round(n_features * probability))


def instances(kind: str, n_features: int) -> tuple[list[float], dict[str, object], list[float]]:
    """The instances of one SAE: each one's feature probability ``(instance,)``, the kind's
    keyword arguments (per-instance values) and each instance's sparsity setting (``k`` or
    the penalty coefficient)."""
    if kind in PENALTIES:
        name, coefficients = PENALTIES[kind]
        grid = [(p, c) for p in FEATURE_PROBABILITY for c in coefficients]
        setting = [c for _, c in grid]
        return [p for p, _ in grid], {name: setting}, setting
    k = [expected_k(n_features, p) for p in FEATURE_PROBABILITY]
    return list(FEATURE_PROBABILITY), {"k": k}, [float(v) for v in k]


def best_rows(rows: list[dict[str, object]]) -> None:
    """Mark, per (kind, n_features, feature probability), the row that recovers the most
    features (ties: the higher MMCS) with ``best = 1``, the others 0 (in place)."""
    cells: dict[tuple[object, ...], dict[str, object]] = {}
    for row in rows:
        key = (row["kind"], row["n_features"], row["feature_probability"])
        score = (row["recovered"], row["mmcs"])
        if key not in cells or score > (cells[key]["recovered"], cells[key]["mmcs"]):
            cells[key] = row
    for row in rows:
        key = (row["kind"], row["n_features"], row["feature_probability"])
        row["best"] = int(cells[key] is row)


def train_kind(
    kind: str,
    ratios: tuple[float, ...],
    *,
    steps: int,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict[str, object]]:
    """Train, for each n_features / d_model in ``ratios``, one batched SAE of ``kind`` over the
    feature probabilities (and its penalty sweep) and score it: one row per SAE instance."""
    rows: list[dict[str, object]] = []
    for ratio in ratios:
        n_features = round(ratio * D_MODEL)
        probability, options, setting = instances(kind, n_features)
        features = SparseFeatures(
            n_features, [[p] for p in probability], seed=SEEDS["directions"], device=device
        )
        source = sae.Superposed(features, D_MODEL, orthogonal=True, seed=SEEDS["directions"])
        model = sae.SAE(kind, len(probability), D_MODEL, n_features, seed=SEEDS["sae"], **options)
        with cpu_threads(1):  # small products: one thread is fastest on a shared CPU
            sae.train(
                model,
                source,
                steps=steps,
                batch_size=BATCH_SIZE,
                lr=LR,
                seed=SEEDS["train"],
                device=device,
                progress=progress,
            )
            scores = sae.evaluate(model, source, EVAL_SAMPLES, seed=SEEDS["eval"])
        for i, row in scores.iterrows():
            rows.append(
                {
                    "kind": kind,
                    "d_model": D_MODEL,
                    "n_features": n_features,
                    "features_per_dimension": ratio,
                    "feature_probability": probability[i],
                    "expected_active": n_features * probability[i],
                    "sparsity_setting": setting[i],
                    "recovered": float(row["recovered"]),
                    "mmcs": float(row["mmcs"]),
                    "mcc": float(row["mcc"]),
                    "l0": float(row["l0"]),
                    "dead_fraction": float(row["dead_fraction"]),
                    "explained_variance": float(row["explained_variance"]),
                }
            )
    return rows


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train every kind (:func:`train_kind`) and store ``results/sae_readout/metrics.csv``
    (one row per SAE instance: recovery, MMCS, L0, dead latents...; ``best`` marks the
    cell's kept instance) and ``config.json``."""
    steps = 50 if quick else STEPS
    kinds = KINDS[:2] if quick else KINDS
    ratios = FEATURE_RATIOS[:2] if quick else FEATURE_RATIOS
    rows: list[dict[str, object]] = []
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for kind in kinds:
        kind_start = time.perf_counter()
        rows += train_kind(kind, ratios, steps=steps, device=device, progress=not quick)
        seconds[kind] = time.perf_counter() - kind_start
    best_rows(rows)
    folder = Path(results) / "sae_readout"
    save_rows(rows, folder / "metrics.csv")
    save_json(
        {
            "d_model": D_MODEL,
            "features_per_dimension": list(ratios),
            "feature_probability": list(FEATURE_PROBABILITY),
            "kinds": list(kinds),
            "penalties": {kind: list(values) for kind, (_, values) in PENALTIES.items()},
            "threshold": THRESHOLD,
            "steps": steps,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "eval_samples": EVAL_SAMPLES,
            "seeds": SEEDS,
            "seconds": {"total": time.perf_counter() - start, **seconds},
            "torch_threads": 1,
        },
        folder / "config.json",
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
