"""Recovery scores: exact values on constructed dictionaries and hand-made activations."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import superpose
from superpose.sae import SAE, Superposed, evaluate, feature_recovery, random_baseline
from superpose.sae.metrics import abs_cosines, matching


def _directions(n_features=6, d=4, seed=0):
    rows = torch.randn(n_features, d, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def test_a_permuted_sign_flipped_rescaled_copy_scores_one():
    directions = _directions()
    generator = torch.Generator().manual_seed(1)
    permutation = torch.randperm(6, generator=generator)
    scale = torch.tensor([1.0, -2.0, 0.5, -0.1, 3.0, -1.0])[:, None]
    W_dec = torch.cat([directions[permutation] * scale, torch.zeros(2, 4)])  # 2 unused rows
    scores = feature_recovery(W_dec, directions)
    assert isinstance(scores, pd.DataFrame) and list(scores["instance"]) == [0]
    for column in ("mmcs", "mcc", "recovered"):
        assert scores[column].item() == pytest.approx(1.0, abs=1e-6)
    latents, features = matching(abs_cosines(W_dec[None], directions))
    torch.testing.assert_close(permutation[latents[0]], features[0])


def test_known_cosines_give_exact_scores():
    # 2 features in 2-D; latent rows at known angles to them
    directions = torch.eye(2)
    angle = math.radians(30)
    W_dec = torch.tensor(
        [
            [
                [math.cos(angle), math.sin(angle)],  # |cos| 0.866 to f0, 0.5 to f1
                [0.8, 0.6],  # 0.8 to f0, 0.6 to f1
            ],
            [[1.0, 0.0], [1.0, 0.0]],  # both latents on f0: f1 is missed
        ]
    )
    scores = feature_recovery(W_dec, directions)
    # instance 0: best per feature (0.866, 0.6); matching: 0.866 + 0.6 > 0.5 + 0.8
    assert scores["mmcs"][0] == pytest.approx((math.cos(angle) + 0.6) / 2)
    assert scores["mcc"][0] == pytest.approx((math.cos(angle) + 0.6) / 2)
    assert scores["recovered"][0] == 0.0
    # instance 1: best (1, 0) → MMCS 0.5; one-to-one also 0.5; one feature recovered
    assert scores["mmcs"][1] == pytest.approx(0.5)
    assert scores["mcc"][1] == pytest.approx(0.5)
    assert scores["recovered"][1] == 0.5


def test_mcc_is_below_mmcs_when_latents_are_shared():
    # 1 latent between 2 features: MMCS counts it for both, MCC matches it once
    W_dec = torch.tensor([[1.0, 1.0], [0.0, 0.0]]) / math.sqrt(2)
    scores = feature_recovery(W_dec, torch.eye(2))
    assert scores["mmcs"].item() == pytest.approx(1 / math.sqrt(2))
    assert scores["mcc"].item() == pytest.approx(1 / (2 * math.sqrt(2)))


def test_feature_recovery_bad_input():
    with pytest.raises(ValueError, match=r"directions must be shaped \(n_features, d_in=4\)"):
        feature_recovery(torch.zeros(3, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="sae_or_W_dec must be shaped"):
        feature_recovery(torch.zeros(4), torch.zeros(5, 4))
    with pytest.raises(TypeError, match="sae_or_W_dec must be an SAE or a tensor"):
        feature_recovery([[1.0]], torch.zeros(1, 1))


@pytest.mark.parametrize("threshold", [2, 1.0, 0.0, -0.5])
def test_feature_recovery_threshold_is_a_cosine_below_one(threshold):
    """threshold=2 used to report 0 recovered features instead of an error."""
    with pytest.raises(ValueError, match=r"threshold is the \|cos\| above which .* \(0, 1\)"):
        feature_recovery(torch.eye(3), torch.eye(3), threshold=threshold)
    with pytest.raises(TypeError, match="threshold must be a number"):
        feature_recovery(torch.eye(3), torch.eye(3), threshold=True)
    assert feature_recovery(torch.eye(3), torch.eye(3), threshold=0.99)["recovered"].item() == 1


def test_non_finite_dictionaries_are_named():
    """A NaN decoder used to reach scipy's "matrix contains invalid numeric entries"."""
    W_dec = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(0))
    W_dec[1, 2, 0] = float("nan")
    W_dec[2, 0, 3] = float("inf")
    message = r"^sae_or_W_dec has non-finite entries \(NaN or inf\) in instance\(s\) \[1, 2\]"
    with pytest.raises(ValueError, match=message):
        feature_recovery(W_dec, torch.eye(4))
    directions = torch.eye(4)
    directions[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^directions has non-finite entries"):
        feature_recovery(W_dec[0], directions)
    with pytest.raises(ValueError, match=r"^cosines has non-finite entries"):
        matching(torch.full((1, 2, 2), float("nan")))
    model = SAE("relu", 2, 4, 8, seed=0)
    with torch.no_grad():
        model.W_dec[1, 0, 0] = float("nan")
    source = Superposed(superpose.SparseFeatures(6, 0.2, seed=0), d_model=4, seed=0)
    with pytest.raises(
        ValueError, match=r"^sae.W_dec has non-finite entries .* instance\(s\) \[1\]"
    ):
        evaluate(model, source)


def _perfect_relu_sae(directions, scale=1.0):
    """A ReLU SAE that encodes orthonormal ``directions`` (x̂ = scale · x up to 1e-6); its
    encoder bias −1e-6 keeps float rounding of inactive features from firing."""
    n, d = directions.shape
    sae = SAE("relu", 1, d, n, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(directions.T[None])
        sae.W_dec.copy_(scale * directions[None])
        sae.b_enc.fill_(-1e-6)
    return sae


def test_evaluate_on_a_perfect_and_a_shrunk_dictionary():
    features = superpose.SparseFeatures(4, 0.25, seed=0)
    source = Superposed(features, d_model=4, orthogonal=True, seed=0)
    torch.testing.assert_close(source.directions @ source.directions.T, torch.eye(4))
    perfect = evaluate(_perfect_relu_sae(source.directions), source, n_samples=4000, seed=3)
    assert perfect["mmcs"].item() == pytest.approx(1.0, abs=1e-6)
    assert perfect["mse"].item() == pytest.approx(0.0, abs=1e-10)
    assert perfect["explained_variance"].item() == pytest.approx(1.0, abs=1e-6)
    assert perfect["shrinkage"].item() == pytest.approx(0.0, abs=1e-5)
    for column in ("precision", "recall", "f1"):  # latent j fires exactly when feature j is on
        assert perfect[column].item() == pytest.approx(1.0)
        assert perfect[f"latent_{column}"].item() == pytest.approx(1.0)
    # L0 = mean active features (the same draws: one chunk of 4000 < batch_size)
    _, f = source.sample_with_features(4000, generator=torch.Generator().manual_seed(3))
    assert perfect["l0"].item() == pytest.approx((f > 0).sum(-1).float().mean().item())
    assert perfect["dead_fraction"].item() == 0.0

    shrunk = evaluate(_perfect_relu_sae(source.directions, 0.5), source, n_samples=4000, seed=3)
    assert shrunk["shrinkage"].item() == pytest.approx(0.5, abs=1e-5)  # x̂ = x / 2
    x = source.sample(4000, generator=torch.Generator().manual_seed(3))[0]
    expected = 1 - (0.25 * x.square().sum()) / (x - x.mean(0)).square().sum()
    assert shrunk["explained_variance"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_evaluate_counts_dead_latents_and_firing_precision():
    features = superpose.SparseFeatures(2, 0.5, seed=0)
    source = Superposed(features, d_model=2, orthogonal=True, seed=0)
    sae = _perfect_relu_sae(source.directions)
    with torch.no_grad():  # latent 1 also reads feature 0
        sae.W_enc[0, :, 1] = source.directions.sum(0)
    scores = evaluate(sae, source, n_samples=20000, seed=0)
    # latent 1 fires when either feature is on (p = 3/4), feature 1 is on half the time:
    # precision (1/2) / (3/4) = 2/3, latent 0's is 1. Tolerance: ~3 binomial standard errors
    assert scores["precision"].item() == pytest.approx((1 + 2 / 3) / 2, abs=0.01)
    assert scores["recall"].item() == pytest.approx(1.0)
    dead = _perfect_relu_sae(source.directions)
    with torch.no_grad():
        dead.b_enc[0, 0] = -10.0
    scores = evaluate(dead, source, n_samples=1000)
    assert scores["dead_fraction"].item() == 0.5
    assert scores["precision"].item() == 0.5 and scores["recall"].item() == 0.5
    # per latent: the dead latent scores 0 against its best feature, the other 1
    assert scores["latent_precision"].item() == 0.5 and scores["latent_f1"].item() == 0.5


def _evaluated_features(source, n_samples, seed):
    """The feature values ``(n_samples, n_features)`` behind evaluate's samples (one chunk:
    ``n_samples`` at most its batch_size, 4096)."""
    return source.sample_with_features(n_samples, 1, torch.Generator().manual_seed(seed))[1][0]


def test_per_latent_f1_counts_a_duplicated_latent_as_right_and_the_matching_does_not():
    """3 orthogonal features, latents 0 and 1 exact, latent 2 a copy of latent 0 (feature 2
    has no latent). SynthSAEBench's per-latent F1: every latent fires exactly with its best
    feature, so 1. The Hungarian pairs must give feature 2 a latent that reads feature 0 (or
    latent 0 while latent 2 takes feature 0): its precision is P(f2 on | f0 on), its recall
    P(f0 on | f2 on), both counted exactly from the same draws."""
    source = Superposed(superpose.SparseFeatures(3, 0.5, seed=0), d_model=3, orthogonal=True)
    sae = _perfect_relu_sae(source.directions)
    with torch.no_grad():
        sae.W_enc[0, :, 2] = source.directions[0]
        sae.W_dec[0, 2] = source.directions[0]
    scores = evaluate(sae, source, n_samples=4000, seed=5)
    for column in ("latent_precision", "latent_recall", "latent_f1"):
        assert scores[column].item() == pytest.approx(1.0)
    on = _evaluated_features(source, 4000, 5) > 0
    both = (on[:, 0] & on[:, 2]).sum().item()
    precision, recall = both / on[:, 0].sum().item(), both / on[:, 2].sum().item()
    assert scores["precision"].item() == pytest.approx((2 + precision) / 3, rel=1e-6)
    assert scores["recall"].item() == pytest.approx((2 + recall) / 3, rel=1e-6)
    wrong_pair_f1 = 2 * precision * recall / (precision + recall)
    assert scores["f1"].item() == pytest.approx((2 + wrong_pair_f1) / 3, rel=1e-6)
    assert 0.8 < scores["f1"].item() < 0.87  # (2 + ~0.5) / 3


def test_a_latent_that_fires_on_the_wrong_feature():
    """Latent 0 writes feature 0's direction but reads feature 1's: against its best feature
    (feature 0) it has precision P(f0 | f1) and recall P(f1 | f0); latent 1 is exact."""
    source = Superposed(superpose.SparseFeatures(2, 0.25, seed=0), d_model=2, orthogonal=True)
    sae = _perfect_relu_sae(source.directions)
    with torch.no_grad():
        sae.W_enc[0, :, 0] = source.directions[1]
    scores = evaluate(sae, source, n_samples=4000, seed=2)
    on = _evaluated_features(source, 4000, 2) > 0
    both = (on[:, 0] & on[:, 1]).sum().item()
    precision, recall = both / on[:, 1].sum().item(), both / on[:, 0].sum().item()
    f1 = 2 * precision * recall / (precision + recall)
    assert scores["latent_precision"].item() == pytest.approx((1 + precision) / 2, rel=1e-6)
    assert scores["latent_recall"].item() == pytest.approx((1 + recall) / 2, rel=1e-6)
    assert scores["latent_f1"].item() == pytest.approx((1 + f1) / 2, rel=1e-6)
    assert scores["latent_f1"].item() == pytest.approx(0.625, abs=0.02)  # (1 + 1/4) / 2
    # both latents are the Hungarian pairs too: the two definitions agree here
    assert scores["f1"].item() == pytest.approx(scores["latent_f1"].item())


def test_per_latent_scores_equal_saelens_synthetic_evals():
    """SAELens's ClassificationMetricsCalculator on the same latents and feature values."""
    pytest.importorskip("sae_lens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens.synthetic.evals import ClassificationMetricsCalculator
    source = Superposed(superpose.SparseFeatures(12, 0.2, seed=0), d_model=6, seed=0)
    model = SAE("topk", 1, 6, 16, k=3, seed=4)
    scores = evaluate(model, source, n_samples=3000, seed=9)
    x, f = source.sample_with_features(3000, 1, torch.Generator().manual_seed(9))
    with torch.no_grad():
        z = model.eval().encode(x)[0]
    calculator = ClassificationMetricsCalculator(model.W_dec.detach()[0], source.directions)
    calculator.add_batch(z, f[0])
    theirs = calculator.compute()
    assert scores["latent_precision"].item() == pytest.approx(theirs.precision, rel=1e-5)
    assert scores["latent_recall"].item() == pytest.approx(theirs.recall, rel=1e-5)
    assert scores["latent_f1"].item() == pytest.approx(theirs.f1_score, rel=1e-5)
    assert 0 < theirs.f1_score < 0.9  # a random dictionary: far from perfect


def test_evaluate_bad_source():
    source = Superposed(superpose.SparseFeatures(4, 0.25, seed=0), d_model=3, seed=0)
    with pytest.raises(ValueError, match=r"source.d_model=3 but the SAE's d_in=4"):
        evaluate(SAE("relu", 1, 4, 8), source)
    with pytest.raises(TypeError, match=r"source must be a superpose\.sae source"):
        evaluate(SAE("relu", 1, 4, 8), superpose.SparseFeatures(4, 0.25))


def test_random_dictionaries_score_at_the_chance_level():
    """16 untrained SAEs (random unit decoder rows) score what random_baseline predicts:
    measured 0.509 ± 0.009 (instances) against 0.510 ± 0.008 (32 draws)."""
    source = Superposed(superpose.SparseFeatures(32, 0.05, seed=0), d_model=32, seed=0)
    scores = feature_recovery(SAE("relu", 16, 32, 256, seed=0), source.directions)
    chance = random_baseline(32, 32, 256, directions=source.directions, n_draws=32)
    for score in ("mmcs", "mcc"):
        mean, std = chance.loc[score, "mean"], chance.loc[score, "std"]
        assert 0.005 < std < 0.02  # measured 0.008, 0.009
        assert scores[score].between(mean - 4 * std, mean + 4 * std).all()
        # the two means differ by noise alone: 3 standard errors of their difference
        assert abs(scores[score].mean() - mean) < 3 * std * math.sqrt(1 / 16 + 1 / 32)
        assert (scores[f"{score}_chance"] == scores[f"{score}_chance"].iloc[0]).all()
    assert chance.loc["recovered", "max"] == 0 and (scores["recovered"] == 0).all()


def test_chance_is_clearly_below_one_and_grows_with_the_dictionary():
    """32 random directions in 32 dims: MMCS by chance is 0.40, 0.44, 0.48, 0.51, 0.54 for
    32 … 512 latents (16 draws each, spread ≈ 0.01), nowhere near a recovered dictionary's 1."""
    means = {
        d_sae: random_baseline(32, 32, d_sae, n_draws=16).loc["mmcs", "mean"]
        for d_sae in (32, 64, 128, 256, 512)
    }
    assert means[256] == pytest.approx(0.51, abs=0.02)  # the 256 × 32 example
    assert means[32] == pytest.approx(0.40, abs=0.02)
    assert means[512] == pytest.approx(0.54, abs=0.02)
    steps = np.diff(list(means.values()))  # measured 0.031, 0.037, 0.034, 0.025
    assert (steps > 0.015).all(), means
    # in 2 dims a random pentagon-sized dictionary already scores MMCS ≈ 0.95
    assert random_baseline(5, 2, 5, n_draws=64).loc["mmcs", "mean"] == pytest.approx(0.95, abs=0.03)


def test_reported_chance_columns_are_the_baseline_means():
    source = Superposed(superpose.SparseFeatures(12, 0.1, seed=0), d_model=6, seed=0)
    model = SAE("relu", 2, 6, 16, seed=1)
    chance = random_baseline(12, 6, 16, directions=source.directions, n_draws=4, seed=0)
    for table in (
        evaluate(model, source, n_samples=512),
        feature_recovery(model, source.directions),
    ):
        assert list(table.columns[:7]) == [
            "instance",
            "mmcs",
            "mcc",
            "recovered",
            "mmcs_chance",
            "mcc_chance",
            "recovered_chance",
        ]
        for score in ("mmcs", "mcc", "recovered"):
            assert (table[f"{score}_chance"] == np.float32(chance.loc[score, "mean"])).all()
    bare = feature_recovery(model, source.directions, chance_draws=0)
    assert list(bare.columns) == ["instance", "mmcs", "mcc", "recovered"]
    assert "mmcs_chance" not in evaluate(model, source, n_samples=64, chance_draws=0)


def test_random_baseline_bad_input():
    with pytest.raises(ValueError, match=r"directions must be shaped \(n_features=5, d_model=3\)"):
        random_baseline(5, 3, 8, directions=torch.zeros(5, 4))
    with pytest.raises(ValueError, match="n_draws must be at least 2"):
        random_baseline(5, 3, 8, n_draws=1)
    with pytest.raises(TypeError, match="d_sae must be a positive integer"):
        random_baseline(5, 3, "8")
    with pytest.raises(ValueError, match=r"chance_draws must be 0 .* or at least 2"):
        feature_recovery(torch.eye(3), torch.eye(3), chance_draws=1)


def test_plot_chance_marks_the_level_with_a_dashed_line_and_its_spread():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from superpose.plotting import chance_label, plot_chance

    chance = random_baseline(32, 32, 256, n_draws=8)
    assert chance_label(chance, "mmcs") == "chance 0.51 ± 0.01"
    fig, ax = plt.subplots()
    plot_chance(ax, chance.loc["mmcs", "mean"], chance.loc["mmcs", "std"])
    (line,) = ax.get_lines()
    assert line.get_linestyle() == "--" and line.get_label() == "chance (random dictionary)"
    assert line.get_ydata()[0] == pytest.approx(chance.loc["mmcs", "mean"])
    (band,) = ax.patches
    low, high = band.get_path().transformed(band.get_patch_transform()).get_extents().intervaly
    assert high - low == pytest.approx(2 * chance.loc["mmcs", "std"], rel=1e-5)
    plt.close(fig)
