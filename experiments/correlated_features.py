"""TMS correlated / anticorrelated features: orthogonal, antipodal, or collapsed onto PCA."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose import analysis
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.train import train_seed_grid

N_HIDDEN = 2
FEATURE_PROBABILITY = (0.4, 0.2, 0.1, 0.03)
SEEDS = tuple(range(8))
"""Seeds per probability; the lowest-loss one is kept (some anticorrelated runs at
1−S = 0.03 stop in a local minimum with the pairs orthogonal)."""
STEPS = 3000
BATCH_SIZE = 1024
LR = 1e-2

SETTINGS: dict[str, dict[str, object]] = {
    "independent": {"n_features": 4, "correlated_sets": [], "anticorrelated_sets": []},
    "correlated pairs": {
        "n_features": 4,
        "correlated_sets": [[0, 1], [2, 3]],
        "anticorrelated_sets": [],
    },
    "anticorrelated pairs": {
        "n_features": 4,
        "correlated_sets": [],
        "anticorrelated_sets": [[0, 1], [2, 3]],
    },
    "correlated triples": {
        "n_features": 6,
        "correlated_sets": [[0, 1, 2], [3, 4, 5]],
        "anticorrelated_sets": [],
    },
}
"""Each setting: equal-importance features into m=2 dims, grouped into sets (features of a
correlated set are active together; of an anticorrelated set, never together)."""


def outcome(within: float) -> str:
    """Name the arrangement of a set from the mean cosine of its features' directions."""
    if within > 0.9:
        return "collapsed (PCA)"
    if within < -0.9:
        return "antipodal"
    if abs(within) < 0.15:
        return "orthogonal"
    return "partly collapsed"


def feature_sets(setting: dict[str, object]) -> list[list[int]]:
    """The setting's sets (correlated, then anticorrelated); empty when features are
    independent."""
    return [*setting["correlated_sets"], *setting["anticorrelated_sets"]]


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train ReLU-output models per setting, one instance per (feature probability, seed),
    keep the lowest-loss seed and store ``weights.safetensors`` (per setting
    ``<setting>/W: (probability, 2, n)``; the sets as metadata) and ``metrics.csv`` (within-
    and across-set mean cosines, the outcome) in ``results/correlated_features``."""
    steps = 100 if quick else STEPS
    stored = {"feature_probability": torch.tensor(FEATURE_PROBABILITY)}
    all_sets = {}
    rows = []
    start = time.perf_counter()
    for name, setting in SETTINGS.items():
        n_features = int(setting["n_features"])
        grid = train_seed_grid(
            "relu",
            n_features,
            N_HIDDEN,
            FEATURE_PROBABILITY,
            SEEDS,
            correlated_sets=setting["correlated_sets"],
            anticorrelated_sets=setting["anticorrelated_sets"],
            device=device,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            schedule="cosine",
            progress=not quick,
        )
        model, result, best = grid.model, grid.result, grid.best
        W = model.W.detach().cpu()[best]
        sets = feature_sets(setting)
        stored[f"{name}/W"] = W
        stored[f"{name}/b"] = model.b.detach().cpu()[best]
        stored[f"{name}/loss"] = result.loss[best]
        all_sets[name] = sets
        within = [analysis.mean_cosine(W, group, group) for group in sets]
        # how many seeds reach the kept (lowest-loss) seed's arrangement of the first set
        all_seeds = (
            analysis.mean_cosine(model.W.detach().cpu(), sets[0], sets[0]).view(-1, len(SEEDS))
            if sets
            else None
        )
        across = analysis.mean_cosine(W, sets[0], sets[1]) if len(sets) == 2 else None
        for k, p in enumerate(FEATURE_PROBABILITY):
            within_k = [float(value[k]) for value in within]
            rows.append(
                {
                    "setting": name,
                    "feature_probability": p,
                    "seed": SEEDS[int(best[k]) % len(SEEDS)],
                    "loss": float(result.loss[best[k]]),
                    "within_set_cosine": sum(within_k) / len(within_k) if within_k else "",
                    "across_set_cosine": "" if across is None else float(across[k]),
                    "outcome": "; ".join(outcome(v) for v in within_k),
                    "seeds_with_outcome": ""
                    if all_seeds is None
                    else sum(outcome(float(v)) == outcome(within_k[0]) for v in all_seeds[k]),
                    "n_seeds": len(SEEDS),
                }
            )
    config = {
        "steps": steps,
        "lr": LR,
        "seeds": list(SEEDS),
        "seconds": time.perf_counter() - start,
    }
    folder = Path(results) / "correlated_features"
    save_tensors(stored, folder / "weights.safetensors", {"sets": all_sets, "config": config})
    save_rows(rows, folder / "metrics.csv")


if __name__ == "__main__":
    experiment_script(main, __doc__)
