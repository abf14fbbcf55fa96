"""How the features of a :class:`~superpose.data.SparseFeatures` fire together, validated and
compiled once into the tensors its dense sampler reads (:mod:`superpose.data.dense`):
correlated and anticorrelated sets, a :class:`~superpose.data.Hierarchy` and a
:class:`~superpose.data.LowRankCorrelation`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from superpose.data.structure import Hierarchy, LowRankCorrelation


@dataclass(frozen=True)
class Firing:
    """The firing structure of a distribution, as tensors (see :func:`compile_firing`).

    Attributes:
        correlated_sets: disjoint lists of feature indices that fire together.
        anticorrelated_sets: disjoint lists of feature indices of which at most one fires.
        levels: the hierarchy's ``(children, parents)`` index pairs, each ``(k,)``, by depth
            (shallowest first): a child fires only when its parent fires.
        parent_scale: ``(n_features,)`` the hierarchy's reference magnitudes
            (:attr:`~superpose.data.Hierarchy.parent_scale`), or None: a child's magnitude
            is multiplied by its parent's (already scaled) over the parent's reference.
        set_index: ``(n_features,)`` each feature's set (``-1`` for none), or None without
            sets. The sets are the correlated sets, then the anticorrelated ones, then the
            hierarchy's groups of exclusive siblings; each set draws one uniform ``w``.
        lower: ``(instance or 1, 1, n_features)`` with ``upper``, each set member's activity
            window as multiples of its probability ``p``: it fires when ``w`` lies in
            ``[lower·p, upper·p)``. For a correlated set the window is ``[0, p)`` for every
            member; for an anticorrelated set (or exclusive siblings) the windows tile
            ``[0, Σ p)``. Empty without sets.
        upper: see ``lower``.
        n_sets: the number of sets (read once here, never while sampling: a sampler that
            reads a device tensor's value waits for the GPU and cannot be recorded in a CUDA
            graph).
        factor: the copula's factor ``(instance or 1, n_features, rank)``, or None.
        residual: ``(instance or 1, 1, n_features)`` the scale of each feature's own part of
            the copula, ``sqrt(1 - Σ_k F_ik²)``, or None.
        independent: no sets, hierarchy or copula: every feature fires on its own.
        shared_probability: every feature of an instance has the same probability (the dense
            sampler then broadcasts one number per instance).
    """

    correlated_sets: list[list[int]]
    anticorrelated_sets: list[list[int]]
    levels: list[tuple[torch.Tensor, torch.Tensor]]
    parent_scale: torch.Tensor | None
    set_index: torch.Tensor | None
    lower: torch.Tensor
    upper: torch.Tensor
    n_sets: int
    factor: torch.Tensor | None
    residual: torch.Tensor | None
    independent: bool
    shared_probability: bool

    def marginal(self, probability: torch.Tensor) -> torch.Tensor:
        """``(instance or 1, n_features)`` probability that each feature fires, from
        ``probability`` of the same shape: hierarchy children's conditional probabilities
        multiplied along their ancestry (exact without a copula)."""
        marginal = probability.clone()
        for children, parents in self.levels:
            marginal[:, children] *= marginal[:, parents]
        return marginal


def compile_firing(
    probability: torch.Tensor,
    correlated_sets: Sequence[Sequence[int]],
    anticorrelated_sets: Sequence[Sequence[int]],
    hierarchy: Hierarchy | None,
    correlation: LowRankCorrelation | None,
) -> Firing:
    """Validate a distribution's structure and compile it; the tensors go to
    ``probability``'s device.

    Args:
        probability: ``(instance or 1, n_features)`` feature probabilities (a hierarchy
            child's conditional on its parent).
        correlated_sets: see :class:`~superpose.data.SparseFeatures`.
        anticorrelated_sets: see :class:`~superpose.data.SparseFeatures`.
        hierarchy: a :class:`~superpose.data.Hierarchy` or None.
        correlation: a :class:`~superpose.data.LowRankCorrelation` or None.

    Raises:
        ValueError, TypeError: a set that is too small, out of range or not disjoint; a
            hierarchy child in a set; a bad ``parent_scale``; exclusive or anticorrelated
            probabilities summing above 1; unequal probabilities in a correlated set; a
            copula combined with sets or of the wrong shape.
    """
    n_features = probability.shape[-1]
    correlated = _check_sets("correlated_sets", correlated_sets, n_features, [])
    anticorrelated = _check_sets("anticorrelated_sets", anticorrelated_sets, n_features, correlated)
    levels, exclusive = _hierarchy_layout(hierarchy, n_features, correlated + anticorrelated)
    parent_scale = None if hierarchy is None else hierarchy.reference_magnitude(n_features)
    exclusive = [("anticorrelated_sets", group) for group in anticorrelated] + [
        ("hierarchy: exclusive siblings", group) for group in exclusive
    ]
    set_index, lower, upper = _set_layout(probability, correlated, exclusive)
    factor, residual = _correlation_layout(correlation, probability, correlated + anticorrelated)
    device = probability.device
    return Firing(
        correlated_sets=correlated,
        anticorrelated_sets=anticorrelated,
        levels=[(children.to(device), parents.to(device)) for children, parents in levels],
        parent_scale=None if parent_scale is None else parent_scale.to(device),
        set_index=None if set_index is None else set_index.to(device),
        lower=lower.to(device),
        upper=upper.to(device),
        n_sets=0 if set_index is None else int(set_index.max()) + 1,
        factor=None if factor is None else factor.to(device),
        residual=None if residual is None else residual.to(device),
        independent=set_index is None and hierarchy is None and factor is None,
        shared_probability=bool((probability == probability[..., :1]).all()),
    )


def _check_sets(
    name: str, sets: Sequence[Sequence[int]], n_features: int, taken: list[list[int]]
) -> list[list[int]]:
    """``sets`` as lists of ints, each of at least 2 features in range, disjoint from each
    other and from ``taken``."""
    seen = {i for group in taken for i in group}
    checked = []
    for group in sets:
        group = [int(i) for i in group]
        if len(group) < 2:
            raise ValueError(f"{name}: each set needs at least 2 features, got {group}")
        if any(not 0 <= i < n_features for i in group):
            raise ValueError(
                f"{name}: feature indices must lie in [0, {n_features - 1}], got {group}"
            )
        if seen.intersection(group) or len(set(group)) != len(group):
            raise ValueError(
                f"{name}: sets must be disjoint (also from the other kind of "
                f"set), feature repeated in {group}"
            )
        seen.update(group)
        checked.append(group)
    return checked


def _hierarchy_layout(
    hierarchy: Hierarchy | None, n_features: int, sets: list[list[int]]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[list[int]]]:
    """Validate the hierarchy against the features in ``sets``; return its ``(children,
    parents)`` index pairs by depth (shallowest first) and the groups of mutually exclusive
    siblings."""
    if hierarchy is None:
        return [], []
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy must be a superpose.data.Hierarchy or None, got {hierarchy!r}")
    depth = hierarchy.depth(n_features)
    parent = [int(i) for i in hierarchy.parent]
    children_in_sets = sorted(i for group in sets for i in group if parent[i] >= 0)
    if children_in_sets:
        raise ValueError(
            f"hierarchy: children {children_in_sets} cannot be in correlated_sets or "
            "anticorrelated_sets (use Hierarchy.exclusive for mutually exclusive siblings)"
        )
    levels = []
    for level in range(1, max(depth) + 1):
        children = [i for i in range(n_features) if depth[i] == level]
        levels.append((torch.tensor(children), torch.tensor([parent[i] for i in children])))
    exclusive = hierarchy.exclusive
    if isinstance(exclusive, bool):
        exclusive_parents = set(parent) - {-1} if exclusive else set()
    else:
        exclusive_parents = {int(i) for i in exclusive}
        if any(not 0 <= i < n_features for i in exclusive_parents):
            raise ValueError(
                f"hierarchy: exclusive parent indices must lie in "
                f"[0, {n_features - 1}], got {sorted(exclusive_parents)}"
            )
    groups = [[i for i in range(n_features) if parent[i] == p] for p in sorted(exclusive_parents)]
    return levels, [group for group in groups if len(group) >= 2]


def _set_layout(
    probability: torch.Tensor,
    correlated: list[list[int]],
    exclusive: list[tuple[str, list[int]]],
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """:attr:`Firing.set_index`, :attr:`Firing.lower` and :attr:`Firing.upper` (on CPU) for
    the ``correlated`` sets and the ``(name, group)`` ``exclusive`` ones."""
    if not correlated and not exclusive:
        return None, torch.zeros(0), torch.zeros(0)
    p = probability.cpu()
    set_index = torch.full((p.shape[-1],), -1, dtype=torch.long)
    lower = torch.zeros(p.shape)
    upper = torch.ones(p.shape)
    for k, group in enumerate(correlated):
        set_index[group] = k
        if not torch.allclose(p[:, group], p[:, group[:1]]):
            raise ValueError(
                f"correlated_sets: features {group} must share one feature_probability"
            )
    for k, (name, group) in enumerate(exclusive):
        set_index[group] = len(correlated) + k
        cumulative = torch.cumsum(p[:, group], dim=1)
        if (cumulative[:, -1] > 1 + 1e-6).any():
            raise ValueError(
                f"{name}: the probabilities of {group} sum to more "
                "than 1, so they cannot be mutually exclusive"
            )
        start = cumulative - p[:, group]
        safe_p = p[:, group].clamp_min(torch.finfo(p.dtype).tiny)
        lower[:, group] = start / safe_p
        upper[:, group] = cumulative / safe_p
    return set_index, lower[:, None], upper[:, None]


def _correlation_layout(
    correlation: LowRankCorrelation | None, probability: torch.Tensor, sets: list[list[int]]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the copula (no ``sets`` beside it); return :attr:`Firing.factor` and
    :attr:`Firing.residual` (on CPU)."""
    if correlation is None:
        return None, None
    if not isinstance(correlation, LowRankCorrelation):
        raise TypeError(
            f"correlation must be a superpose.data.LowRankCorrelation or None, got {correlation!r}"
        )
    if sets:
        raise ValueError(
            "correlation cannot be combined with correlated_sets or anticorrelated_sets "
            "(the copula already sets how features fire together)"
        )
    factor = correlation.checked_factor(probability.shape[-1])
    instances = {factor.shape[0], probability.shape[0]} - {1}
    if len(instances) > 1:
        raise ValueError(
            f"correlation has {factor.shape[0]} instances but feature_probability has "
            f"{probability.shape[0]}"
        )
    residual = (1 - factor.pow(2).sum(-1)).sqrt()[:, None, :]
    return factor, residual
