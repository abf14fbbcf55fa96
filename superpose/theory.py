"""Exact theory of the toy models, without training or sampling.

The data are TMS's sparse-uniform features: feature ``i`` is independently active with
probability ``p_i`` and then uniform on ``[0, 1]``, else 0, so ``E[x_i] = p_i/2``,
``E[x_i²] = p_i/3`` and ``Var x_i = p_i/3 − p_i²/4``. The loss is the paper's
``L = E[Σ_i I_i (x_i − x'_i)²]`` with importance ``I_i``.

* :func:`optimal_linear` — the best linear model ``x' = WᵀWx + b`` in closed form.
* :func:`expected_loss` — the exact loss of any ReLU-output model ``x' = ReLU(WᵀWx + b)``.
* :func:`phase_diagram` — TMS's "phase change" diagrams (``n=2, m=1`` and ``n=3, m=2``) from
  the exact losses of the candidate solutions; :func:`classify_solution` gives trained weights
  the same labels and :func:`phase_agreement` compares the two.

Arrays come in as numpy arrays, torch tensors or nested sequences and are computed in float64;
results are numpy arrays (a Python float for a single unbatched loss).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from math import comb

import numpy as np
import torch

from superpose._checks import ArrayLike, as_float_tensor, per_instance_feature, positive_int
from superpose.analysis import REPRESENTED_NORM

MAX_EXACT_FEATURES = 12
""":func:`expected_loss` sums over all ``2**n_features`` active sets; larger ``n`` is refused."""

PHASES = ("not represented", "dedicated", "superposition")
"""Phase labels of the last ("extra") feature: ``labels`` index into this tuple."""

_TINY_COEFFICIENT = 1e-100
"""``|WᵀW|`` entries below this are treated as exactly 0 (changes the loss by < 1e-99)."""

_ROWS_PER_CHUNK_ELEMENTS = 1 << 21
"""Work-array budget (float64 elements) per chunk of integration problems."""


# --------------------------------------------------------------------------- input checks


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


# --------------------------------------------------------------------------- optimal linear


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


# --------------------------------------------------------------------------- exact integration
#
# Every term of the ReLU-output loss is, for one active set S (k features, magnitudes
# u ∈ [0,1]^k), an expectation E[ω(u_k) φ(c + Σ_j a_j u_j)] with φ(t) = t_+^power and weight
# ω = 1 or ω(u_k) = u_k. It is computed exactly by integrating out one coordinate at a time:
# f_0(s) = φ(c + s), f_j(s) = ∫_0^1 f_{j-1}(s + a_j u) du. Each f_j is a piecewise polynomial
# whose knots are the subset sums of the a's; it is stored as
#   knots (B, K) sorted;  coef (B, K+1, D+1): piece q's Taylor coefficients about its anchor,
#   piece 0 = (-inf, knot_0] anchored at knot_0, piece q ≥ 1 = [knot_{q-1}, knot_q] (the last
#   one unbounded) anchored at knot_{q-1}.
# Each step is done in local coordinates, so no large terms cancel; see expected_loss.


def _taylor_shift(coef: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Coefficients of ``w ↦ p(w + delta)`` from those of ``p``: ``(..., D+1)``, ``delta (...)``."""
    out = coef.copy()
    degree = coef.shape[-1] - 1
    for i in range(degree):
        for j in range(degree - 1, i - 1, -1):
            out[..., j] += delta * out[..., j + 1]
    return out


def _integral_from_zero(coef: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``∫_0^length Σ_r coef_r w^r dw``: ``coef (..., D+1)``, ``length (...)`` → ``(...)``."""
    total = np.zeros(coef.shape[:-1])
    for r in range(coef.shape[-1] - 1, -1, -1):  # Horner in ``length``
        total = (total + coef[..., r] / (r + 1)) * length
    return total


def _anchors(knots: np.ndarray) -> np.ndarray:
    """Anchor of each piece, ``(B, K+1)``: knot 0 for piece 0, else the piece's left knot."""
    return np.concatenate([knots[:, :1], knots], axis=1)


def _average_step(
    knots: np.ndarray, coef: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``g(x) = ∫_0^1 f(x + h u) du`` for piecewise-polynomial ``f``.

    Args: ``knots (B, K)``, ``coef (B, K+1, D+1)``, ``h (B,)``.
    Returns: ``knots (B, 2K)``, ``coef (B, 2K+1, D+2)``.

    With ``e = min(h, 0)`` and ``d = |h|``, ``g(x) = (1/d) ∫_{x+e}^{x+e+d} f``. A new piece is
    one where both ends ``lo = x+e`` and ``hi = x+e+d`` stay in fixed old pieces ``p1 ≤ p2``:
    for ``p1 = p2`` the average of one polynomial (no division by ``d``), otherwise the
    integral tail of ``p1`` + whole pieces between + head of ``p2``, each a short local
    integral. Sorting the ``h`` ascending in ``|h|`` keeps the whole pieces' cumulative sums
    of size ``O(Σ|h|) ≤ O(k d)``, so their difference loses no more than ``k`` ulps.
    """
    n_rows, n_knots = knots.shape
    degree = coef.shape[-1] - 1
    e = np.minimum(h, 0.0)
    d = np.abs(h)
    safe_d = np.where(d > 0, d, 1.0)
    rows = np.arange(n_rows)[:, None]

    candidates = np.concatenate([knots - e[:, None], knots - (e + d)[:, None]], axis=1)
    order = np.argsort(candidates, axis=1, kind="stable")
    new_knots = np.take_along_axis(candidates, order, axis=1)
    from_lo = order < n_knots
    zero = np.zeros((n_rows, 1), dtype=np.int64)
    p1 = np.concatenate([zero, np.cumsum(from_lo, axis=1)], axis=1)  # piece holding lo
    p2 = np.concatenate([zero, np.cumsum(~from_lo, axis=1)], axis=1)  # piece holding hi
    anchor = _anchors(new_knots)
    old_anchor = _anchors(knots)

    lengths = np.diff(knots, axis=1)  # bounded pieces 1..K-1
    right_end = np.concatenate([zero, lengths, zero], axis=1).astype(np.float64)
    piece_integrals = np.zeros((n_rows, n_knots + 1))
    piece_integrals[:, 1:n_knots] = _integral_from_zero(coef[:, 1:n_knots], lengths)
    cumulative = np.cumsum(piece_integrals, axis=1)

    delta1 = anchor + e[:, None] - old_anchor[rows, p1]
    delta2 = anchor + (e + d)[:, None] - old_anchor[rows, p2]
    at_lo = _taylor_shift(coef[rows, p1], delta1)  # f_{p1}(lo(anchor) + w)
    at_hi = _taylor_shift(coef[rows, p2], delta2)  # f_{p2}(hi(anchor) + w)

    # One piece: G_t = Σ_{m ≥ 0} A_{t+m} C(t+m, t) d^m / (m+1).
    within = np.zeros((n_rows, 2 * n_knots + 1, degree + 2))
    for t in range(degree + 1):
        for m in range(degree + 1 - t):
            within[..., t] += at_lo[..., t + m] * (comb(t + m, t) / (m + 1)) * d[:, None] ** m

    # Across pieces: (tail of p1 + whole pieces + head of p2 + Σ (B_s − A_s) w^{s+1}/(s+1)) / d.
    tail = _integral_from_zero(at_lo, right_end[rows, p1] - delta1)
    head = _integral_from_zero(coef[rows, p2], delta2)
    middle = cumulative[rows, np.maximum(p2 - 1, 0)] - cumulative[rows, p1]
    across = np.zeros_like(within)
    across[..., 0] = tail + middle + head
    orders = np.arange(1, degree + 2)
    across[..., 1:] = (at_hi - at_lo) / orders
    across /= safe_d[:, None, None]

    new_coef = np.where((p2 > p1)[..., None], across, within)
    # A zero-length piece only carries the value at its point.
    empty = np.zeros_like(p1, dtype=bool)
    empty[:, 1:-1] = np.diff(new_knots, axis=1) == 0
    new_coef[..., 1:] = np.where(empty[..., None], 0.0, new_coef[..., 1:])
    return new_knots, new_coef


def _final_step(knots: np.ndarray, coef: np.ndarray, h: np.ndarray, weighted: bool) -> np.ndarray:
    """``∫_0^1 ω(u) f(h u) du`` with ``ω = 1`` or ``ω(u) = u``: ``(B,)``.

    Substituting ``s = hu``: ``(1/d) ∫_L^R f`` or ``(1/d²) ∫_L^R |s| f(s) ds`` over the window
    ``[L, R] = [min(0,h), max(0,h)]``, summed piece by piece from each piece's clipped start.
    """
    n_rows = knots.shape[0]
    low, high = np.minimum(h, 0.0)[:, None], np.maximum(h, 0.0)[:, None]
    d = np.abs(h)
    inf = np.full((n_rows, 1), np.inf)
    starts = np.minimum(np.maximum(np.concatenate([-inf, knots], axis=1), low), high)
    ends = np.minimum(np.maximum(np.concatenate([knots, inf], axis=1), low), high)
    length = ends - starts
    local = _taylor_shift(coef, starts - _anchors(knots))
    if weighted:  # ∫_0^len (start + w) Σ A_r w^r dw, each piece keeping the sign of s
        shifted = np.concatenate([np.zeros_like(local[..., :1]), local], axis=-1)  # w·A(w)
        moment = starts * _integral_from_zero(local, length) + _integral_from_zero(shifted, length)
        integral = np.sign(h) * moment.sum(-1) / np.where(d > 0, d, 1.0) ** 2
    else:
        integral = _integral_from_zero(local, length).sum(-1) / np.where(d > 0, d, 1.0)
    # d = 0: the value at 0 (times ∫ω = 1 or 1/2).
    piece = (knots <= 0).sum(-1)
    offset = -_anchors(knots)[np.arange(n_rows), piece]
    value = _taylor_shift(coef[np.arange(n_rows), piece], offset)[:, 0]
    return np.where(d > 0, integral, value / 2 if weighted else value)


def _ramp_moment(c: np.ndarray, a: np.ndarray, power: int, weighted: bool) -> np.ndarray:
    """``E[ω(u_k) (c + Σ_j a_j u_j)_+^power]`` for ``u ~ U[0,1]^k``, exactly.

    ``c (B,)``, ``a (B, k)``; ``ω = 1`` or, if ``weighted``, ``ω = u_k`` (the last column).
    The first ``k−1`` columns are integrated in ascending ``|a_j|`` (see :func:`_average_step`).
    Returns ``(B,)``.
    """
    n_rows, k = a.shape
    a = np.where(np.abs(a) < _TINY_COEFFICIENT, 0.0, a)
    inner = np.take_along_axis(a[:, :-1], np.argsort(np.abs(a[:, :-1]), axis=1), axis=1)
    chunk = max(1, _ROWS_PER_CHUNK_ELEMENTS // ((2**k + 1) * (power + k + 1) ** 2))
    out = np.empty(n_rows)
    for start in range(0, n_rows, chunk):
        rows = slice(start, start + chunk)
        knots = -c[rows, None]
        coef = np.zeros((knots.shape[0], 2, power + 1))
        coef[:, 1, power] = 1.0  # (c + s)_+^power: 0 left of -c, w^power right of it
        for j in range(k - 1):
            knots, coef = _average_step(knots, coef, inner[rows, j])
        out[rows] = _final_step(knots, coef, a[rows, -1], weighted)
    return out


def expected_loss(
    W: ArrayLike, b: ArrayLike, feature_probability: ArrayLike, importance: ArrayLike = 1.0
) -> np.ndarray | float:
    """Exact ``L = E[Σ_i I_i (x_i − x'_i)²]`` of the ReLU-output model ``x' = ReLU(WᵀWx + b)``.

    Method. With ``P = WᵀW``, condition on the set ``S`` of active features (probability
    ``Π_{j∈S} p_j Π_{j∉S} (1 − p_j)``) and their magnitudes ``u ∈ [0,1]^|S|``. Output ``i``
    sees ``t_i = b_i + Σ_{j∈S} P_ij u_j``; its error is ``ReLU(t_i)²`` for ``i ∉ S`` and
    ``u_i² − 2 u_i ReLU(t_i) + ReLU(t_i)²`` for ``i ∈ S``. So every term is a moment
    ``E[ReLU(c + a·u)^r]`` or ``E[u_i ReLU(c + a·u)]`` of a piecewise polynomial with a single
    kink hyperplane, integrated over the cube exactly: one coordinate at a time, each step an
    exact convolution of a piecewise polynomial (in t) with a uniform density, represented
    per piece in local Taylor coefficients (knots at the subset sums of ``a``).

    Error bound. There is no quadrature or truncation error: the result is exact up to
    floating-point rounding. Rounding stays at the level of the integrand's own size because
    every step works in local coordinates (Taylor coefficients about each piece's start), only
    quantities that are themselves ``O(|a_j|)`` are divided by ``|a_j|``, and coordinates are
    integrated in ascending ``|a_j|`` so that no cumulative sum exceeds ``k`` times the current
    step's scale. The absolute error is then a small multiple of
    ``ε · 2^n · Σ_i I_i (|b_i| + Σ_j |P_ij| + 1)²`` (``ε ≈ 1.1e-16``): a rounding estimate,
    not a proven bound; against exact rational arithmetic (including entries of ``P`` down
    to 1e-9 and near-equal ones) we measure errors below 2e-15 on single terms and 1e-13 on
    whole losses. Entries ``|P_ij| < 1e-100`` are treated as 0 (an error below 1e-99).

    Cost: ``O(2^n · n · 2^{|S|})`` small-array work per instance, vectorised over instances,
    active sets and outputs; active sets of probability 0 in every instance are skipped.
    About 0.1 s for 100 instances of ``n=5, m=2`` and 1 s for one instance of ``n=10``
    on 2 CPU cores.

    Args:
        W: ``(n_hidden, n_features)`` or ``(instance, n_hidden, n_features)``;
            ``n_features ≤`` :data:`MAX_EXACT_FEATURES`.
        b: ``(n_features,)`` or ``(instance, n_features)``.
        feature_probability: ``p_i ∈ [0, 1]``: scalar, ``(n_features,)``,
            ``(instance, n_features)`` or ``(instance, 1)``.
        importance: ``I_i ≥ 0``: scalar, ``(n_features,)``, ``(instance, n_features)`` or
            ``(instance, 1)``.

    Returns:
        ``(instance,)`` losses, or a float when ``W`` has no instance axis.
    """
    W_array = _float_array("W", W)
    if W_array.ndim not in (2, 3):
        raise ValueError(
            "W must be shaped (n_hidden, n_features) or (instance, n_hidden, n_features), "
            f"got {W_array.shape}"
        )
    batched = W_array.ndim == 3
    W_array = W_array if batched else W_array[None]
    n_instances, _, n_features = W_array.shape
    if not 1 <= n_features <= MAX_EXACT_FEATURES:
        raise ValueError(
            f"W must have 1 to {MAX_EXACT_FEATURES} features for the exact loss, "
            f"got n_features={n_features}"
        )
    b_array = _float_array("b", b)
    if b_array.ndim not in (1, 2) or b_array.shape[-1] != n_features:
        raise ValueError(
            f"b must be shaped (n_features={n_features},) or (instance, n_features), "
            f"got {b_array.shape}"
        )
    bias, p, weights = _broadcast_instances(
        {
            "b": b_array.reshape(-1, n_features),
            "feature_probability": _per_feature(
                "feature_probability", feature_probability, n_features, low=0.0, high=1.0
            ),
            "importance": _per_feature("importance", importance, n_features, low=0.0, high=None),
        },
        n_instances,
    )
    P = np.einsum("imf,img->ifg", W_array, W_array)

    loss = np.prod(1 - p, axis=-1) * (weights * np.maximum(bias, 0.0) ** 2).sum(-1)
    for k in range(1, n_features + 1):
        subsets = np.array(list(itertools.combinations(range(n_features), k)))  # (n_sets, k)
        active = np.zeros((len(subsets), n_features), dtype=bool)
        active[np.arange(len(subsets))[:, None], subsets] = True
        probability = np.where(active, p[:, None, :], 1 - p[:, None, :]).prod(-1)
        needed = probability.max(0) > 0
        subsets, probability = subsets[needed], probability[:, needed]
        if len(subsets) == 0:
            continue
        n_sets = len(subsets)
        # E[ReLU(t_i)²] for every output i: a = P[i, S].
        a_all = P[:, :, subsets].transpose(0, 2, 1, 3)  # (instance, n_sets, n_features, k)
        c_all = np.broadcast_to(bias[:, None, :], a_all.shape[:-1])
        squares = _ramp_moment(c_all.reshape(-1), a_all.reshape(-1, k), 2, weighted=False)
        squares = squares.reshape(n_instances, n_sets, n_features)
        # E[u_i ReLU(t_i)] for active outputs i = S[t]: the others first, u_i last.
        others = np.array([[np.delete(s, t) for t in range(k)] for s in subsets]).reshape(
            n_sets, k, k - 1
        )
        a_cross = np.concatenate(
            [P[:, subsets[:, :, None], others], P[:, subsets, subsets][..., None]], axis=-1
        )  # (instance, n_sets, k, k)
        c_cross = bias[:, subsets]  # (instance, n_sets, k)
        cross = _ramp_moment(c_cross.reshape(-1), a_cross.reshape(-1, k), 1, weighted=True)
        cross = cross.reshape(n_instances, n_sets, k)
        per_set = (weights[:, None, :] * squares).sum(-1) + (
            weights[:, subsets] * (1 / 3 - 2 * cross)
        ).sum(-1)
        loss = loss + (probability * per_set).sum(-1)
    return loss if batched else float(loss[0])


# --------------------------------------------------------------------------- phase diagrams


CANDIDATES: dict[tuple[int, int], tuple[str, ...]] = {
    (2, 1): ("extra ignored", "extra dedicated", "antipodal pair"),
    (3, 2): (
        "extra ignored",
        "extra dedicated, one feature dropped",
        "extra dedicated, others antipodal",
        "extra antipodal with one feature",
        "triangle",
    ),
}
"""The candidate solutions per ``(n_features, n_hidden)``; the last feature is the extra one.

* extra ignored: the other features get dedicated dimensions, the extra one bias ``p/2``
  (loss ``r (p/3 − p²/4)``, closed form).
* extra dedicated: the extra feature gets a dimension and a unit-importance feature gets none
  (bias ``p/2``; loss ``p/3 − p²/4``, closed form) — or, for ``n=3``, the two unit features
  share the other dimension as an antipodal pair.
* antipodal pairs ``W = (α, −β)`` in one dimension (every other feature keeps a dedicated
  one), and the symmetric triangle (the extra feature at angle 0 with norm ``ρ_e``, the others
  at ``±φ`` with norm ``ρ``): norms, angle and biases are optimised on the exact loss.
"""

_SEARCH_STEP = 0.25
_SEARCH_TOLERANCE = 1e-5
_SEARCH_MAX_ITERATIONS = 400
_TIE_TOLERANCE = 1e-10

_Loss = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``loss(theta (rows, dim), cell (rows,)) -> (rows,)``."""
_Solution = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``solution(theta (rows, dim), cell (rows,)) -> (W (rows, m, n), b (rows, n))``."""


def _compass_search(loss: _Loss, start: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``loss`` separately for each cell, starting every cell at ``start (dim,)``.

    A pattern search, vectorised over cells: each iteration tries ``±step`` along every
    parameter and, as a Hooke–Jeeves pattern move, twice the cell's last move; it moves to the
    best improvement or, if none, halves the step. A cell stops when its step is below
    ``_SEARCH_TOLERANCE``. It converges to a stationary point of the (continuously
    differentiable) exact loss; the pattern move speeds it along curved valleys.
    Returns the minimal losses ``(n_cells,)`` and their parameters ``(n_cells, dim)``.
    """
    dim = start.shape[0]
    cells = np.arange(n_cells)
    theta = np.tile(start, (n_cells, 1))
    best = loss(theta, cells)
    if dim == 0:
        return best, theta
    moves = np.concatenate([np.eye(dim), -np.eye(dim)])  # (2 dim, dim)
    step = np.full(n_cells, _SEARCH_STEP)
    last_move = np.zeros_like(theta)
    for _ in range(_SEARCH_MAX_ITERATIONS):
        searching = np.flatnonzero(step >= _SEARCH_TOLERANCE)
        if len(searching) == 0:
            break
        here = theta[searching, None, :]
        probes = np.concatenate(
            [
                here + step[searching, None, None] * moves,
                here + 2 * last_move[searching, None, :],
            ],
            axis=1,
        )  # (searching, 2 dim + 1, dim)
        values = loss(probes.reshape(-1, dim), np.repeat(searching, 2 * dim + 1))
        values = values.reshape(len(searching), 2 * dim + 1)
        choice = values.argmin(-1)
        improved = values[np.arange(len(searching)), choice] < best[searching]
        moved = searching[improved]
        new_theta = probes[improved, choice[improved]]
        last_move[moved] = new_theta - theta[moved]
        theta[moved] = new_theta
        best[moved] = values[improved, choice[improved]]
        last_move[searching[~improved]] = 0.0
        step[searching[~improved]] /= 2
    return best, theta


def _candidates(
    key: tuple[int, int], r: np.ndarray, p: np.ndarray
) -> dict[str, tuple[np.ndarray, _Loss, _Solution]]:
    """Each candidate's ``(starts (n_starts, dim), loss, solution)`` on the cells ``r (cells,)``,
    ``p (cells,)``; the loss may use a reduced model that leaves out exactly reconstructed
    dedicated features, the solution gives the full ``(W, b)``."""
    n_features, n_hidden = key
    variance = _variance(p)

    def pair_loss(importance: np.ndarray) -> _Loss:
        # theta = (α, β, b_0, b_1): W = (α, −β) with importances (1, importance).
        def loss(theta: np.ndarray, cell: np.ndarray) -> np.ndarray:
            W = np.stack([theta[:, 0], -theta[:, 1]], axis=-1)[:, None, :]
            weights = np.stack([np.ones(len(cell)), importance[cell]], axis=-1)
            return expected_loss(W, theta[:, 2:], p[cell, None], weights)

        return loss

    def placed(columns: dict[tuple[int, int], Callable], biases: dict[int, Callable]):
        # A solution with W[h, f] = columns[(h, f)](theta, cell), b[f] = biases[f](...).
        def solution(theta: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            W = np.zeros((len(cell), n_hidden, n_features))
            b = np.zeros((len(cell), n_features))
            for (h, f), value in columns.items():
                W[:, h, f] = value(theta, cell)
            for f, value in biases.items():
                b[:, f] = value(theta, cell)
            return W, b

        return solution

    def one(theta: np.ndarray, cell: np.ndarray) -> np.ndarray:
        return np.ones(len(cell))

    def mean(theta: np.ndarray, cell: np.ndarray) -> np.ndarray:
        return p[cell] / 2

    def parameter(index: int, sign: float = 1.0) -> Callable:
        return lambda theta, cell: sign * theta[:, index]

    no_parameters = np.zeros((1, 0))
    extra = n_features - 1
    candidates = {
        "extra ignored": (
            no_parameters,
            lambda theta, cell: r[cell] * variance[cell],
            placed({(h, h): one for h in range(n_hidden)}, {extra: mean}),
        )
    }
    pair_start = np.array([[1.0, 1.0, 0.0, 0.0]])
    if key == (2, 1):
        candidates["extra dedicated"] = (
            no_parameters,
            lambda theta, cell: variance[cell],
            placed({(0, 1): one}, {0: mean}),
        )
        candidates["antipodal pair"] = (
            pair_start,
            pair_loss(r),
            placed(
                {(0, 0): parameter(0), (0, 1): parameter(1, -1)}, {0: parameter(2), 1: parameter(3)}
            ),
        )
        return candidates

    def triangle_loss(theta: np.ndarray, cell: np.ndarray) -> np.ndarray:
        W, b = triangle(theta, cell)
        weights = np.stack([np.ones(len(cell)), np.ones(len(cell)), r[cell]], axis=-1)
        return expected_loss(W, b, p[cell, None], weights)

    # theta = (φ, ρ, ρ_e, b, b_e)
    triangle = placed(
        {
            (0, 0): lambda theta, cell: theta[:, 1] * np.cos(theta[:, 0]),
            (0, 1): lambda theta, cell: theta[:, 1] * np.cos(theta[:, 0]),
            (0, 2): parameter(2),
            (1, 0): lambda theta, cell: theta[:, 1] * np.sin(theta[:, 0]),
            (1, 1): lambda theta, cell: -theta[:, 1] * np.sin(theta[:, 0]),
        },
        {0: parameter(3), 1: parameter(3), 2: parameter(4)},
    )
    candidates["extra dedicated, one feature dropped"] = (
        no_parameters,
        lambda theta, cell: variance[cell],
        placed({(0, 0): one, (1, 2): one}, {1: mean}),
    )
    candidates["extra dedicated, others antipodal"] = (
        pair_start,
        pair_loss(np.ones_like(r)),
        placed(
            {(0, 0): parameter(0), (0, 1): parameter(1, -1), (1, 2): one},
            {0: parameter(2), 1: parameter(3)},
        ),
    )
    candidates["extra antipodal with one feature"] = (
        pair_start,
        pair_loss(r),
        placed(
            {(0, 0): one, (1, 1): parameter(0), (1, 2): parameter(1, -1)},
            {1: parameter(2), 2: parameter(3)},
        ),
    )
    # the triangle from 120° (the regular triangle) and from 60° (one feature flipped)
    triangle_starts = np.array(
        [[2 * np.pi / 3, 1.0, 1.0, 0.0, 0.0], [np.pi / 3, 1.0, 1.0, 0.0, 0.0]]
    )
    candidates["triangle"] = (triangle_starts, triangle_loss, triangle)
    return candidates


@dataclass(frozen=True)
class PhaseDiagram:
    """Theoretical phase diagram over relative importance × feature probability.

    Attributes:
        relative_importance: importance ``r`` of the extra (last) feature, ``(n_r,)``; the
            other features have importance 1.
        feature_probability: probability of every feature, ``(n_p,)``.
        candidates: names of the candidate solutions compared (see :data:`CANDIDATES`).
        losses: each candidate's optimised exact loss, by name, ``(n_r, n_p)``.
        best: index into ``candidates`` of the winner, ``(n_r, n_p)``.
        W: the winner's weights, ``(n_r, n_p, n_hidden, n_features)``.
        b: the winner's biases, ``(n_r, n_p, n_features)``.
        labels: :func:`classify_solution` of the winner, an index into :data:`PHASES`,
            ``(n_r, n_p)``.
    """

    relative_importance: np.ndarray
    feature_probability: np.ndarray
    candidates: tuple[str, ...]
    losses: dict[str, np.ndarray]
    best: np.ndarray
    W: np.ndarray
    b: np.ndarray
    labels: np.ndarray


def _grid_axis(name: str, value: ArrayLike, low: float, high: float | None) -> np.ndarray:
    """A 1-D grid axis with values in ``(low, high]``."""
    array = _float_array(name, value)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if (array <= low).any() or (high is not None and (array > high).any()):
        upper = "inf)" if high is None else f"{high:g}]"
        raise ValueError(f"{name} must lie in ({low:g}, {upper}, got {array}")
    return array


def phase_diagram(
    n_features: int,
    n_hidden: int,
    relative_importance: ArrayLike,
    feature_probability: ArrayLike,
) -> PhaseDiagram:
    """TMS's phase-change diagram from the exact losses of the candidate solutions.

    For every cell ``(r, p)`` each candidate of :data:`CANDIDATES` is optimised over its free
    parameters (norms, angle, biases) on the exact loss of :func:`expected_loss` by a local
    search from its ideal shape (unit norms, zero biases; the triangle also from a 60°
    opening) — the first two candidates have closed-form losses — and the lowest loss wins
    (ties within ``1e-10`` go to the earlier candidate). The searched losses agree with
    Nelder–Mead to ~1e-9 in sparse cells and ~1e-6 in the flat dense cells near ``r = 1``,
    where the candidates are within 1e-3 of each other anyway.
    The winner's weights are then labelled with :func:`classify_solution`, exactly as trained
    weights are, so a weak antipodal partner (norm ≤ 0.5) counts as not represented.

    Args:
        n_features, n_hidden: ``(2, 1)`` or ``(3, 2)``.
        relative_importance: ``(n_r,)``, each ``> 0``; TMS uses 0.1 to 10, log-spaced.
        feature_probability: ``(n_p,)``, each in ``(0, 1]``; TMS uses 1 to 0.01, log-spaced.

    Returns:
        a :class:`PhaseDiagram` with ``(n_r, n_p)`` losses, winners and phase labels.
    """
    key = (n_features, n_hidden)
    if key not in CANDIDATES:
        raise ValueError(f"(n_features, n_hidden) must be one of {sorted(CANDIDATES)}, got {key}")
    r_axis = _grid_axis("relative_importance", relative_importance, 0.0, None)
    p_axis = _grid_axis("feature_probability", feature_probability, 0.0, 1.0)
    r, p = (grid.reshape(-1) for grid in np.meshgrid(r_axis, p_axis, indexing="ij"))
    cells = np.arange(r.size)
    losses, solutions = [], []
    for starts, loss, solution in _candidates(key, r, p).values():
        runs = [_compass_search(loss, start, r.size) for start in starts]
        which = np.argmin([values for values, _ in runs], axis=0)
        losses.append(np.stack([values for values, _ in runs])[which, cells])
        theta = np.stack([theta for _, theta in runs])[which, cells]
        solutions.append(solution(theta, cells))
    stacked = np.stack(losses)  # (n_candidates, cells)
    best = np.argmax(stacked <= stacked.min(0) + _TIE_TOLERANCE, axis=0)
    W = np.stack([W for W, _ in solutions])[best, cells]
    b = np.stack([b for _, b in solutions])[best, cells]
    shape = (r_axis.size, p_axis.size)
    return PhaseDiagram(
        relative_importance=r_axis,
        feature_probability=p_axis,
        candidates=CANDIDATES[key],
        losses={
            name: values.reshape(shape)
            for name, values in zip(CANDIDATES[key], losses, strict=True)
        },
        best=best.reshape(shape),
        W=W.reshape(*shape, n_hidden, n_features),
        b=b.reshape(*shape, n_features),
        labels=classify_solution(W).reshape(shape),
    )


def classify_solution(
    W: ArrayLike,
    *,
    norm_threshold: float = REPRESENTED_NORM,
    overlap_threshold: float = 0.3,
) -> np.ndarray:
    """Phase label of the extra (last) feature in trained weights, as in :func:`phase_diagram`.

    ``not represented`` when ``‖W_extra‖ ≤ norm_threshold``; else ``superposition`` when
    ``|Ŵ_extra · Ŵ_j| > overlap_threshold`` for some other represented feature ``j``
    (``‖W_j‖ > norm_threshold``); else ``dedicated``.

    Args:
        W: ``(instance, n_hidden, n_features)`` or ``(n_hidden, n_features)``.
        norm_threshold: a feature is represented above this norm (trained norms are ~0 or ~1).
        overlap_threshold: cosine above which two represented features interfere.

    Returns:
        ``(instance,)`` indices into :data:`PHASES` (``()`` without an instance axis).
    """
    array = _float_array("W", W)
    if array.ndim not in (2, 3) or array.shape[-1] < 2:
        raise ValueError(
            "W must be shaped (instance, n_hidden, n_features) or (n_hidden, n_features) "
            f"with n_features >= 2, got {array.shape}"
        )
    if norm_threshold < 0:
        raise ValueError(f"norm_threshold must be >= 0, got {norm_threshold}")
    if not 0 <= overlap_threshold < 1:
        raise ValueError(f"overlap_threshold must lie in [0, 1), got {overlap_threshold}")
    norms = np.linalg.norm(array, axis=-2)  # (..., n_features)
    represented = norms > norm_threshold
    unit = array / np.maximum(norms, 1e-12)[..., None, :]
    cosine = np.abs(np.einsum("...hf,...h->...f", unit[..., :-1], unit[..., -1]))
    overlapping = (represented[..., :-1] & (cosine > overlap_threshold)).any(-1)
    return np.where(represented[..., -1], np.where(overlapping, 2, 1), 0)


def phase_agreement(theory_labels: ArrayLike, empirical_labels: ArrayLike) -> float:
    """Fraction of grid cells whose labels match; both arrays of the same shape."""
    theory = np.asarray(theory_labels)
    empirical = np.asarray(empirical_labels)
    if theory.shape != empirical.shape or theory.size == 0:
        raise ValueError(
            "theory_labels and empirical_labels must have the same non-empty shape, "
            f"got {theory.shape} and {empirical.shape}"
        )
    return float((theory == empirical).mean())
