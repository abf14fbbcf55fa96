"""TMS computation in superposition: abs-value model neurons and features per neuron vs sparsity."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from superpose.io import load_metadata, load_tensors
from superpose.plotting import neuron_weights_figure, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/computation.{png,pdf}`` from ``results/computation``."""
    folder = Path(results) / "computation"
    stored = load_tensors(folder / "weights.safetensors")
    config = load_metadata(folder / "weights.safetensors")["config"]
    metrics = pd.read_csv(folder / "metrics.csv")
    W = stored["W"].numpy()
    fig = neuron_weights_figure(
        W,
        stored["feature_probability"].tolist(),
        {
            "mean features per neuron (|W| > 0.1)": metrics["mean_features_per_neuron"].to_numpy(),
            "polysemantic neurons": metrics["polysemantic_neurons"].to_numpy(),
            "represented features (‖W_i‖ > 0.5)": metrics["represented_features"].to_numpy(),
        },
        title=(
            f"Computation in superposition: y = |x| (n={W.shape[2]} features, m={W.shape[1]} "
            f"neurons, importance {config['importance_decay']}^i) — "
            "input weights per neuron"
        ),
        counts_label="count",
    )
    return save_figure(fig, Path(out) / "computation")


if __name__ == "__main__":
    figure_script(main, __doc__)
