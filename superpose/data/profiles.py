"""Per-feature firing-probability profiles of the sparse-autoencoder literature: Zipf
(SAELens, SynthSAEBench) and geometric (Sharkey et al. 2022)."""

from __future__ import annotations

import torch

from superpose._checks import finite_real, positive_int


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
    exponent = finite_real("exponent", exponent)
    high = finite_real("max_probability", max_probability)
    low = finite_real("min_probability", min_probability)
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
    ratio = finite_real("ratio", ratio)
    expected_active = finite_real("expected_active", expected_active)
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
