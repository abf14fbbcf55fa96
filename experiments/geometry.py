"""TMS geometry of superposition: trained uniform models split into tegum factors / polytopes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from superpose import geometry, registry
from superpose.io import load_metadata, load_tensors, save_rows, save_tensors
from superpose.registry import experiment_script

SOURCE = "uniform_superposition"
"""The experiment whose trained models are decomposed (its results are reused if present)."""


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Decompose the uniform-superposition models (training them first when their results are
    missing, or only a quick run's when a full one is asked for) into tegum factors and store
    ``geometry.safetensors`` (per instance: factor counts per polytope, each feature's
    polytope, feature counts per polytope) and ``factors.csv`` (one row per factor, when there
    is one) in ``results/geometry``."""
    source = Path(results) / SOURCE / "weights.safetensors"
    if not source.is_file() or (not quick and load_metadata(source)["config"].get("quick", False)):
        registry.load("experiments", SOURCE).main(results, device=device, quick=quick)
    stored, source_config = load_tensors(source), load_metadata(source)["config"]
    W = stored["W"]
    probability = stored["feature_probability"]
    decompositions = geometry.tegum_decomposition(W)
    counts = geometry.polytope_counts(decompositions)
    feature_polytope = np.full(W.shape[::2], geometry.NOT_REPRESENTED, dtype=object)
    rows = []
    for k, decomposition in enumerate(decompositions):
        for factor in decomposition.factors:
            feature_polytope[k, list(factor.features)] = factor.polytope
            rows.append(
                {
                    "feature_probability": float(probability[k]),
                    "inverse_density": 1.0 / float(probability[k]),
                    "polytope": factor.polytope,
                    "n_features": len(factor.features),
                    "fraction": factor.fraction,
                }
            )
    names = [*geometry.FACTOR_NAMES, geometry.NOT_REPRESENTED]
    polytope_index = torch.tensor([[names.index(name) for name in row] for row in feature_polytope])
    folder = Path(results) / "geometry"
    save_tensors(
        {
            "feature_probability": probability,
            "counts": torch.from_numpy(counts),
            "feature_polytope": polytope_index,
            "feature_counts": torch.stack(
                [torch.bincount(row, minlength=len(names)) for row in polytope_index]
            ),
            "feature_dimensionality": stored["feature_dimensionality"],
        },
        folder / "geometry.safetensors",
        {
            "factor_names": list(geometry.FACTOR_NAMES),
            "polytope_names": names,
            "config": {**source_config, "source": SOURCE},
        },
    )
    if rows:  # a model with no represented feature has no factor
        save_rows(rows, folder / "factors.csv")


if __name__ == "__main__":
    experiment_script(main, __doc__)
