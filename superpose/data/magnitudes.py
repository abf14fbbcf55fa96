"""Magnitude distributions of active features, each given by its inverse CDF on ``[0, 1)``:
the named ones (:data:`MAGNITUDES`) and the normal families of the SAE literature."""

from __future__ import annotations

from collections.abc import Callable

import torch

from superpose._checks import ArrayLike, as_float_tensor

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
