"""SAE kinds: shapes, config round trip, bad input and the loss equations on tiny cases."""

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

import superpose
from superpose import SparseFeatures, sae
from superpose.sae import KINDS, SAE, BatchTopKSAE, Superposed, train
from superpose.sae import topk as sae_topk

OPTIONS = {
    "relu": {"l1_coefficient": [0.0, 0.1]},
    "topk": {"k": [1, 3]},
    "batchtopk": {"k": [1, 3]},
    "jumprelu": {"l0_coefficient": [0.0, 0.1]},
    "matryoshka": {"k": [1, 3], "prefixes": [2, 5, 8]},
}


def test_every_registered_kind_is_tested():
    assert set(KINDS) == set(OPTIONS)


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_shapes_config_round_trip_and_non_negative_latents(kind):
    sae = SAE(kind, 2, 5, 8, seed=0, **OPTIONS[kind])
    assert (sae.kind, sae.n_instances, sae.d_in, sae.d_sae) == (kind, 2, 5, 8)
    assert sae.W_enc.shape == (2, 5, 8) and sae.W_dec.shape == (2, 8, 5)
    assert sae.b_enc.shape == (2, 8) and sae.b_dec.shape == (2, 5)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(2, 8))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.transpose(1, 2))
    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    z = sae.encode(x)
    assert z.shape == (2, 7, 8) and (z >= 0).all()
    assert sae(x).shape == (2, 7, 5)
    parts = sae.loss_parts(x)
    assert set(parts) == {"mse", "sparsity", "aux"}
    assert all(value.shape == (2,) for value in parts.values())
    torch.testing.assert_close(sae.loss(x), parts["mse"] + parts["sparsity"] + parts["aux"])
    rebuilt = SAE(kind, **sae.config())
    assert type(rebuilt) is type(sae) and rebuilt.config() == sae.config()
    assert type(type(sae)(**sae.config())) is type(sae)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in sae.state_dict().items()
    }
    rebuilt.load_state_dict(sae.state_dict())
    torch.testing.assert_close(rebuilt(x), sae(x))


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_save_load_round_trip(tmp_path, kind):
    sae = SAE(kind, 2, 5, 8, seed=[0, 1], **OPTIONS[kind])
    source = Superposed(SparseFeatures(6, 0.2, seed=0), 5, seed=0)
    train(sae, source, steps=20, batch_size=32, lr=0.01, progress=False)  # left in eval()
    if kind == "batchtopk":
        assert (sae.threshold > 0).all()  # estimated in training, restored below
    if kind == "jumprelu":
        assert not torch.equal(sae.log_threshold, torch.full_like(sae.log_threshold, -2.302585))
    loaded = superpose.load(sae.save(tmp_path / kind))
    assert type(loaded) is type(sae) and loaded.kind == kind
    assert loaded.config() == sae.config() and not loaded.training
    assert loaded.state_dict().keys() == sae.state_dict().keys()
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
        assert loaded.state_dict()[name].dtype == tensor.dtype, name
    x = source.sample(64, 2, torch.Generator().manual_seed(1))
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded(x), sae(x)) and torch.equal(loaded.loss(x), sae.loss(x))
    sae.train()
    training = superpose.load(sae.save(tmp_path / "training"))
    assert training.training  # the mode is saved: BatchTopK uses its batch top-k again
    assert torch.equal(training(x), sae(x))


def test_per_instance_seeds_reproduce_single_instance_draws():
    both = SAE("topk", 2, 4, 6, k=2, seed=[3, 4])
    single = SAE("topk", 1, 4, 6, k=2, seed=4)
    torch.testing.assert_close(both.W_dec[1], single.W_dec[0])
    assert not torch.equal(both.W_dec[0], both.W_dec[1])


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        ("nope", {}, "kind must be one of"),
        ("topk", {"k": 0}, r"k must lie in \[1, 8\]"),
        ("topk", {"k": 9}, r"k must lie in \[1, 8\]"),
        ("batchtopk", {"k": [1, 0]}, r"k must lie in \(0, 8\]"),
        ("batchtopk", {"k": [0.5, 8.5]}, r"k must lie in \(0, 8\]"),
        ("batchtopk", {"k": [1, 2, 3]}, "k must be a scalar or one value per instance"),
        ("relu", {"l1_coefficient": -0.1}, "l1_coefficient must be >= 0"),
        ("relu", {"l1_coefficient": [0.1, 0.2, 0.3]}, "l1_coefficient must be a scalar"),
        ("jumprelu", {"l0_coefficient": -1.0}, "l0_coefficient must be >= 0"),
        ("jumprelu", {"bandwidth": 0.0}, "bandwidth must be a positive"),
        ("topk", {"k": 2, "aux_k": 0}, "aux_k must be an int"),
        ("topk", {"k": 2, "aux_coefficient": -1.0}, "aux_coefficient must be >= 0"),
        ("matryoshka", {"k": 2, "prefixes": [4, 2, 8]}, "prefixes must be increasing"),
        ("matryoshka", {"k": 2, "prefixes": [2, 4]}, "ending at d_sae"),
    ],
)
def test_bad_hyperparameters_are_named(kind, options, match):
    with pytest.raises(ValueError, match=match):
        SAE(kind, 2, 5, 8, **options)


def test_bad_sizes_and_types():
    with pytest.raises(ValueError, match="d_sae must be a positive integer"):
        SAE("relu", 1, 4, 0)
    with pytest.raises(TypeError, match="d_in must be a positive integer"):
        SAE("relu", 1, 4.0, 8)
    with pytest.raises(TypeError, match="k must be an int"):
        SAE("topk", 1, 4, 8, k=1.5)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'k'"):
        SAE("topk", 1, 4, 8)
    with pytest.raises(ValueError, match=r"x must be shaped \(n_instances=1, batch, d_in=4\)"):
        SAE("relu", 1, 4, 8).loss(torch.zeros(1, 3, 5))


def _identity_sae(kind, **options):
    """One instance, d_in = d_sae = 3, W_enc = W_dec = I, zero biases."""
    sae = SAE(kind, 1, 3, 3, seed=0, **options)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3)[None])
        sae.W_dec.copy_(torch.eye(3)[None])
    return sae


def test_relu_penalty_is_l1_weighted_by_decoder_norms():
    sae = _identity_sae("relu", l1_coefficient=0.5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([1.0, 2.0, 3.0])[None, :, None])
    x = torch.tensor([[[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]])
    parts = sae.loss_parts(x)
    # z = ReLU(x): rows (1, 0, 0.5) and (0, 1, 1); Σ z_j ‖W_dec,j‖ = 2.5 and 5, mean 3.75
    torch.testing.assert_close(parts["sparsity"], torch.tensor([0.5 * 3.75]))
    # x̂ = z · diag(1, 2, 3): (1, 0, 1.5) and (0, 2, 3); errors 0+4+1 and 0+1+4 → mean 5
    torch.testing.assert_close(parts["mse"], torch.tensor([5.0]))


def test_relu_unit_decoder_penalty_is_plain_l1():
    sae = _identity_sae("relu", l1_coefficient=0.5, unit_decoder=True)
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([1.0, 2.0, 3.0])[None, :, None])
    x = torch.tensor([[[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]])
    # z rows (1, 0, 0.5) and (0, 1, 1): Σ z_j = 1.5 and 2, mean 1.75, decoder norms ignored
    torch.testing.assert_close(sae.loss_parts(x)["sparsity"], torch.tensor([0.5 * 1.75]))
    assert sae.config()["unit_decoder"] is True
    assert SAE("relu", 1, 3, 3, seed=0).unit_decoder is False  # the default is unchanged
    with pytest.raises(TypeError, match="unit_decoder must be a bool"):
        SAE("relu", 1, 3, 3, unit_decoder=1)


def test_relu_unit_decoder_rows_stay_unit_norm_in_training_and_after_loading(tmp_path):
    source = Superposed(SparseFeatures(6, 0.2, seed=0), 5, seed=0)
    norms = {}
    for unit in (False, True):
        model = SAE("relu", 2, 5, 8, l1_coefficient=[0.01, 0.1], unit_decoder=unit, seed=0)
        train(model, source, steps=50, batch_size=32, lr=0.01, seed=1, progress=False)
        norms[unit] = model.W_dec.norm(dim=-1)
    torch.testing.assert_close(norms[True], torch.ones(2, 8))
    assert (norms[False] - 1).abs().max() > 0.05  # measured 0.17: the free decoder drifts
    loaded = superpose.load(model.save(tmp_path / "unit"))
    assert loaded.unit_decoder is True and loaded.config() == model.config()
    x = source.sample(16, 2, torch.Generator().manual_seed(2))
    assert torch.equal(loaded.loss(x), model.loss(x))


def test_topk_keeps_each_instances_k_largest_per_sample():
    sae = SAE("topk", 2, 4, 4, k=[1, 2], seed=0)
    pre = torch.tensor([[[0.1, 0.5, -1.0, 0.3]], [[0.1, 0.5, -1.0, 0.3]]])
    z = sae.activate(pre)
    torch.testing.assert_close(z, torch.tensor([[[0, 0.5, 0, 0]], [[0, 0.5, 0, 0.3]]]))
    # a negative pre-activation inside the top k is ReLU'd away
    z = SAE("topk", 1, 4, 4, k=3, seed=0).activate(torch.tensor([[[-0.2, 0.5, -1.0, -0.1]]]))
    torch.testing.assert_close(z, torch.tensor([[[0, 0.5, 0, 0]]]))


def test_batchtopk_keeps_k_per_sample_on_average_then_uses_its_threshold():
    sae = BatchTopKSAE(1, 3, 3, k=1, seed=0)
    pre = torch.tensor([[[3.0, 2.0, 0.0], [0.5, 0.1, 0.2]]])  # keep the 2 largest: 3 and 2
    z = sae.activate(pre)
    torch.testing.assert_close(z, torch.tensor([[[3.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]))
    sae.observe(z)
    assert sae.threshold.item() == 2.0  # first observation: the smallest kept activation
    sae.observe(torch.tensor([[[1.0, 0.0, 0.0]]]))
    assert sae.threshold.item() == pytest.approx(0.99 * 2.0 + 0.01 * 1.0)
    sae.eval()
    z = sae.activate(torch.tensor([[[2.5, 1.0, 2.0], [0.5, 0.1, 0.2]]]))
    torch.testing.assert_close(z, torch.tensor([[[2.5, 0.0, 2.0], [0.0, 0.0, 0.0]]]))


def test_batchtopk_takes_a_fractional_mean_k():
    sae = BatchTopKSAE(2, 3, 3, k=[0.5, 0.25], seed=0)
    assert sae.k.dtype == torch.float64 and sae.config()["k"] == [0.5, 0.25]
    assert BatchTopKSAE(2, 3, 3, k=[1.0, 2]).k.dtype == torch.int64  # integers stay integers
    pre = torch.arange(24.0).reshape(2, 4, 3)
    # round(0.5 · 4) = 2 and round(0.25 · 4) = 1 of each instance's 12 entries are kept
    kept = sae.activate(pre) > 0
    assert kept.flatten(1).sum(1).tolist() == [2, 1]
    assert kept[0, 3, 1:].all() and kept[1, 3, 2]
    # halves round to even, and at least one activation is kept
    assert sae_topk.batch_count(torch.tensor([0.5, 0.25, 0.125]), 2).tolist() == [1, 1, 1]
    assert sae_topk.batch_count(torch.tensor([0.75, 1.25]), 2).tolist() == [2, 2]


def test_matryoshka_sums_the_prefix_reconstruction_errors():
    sae = _identity_sae("matryoshka", k=3, prefixes=[1, 3])
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    # z = x (all kept); prefix 1 reconstructs (1, 0, 0): error 4 + 9; prefix 3 is exact
    torch.testing.assert_close(sae.loss_parts(x)["mse"], torch.tensor([13.0]))


def test_auxk_reconstructs_the_residual_with_dead_latents_only():
    sae = _identity_sae("topk", k=1, aux_k=1, aux_coefficient=0.5)
    x = torch.tensor([[[3.0, 2.0, 1.0]]])
    dead = torch.tensor([[False, True, True]])
    # z keeps 3; residual e = (0, 2, 1); the best dead latent (2) gives ê = (0, 2, 0)
    parts = sae.loss_parts(x, dead)
    torch.testing.assert_close(parts["mse"], torch.tensor([5.0]))
    torch.testing.assert_close(parts["aux"], torch.tensor([0.5 * 1.0]))
    assert sae.loss_parts(x, torch.zeros(1, 3, dtype=torch.bool))["aux"].item() == 0.0
    # the aux loss trains the dead latent's decoder row (and no gradient reaches e)
    sae.loss_parts(x, dead)["aux"].sum().backward()
    assert sae.W_dec.grad[0, 1].abs().sum() > 0 and sae.W_dec.grad[0, 0].abs().sum() == 0


def test_jumprelu_straight_through_gradients():
    bandwidth, theta = 0.2, 0.5
    sae = _identity_sae("jumprelu", l0_coefficient=0.25, bandwidth=bandwidth, threshold_init=theta)
    x = torch.tensor([[[0.55, 1.0, 0.2], [0.45, 0.58, 0.7]]])
    parts = sae.loss_parts(x)
    # H(π − θ): rows (1, 1, 0) and (0, 1, 1) → L0 = 2 each
    torch.testing.assert_close(parts["sparsity"], torch.tensor([0.25 * 2.0]))
    parts["sparsity"].sum().backward()
    # ∂/∂θ_j = λ · mean_batch −(1/ε)[|π − θ| < ε/2]: window (0.4, 0.6) holds 0.55, 0.45 (latent
    # 0) and 0.58 (latent 1); ∂/∂ log θ = θ ∂/∂θ
    in_window = torch.tensor([2.0, 1.0, 0.0])
    expected = 0.25 * (-in_window / bandwidth / 2) * theta
    torch.testing.assert_close(sae.log_threshold.grad[0], expected)
    assert sae.W_enc.grad is None or sae.W_enc.grad.abs().sum() == 0  # no gradient into π
    sae.zero_grad()
    z = sae.encode(x)
    torch.testing.assert_close(z, x * torch.tensor([[[1.0, 1, 0], [0, 1, 1]]]))
    z.sum().backward()
    # ∂z/∂θ := −(θ/ε) K: the same window count, times θ/ε; through log θ another θ
    torch.testing.assert_close(sae.log_threshold.grad[0], -in_window * theta / bandwidth * theta)
    assert math.isclose(sae.bandwidth, bandwidth)


def test_names_the_docs_cite_are_exported():
    """The sae docstrings cite resample_dead, matching and abs_cosines as sae.X, and the README
    calls sae.X(...): each must be reachable as written, and be the module's own object."""
    for module, name in [
        ("train", "resample_dead"),
        ("metrics", "matching"),
        ("metrics", "abs_cosines"),
        ("metrics", "feature_recovery"),
        ("metrics", "evaluate"),
    ]:
        assert name in sae.__all__
        assert getattr(sae, name) is getattr(
            importlib.import_module(f"superpose.sae.{module}"), name
        )
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    called = set(re.findall(r"\bsae\.([A-Za-z_]\w*)\(", readme))
    assert {"SAE", "Superposed", "train", "evaluate"} <= called
    assert all(name in sae.__all__ for name in called), called - set(sae.__all__)
