"""Sparse-feature generators: what the toy model's world looks like.

Each feature ``i`` is active with probability ``feature_probability[i]`` (the paper's
``1 - S``) and then takes a magnitude drawn from a chosen distribution (uniform on
``[0, 1]`` by default); otherwise it is 0. Features can be grouped into *correlated* sets
(the whole set is active together) or *anticorrelated* sets (at most one feature of the set
is active at a time), as in the TMS section on correlated and anticorrelated features.

The firing profiles and structures of the sparse-autoencoder literature are here too:
:func:`zipf_probability` and :func:`geometric_probability` build per-feature probability
profiles, :func:`folded_normal` and :func:`rectified_normal` are magnitude distributions,
:class:`Hierarchy` gates children on their parents (siblings optionally mutually exclusive),
and :class:`LowRankCorrelation` correlates the features' firing through a Gaussian copula
while keeping every feature's marginal probability.

Sampling uses one uniform number ``u`` per element: the feature is active when
``u < p`` and then ``u / p`` is again uniform on ``[0, 1)``, so it serves as the magnitude's
source through the distribution's inverse CDF. That halves the random numbers drawn
compared with drawing activity and magnitude separately. On CPU the uniforms come from
numpy's PCG64, seeded by one draw from the caller's ``torch.Generator`` and split into fixed
chunks filled in parallel (faster than torch's serial CPU generator; the chunking does not
depend on the thread count, so batches depend only on the seed).

Independent features (no sets, hierarchy or correlation; a named magnitude) can instead be
drawn sparsely, touching only the active entries: :func:`bernoulli_positions` draws the
gaps between each feature's successes (geometric), then one uniform per active entry gives
its magnitude. The distribution is the same, the numbers for a seed are not, so
:meth:`SparseFeatures.sample` and :meth:`SparseFeatures.draw` stay dense (a seed gives the
batches it always gave) and :meth:`SparseFeatures.sample_sparse` returns the sparse tensor;
the SAE sources use it for instances whose mean probability is below :data:`SPARSE_DENSITY`.
The trainer draws through :meth:`SparseFeatures.sample_rows`, which does the same for such
instances and keeps only their non-empty rows (a :class:`CompactBatch`), so a training run's
batches for a seed differ from :meth:`SparseFeatures.sample`'s there (same distribution).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from superpose._checks import (
    ArrayLike,
    as_float_tensor,
    broadcast_instances,
    make_generator,
    per_instance_feature,
    positive_int,
    resolve_device,
)

InverseCDF = Callable[[torch.Tensor], torch.Tensor]

MAGNITUDES: dict[str, InverseCDF] = {
    "uniform": lambda u: u,
    "signed_uniform": lambda u: 2.0 * u - 1.0,
    "constant": torch.ones_like,
    "exponential": lambda u: -torch.log1p(-u),
}
"""Named magnitude distributions, each given by its inverse CDF on ``[0, 1)``.

``uniform``: U[0, 1] (the paper's default); ``signed_uniform``: U[-1, 1] (the computation
model's input); ``constant``: always 1; ``exponential``: Exp(1).
"""


HALF_STEP = 2.0**-25
"""Half the spacing of float32 uniforms (multiples of ``2**-24``): an inverse CDF evaluated at
``max(u, HALF_STEP)`` stays finite when ``u`` is exactly 0 (a normal quantile of -5.4)."""


def _real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def zipf_probability(
    n_features: int,
    exponent: float = 1.0,
    max_probability: float = 0.3,
    min_probability: float = 0.01,
) -> torch.Tensor:
    """Zipf (power-law) firing probabilities ``(n_features,)``, decreasing with the index.

    Feature ``i`` (rank ``r = i + 1``) gets ``r**-exponent`` mapped affinely onto
    ``[min_probability, max_probability]``: the first feature fires with ``max_probability``,
    the last with ``min_probability``. This is the profile of SAELens's synthetic data
    (``zipfian_firing_probabilities``) used by SynthSAEBench (exponent 0.5, maximum 0.4,
    minimum 5e-4), kept so that its worlds can be rebuilt; it is a power law up to that
    affine map. One feature gets ``max_probability``.

    Pass it as ``feature_probability=profile[None, :]`` (one row shared by all instances).
    """
    n_features = positive_int("n_features", n_features)
    exponent = _real("exponent", exponent)
    high = _real("max_probability", max_probability)
    low = _real("min_probability", min_probability)
    if exponent <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    if not 0 <= low <= high <= 1:
        raise ValueError(
            "need 0 <= min_probability <= max_probability <= 1, got "
            f"min_probability={low}, max_probability={high}"
        )
    if n_features == 1:
        return torch.tensor([high], dtype=torch.float32)
    power = torch.arange(1, n_features + 1, dtype=torch.float64) ** -exponent
    fraction = (power - power[-1]) / (power[0] - power[-1])
    return (low + (high - low) * fraction).to(torch.float32)


def geometric_probability(
    n_features: int, ratio: float = 0.99, expected_active: float = 5.0
) -> torch.Tensor:
    """Geometric firing probabilities ``(n_features,)``: ``p_i ∝ ratio**i`` with
    ``Σ p_i = expected_active`` (the expected number of active features per sample).

    Sharkey, Braun & Millidge (2022, "Taking features out of superposition with sparse
    autoencoders") use ``ratio=0.99`` scaled to about 5 active features among 512.

    Raises:
        ValueError: if the scale needed makes a probability exceed 1 (``expected_active``
            above ``Σ ratio**i / max ratio**i``).
    """
    n_features = positive_int("n_features", n_features)
    ratio = _real("ratio", ratio)
    expected_active = _real("expected_active", expected_active)
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    if expected_active <= 0:
        raise ValueError(f"expected_active must be > 0, got {expected_active}")
    decay = ratio ** torch.arange(n_features, dtype=torch.float64)
    reachable = float(decay.sum() / decay.max())
    if expected_active > reachable:
        raise ValueError(
            f"expected_active={expected_active} is unreachable with ratio={ratio} and "
            f"n_features={n_features}: it must be at most {reachable:.6g} so that every "
            "probability stays <= 1"
        )
    return (decay * (expected_active / decay.sum())).to(torch.float32)


def _magnitude_parameter(name: str, value: ArrayLike, low: float | None) -> torch.Tensor:
    """A magnitude parameter broadcastable against a ``(instance, batch, n_features)`` batch:
    a scalar, ``(n_features,)`` per feature, or ``(instance, n_features)``."""
    tensor = as_float_tensor(name, value)
    if tensor.ndim > 2:
        raise ValueError(
            f"{name} must be a scalar, (n_features,) or (instance, n_features); "
            f"got shape {tuple(tensor.shape)}"
        )
    if low is not None and (tensor < low).any():
        raise ValueError(f"{name} must be >= {low}, got minimum {tensor.min().item():g}")
    return tensor[:, None, :] if tensor.ndim == 2 else tensor


def _normal_magnitude(name: str, mean: ArrayLike, std: ArrayLike, fold: bool) -> InverseCDF:
    mean_tensor = _magnitude_parameter("mean", mean, low=None)
    std_tensor = _magnitude_parameter("std", std, low=0.0)

    def inverse_cdf(u: torch.Tensor) -> torch.Tensor:
        z = torch.special.ndtri(u.clamp_min(HALF_STEP))
        value = mean_tensor.to(u.device) + std_tensor.to(u.device) * z
        return value.abs() if fold else value.clamp_min(0.0)

    inverse_cdf.__name__ = name
    return inverse_cdf


def folded_normal(mean: ArrayLike = 1.0, std: ArrayLike = 1.0) -> InverseCDF:
    """Folded-normal magnitudes ``|N(mean, std²)|``, usable as ``magnitude=``.

    ``mean`` and ``std`` are those of the normal before folding (as in SAELens's
    ``FoldedNormalMagnitudeConfig``); each is a scalar, ``(n_features,)`` per feature or
    ``(instance, n_features)``; ``std`` may be 0 (constant magnitude ``|mean|``). Magnitudes are
    ``|mean + std·Φ⁻¹(u)|`` for the uniform source ``u``.
    """
    return _normal_magnitude("folded_normal", mean, std, fold=True)


def rectified_normal(mean: ArrayLike = 1.0, std: ArrayLike = 1.0) -> InverseCDF:
    """Rectified-normal magnitudes ``max(0, N(mean, std²))``, usable as ``magnitude=``.

    SAELens's activation generator (and so SynthSAEBench) draws each firing feature's magnitude
    as ``mean_i + std_i·N(0, 1)`` and then applies a ReLU; this is that distribution (a firing
    feature can take magnitude 0). Arguments as for :func:`folded_normal`.
    """
    return _normal_magnitude("rectified_normal", mean, std, fold=False)


@dataclass(frozen=True)
class Hierarchy:
    """Parent-child structure of the features: a child can fire only when its parent fires.

    Args:
        parent: ``(n_features,)`` parent index of every feature, ``-1`` for a root. Trees of any
            depth; no cycles.
        exclusive: whether the children of a parent are mutually exclusive (at most one fires
            at a time): ``True`` for every parent, ``False`` for none, or the parents' indices.

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
        scale = _real("scale", scale)
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


_TINY = torch.finfo(torch.float32).tiny

UNIFORM_CHUNK = 2**19
"""Uniforms per independent PCG64 stream on CPU (fixed, so samples never depend on threads)."""


def uniform(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Numbers uniform on ``[0, 1)`` shaped ``shape`` (``dtype`` float32 or float64), on
    ``generator``'s device and reproducible from its state (which advances by one draw on CPU).

    CUDA: ``torch.rand``. CPU: one 63-bit seed drawn from ``generator`` seeds numpy PCG64
    streams (``numpy.random.SeedSequence.spawn``), one per :data:`UNIFORM_CHUNK` numbers,
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
    starts = range(0, out.size, UNIFORM_CHUNK)
    streams = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(chunk: int) -> None:
        part = out[starts[chunk] : starts[chunk] + UNIFORM_CHUNK]
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


SPARSE_DENSITY = 0.03
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

FEATURE_MAJOR = 8
"""Batches of at most this many features are drawn feature-major: stored as ``(instance,
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


SLACK_SIGMAS = 4.0
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
        slots = (mean + SLACK_SIGMAS * (mean * (1 - pc)).sqrt()).long() + int(SLACK_SIGMAS)
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


PART_ELEMENTS = 2**18
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
        :data:`PART_ELEMENTS` elements together, each with the most rows any of them needs.
        A part also ends where the running maximum of the needs reaches the next power of 2,
        so instances ordered by sparsity form parts of alike needs (padding them by less than
        2×); in any other order the parts are as large as the budget allows.
    """
    budget = (rows * n_features).cumsum(0).sub_(1).div_(PART_ELEMENTS, rounding_mode="floor")
    new_part = budget.diff(prepend=budget.new_full((1,), -1)) > 0
    # and where the running maximum of the needs crosses a power of 2
    octave = rows.cummax(0).values.double().log2_().floor_()
    new_part[1:] |= octave.diff() != 0
    starts = new_part.nonzero().flatten()
    stops = torch.cat([starts[1:], starts.new_tensor([rows.numel()])])
    part = new_part.cumsum(0).sub_(1)
    most = torch.zeros_like(starts).scatter_reduce_(0, part, rows, "amax", include_self=False)
    return list(zip(starts.tolist(), stops.tolist(), most.tolist(), strict=True))


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
        self._run_plans: dict[tuple[int | None, str], list[tuple[torch.Tensor, bool]]] = {}
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
        non-empty rows, unless ``sparse`` is False (the trainer's CUDA graphs need the same
        shapes every step); the other instances are drawn densely as by :meth:`draw`. The
        distribution is :meth:`sample`'s, but a seed gives other numbers than
        :meth:`sample` where an instance is drawn sparsely. Otherwise this is :meth:`sample`'s
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
        for probability, drawn_sparsely in self._runs(n_instances, generator.device):
            if drawn_sparsely:
                run = self._sparse_rows(probability, batch_size, generator)
                parts += run.parts
                repeats += run.repeats
            else:
                parts.append(self._draw_dense(probability[:, None], batch_size, generator))
                repeats.append(0)
        return CompactBatch(tuple(parts), tuple(repeats), batch_size)

    def _runs(
        self, n_instances: int | None, device: torch.device
    ) -> list[tuple[torch.Tensor, bool]]:
        """:meth:`sample_rows`' plan: the runs of consecutive instances drawn alike, each as
        its probabilities ``(instances, n_features)`` on ``device`` and whether it is drawn
        sparsely (mean probability below :data:`SPARSE_DENSITY`). Made once per instance count
        and device: ``feature_probability`` is fixed at construction."""
        key = (n_instances, str(device))
        if key not in self._run_plans:
            probability = self._instance_probability(n_instances).to(device)
            sparse = (probability.mean(-1) < SPARSE_DENSITY).tolist()
            stops = [k for k in range(1, len(sparse)) if sparse[k] != sparse[k - 1]]
            self._run_plans[key] = [
                (probability[start:stop], sparse[start])
                for start, stop in zip([0, *stops], [*stops, len(sparse)], strict=True)
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
