"""Input validation shared by the public API: clear errors that name the parameter."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = float | Sequence[float] | Sequence[Sequence[float]] | np.ndarray | torch.Tensor


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise if it is not an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return int(value)


def finite_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def optional_seed(seed: object) -> int | None:
    """Return ``seed`` if it is an int or None (a trainer's ``seed``), else raise a TypeError."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return seed


def _holds_bool(value: object) -> bool:
    """Whether ``value`` is a bool or a (nested) list/tuple holding one (numpy turns ``[True,
    0.5]`` into floats silently)."""
    if isinstance(value, bool | np.bool_):
        return True
    return isinstance(value, list | tuple) and any(_holds_bool(item) for item in value)


def numeric_array(name: str, value: ArrayLike) -> np.ndarray:
    """Convert a number, (nested) sequence of numbers or numpy array to a float64 numpy array
    of any shape, or raise a TypeError naming ``name``: strings, bools, complex numbers,
    ``None`` and ragged nesting are refused, never converted (``"0.1"`` is not 0.1 and
    ``True`` is not 1 here)."""
    message = (
        f"{name} must be a real number or an array of real numbers (not strings or bools), "
        f"got {type(value).__name__} {value!r}"
    )
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(message) from error
    if array.dtype.kind not in "iuf" or _holds_bool(value):
        raise TypeError(message)
    return array.astype(np.float64)


def as_float_tensor(
    name: str, value: ArrayLike, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Convert a number, sequence, numpy array or tensor of real numbers to a ``dtype`` CPU
    tensor of the same shape; strings and bools (also bool tensors) are a TypeError
    (:func:`numeric_array`), non-finite values a ValueError."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a tensor of real numbers, got a {value.dtype} tensor")
        tensor = value.detach().to("cpu", dtype)
    else:
        tensor = torch.as_tensor(numeric_array(name, value), dtype=dtype)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return tensor


def per_instance_feature(
    name: str,
    value: ArrayLike,
    n_features: int,
    *,
    low: float,
    high: float | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate a per-(instance, feature) quantity; return it as ``(instance or 1, n_features)``.

    Shapes follow numpy broadcasting to ``(instance, n_features)``: a scalar (the same
    everywhere), ``(n_features,)`` (one value per feature, shared by all instances),
    ``(instance, 1)`` (one value per instance), ``(1, n_features)`` or
    ``(instance, n_features)``. Values must lie in ``[low, high]`` (``high=None``: no bound).
    """
    tensor = as_float_tensor(name, value, dtype)
    shape = tuple(tensor.shape)
    if tensor.ndim == 1 and shape[0] != n_features:
        raise ValueError(
            f"{name} as a vector is per feature and needs n_features={n_features} entries, "
            f"got shape {shape}; give one value per instance as shape (instance, 1), "
            "e.g. values[:, None] or [[v] for v in values]"
        )
    if tensor.ndim > 2 or (tensor.ndim == 2 and shape[1] not in (1, n_features)):
        raise ValueError(
            f"{name} must broadcast to (instance, n_features={n_features}): a scalar, "
            "(n_features,), (instance, 1), (1, n_features) or (instance, n_features); "
            f"got shape {shape}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    upper = "inf" if high is None else high
    if (tensor < low).any() or (high is not None and (tensor > high).any()):
        raise ValueError(
            f"{name} must lie in [{low}, {upper}], got values in "
            f"[{tensor.min().item():g}, {tensor.max().item():g}]"
        )
    tensor = torch.atleast_2d(tensor)
    return tensor.expand(tensor.shape[0], n_features).contiguous()


def broadcast_instances(name: str, tensor: torch.Tensor, n_instances: int) -> torch.Tensor:
    """Expand a ``(1, ...)`` tensor to ``(n_instances, ...)``; check an existing instance axis."""
    if tensor.shape[0] == n_instances:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(n_instances, *tensor.shape[1:])
    raise ValueError(
        f"{name} has {tensor.shape[0]} instances but {n_instances} are needed "
        "(give a scalar or per-feature value to share it across instances)"
    )


def make_generator(
    seed: int | torch.Generator | None,
    device: str | torch.device = "cpu",
    *,
    stream: str | None = None,
) -> torch.Generator:
    """Return a ``torch.Generator``: the one given, a new one seeded with ``seed``, or for
    ``seed=None`` torch's global generator of ``device`` (the one ``torch.manual_seed`` sets,
    as ``nn.Module`` initialisers use), so that ``torch.manual_seed`` makes runs repeatable.

    ``stream`` names what an int seed is for: the generator is then seeded with a hash of
    ``(stream, seed)``, so that objects of different kinds given the same int never draw the
    same numbers (an SAE seeded 0 must not start at the true directions of a source seeded 0).
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        device = torch.device(device)
        if device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            return torch.cuda.default_generators[index]
        return torch.default_generator
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
    if stream is not None:
        digest = hashlib.sha256(f"{stream}:{int(seed)}".encode()).digest()
        seed = int.from_bytes(digest[:8], "little") >> 1
    return torch.Generator(device=device).manual_seed(int(seed))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Validate a device name; ``None``/``"auto"`` picks CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'cpu'")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return resolved
