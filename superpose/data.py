"""Sparse-feature generators: what the toy model's world looks like.

Each feature ``i`` is active with probability ``feature_probability[i]`` (the paper's
``1 - S``) and then takes a magnitude drawn from a chosen distribution (uniform on
``[0, 1]`` by default); otherwise it is 0. Features can be grouped into *correlated* sets
(the whole set is active together) or *anticorrelated* sets (at most one feature of the set
is active at a time), as in the TMS section on correlated and anticorrelated features.

Sampling uses one uniform number ``u`` per element: the feature is active when
``u < p`` and then ``u / p`` is again uniform on ``[0, 1)``, so it serves as the magnitude's
source through the distribution's inverse CDF. That halves the random numbers drawn
compared with drawing activity and magnitude separately. On CPU the uniforms come from
numpy's PCG64, seeded by one draw from the caller's ``torch.Generator`` and split into fixed
chunks filled in parallel (faster than torch's serial CPU generator; the chunking does not
depend on the thread count, so batches depend only on the seed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch

from superpose._checks import (
    ArrayLike,
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


_TINY = torch.finfo(torch.float32).tiny

UNIFORM_CHUNK = 2**19
"""Uniforms per independent PCG64 stream on CPU (fixed, so samples never depend on threads)."""


def uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Float32 numbers uniform on ``[0, 1)`` shaped ``shape``, on ``generator``'s device and
    reproducible from its state (which advances by one draw on CPU).

    CUDA: ``torch.rand``. CPU: one 63-bit seed drawn from ``generator`` seeds numpy PCG64
    streams (``numpy.random.SeedSequence.spawn``), one per :data:`UNIFORM_CHUNK` numbers,
    filled by a thread pool (numpy releases the GIL while filling).
    """
    if generator.device.type != "cpu":
        return torch.rand(shape, generator=generator, device=generator.device)
    seed = int(torch.randint(2**63 - 1, (), generator=generator))
    out = np.empty(math.prod(shape), dtype=np.float32)
    starts = range(0, out.size, UNIFORM_CHUNK)
    streams = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(chunk: int) -> None:
        start = starts[chunk]
        rng = np.random.Generator(np.random.PCG64(streams[chunk]))
        rng.random(out=out[start : start + UNIFORM_CHUNK], dtype=np.float32)

    if len(starts) == 1:
        fill(0)
    else:
        list(_fill_pool().map(fill, range(len(starts))))
    return torch.from_numpy(out).view(shape)


@cache
def _fill_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="uniform")


# A forked child inherits the pool object but not its threads: give it a fresh pool.
os.register_at_fork(after_in_child=_fill_pool.cache_clear)


class SparseFeatures:
    """Seeded generator of sparse feature vectors shaped ``(instance, batch, n_features)``.

    Args:
        n_features: number of features ``n``.
        feature_probability: probability that a feature is active (``1 - S``), in ``[0, 1]``:
            a scalar, one value per instance ``(instance,)``, or ``(instance, n_features)``.
            Use shape ``(1, n_features)`` for per-feature values shared by all instances.
        magnitude: name from :data:`MAGNITUDES` or an inverse CDF mapping uniform ``[0, 1)``
            numbers to magnitudes (applied elementwise).
        correlated_sets: disjoint lists of feature indices; the features of a set are active
            together (one draw per set; their probabilities must be equal). Magnitudes stay
            independent.
        anticorrelated_sets: disjoint lists of feature indices; at most one feature of a set is
            active at a time. Feature ``j`` keeps its marginal probability ``p_j``, so the sum
            of a set's probabilities must be at most 1.
        n_samples: if given, a finite data set of this many fixed samples is drawn once (for
            memorization studies) and :meth:`sample` returns rows of it.
        n_instances: instances of the finite data set (default: the instance count of
            ``feature_probability``; one shared set if that is 1). Ignored for infinite data,
            where :meth:`sample` draws independent data for as many instances as asked.
        normalize: rescale every sample to unit L2 norm (``x / ‖x‖``, as in the memorization
            and double-descent study), for the finite data set and fresh draws alike. A sample
            with no active feature stays all zero.
        seed: int or ``torch.Generator`` for the default random stream; the same seed gives
            the same batches.
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
        self._set_index, self._lower, self._upper = self._set_layout()
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

    def draw(self, batch_size: int, n_instances: int, generator: torch.Generator) -> torch.Tensor:
        """Fresh samples ``(n_instances, batch_size, n_features)`` from the distribution,
        ignoring any finite data set (held-out evaluation uses this); unit-norm rows when
        ``normalize``."""
        x = self._draw_features(batch_size, n_instances, generator)
        if self.normalize:  # an all-zero row divides by ``tiny`` and stays zero
            x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(_TINY))
        return x

    def _draw_features(
        self, batch_size: int, n_instances: int, generator: torch.Generator
    ) -> torch.Tensor:
        """:meth:`draw` before the optional rescaling."""
        probability = broadcast_instances(
            "feature_probability", self.feature_probability, n_instances
        ).to(generator.device)[:, None, :]
        u = uniform((n_instances, batch_size, self.n_features), generator)
        if self._set_index is None and self._inverse_cdf is MAGNITUDES["uniform"]:
            # The common case in one division and one threshold (a masked where is several
            # times slower): u < p exactly when the rounded u/p < 1, and -u/p > -1 keeps it.
            # With p = 0 clamped to tiny, only u = 0 counts as active, with magnitude 0.
            if bool((probability == probability[..., :1]).all()):
                probability = probability[..., :1]  # one per instance: a faster broadcast
            negative_source = u.div_(-probability.clamp_min(torch.finfo(u.dtype).tiny))
            return torch.threshold_(negative_source, -1.0, -0.0).neg_()
        if self._set_index is None:
            active = u < probability
            source = u / probability.clamp_min(torch.finfo(u.dtype).tiny)
        else:
            n_sets = int(self._set_index.max()) + 1
            w = uniform((n_instances, batch_size, n_sets), generator)
            in_set = self._set_index >= 0
            w = torch.where(in_set, w[..., self._set_index.clamp_min(0)], u)
            lower = torch.where(in_set, self._lower * probability, 0.0)
            upper = torch.where(in_set, self._upper * probability, probability)
            active = (w >= lower) & (w < upper)
            source = torch.where(in_set, u, u / probability.clamp_min(torch.finfo(u.dtype).tiny))
        return torch.where(active, self._inverse_cdf(source), 0.0)

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

    def _set_layout(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Per feature: its set's index (-1 if none) and its activity window as multiples of p.

        A feature ``j`` in a set is active when the set's uniform draw ``w`` lies in
        ``[lower_j·p_j, upper_j·p_j)``: for a correlated set the window is ``[0, p)`` for every
        member; for an anticorrelated set the members' windows tile ``[0, Σ p)``.
        """
        if not self.correlated_sets and not self.anticorrelated_sets:
            return None, torch.zeros(0), torch.zeros(0)
        p = self.feature_probability
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
        for k, group in enumerate(self.anticorrelated_sets):
            set_index[group] = offset + k
            cumulative = torch.cumsum(p[:, group], dim=1)
            if (cumulative[:, -1] > 1 + 1e-6).any():
                raise ValueError(
                    f"anticorrelated_sets: the probabilities of {group} sum to more "
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
