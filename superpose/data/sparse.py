"""The sparse sampling strategies, for independent features: draw only the active entries.

:func:`~superpose.data.sampling.bernoulli_positions` draws where each feature fires (the
gaps between its successes), then one uniform per active entry gives its magnitude: the
distribution of the dense strategy (:mod:`superpose.data.dense`) at a cost proportional to the
active entries, but other numbers for a seed. Two layouts: a sparse COO tensor
(:func:`sparse_tensor`, for :meth:`SparseFeatures.sample_sparse`) and the trainer's compact
batches (:func:`compact_batch`, for :meth:`SparseFeatures.sample_rows`), which keep only
the non-empty rows of runs of sparse instances and draw the other instances densely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from superpose.data.dense import draw_dense
from superpose.data.magnitudes import MAGNITUDES
from superpose.data.sampling import CompactBatch, bernoulli_positions, new_batch, row_parts, uniform

if TYPE_CHECKING:
    from superpose.data.features import SparseFeatures

_SPARSE_DENSITY = 0.03
"""Mean firing probability below which sampling an instance sparsely pays (see
:meth:`SparseFeatures.sparse_instances`; the SAE sources use it).

The crossover, measured for a dense ``(1, 1024, 1024)`` batch of uniform magnitudes on one
thread of a loaded 2-core CPU: dense 10 ms at every density; sparse then materialised 5 ms at
p = 0.005, 8–10 ms at 0.01–0.02, 24 ms at 0.05 (about 300 ns per active entry against 10 ns
per element). Named non-uniform magnitudes make the dense path slower (crossover near 0.07),
and consumers of :meth:`SparseFeatures.sample_sparse` that never materialise (the SAE
sources) gain more.

The trainer's batches (:meth:`SparseFeatures.sample_rows`, then the fast path's loss and
gradients on the non-empty rows) cross over near the same density. Per step, dense against
sparse, one thread of a 2-core CPU under load (load average 9): n=2, m=1 ×200 instances 22 ms
against 8.6 / 10.7 / 16.3 / 35.6 ms at p = 0.003 / 0.01 / 0.03 / 0.1; n=5, m=2 ×20 8.2 ms
against 7.3 / 8.2 / 16.0 ms at p = 0.01 / 0.03 / 0.1; n=100, m=20 ×10 52 ms against 43 / 69 ms
at p = 0.01 / 0.03; n=1000, m=100 ×2 180 ms against 175 / 187 ms at p = 0.01 / 0.03."""

_SPARSE_MIN_ELEMENTS = 2**18
"""Smallest run of consecutive sparse instances (mean probability below
:data:`_SPARSE_DENSITY`), counted in elements of its dense batch ``instances × batch_size ×
n_features``, that :meth:`SparseFeatures.sample_rows` draws sparsely: below it the sparse
path's fixed cost (about 0.5 ms a step) outweighs what it saves, and the run is drawn densely.

Measured per training step, dense against sparse, one thread of an idle 2-core AMD EPYC, at
p = 0.01 (and 0.003): n=2, m=1 ×16 instances (33k elements) 0.45 / 1.01 ms, ×64 (131k)
0.94 / 1.24 (1.19 / 1.11), ×256 (524k) 2.8 / 1.8 ms; n=5, m=2 ×1 (5k) 0.35 / 0.94, ×16
(82k) 0.62 / 1.12, ×64 (328k) 1.78 / 1.58 (3.56 / 1.29) ms; n=20, m=5 ×4 (82k)
0.74 / 1.04, ×16 (328k) 2.0 / 1.5 ms; n=100, m=20 ×1 (102k) 0.95 / 1.34, ×4 (410k)
3.0 / 2.9 (3.0 / 1.7) ms."""

Run = tuple[torch.Tensor, bool]
"""Consecutive instances drawn alike: their probabilities ``(instances, n_features)`` and
whether they are drawn sparsely."""


def sparse_pays(probability: torch.Tensor, independent: bool) -> torch.Tensor:
    """``(instance,)`` bool: the instances of ``probability: (instance, n_features)`` for
    which drawing sparsely pays, where the features are ``independent``: those whose mean
    probability is below :data:`_SPARSE_DENSITY`."""
    return (probability.mean(-1) < _SPARSE_DENSITY) & independent


def plan_runs(probability: torch.Tensor, sparse: list[bool], batch_size: int) -> list[Run]:
    """The runs of consecutive instances of ``probability: (instance, n_features)`` drawn
    alike for batches of ``batch_size`` rows: drawn sparsely where ``sparse`` (one flag per
    instance) in a run of at least :data:`_SPARSE_MIN_ELEMENTS` elements, densely otherwise."""
    sparse = list(sparse)
    for start, stop in _runs_of(sparse):  # a sparse run too small to pay goes dense
        if (stop - start) * batch_size * probability.shape[-1] < _SPARSE_MIN_ELEMENTS:
            sparse[start:stop] = [False] * (stop - start)
    return [(probability[start:stop], sparse[start]) for start, stop in _runs_of(sparse)]


def compact_batch(
    features: SparseFeatures, runs: list[Run], batch_size: int, generator: torch.Generator
) -> CompactBatch:
    """A batch of ``batch_size`` rows of ``features`` (independent) for the instances of
    ``runs`` (:func:`plan_runs`), as a :class:`~superpose.data.CompactBatch`: a dense run is
    one part (:func:`~superpose.data.dense.draw_dense`), a sparse run keeps only its
    non-empty rows."""
    parts: list[torch.Tensor] = []
    repeats: list[int] = []
    for probability, drawn_sparsely in runs:
        if drawn_sparsely:
            run = _compact_rows(features, probability, batch_size, generator)
            parts += run.parts
            repeats += run.repeats
        else:
            parts.append(draw_dense(features, probability[:, None], batch_size, generator))
            repeats.append(0)
    return CompactBatch(tuple(parts), tuple(repeats), batch_size)


def sparse_tensor(
    features: SparseFeatures,
    probability: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """A coalesced sparse COO batch ``(instance, batch_size, n_features)`` of ``features``
    (independent) for ``probability: (instance, n_features)``."""
    indices, value = _draw_active(features, probability, batch_size, generator)
    n_features = features.n_features
    shape = (probability.shape[0], batch_size, n_features)
    order = torch.argsort((indices[0] * batch_size + indices[1]) * n_features + indices[2])
    return torch.sparse_coo_tensor(
        indices[:, order], value[order], shape, is_coalesced=True, check_invariants=False
    )


def _draw_active(
    features: SparseFeatures,
    probability: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The active entries for ``probability: (instance, n_features)``: their ``(3, active)``
    indices (instance, row, feature) and ``(active,)`` magnitudes (no uniforms drawn for
    ``"constant"``)."""
    column, row = bernoulli_positions(probability.reshape(-1), batch_size, generator)
    if features.inverse_cdf is MAGNITUDES["constant"]:
        value = torch.ones(column.shape, device=column.device)
    else:
        value = features.inverse_cdf(uniform((column.numel(),), generator).to(column.device))
    instance = column.div(features.n_features, rounding_mode="floor")
    feature = column - instance * features.n_features
    return torch.stack([instance, row, feature]), value


def _compact_rows(
    features: SparseFeatures,
    probability: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> CompactBatch:
    """The non-empty rows of a sparsely drawn batch for ``probability: (instance,
    n_features)``, as a :class:`~superpose.data.CompactBatch`."""
    n_features = features.n_features
    (instance, row, feature), value = _draw_active(features, probability, batch_size, generator)
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
    parts = row_parts(needed, n_features)
    bounds = torch.searchsorted(
        instance, instance.new_tensor([p[0] for p in parts] + [probability.shape[0]])
    ).tolist()
    blocks = []
    for (start, stop, need), first, last in zip(parts, bounds[:-1], bounds[1:], strict=True):
        entries = slice(first, last)
        where = (instance[entries] - start, compact_row[entries], feature[entries])
        block = new_batch(value.new_zeros, stop - start, need, n_features)
        block[where] = value[entries]
        blocks.append(block)
    return CompactBatch(tuple(blocks), tuple(batch_size - p[2] for p in parts), batch_size)


def _runs_of(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of equal consecutive ``flags``."""
    stops = [k for k in range(1, len(flags)) if flags[k] != flags[k - 1]]
    return list(zip([0, *stops], [*stops, len(flags)], strict=True))
