"""Absorption, splitting and hedging: exact values on hand-built dictionaries.

The world: feature 0 is the parent of the mutually exclusive children 1 and 2 (each fires
with probability 0.3 given the parent), feature 3 is free; orthonormal directions in 6 dims.
The hand-built dictionary has one latent per feature; child ``c``'s latent may absorb a
share ``a_c`` of the parent: decoder ``d_c + a_c d_0`` (normalised), encoder ``‖d_c + a_c d_0‖
d_c``, and the parent's latent fires with ``⟨x, d_0⟩ − Σ_c a_c ⟨x, d_c⟩`` (ReLU), so the
reconstruction stays exact while the parent's latent gives way to its children.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from superpose import SparseFeatures, sae
from superpose.data import Hierarchy
from superpose.sae.pathologies import SCORES

HIERARCHY = Hierarchy([-1, 0, 0, -1], exclusive=True)
NOISE = 1e-5
"""Latent values below this are float rounding of inactive features and are set to 0."""


def world(magnitude="constant", hierarchy=HIERARCHY, **options):
    features = SparseFeatures(
        4, [0.3, 0.3, 0.3, 0.2], magnitude=magnitude, hierarchy=hierarchy, seed=0, **options
    )
    return sae.Superposed(features, d_model=6, orthogonal=True, seed=0)


def absorbing(directions, a1=0.0, a2=0.0):
    """``(W_dec: (1, 4, 6), W_enc: (1, 6, 4))`` of the dictionary in the module docstring."""
    d0, d1, d2, d3 = directions
    v1, v2 = d1 + a1 * d0, d2 + a2 * d0
    W_dec = torch.stack([d0, v1 / v1.norm(), v2 / v2.norm(), d3])
    W_enc = torch.stack([d0 - a1 * d1 - a2 * d2, v1.norm() * d1, v2.norm() * d2, d3]).T
    return W_dec[None], W_enc[None]


def relu_encoder(W_enc):
    """``x ↦ ReLU(x W_enc)`` with values below :data:`NOISE` zeroed: ``(instance, batch,
    d_model) → (instance, batch, d_sae)``."""

    def encode(x):
        z = torch.relu(torch.bmm(x, W_enc))
        return z * (z > NOISE)

    return encode


def test_a_perfect_dictionary_scores_zero_and_one_latent_per_feature():
    source = world()
    W_dec, W_enc = absorbing(source.directions)
    scores = sae.pathology_scores(W_dec, source, encode=relu_encoder(W_enc))
    assert list(scores.columns) == ["instance", *SCORES]
    row = scores.iloc[0]
    for name in ("absorption", "absorption_cosine", "absorption_share", "parent_miss_alone"):
        assert row[name] == pytest.approx(0.0, abs=1e-6), name
    assert row["split_count"] == 1.0 and row["split_fraction"] == row["split_excess"] == 0.0
    assert row["hedging"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(row["hedging_correlated"])  # the world has no correlated sets


def test_full_absorption_scores_one_and_spares_the_other_child():
    source = world()
    directions = source.directions
    perfect, absorbed = absorbing(directions), absorbing(directions, a1=1.0)
    W_dec = torch.cat([perfect[0], absorbed[0]])  # instance 0 perfect, instance 1 absorbing
    W_enc = torch.cat([perfect[1], absorbed[1]])
    pairs = sae.absorption(W_dec, source, encode=relu_encoder(W_enc))
    assert pairs[["instance", "parent", "child"]].values.tolist() == [
        [0, 0, 1],
        [0, 0, 2],
        [1, 0, 1],
        [1, 0, 2],
    ]
    full = pairs[pairs["instance"] == 1].set_index("child")
    assert full.loc[1, "full_absorption"] == 1.0
    assert full.loc[1, "absorption_share"] == pytest.approx(1.0, abs=1e-6)
    assert full.loc[1, "absorption_cosine"] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert full.loc[2, "full_absorption"] == 0.0
    assert full.loc[2, "absorption_share"] == pytest.approx(0.0, abs=1e-6)
    # the parent's latent still fires whenever the parent is active without its children
    assert (pairs["parent_miss_alone"] == 0.0).all()
    # 16,384 samples, P(parent and child) = 0.3 · 0.3: co-occurrence counts near 1,475
    assert pairs["co_occurrences"].between(1300, 1650).all()
    summary = sae.absorption_summary(pairs)
    assert summary["absorption"].tolist() == [0.0, 0.5]


def test_partial_absorption_with_constant_magnitudes():
    # child 1's latent takes half the parent: the parent's latent fires at 1 − 0.5 on both
    source = world()
    W_dec, W_enc = absorbing(source.directions, a1=0.5)
    pair = sae.absorption(W_dec, source, encode=relu_encoder(W_enc)).iloc[0]
    assert pair["full_absorption"] == 0.0
    assert pair["absorption_cosine"] == pytest.approx(0.5 / math.sqrt(1.25), abs=1e-6)
    # along d_0 the reconstruction is 1: 0.5 from the parent's latent, 0.5 from the child's
    assert pair["absorption_share"] == pytest.approx(0.5, abs=1e-6)


def test_partial_absorption_with_uniform_magnitudes_matches_the_integrals():
    # magnitudes m0, m1 ~ U[0, 1]: the parent's latent fires with ReLU(m0 − m1/2), silent with
    # probability P(m0 < m1/2) = 1/4; along d_0 the child's latent gives m1/2 (mean 1/4), the
    # parent's E ReLU(m0 − m1/2) = 7/24, so the unexplained share is (1/4) / (1/4 + 7/24) = 6/13
    source = world(magnitude="uniform")
    W_dec, W_enc = absorbing(source.directions, a1=0.5)
    pair = sae.absorption(W_dec, source, encode=relu_encoder(W_enc), n_samples=65536).iloc[0]
    assert pair["co_occurrences"] > 5500  # binomial sd of the fraction ≈ 0.006
    assert pair["full_absorption"] == pytest.approx(0.25, abs=0.02)
    assert pair["absorption_share"] == pytest.approx(6 / 13, abs=0.015)


def test_an_sae_scores_as_its_decoder_and_encode_function():
    source = world()
    W_dec, W_enc = absorbing(source.directions, a1=1.0)
    model = sae.SAE("relu", 1, 6, 4, seed=0)
    with torch.no_grad():
        model.W_dec.copy_(W_dec)
        model.W_enc.copy_(W_enc)
        model.b_enc.fill_(-NOISE)  # float rounding of inactive features stays below 0
        model.b_dec.zero_()
    model.train()
    from_sae = sae.absorption(model, source)
    from_tensor = sae.absorption(W_dec, source, encode=relu_encoder(W_enc))
    assert model.training  # the mode is restored
    pd.testing.assert_series_equal(from_sae["full_absorption"], from_tensor["full_absorption"])
    np.testing.assert_allclose(
        from_sae["absorption_share"], from_tensor["absorption_share"], atol=1e-6
    )


def test_an_unmatched_parent_leaves_its_pairs_undefined():
    # three latents (the children's and the free feature's): no latent is left for the parent
    source = world()
    W_dec, W_enc = absorbing(source.directions)
    pairs = sae.absorption(W_dec[:, 1:], source, encode=relu_encoder(W_enc[:, :, 1:]))
    assert (pairs["parent_latent"] == -1).all()
    assert pairs["full_absorption"].isna().all() and pairs["absorption_share"].isna().all()
    assert pairs["absorption_cosine"].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_a_latent_writing_minus_the_parent_is_not_the_parent_s():
    # latent 0 writes −d_0 and fires when the parent is absent (cancelling a bias); latent 1
    # (cos 0.995 with d_0) is the parent's: |cos| would pick latent 0 (|cos| = 1)
    source = world()
    directions = source.directions
    d0, d1, d2, d3 = directions
    tilted = d0 + 0.1 * d3
    W_dec = torch.stack([-d0, tilted / tilted.norm(), d1, d2, d3])[None]

    def encode(x):
        c = x @ directions.T  # the feature values (orthonormal directions)
        z = torch.cat([(c[..., :1] < NOISE).float(), c * (c > NOISE)], -1)
        return z

    pairs = sae.absorption(W_dec, source, encode=encode)
    assert pairs["parent_latent"].tolist() == [1, 1]
    assert pairs["full_absorption"].tolist() == [0.0, 0.0]
    assert sae.hedging(W_dec, source)["latent"].tolist() == [1, 2, 3, 4]
    assert sae.splitting(W_dec, source, encode=encode)["aligned"].tolist() == [1, 1, 1, 1]
    # without latent 1 the parent has only −d_0: no latent, so its pairs are undefined
    pairs = sae.absorption(
        W_dec[:, [0, 2, 3, 4]], source, encode=lambda x: encode(x)[..., [0, 2, 3, 4]]
    )
    assert pairs["parent_latent"].tolist() == [-1, -1]
    assert pairs["full_absorption"].isna().all()


def test_a_split_feature_is_counted_exactly():
    # feature 3 is split by context: latent 4 (d_3) fires without feature 0, latent 5
    # (≈ d_3, cos 0.98) with it; latent 6 (d_3) fires on feature 2 instead and latent 7 (d_3)
    # never fires: both are aligned but not splits
    source = world()
    directions = source.directions
    d0, d1, d2, d3 = directions
    tilted = d3 + 0.2 * d1
    W_dec = torch.stack([d0, d1, d2, d3, d3, tilted / tilted.norm(), d3, d3])[None]

    def encode(x):
        c = x @ directions.T  # (instance, batch, 4) the feature values (orthonormal)
        on = c > NOISE
        z = torch.zeros(*x.shape[:2], 8)
        z[..., :3] = c[..., :3] * on[..., :3]
        z[..., 4] = c[..., 3] * (on[..., 3] & ~on[..., 0])
        z[..., 5] = c[..., 3] * (on[..., 3] & on[..., 0])
        z[..., 6] = c[..., 2] * on[..., 2]
        return z

    table = sae.splitting(W_dec, source, encode=encode)
    assert table["aligned"].tolist() == [1, 1, 1, 5]
    assert table["split_count"].tolist() == [1, 1, 1, 2]
    summary = sae.splitting_summary(table).iloc[0]
    assert summary["split_count"] == 1.25
    assert summary["split_fraction"] == summary["split_excess"] == 0.25
    strict = sae.splitting(W_dec, source, encode=encode, cos_threshold=0.99)
    assert strict["split_count"].tolist() == [1, 1, 1, 1]  # latent 5 (cos 0.981) drops out
    # latent 3 (d_3) fires never: only the context latents remain
    assert sae.splitting(W_dec, source, encode=encode, precision_threshold=0.0)[
        "split_count"
    ].tolist() == [1, 1, 1, 3]


def test_a_hedged_latent_by_hand():
    # orthonormal features e0..e3 in 6 dims, correlated groups {0, 1} and {2, 3}; the latent
    # for feature 0 is e0 + 0.3 e1 + 0.4 e2 + 0.5 e5 (e5 is no feature), norm √1.5
    directions = torch.eye(6)[:4]
    hedged = torch.tensor([1.0, 0.3, 0.4, 0.0, 0.0, 0.5])
    W_dec = torch.stack([hedged, *directions[1:]])
    table = sae.hedging(W_dec, directions, correlated=[[0, 1], [2, 3]])
    assert table["feature"].tolist() == [0, 1, 2, 3] and table["latent"].tolist() == [0, 1, 2, 3]
    row = table.iloc[0]
    assert row["cosine"] == pytest.approx(1 / math.sqrt(1.5))
    assert row["hedging"] == pytest.approx(math.sqrt(0.25 / 1.5))  # √(0.3² + 0.4²) / √1.5
    assert row["hedging_correlated"] == pytest.approx(0.3 / math.sqrt(1.5))
    assert table["hedging"][1:].tolist() == [0.0, 0.0, 0.0]
    summary = sae.hedging_summary(table).iloc[0]
    assert summary["hedging"] == pytest.approx(math.sqrt(0.25 / 1.5) / 4)
    assert summary["hedging_correlated"] == pytest.approx(0.3 / math.sqrt(1.5) / 4)


def test_hedging_between_two_features_and_in_superposition():
    # a latent (e0 + e1)/√2 between two orthonormal features hedges 1/√2
    directions = torch.eye(3)[:2]
    W_dec = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    table = sae.hedging(W_dec, directions, correlated=[[0, 1]])
    assert table.set_index("feature").loc[0, "hedging"] == pytest.approx(1 / math.sqrt(2))
    assert table.set_index("feature").loc[0, "hedging_correlated"] == pytest.approx(
        1 / math.sqrt(2)
    )
    # three directions in 2-D span the plane: every off-feature component counts (sin θ),
    # and the exact directions hedge 0 although they overlap
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    plane = torch.stack([angles.cos(), angles.sin()], 1)
    rotated = torch.tensor([[math.cos(0.3), math.sin(0.3)]])
    table = sae.hedging(torch.cat([rotated, plane[1:]]), plane)
    assert table["hedging"].tolist() == pytest.approx([math.sin(0.3), 0.0, 0.0], abs=1e-7)


def test_hedging_reads_a_source_s_correlated_sets():
    features = SparseFeatures(4, 0.1, correlated_sets=[[0, 1]], seed=0)
    source = sae.Superposed(features, d_model=6, orthogonal=True, seed=0)
    d = source.directions
    W_dec = torch.stack([d[0] + d[1], d[1], d[2] + d[3], d[3]])
    table = sae.hedging(W_dec, source).set_index("feature")
    assert table.loc[0, "hedging_correlated"] == pytest.approx(1 / math.sqrt(2))
    assert table.loc[2, "hedging"] == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(table.loc[2, "hedging_correlated"])  # feature 2 is in no set


def test_scores_without_a_hierarchy_leave_absorption_undefined():
    source = world(hierarchy=None)
    W_dec, W_enc = absorbing(source.directions)
    scores = sae.pathology_scores(W_dec, source, encode=relu_encoder(W_enc), n_samples=1024)
    assert scores[list(SCORES[:4])].isna().all().all()
    assert scores["split_count"].item() == 1.0
    # a hierarchy passed in scores the pairs it names on any source
    pairs = sae.absorption(W_dec, source, encode=relu_encoder(W_enc), hierarchy=HIERARCHY)
    assert pairs["full_absorption"].tolist() == [0.0, 0.0]


def test_bad_input():
    source = world()
    W_dec, W_enc = absorbing(source.directions)
    encode = relu_encoder(W_enc)
    with pytest.raises(ValueError, match="hierarchy: the source's features have none"):
        sae.absorption(W_dec, world(hierarchy=None), encode=encode)
    with pytest.raises(TypeError, match=r"hierarchy must be a superpose\.data\.Hierarchy"):
        sae.absorption(W_dec, source, encode=encode, hierarchy=[-1, 0, 0, -1])
    with pytest.raises(ValueError, match="hierarchy: parent must have n_features=4"):
        sae.absorption(W_dec, source, encode=encode, hierarchy=Hierarchy([-1, 0]))
    with pytest.raises(ValueError, match="hierarchy has no parent-child pair"):
        sae.absorption(W_dec, source, encode=encode, hierarchy=Hierarchy([-1] * 4))
    with pytest.raises(TypeError, match="encode is required"):
        sae.splitting(W_dec, source)
    with pytest.raises(ValueError, match="encode: give it only with a decoder tensor"):
        sae.splitting(sae.SAE("relu", 1, 6, 4), source, encode=encode)
    with pytest.raises(ValueError, match=r"encode must return latents shaped \(instance=1"):
        sae.splitting(W_dec, source, encode=lambda x: encode(x)[0])
    with pytest.raises(TypeError, match="model must be an SAE or a decoder tensor"):
        sae.hedging(W_dec.tolist(), source)
    with pytest.raises(ValueError, match=r"model: a decoder must be shaped"):
        sae.hedging(W_dec[None], source)
    with pytest.raises(TypeError, match=r"source must be a superpose\.sae source or a directions"):
        sae.hedging(W_dec, source.directions.tolist())
    with pytest.raises(ValueError, match=r"directions must be shaped \(n_features, d_model=6\)"):
        sae.hedging(W_dec, torch.eye(5))
    with pytest.raises(ValueError, match=r"source\.d_model=6 but the SAE's d_in=5"):
        sae.splitting(W_dec[..., :5], source, encode=encode)
    with pytest.raises(ValueError, match=r"cos_threshold must be a number in \[0, 1\]"):
        sae.splitting(W_dec, source, encode=encode, cos_threshold=1.5)
    with pytest.raises(ValueError, match=r"precision_threshold must be a number in \[0, 1\]"):
        sae.splitting(W_dec, source, encode=encode, precision_threshold=-0.1)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        sae.splitting(W_dec, source, encode=encode, n_samples=0)
    with pytest.raises(ValueError, match="the groups must be disjoint"):
        sae.hedging(W_dec, source, correlated=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"2 or more indices in \[0, 3\]"):
        sae.hedging(W_dec, source, correlated=[[0, 4]])
    with pytest.raises(ValueError, match=r"2 or more indices in \[0, 3\]"):
        sae.hedging(W_dec, source, correlated=[[0]])
    with pytest.raises(TypeError, match="correlated must be a list of lists"):
        sae.hedging(W_dec, source, correlated=torch.eye(4))
