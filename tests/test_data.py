"""SparseFeatures: shapes, marginal statistics, sets, finite data, seeding, validation."""

import numpy as np
import pytest
import torch

from superpose import SparseFeatures


def test_shapes_and_per_instance_probability():
    data = SparseFeatures(4, [[0.1], [0.5], [1.0]], seed=0)  # (instance, 1)
    x = data.sample(200_000)
    assert x.shape == (3, 200_000, 4)
    active = (x > 0).float().mean(1)
    # binomial std at n=800k per instance is < 6e-4; 3e-3 is > 5 sigma
    np.testing.assert_allclose(active.mean(-1), [0.1, 0.5, 1.0], atol=3e-3)


@pytest.mark.parametrize(
    "value",
    [
        0.3,
        [0.5, 0.2, 0.1],  # (n_features,): per feature, shared by all instances
        [[0.5, 0.2, 0.1]],  # (1, n_features)
        (20 ** -torch.linspace(0, 1, 4))[:, None],  # (instance, 1): the TMS notebook's idiom
        np.linspace(0.1, 0.9, 12).reshape(4, 3),  # (instance, n_features)
    ],
)
def test_probability_broadcasts_like_numpy(value):
    data = SparseFeatures(3, value, seed=0)
    array = np.asarray(value, dtype=np.float32)
    rows = array.shape[0] if array.ndim == 2 else 1
    np.testing.assert_array_equal(data.feature_probability, np.broadcast_to(array, (rows, 3)))
    x = data.sample(50_000, n_instances=4)
    # binomial std of a rate from 50k draws is < 2.3e-3; 0.012 is > 5 sigma
    np.testing.assert_allclose((x > 0).float().mean(1), np.broadcast_to(array, (4, 3)), atol=0.012)


def test_a_vector_as_long_as_the_instance_count_is_still_per_feature():
    data = SparseFeatures(5, 0.5 ** torch.arange(5.0), seed=0)
    assert data.feature_probability.shape == (1, 5)
    assert data.sample(8, n_instances=5).shape == (5, 8, 5)


def test_uniform_magnitudes_given_active():
    x = SparseFeatures(3, [[0.2, 0.05, 1.0]], seed=1).sample(200_000)
    for i in range(3):
        values = x[0, :, i][x[0, :, i] > 0]
        assert values.max() <= 1.0
        # U[0,1]: mean 1/2, E[v^2] = 1/3; std of the mean at >= 10k samples < 3e-3
        assert abs(values.mean().item() - 0.5) < 0.01
        assert abs(values.pow(2).mean().item() - 1 / 3) < 0.01


def test_other_magnitude_distributions():
    x = SparseFeatures(2, 1.0, magnitude="signed_uniform", seed=0).sample(100_000)
    assert x.min() >= -1 and x.max() <= 1 and abs(x.mean().item()) < 0.01
    assert torch.equal(
        SparseFeatures(2, 1.0, magnitude="constant", seed=0).sample(5), torch.ones(1, 5, 2)
    )
    x = SparseFeatures(1, 1.0, magnitude=lambda u: 3 * u, seed=0).sample(100_000)
    assert abs(x.mean().item() - 1.5) < 0.02


def test_correlated_and_anticorrelated_sets():
    data = SparseFeatures(6, 0.2, correlated_sets=[[0, 1, 2]], anticorrelated_sets=[[3, 4]], seed=0)
    x = data.sample(100_000, n_instances=2) > 0
    assert torch.equal(x[..., 0], x[..., 1]) and torch.equal(x[..., 0], x[..., 2])
    assert not (x[..., 3] & x[..., 4]).any()
    # marginal probabilities stay 0.2 for every feature (binomial std ~9e-4)
    np.testing.assert_allclose(x.float().mean((0, 1)), [0.2] * 6, atol=5e-3)
    # correlated magnitudes stay independent
    values = data.sample(50_000)[0]
    both = values[:, 0] > 0
    corr = np.corrcoef(values[both, 0], values[both, 1])[0, 1]
    assert abs(corr) < 0.05


def test_anticorrelated_unequal_probabilities():
    x = SparseFeatures(3, [[0.5, 0.3, 0.2]], anticorrelated_sets=[[0, 1, 2]], seed=3)
    active = x.sample(200_000) > 0
    assert (active.sum(-1) == 1).all()  # probabilities sum to 1: exactly one is active
    np.testing.assert_allclose(active.float().mean((0, 1)), [0.5, 0.3, 0.2], atol=5e-3)


def test_same_seed_same_batches_and_generators():
    a = SparseFeatures(5, 0.1, seed=7).sample(64, 3)
    b = SparseFeatures(5, 0.1, seed=7).sample(64, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, SparseFeatures(5, 0.1, seed=8).sample(64, 3))
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(SparseFeatures(5, 0.1, seed=generator).sample(64, 3), a)


def test_no_seed_draws_from_torchs_global_generator():
    def draw(global_seed, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            return SparseFeatures(5, 0.3, **kwargs).sample(64, 3)

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    # a finite data set and the rows drawn from it follow the global generator too
    assert torch.equal(draw(0, n_samples=10), draw(0, n_samples=10))
    assert not torch.equal(draw(0, n_samples=10), draw(1, n_samples=10))
    # an explicit seed ignores it
    assert torch.equal(draw(0, seed=7), draw(1, seed=7))


def test_finite_data_set():
    data = SparseFeatures(3, 0.5, n_samples=10, n_instances=2, seed=0)
    assert data.is_finite and data.dataset.shape == (2, 10, 3)
    assert torch.equal(data.sample(None), data.dataset)
    rows = data.sample(1000)
    # every sampled row is one of the stored rows
    stored = {tuple(row.tolist()) for row in data.dataset[0]}
    assert {tuple(row.tolist()) for row in rows[0]} <= stored
    shared = SparseFeatures(3, 0.5, n_samples=10, seed=0)
    assert shared.sample(None, n_instances=4).shape == (4, 10, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_features": 0}, ValueError, "n_features"),
        ({"n_features": 2.5}, TypeError, "n_features"),
        ({"feature_probability": 1.5}, ValueError, r"feature_probability must lie in \[0.0, 1.0\]"),
        ({"feature_probability": -0.1}, ValueError, "feature_probability"),
        ({"feature_probability": [[0.1, 0.2]]}, ValueError, r"broadcast to \(instance, n_f"),
        ({"feature_probability": [0.1, 0.2]}, ValueError, r"as shape \(instance, 1\)"),
        ({"feature_probability": np.full((2, 3, 1), 0.1)}, ValueError, r"shape \(2, 3, 1\)"),
        ({"feature_probability": np.zeros((0, 1))}, ValueError, "must not be empty"),
        ({"feature_probability": "x"}, TypeError, "feature_probability"),
        ({"magnitude": "gauss"}, ValueError, "magnitude must be one of"),
        ({"correlated_sets": [[0, 5]]}, ValueError, r"indices must lie in \[0, 2\]"),
        ({"correlated_sets": [[0, 1]], "anticorrelated_sets": [[1, 2]]}, ValueError, "disjoint"),
        ({"anticorrelated_sets": [[0, 1, 2]], "feature_probability": 0.5}, ValueError, "sum to"),
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"seed": "a"}, TypeError, "seed"),
    ],
)
def test_bad_input(kwargs, error, match):
    kwargs = {"n_features": 3, **kwargs}
    with pytest.raises(error, match=match):
        SparseFeatures(**kwargs)


def test_instance_mismatch_is_explained():
    with pytest.raises(ValueError, match="3 instances but 2"):
        SparseFeatures(2, [[0.1], [0.2], [0.3]]).sample(4, n_instances=2)
