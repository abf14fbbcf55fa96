"""Empirical phase diagrams from stored sweeps, in the labels of :mod:`superpose.theory`.

A phase-diagram sweep trains cells over ``relative_importance × feature_probability``
(× seeds); the empirical diagram keeps, per grid point, the seed with the lowest held-out
loss (the paper's protocol) and labels its weights with
:func:`superpose.theory.classify_solution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from superpose.sweep import ResultStore, SweepSpec
from superpose.theory import classify_solution


@dataclass(frozen=True)
class EmpiricalPhaseDiagram:
    """Attributes:
    relative_importance: ``(n_r,)`` ascending.
    feature_probability: ``(n_p,)`` descending (dense first, as the paper draws it).
    labels: ``(n_r, n_p)`` indices into :data:`superpose.theory.PHASES`.
    loss: ``(n_r, n_p)`` held-out loss of the best seed.
    """

    relative_importance: np.ndarray
    feature_probability: np.ndarray
    labels: np.ndarray
    loss: np.ndarray


def empirical_phase_diagram(path: str | Path) -> EmpiricalPhaseDiagram:
    """Read the sweep stored at ``path`` and label each grid point's best-loss cell.

    Only the cells of the spec last run into the store count (a store can also hold cells
    of earlier, different specs, e.g. a quick run).
    """
    with ResultStore(path, readonly=True) as store:
        table = store.table()
        cells = {cell.config_hash for cell in SweepSpec.from_dict(store.spec()).cells()}
        finished = table[(table["status"] == "done") & table["config_hash"].isin(cells)]
        if finished.empty:
            raise ValueError(f"the sweep at {path} has no finished cells; run it first")
        best = finished.loc[
            finished.groupby(["relative_importance", "feature_probability"])["final_loss"].idxmin()
        ]
        r_axis = np.sort(best["relative_importance"].unique())
        p_axis = np.sort(best["feature_probability"].unique())[::-1]
        labels = np.full((r_axis.size, p_axis.size), -1)
        loss = np.full((r_axis.size, p_axis.size), np.nan)
        for row in best.itertuples():
            i = np.searchsorted(r_axis, row.relative_importance)
            j = np.flatnonzero(p_axis == row.feature_probability)[0]
            labels[i, j] = classify_solution(store.weights(row.config_hash)["W"]).item()
            loss[i, j] = row.final_loss
    return EmpiricalPhaseDiagram(r_axis, p_axis, labels, loss)
