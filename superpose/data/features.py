"""The sparse-feature generator, :class:`SparseFeatures` (see :mod:`superpose.data`)."""

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
from superpose.data.magnitudes import MAGNITUDES, InverseCDF
from superpose.data.sampling import (
    SPARSE_DENSITY,
    SPARSE_MIN_ELEMENTS,
    CompactBatch,
    below_one,
    bernoulli_positions,
    new_batch,
    row_parts,
    uniform,
)
from superpose.data.structure import Hierarchy, LowRankCorrelation

_TINY = torch.finfo(torch.float32).tiny


class SparseFeatures:
    """Seeded generator of sparse feature vectors shaped ``(instance, batch, n_features)``.

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
            siblings); roots and parents can.
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
        if isinstance(magnitude, str):
            if magnitude not in MAGNITUDES:
                raise ValueError(
                    f"magnitude must be one of {sorted(MAGNITUDES)} or a callable, "
                    f"got {magnitude!r}"
                )
            self.magnitude_name = magnitude
            self._inverse_cdf = MAGNITUDES[magnitude]
        elif callable(magnitude):
            self.magnitude_name = getattr(magnitude, "__name__", "custom")
            self._inverse_cdf = magnitude
        else:
            raise TypeError(f"magnitude must be a name or a callable, got {magnitude!r}")
        self.correlated_sets = self._check_sets("correlated_sets", correlated_sets, [])
        self.anticorrelated_sets = self._check_sets(
            "anticorrelated_sets", anticorrelated_sets, self.correlated_sets
        )
        self.hierarchy = hierarchy
        self._levels, exclusive_groups = self._hierarchy_layout()
        self._set_index, self._lower, self._upper = self._set_layout(exclusive_groups)
        # read once here, never while sampling: a sampler that reads a device tensor's value
        # would wait for the GPU (and could not be recorded in a CUDA graph)
        self._n_sets = 0 if self._set_index is None else int(self._set_index.max()) + 1
        self._run_plans: dict[tuple[int | None, int, str], list[tuple[torch.Tensor, bool]]] = {}
        self._shared_probability = bool(
            (self.feature_probability == self.feature_probability[..., :1]).all()
        )
        self.marginal_probability = self._marginal_probability()
        """``(instance or 1, n_features)`` probability that each feature fires: equals
        ``feature_probability`` except for hierarchy children (the product along the ancestry;
        exact without ``correlation``)."""
        self.correlation = correlation
        self._factor, self._residual = self._correlation_layout()
        self.generator = make_generator(seed, self.device)
        self.n_samples = None if n_samples is None else positive_int("n_samples", n_samples)
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

    def generators(self, generator: torch.Generator | None = None) -> list[torch.Generator]:
        """The generators that ``sample(..., generator=generator)`` draws from (the trainer
        registers them with a CUDA graph, which then advances them on every replay)."""
        return [self.generator if generator is None else generator]

    def sample_rows(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
        sparse: bool = True,
    ) -> CompactBatch:
        """A batch as a :class:`CompactBatch` (arguments as :meth:`sample`); the trainer
        draws its batches here.

        For :attr:`independent` features on infinite data, runs of consecutive instances whose
        mean probability is below :data:`SPARSE_DENSITY` are drawn sparsely
        (:func:`bernoulli_positions`, one uniform per active entry) and keep only their
        non-empty rows, where the run is large enough to pay (:data:`SPARSE_MIN_ELEMENTS`)
        and ``sparse`` is True (the trainer's CUDA graphs need the same shapes every step);
        the other instances are drawn densely as by :meth:`draw`. The distribution is
        :meth:`sample`'s, but a seed gives other numbers than :meth:`sample` where an
        instance is drawn sparsely. Otherwise this is :meth:`sample`'s
        batch. Batches of at most :data:`FEATURE_MAJOR` features are feature-major views.
        """
        generator = self.generator if generator is None else generator
        if not self._draws_active or batch_size is None:
            return CompactBatch.of(self.sample(batch_size, n_instances, generator))
        batch_size = positive_int("batch_size", batch_size)
        if not sparse:  # reads no device values: a CUDA graph can record it
            probability = self._instance_probability(n_instances).to(generator.device)
            return CompactBatch.of(self._draw_dense(probability[:, None], batch_size, generator))
        parts: list[torch.Tensor] = []
        repeats: list[int] = []
        for probability, drawn_sparsely in self._runs(n_instances, batch_size, generator.device):
            if drawn_sparsely:
                run = self._sparse_rows(probability, batch_size, generator)
                parts += run.parts
                repeats += run.repeats
            else:
                parts.append(self._draw_dense(probability[:, None], batch_size, generator))
                repeats.append(0)
        return CompactBatch(tuple(parts), tuple(repeats), batch_size)

    def _runs(
        self, n_instances: int | None, batch_size: int, device: torch.device
    ) -> list[tuple[torch.Tensor, bool]]:
        """:meth:`sample_rows`' plan: the runs of consecutive instances drawn alike, each as
        its probabilities ``(instances, n_features)`` on ``device`` and whether it is drawn
        sparsely (:meth:`sparse_instances`, in a run of at least :data:`SPARSE_MIN_ELEMENTS`
        elements). Made once per instance count, batch size and device:
        ``feature_probability`` is fixed at construction."""
        key = (n_instances, batch_size, str(device))
        if key not in self._run_plans:
            probability = self._instance_probability(n_instances).to(device)
            sparse = self.sparse_instances(n_instances).tolist()
            for start, stop in _runs_of(sparse):  # a sparse run too small to pay goes dense
                if (stop - start) * batch_size * self.n_features < SPARSE_MIN_ELEMENTS:
                    sparse[start:stop] = [False] * (stop - start)
            self._run_plans[key] = [
                (probability[start:stop], sparse[start]) for start, stop in _runs_of(sparse)
            ]
        return self._run_plans[key]

    def _sparse_rows(
        self, probability: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> CompactBatch:
        """The non-empty rows of a sparsely drawn batch for ``probability: (instance,
        n_features)`` of independent features, as a :class:`CompactBatch`."""
        (instance, row, feature), value = self._draw_active(probability, batch_size, generator)
        rows, entry_row = torch.unique(instance * batch_size + row, return_inverse=True)
        row_instance = rows.div(batch_size, rounding_mode="floor")
        counts = torch.bincount(row_instance, minlength=probability.shape[0])
        first_row = counts.cumsum(0).sub_(counts)
        compact_row = (torch.arange(rows.numel(), device=rows.device) - first_row[row_instance])[
            entry_row
        ]
        order = torch.argsort(instance, stable=True)
        instance, compact_row, feature, value = (
            t[order] for t in (instance, compact_row, feature, value)
        )
        needed = counts.add_(1).clamp_max_(batch_size)
        parts = row_parts(needed, self.n_features)
        bounds = torch.searchsorted(
            instance, instance.new_tensor([p[0] for p in parts] + [probability.shape[0]])
        ).tolist()
        blocks = []
        for (start, stop, need), first, last in zip(parts, bounds[:-1], bounds[1:], strict=True):
            entries = slice(first, last)
            where = (instance[entries] - start, compact_row[entries], feature[entries])
            block = new_batch(value.new_zeros, stop - start, need, self.n_features)
            block[where] = value[entries]
            blocks.append(block)
        return CompactBatch(tuple(blocks), tuple(batch_size - p[2] for p in parts), batch_size)

    @property
    def independent(self) -> bool:
        """Whether every feature fires independently with a named magnitude (no sets,
        hierarchy or correlation; ``magnitude`` from :data:`MAGNITUDES`): then sampling only
        the active features (:meth:`sample_sparse`) is exact."""
        plain = self._set_index is None and self.hierarchy is None and self._factor is None
        return plain and any(self._inverse_cdf is named for named in MAGNITUDES.values())

    def sparse_instances(self, n_instances: int | None = None) -> torch.Tensor:
        """``(n_instances,)`` bool: the instances for which :meth:`sample_sparse` pays (the SAE
        sources then use it), those of independent features whose mean firing probability is
        below :data:`SPARSE_DENSITY`."""
        density = self._instance_probability(n_instances).mean(-1)
        return (density < SPARSE_DENSITY) & self.independent

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

    def sample_sparse(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A batch as a sparse COO tensor ``(instance, batch_size, n_features)`` holding only
        the active features (arguments as :meth:`sample`).

        For :attr:`independent` features on infinite data the active entries are drawn
        directly (:func:`bernoulli_positions`, then one uniform per active entry for its
        magnitude, none for ``"constant"``): the same distribution as :meth:`sample`'s, at a
        cost proportional to the active entries. Otherwise (also with ``normalize``) the dense
        batch is converted. The result is coalesced (entries sorted by instance, row and
        feature).
        """
        generator = self.generator if generator is None else generator
        if not self._draws_active:
            return self.sample(batch_size, n_instances, generator).to_sparse()
        probability = self._instance_probability(n_instances)
        batch_size = positive_int("batch_size", batch_size)
        indices, value = self._draw_active(probability, batch_size, generator)
        shape = (probability.shape[0], batch_size, self.n_features)
        order = torch.argsort((indices[0] * batch_size + indices[1]) * self.n_features + indices[2])
        return torch.sparse_coo_tensor(
            indices[:, order], value[order], shape, is_coalesced=True, check_invariants=False
        )

    def _draw_active(
        self, probability: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The active entries for ``probability: (instance, n_features)`` of independent
        features: their ``(3, active)`` indices (instance, row, feature) and ``(active,)``
        magnitudes."""
        column, row = bernoulli_positions(probability.reshape(-1), batch_size, generator)
        if self._inverse_cdf is MAGNITUDES["constant"]:  # no uniforms needed
            value = torch.ones(column.shape, device=column.device)
        else:
            value = self._inverse_cdf(uniform((column.numel(),), generator).to(column.device))
        instance = column.div(self.n_features, rounding_mode="floor")
        feature = column - instance * self.n_features
        return torch.stack([instance, row, feature]), value

    def draw(self, batch_size: int, n_instances: int, generator: torch.Generator) -> torch.Tensor:
        """Fresh samples ``(n_instances, batch_size, n_features)`` from the distribution,
        ignoring any finite data set (held-out evaluation uses this); unit-norm rows when
        ``normalize``."""
        probability = broadcast_instances(
            "feature_probability", self.feature_probability, n_instances
        ).to(generator.device)
        x = self._draw_dense(probability[:, None, :], batch_size, generator).contiguous()
        if self.normalize:  # an all-zero row divides by ``tiny`` and stays zero
            x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(_TINY))
        return x

    def _draw_dense(
        self, probability: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> torch.Tensor:
        """One uniform per element: ``(instance, batch, n_features)`` for ``probability:
        (instance, 1, n_features)``, feature-major for at most :data:`FEATURE_MAJOR`
        features."""
        n_instances = probability.shape[0]
        u = new_batch(
            lambda shape: uniform(shape, generator), n_instances, batch_size, self.n_features
        )
        plain = self._set_index is None and self.hierarchy is None and self._factor is None
        if plain and self._inverse_cdf is MAGNITUDES["uniform"]:
            if self._shared_probability:
                probability = probability[..., :1]  # one per instance: a faster broadcast
            return below_one(u.div_(-probability.clamp_min(torch.finfo(u.dtype).tiny)))
        threshold = (
            probability
            if self._factor is None
            else self._copula_threshold(probability, batch_size, generator)
        )
        if self._set_index is None:
            active = u < threshold
            source = u / threshold.clamp_min(torch.finfo(u.dtype).tiny)
        else:
            w = uniform((n_instances, batch_size, self._n_sets), generator)
            in_set = self._set_index >= 0
            w = torch.where(in_set, w[..., self._set_index.clamp_min(0)], u)
            lower = torch.where(in_set, self._lower * probability, 0.0)
            upper = torch.where(in_set, self._upper * probability, threshold)
            active = (w >= lower) & (w < upper)
            # a set member's own u is its magnitude's source as is: divide it by 1
            divisor = torch.where(in_set, 1.0, threshold.clamp_min(torch.finfo(u.dtype).tiny))
            source = u / divisor
        for children, parents in self._levels:
            active[..., children] &= active[..., parents]
        return torch.where(active, self._inverse_cdf(source), 0.0)

    def _copula_threshold(
        self, probability: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-sample firing probabilities ``(instance, batch, n_features)`` given the copula's
        shared factors ``g`` (see :class:`LowRankCorrelation`); their mean over ``g`` is
        ``probability`` ``(instance, 1, n_features)``."""
        factor = broadcast_instances("correlation", self._factor, probability.shape[0])
        factor = factor.to(generator.device)
        g = torch.randn(
            (probability.shape[0], batch_size, factor.shape[-1]),
            generator=generator,
            device=generator.device,
        )
        shared = g @ factor.mT
        residual = self._residual.to(generator.device)
        return torch.special.ndtr((torch.special.ndtri(probability) - shared) / residual)

    def _check_sets(
        self, name: str, sets: Sequence[Sequence[int]], taken: list[list[int]]
    ) -> list[list[int]]:
        seen = {i for group in taken for i in group}
        checked = []
        for group in sets:
            group = [int(i) for i in group]
            if len(group) < 2:
                raise ValueError(f"{name}: each set needs at least 2 features, got {group}")
            if any(not 0 <= i < self.n_features for i in group):
                raise ValueError(
                    f"{name}: feature indices must lie in [0, {self.n_features - 1}], got {group}"
                )
            if seen.intersection(group) or len(set(group)) != len(group):
                raise ValueError(
                    f"{name}: sets must be disjoint (also from the other kind of "
                    f"set), feature repeated in {group}"
                )
            seen.update(group)
            checked.append(group)
        return checked

    def _hierarchy_layout(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[list[int]]]:
        """Validate the hierarchy; return its ``(children, parents)`` index pairs by depth
        (shallowest first) and the groups of mutually exclusive siblings."""
        if self.hierarchy is None:
            return [], []
        if not isinstance(self.hierarchy, Hierarchy):
            raise TypeError(
                f"hierarchy must be a superpose.data.Hierarchy or None, got {self.hierarchy!r}"
            )
        depth = self.hierarchy.depth(self.n_features)
        parent = [int(i) for i in self.hierarchy.parent]
        in_sets = {i for group in self.correlated_sets + self.anticorrelated_sets for i in group}
        children_in_sets = sorted(i for i in in_sets if parent[i] >= 0)
        if children_in_sets:
            raise ValueError(
                f"hierarchy: children {children_in_sets} cannot be in correlated_sets or "
                "anticorrelated_sets (use Hierarchy.exclusive for mutually exclusive siblings)"
            )
        levels = []
        for level in range(1, max(depth) + 1):
            children = [i for i in range(self.n_features) if depth[i] == level]
            levels.append(
                (
                    torch.tensor(children, device=self.device),
                    torch.tensor([parent[i] for i in children], device=self.device),
                )
            )
        exclusive = self.hierarchy.exclusive
        if isinstance(exclusive, bool):
            exclusive_parents = set(parent) - {-1} if exclusive else set()
        else:
            exclusive_parents = {int(i) for i in exclusive}
            if any(not 0 <= i < self.n_features for i in exclusive_parents):
                raise ValueError(
                    f"hierarchy: exclusive parent indices must lie in "
                    f"[0, {self.n_features - 1}], got {sorted(exclusive_parents)}"
                )
        groups = [
            [i for i in range(self.n_features) if parent[i] == p] for p in sorted(exclusive_parents)
        ]
        return levels, [group for group in groups if len(group) >= 2]

    def _marginal_probability(self) -> torch.Tensor:
        marginal = self.feature_probability.clone()
        for children, parents in self._levels:
            marginal[:, children] *= marginal[:, parents]
        return marginal

    def _correlation_layout(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Validate the correlation; return its factor ``(instance or 1, n_features, rank)``
        and the independent parts' scales ``(instance or 1, 1, n_features)``."""
        if self.correlation is None:
            return None, None
        if not isinstance(self.correlation, LowRankCorrelation):
            raise TypeError(
                "correlation must be a superpose.data.LowRankCorrelation or None, "
                f"got {self.correlation!r}"
            )
        if self.correlated_sets or self.anticorrelated_sets:
            raise ValueError(
                "correlation cannot be combined with correlated_sets or anticorrelated_sets "
                "(the copula already sets how features fire together)"
            )
        factor = self.correlation.checked_factor(self.n_features)
        instances = {factor.shape[0], self.feature_probability.shape[0]} - {1}
        if len(instances) > 1:
            raise ValueError(
                f"correlation has {factor.shape[0]} instances but feature_probability has "
                f"{self.feature_probability.shape[0]}"
            )
        residual = (1 - factor.pow(2).sum(-1)).sqrt()[:, None, :]
        return factor.to(self.device), residual.to(self.device)

    def _set_layout(
        self, exclusive_groups: list[list[int]]
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Per feature: its set's index (-1 if none) and its activity window as multiples of p.

        A feature ``j`` in a set is active when the set's uniform draw ``w`` lies in
        ``[lower_j·p_j, upper_j·p_j)``: for a correlated set the window is ``[0, p)`` for every
        member; for an anticorrelated set (or a hierarchy's exclusive siblings) the members'
        windows tile ``[0, Σ p)``.
        """
        exclusive = [("anticorrelated_sets", group) for group in self.anticorrelated_sets]
        exclusive += [("hierarchy: exclusive siblings", group) for group in exclusive_groups]
        if not self.correlated_sets and not exclusive:
            return None, torch.zeros(0), torch.zeros(0)
        p = self.feature_probability.cpu()
        set_index = torch.full((self.n_features,), -1, dtype=torch.long)
        lower = torch.zeros(p.shape)
        upper = torch.ones(p.shape)
        for k, group in enumerate(self.correlated_sets):
            set_index[group] = k
            if not torch.allclose(p[:, group], p[:, group[:1]]):
                raise ValueError(
                    f"correlated_sets: features {group} must share one feature_probability"
                )
        offset = len(self.correlated_sets)
        for k, (name, group) in enumerate(exclusive):
            set_index[group] = offset + k
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
        return (
            set_index.to(self.device),
            lower[:, None].to(self.device),
            upper[:, None].to(self.device),
        )


def _runs_of(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of equal consecutive ``flags``."""
    stops = [k for k in range(1, len(flags)) if flags[k] != flags[k - 1]]
    return list(zip([0, *stops], [*stops, len(flags)], strict=True))
