"""Exact theory of the toy models, without training or sampling.

The data are TMS's sparse-uniform features: feature ``i`` is independently active with
probability ``p_i`` and then uniform on ``[0, 1]``, else 0, so ``E[x_i] = p_i/2``,
``E[x_i²] = p_i/3`` and ``Var x_i = p_i/3 − p_i²/4``. The loss is the paper's
``L = E[Σ_i I_i (x_i − x'_i)²]`` with importance ``I_i``.

* :func:`optimal_linear` — the best linear model ``x' = WᵀWx + b`` in closed form
  (:mod:`~superpose.theory.linear`).
* :func:`expected_loss` — the exact loss of any ReLU-output model ``x' = ReLU(WᵀWx + b)``
  (:mod:`~superpose.theory.exact`).
* :func:`phase_diagram` — TMS's "phase change" diagrams (``n=2, m=1`` and ``n=3, m=2``) from
  the exact losses of the candidate solutions; :func:`classify_solution` gives trained weights
  the same labels and :func:`phase_agreement` compares the two
  (:mod:`~superpose.theory.phases`).

Arrays come in as numpy arrays, torch tensors or nested sequences and are computed in float64;
results are numpy arrays (a Python float for a single unbatched loss).
"""

from superpose.theory.exact import MAX_EXACT_FEATURES, expected_loss
from superpose.theory.linear import optimal_linear
from superpose.theory.phases import (
    CANDIDATES,
    PHASES,
    PhaseDiagram,
    classify_solution,
    phase_agreement,
    phase_diagram,
)

__all__ = [
    "CANDIDATES",
    "MAX_EXACT_FEATURES",
    "PHASES",
    "PhaseDiagram",
    "classify_solution",
    "expected_loss",
    "optimal_linear",
    "phase_agreement",
    "phase_diagram",
]
