"""Per-cell random data streams, so that a packed cell trains exactly as it would alone.

The trainer draws one batch for all instances of a model from one generator, so with plain
:class:`~superpose.data.SparseFeatures` a cell's batches would depend on which other cells
share its model. :class:`CellStreams` instead keys the randomness on each cell's seed and a
named stream (:data:`TRAIN_STREAM` for training batches, :data:`EVAL_STREAM` for the held-out
loss): every distinct seed in a chunk owns one generator per stream, each draw takes one
uniform block ``(rows, n_features)`` per distinct seed, and every instance uses its seed's
block. A cell's batches therefore depend only on (seed, stream, batch shape), never on the
packing. :class:`CellStreams` is a :class:`~superpose.data.BatchSource`: the trainer and
:func:`superpose.train.evaluate` draw from it through that contract.

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
"""Stream of the training batches."""

EVAL_STREAM = 2**31 - 1
"""Stream used for the held-out final loss (and an SAE cell's held-out scores)."""


def stream_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit generator seed for cell seed ``seed`` on ``stream``."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class CellStreams:
    """Independent features with one random stream per cell seed: a
    :class:`~superpose.data.BatchSource` whose stream is named by :attr:`stream`.

    Args:
        feature_probability: ``(instance, n_features)`` per-cell probabilities.
        seeds: ``(instance,)`` cell seeds (ints ≥ 0).
        magnitude: a name from :data:`superpose.data.MAGNITUDES`.
        stream: which of each cell's streams to draw from (:data:`TRAIN_STREAM`,
            :data:`EVAL_STREAM`, or any int ≥ 0); :meth:`with_stream` gives another.
        device: where batches are created.

    The draws take no generator (``generator=None``; a passed one is refused): cell ``k``'s
    numbers come from the generator of ``(seeds[k], stream)`` alone, never from one shared by
    the cells packed with it. Correlated sets and finite data sets are not supported.
    """

    def __init__(
        self,
        feature_probability: torch.Tensor,
        seeds: Sequence[int],
        *,
        magnitude: str = "uniform",
        stream: int = TRAIN_STREAM,
        device: str | torch.device = "cpu",
    ) -> None:
        self.features = SparseFeatures(
            feature_probability.shape[1], feature_probability, magnitude=magnitude, device=device
        )
        """The cells' distribution: probabilities ``(instance, n_features)`` and magnitude."""
        probability = self.features.feature_probability
        if len(seeds) != probability.shape[0]:
            raise ValueError(
                f"seeds has {len(seeds)} entries but feature_probability has "
                f"{probability.shape[0]} instances"
            )
        if isinstance(stream, bool) or not isinstance(stream, int):
            raise TypeError(f"stream must be an int, got {stream!r}")
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        self.stream = stream
        self.seeds = [int(s) for s in seeds]
        self._magnitude = magnitude
        distinct = sorted(set(self.seeds))
        position = {s: i for i, s in enumerate(distinct)}
        self._seed_index = torch.tensor([position[s] for s in self.seeds], device=self.device)
        self._generators = [
            torch.Generator(device=self.device).manual_seed(stream_seed(s, stream))
            for s in distinct
        ]
        tiny = torch.finfo(probability.dtype).tiny
        self._divisor = probability.clamp_min(tiny)[:, :, None]
        self._negative_divisor = -self._divisor
        self._largest = probability.amax(1)
        self._instance = torch.arange(len(self.seeds), device=self.device)

    @property
    def n_features(self) -> int:
        """Features per sample."""
        return self.features.n_features

    @property
    def device(self) -> torch.device:
        """Where batches are created."""
        return self.features.device

    @property
    def n_samples(self) -> None:
        """None: the cells draw fresh data."""
        return None

    @property
    def generator(self) -> None:
        """None: the numbers come from one generator per distinct cell seed
        (:meth:`generators`)."""
        return None

    def with_stream(self, stream: int) -> CellStreams:
        """The same cells drawing from ``stream`` (e.g. :data:`EVAL_STREAM`), from its start."""
        return CellStreams(
            self.features.feature_probability,
            self.seeds,
            magnitude=self._magnitude,
            stream=stream,
            device=self.device,
        )

    def generators(self, generator: torch.Generator | None = None) -> list[torch.Generator]:
        """The generators every draw advances: one per distinct cell seed, on :attr:`stream`."""
        self._no_generator(generator)
        return list(self._generators)

    def draw(
        self, batch_size: int, n_instances: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The next ``batch_size`` samples of every cell: ``(instance, batch_size,
        n_features)``, contiguous."""
        self._no_generator(generator)
        self._check_instances(n_instances)
        return self._dense(batch_size).contiguous()

    def sample_rows(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
        sparse: bool = True,
    ) -> CompactBatch:
        """The next ``batch_size`` samples of every cell as a
        :class:`~superpose.data.CompactBatch` (:meth:`draw`'s rows, reordered, with most zero
        rows left out); with ``sparse=False``, :meth:`draw`'s batch in one part."""
        self._no_generator(generator)
        if batch_size is None:
            raise ValueError("CellStreams draws infinite data: batch_size must be an int")
        self._check_instances(len(self.seeds) if n_instances is None else n_instances)
        if not sparse:
            return CompactBatch.of(self._dense(batch_size))
        return self._compact(batch_size)

    def _uniforms(self, rows: int) -> torch.Tensor:
        """The next uniform block per distinct seed: ``(seed, rows, n_features)``."""
        return torch.stack(
            [
                torch.rand(rows, self.n_features, generator=g, device=self.device)
                for g in self._generators
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
        inverse_cdf = self.features.inverse_cdf
        if inverse_cdf is MAGNITUDES["uniform"]:
            return below_one(u / self._negative_divisor[instances]).mT
        source = u / self._divisor[instances]
        return torch.where(source < 1.0, inverse_cdf(source), 0.0).mT

    def _dense(self, rows: int) -> torch.Tensor:
        """The next ``rows`` samples: ``(instance, rows, n_features)``, feature-major."""
        return self._features(self._uniforms(rows), slice(None))

    def _compact(self, rows: int) -> CompactBatch:
        """The next ``rows`` samples as a :class:`~superpose.data.CompactBatch`: the same rows
        as :meth:`_dense`'s, reordered, with most zero rows left out.

        A seed's rows are sorted by their smallest uniform; an instance's row is all zero when
        that uniform exceeds the instance's largest probability (``u > p`` gives
        ``u / p ≥ 1`` in float32 too), so each instance needs only a prefix of the sorted rows
        plus one zero row standing for the rest. Instances are grouped by
        :func:`~superpose.data.row_parts`: order them by probability to make the prefixes of
        a part alike.
        """
        u = self._uniforms(rows)
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

    def _no_generator(self, generator: torch.Generator | None) -> None:
        if generator is not None:
            raise ValueError(
                "CellStreams draws each cell from its own seed's generator on its named "
                f"stream (stream={self.stream}; with_stream picks another), not from a passed "
                "generator: pass generator=None (a trainer: seed=None)"
            )

    def _check_instances(self, n_instances: int) -> None:
        if n_instances != len(self.seeds):
            raise ValueError(
                f"CellStreams holds {len(self.seeds)} cells but {n_instances} instances "
                "were asked for"
            )
