"""What the theory modules share: input checks (arrays in, float64 numpy arrays out) and the
moments of TMS's sparse-uniform features."""

from __future__ import annotations

import numpy as np
import torch

from superpose._checks import ArrayLike, as_float_tensor, per_instance_feature


def _float_array(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a finite float64 numpy array (:func:`superpose._checks.as_float_tensor`:
    strings and bools are a TypeError)."""
    return as_float_tensor(name, value, torch.float64).numpy()


def _per_feature(
    name: str, value: ArrayLike, n_features: int, *, low: float, high: float | None
) -> np.ndarray:
    """:func:`superpose._checks.per_instance_feature` in float64: a quantity broadcast to
    ``(instance, n_features)``, returned as ``(instance or 1, n_features)``."""
    tensor = per_instance_feature(name, value, n_features, low=low, high=high, dtype=torch.float64)
    return tensor.numpy()


def _broadcast_instances(arrays: dict[str, np.ndarray], n_instances: int) -> list[np.ndarray]:
    """Expand ``(1, n)`` arrays to ``(n_instances, n)``; refuse a mismatched instance axis."""
    out = []
    for name, array in arrays.items():
        if array.shape[0] not in (1, n_instances):
            raise ValueError(f"{name} has {array.shape[0]} instances but {n_instances} are needed")
        out.append(np.broadcast_to(array, (n_instances, array.shape[1])))
    return out


def _variance(p: np.ndarray) -> np.ndarray:
    """``Var x`` of a sparse-uniform feature active with probability ``p`` (any shape)."""
    return p / 3 - p**2 / 4
