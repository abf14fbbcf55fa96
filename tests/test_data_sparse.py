"""Sparse sampling of independent features: the same distribution as the dense sampler,
checked by goodness-of-fit tests (chi-square on counts and positions, Kolmogorov-Smirnov on
magnitudes) with fixed seeds."""

import numpy as np
import pytest
import torch
from scipy import stats

from superpose import SparseFeatures
from superpose.data import Hierarchy, bernoulli_positions, feature_major
from superpose.data.sampling import FEATURE_MAJOR
from superpose.data.sparse import _SPARSE_DENSITY as SPARSE_DENSITY
from superpose.data.sparse import _SPARSE_MIN_ELEMENTS as SPARSE_MIN_ELEMENTS

P_VALUE = 1e-3


def _binomial_chi_square(counts: np.ndarray, n: int, p: float) -> float:
    """p-value of observed ``counts`` (one per repetition) against Binomial(n, p), bins with
    expected frequency < 5 merged into the tails."""
    support = np.arange(n + 1)
    expected = stats.binom.pmf(support, n, p) * len(counts)
    observed = np.bincount(counts, minlength=n + 1).astype(float)
    keep = expected >= 5
    low, high = support[keep][0], support[keep][-1]
    assert high > low, "needs two bins with expected frequency >= 5"
    merged_expected = np.r_[
        expected[: low + 1].sum(), expected[low + 1 : high], expected[high:].sum()
    ]
    merged_observed = np.r_[
        observed[: low + 1].sum(), observed[low + 1 : high], observed[high:].sum()
    ]
    return stats.chisquare(merged_observed, merged_expected).pvalue


def test_bernoulli_positions_edge_probabilities_and_order():
    generator = torch.Generator().manual_seed(0)
    column, position = bernoulli_positions(torch.tensor([0.0, 1.0, 0.0]), 7, generator)
    assert column.tolist() == [1] * 7 and position.tolist() == list(range(7))
    column, position = bernoulli_positions(torch.tensor([0.2, 0.7, 0.05]), 50, generator)
    key = column * 50 + position
    assert (key.diff() > 0).all() and ((position >= 0) & (position < 50)).all()
    empty = bernoulli_positions(torch.zeros(4), 10, generator)
    assert empty[0].numel() == 0 and empty[1].numel() == 0


@pytest.mark.parametrize("p", [0.002, 0.05, 0.3, 0.9])
def test_bernoulli_positions_counts_positions_and_pairs_are_bernoulli(p):
    length, repeats = 40, 4000
    generator = torch.Generator().manual_seed(1)
    column, position = bernoulli_positions(torch.full((repeats,), p), length, generator)
    hits = np.zeros((repeats, length), dtype=bool)
    hits[column.numpy(), position.numpy()] = True
    assert not np.any(np.bincount(column.numpy() * length + position.numpy()) > 1)
    # successes per sequence: Binomial(length, p)
    assert _binomial_chi_square(hits.sum(1), length, p) > P_VALUE
    # each position succeeds with probability p: Binomial(repeats, p) per position
    by_position = hits.sum(0)
    expected = repeats * p
    statistic = ((by_position - expected) ** 2 / (expected * (1 - p))).sum()
    assert stats.chi2.sf(statistic, length) > P_VALUE
    if p >= 0.05:  # neighbours are independent: both succeed with probability p²
        pairs = hits[:, 0::2] & hits[:, 1::2]
        assert _binomial_chi_square(pairs.sum(1), length // 2, p * p) > P_VALUE


def test_the_check_rejects_a_wrong_probability():
    generator = torch.Generator().manual_seed(1)
    column, _ = bernoulli_positions(torch.full((4000,), 0.33), 40, generator)
    counts = np.bincount(column.numpy(), minlength=4000)
    assert _binomial_chi_square(counts, 40, 0.3) < 1e-6


def _poisson_binomial(probability: np.ndarray) -> np.ndarray:
    """pmf of the number of successes of independent trials with these probabilities."""
    pmf = np.array([1.0])
    for p in probability:
        pmf = np.convolve(pmf, [1 - p, p])
    return pmf


@pytest.mark.parametrize("magnitude", ["uniform", "exponential", "constant"])
def test_sparse_features_match_the_dense_distribution(magnitude):
    n, batch = 64, 4096
    probability = torch.linspace(0.001, 0.05, n)[None]
    features = SparseFeatures(n, probability, magnitude=magnitude, seed=0)
    assert features.independent and features.sparse_instances().all()
    for f in (features.sample(batch), features.sample_sparse(batch).to_dense()):
        f = f[0].numpy()
        active = f != 0
        # active features per row: Poisson-binomial
        pmf = _poisson_binomial(probability[0].double().numpy())
        observed = np.bincount(active.sum(1), minlength=len(pmf))
        expected = pmf * batch
        tail = np.nonzero(expected < 5)[0]
        cut = tail[tail > np.argmax(expected)][0]
        statistic = stats.chisquare(
            np.r_[observed[:cut], observed[cut:].sum()], np.r_[expected[:cut], expected[cut:].sum()]
        )
        assert statistic.pvalue > P_VALUE
        # every feature fires with its probability
        p = probability[0].double().numpy()
        z = (active.sum(0) - batch * p) ** 2 / (batch * p * (1 - p))
        assert stats.chi2.sf(z.sum(), n) > P_VALUE
        # magnitudes of active entries
        values = f[active]
        if magnitude == "constant":
            assert np.all(values == 1.0)
        else:
            reference = "uniform" if magnitude == "uniform" else "expon"
            assert stats.kstest(values, reference).pvalue > P_VALUE


def test_sparse_sample_is_seeded_and_shaped_and_draw_mixes_instances():
    features = SparseFeatures(32, [[0.01] * 32, [0.6] * 32], seed=0)
    assert features.sparse_instances().tolist() == [True, False]
    one = features.sample(5000, generator=torch.Generator().manual_seed(3))
    two = features.sample(5000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and one.shape == (2, 5000, 32)
    rates = (one != 0).float().mean((1, 2))
    torch.testing.assert_close(rates, torch.tensor([0.01, 0.6]), atol=0.005, rtol=0)
    sparse = features.sample_sparse(100, generator=torch.Generator().manual_seed(4))
    assert sparse.is_sparse and sparse.shape == (2, 100, 32)
    assert (sparse.coalesce().values() > 0).all()
    # not exact for dependent features: sample_sparse converts the dense batch
    hierarchy = SparseFeatures(3, 0.01, hierarchy=Hierarchy([-1, 0, 0]), seed=0)
    assert not hierarchy.independent and not hierarchy.sparse_instances().any()
    dense = hierarchy.sample(64, generator=torch.Generator().manual_seed(5))
    converted = hierarchy.sample_sparse(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(converted.to_dense(), dense)
    assert not SparseFeatures(8, SPARSE_DENSITY).sparse_instances().any()


def test_trainer_batches_match_the_dense_distribution():
    """sample_rows: sparse instances (p = 0.01, 0.02) between dense ones (0.5) keep their
    place; per instance, the active features per row are Binomial(n, p) over all batch_size
    rows (the left-out rows count as empty) and the magnitudes are uniform."""
    probability = [[0.5], [0.01], [0.02], [0.5]]
    assert [p[0] < SPARSE_DENSITY for p in probability] == [False, True, True, False]
    data = SparseFeatures(4, probability, seed=3)
    batch = data.sample_rows(2**15)
    x = batch.dense()
    assert x.shape == (4, 2**15, 4) and batch.n_instances == 4
    assert sum(part.numel() for part in batch.parts) < 0.55 * x.numel()  # rows were left out
    for k, (p,) in enumerate(probability):
        active = (x[k] != 0).sum(-1).numpy()
        assert _binomial_chi_square(active, 4, p) > P_VALUE, k
        magnitudes = x[k][x[k] != 0].numpy()
        assert stats.kstest(magnitudes, "uniform").pvalue > P_VALUE, k
    again = SparseFeatures(4, probability, seed=3).sample_rows(2**15)
    assert again.repeats == batch.repeats
    assert all(torch.equal(a, b) for a, b in zip(again.parts, batch.parts, strict=True))
    # dense instances are drawn as draw() draws them
    dense = SparseFeatures(4, 0.5, seed=3).sample_rows(64, n_instances=2)
    assert torch.equal(dense.dense(), SparseFeatures(4, 0.5, seed=3).sample(64, n_instances=2))


def test_sparse_runs_too_small_to_pay_are_drawn_densely():
    def features():
        return SparseFeatures(4, [[0.01], [0.02]], seed=2)

    rows = SPARSE_MIN_ELEMENTS // (2 * 4)  # the two instances' run is just large enough
    sparse = features().sample_rows(rows)
    assert min(sparse.repeats) > 0 and sum(p.numel() for p in sparse.parts) < 0.2 * 2 * rows * 4
    small = features().sample_rows(rows - 1)
    assert small.repeats == (0,) and torch.equal(small.dense(), features().sample(rows - 1))
    mixed = SparseFeatures(4, [[0.01], [0.5], [0.02]], seed=2).sample_rows(rows)  # runs of one
    assert mixed.repeats == (0,)


def test_small_batches_are_feature_major_and_sample_is_contiguous():
    probability = [[0.5], [0.01]]
    rows = SPARSE_MIN_ELEMENTS // 3 + 1  # the sparse instance is drawn sparsely
    batch = SparseFeatures(3, probability, seed=1).sample_rows(rows)
    assert len(batch.parts) == 2 and all(feature_major(part) for part in batch.parts)
    dense = SparseFeatures(3, probability, seed=1).sample_rows(rows, sparse=False)
    assert dense.repeats == (0,) and feature_major(dense.parts[0])
    drawn = SparseFeatures(3, probability, seed=1).sample(rows)
    assert drawn.is_contiguous() and torch.equal(dense.dense(), drawn)
    wide = SparseFeatures(FEATURE_MAJOR + 1, 0.5, seed=1).sample_rows(8)
    assert wide.parts[0].is_contiguous()
