"""TMS privileged basis: neuron weights go from monosemantic to polysemantic as sparsity rises."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from superpose.io import load_metadata, load_tensors
from superpose.plotting import neuron_weights_figure, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/privileged_basis.{png,pdf}`` from ``results/privileged_basis``."""
    folder = Path(results) / "privileged_basis"
    stored = load_tensors(folder / "weights.safetensors")
    config = load_metadata(folder / "weights.safetensors")["config"]
    metrics = pd.read_csv(folder / "metrics.csv")
    W = stored["W"].numpy()
    fig = neuron_weights_figure(
        W,
        stored["feature_probability"].tolist(),
        {
            "monosemantic neurons (1 feature)": metrics["monosemantic_neurons"].to_numpy(),
            "polysemantic neurons (≥ 2 features)": metrics["polysemantic_neurons"].to_numpy(),
            "represented features (‖W_i‖ > 0.5)": metrics["represented_features"].to_numpy(),
        },
        title=(
            f"Privileged basis (hidden ReLU, n={W.shape[2]} features, m={W.shape[1]} neurons, "
            f"importance {config['importance_decay']}^i): neurons turn polysemantic "
            "as features get sparser"
        ),
        counts_label="count",
    )
    return save_figure(fig, Path(out) / "privileged_basis")


if __name__ == "__main__":
    figure_script(main, __doc__)
