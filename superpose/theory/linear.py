"""The optimal linear model ``x' = WᵀWx + b`` in closed form: :func:`optimal_linear`."""

from __future__ import annotations

import numpy as np

from superpose._checks import ArrayLike, positive_int
from superpose.theory._common import _broadcast_instances, _float_array, _per_feature, _variance


def optimal_linear(
    importance: ArrayLike, feature_probability: ArrayLike, n_hidden: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
    """The optimal linear model ``x' = WᵀWx + b`` and its exact loss.

    Optimal means: ``(W, b)`` minimise ``L = E[Σ_i I_i (x_i − x'_i)²]`` over all real
    ``W: (n_hidden, n_features)`` and ``b: (n_features,)``.

    Derivation. Write ``P = WᵀW``, ``μ = E[x]`` and ``Σ = Cov x``, which is diagonal with
    ``v_i = p_i/3 − p_i²/4`` because features are independent. The residual is
    ``(1 − P)x − b``; its mean is removed exactly by ``b = (1 − P)μ``, so
    ``L = ‖D_I^{1/2} (1 − P) Σ^{1/2}‖_F²`` with ``D_I = diag(I)``. Dropping the constraint that
    ``P`` be of the form ``WᵀW`` and asking only ``rank P ≤ n_hidden``, this is the distance of
    the diagonal matrix ``A = diag(√(I_i v_i))`` to ``D_I^{1/2} P Σ^{1/2}``, a matrix of rank
    ``≤ n_hidden``; by Eckart–Young the best one keeps the ``n_hidden`` largest diagonal entries
    of ``A``, i.e. ``P`` = the coordinate projection onto the features with the largest
    ``I_i v_i`` (the PCA of the importance-weighted covariance). That projection is ``WᵀW`` for
    ``W`` = those unit rows, so it is optimal among linear models, with::

        b_i = p_i/2 for a dropped feature, 0 for a kept one
        L   = Σ_{i dropped} I_i (p_i/3 − p_i²/4)

    (Without a bias the second moment ``E[x xᵀ]`` replaces ``Σ``; it is not diagonal, so the
    answer is not a coordinate projection.) Ties in ``I_i v_i`` are broken towards the lower
    feature index; any tied choice has the same loss.

    Args:
        importance: ``I_i ≥ 0``, ``(n_features,)`` or ``(instance, n_features)``.
        feature_probability: ``p_i ∈ [0, 1]``: scalar, ``(n_features,)``,
            ``(instance, n_features)`` or ``(instance, 1)``.
        n_hidden: ``m ≥ 1``; with ``m ≥ n_features`` every feature is kept and ``L = 0``.

    Returns:
        ``W: (instance, n_hidden, n_features)``, ``b: (instance, n_features)`` and the loss
        ``(instance,)``; without an instance axis in the inputs, ``(n_hidden, n_features)``,
        ``(n_features,)`` and a float.
    """
    n_hidden = positive_int("n_hidden", n_hidden)
    importance_array = _float_array("importance", importance)
    if importance_array.ndim not in (1, 2):
        raise ValueError(
            "importance must be shaped (n_features,) or (instance, n_features), "
            f"got {importance_array.shape}"
        )
    n_features = importance_array.shape[-1]
    batched = importance_array.ndim == 2 or np.ndim(feature_probability) == 2
    weights = _per_feature("importance", importance_array, n_features, low=0.0, high=None)
    p = _per_feature("feature_probability", feature_probability, n_features, low=0.0, high=1.0)
    n_instances = max(weights.shape[0], p.shape[0])
    weights, p = _broadcast_instances(
        {"importance": weights, "feature_probability": p}, n_instances
    )

    score = weights * _variance(p)
    n_kept = min(n_hidden, n_features)
    kept = np.argsort(-score, axis=-1, kind="stable")[:, :n_kept]  # (instance, n_kept)
    W = np.zeros((n_instances, n_hidden, n_features))
    rows = np.arange(n_kept)
    W[np.arange(n_instances)[:, None], rows[None], kept] = 1.0
    is_kept = W.any(axis=1)  # (instance, n_features)
    b = np.where(is_kept, 0.0, p / 2)
    loss = np.where(is_kept, 0.0, score).sum(-1)
    if batched:
        return W, b, loss
    return W[0], b[0], float(loss[0])
