"""The geometry of superposition: feature-dimensionality fractions and the polytopes they mean.

TMS ("The geometry of superposition") finds that trained features sit in *tegum factors*:
groups of features whose directions are orthogonal to every other group, each group a regular
polytope. A feature's dimensionality ``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²`` (see
:func:`superpose.analysis.feature_dimensionality`) is then the polytope's "sticky" fraction:
dimensions spanned / features, e.g. 2/5 for each vertex of a pentagon in a plane.

Weights come in as ``W: (instance, n_hidden, n_features)`` (or ``(n_hidden, n_features)``), a
numpy array, torch tensor or :class:`~superpose.models.ToyModel`; results are plain Python
dataclasses and numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components

from superpose.analysis import REPRESENTED_NORM, feature_dimensionality
from superpose.models import ToyModel


@dataclass(frozen=True)
class Polytope:
    """A regular polytope a tegum factor can form.

    Attributes:
        name: e.g. ``"pentagon"``.
        n_features: its vertices, one feature each.
        n_dimensions: the dimensions it spans.
    """

    name: str
    n_features: int
    n_dimensions: int

    @property
    def fraction(self) -> float:
        """Dimensionality of each of its features: ``n_dimensions / n_features``."""
        return self.n_dimensions / self.n_features


POLYTOPES = (
    Polytope("dedicated", 1, 1),
    Polytope("tetrahedron", 4, 3),
    Polytope("triangle", 3, 2),
    Polytope("digon", 2, 1),
    Polytope("pentagon", 5, 2),
    Polytope("square antiprism", 8, 3),
)
"""The polytopes TMS finds, by decreasing fraction: 1, 3/4, 2/3, 1/2, 2/5, 3/8."""

NOT_REPRESENTED = "not represented"
"""Name of fraction 0: a feature with ``‖W_i‖ ≤`` the representation threshold."""

OTHER = "other"
"""Name of a factor that matches no polytope."""

FACTOR_NAMES = (*(polytope.name for polytope in POLYTOPES), OTHER)
"""Column names of :func:`polytope_counts`: the polytopes, then :data:`OTHER`."""


def match_polytope(fraction: float, tolerance: float = 0.02) -> str:
    """Name of the sticky fraction nearest to ``fraction`` if within ``tolerance``, else "other".

    The fractions are those of :data:`POLYTOPES` plus 0 (:data:`NOT_REPRESENTED`). The two
    closest, 2/5 and 3/8, are 0.025 apart; :func:`tegum_decomposition` also checks the number
    of features, which tells them apart.
    """
    if not 0 < tolerance:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    names = (*(polytope.name for polytope in POLYTOPES), NOT_REPRESENTED)
    fractions = np.array([*(polytope.fraction for polytope in POLYTOPES), 0.0])
    distance = np.abs(fractions - float(fraction))
    nearest = int(distance.argmin())
    return names[nearest] if distance[nearest] <= tolerance else OTHER


@dataclass(frozen=True)
class TegumFactor:
    """One group of mutually interfering features, orthogonal to all other groups.

    Attributes:
        features: feature indices, ascending.
        dimensionality: each feature's ``D_i``, in the same order.
        fraction: the mean ``D_i`` (dimensions spanned per feature).
        polytope: the matched :data:`POLYTOPES` name, or :data:`OTHER` when the fraction is
            not within tolerance of one or the feature count is not the polytope's.
    """

    features: tuple[int, ...]
    dimensionality: tuple[float, ...]
    fraction: float
    polytope: str


@dataclass(frozen=True)
class TegumDecomposition:
    """The features of one instance split into tegum factors.

    Attributes:
        factors: the factors, ordered by their smallest feature index.
        not_represented: features with ``‖W_i‖`` at or below the threshold, ascending.
    """

    factors: tuple[TegumFactor, ...]
    not_represented: tuple[int, ...]


def _as_weights(W: torch.Tensor | np.ndarray | ToyModel) -> np.ndarray:
    """``W`` as a float64 array ``(instance, n_hidden, n_features)``."""
    if isinstance(W, ToyModel):
        W = W.W
    if isinstance(W, torch.Tensor):
        W = W.detach().to("cpu", torch.float64).numpy()
    if not isinstance(W, np.ndarray):
        raise TypeError(f"W must be a tensor, array or ToyModel, got {type(W).__name__}")
    W = W.astype(np.float64)
    if W.ndim == 2:
        W = W[None]
    if W.ndim != 3:
        raise ValueError(
            "W must be shaped (instance, n_hidden, n_features) or (n_hidden, n_features), "
            f"got {W.shape}"
        )
    return W


def tegum_decomposition(
    W: torch.Tensor | np.ndarray | ToyModel,
    *,
    norm_threshold: float = REPRESENTED_NORM,
    overlap_threshold: float = 0.1,
    tolerance: float = 0.02,
) -> list[TegumDecomposition]:
    """Split each instance's represented features into tegum factors and match polytopes.

    Features with ``‖W_i‖ > norm_threshold`` are represented; two of them interfere when
    ``|Ŵ_i · Ŵ_j| > overlap_threshold``; the factors are the connected components of that
    graph (so a factor's features need not all overlap pairwise, as in a square antiprism).
    A factor matches a polytope when its mean ``D_i`` is within ``tolerance`` of the
    polytope's fraction (:func:`match_polytope`) and it has the polytope's number of features.

    Args:
        W: ``(instance, n_hidden, n_features)`` or ``(n_hidden, n_features)``.
        norm_threshold: ``≥ 0``; trained norms are ~0 or ~1.
        overlap_threshold: cosine in ``[0, 1)`` above which two features interfere.
        tolerance: ``> 0``, on the factor's mean dimensionality.

    Returns:
        one :class:`TegumDecomposition` per instance.
    """
    if norm_threshold < 0:
        raise ValueError(f"norm_threshold must be >= 0, got {norm_threshold}")
    if not 0 <= overlap_threshold < 1:
        raise ValueError(f"overlap_threshold must lie in [0, 1), got {overlap_threshold}")
    if not 0 < tolerance:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    W = _as_weights(W)
    norms = np.linalg.norm(W, axis=1)  # (instance, n_features)
    unit = W / np.maximum(norms, 1e-12)[:, None, :]
    cosine = np.abs(np.einsum("ihf,ihg->ifg", unit, unit))  # (instance, n_features, n_features)
    dimensionality = feature_dimensionality(torch.from_numpy(W)).double().numpy()
    vertices = {polytope.name: polytope.n_features for polytope in POLYTOPES}

    decompositions = []
    for i in range(W.shape[0]):
        represented = np.flatnonzero(norms[i] > norm_threshold)
        graph = cosine[i][np.ix_(represented, represented)] > overlap_threshold
        _, component = connected_components(graph, directed=False)
        factors = []
        for label in np.unique(component):  # in order of each component's first feature
            features = represented[component == label]
            values = dimensionality[i, features]
            fraction = float(values.mean())
            name = match_polytope(fraction, tolerance)
            if vertices.get(name) != len(features):
                name = OTHER
            factors.append(
                TegumFactor(
                    features=tuple(int(f) for f in features),
                    dimensionality=tuple(float(v) for v in values),
                    fraction=fraction,
                    polytope=name,
                )
            )
        not_represented = np.flatnonzero(norms[i] <= norm_threshold)
        decompositions.append(
            TegumDecomposition(
                factors=tuple(factors),
                not_represented=tuple(int(f) for f in not_represented),
            )
        )
    return decompositions


def polytope_counts(decompositions: list[TegumDecomposition]) -> np.ndarray:
    """Factors of each kind per instance: ``(instance, len(FACTOR_NAMES))`` integers.

    Column ``k`` counts the factors named ``FACTOR_NAMES[k]`` (a pentagon counts once, not
    five times); the number of unrepresented features is each decomposition's
    ``len(not_represented)``.
    """
    column = {name: k for k, name in enumerate(FACTOR_NAMES)}
    counts = np.zeros((len(decompositions), len(FACTOR_NAMES)), dtype=np.int64)
    for i, decomposition in enumerate(decompositions):
        for factor in decomposition.factors:
            counts[i, column[factor.polytope]] += 1
    return counts
