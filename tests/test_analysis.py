"""Weight metrics against direct numpy computation and hand-computed geometry."""

import numpy as np
import pytest
import torch

from superpose import SparseFeatures, ToyModel, analysis


def regular_polygon(k: int) -> torch.Tensor:
    angles = 2 * np.pi * np.arange(k) / k
    return torch.tensor(np.stack([np.cos(angles), np.sin(angles)]), dtype=torch.float32)


def test_against_numpy_on_random_weights():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 4, 7))
    norms = np.linalg.norm(W, axis=1)
    unit = W / norms[:, None, :]
    overlaps = np.einsum("khi,khj->kij", unit, W) ** 2
    expected_sup = overlaps.sum(-1) - np.einsum("kii->ki", overlaps)
    np.testing.assert_allclose(analysis.gram(W), np.einsum("khi,khj->kij", W, W), rtol=1e-5)
    np.testing.assert_allclose(analysis.feature_norms(W), norms, rtol=1e-5)
    np.testing.assert_allclose(analysis.superposition(W), expected_sup, rtol=1e-4)
    np.testing.assert_allclose(
        analysis.dimensions_per_feature(W), 4 / (W**2).sum((1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        analysis.feature_dimensionality(W), norms**2 / overlaps.sum(-1), rtol=1e-4
    )


@pytest.mark.parametrize(
    ("W", "dims_per_feature", "dimensionality", "superposition"),
    [
        (regular_polygon(5), 2 / 5, 2 / 5, 1.5),  # pentagon: cos²72°·2 + cos²144°·2 = 3/2
        (torch.tensor([[1.0, -1.0]]), 1 / 2, 1 / 2, 1.0),  # antipodal pair
        (torch.eye(3), 1.0, 1.0, 0.0),  # orthogonal
        (regular_polygon(3), 2 / 3, 2 / 3, 0.5),  # triangle
    ],
)
def test_constructed_geometry(W, dims_per_feature, dimensionality, superposition):
    assert analysis.dimensions_per_feature(W).item() == pytest.approx(dims_per_feature, abs=1e-6)
    np.testing.assert_allclose(analysis.feature_dimensionality(W)[0], dimensionality, atol=1e-6)
    np.testing.assert_allclose(analysis.superposition(W)[0], superposition, atol=1e-6)


def test_unrepresented_feature_has_zero_dimensionality_and_is_excluded_from_summaries():
    W = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1e-9]]])
    np.testing.assert_allclose(analysis.feature_dimensionality(W)[0], [1, 1, 0], atol=1e-6)
    metrics = analysis.scalar_metrics(W)
    assert metrics["n_represented"].item() == 2
    assert metrics["mean_superposition"].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["mean_dimensionality"].item() == pytest.approx(1.0, abs=1e-6)
    assert metrics["dimensions_per_feature"].item() == pytest.approx(1.0, abs=1e-6)


def test_accepts_model_and_rejects_bad_shapes():
    model = ToyModel("relu", 2, 5, 2, seed=0)
    assert analysis.feature_norms(model).shape == (2, 5)
    with pytest.raises(ValueError, match="n_hidden, n_features"):
        analysis.gram(torch.zeros(2))
    with pytest.raises(TypeError, match="W must be"):
        analysis.gram([[1.0]])


def test_readout_quality_on_constructed_models():
    model = ToyModel("relu", 2, 2, 2, seed=0)
    with torch.no_grad():
        model.W.copy_(torch.stack([torch.eye(2), torch.tensor([[1.0, -1.0], [0.0, 0.0]])]))
    data = SparseFeatures(2, 0.1, seed=0)
    quality = analysis.readout_quality(model, data, n_samples=400_000, seed=1)
    # instance 0: orthogonal features, perfect read-out, no interference
    np.testing.assert_allclose(quality.reconstruction_error[0], 0, atol=1e-10)
    np.testing.assert_allclose(quality.false_activation_rate[0], 0)
    np.testing.assert_allclose(quality.interference[0], 0, atol=1e-7)
    # signal RMS of x ~ U[0,1] given active: sqrt(1/3)
    np.testing.assert_allclose(quality.signal[0], 3**-0.5, atol=0.01)
    # instance 1: antipodal pair, no bias. Output_i = ReLU(x_i − x_j): error only when both
    # are active (p² = 0.01), where E[(x_i − ReLU(x_i − x_j))²] = E[min(x_i, x_j)²] = 1/6
    # ~4000 both-active samples: relative std error ~2.5%
    np.testing.assert_allclose(quality.reconstruction_error[1], 0.01 / 6, rtol=0.1)
    # interference RMS: E[x_j²] = p/3
    np.testing.assert_allclose(quality.interference[1], (0.1 / 3) ** 0.5, rtol=0.03)
    # never fires when its own feature is off (the other's term is negative)
    np.testing.assert_allclose(quality.false_activation_rate[1], 0)


def test_neuron_measures():
    W = torch.tensor([[[1.0, 0.0, -0.5], [0.6, 0.8, 0.0], [0.0, 0.0, -1.0]]])
    assert analysis.features_per_neuron(W).tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(analysis.neuron_monosemanticity(W)[0], [1.0, 0.64, 0.0], atol=1e-6)
    model = ToyModel("hidden_relu", 1, 3, 3, seed=0)
    with torch.no_grad():
        model.W.copy_(W)
    assert analysis.readout_quality(model, SparseFeatures(3, 0.5, seed=0)).signal is None


def _regular_polygon(T: int, radius: float = 1.0) -> torch.Tensor:
    """``(T, 2)`` the vertices of a regular T-gon."""
    angles = torch.arange(T, dtype=torch.float64) * (2 * np.pi / T)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=-1)


@pytest.mark.parametrize("T", [3, 4, 5, 7, 10, 50])
def test_data_dimensionality_of_a_regular_polygon_is_m_over_T(T):
    # a regular T-gon (T >= 3) is a tight frame: sum_s cos^2 = T/2 for every point, so 2/T
    hidden = torch.stack([_regular_polygon(T), _regular_polygon(T, radius=0.3)]).float()
    torch.testing.assert_close(
        analysis.data_dimensionality(hidden), torch.full((2, T), 2 / T), rtol=0, atol=1e-6
    )


def test_data_dimensionality_constructed_cases():
    hidden = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]],  # orthogonal: 1 each
            [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # antipodal pair, a zero
        ]
    )
    expected = torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(analysis.data_dimensionality(hidden), expected)
    # two points at 60 degrees: 1 / (1 + cos^2 60) = 0.8 each
    pair = torch.tensor([[[1.0, 0.0], [0.5, 3**0.5 / 2]]])
    torch.testing.assert_close(analysis.data_dimensionality(pair), torch.full((1, 2), 0.8))
    with pytest.raises(ValueError, match="n_samples, n_hidden"):
        analysis.data_dimensionality(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="hidden must be a tensor"):
        analysis.data_dimensionality([[[1.0]]])


def test_hidden_vectors_are_W_x():
    W = torch.tensor([[[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]])  # (1, m=2, n=3)
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]])
    expected = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(analysis.hidden_vectors(W, x), expected)
    model = ToyModel("relu", 2, 3, 2, seed=0)
    shared = x.expand(2, -1, -1)
    torch.testing.assert_close(
        analysis.hidden_vectors(model, shared), shared @ model.W.detach().transpose(1, 2)
    )
    with pytest.raises(ValueError, match="n_features=3"):
        analysis.hidden_vectors(W, torch.zeros(1, 4, 5))
