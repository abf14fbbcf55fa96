"""Metrics on trained weights and model outputs, batched over instances.

Weight metrics take ``W: (instance, n_hidden, n_features)`` (a tensor, array, or a
:class:`~superpose.models.ToyModel`, whose ``W`` is used); column ``W_i = W[:, :, i]`` is
feature ``i``'s direction and ``Ŵ_i`` its unit vector (zero for an unrepresented feature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from superpose._checks import make_generator, positive_int
from superpose.data import SparseFeatures
from superpose.models import ToyModel

REPRESENTED_NORM = 0.5
"""A feature counts as represented when ``‖W_i‖`` exceeds this (trained norms are ~0 or ~1)."""

_EPS = 1e-8


def _weights(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """Return ``W`` as a float tensor with an instance axis ``(instance, n_hidden, n_features)``."""
    if isinstance(W, ToyModel):
        W = W.W
    if isinstance(W, np.ndarray):
        W = torch.from_numpy(W)
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a tensor, array or ToyModel, got {type(W).__name__}")
    W = W.detach().float()
    if W.ndim == 2:
        W = W[None]
    if W.ndim != 3:
        raise ValueError(
            f"W must be shaped (instance, n_hidden, n_features) or "
            f"(n_hidden, n_features), got {tuple(W.shape)}"
        )
    return W


def gram(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """``WᵀW``: ``(instance, n_features, n_features)``, entry ``(i, j) = W_i · W_j``."""
    W = _weights(W)
    return W.transpose(1, 2) @ W


def feature_norms(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """``‖W_i‖``: ``(instance, n_features)``."""
    return _weights(W).norm(dim=1)


def _unit_overlaps(W: torch.Tensor) -> torch.Tensor:
    """``(Ŵ_i · W_j)²``: ``(instance, n_features i, n_features j)``."""
    unit = W / feature_norms(W).clamp_min(_EPS)[:, None, :]
    return (unit.transpose(1, 2) @ W) ** 2


def superposition(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """The paper's interference measure ``Σ_{j≠i} (Ŵ_i · W_j)²``: ``(instance, n_features)``.

    0 for a feature orthogonal to all others (or not represented).
    """
    overlaps = _unit_overlaps(_weights(W))
    return overlaps.sum(-1) - overlaps.diagonal(dim1=1, dim2=2)


def dimensions_per_feature(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """``D* = m / ‖W‖_F²``: ``(instance,)``; 1 with one dedicated dimension per feature."""
    W = _weights(W)
    return W.shape[1] / W.pow(2).sum((1, 2)).clamp_min(_EPS)


def feature_dimensionality(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²``: ``(instance, n_features)``.

    The fraction of a dimension feature ``i`` gets: 1 when orthogonal to the rest, 1/2 in an
    antipodal pair, 2/5 in a regular pentagon; 0 when not represented (``‖W_i‖ ≈ 0``).
    """
    overlaps = _unit_overlaps(_weights(W))
    norms_sq = overlaps.diagonal(dim1=1, dim2=2)
    return norms_sq / overlaps.sum(-1).clamp_min(_EPS)


def hidden_vectors(W: torch.Tensor | np.ndarray | ToyModel, x: torch.Tensor) -> torch.Tensor:
    """The hidden vectors ``h = W x`` of samples ``x: (instance, n_samples, n_features)``:
    ``(instance, n_samples, n_hidden)`` (the hidden layer of the linear and ReLU-output
    models; for a finite data set, the training points' geometry)."""
    W = _weights(W)
    if x.ndim != 3 or x.shape[0] not in (1, W.shape[0]) or x.shape[2] != W.shape[2]:
        raise ValueError(
            f"x must be shaped (instance={W.shape[0]}, n_samples, n_features={W.shape[2]}), "
            f"got {tuple(x.shape)}"
        )
    return x.to(W) @ W.transpose(1, 2)


def data_dimensionality(hidden: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Each sample's dimensionality ``D_t = ‖h_t‖² / Σ_s (ĥ_t · h_s)²`` over the hidden
    vectors ``hidden: (instance, n_samples, n_hidden)`` of a data set: ``(instance, n_samples)``.

    :func:`feature_dimensionality` with data points in place of features (Henighan et al.
    2023): 1 for a sample orthogonal to all others, ``n_hidden / T`` for each of ``T`` samples
    whose unit vectors form a tight frame (a regular ``T``-gon in 2-D, ``T ≥ 3``: ``2 / T``),
    0 for a sample mapped to zero.
    """
    if isinstance(hidden, np.ndarray):
        hidden = torch.from_numpy(hidden)
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a tensor or array, got {type(hidden).__name__}")
    if hidden.ndim != 3:
        raise ValueError(
            f"hidden must be shaped (instance, n_samples, n_hidden), got {tuple(hidden.shape)}"
        )
    return feature_dimensionality(hidden.transpose(1, 2))


def scalar_metrics(W: torch.Tensor | np.ndarray | ToyModel) -> dict[str, torch.Tensor]:
    """One number per instance for result tables, each ``(instance,)``.

    ``dimensions_per_feature``; ``n_represented`` (features with ``‖W_i‖ > 0.5``);
    ``mean_norm`` over all features; ``mean_superposition``, ``max_superposition`` and
    ``mean_dimensionality`` over represented features only (0 when none is represented):
    an unrepresented feature's direction ``Ŵ_i`` is noise, so its interference means nothing.
    """
    W = _weights(W)
    norms = feature_norms(W)
    represented = norms > REPRESENTED_NORM
    count = represented.sum(-1)
    interference = superposition(W) * represented
    return {
        "dimensions_per_feature": dimensions_per_feature(W),
        "n_represented": count.float(),
        "mean_norm": norms.mean(-1),
        "mean_superposition": interference.sum(-1) / count.clamp_min(1),
        "max_superposition": interference.amax(-1),
        "mean_dimensionality": (feature_dimensionality(W) * represented).sum(-1)
        / count.clamp_min(1),
    }


@dataclass
class ReadoutQuality:
    """How well each feature can be read out, per instance and feature.

    Attributes:
        reconstruction_error: ``(instance, n_features)`` ``E[(y_i − x'_i)²]`` (unweighted).
        false_activation_rate: ``(instance, n_features)`` ``P(x'_i > threshold | x_i = 0)``:
            how often the output claims an absent feature (NaN if the feature is never off).
        signal: ``(instance, n_features)`` RMS over samples with feature ``i`` active of its
            own term ``‖W_i‖² x_i`` in the output pre-activation. Linear and ReLU-output models.
        interference: ``(instance, n_features)`` RMS over all samples of the other features'
            term ``Σ_{j≠i} (W_i · W_j) x_j``. Linear and ReLU-output models.
    """

    reconstruction_error: torch.Tensor
    false_activation_rate: torch.Tensor
    signal: torch.Tensor | None
    interference: torch.Tensor | None


@torch.no_grad()
def readout_quality(
    model: ToyModel,
    data: SparseFeatures,
    n_samples: int = 16384,
    threshold: float = 0.05,
    seed: int | torch.Generator = 0,
) -> ReadoutQuality:
    """Measure per-feature read-out on ``n_samples`` fresh samples of ``data``.

    ``signal``/``interference`` are None for ``"hidden_relu"`` and ``"abs"`` models, whose
    output is not a linear read-off of ``WᵀW x`` (see
    :attr:`superpose.models.ModelKind.reads_gram`).
    """
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    generator = make_generator(seed, model.W.device)
    x = data.draw(positive_int("n_samples", n_samples), model.n_instances, generator)
    out = model(x)
    off = x == 0
    false_active = ((out > threshold) & off).sum(1) / off.sum(1)
    reconstruction = ((model.target(x) - out) ** 2).mean(1)
    if not model.kind_spec.reads_gram:
        return ReadoutQuality(reconstruction, false_active.float(), None, None)
    overlaps = gram(model.W)
    self_gain = overlaps.diagonal(dim1=1, dim2=2)
    own = x * self_gain[:, None, :]
    others = x @ overlaps - own
    on = ~off
    signal = ((own**2).sum(1) / on.sum(1).clamp_min(1)).sqrt()
    interference = (others**2).mean(1).sqrt()
    return ReadoutQuality(reconstruction, false_active.float(), signal, interference)


def features_per_neuron(
    W: torch.Tensor | np.ndarray | ToyModel, threshold: float = 0.1
) -> torch.Tensor:
    """For privileged-basis models: how many features each neuron responds to.

    A neuron ``h_k = ReLU(Σ_i W[k, i] x_i)`` with non-negative inputs fires for feature ``i``
    when ``W[k, i] > threshold``. Returns ``(instance, n_hidden)`` counts: 0 dead,
    1 monosemantic, ≥ 2 polysemantic.
    """
    return (_weights(W) > threshold).sum(-1)


def neuron_monosemanticity(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """Share of each neuron's positive input weight mass on its strongest feature.

    ``max_i W[k,i]₊² / Σ_i W[k,i]₊²``: ``(instance, n_hidden)``, 1 for a monosemantic neuron,
    ``1/r`` for one spread evenly over ``r`` features, 0 for a neuron with no positive weight.
    """
    positive = _weights(W).clamp_min(0) ** 2
    return positive.amax(-1) / positive.sum(-1).clamp_min(_EPS)


def cosine_similarity(W: torch.Tensor | np.ndarray | ToyModel) -> torch.Tensor:
    """``Ŵ_i · Ŵ_j``: ``(instance, n_features, n_features)``, the cosine between feature
    directions (0 involving an unrepresented, zero-norm feature)."""
    W = _weights(W)
    unit = W / feature_norms(W).clamp_min(_EPS)[:, None, :]
    return unit.transpose(1, 2) @ unit


def mean_cosine(
    W: torch.Tensor | np.ndarray | ToyModel,
    features_a: list[int] | tuple[int, ...],
    features_b: list[int] | tuple[int, ...],
) -> torch.Tensor:
    """Mean cosine ``Ŵ_i · Ŵ_j`` over pairs ``i ∈ features_a``, ``j ∈ features_b``, ``i ≠ j``:
    ``(instance,)``. Within one set (``features_a == features_b``) it is ≈ 1 when the set has
    collapsed onto one direction, ≈ 0 for an orthogonal set and ≈ −1 for an antipodal pair."""
    cosine = cosine_similarity(W)
    a, b = list(features_a), list(features_b)
    n = cosine.shape[-1]
    if not a or not b or any(not 0 <= i < n for i in (*a, *b)):
        raise ValueError(f"features must be non-empty lists of indices in [0, {n - 1}]")
    pairs = [(i, j) for i in a for j in b if i != j]
    if not pairs:
        raise ValueError("mean_cosine needs at least one pair of distinct features")
    rows, cols = zip(*pairs, strict=True)
    return cosine[:, list(rows), list(cols)].mean(-1)
