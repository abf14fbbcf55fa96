"""The random numbers behind every batch: exact float uniforms from parallel PCG64 streams,
sparse Bernoulli positions, the feature-major layout of small batches, and the compact
batches (all-zero rows dropped) the trainer reads.

The tuning constants here (:data:`FEATURE_MAJOR` and the ``_``-prefixed ones) are internal:
measured speed trade-offs, not API, and not exported from :mod:`superpose.data`.
:data:`FEATURE_MAJOR` keeps its name because the fast path reads it too."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

_UNIFORM_CHUNK = 2**19
"""Uniforms per independent PCG64 stream on CPU (fixed, so samples never depend on threads)."""


def uniform(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Numbers uniform on ``[0, 1)`` shaped ``shape`` (``dtype`` float32 or float64), on
    ``generator``'s device and reproducible from its state (which advances by one draw on CPU).

    CUDA: ``torch.rand``. CPU: one 63-bit seed drawn from ``generator`` seeds numpy PCG64
    streams (``numpy.random.SeedSequence.spawn``), one per :data:`_UNIFORM_CHUNK` numbers,
    filled by a thread pool (numpy releases the GIL while filling). Float32 numbers are
    numpy's ``Generator.random(dtype=np.float32)`` ones, bit for bit, made from the stream's
    raw 64-bit words (low half first, top 24 bits of each half, times ``2**-24``) in three
    vectorised passes, about a third faster than numpy's number-by-number conversion.
    """
    if generator.device.type != "cpu":
        return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    seed = int(torch.randint(2**63 - 1, (), generator=generator))
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    out = np.empty(math.prod(shape), dtype=numpy_dtype)
    starts = range(0, out.size, _UNIFORM_CHUNK)
    streams = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(chunk: int) -> None:
        part = out[starts[chunk] : starts[chunk] + _UNIFORM_CHUNK]
        bit_generator = np.random.PCG64(streams[chunk])
        if numpy_dtype is np.float64:
            np.random.Generator(bit_generator).random(out=part)
            return
        words = bit_generator.random_raw((part.size + 1) // 2).astype("<u8", copy=False)
        bits = words.view("<u4")[: part.size]  # low half first, on any byte order
        np.right_shift(bits, 8, out=bits)
        np.copyto(part, bits, casting="unsafe")  # exact: below 2**24
        np.multiply(part, np.float32(2**-24), out=part)

    if len(starts) == 1:
        fill(0)
    else:
        list(_fill_pool().map(fill, range(len(starts))))
    return torch.from_numpy(out).view(shape)


FEATURE_MAJOR = 8
"""(Internal.) Batches of at most this many features are drawn feature-major: stored as ``(instance,
n_features, batch)`` and handed out as that tensor's transposed view ``(instance, batch,
n_features)`` (:meth:`SparseFeatures.sample_rows`; :meth:`SparseFeatures.draw` returns a
contiguous copy). An elementwise pass that broadcasts per-feature values along a last axis of
two elements runs about 10× slower than one along rows (a ``(128, 1024, 2)`` batch times a
``(128, 1, 2)`` weight, one CPU thread: 247 µs against 26 µs), and the fast path keeps the
layout (:func:`superpose.fast.matmul`). Training steps at p = 0.1 on one thread, row-major
against feature-major: n = 3, m = 1 ×400 8.5 / 6.0 ms; n = 5, m = 2 ×100 3.6 / 2.7; n = 8,
m = 3 ×60 3.4 / 3.1; n = 16 3.4 / 3.3; n = 32 5.1 / 5.6 (then row-major wins). The uniforms are
drawn in storage order, so a seed gives other batches than superpose 0.3 did for these sizes
(the same distribution)."""


def feature_major(x: torch.Tensor) -> bool:
    """Whether ``x: (instance, batch, n_features)`` is stored feature-major (its transposed
    view ``(instance, n_features, batch)`` is contiguous and it is not)."""
    return x.mT.is_contiguous() and not x.is_contiguous()


def new_batch(
    make: Callable[[tuple[int, int, int]], torch.Tensor],
    n_instances: int,
    rows: int,
    n_features: int,
) -> torch.Tensor:
    """A batch ``(n_instances, rows, n_features)`` from ``make(shape)`` (e.g. ``torch.zeros``),
    stored feature-major for at most :data:`FEATURE_MAJOR` features: ``make`` then fills
    ``(n_instances, n_features, rows)`` in its own order."""
    if n_features <= FEATURE_MAJOR:
        return make((n_instances, n_features, rows)).mT
    return make((n_instances, rows, n_features))


def below_one(negative_source: torch.Tensor) -> torch.Tensor:
    """``u / p`` where it is below 1 and 0 elsewhere, from ``negative_source = u / -p``, in
    place: the uniform-magnitude sample in one division and one threshold (a masked ``where``
    is several times slower). ``u < p`` exactly when the rounded ``u / p < 1``, and ``-u / p >
    -1`` keeps it; with ``p = 0`` clamped to ``tiny``, only ``u = 0`` is active, with
    magnitude 0."""
    return torch.threshold_(negative_source, -1.0, -0.0).neg_()


_SLACK_SIGMAS = 4.0
"""Gaps drawn per column and round in :func:`bernoulli_positions`: the expected number of
successes plus this many standard deviations plus this many slots (more rounds follow for
the rare column that needs them)."""


def bernoulli_positions(
    probability: torch.Tensor, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the successes fall in independent Bernoulli sequences, drawn without visiting
    the failures.

    Column ``c`` is a sequence of ``length`` independent trials succeeding with probability
    ``probability[c]``. The gaps between its successes are independent Geometric(``p``)
    numbers, drawn by inversion from float64 uniforms (``1 + ⌊log(1 − u) / log(1 − p)⌋``), so
    the positions have exactly the distribution of thresholding one uniform per trial, and
    the work is proportional to the successes, not to the trials. Gaps are drawn in rounds: a
    column whose drawn gaps end before ``length`` continues from its last success (the
    geometric law forgets the past).

    Args:
        probability: ``(columns,)`` success probabilities in ``[0, 1]``.
        length: trials per column.

    Returns:
        ``(column, position)``: two int64 ``(successes,)`` tensors, sorted by column and, within
        a column, by position in ``[0, length)``.
    """
    device = probability.device
    p = probability.to(torch.float64)
    column = torch.arange(p.numel(), device=device)[p > 0]
    start = torch.zeros(column.numel(), dtype=torch.float64, device=device)
    found_column, found_position = [], []
    while column.numel():
        pc = p[column]
        mean = (length - start) * pc
        slots = (mean + _SLACK_SIGMAS * (mean * (1 - pc)).sqrt()).long() + int(_SLACK_SIGMAS)
        owner = torch.repeat_interleave(torch.arange(column.numel(), device=device), slots)
        u = uniform((owner.numel(),), generator, torch.float64).to(device)
        # failures before each success (0 when p = 1), capped so that the sums stay exact
        gap = torch.log1p(-u).mul_(torch.log1p(-pc).reciprocal()[owner]).floor_()
        trial = gap.clamp_(max=length).add_(1).cumsum_(0)
        last = slots.cumsum(0) - 1  # each column's last slot
        # position = trials so far in this column - 1 + start
        base = torch.cat([trial.new_zeros(1), trial[last[:-1]]]).sub_(start).add_(1)
        position = trial.sub_(base[owner])
        inside = position < length
        found_column.append(column[owner[inside]])
        found_position.append(position[inside].long())
        end = position[last]
        more = end < length - 1
        column, start = column[more], end[more] + 1
    if len(found_column) <= 1:  # one round (or none): already in order
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return (found_column or [empty])[0], (found_position or [empty])[0]
    column, position = torch.cat(found_column), torch.cat(found_position)
    order = torch.argsort(column * length + position)
    return column[order], position[order]


@cache
def _fill_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="uniform")


# A forked child inherits the pool object but not its threads: give it a fresh pool.
os.register_at_fork(after_in_child=_fill_pool.cache_clear)


_PART_ELEMENTS = 2**18
"""Most elements ``(instance × rows × n_features)`` of one part of a :class:`CompactBatch` (about
1 MiB of float32: a part's work stays in cache), unless one instance needs more."""


@dataclass(frozen=True)
class CompactBatch:
    """A batch ``(instance, batch_size, n_features)`` stored without most of its all-zero rows.

    A training loss and its gradients are sums over the rows of a batch, so the rows' order
    does not matter and a row repeated many times is computed once with a weight. Sparse
    batches have many all-zero rows (at feature probability ``p``, a row of ``n`` features is
    empty with probability ``(1 − p)ⁿ``); a compact batch keeps each instance's non-empty rows
    (in any order) and stands for its zero rows with one weighted row.

    Attributes:
        parts: ``(instances_k, rows_k, n_features)`` tensors for consecutive instances (the
            first part starts at instance 0). Each row is a row of those instances' batches;
            the last row stands for ``1 + repeats[k]`` rows.
        repeats: per part, the further copies of its last row in the batch (all-zero rows;
            0 when the part holds every row): ``rows_k + repeats[k] = batch_size``.
        batch_size: rows per instance of the batch it stands for.
    """

    parts: tuple[torch.Tensor, ...]
    repeats: tuple[int, ...]
    batch_size: int

    @classmethod
    def of(cls, x: torch.Tensor) -> CompactBatch:
        """A dense batch ``(instance, batch, n_features)`` as one part without repeats."""
        return cls((x,), (0,), x.shape[1])

    @property
    def n_instances(self) -> int:
        """Instances of the batch (the parts' instances together)."""
        return sum(part.shape[0] for part in self.parts)

    def to(self, device: str | torch.device) -> CompactBatch:
        """The batch on ``device``."""
        return CompactBatch(tuple(p.to(device) for p in self.parts), self.repeats, self.batch_size)

    def dense(self) -> torch.Tensor:
        """The batch ``(instance, batch_size, n_features)`` (rows in the parts' order, then the
        repeated rows)."""
        return torch.cat(
            [
                torch.cat([part, part[:, -1:].expand(-1, repeats, -1)], 1)
                for part, repeats in zip(self.parts, self.repeats, strict=True)
            ]
        )


def row_parts(rows: torch.Tensor, n_features: int) -> list[tuple[int, int, int]]:
    """Split instances into the parts of a :class:`CompactBatch`.

    Args:
        rows: ``(instance,)`` int64, how many leading rows each instance needs (its non-empty
            rows plus one row that stands for its zero rows).

    Returns:
        ``(start, stop, rows)`` per part: consecutive blocks of instances needing at most about
        :data:`_PART_ELEMENTS` elements together, each with the most rows any of them needs.
        A part also ends where the running maximum of the needs reaches the next power of 2,
        so instances ordered by sparsity form parts of alike needs (padding them by less than
        2×); in any other order the parts are as large as the budget allows.
    """
    budget = (rows * n_features).cumsum(0).sub_(1).div_(_PART_ELEMENTS, rounding_mode="floor")
    new_part = budget.diff(prepend=budget.new_full((1,), -1)) > 0
    # and where the running maximum of the needs crosses a power of 2
    octave = rows.cummax(0).values.double().log2_().floor_()
    new_part[1:] |= octave.diff() != 0
    starts = new_part.nonzero().flatten()
    stops = torch.cat([starts[1:], starts.new_tensor([rows.numel()])])
    part = new_part.cumsum(0).sub_(1)
    most = torch.zeros_like(starts).scatter_reduce_(0, part, rows, "amax", include_self=False)
    return list(zip(starts.tolist(), stops.tolist(), most.tolist(), strict=True))
