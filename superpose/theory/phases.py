"""TMS's "phase change" diagrams (``n=2, m=1`` and ``n=3, m=2``) from the exact losses of the
candidate solutions: :func:`phase_diagram`; :func:`classify_solution` gives trained weights
the same labels and :func:`phase_agreement` compares the two."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from superpose._checks import ArrayLike
from superpose.analysis import REPRESENTED_NORM
from superpose.theory._common import _float_array, _variance
from superpose.theory.exact import expected_loss

PHASES = ("not represented", "dedicated", "superposition")
"""Phase labels of the last ("extra") feature: ``labels`` index into this tuple."""


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
