"""TMS experiments and figures: smoke runs end to end, and the uniform-superposition check."""

import numpy as np
import pytest
import torch

from superpose import analysis, registry
from superpose.circuits import cpu_threads

STEMS = [
    "sparsity_sweep",
    "uniform_superposition",
    "geometry",
    "correlated_features",
    "privileged_basis",
    "computation",
]


@pytest.mark.parametrize("stem", STEMS)
def test_quick_experiment_then_figure(stem, tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    registry.load("experiments", stem).main(results, device="cpu", quick=True)
    assert any((results / stem).iterdir())
    paths = registry.load("figures", stem).main(results, out)
    assert [path.suffix for path in paths] == [".png", ".pdf"]
    for path in paths:
        assert path.stat().st_size > 0 and path.parent == out


@pytest.mark.parametrize("stem", STEMS)
def test_figure_is_registered_with_a_description(stem):
    name = stem.replace("_", "-")
    assert name in registry.names("figures") and name in registry.names("experiments")
    assert registry.load("figures", name).__doc__.strip()


def test_uniform_superposition_sticks_at_one_then_one_half():
    """Equal-importance features: D* = m/‖W‖² ≈ 1 at density 1, then a plateau at 1/2
    (antipodal pairs) over two densities, then on below 3/8.

    Measured (n=30, m=6, 2000 steps, seed 0): D* = 1.002, 0.498, 0.490, 0.344 at
    1/(1−S) = 1, 2.5, 3.3, 5; every represented feature's D_i at 1/(1−S) = 2.5 is 0.50."""
    uniform = registry.load("experiments", "uniform_superposition")
    probability = np.array([1.0, 0.4, 0.3, 0.2])
    with cpu_threads(1):
        model, _ = uniform.train_uniform(
            probability, 30, 6, steps=2000, batch_size=256, progress=False
        )
    dims = analysis.dimensions_per_feature(model.W)
    assert dims[0] == pytest.approx(1.0, abs=0.03)
    assert dims[1] == pytest.approx(0.5, abs=0.03)
    assert dims[2] == pytest.approx(0.5, abs=0.03)
    assert dims[3] < 3 / 8
    assert (dims[1:] <= dims[:-1] + 0.02).all()
    represented = analysis.feature_norms(model.W)[1] > analysis.REPRESENTED_NORM
    pair_dims = analysis.feature_dimensionality(model.W)[1][represented]
    assert len(pair_dims) == 12
    assert pair_dims.numpy() == pytest.approx(0.5, abs=0.03)


def test_mean_cosine_names_the_arrangement():
    W = torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.6], [0.0, 0.0, 2.0, 0.0, 0.8]])
    cosine = analysis.cosine_similarity(W)
    assert cosine.shape == (1, 5, 5)
    assert cosine[0, 0, 1] == pytest.approx(-1.0)
    assert cosine[0, 0, 3] == 0.0  # a zero-norm feature has no direction
    assert analysis.mean_cosine(W, [0, 1], [0, 1]) == pytest.approx(torch.tensor([-1.0]))
    assert analysis.mean_cosine(W, [0], [2]) == pytest.approx(torch.tensor([0.0]))
    assert analysis.mean_cosine(W, [2, 4], [2, 4]) == pytest.approx(torch.tensor([0.8]))
    with pytest.raises(ValueError, match="indices"):
        analysis.mean_cosine(W, [0], [7])
    with pytest.raises(ValueError, match="pair"):
        analysis.mean_cosine(W, [1], [1])
