"""The attention-only transformer and its exact path expansion."""

from __future__ import annotations

import pytest
import torch

from superpose.circuits import AttnOnlyTransformer, path_expansion


def small_model(
    n_layers: int = 2,
    *,
    layer_norm: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> AttnOnlyTransformer:
    model = AttnOnlyTransformer(
        n_layers=n_layers,
        d_model=12,
        n_heads=3,
        d_vocab=7,
        n_ctx=9,
        layer_norm=layer_norm,
        seed=seed,
    )
    return model.to(dtype)


def random_tokens(n_seq: int = 5, n_pos: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(7, (n_seq, n_pos), generator=torch.Generator().manual_seed(seed))


def test_weight_shapes_follow_the_framework():
    model = AttnOnlyTransformer(n_layers=2, d_model=16, n_heads=4, d_vocab=11, n_ctx=8)
    assert model.d_head == 4
    assert model.W_E.shape == (16, 11)
    assert model.W_pos.shape == (16, 8)
    for name in ("W_Q", "W_K", "W_V"):
        assert getattr(model, name).shape == (2, 4, 4, 16)
    assert model.W_O.shape == (2, 4, 16, 4)
    assert model.W_U.shape == (11, 16)
    explicit = AttnOnlyTransformer(n_layers=1, d_model=10, n_heads=3, d_vocab=5, n_ctx=4, d_head=7)
    assert explicit.W_Q.shape == (1, 3, 7, 10)


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_forward_maps_tokens_to_logits(n_layers):
    model = AttnOnlyTransformer(n_layers=n_layers, d_model=8, n_heads=2, d_vocab=6, n_ctx=10)
    tokens = torch.randint(6, (4, 7), generator=torch.Generator().manual_seed(0))
    logits = model(tokens)
    assert logits.shape == (4, 7, 6)
    assert torch.isfinite(logits).all()


def test_zero_layer_model_is_the_direct_path():
    model = AttnOnlyTransformer(n_layers=0, d_model=8, n_heads=1, d_vocab=6, n_ctx=5).double()
    tokens = random_tokens(3, 5).remainder(6)
    expected = (model.W_E[:, tokens].permute(1, 2, 0) + model.W_pos.T) @ model.W_U.T
    torch.testing.assert_close(model(tokens), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_attention_is_causal(layer_norm):
    model = small_model(layer_norm=layer_norm)
    tokens = random_tokens()
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 7
    logits, cache = model.run(tokens)
    torch.testing.assert_close(model(changed)[:, :5], logits[:, :5], rtol=0, atol=0)
    for pattern in cache.patterns:
        assert pattern.shape == (5, 3, 9, 9)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(5, 3, 9, dtype=torch.float64))
        assert (pattern.triu(1) == 0).all()


def test_same_seed_same_weights_different_seed_different():
    a, b, c = small_model(seed=3), small_model(seed=3), small_model(seed=4)
    for name, weight in a.named_parameters():
        assert torch.equal(weight, dict(b.named_parameters())[name])
    assert not torch.equal(a.W_E, c.W_E)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_layers": -1}, ValueError, "n_layers"),
        ({"n_layers": 1.5}, TypeError, "n_layers"),
        ({"d_model": 0}, ValueError, "d_model"),
        ({"n_heads": 3}, ValueError, "divisible"),
        ({"d_vocab": -2}, ValueError, "d_vocab"),
        ({"layer_norm": "yes"}, TypeError, "layer_norm"),
    ],
)
def test_bad_sizes_are_rejected(kwargs, error, message):
    arguments = {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_vocab": 5, "n_ctx": 4} | kwargs
    with pytest.raises(error, match=message):
        AttnOnlyTransformer(**arguments)


def test_bad_tokens_are_rejected():
    model = small_model()
    with pytest.raises(ValueError, match="d_vocab=7"):
        model(torch.full((2, 3), 7))
    with pytest.raises(ValueError, match="n_ctx=9"):
        model(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, pos\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(2, 3))


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_path_expansion_sums_to_the_logits_exactly(n_layers, layer_norm):
    model = small_model(n_layers, layer_norm=layer_norm)
    tokens = random_tokens()
    paths = path_expansion(model, tokens)
    assert len(paths) == (model.n_heads + 1) ** n_layers
    assert next(iter(paths)) == "direct"
    # float64: exact up to rounding of a sum of (n_heads + 1) ** n_layers terms.
    torch.testing.assert_close(sum(paths.values()), model(tokens), rtol=0, atol=1e-12)


def test_path_expansion_in_float32_is_exact_to_float_precision():
    model = small_model(2, dtype=torch.float32)
    tokens = random_tokens()
    with torch.no_grad():
        logits = model(tokens)
        error = (sum(path_expansion(model, tokens).values()) - logits).abs().max()
    # Measured 2.0e-7 relative; float32 epsilon is 1.2e-7.
    assert error / logits.abs().max() < 5e-6


def test_path_terms_are_the_framework_products():
    model = small_model(2)
    tokens = random_tokens()
    paths = path_expansion(model, tokens)
    _, cache = model.run(tokens)
    embedding = model.W_E.T[tokens] + model.W_pos.T
    torch.testing.assert_close(paths["direct"], embedding @ model.W_U.T, rtol=0, atol=1e-12)

    def through(layer: int, head: int, residual: torch.Tensor) -> torch.Tensor:
        ov = model.W_O[layer, head] @ model.W_V[layer, head]
        return cache.patterns[layer][:, head] @ residual @ ov.T

    torch.testing.assert_close(
        paths["L1H2"], through(1, 2, embedding) @ model.W_U.T, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        paths["L0H1>L1H0"],
        through(1, 0, through(0, 1, embedding)) @ model.W_U.T,
        rtol=0,
        atol=1e-12,
    )
