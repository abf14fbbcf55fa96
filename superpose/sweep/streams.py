"""Per-cell random data streams, so that a packed cell trains exactly as it would alone.

The trainer draws one batch for all instances of a model from one generator, so with plain
:class:`~superpose.data.SparseFeatures` a cell's batches would depend on which other cells
share its model. :class:`CellStreams` instead keys the randomness on each cell's seed: every
distinct seed in a chunk owns one generator per stream, each step draws one uniform block
``(rows, n_features)`` per distinct seed, and every instance uses its seed's block. A cell's
batches therefore depend only on (seed, stream, batch shape), never on the packing.

Cells with the same seed see the same uniform numbers (common random numbers: at equal
``feature_probability`` the very same batches), which also makes neighbouring grid cells
smoother to compare. It costs fewer random numbers than the shared stream: one block per
distinct seed instead of one per instance (plus a gather when a chunk mixes seeds).

A feature is active when ``u / p < 1`` (in float32), i.e. when ``u < p`` up to rounding,
and then takes the magnitude whose inverse CDF is evaluated at ``u / p``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from superpose.data import MAGNITUDES, CompactBatch, SparseFeatures, below_one, row_parts

TRAIN_STREAM = 0
"""Stream used for training batches (the trainer's ``seed``)."""

EVAL_STREAM = 2**31 - 1
"""Stream used for the held-out final loss (and an SAE cell's held-out scores)."""


def stream_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit generator seed for cell seed ``seed`` on ``stream``."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class CellStreams(SparseFeatures):
    """Independent features with one random stream per cell seed.

    Args:
        feature_probability: ``(instance, n_features)`` per-cell probabilities.
        seeds: ``(instance,)`` cell seeds (ints ≥ 0).
        magnitude: a name from :data:`superpose.data.MAGNITUDES`.
        device: where batches are created.

    The trainer passes its own generator to :meth:`draw`; here it only selects the stream
    (by its initial seed), its state is not used. Correlated sets and finite data sets are
    not supported.
    """

    def __init__(
        self,
        feature_probability: torch.Tensor,
        seeds: Sequence[int],
        *,
        magnitude: str = "uniform",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            feature_probability.shape[1],
            feature_probability,
            magnitude=magnitude,
            seed=TRAIN_STREAM,
            device=device,
        )
        if len(seeds) != self.feature_probability.shape[0]:
            raise ValueError(
                f"seeds has {len(seeds)} entries but feature_probability has "
                f"{self.feature_probability.shape[0]} instances"
            )
        self.seeds = [int(s) for s in seeds]
        self._distinct = sorted(set(self.seeds))
        position = {s: i for i, s in enumerate(self._distinct)}
        self._seed_index = torch.tensor([position[s] for s in self.seeds], device=self.device)
        self._generators: dict[int, list[torch.Generator]] = {}
        tiny = torch.finfo(self.feature_probability.dtype).tiny
        self._divisor = self.feature_probability.clamp_min(tiny)[:, :, None]
        self._negative_divisor = -self._divisor
        self._largest = self.feature_probability.amax(1)
        self._instance = torch.arange(len(self.seeds), device=self.device)

    def stream_generators(self, stream: int) -> list[torch.Generator]:
        """One generator per distinct cell seed for ``stream`` (created on first use)."""
        generators = self._generators.get(stream)
        if generators is None:
            generators = [
                torch.Generator(device=self.device).manual_seed(stream_seed(s, stream))
                for s in self._distinct
            ]
            self._generators[stream] = generators
        return generators

    def generators(self, generator: torch.Generator | None = None) -> list[torch.Generator]:
        """The stream generators that ``draw(..., generator)`` uses (see :meth:`draw`)."""
        return self.stream_generators(
            (self.generator if generator is None else generator).initial_seed()
        )

    def _uniforms(self, rows: int, stream: int) -> torch.Tensor:
        """The next uniform block of ``stream`` per distinct seed: ``(seed, rows, n_features)``."""
        return torch.stack(
            [
                torch.rand(rows, self.n_features, generator=g, device=self.device)
                for g in self.stream_generators(stream)
            ]
        )

    def _features(self, u: torch.Tensor, instances: slice) -> torch.Tensor:
        """Samples ``(instance, rows, n_features)`` of ``instances`` from their seeds' uniforms
        ``u: (seed, rows, n_features)``."""
        # feature-major (instance, n_features, rows), returned transposed: every pass then
        # broadcasts a per-instance scalar along rows (and the trainer's fast path keeps it)
        u = u.mT.contiguous()
        # one seed: a broadcast view instead of a copy per instance
        n_instances = len(self.seeds[instances])
        u = (
            u.expand(n_instances, -1, -1)
            if u.shape[0] == 1
            else u.index_select(0, self._seed_index[instances])
        )
        if self.inverse_cdf is MAGNITUDES["uniform"]:
            return below_one(u / self._negative_divisor[instances]).mT
        source = u / self._divisor[instances]
        return torch.where(source < 1.0, self.inverse_cdf(source), 0.0).mT

    def stream_draw(self, rows: int, stream: int) -> torch.Tensor:
        """The next ``rows`` samples of ``stream``: ``(instance, rows, n_features)``."""
        return self._features(self._uniforms(rows, stream), slice(None))

    def stream_rows(self, rows: int, stream: int) -> CompactBatch:
        """The next ``rows`` samples of ``stream`` as a :class:`~superpose.data.CompactBatch`:
        the same rows as :meth:`stream_draw`'s, reordered, with most zero rows left out.

        A seed's rows are sorted by their smallest uniform; an instance's row is all zero when
        that uniform exceeds the instance's largest probability (``u > p`` gives
        ``u / p ≥ 1`` in float32 too), so each instance needs only a prefix of the sorted rows
        plus one zero row standing for the rest. Instances are grouped by
        :func:`~superpose.data.row_parts`: order them by probability to make the prefixes of
        a part alike.
        """
        u = self._uniforms(rows, stream)
        smallest, order = u.amin(-1).sort(-1)  # (seed, rows)
        u = u.gather(1, order[..., None].expand_as(u))
        limit = self._largest[None, :].expand(u.shape[0], -1).contiguous()
        nonzero = torch.searchsorted(smallest, limit, right=True)  # (seed, instance)
        needed = nonzero[self._seed_index, self._instance] + 1
        parts = row_parts(needed.clamp_max_(rows), self.n_features)
        return CompactBatch(
            tuple(self._features(u[:, :need], slice(start, stop)) for start, stop, need in parts),
            tuple(rows - need for _, _, need in parts),
            rows,
        )

    def draw(self, batch_size: int, n_instances: int, generator: torch.Generator) -> torch.Tensor:
        """``(instance, batch_size, n_features)`` from the stream named by ``generator``'s
        initial seed (the trainer's ``seed`` for training batches)."""
        self._check_instances(n_instances)
        return self.stream_draw(batch_size, generator.initial_seed()).contiguous()

    def sample_rows(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
        sparse: bool = True,
    ) -> CompactBatch:
        """:meth:`stream_rows` of the stream named by ``generator``'s initial seed (this
        object's own when None); with ``sparse=False``, :meth:`stream_draw`'s dense batch."""
        generator = self.generator if generator is None else generator
        if batch_size is None:
            raise ValueError("CellStreams draws infinite data: batch_size must be an int")
        self._check_instances(len(self.seeds) if n_instances is None else n_instances)
        if not sparse:
            return CompactBatch.of(self.stream_draw(batch_size, generator.initial_seed()))
        return self.stream_rows(batch_size, generator.initial_seed())

    def _check_instances(self, n_instances: int) -> None:
        if n_instances != len(self.seeds):
            raise ValueError(
                f"CellStreams holds {len(self.seeds)} cells but {n_instances} instances "
                "were asked for"
            )
