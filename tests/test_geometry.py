"""Tegum factors and polytopes on constructed weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpose.geometry import (
    FACTOR_NAMES,
    OTHER,
    POLYTOPES,
    match_polytope,
    polytope_counts,
    tegum_decomposition,
)


def _polygon(n: int) -> np.ndarray:
    """A regular n-gon of unit vectors in the plane: ``(2, n)``."""
    angles = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)])


def _tetrahedron() -> np.ndarray:
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    return (corners / np.sqrt(3)).T


def _square_antiprism() -> np.ndarray:
    # Two squares at heights ±1/√3, turned 45° apart, radius √(2/3): a tight frame.
    angles = np.pi / 2 * np.arange(4)
    radius, height = np.sqrt(2 / 3), np.sqrt(1 / 3)
    top = [[radius * np.cos(a), radius * np.sin(a), height] for a in angles]
    bottom = [
        [radius * np.cos(a + np.pi / 4), radius * np.sin(a + np.pi / 4), -height] for a in angles
    ]
    return np.array(top + bottom).T


def _only_factor(W: np.ndarray):
    (decomposition,) = tegum_decomposition(W)
    assert decomposition.not_represented == ()
    (factor,) = decomposition.factors
    return factor


@pytest.mark.parametrize(
    ("W", "name", "fraction"),
    [
        (np.eye(1), "dedicated", 1.0),
        (_tetrahedron(), "tetrahedron", 3 / 4),
        (_polygon(3), "triangle", 2 / 3),
        (np.array([[1.0, -1.0]]), "digon", 1 / 2),
        (_polygon(5), "pentagon", 2 / 5),
        (_square_antiprism(), "square antiprism", 3 / 8),
    ],
)
def test_single_polytopes(W, name, fraction):
    factor = _only_factor(W)
    assert factor.polytope == name
    assert factor.fraction == pytest.approx(fraction, abs=1e-6)
    assert factor.features == tuple(range(W.shape[1]))
    np.testing.assert_allclose(factor.dimensionality, fraction, atol=1e-6)


def test_polytope_fractions():
    assert [p.fraction for p in POLYTOPES] == [1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8]


def test_orthogonal_factors_split():
    # Instance 0: antipodal pairs in two orthogonal directions, two digons.
    # Instance 1: a pentagon in dims 0-1, a digon along dim 2, a dedicated feature along dim 3,
    # and one unrepresented feature — shuffled among the columns.
    digons = np.zeros((4, 9))
    digons[0, :2] = [1, -1]
    digons[1, 2:4] = [1, -1]
    mixed = np.zeros((4, 9))
    mixed[:2, :5] = _polygon(5)
    mixed[2, 5:7] = [1, -1]
    mixed[3, 7] = 1
    mixed[:, 8] = 0.01
    order = np.array([8, 5, 0, 1, 7, 2, 6, 3, 4])  # new column c holds old feature order[c]
    W = np.stack([digons, mixed[:, order]])
    first, second = tegum_decomposition(torch.from_numpy(W))

    assert [f.polytope for f in first.factors] == ["digon", "digon"]
    assert [f.features for f in first.factors] == [(0, 1), (2, 3)]
    assert first.not_represented == (4, 5, 6, 7, 8)

    new_index = {int(old): new for new, old in enumerate(order)}
    by_name = {factor.polytope: factor.features for factor in second.factors}
    assert by_name == {
        "pentagon": tuple(sorted(new_index[f] for f in range(5))),
        "digon": tuple(sorted(new_index[f] for f in (5, 6))),
        "dedicated": (new_index[7],),
    }
    assert second.not_represented == (new_index[8],)

    counts = polytope_counts([first, second])
    assert counts.shape == (2, len(FACTOR_NAMES))
    column = {name: k for k, name in enumerate(FACTOR_NAMES)}
    assert counts[0, column["digon"]] == 2 and counts[0].sum() == 2
    assert counts[1, column["pentagon"]] == counts[1, column["digon"]] == 1
    assert counts[1, column["dedicated"]] == 1 and counts[1].sum() == 3


def test_noisy_pentagon_still_matches():
    rng = np.random.default_rng(0)
    W = _polygon(5) * (1 + 0.02 * rng.normal(size=5)) + 0.01 * rng.normal(size=(2, 5))
    factor = _only_factor(W)
    assert factor.polytope == "pentagon"
    assert factor.fraction == pytest.approx(0.4, abs=0.02)


def test_unmatched_factor_is_other():
    # A square in the plane: fraction 1/2 like a digon, but four features, and the two
    # antipodal pairs are orthogonal so they split into two digons instead.
    assert [f.polytope for f in tegum_decomposition(_polygon(4))[0].factors] == ["digon"] * 2
    # Four features at 0°, 45°, 90°, 135°: one factor of fraction 1/2 with 4 features.
    factor = _only_factor(_polygon(8)[:, :4])
    assert factor.fraction == pytest.approx(0.5)
    assert factor.polytope == OTHER


def test_nothing_represented():
    (decomposition,) = tegum_decomposition(np.zeros((2, 3)))
    assert decomposition.factors == ()
    assert decomposition.not_represented == (0, 1, 2)
    assert polytope_counts([decomposition]).sum() == 0


@pytest.mark.parametrize(
    ("fraction", "name"),
    [
        (1.0, "dedicated"),
        (0.76, "tetrahedron"),
        (0.66, "triangle"),
        (0.5, "digon"),
        (0.405, "pentagon"),
        (0.37, "square antiprism"),
        (0.01, "not represented"),
        (0.3, OTHER),
        (0.58, OTHER),
    ],
)
def test_match_polytope(fraction, name):
    assert match_polytope(fraction) == name


def test_bad_input():
    with pytest.raises(ValueError, match="W must be shaped"):
        tegum_decomposition(np.zeros(3))
    with pytest.raises(TypeError, match="W must be a tensor, array or ToyModel"):
        tegum_decomposition([[1.0]])
    with pytest.raises(ValueError, match="overlap_threshold must lie in"):
        tegum_decomposition(np.eye(2), overlap_threshold=1.5)
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        match_polytope(0.5, tolerance=0)
