"""Firing profiles of the SAE literature: probability profiles, normal magnitudes, hierarchy,
low-rank copula correlation, and how they combine with SparseFeatures' other options."""

import numpy as np
import pytest
import torch
from scipy import stats

from superpose import SparseFeatures
from superpose.data import (
    Hierarchy,
    LowRankCorrelation,
    folded_normal,
    geometric_probability,
    rectified_normal,
    zipf_probability,
)


def _within_sigmas(observed, probability, n, sigmas=5.0):
    """Assert observed frequencies match probabilities within `sigmas` binomial std errors."""
    probability = np.asarray(probability, dtype=np.float64)
    error = np.sqrt(probability * (1 - probability) / n)
    np.testing.assert_array_less(np.abs(np.asarray(observed) - probability), sigmas * error + 1e-12)


def test_zipf_probability_values():
    # r^-1 = [1, 1/2, 1/3] mapped affinely onto [0.1, 0.4]: [0.4, 0.175, 0.1]
    np.testing.assert_allclose(zipf_probability(3, 1.0, 0.4, 0.1), [0.4, 0.175, 0.1], rtol=1e-6)
    p = zipf_probability(16_384, exponent=0.5, max_probability=0.4, min_probability=5e-4)
    assert p.shape == (16_384,) and p.dtype == torch.float32
    assert p[0].item() == pytest.approx(0.4) and p[-1].item() == pytest.approx(5e-4)
    assert (p.diff() < 0).all()
    # the middle rank follows the affine power law exactly
    r = 100.0
    expected = 5e-4 + (0.4 - 5e-4) * (r**-0.5 - 16_384**-0.5) / (1 - 16_384**-0.5)
    assert p[99].item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(zipf_probability(1, 2.0, 0.3, 0.01), torch.tensor([0.3]))


def test_geometric_probability_values():
    p = geometric_probability(512, ratio=0.99, expected_active=5.0)
    assert p.shape == (512,)
    assert p.double().sum().item() == pytest.approx(5.0, abs=1e-5)
    np.testing.assert_allclose(p[1:] / p[:-1], 0.99, rtol=1e-5)
    assert p[0].item() == pytest.approx(5.0 * 0.01 / (1 - 0.99**512), rel=1e-6)
    # the largest reachable expectation puts p_0 at exactly 1
    top = (1 - 0.5**4) / (1 - 0.5)
    assert geometric_probability(4, 0.5, top)[0].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"expected_active=1\.9 is unreachable"):
        geometric_probability(4, 0.5, 1.9)
    # an increasing profile is bounded by its last feature
    assert geometric_probability(3, 2.0, 1.75)[-1].item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: zipf_probability(0), ValueError, "n_features"),
        (lambda: zipf_probability(5, exponent=0.0), ValueError, "exponent must be > 0"),
        (lambda: zipf_probability(5, 1.0, 0.1, 0.2), ValueError, "min_probability <= max"),
        (lambda: zipf_probability(5, 1.0, 1.5, 0.1), ValueError, "max_probability <= 1"),
        (lambda: zipf_probability(5, "1"), TypeError, "exponent must be a number"),
        (lambda: geometric_probability(5, ratio=0.0), ValueError, "ratio must be > 0"),
        (lambda: geometric_probability(5, expected_active=-1), ValueError, "expected_active"),
        (lambda: geometric_probability(5, expected_active=float("nan")), ValueError, "finite"),
        (lambda: folded_normal(1.0, -0.5), ValueError, "std must be >= 0"),
        (lambda: folded_normal(np.ones((2, 2, 2))), ValueError, "mean must be a scalar"),
        (lambda: LowRankCorrelation.random(4, 0), ValueError, "rank"),
        (lambda: LowRankCorrelation.random(4, 2, scale=-1.0), ValueError, "scale must be >= 0"),
    ],
)
def test_profile_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_folded_normal_magnitudes_fit_scipy():
    # p < 1 exercises the magnitude source u / p given activity
    x = SparseFeatures(1, 0.3, magnitude=folded_normal(0.5, 1.0), seed=0).sample(60_000)
    values = x[x != 0].numpy()
    assert (values > 0).all()
    # measured at this seed (18k values): p = 0.62 against foldnorm(0.5); the half-normal
    # (mean 0) gives p = 0 and foldnorm(c=0.6) p = 2e-9, so the test resolves the mean
    assert stats.kstest(values, stats.foldnorm(c=0.5, scale=1.0).cdf).pvalue > 0.01
    assert stats.kstest(values, stats.halfnorm(scale=1.0).cdf).pvalue < 1e-6


def test_rectified_normal_magnitudes_fit_scipy():
    x = SparseFeatures(1, 1.0, magnitude=rectified_normal(1.0, 1.0), seed=1).sample(60_000)
    values = x.flatten().numpy()
    _within_sigmas((values == 0).mean(), stats.norm.cdf(-1.0), values.size)
    positive = values[values > 0]
    truncated = stats.truncnorm(a=-1.0, b=np.inf, loc=1.0, scale=1.0)
    assert stats.kstest(positive, truncated.cdf).pvalue > 0.01


def test_normal_magnitude_parameters_broadcast_and_stay_finite():
    # std 0: a constant |mean| per feature
    x = SparseFeatures(2, 1.0, magnitude=folded_normal([2.0, -3.0], 0.0), seed=0).sample(4)
    assert torch.equal(x, torch.tensor([2.0, 3.0]).expand(1, 4, 2))
    per_instance = folded_normal([[1.0, 2.0], [3.0, 4.0]], 0.0)
    x = SparseFeatures(2, 1.0, magnitude=per_instance, seed=0).sample(3, n_instances=2)
    assert torch.equal(x[:, 0], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert per_instance.__name__ == "folded_normal"
    # a source of exactly 0 (probability 2**-24 per draw) maps to half a grid step: -5.42 sigma
    edge = folded_normal(0.0, 1.0)(torch.tensor([0.0]))
    assert torch.isfinite(edge).all() and edge.item() == pytest.approx(5.42, abs=0.01)


def _tree():
    # 0 -> {1, 2}, 1 -> {3, 4}, 5 -> {6, 7} (exclusive only under 1 and 5), 8 a lone root
    return [-1, 0, 0, 1, 1, -1, 5, 5, -1]


def test_hierarchy_gates_children_and_marginals_are_products():
    p = [
        [0.5, 0.4, 0.6, 0.3, 0.7, 0.3, 0.5, 0.5, 0.2],
        [0.8, 0.5, 0.5, 0.5, 0.25, 0.6, 0.1, 0.2, 0.5],
    ]
    data = SparseFeatures(9, p, hierarchy=Hierarchy(_tree(), exclusive=[1, 5]), seed=0)
    n = 200_000
    active = data.sample(n) > 0
    parent = torch.tensor(_tree())
    has_parent = parent >= 0
    # a child never fires without its parent
    assert not (active[..., has_parent] & ~active[..., parent[has_parent]]).any()
    # exclusive siblings never fire together; 5's children sum to 1: exactly one fires with 5
    assert not (active[..., 3] & active[..., 4]).any()
    assert torch.equal(active[0, :, 6] | active[0, :, 7], active[0, :, 5])
    # siblings under the non-exclusive parent 0 do fire together
    assert (active[..., 1] & active[..., 2]).any()
    expected = torch.tensor(p)
    for child, par in [(1, 0), (2, 0), (6, 5), (7, 5), (3, 1), (4, 1)]:
        expected[:, child] *= expected[:, par]
    np.testing.assert_allclose(data.marginal_probability, expected, rtol=1e-6)
    _within_sigmas(active.float().mean(1), expected, n)


def test_hierarchy_conditional_probability_given_parent():
    data = SparseFeatures(3, [[0.25, 0.4, 0.6]], hierarchy=Hierarchy([-1, 0, 0], True), seed=2)
    active = data.sample(200_000)[0] > 0
    with_parent = active[active[:, 0]]
    _within_sigmas(with_parent[:, 1:].float().mean(0), [0.4, 0.6], len(with_parent))
    assert not (with_parent[:, 1] & with_parent[:, 2]).any()


def test_conditional_probability_gives_the_marginals():
    hierarchy = Hierarchy(_tree(), exclusive=True)
    target = zipf_probability(9, exponent=1.0, max_probability=0.6, min_probability=0.02)
    # children fire less often than their parents but siblings must share the parent's firing
    target[[1, 2, 6, 7]] = torch.tensor([0.3, 0.2, 0.02, 0.03])
    conditional = hierarchy.conditional_probability(target)
    assert conditional[1].item() == pytest.approx(0.3 / 0.6) and conditional[0] == target[0]
    data = SparseFeatures(9, conditional[None, :], hierarchy=hierarchy, seed=8)
    np.testing.assert_allclose(data.marginal_probability[0], target, rtol=1e-6)
    n = 200_000
    _within_sigmas((data.sample(n)[0] > 0).float().mean(0), target, n)
    # a parent that never fires: its children's conditional probability is 0, not nan
    assert Hierarchy([-1, 0]).conditional_probability([[0.0, 0.0]]).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match=r"children \[1\] would fire more often"):
        Hierarchy([-1, 0]).conditional_probability([0.2, 0.3])
    with pytest.raises(ValueError, match="n_features=2 entries"):
        Hierarchy([-1, 0, 0]).conditional_probability([0.2, 0.1])


def test_hierarchy_with_sets_magnitudes_and_finite_data():
    data = SparseFeatures(
        6,
        0.5,
        hierarchy=Hierarchy([-1, -1, 0, 1, -1, -1]),
        anticorrelated_sets=[[0, 1]],
        correlated_sets=[[4, 5]],
        magnitude=folded_normal(2.0, 0.5),
        n_samples=50_000,
        seed=3,
    )
    active = data.dataset[0] > 0
    assert not (active[:, 0] & active[:, 1]).any()
    assert not (active[:, 2] & ~active[:, 0]).any() and not (active[:, 3] & ~active[:, 1]).any()
    assert torch.equal(active[:, 4], active[:, 5])
    _within_sigmas(active.float().mean(0), [0.5, 0.5, 0.25, 0.25, 0.5, 0.5], 50_000)


def test_parent_scale_multiplies_children_by_their_parents_depth_by_depth():
    # a chain 0 -> 1 -> 2 always firing, constant magnitudes 2, 3, 5
    magnitude = rectified_normal([2.0, 3.0, 5.0], 0.0)
    chain = Hierarchy([-1, 0, 1], parent_scale=[4.0, 6.0, 0.0])  # 2's reference: never read
    x = SparseFeatures(3, 1.0, magnitude=magnitude, hierarchy=chain, seed=0).sample(2)
    # 1: 3 * 2 / 4 = 1.5; 2: 5 * 1.5 / 6 = 1.25 (its parent's scaled magnitude, not 3)
    assert torch.equal(x, torch.tensor([2.0, 1.5, 1.25]).expand(1, 2, 3))
    plain = SparseFeatures(3, 1.0, magnitude=magnitude, hierarchy=Hierarchy([-1, 0, 1]), seed=0)
    assert torch.equal(plain.sample(2), torch.tensor([2.0, 3.0, 5.0]).expand(1, 2, 3))


def test_parent_scale_keeps_firing_and_rescales_the_same_draws():
    p = [[0.5, 0.4, 0.6, 0.3, 0.7, 0.3, 0.5, 0.5, 0.2]]
    reference = torch.linspace(0.3, 0.7, 9)

    def make(parent_scale):
        hierarchy = Hierarchy(_tree(), exclusive=[1, 5], parent_scale=parent_scale)
        return SparseFeatures(9, p, hierarchy=hierarchy, magnitude="exponential", seed=4)

    plain, scaled = make(None).sample(4096)[0], make(reference).sample(4096)[0]
    assert torch.equal(plain > 0, scaled > 0)  # the same firing, draw for draw
    expected = plain.clone()
    for child, parent in [(1, 0), (2, 0), (6, 5), (7, 5), (3, 1), (4, 1)]:  # roots first
        expected[:, child] *= expected[:, parent] / reference[parent]
    torch.testing.assert_close(scaled, expected, rtol=1e-6, atol=0.0)
    assert not torch.equal(scaled[:, 3], plain[:, 3])  # grandchildren really move
    # a scalar reference serves every parent; marginal probabilities are untouched
    assert torch.equal(make(0.5).marginal_probability, make(None).marginal_probability)


def test_parent_scale_matches_saelens_scale_children_by_parent():
    synthetic = pytest.importorskip("sae_lens.synthetic")
    # 0 -> {1, 2 -> {4, 5}}, 3 -> {6}: SAELens multiplies children of active parents by
    # parent / mean (a parent of magnitude 0 silences them: ours multiplies by 0); on draws
    # already gated and exclusive its gating and exclusion change nothing else
    parent = [-1, 0, 0, -1, 2, 2, 3]
    mean = torch.tensor([1.5, 2.0, 0.8, 1.2, 1.0, 3.0, 0.5])
    magnitude = rectified_normal(mean, 0.4)
    probability = [[0.6, 0.5, 0.7, 0.5, 0.4, 0.5, 0.9]]
    hierarchy = Hierarchy(parent, exclusive=[2], parent_scale=mean)
    ours = SparseFeatures(7, probability, magnitude=magnitude, hierarchy=hierarchy, seed=3)
    plain = SparseFeatures(
        7, probability, magnitude=magnitude, hierarchy=Hierarchy(parent, exclusive=[2]), seed=3
    )
    x = plain.sample(8192)[0]
    node = synthetic.HierarchyNode

    def tree(i):
        children = [tree(c) for c, p in enumerate(parent) if p == i]
        return node(
            feature_index=i,
            children=children,
            mutually_exclusive_children=i == 2,
            scale_children_by_parent=bool(children),
        )

    modifier = synthetic.hierarchy_modifier([tree(0), tree(3)])
    generator = synthetic.ActivationGenerator(
        7, firing_probabilities=0.5, mean_firing_magnitudes=mean, std_firing_magnitudes=0.4
    )
    assert (x[:, [0, 2, 3]] > 0).float().mean() > 0.3 and (x[:, 4:] > 0).any(0).all()
    torch.testing.assert_close(ours.sample(8192)[0], modifier(x, generator), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize(
    ("parent_scale", "error", "match"),
    [
        ([1.0, 2.0], ValueError, r"scalar or \(n_features=3,\)"),
        ([[1.0, 1.0, 1.0]], ValueError, r"scalar or \(n_features=3,\)"),
        ([0.0, 1.0, 1.0], ValueError, r"> 0 for every parent, not \[0\]"),
        (-1.0, ValueError, r"> 0 for every parent, not \[0\]"),
        ([1.0, float("nan"), 1.0], ValueError, "parent_scale must be finite"),
        (True, TypeError, "parent_scale"),
        ("mean", TypeError, "parent_scale"),
    ],
)
def test_parent_scale_bad_input(parent_scale, error, match):
    with pytest.raises(error, match=match):
        SparseFeatures(3, 0.3, hierarchy=Hierarchy([-1, 0, 0], parent_scale=parent_scale))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hierarchy": [-1, 0, 0]}, TypeError, "hierarchy must be"),
        ({"hierarchy": Hierarchy([-1, 0])}, ValueError, "n_features=3 entries"),
        ({"hierarchy": Hierarchy([-1, 0, 3])}, ValueError, r"-1 \(root\) or lie in \[0, 2\]"),
        ({"hierarchy": Hierarchy([2, 0, 1])}, ValueError, "cycle"),
        ({"hierarchy": Hierarchy([-1, 1, 0])}, ValueError, "cycle"),
        ({"hierarchy": Hierarchy([-1, 0, 0], exclusive=[7])}, ValueError, "exclusive parent"),
        (
            {"hierarchy": Hierarchy([-1, 0, 0], exclusive=True), "feature_probability": 0.6},
            ValueError,
            "hierarchy: exclusive siblings: the probabilities of",
        ),
        (
            {"hierarchy": Hierarchy([-1, 0, -1]), "anticorrelated_sets": [[1, 2]]},
            ValueError,
            r"children \[1\] cannot be in",
        ),
        ({"correlation": np.zeros((3, 2))}, TypeError, "correlation must be"),
        (
            {"correlation": LowRankCorrelation(torch.full((3, 2), 0.8))},
            ValueError,
            "sum of squares < 1",
        ),
        ({"correlation": LowRankCorrelation(torch.zeros(4, 2))}, ValueError, "n_features=3"),
        (
            {"correlation": LowRankCorrelation(torch.zeros(3, 2)), "correlated_sets": [[0, 1]]},
            ValueError,
            "cannot be combined",
        ),
        (
            {
                "correlation": LowRankCorrelation(torch.zeros(2, 3, 1)),
                "feature_probability": [[0.1], [0.2], [0.3]],
            },
            ValueError,
            "correlation has 2 instances",
        ),
    ],
)
def test_hierarchy_and_correlation_bad_input(kwargs, error, match):
    kwargs = {"n_features": 3, "feature_probability": 0.3, **kwargs}
    with pytest.raises(error, match=match):
        SparseFeatures(**kwargs)


def test_low_rank_correlation_keeps_marginals_and_matches_copula():
    factor = torch.tensor([[0.8, 0.0], [0.7, 0.3], [-0.6, 0.5], [0.0, 0.9], [0.2, -0.4]])
    p = np.array([0.3, 0.1, 0.2, 0.05, 0.5])
    data = SparseFeatures(
        5, [p], correlation=LowRankCorrelation(factor), magnitude="exponential", seed=4
    )
    n = 200_000
    active = (data.sample(n)[0] > 0).numpy()
    _within_sigmas(active.mean(0), p, n)
    # measured: marginals within 1.2 sigma and joints within 3.5 sigma at this seed; 4M samples
    # (another seed) put every joint within 1.7 sigma of the prediction, so there is no bias
    latent = LowRankCorrelation(factor).matrix()[0].numpy()
    np.testing.assert_allclose(np.diag(latent), 1.0, rtol=1e-6)
    thresholds = stats.norm.ppf(p)
    for i, j in [(0, 1), (0, 2), (1, 3), (2, 4), (3, 4)]:
        joint = stats.multivariate_normal(cov=[[1, latent[i, j]], [latent[i, j], 1]]).cdf(
            thresholds[[i, j]]
        )
        _within_sigmas((active[:, i] & active[:, j]).mean(), joint, n)
    # the pairs above are really correlated: the copula's joint is far from independence
    strong = stats.multivariate_normal(cov=[[1, latent[0, 1]], [latent[0, 1], 1]])
    assert strong.cdf(thresholds[[0, 1]]) > 2 * p[0] * p[1]


def test_low_rank_correlation_batched_over_instances():
    # instance 0 uncorrelated, instance 1 strongly correlated; per-instance probabilities
    factor = torch.stack([torch.zeros(4, 1), torch.full((4, 1), 0.9)])
    p = [[0.2, 0.2, 0.4, 0.4], [0.1, 0.3, 0.3, 0.5]]
    data = SparseFeatures(4, p, correlation=LowRankCorrelation(factor), seed=5)
    n = 100_000
    active = data.sample(n) > 0
    _within_sigmas(active.float().mean(1), p, n)
    _within_sigmas((active[0, :, 0] & active[0, :, 1]).float().mean(), 0.04, n)
    joint = stats.multivariate_normal(cov=[[1, 0.81], [0.81, 1]]).cdf(stats.norm.ppf([0.1, 0.3]))
    _within_sigmas((active[1, :, 0] & active[1, :, 1]).float().mean(), joint, n)


def test_correlation_with_hierarchy_keeps_roots_and_gating():
    correlation = LowRankCorrelation.random(8, rank=3, scale=0.3, seed=0)
    hierarchy = Hierarchy([-1, 0, 0, -1, 3, 3, -1, -1], exclusive=[3])
    p = [0.3, 0.5, 0.5, 0.4, 0.5, 0.5, 0.1, 0.2]
    data = SparseFeatures(8, [p], hierarchy=hierarchy, correlation=correlation, seed=6)
    n = 100_000
    active = data.sample(n)[0] > 0
    roots = [0, 3, 6, 7]
    _within_sigmas(active[:, roots].float().mean(0), [p[i] for i in roots], n)
    # (children's marginals are not products here: their own draws correlate with the parent)
    assert not (active[:, [1, 2]] & ~active[:, [0]]).any()
    assert torch.equal(active[:, 4] | active[:, 5], active[:, 3])


def test_profiles_reproduce_with_seeds():
    def make(seed):
        return SparseFeatures(
            8,
            zipf_probability(8, 0.5, 0.4, 0.05)[None, :],
            magnitude=folded_normal(1.0, 0.5),
            hierarchy=Hierarchy([-1, 0, 0, -1, 3, 3, -1, -1], exclusive=True),
            correlation=LowRankCorrelation.random(8, 2, 0.3, seed=1),
            seed=seed,
        )

    a = make(7).sample(256, n_instances=3)
    assert torch.equal(a, make(7).sample(256, n_instances=3))
    assert not torch.equal(a, make(8).sample(256, n_instances=3))
    factor = LowRankCorrelation.random(8, 2, 0.3, seed=1).factor
    assert torch.equal(factor, LowRankCorrelation.random(8, 2, 0.3, seed=1).factor)
