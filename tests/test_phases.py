"""Empirical phase diagrams from a stored sweep, checked against the exact theory."""

import numpy as np
import pytest

from superpose import sweep, theory
from superpose.phases import empirical_phase_diagram
from superpose.sweep import SweepSpec


def coarse_spec(n_features: int, n_hidden: int, steps: int) -> SweepSpec:
    # an even number of log-spaced points from 0.1 to 10 never hits the exact tie r = 1
    return SweepSpec.from_dict(
        {
            "name": f"coarse_n{n_features}",
            "fixed": {"kind": "relu", "n_features": n_features, "n_hidden": n_hidden},
            "axes": {
                "relative_importance": {"logspace": [0.1, 10], "num": 6},
                "feature_probability": {"logspace": [1, 0.01], "num": 6},
                "seed": {"range": 3},
            },
            "training": {"steps": steps, "lr": 0.01, "eval_samples": 16384},
        }
    )


def test_trained_n2_phase_diagram_matches_theory(tmp_path):
    spec = coarse_spec(2, 1, steps=2000)
    sweep.run(spec, out=tmp_path, progress=False)
    empirical = empirical_phase_diagram(tmp_path)
    predicted = theory.phase_diagram(
        2, 1, empirical.relative_importance, empirical.feature_probability.copy()
    )
    agreement = theory.phase_agreement(predicted.labels, empirical.labels)
    # the issue asks for >= 90%
    assert agreement >= 0.9, (predicted.labels, empirical.labels)
    # dense data: the extra feature is dropped when less important, kept when more
    assert empirical.labels[0, 0] == theory.PHASES.index("not represented")
    assert empirical.labels[-1, 0] == theory.PHASES.index("dedicated")
    # sparse data: superposition
    assert empirical.labels[2, -1] == theory.PHASES.index("superposition")


def test_only_the_latest_spec_counts(tmp_path):
    quick = coarse_spec(2, 1, steps=50)
    sweep.run(quick, out=tmp_path, progress=False)
    data = quick.to_dict()
    data["axes"]["relative_importance"] = [0.5, 2.0]
    data["axes"]["feature_probability"] = [1.0]
    sweep.run(SweepSpec.from_dict(data), out=tmp_path, progress=False)
    diagram = empirical_phase_diagram(tmp_path)
    np.testing.assert_allclose(diagram.relative_importance, [0.5, 2.0])
    assert diagram.labels.shape == (2, 1)


def test_missing_store_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        empirical_phase_diagram(tmp_path / "missing")
