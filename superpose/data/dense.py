"""The dense sampling strategy: one uniform per element of the batch.

Feature ``j`` is active when its uniform ``u < p_j``, and then ``u / p_j`` is again uniform on
``[0, 1)`` and serves as its magnitude's source through the inverse CDF, so one number per
element decides both. Sets, a hierarchy and a copula change who fires (see
:class:`~superpose.data.firing.Firing`), never the magnitudes' sources; a hierarchy's
``parent_scale`` then multiplies children's magnitudes by their parents'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from superpose._checks import broadcast_instances
from superpose.data.magnitudes import MAGNITUDES
from superpose.data.sampling import below_one, new_batch, uniform

if TYPE_CHECKING:
    from superpose.data.features import SparseFeatures

_TINY = torch.finfo(torch.float32).tiny


def draw_dense(
    features: SparseFeatures,
    probability: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """A batch ``(instance, batch_size, n_features)`` of ``features``' distribution for
    ``probability: (instance, 1, n_features)`` on ``generator``'s device, feature-major for
    at most :data:`~superpose.data.sampling.FEATURE_MAJOR` features (see
    :func:`~superpose.data.sampling.new_batch`)."""
    firing = features.firing
    n_instances = probability.shape[0]
    u = new_batch(
        lambda shape: uniform(shape, generator), n_instances, batch_size, features.n_features
    )
    if firing.independent and features.inverse_cdf is MAGNITUDES["uniform"]:
        if firing.shared_probability:
            probability = probability[..., :1]  # one per instance: a faster broadcast
        return below_one(u.div_(-probability.clamp_min(_TINY)))
    threshold = (
        probability
        if firing.factor is None
        else _copula_threshold(features, probability, batch_size, generator)
    )
    if firing.set_index is None:
        active = u < threshold
        source = u / threshold.clamp_min(_TINY)
    else:
        w = uniform((n_instances, batch_size, firing.n_sets), generator)
        in_set = firing.set_index >= 0
        w = torch.where(in_set, w[..., firing.set_index.clamp_min(0)], u)
        lower = torch.where(in_set, firing.lower * probability, 0.0)
        upper = torch.where(in_set, firing.upper * probability, threshold)
        active = (w >= lower) & (w < upper)
        # a set member's own u is its magnitude's source as is: divide it by 1
        source = u / torch.where(in_set, 1.0, threshold.clamp_min(_TINY))
    for children, parents in firing.levels:
        active[..., children] &= active[..., parents]
    x = torch.where(active, features.inverse_cdf(source), 0.0)
    if firing.parent_scale is not None:
        scale = firing.parent_scale.to(x.device)
        for children, parents in firing.levels:  # shallowest first: scaled parents
            x[..., children] *= x[..., parents] / scale[parents]
    return x


def _copula_threshold(
    features: SparseFeatures,
    probability: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-sample firing probabilities ``(instance, batch, n_features)`` given the copula's
    shared factors ``g`` (see :class:`~superpose.data.LowRankCorrelation`); their mean over
    ``g`` is ``probability`` ``(instance, 1, n_features)``."""
    firing = features.firing
    factor = broadcast_instances("correlation", firing.factor, probability.shape[0])
    factor = factor.to(generator.device)
    g = torch.randn(
        (probability.shape[0], batch_size, factor.shape[-1]),
        generator=generator,
        device=generator.device,
    )
    shared = g @ factor.mT
    residual = firing.residual.to(generator.device)
    return torch.special.ndtr((torch.special.ndtri(probability) - shared) / residual)
