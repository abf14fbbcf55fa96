"""The sparse-feature distribution, :class:`SparseFeatures` (see :mod:`superpose.data`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from superpose._checks import (
    ArrayLike,
    broadcast_instances,
    make_generator,
    per_instance_feature,
    positive_int,
    resolve_device,
)
from superpose.data.dense import draw_dense
from superpose.data.firing import compile_firing
from superpose.data.magnitudes import MAGNITUDES, InverseCDF
from superpose.data.sampling import CompactBatch
from superpose.data.sparse import Run, compact_batch, plan_runs, sparse_pays, sparse_tensor
from superpose.data.structure import Hierarchy, LowRankCorrelation

_TINY = torch.finfo(torch.float32).tiny


class SparseFeatures:
    """Seeded generator of sparse feature vectors shaped ``(instance, batch, n_features)``: a
    :class:`~superpose.data.BatchSource`.

    The distribution is data (the attributes below); drawing is left to the sampling
    strategies it delegates to: :mod:`~superpose.data.dense` (one uniform per element) and
    :mod:`~superpose.data.sparse` (only the active entries of independent features).

    Args:
        n_features: number of features ``n``.
        feature_probability: probability that a feature is active (``1 - S``), in ``[0, 1]``,
            broadcast to ``(instance, n_features)`` like numpy: a scalar, ``(n_features,)``
            per feature (shared by all instances), ``(instance, 1)`` per instance (e.g.
            ``(20 ** -torch.linspace(0, 1, n_instances))[:, None]``) or
            ``(instance, n_features)``.
        magnitude: name from :data:`MAGNITUDES` or an inverse CDF mapping uniform ``[0, 1)``
            numbers to magnitudes (applied elementwise).
        correlated_sets: disjoint lists of feature indices; the features of a set are active
            together (one draw per set; their probabilities must be equal). Magnitudes stay
            independent.
        anticorrelated_sets: disjoint lists of feature indices; at most one feature of a set is
            active at a time. Feature ``j`` keeps its marginal probability ``p_j``, so the sum
            of a set's probabilities must be at most 1.
        hierarchy: a :class:`Hierarchy`; a child fires only when its parent fires, and its
            ``feature_probability`` is conditional on the parent firing. Children cannot be
            in ``correlated_sets`` or ``anticorrelated_sets`` (use ``Hierarchy.exclusive`` for
            siblings); roots and parents can. With ``Hierarchy.parent_scale`` a child's
            magnitude is scaled by its parent's.
        correlation: a :class:`LowRankCorrelation` coupling the features' firing while each
            keeps its probability. Not combinable with ``correlated_sets`` or
            ``anticorrelated_sets``. With a hierarchy it couples every feature's own draw
            (roots keep their probability exactly; a child's marginal then also depends on
            its correlation with its ancestors) except exclusive siblings, whose shared
            draw stays independent.
        n_samples: if given, a finite data set of this many fixed samples is drawn once (for
            memorization studies) and :meth:`sample` returns rows of it.
        n_instances: instances of the finite data set (default: the instance count of
            ``feature_probability``; one shared set if that is 1). Ignored for infinite data,
            where :meth:`sample` draws independent data for as many instances as asked.
        normalize: rescale every sample to unit L2 norm (``x / ‖x‖``, as in the memorization
            and double-descent study), for the finite data set and fresh draws alike. A sample
            with no active feature stays all zero.
        seed: int or ``torch.Generator`` for the default random stream; the same seed gives
            the same batches. None: torch's global generator, which ``torch.manual_seed``
            sets.
        device: where batches are created.

    Example:
        >>> data = SparseFeatures(n_features=5, feature_probability=0.05, seed=0)
        >>> data.sample(batch_size=3, n_instances=2).shape
        torch.Size([2, 3, 5])
    """

    def __init__(
        self,
        n_features: int,
        feature_probability: ArrayLike = 1.0,
        *,
        magnitude: str | InverseCDF = "uniform",
        correlated_sets: Sequence[Sequence[int]] = (),
        anticorrelated_sets: Sequence[Sequence[int]] = (),
        hierarchy: Hierarchy | None = None,
        correlation: LowRankCorrelation | None = None,
        n_samples: int | None = None,
        n_instances: int | None = None,
        normalize: bool = False,
        seed: int | torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        self.n_features = positive_int("n_features", n_features)
        self.device = resolve_device(device)
        self.feature_probability = per_instance_feature(
            "feature_probability", feature_probability, self.n_features, low=0.0, high=1.0
        ).to(self.device)
        """``(instance or 1, n_features)`` probability that each feature fires (a hierarchy
        child's conditional on its parent firing)."""
        if isinstance(magnitude, str):
            if magnitude not in MAGNITUDES:
                raise ValueError(
                    f"magnitude must be one of {sorted(MAGNITUDES)} or a callable, "
                    f"got {magnitude!r}"
                )
            self.magnitude_name = magnitude
            self.inverse_cdf = MAGNITUDES[magnitude]
        elif callable(magnitude):
            self.magnitude_name = getattr(magnitude, "__name__", "custom")
            self.inverse_cdf = magnitude
        else:
            raise TypeError(f"magnitude must be a name or a callable, got {magnitude!r}")
        self.hierarchy = hierarchy
        self.correlation = correlation
        self.firing = compile_firing(
            self.feature_probability, correlated_sets, anticorrelated_sets, hierarchy, correlation
        )
        """How the features fire together, compiled (:class:`~superpose.data.firing.Firing`)."""
        self.correlated_sets = self.firing.correlated_sets
        self.anticorrelated_sets = self.firing.anticorrelated_sets
        self.marginal_probability = self.firing.marginal(self.feature_probability)
        """``(instance or 1, n_features)`` probability that each feature fires: equals
        ``feature_probability`` except for hierarchy children (the product along the ancestry;
        exact without ``correlation``)."""
        self._run_plans: dict[tuple[int | None, int, str], list[Run]] = {}
        self.generator = make_generator(seed, self.device)
        """The stream draws use when given none (torch's global one without a seed)."""
        self.n_samples = None if n_samples is None else positive_int("n_samples", n_samples)
        """Rows of the finite data set, or None for fresh data."""
        self.dataset: torch.Tensor | None = None
        """The finite data set ``(instance, n_samples, n_features)``, or None."""
        if self.n_samples is not None:
            instances = self.feature_probability.shape[0] if n_instances is None else n_instances
            instances = positive_int("n_instances", instances)
            self.dataset = self.draw(self.n_samples, instances, self.generator)

    @property
    def is_finite(self) -> bool:
        """Whether batches come from a fixed finite data set."""
        return self.dataset is not None

    @property
    def independent(self) -> bool:
        """Whether every feature fires independently with a named magnitude (no sets,
        hierarchy or correlation; ``magnitude`` from :data:`MAGNITUDES`): then sampling only
        the active features (:meth:`sample_sparse`) is exact."""
        named = any(self.inverse_cdf is magnitude for magnitude in MAGNITUDES.values())
        return self.firing.independent and named

    def generators(self, generator: torch.Generator | None = None) -> list[torch.Generator]:
        """The generators that a draw with ``generator`` advances: ``[generator]``, or
        ``[self.generator]`` for None (the trainer registers them with a CUDA graph, which
        then advances them on every replay, and saves them in checkpoints)."""
        return [self.generator if generator is None else generator]

    def sample(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw a batch shaped ``(instance, batch_size, n_features)``.

        Args:
            batch_size: rows per instance. For a finite data set, ``None`` returns the whole set
                and an int draws that many rows with replacement.
            n_instances: instances to draw for (default: the instance count of
                ``feature_probability``, or of the finite data set).
            generator: random stream to use instead of the generator's own (the trainer passes
                one so that a training run is reproducible from its seed).
        """
        generator = self.generator if generator is None else generator
        if self.dataset is not None:
            data = (
                self.dataset
                if n_instances is None
                else broadcast_instances(
                    "the finite data set", self.dataset, positive_int("n_instances", n_instances)
                )
            )
            if batch_size is None:
                return data
            rows = torch.randint(
                self.n_samples,
                (positive_int("batch_size", batch_size),),
                generator=generator,
                device=generator.device,
            )
            return data[:, rows.to(data.device)]
        if batch_size is None:
            raise ValueError(
                "batch_size=None (the whole data set) needs a finite data set (n_samples=...)"
            )
        instances = self.feature_probability.shape[0] if n_instances is None else n_instances
        return self.draw(
            positive_int("batch_size", batch_size),
            positive_int("n_instances", instances),
            generator,
        )

    def draw(
        self, batch_size: int, n_instances: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Fresh samples ``(n_instances, batch_size, n_features)`` from the distribution,
        ignoring any finite data set (held-out evaluation uses this); unit-norm rows when
        ``normalize``. ``generator``: as in :meth:`sample`."""
        generator = self.generator if generator is None else generator
        probability = broadcast_instances(
            "feature_probability", self.feature_probability, n_instances
        ).to(generator.device)
        x = draw_dense(self, probability[:, None, :], batch_size, generator).contiguous()
        if self.normalize:  # an all-zero row divides by ``tiny`` and stays zero
            x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(_TINY))
        return x

    def sample_rows(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
        sparse: bool = True,
    ) -> CompactBatch:
        """A batch as a :class:`CompactBatch` (arguments as :meth:`sample`); the trainer
        draws its batches here.

        For :attr:`independent` features on infinite data, runs of consecutive instances in
        :meth:`sparse_instances` are drawn sparsely and keep only their non-empty rows
        (:func:`superpose.data.sparse.compact_batch`), where the run is large enough to pay
        and ``sparse`` is True (the trainer's CUDA graphs need the same shapes every step);
        the other instances are drawn densely as by :meth:`draw`. The distribution is
        :meth:`sample`'s, but a seed gives other numbers than :meth:`sample` where an
        instance is drawn sparsely. Otherwise this is :meth:`sample`'s batch. Batches of at
        most :data:`~superpose.data.sampling.FEATURE_MAJOR` features are feature-major views.
        """
        generator = self.generator if generator is None else generator
        if not self._draws_active or batch_size is None:
            return CompactBatch.of(self.sample(batch_size, n_instances, generator))
        batch_size = positive_int("batch_size", batch_size)
        if not sparse:  # reads no device values: a CUDA graph can record it
            probability = self._instance_probability(n_instances).to(generator.device)
            return CompactBatch.of(draw_dense(self, probability[:, None], batch_size, generator))
        runs = self._runs(n_instances, batch_size, generator.device)
        return compact_batch(self, runs, batch_size, generator)

    def sample_sparse(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A batch as a sparse COO tensor ``(instance, batch_size, n_features)`` holding only
        the active features (arguments as :meth:`sample`).

        For :attr:`independent` features on infinite data the active entries are drawn
        directly (:func:`superpose.data.sparse.sparse_tensor`: one uniform per active entry
        for its magnitude, none for ``"constant"``): the same distribution as
        :meth:`sample`'s, at a cost proportional to the active entries. Otherwise (also with
        ``normalize``) the dense batch is converted. The result is coalesced (entries sorted
        by instance, row and feature).
        """
        generator = self.generator if generator is None else generator
        if not self._draws_active:
            return self.sample(batch_size, n_instances, generator).to_sparse()
        probability = self._instance_probability(n_instances)
        batch_size = positive_int("batch_size", batch_size)
        return sparse_tensor(self, probability, batch_size, generator)

    def sparse_instances(self, n_instances: int | None = None) -> torch.Tensor:
        """``(n_instances,)`` bool: the instances for which :meth:`sample_sparse` pays (the SAE
        sources then use it), those of :attr:`independent` features whose mean firing
        probability is below 3 % (:func:`superpose.data.sparse.sparse_pays`)."""
        return sparse_pays(self._instance_probability(n_instances), self.independent)

    @property
    def _draws_active(self) -> bool:
        """Whether fresh batches can be drawn as their active entries alone: infinite data of
        :attr:`independent` features, not rescaled (:meth:`sample_sparse`, :meth:`sample_rows`)."""
        return self.dataset is None and not self.normalize and self.independent

    def _instance_probability(self, n_instances: int | None) -> torch.Tensor:
        """``feature_probability`` broadcast to ``(n_instances, n_features)`` (default: its own
        instance count)."""
        instances = self.feature_probability.shape[0] if n_instances is None else n_instances
        return broadcast_instances(
            "feature_probability", self.feature_probability, positive_int("n_instances", instances)
        )

    def _runs(self, n_instances: int | None, batch_size: int, device: torch.device) -> list[Run]:
        """:meth:`sample_rows`' plan (:func:`superpose.data.sparse.plan_runs`) on ``device``,
        made once per instance count, batch size and device: ``feature_probability`` is fixed
        at construction."""
        key = (n_instances, batch_size, str(device))
        if key not in self._run_plans:
            probability = self._instance_probability(n_instances).to(device)
            flags = self.sparse_instances(n_instances).tolist()
            self._run_plans[key] = plan_runs(probability, flags, batch_size)
        return self._run_plans[key]
