"""SAELens files both ways: ``sae.to_saelens`` / ``sae.from_saelens``.

The round trips through our own reader need nothing else; the checks against SAELens's own
loader and SAELens-written files skip without ``sae-lens`` (the ``compare`` extra).
"""

import json
import warnings

import numpy as np
import pytest
import torch

from superpose import SparseFeatures, sae
from superpose.io import load_tensors, save_json, save_tensors
from superpose.sae.saelens import ARCHITECTURES, CFG_FILE, TRAINING_ARCHITECTURES, WEIGHTS_FILE

OPTIONS = {
    "relu": {"l1_coefficient": [0.1, 0.2]},
    "topk": {"k": [2, 3], "aux_k": 5, "aux_coefficient": 0.1},
    "batchtopk": {"k": [2, 0.5]},  # a fractional mean k too
    "jumprelu": {"l0_coefficient": [0.01, 0.02], "bandwidth": 0.1},
    "matryoshka": {"k": [2, 3], "prefixes": [4, 12, 32]},
}
SAELENS_CLASSES = {"standard": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE"}


def _model(kind: str) -> sae.SparseAutoencoder:
    """Two instances with every weight moved off its initial value."""
    model = sae.SAE(kind, 2, 8, 32, seed=0, **OPTIONS[kind])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.b_enc.copy_(0.1 * torch.randn(model.b_enc.shape, generator=generator))
        model.b_dec.copy_(0.1 * torch.randn(model.b_dec.shape, generator=generator))
        if kind == "relu":  # an unconstrained decoder
            scale = torch.rand(model.W_dec.shape[:2], generator=generator) + 0.5
            model.W_dec.mul_(scale[..., None])
        if kind == "jumprelu":
            model.log_threshold.copy_(torch.randn(2, 32, generator=generator) * 0.5 - 1.5)
        if kind in ("batchtopk", "matryoshka"):
            model.threshold.copy_(torch.tensor([0.2, 0.3]))
    return model.eval()


def _inputs(n: int = 2048, d_in: int = 8) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(2))


def _instance(model: sae.SparseAutoencoder, i: int, x: torch.Tensor):
    """Latents and reconstruction of instance ``i`` for ``x: (batch, d_in)``."""
    with torch.no_grad():
        z = model.encode(x[None].expand(model.n_instances, -1, -1))
        return z[i], model.decode(z)[i]


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_ours_to_saelens_to_ours_is_identical(tmp_path, kind):
    model = _model(kind)
    assert sae.to_saelens(model, tmp_path / "sae", instance=1) == tmp_path / "sae"
    back = sae.from_saelens(tmp_path / "sae")
    assert (type(back), back.n_instances, back.training) == (type(model), 1, False)
    expected = {
        name: value[1:] if name in ("l1_coefficient", "k", "l0_coefficient") else value
        for name, value in model.config().items()
    }
    assert back.config() == {**expected, "n_instances": 1}
    ours, theirs = model.state_dict(), back.state_dict()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(theirs[name][0], ours[name][1]), name
    if kind == "jumprelu":  # log θ may move by a float, θ = exp(log θ) does not
        assert torch.equal(back.log_threshold.exp()[0], model.log_threshold.exp()[1])
    if kind in ("batchtopk", "matryoshka"):
        assert torch.equal(back.threshold, model.threshold[1:])
    x = _inputs()
    z, reconstruction = _instance(model, 1, x)
    z_back, reconstruction_back = _instance(back, 0, x)
    assert torch.equal(z_back, z) and torch.equal(reconstruction_back, reconstruction)
    assert (z > 0).any()


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_the_files_are_in_saelens_format(tmp_path, kind):
    sae.to_saelens(_model(kind), tmp_path, instance=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CFG_FILE, WEIGHTS_FILE]
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    assert cfg["architecture"] == ARCHITECTURES[kind]
    assert cfg["metadata"]["training_architecture"] == TRAINING_ARCHITECTURES[kind]
    assert cfg["metadata"]["superpose"]["kind"] == kind
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["apply_b_dec_to_input"]) == (
        8,
        32,
        "float32",
        True,
    )
    weights = load_tensors(tmp_path / WEIGHTS_FILE)
    shapes = {"W_enc": (8, 32), "b_enc": (32,), "W_dec": (32, 8), "b_dec": (8,)}
    if cfg["architecture"] == "jumprelu":
        shapes["threshold"] = (32,)
    assert {name: tuple(t.shape) for name, t in weights.items()} == shapes
    assert all(t.dtype == torch.float32 for t in weights.values())
    details = cfg["metadata"]["training_architecture_details"]
    if kind == "relu":
        assert details == {"l1_coefficient": pytest.approx(0.1), "lp_norm": 1.0}
    if kind == "topk":
        assert (cfg["k"], cfg["rescale_acts_by_decoder_norm"]) == (2, False)
    if kind in ("batchtopk", "matryoshka"):
        assert (details["k"], details["topk_threshold_lr"]) == (2, 0.01)
        assert torch.equal(weights["threshold"], torch.full((32,), 0.2))
    if kind == "matryoshka":
        assert details["matryoshka_widths"] == [4, 12, 32]


def test_loaded_saes_are_scored_on_a_superpose_source(tmp_path):
    source = sae.Superposed(SparseFeatures(16, 0.05, seed=0), d_model=8, seed=0)
    model = _model("topk")
    sae.to_saelens(model, tmp_path, instance=1)
    back = sae.from_saelens(tmp_path)
    ours = sae.evaluate(model, source, n_samples=2048).iloc[1].drop("instance")
    theirs = sae.evaluate(back, source, n_samples=2048).iloc[0].drop("instance")
    np.testing.assert_allclose(theirs.to_numpy(float), ours.to_numpy(float), rtol=1e-6)
    recovery = sae.feature_recovery(back, source.directions)
    assert recovery["mcc"].iloc[0] == pytest.approx(theirs["mcc"], rel=1e-6)


def test_to_saelens_refuses_what_it_cannot_write(tmp_path):
    model = _model("topk")
    with pytest.raises(ValueError, match="the SAE has 2 instances; say which"):
        sae.to_saelens(model, tmp_path)
    with pytest.raises(ValueError, match=r"instance must lie in \[0, 1\], got 2"):
        sae.to_saelens(model, tmp_path, instance=2)
    with pytest.raises(TypeError, match="instance must be an int"):
        sae.to_saelens(model, tmp_path, instance=True)
    with pytest.raises(TypeError, match=r"model must be a superpose\.sae SAE"):
        sae.to_saelens(torch.nn.Linear(2, 2), tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="path must be a folder"):
        sae.to_saelens(model, tmp_path / "file", instance=0)
    untrained = sae.SAE("batchtopk", 1, 8, 32, k=2)
    with pytest.raises(ValueError, match="no inference threshold yet"):
        sae.to_saelens(untrained, tmp_path / "untrained")
    assert not (tmp_path / "untrained").exists()


def _write(path, architecture, weights, **cfg):
    """A SAELens folder written by hand (d_in 8, d_sae 32 unless given)."""
    save_tensors(weights, path / WEIGHTS_FILE)
    save_json({"architecture": architecture, "d_in": 8, "d_sae": 32, **cfg}, path / CFG_FILE)
    return path


def _weights(threshold=None, norms=None, seed=3):
    generator = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(32, 8, generator=generator)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * (1 if norms is None else norms[:, None])
    weights = {
        "W_enc": torch.randn(8, 32, generator=generator) * 0.5,
        "b_enc": torch.randn(32, generator=generator) * 0.1,
        "W_dec": W_dec,
        "b_dec": torch.randn(8, generator=generator) * 0.1,
    }
    if threshold is not None:
        weights["threshold"] = threshold
    return weights


def test_from_saelens_folds_decoder_norms_and_an_unapplied_b_dec(tmp_path):
    """SAELens's TopK with ``rescale_acts_by_decoder_norm`` and ``apply_b_dec_to_input =
    false``, computed here by its formulas, against the folded superpose SAE."""
    norms = torch.rand(32, generator=torch.Generator().manual_seed(4)) + 0.5
    w = _weights(norms=norms)
    _write(tmp_path, "topk", w, k=4, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=False)
    back = sae.from_saelens(tmp_path)
    assert back.kind == "topk" and back.k.tolist() == [4]
    torch.testing.assert_close(back.W_dec.norm(dim=-1)[0], torch.ones(32))
    x = _inputs()
    pre = (x @ w["W_enc"] + w["b_enc"]) * norms
    values, indices = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    reconstruction = (z / norms) @ w["W_dec"] + w["b_dec"]
    z_back, reconstruction_back = _instance(back, 0, x)
    torch.testing.assert_close(z_back, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reconstruction_back, reconstruction, rtol=1e-5, atol=1e-5)


def test_from_saelens_reads_jumprelu_files(tmp_path):
    threshold = torch.rand(32, generator=torch.Generator().manual_seed(5)) * 0.3
    threshold[:3] = torch.tensor([0.0, -0.1, 1e-3])
    w = _weights(threshold)
    back = sae.from_saelens(_write(tmp_path / "a", "jumprelu", w))
    assert back.kind == "jumprelu"
    x = _inputs()
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    z = pre.relu() * (pre > threshold)  # SAELens's JumpReLU
    assert torch.equal(_instance(back, 0, x)[0], z)  # θ ≤ 0 read as a plain ReLU

    # written by SAELens for a BatchTopK SAE: one threshold; not all equal → JumpReLU
    metadata = {"training_architecture": "batchtopk", "training_architecture_details": {"k": 3}}
    batchtopk = _weights(torch.full((32,), 0.25))
    back = sae.from_saelens(_write(tmp_path / "b", "jumprelu", batchtopk, metadata=metadata))
    assert (back.kind, back.k.tolist(), back.threshold.tolist()) == ("batchtopk", [3], [0.25])
    assert sae.from_saelens(_write(tmp_path / "c", "jumprelu", w, metadata=metadata)).kind == (
        "jumprelu"
    )

    # a SAELens training checkpoint of a Matryoshka SAE: its threshold is topk_threshold
    checkpoint = {**_weights(), "topk_threshold": torch.tensor(0.5, dtype=torch.float64)}
    widths = {"k": 2.0, "matryoshka_widths": [8, 16], "aux_loss_coefficient": 1.0}
    back = sae.from_saelens(_write(tmp_path / "d", "matryoshka_batchtopk", checkpoint, **widths))
    assert (back.kind, back.k.tolist(), back.prefixes) == ("matryoshka", [2], [8, 16, 32])
    assert (back.threshold.tolist(), back.aux_coefficient) == ([0.5], 1.0)


def test_from_saelens_refuses_what_superpose_cannot_represent(tmp_path):
    with pytest.raises(ValueError, match=r"no superpose kind for 'gated': .*gate and magnitude"):
        sae.from_saelens(_write(tmp_path / "a", "gated", _weights()))
    with pytest.raises(ValueError, match="latents can be negative"):
        sae.from_saelens(_write(tmp_path / "b", "abstopk", _weights(), k=3))
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'"):
        sae.from_saelens(
            _write(tmp_path / "c", "standard", _weights(), normalize_activations="layer_norm")
        )
    with pytest.raises(ValueError, match="no 'architecture'"):
        save_json({"d_in": 8, "d_sae": 32}, tmp_path / "c" / CFG_FILE)
        sae.from_saelens(tmp_path / "c")
    with pytest.raises(ValueError, match=r"the weights must be .*'threshold'"):
        sae.from_saelens(_write(tmp_path / "d", "jumprelu", _weights()))
    with pytest.raises(ValueError, match="a topk config needs an integer k"):
        sae.from_saelens(_write(tmp_path / "e", "topk", _weights(), k=2.5))
    with pytest.raises(ValueError, match="unknown SAELens architecture"):
        sae.from_saelens(_write(tmp_path / "f", "mystery", _weights()))
    with pytest.raises(FileNotFoundError, match=r"no SAELens cfg\.json"):
        sae.from_saelens(tmp_path / "missing")
    with pytest.raises(TypeError, match="path_or_sae must be a SAELens folder"):
        sae.from_saelens(3)
    with pytest.raises(TypeError, match="path_or_sae must be a SAELens folder"):
        sae.from_saelens(torch.nn.Linear(2, 2))


# ---- against SAELens itself (skipped without sae-lens) ----


@pytest.fixture(scope="module")
def sae_lens():
    with warnings.catch_warnings():  # its imports warn about deprecated transformer_lens modules
        warnings.simplefilter("ignore")
        return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_saelens_loads_our_file_and_computes_the_same(tmp_path, kind, sae_lens):
    model = _model(kind)
    sae.to_saelens(model, tmp_path / "ours", instance=1)
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "ours")
    assert type(theirs).__name__ == SAELENS_CLASSES[ARCHITECTURES[kind]]
    cfg = json.loads((tmp_path / "ours" / CFG_FILE).read_text())
    assert sorted(cfg) == sorted(theirs.cfg.to_dict())  # the fields SAELens writes
    x = _inputs()
    z, reconstruction = _instance(model, 1, x)
    with torch.no_grad():
        z_theirs = theirs.encode(x)
        reconstruction_theirs = theirs.decode(z_theirs)
    assert torch.equal(z_theirs, z)  # measured: identical
    torch.testing.assert_close(reconstruction_theirs, reconstruction, rtol=0, atol=1e-5)

    # and back: the loaded object, and the folder SAELens saves it to
    theirs.save_model(tmp_path / "resaved")
    for source in (theirs, tmp_path / "resaved"):
        back = sae.from_saelens(source)
        assert back.kind == kind
        assert torch.equal(_instance(back, 0, x)[0], z)


def _saelens_trained(sae_lens, architecture: str):
    """A SAELens training SAE with random weights (non-unit decoder rows)."""
    configs = {
        "standard": (sae_lens.StandardTrainingSAE, sae_lens.StandardTrainingSAEConfig, {}),
        "topk": (sae_lens.TopKTrainingSAE, sae_lens.TopKTrainingSAEConfig, {"k": 4}),
        "batchtopk": (sae_lens.BatchTopKTrainingSAE, sae_lens.BatchTopKTrainingSAEConfig, {"k": 4}),
        "jumprelu": (sae_lens.JumpReLUTrainingSAE, sae_lens.JumpReLUTrainingSAEConfig, {}),
        "matryoshka_batchtopk": (
            sae_lens.MatryoshkaBatchTopKTrainingSAE,
            sae_lens.MatryoshkaBatchTopKTrainingSAEConfig,
            {"k": 4, "matryoshka_widths": [8, 32]},
        ),
    }
    cls, config, options = configs[architecture]
    model = cls(config(d_in=8, d_sae=32, **options))
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        if architecture == "jumprelu":
            model.threshold.copy_(torch.rand(32, generator=generator) * 0.3)
        if "batchtopk" in architecture:
            model.topk_threshold.fill_(0.2)
    return model


@pytest.mark.parametrize(
    ("architecture", "kind"),
    [
        ("standard", "relu"),
        ("topk", "topk"),
        ("batchtopk", "batchtopk"),
        ("jumprelu", "jumprelu"),
        ("matryoshka_batchtopk", "matryoshka"),
    ],
)
def test_saelens_saes_read_into_superpose(tmp_path, sae_lens, architecture, kind):
    trained = _saelens_trained(sae_lens, architecture)
    trained.save_inference_model(tmp_path / "inference")
    reference = sae_lens.SAE.load_from_disk(tmp_path / "inference")
    x = _inputs()
    with torch.no_grad():
        z = reference.encode(x)
        reconstruction = reference.decode(z)
    for source in (tmp_path / "inference", reference, trained):
        back = sae.from_saelens(source)
        assert back.kind == kind
        z_back, reconstruction_back = _instance(back, 0, x)
        # TopK kinds fold the decoder norms: float rounding only
        torch.testing.assert_close(z_back, z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reconstruction_back, reconstruction, rtol=1e-5, atol=1e-5)
    if kind == "matryoshka":
        assert back.prefixes == [8, 32]
