"""TMS "superposition as sparsity varies": WᵀW and norm bars coloured by superposition."""

from __future__ import annotations

from pathlib import Path

from superpose.io import load_tensors
from superpose.plotting import save_figure, sparsity_sweep_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/sparsity_sweep.{png,pdf}`` from ``results/sparsity_sweep/weights.safetensors``."""
    stored = load_tensors(Path(results) / "sparsity_sweep" / "weights.safetensors")
    W = stored["W"].numpy()
    fig = sparsity_sweep_figure(
        W,
        stored["norms"].numpy(),
        stored["superposition"].numpy(),
        stored["feature_probability"].tolist(),
        title=(
            f"As sparsity increases, models use superposition (ReLU output, "
            f"n={W.shape[2]} features, m={W.shape[1]} dims, importance 0.7^i)"
        ),
    )
    return save_figure(fig, Path(out) / "sparsity_sweep")


if __name__ == "__main__":
    figure_script(main, __doc__)
