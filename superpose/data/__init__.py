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
the SAE sources use it for instances whose mean probability is below 3 %.
The trainer draws through :meth:`SparseFeatures.sample_rows`, which does the same for such
instances and keeps only their non-empty rows (a :class:`CompactBatch`), so a training run's
batches for a seed differ from :meth:`SparseFeatures.sample`'s there (same distribution).

Where batches come from is a written contract, :mod:`~superpose.data.source`: a trainer asks
a :class:`BatchSource` (feature batches: :class:`SparseFeatures`, the sweeps' per-cell
streams) or an :class:`ActivationBatchSource` (the SAE sources) for nothing else.

Modules (every public name is importable from ``superpose.data``):
:mod:`~superpose.data.source` (the batch contract), :mod:`~superpose.data.features`
(:class:`SparseFeatures`, the distribution as data), :mod:`~superpose.data.firing` (its
sets, hierarchy and copula compiled to tensors), the sampling strategies
:mod:`~superpose.data.dense` (one uniform per element) and :mod:`~superpose.data.sparse`
(active entries only: sparse tensors and compact rows), :mod:`~superpose.data.profiles`
(firing profiles), :mod:`~superpose.data.magnitudes` (magnitude distributions),
:mod:`~superpose.data.structure` (hierarchy and correlation) and
:mod:`~superpose.data.sampling` (uniforms, sparse positions, the batch layouts). Their
speed-tuning constants are internal and no longer exported (the old names still resolve
here, with a DeprecationWarning).
"""

import warnings

from superpose.data import sampling, sparse
from superpose.data.features import SparseFeatures
from superpose.data.magnitudes import (
    HALF_STEP,
    MAGNITUDES,
    InverseCDF,
    folded_normal,
    rectified_normal,
)
from superpose.data.profiles import geometric_probability, zipf_probability
from superpose.data.sampling import (
    CompactBatch,
    below_one,
    bernoulli_positions,
    feature_major,
    new_batch,
    row_parts,
    uniform,
)
from superpose.data.source import ActivationBatchSource, BatchSource
from superpose.data.structure import Hierarchy, LowRankCorrelation

__all__ = [
    "HALF_STEP",
    "MAGNITUDES",
    "ActivationBatchSource",
    "BatchSource",
    "CompactBatch",
    "Hierarchy",
    "InverseCDF",
    "LowRankCorrelation",
    "SparseFeatures",
    "below_one",
    "bernoulli_positions",
    "feature_major",
    "folded_normal",
    "geometric_probability",
    "new_batch",
    "rectified_normal",
    "row_parts",
    "uniform",
    "zipf_probability",
]

_INTERNAL = {
    "FEATURE_MAJOR": (sampling, "FEATURE_MAJOR"),
    "PART_ELEMENTS": (sampling, "_PART_ELEMENTS"),
    "SLACK_SIGMAS": (sampling, "_SLACK_SIGMAS"),
    "UNIFORM_CHUNK": (sampling, "_UNIFORM_CHUNK"),
    "SPARSE_DENSITY": (sparse, "_SPARSE_DENSITY"),
    "SPARSE_MIN_ELEMENTS": (sparse, "_SPARSE_MIN_ELEMENTS"),
}
"""Speed-tuning constants once exported here (superpose 0.4), by their internal homes."""


def __getattr__(name: str) -> object:
    if name in _INTERNAL:
        module, internal = _INTERNAL[name]
        warnings.warn(
            f"superpose.data.{name} is an internal tuning constant and will be removed from "
            f"superpose.data; it is {module.__name__}.{internal}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, internal)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
