"""Exact theory: closed forms, exact rationals, Monte Carlo, the paper's phase corners."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import factorial

import numpy as np
import pytest
import torch

import superpose
from superpose.theory import (
    PHASES,
    classify_solution,
    expected_loss,
    optimal_linear,
    phase_agreement,
    phase_diagram,
)

NOT_REPRESENTED, DEDICATED, SUPERPOSITION = range(3)


# --------------------------------------------------------------------------- expected_loss


def test_zero_weights_lose_the_second_moment():
    # x' = ReLU(0) = 0, so L = Σ I_i E[x_i²] = Σ I_i p_i / 3.
    p = np.array([[0.1, 0.5, 1.0], [0.3, 0.3, 0.0]])
    importance = np.array([1.0, 2.0, 0.5])
    got = expected_loss(np.zeros((2, 2, 3)), np.zeros(3), p, importance)
    np.testing.assert_allclose(got, (importance * p / 3).sum(-1), rtol=1e-14)


def test_identity_reconstructs_exactly():
    assert expected_loss(np.eye(3), np.zeros(3), 0.4, [1.0, 2.0, 3.0]) == pytest.approx(
        0, abs=1e-15
    )


def test_positive_bias_alone():
    # W = 0, b > 0: E[(x − b)²] = p/3 − p b + b² per feature.
    p, b = 0.3, 0.2
    assert expected_loss(np.zeros((1, 1)), [b], p) == pytest.approx(p / 3 - p * b + b**2, rel=1e-14)


def test_antipodal_pair_by_hand():
    # W = (1, −1), b = 0: alone a feature is exact; together x'_1 = ReLU(u_1 − u_2), whose
    # error is u_1² if u_1 < u_2 else u_2², with mean 1/12 + 1/12 = 1/6 per feature.
    p, importance = 0.2, np.array([1.0, 0.3])
    got = expected_loss([[1.0, -1.0]], [0.0, 0.0], p, importance)
    assert got == pytest.approx(p**2 * importance.sum() / 6, rel=1e-14)


def test_parallel_pair_by_hand():
    # W = (1, 1), b = 0: each output is u_1 + u_2, so the inactive or the other feature leaks in
    # full: error E[u²] = 1/3 for every feature whenever the other one is active.
    p, importance = 0.3, np.array([1.0, 0.5])
    got = expected_loss([[1.0, 1.0]], [0.0, 0.0], p, importance)
    assert got == pytest.approx(p * importance.sum() / 3, rel=1e-14)


def _exact_rational_loss(W: np.ndarray, b: np.ndarray, p: Fraction) -> Fraction:
    """The loss (unit importance) in rational arithmetic from the cube's vertex formula."""

    def ramp_average(c: Fraction, a: list[Fraction], power: int, order: int) -> Fraction:
        # E[Φ(c + a·u)] where Φ'…' (order times) = t_+^power: alternating vertex sum of the
        # (order + k)-fold antiderivative, divided by Π a.
        total = Fraction(0)
        for corner in itertools.product((0, 1), repeat=len(a)):
            t = c + sum((x for x, on in zip(a, corner, strict=True) if on), Fraction(0))
            if t > 0:
                degree = power + order + len(a)
                term = Fraction(factorial(power), factorial(degree)) * t**degree
                total += (-1) ** (len(a) - sum(corner)) * term
        return total / np.prod(a, dtype=object) if a else total

    P = [[Fraction(float(x)) for x in row] for row in W.T @ W]
    bias = [Fraction(float(x)) for x in b]
    n = len(bias)
    loss = Fraction(0)
    for k in range(n + 1):
        for subset in itertools.combinations(range(n), k):
            weight = p**k * (1 - p) ** (n - k)
            for i in range(n):
                a = [P[i][j] for j in subset]
                error = ramp_average(bias[i], a, 2, 0)
                if i in subset:  # + E[u_i²] − 2 E[u_i ReLU(t)], integrating u_i last by parts
                    rest = [P[i][j] for j in subset if j != i]
                    a_i = P[i][i]
                    moment = (
                        ramp_average(bias[i] + a_i, rest, 1, 1) / a_i
                        - (
                            ramp_average(bias[i] + a_i, rest, 1, 2)
                            - ramp_average(bias[i], rest, 1, 2)
                        )
                        / a_i**2
                    )
                    error += Fraction(1, 3) - 2 * moment
                loss += weight * error
    return loss


def test_matches_exact_rational_arithmetic():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 3))
    W[:, 2] *= 1e-3  # a nearly unrepresented feature: small, badly scaled entries of WᵀW
    b = rng.normal(size=3) * 0.3
    exact = _exact_rational_loss(W, b, Fraction(1, 4))
    assert abs(expected_loss(W, b, 0.25) - float(exact)) < 1e-13


def test_matches_monte_carlo():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(2, 5)) * 0.8
    b = rng.normal(size=5) * 0.2
    p = np.array([0.05, 0.1, 0.3, 0.5, 1.0])
    importance = 0.9 ** np.arange(5)
    n_samples = 400_000
    x = (rng.random((n_samples, 5)) < p) * rng.random((n_samples, 5))
    errors = ((x - np.maximum(x @ W.T @ W + b, 0)) ** 2 * importance).sum(-1)
    standard_error = errors.std() / np.sqrt(n_samples)  # ≈ 3.6e-4 for a loss ≈ 0.282
    assert abs(expected_loss(W, b, p, importance) - errors.mean()) < 4 * standard_error


def test_instances_tensors_and_shapes():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(4, 2, 4))
    b = rng.normal(size=(4, 4)) * 0.1
    p = rng.uniform(0.1, 1, size=(4, 4))
    batched = expected_loss(torch.from_numpy(W), torch.from_numpy(b), p, [1, 2, 3, 4])
    assert batched.shape == (4,)
    for i in range(4):
        assert batched[i] == pytest.approx(expected_loss(W[i], b[i], p[i], [1, 2, 3, 4]), rel=1e-12)
    per_instance = expected_loss(W, b, np.full((4, 1), 0.3), 1.0)
    np.testing.assert_allclose(per_instance, expected_loss(W, b, 0.3, np.ones(4)), rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"feature_probability": 1.5}, "feature_probability must lie in"),
        ({"feature_probability": [0.1, 0.2]}, "feature_probability as a vector is per feature"),
        ({"importance": -1.0}, "importance must lie in"),
        ({"b": np.zeros(2)}, "b must be shaped"),
        ({"W": np.zeros(3)}, "W must be shaped"),
        ({"W": np.zeros((1, 13))}, "1 to 12 features"),
        ({"b": np.zeros((2, 3))}, "b has 2 instances but 3"),
    ],
)
def test_expected_loss_rejects_bad_input(kwargs, match):
    arguments = {"W": np.zeros((3, 1, 3)), "b": np.zeros(3), "feature_probability": 0.5}
    arguments.update(kwargs)
    if arguments["W"].shape == (1, 13):
        arguments["b"] = np.zeros(13)
    with pytest.raises(ValueError, match=match):
        expected_loss(**arguments)


# --------------------------------------------------------------------------- optimal_linear


def _linear_loss(W: np.ndarray, b: np.ndarray, p: np.ndarray, importance: np.ndarray) -> float:
    """Exact loss of x' = WᵀWx + b: tr(D (1−P) Σ (1−P)ᵀ) + ‖D^½ ((1−P) μ − b)‖²."""
    residual = np.eye(len(p)) - W.T @ W
    covariance = np.diag(p / 3 - p**2 / 4)
    bias_error = residual @ (p / 2) - b
    return float(
        np.trace(np.diag(importance) @ residual @ covariance @ residual.T)
        + importance @ bias_error**2
    )


def test_optimal_linear_dense_is_pca():
    importance = 0.9 ** np.arange(5)
    W, b, loss = optimal_linear(importance, 1.0, 2)
    np.testing.assert_array_equal(W, [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(b, [0, 0, 0.5, 0.5, 0.5])
    assert loss == pytest.approx(importance[2:].sum() / 12, rel=1e-14)
    assert _linear_loss(W, b, np.ones(5), importance) == pytest.approx(loss, rel=1e-14)


def test_optimal_linear_ranks_by_importance_times_variance():
    # Var x = p/3 − p²/4 peaks at p = 2/3, so the half-dense feature beats the dense one.
    W, _, loss = optimal_linear([1.0, 1.0, 1.0], [1.0, 0.1, 0.5], 1)
    np.testing.assert_array_equal(W, [[0, 0, 1]])
    assert loss == pytest.approx(1 / 12 + (0.1 / 3 - 0.01 / 4), rel=1e-14)


def test_optimal_linear_beats_random_linear_models():
    rng = np.random.default_rng(3)
    importance = rng.uniform(0.1, 1, size=(6, 4))
    p = rng.uniform(0.05, 1, size=(6, 4))
    W, b, loss = optimal_linear(importance, p, 2)
    assert W.shape == (6, 2, 4) and b.shape == (6, 4) and loss.shape == (6,)
    for i in range(6):
        assert _linear_loss(W[i], b[i], p[i], importance[i]) == pytest.approx(loss[i], rel=1e-12)
        for _ in range(50):
            W_random = rng.normal(size=(2, 4))
            b_random = rng.normal(size=4) * 0.3
            assert _linear_loss(W_random, b_random, p[i], importance[i]) >= loss[i]


def test_optimal_linear_keeps_everything_with_enough_dimensions():
    W, _, loss = optimal_linear([1.0, 2.0], 0.5, 3)
    assert W.shape == (3, 2) and loss == 0
    np.testing.assert_array_equal(W.T @ W, np.eye(2))


def test_optimal_linear_rejects_bad_input():
    with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
        optimal_linear([1.0, 1.0], 0.5, 0)
    with pytest.raises(ValueError, match="feature_probability must lie in"):
        optimal_linear([1.0, 1.0], -0.1, 1)
    with pytest.raises(ValueError, match="importance must be shaped"):
        optimal_linear(1.0, 0.5, 1)


def test_trained_linear_model_reaches_the_optimum():
    importance = [0.9**i for i in range(5)]
    probability = [[1.0], [0.3]]  # (instance, 1): one instance each
    data = superpose.SparseFeatures(n_features=5, feature_probability=probability, seed=0)
    model = superpose.ToyModel(
        "linear", n_instances=2, n_features=5, n_hidden=2, importance=importance, seed=0
    )
    result = superpose.train(
        model, data, steps=1000, lr=3e-2, schedule="cosine", eval_samples=400_000, progress=False
    )
    _, _, optimum = optimal_linear(importance, probability, 2)
    np.testing.assert_allclose(result.loss.numpy(), optimum, rtol=0.01)


# --------------------------------------------------------------------------- phase diagrams


@pytest.fixture(scope="module")
def corners():
    return {
        (n, m): phase_diagram(n, m, [0.1, 1.0, 10.0], [1.0, 0.1, 0.01]) for n, m in [(2, 1), (3, 2)]
    }


@pytest.mark.parametrize("shape", [(2, 1), (3, 2)])
def test_phase_diagram_dense_corners(corners, shape):
    # Density 1: a less important extra feature is ignored, a more important one gets a
    # dedicated dimension (TMS, "Phase change").
    labels = corners[shape].labels
    assert labels[0, 0] == NOT_REPRESENTED
    assert labels[2, 0] == DEDICATED


def test_phase_diagram_sparse_corners(corners):
    # Sparse: the extra feature goes into superposition. With n=3, m=2 a more important extra
    # feature keeps a dedicated dimension and the two others share one as an antipodal pair.
    assert (corners[(2, 1)].labels[:, 2] == SUPERPOSITION).all()
    sparse = corners[(3, 2)]
    assert sparse.labels[0, 2] == SUPERPOSITION
    assert sparse.labels[2, 2] == DEDICATED
    assert sparse.candidates[sparse.best[2, 2]] == "extra dedicated, others antipodal"


def test_phase_diagram_losses_and_winners(corners):
    diagram = corners[(2, 1)]
    variance = 0.1 / 3 - 0.01 / 4
    assert diagram.losses["extra ignored"][0, 1] == pytest.approx(0.1 * variance, rel=1e-14)
    assert diagram.losses["extra dedicated"][2, 1] == pytest.approx(variance, rel=1e-14)
    # the sparse antipodal pair improves on (1, −1) without bias, loss p²(1 + r)/6, by a little
    assert 0.8 * 1e-4 * 2 / 6 < diagram.losses["antipodal pair"][1, 2] < 1e-4 * 2 / 6
    winner = np.stack(list(diagram.losses.values()))[diagram.best[1, 2], 1, 2]
    assert winner == pytest.approx(
        expected_loss(diagram.W[1, 2], diagram.b[1, 2], 0.01, [1.0, 1.0]), rel=1e-12
    )


def test_phase_diagram_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(n_features, n_hidden\) must be one of"):
        phase_diagram(5, 2, [1.0], [0.1])
    with pytest.raises(ValueError, match="feature_probability must lie in"):
        phase_diagram(2, 1, [1.0], [0.0])
    with pytest.raises(ValueError, match="relative_importance must be a non-empty 1-D"):
        phase_diagram(2, 1, [[1.0]], [0.1])


def test_classify_solution():
    W = np.array(
        [
            [[1.0, 0.0, 0.02], [0.0, 1.0, 0.01]],  # extra not represented
            [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],  # extra dedicated (feature 1 dropped)
            [[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]],  # extra antipodal with feature 1
            [[-0.5, -0.5, 1.0], [0.87, -0.87, 0.0]],  # triangle
        ]
    )
    np.testing.assert_array_equal(
        classify_solution(torch.from_numpy(W)),
        [NOT_REPRESENTED, DEDICATED, SUPERPOSITION, SUPERPOSITION],
    )
    assert PHASES[classify_solution(W[2])] == "superposition"


def test_phase_agreement():
    assert phase_agreement([[0, 1], [2, 2]], [[0, 1], [2, 1]]) == 0.75
    with pytest.raises(ValueError, match="same non-empty shape"):
        phase_agreement([0, 1], [0, 1, 2])
