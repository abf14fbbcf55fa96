"""Memorization and double descent at a small size (Henighan et al. 2023's claims)."""

import numpy as np
import pytest
import torch

from superpose import registry
from superpose.io import load_tensors

# n = 100 features, S = 0.95 (5 active per sample), m = 2, 5,000 full-batch steps, 4 seeds
N_FEATURES, PROBABILITY, STEPS = 100, 0.05, 5_000


@pytest.fixture(scope="module")
def runs():
    experiment = registry.load("experiments", "double-descent")
    return {
        T: experiment.train_dataset_size(
            T, N_FEATURES, PROBABILITY, n_seeds=4, steps=STEPS, warmup_steps=STEPS // 20
        )
        for T in (5, 20, 100, 500)
    }


@pytest.fixture(scope="module")
def runs_m4():
    experiment = registry.load("experiments", "double-descent")
    return {
        T: experiment.train_dataset_size(
            T, N_FEATURES, PROBABILITY, n_hidden=4, n_seeds=4, steps=STEPS, warmup_steps=STEPS // 20
        )
        for T in (20, 100, 500)
    }


@pytest.mark.slow
def test_small_data_sets_are_memorized_as_a_regular_polygon(runs):
    small = runs[5]
    # measured: train loss <= 0.037, each point's dimensionality in [0.346, 0.471] (m/T = 0.4);
    # at T = 20 they spread over [5e-5, 0.23], at T = 500 all are <= 0.054
    assert (small["train_loss"] < 0.05).all()
    dims = small["data_dimensionality"]
    assert dims.min() > 0.3 and dims.max() < 0.5


@pytest.mark.slow
def test_large_data_sets_learn_features_in_a_polytope(runs):
    large = runs[500]
    # measured: the largest feature dimensionality 0.36-0.38 (a pentagon's 2/5), points <= 0.054
    feature_max = large["feature_dimensionality"].amax(-1)
    assert ((feature_max > 0.3) & (feature_max < 0.45)).all()
    assert (feature_max > 5 * large["data_dimensionality"].amax(-1)).all()


@pytest.mark.slow
def test_test_loss_has_a_bump_in_between(runs):
    # measured means: T=5 0.981, T=20 1.021, T=500 0.918
    loss = {T: run["test_loss"].mean().item() for T, run in runs.items()}
    assert loss[20] > loss[5] + 0.015
    assert loss[20] > loss[500] + 0.05


def test_quick_experiment_then_figure(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    registry.load("experiments", "double-descent").main(results, quick=True)
    paths = registry.load("figures", "double-descent").main(results, out)
    assert [path.suffix for path in paths] == [".png", ".pdf"]
    assert all(path.stat().st_size > 0 for path in paths)
    assert (results / "double_descent" / "losses.csv").read_text().count("\n") == 1 + 4 * 2


@pytest.mark.slow
def test_the_bump_moves_to_larger_data_sets_with_more_hidden_dimensions(runs, runs_m4):
    # measured means, m = 2: T=20 1.021, T=100 0.951 (the bump's top is at T = 20);
    # m = 4: T=20 0.955, T=100 0.979, T=500 0.902 (its top moved to T = 100)
    m2 = {T: run["test_loss"].mean().item() for T, run in runs.items()}
    m4 = {T: run["test_loss"].mean().item() for T, run in runs_m4.items()}
    assert m2[20] > m2[100] + 0.035
    assert m4[100] > m4[20] + 0.012
    assert m4[100] > m4[500] + 0.04


def test_bump_is_the_largest_rise_above_the_running_minimum():
    sweep = registry.load("experiments", "double-descent-sweep")
    loss = torch.tensor(
        [
            [3.0, 1.0, 1.5, 1.2, 0.5],  # falls, then rises 0.5 above 1.0 at index 2
            [2.0, 1.5, 1.0, 0.8, 0.4],  # never rises: no bump
            [1.0, 1.25, 0.5, 1.0, 0.1],  # two rises: 0.25 at index 1, 0.5 at index 3
        ]
    )
    index, height = sweep.bump(loss)
    assert index.tolist() == [2, -1, 3]
    assert height.tolist() == [0.5, 0.0, 0.5]


def test_quick_sweep_then_figure(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    registry.load("experiments", "double-descent-sweep").main(results, quick=True)
    paths = registry.load("figures", "double-descent-sweep").main(results, out)
    assert [path.suffix for path in paths] == [".png", ".pdf"]
    assert all(path.stat().st_size > 0 for path in paths)
    stored = load_tensors(results / "double_descent_sweep" / "sweep.safetensors")
    assert stored["test_loss"].shape == (2, 3, 2)  # (m, T, seed) of the quick grid
    assert stored["peak_index"].shape == stored["peak_height"].shape == (2,)
    rows = (results / "double_descent_sweep" / "losses.csv").read_text()
    assert rows.count("\n") == 1 + 2 * 3 * 2


def test_the_regime_rule_draws_one_boundary_through_noisy_dimensionalities():
    figure = registry.load("figures", "double-descent")
    features = np.full(7, 0.1)
    # the data dimensionality falls through the features' with one noisy flip on each side
    data = np.array([1.0, 0.5, 0.09, 0.2, 0.05, 0.11, 0.01])
    memorizing, crossover = figure.regimes(data, features)
    # log ratios 2.30, 1.61, -0.11, 0.69, -0.69, 0.10, -2.30; running means of three:
    # 1.96, 1.27, 0.73, -0.04, 0.03, -0.96, -1.10 → last positive at index 4
    assert crossover == 5
    assert memorizing.tolist() == [True] * 5 + [False] * 2
    assert figure.regimes(np.full(3, 0.01), np.full(3, 0.1))[1] == 0  # generalizing throughout
