"""Structure among features beyond independent firing: a :class:`Hierarchy` gates children on
their parents (siblings optionally mutually exclusive), and :class:`LowRankCorrelation`
correlates firing through a Gaussian copula while keeping every feature's marginal
probability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from superpose._checks import ArrayLike, as_float_tensor, finite_real, make_generator, positive_int


@dataclass(frozen=True)
class Hierarchy:
    """Parent-child structure of the features: a child can fire only when its parent fires.

    Args:
        parent: ``(n_features,)`` parent index of every feature, ``-1`` for a root. Trees of any
            depth; no cycles.
        exclusive: whether the children of a parent are mutually exclusive (at most one fires
            at a time): ``True`` for every parent, ``False`` for none, or the parents' indices.
        parent_scale: None (the default: children keep their own magnitudes), or each
            feature's reference magnitude, a scalar or ``(n_features,)``, positive for every
            parent: an active child's magnitude is then multiplied by its parent's magnitude
            divided by the parent's reference, depth by depth from the roots (a grandchild by
            its parent's already scaled magnitude), so children of a weakly firing parent fire
            weakly too. SAELens's ``scale_children_by_parent`` (SynthSAEBench-16k) is this
            with the parents' ``mean_firing_magnitudes`` as references (for magnitudes
            ``max(0, N(μ, σ²))``, the ``μ``); firing is unchanged.

    In :class:`SparseFeatures`, a child's ``feature_probability`` is its probability
    *conditional on its parent firing* (as in SAELens's hierarchy modifier, which follows
    Nabeshima's Matryoshka-SAE toy model), so its marginal probability is the product of the
    conditional probabilities along its ancestry (:attr:`SparseFeatures.marginal_probability`).
    Without correlation the child's own draw is independent of everything else, so these
    products are exact; to prescribe marginal probabilities instead (a Zipf profile, say),
    pass :meth:`conditional_probability` of them.

    Exclusive siblings share one uniform draw whose value picks at most one of them (windows
    tiling ``[0, Σ p)``, like ``anticorrelated_sets``), so each keeps its conditional probability
    exactly; their conditional probabilities must sum to at most 1. (SAELens instead draws
    siblings independently and keeps one at random, which lowers their probabilities.)
    Mutually exclusive roots are ``anticorrelated_sets``.
    """

    parent: Sequence[int]
    exclusive: bool | Sequence[int] = False
    parent_scale: ArrayLike | None = None

    def depth(self, n_features: int) -> list[int]:
        """Depth of each of the ``n_features`` features (0 for roots), after checking that
        ``parent`` has that many valid entries and no cycle (ValueError otherwise)."""
        parent = [int(i) for i in self.parent]
        if len(parent) != n_features:
            raise ValueError(
                f"hierarchy: parent must have n_features={n_features} entries, got {len(parent)}"
            )
        if any(not -1 <= i < n_features for i in parent):
            raise ValueError(
                f"hierarchy: parent indices must be -1 (root) or lie in "
                f"[0, {n_features - 1}], got {sorted(set(parent))}"
            )
        depth = [-1] * len(parent)
        for feature in range(len(parent)):
            path = []
            node = feature
            while node != -1 and depth[node] < 0:
                if node in path:
                    raise ValueError(f"hierarchy: the parents form a cycle through {path}")
                path.append(node)
                node = parent[node]
            base = -1 if node == -1 else depth[node]
            for offset, visited in enumerate(reversed(path), start=1):
                depth[visited] = base + offset
        return depth

    def reference_magnitude(self, n_features: int) -> torch.Tensor | None:
        """``parent_scale`` as an ``(n_features,)`` float32 tensor (None without one), after
        checking the hierarchy (:meth:`depth`) and that it is finite, shaped as a scalar or
        ``(n_features,)`` and positive at every parent (ValueError or TypeError otherwise)."""
        self.depth(n_features)
        if self.parent_scale is None:
            return None
        scale = as_float_tensor("hierarchy: parent_scale", self.parent_scale)
        if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] != n_features):
            raise ValueError(
                f"hierarchy: parent_scale must be a scalar or (n_features={n_features},), "
                f"got shape {tuple(scale.shape)}"
            )
        scale = scale.expand(n_features).clone()
        parents = sorted({int(i) for i in self.parent} - {-1})
        if (scale[parents] <= 0).any():
            bad = [i for i in parents if scale[i] <= 0]
            raise ValueError(f"hierarchy: parent_scale must be > 0 for every parent, not {bad}")
        return scale

    def conditional_probability(self, marginal: ArrayLike) -> torch.Tensor:
        """The ``feature_probability`` that makes the features fire with probabilities
        ``marginal``: every child's marginal divided by its parent's.

        Args:
            marginal: ``(n_features,)`` or ``(instance, n_features)`` target probabilities
                in ``[0, 1]``; a child's may not exceed its parent's.

        Returns:
            The conditional probabilities, shaped like ``marginal`` (pass a 1-D result as
            ``[None, :]``). Exact without ``correlation``; exclusive siblings must still sum
            to at most 1, which :class:`SparseFeatures` checks. This plays the role of
            SynthSAEBench's ``compensate_probabilities``, exactly and without clamping.
        """
        tensor = as_float_tensor("marginal", marginal)
        if tensor.ndim not in (1, 2):
            raise ValueError(
                f"marginal must be (n_features,) or (instance, n_features), "
                f"got shape {tuple(tensor.shape)}"
            )
        self.depth(tensor.shape[-1])
        parent = torch.tensor([int(i) for i in self.parent], dtype=torch.long)
        if (tensor < 0).any() or (tensor > 1).any():
            raise ValueError("marginal must lie in [0, 1]")
        has_parent = parent >= 0
        parent_marginal = tensor[..., parent.clamp_min(0)]
        too_likely = has_parent & (tensor > parent_marginal * (1 + 1e-6))
        if too_likely.any():
            children = sorted({int(i) for i in too_likely.nonzero()[:, -1]})
            raise ValueError(
                f"marginal: children {children} would fire more often than their parents"
            )
        tiny = torch.finfo(tensor.dtype).tiny
        conditional = torch.where(has_parent, tensor / parent_marginal.clamp_min(tiny), tensor)
        return conditional.clamp_max(1.0)


@dataclass(frozen=True)
class LowRankCorrelation:
    """Correlated firing through a Gaussian copula with a low-rank correlation matrix.

    Args:
        factor: ``(n_features, rank)`` shared by all instances, or
            ``(instance, n_features, rank)``: the latent correlation matrix is
            ``R = F Fᵀ + diag(1 - Σ_k F_ik²)`` (unit diagonal); every row needs ``Σ_k F_ik² < 1``.

    Each sample draws ``g ~ N(0, I_rank)``; feature ``i`` fires when
    ``z_i = F_i·g + sqrt(1 - Σ_k F_ik²)·ε_i < Φ⁻¹(p_i)`` with independent ``ε_i ~ N(0, 1)``.
    As ``z_i ~ N(0, 1)``, every feature keeps its firing probability ``p_i`` exactly, and two
    features fire together with probability ``Φ₂(Φ⁻¹(p_i), Φ⁻¹(p_j); R_ij)``. This is the
    low-rank copula of SynthSAEBench (SAELens ``LowRankCorrelationMatrix``). Given ``g`` the
    features are independent, so :class:`SparseFeatures` only draws ``g`` and thresholds each
    feature's own uniform at ``Φ((Φ⁻¹(p_i) - F_i·g) / sqrt(1 - Σ_k F_ik²))``; magnitudes stay
    independent of the firing pattern.
    """

    factor: torch.Tensor

    @classmethod
    def random(
        cls,
        n_features: int,
        rank: int,
        scale: float = 0.1,
        seed: int | torch.Generator | None = None,
    ) -> LowRankCorrelation:
        """A random factor with entries ``N(0, scale²)`` (SynthSAEBench: rank 25, scale 0.1)."""
        n_features = positive_int("n_features", n_features)
        rank = positive_int("rank", rank)
        scale = finite_real("scale", scale)
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        generator = make_generator(seed)
        factor = scale * torch.randn(n_features, rank, generator=generator)
        return cls(factor)

    def checked_factor(self, n_features: int) -> torch.Tensor:
        """The factor as ``(instance or 1, n_features, rank)`` float32, validated."""
        factor = as_float_tensor("correlation factor", self.factor)
        if factor.ndim == 2:
            factor = factor[None]
        if factor.ndim != 3 or factor.shape[1] != n_features or factor.shape[2] == 0:
            raise ValueError(
                f"correlation factor must be shaped (n_features={n_features}, rank) or "
                f"(instance, n_features, rank), got {tuple(self.factor.shape)}"
            )
        shared = factor.pow(2).sum(-1)
        if (shared >= 1).any():
            raise ValueError(
                "correlation factor: every row needs sum of squares < 1 (the feature's "
                f"independent part); got a maximum of {shared.max().item():g} "
                "(use a smaller scale or rank)"
            )
        return factor.contiguous()

    def matrix(self) -> torch.Tensor:
        """The latent correlation matrix ``(instance or 1, n_features, n_features)``."""
        factor = self.checked_factor(torch.as_tensor(self.factor).shape[-2])
        shared = factor @ factor.mT
        residual = 1 - factor.pow(2).sum(-1)
        return shared + torch.diag_embed(residual)
