"""TMS phase diagrams (n=2, m=1 and n=3, m=2): trained sweeps plus the exact theory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from superpose import sweep, theory
from superpose.io import save_tensors
from superpose.registry import experiment_script
from superpose.sweep import SweepSpec

SPECS = ("phase_diagram.toml", "phase_diagram_n3.toml")
"""The sweep specs next to this script; each stores into ``results/<spec name>``."""


def _quick(spec: SweepSpec) -> SweepSpec:
    """A 4×4 grid, one seed, 300 steps: a smoke run of the same pipeline."""
    data = spec.to_dict()
    data["axes"]["relative_importance"] = {"logspace": [0.1, 10], "num": 4}
    data["axes"]["feature_probability"] = {"logspace": [1, 0.01], "num": 4}
    data["axes"]["seed"] = [0]
    data["training"]["steps"] = 300
    data["training"]["eval_samples"] = 4096
    return SweepSpec.from_dict(data)


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Run both sweeps into ``results/<spec name>`` and store each one's theoretical
    diagram on the same grid as ``theory.safetensors`` beside it."""
    for file in SPECS:
        spec = SweepSpec.from_toml(Path(__file__).with_name(file))
        if quick:
            spec = _quick(spec)
        out = results / spec.name
        print(sweep.run(spec, out=out, device=device))
        table = sweep.load(out)
        table = table[table["config_hash"].isin({cell.config_hash for cell in spec.cells()})]
        diagram = theory.phase_diagram(
            int(table["n_features"].iloc[0]),
            int(table["n_hidden"].iloc[0]),
            np.sort(table["relative_importance"].unique()),
            np.sort(table["feature_probability"].unique())[::-1].copy(),
        )
        save_tensors(
            {
                "relative_importance": torch.tensor(diagram.relative_importance),
                "feature_probability": torch.tensor(diagram.feature_probability),
                "labels": torch.tensor(diagram.labels),
            },
            out / "theory.safetensors",
        )


if __name__ == "__main__":
    experiment_script(main, __doc__)
