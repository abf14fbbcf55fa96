"""Double descent over T and m: where the test-loss peak sits as the hidden dimension grows."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from superpose.io import load_metadata, load_tensors
from superpose.plotting import plot_heatmap, save_figure
from superpose.registry import figure_script


def main(results: Path, out: Path) -> list[Path]:
    """Draw ``out/double_descent_sweep.{png,pdf}`` from
    ``results/double_descent_sweep/sweep.safetensors``."""
    path = Path(results) / "double_descent_sweep" / "sweep.safetensors"
    stored = load_tensors(path)
    config = load_metadata(path)["config"]
    hidden_dims = stored["hidden_dims"].numpy()
    sizes = stored["dataset_sizes"].numpy()
    test_loss = stored["test_loss"].double().numpy().mean(-1)  # (m, T)
    points = stored["max_data_dimensionality"].double().numpy()  # (m, T, seed)
    features = stored["max_feature_dimensionality"].double().numpy()
    memorizing = (points / (points + features)).mean(-1)  # (m, T): 1 when points dominate
    peak = stored["peak_index"].numpy()  # (m,), -1: no bump
    height = stored["peak_height"].numpy()  # (m,) the rise above the lowest loss at smaller T
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(hidden_dims)))

    fig, (curves, heat, share) = plt.subplots(1, 3, figsize=(18, 5.2), width_ratios=[1, 1.1, 1])
    for row, (m, color) in enumerate(zip(hidden_dims, colors, strict=True)):
        where = f"bump at T={sizes[peak[row]]}, +{height[row]:.3f}" if peak[row] >= 0 else "no bump"
        curves.plot(sizes, test_loss[row], "-o", ms=3, color=color, label=f"m = {m}: {where}")
        if peak[row] >= 0:
            curves.plot(sizes[peak[row]], test_loss[row, peak[row]], "*", ms=13, color=color)
        share.plot(sizes, memorizing[row], "-o", ms=3, color=color, label=f"m = {m}")
    for ax in (curves, share):
        ax.set_xscale("log")
        ax.set_xlabel("training set size T")
        ax.grid(alpha=0.3)
    curves.set_yscale("log")
    curves.set_ylabel("test loss (fresh samples, mean over seeds)")
    curves.set_title("Test loss against T, one curve per m (★: the bump's top)", fontsize=10)
    curves.legend(fontsize=8)

    marked = np.zeros(test_loss.shape, dtype=bool)
    marked[np.flatnonzero(peak >= 0), peak[peak >= 0]] = True
    image = plot_heatmap(
        heat,
        test_loss,
        [str(T) for T in sizes],
        [str(m) for m in hidden_dims],
        cmap="magma",
        vmin=float(test_loss.min()),
        vmax=float(test_loss.max()),
        fmt="{:.3f}",
        marked=marked,
        fontsize=6.5,
    )
    fig.colorbar(image, ax=heat, label="test loss (mean over seeds)")
    heat.set_xlabel("training set size T")
    heat.set_ylabel("hidden dimension m")
    heat.set_title("Test loss over (T, m) (framed: each m's bump)", fontsize=10)

    share.axhline(0.5, color="0.5", ls=":", lw=1)
    share.set_ylim(-0.02, 1.02)
    share.set_ylabel("max D_points / (max D_points + max D_features)")
    share.set_title(
        "Who holds the largest dimensionality (1: training points, 0: features)", fontsize=10
    )
    share.legend(fontsize=8)
    fig.suptitle(
        f"Double descent over T and m (ReLU output, n={config['n_features']} features, "
        f"S={1 - config['feature_probability']:g}, unit-norm samples, {config['steps']:,} "
        f"full-batch AdamW steps, {stored['test_loss'].shape[-1]} seeds per cell)"
    )
    fig.tight_layout()
    return save_figure(fig, Path(out) / "double_descent_sweep")


if __name__ == "__main__":
    figure_script(main, __doc__)
