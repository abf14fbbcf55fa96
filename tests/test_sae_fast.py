"""The SAE trainer's fast path: hand-written gradients equal autograd's."""

import pytest
import torch

from superpose import SparseFeatures
from superpose.sae import SAE, Superposed, fast, train
from superpose.sae.train import firing, loss_and_backward

QUICK = {"steps": 30, "batch_size": 64, "log_every": 10, "progress": False}


def _sae(kind, k, seed=0):
    sae = SAE(kind, 3, 16, 40, k=k, aux_k=6, seed=seed)
    with torch.no_grad():  # off the symmetric initialisation
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        sae.W_enc.mul_(1.3)
    return sae


def _reference(sae, x, dead):
    sae.zero_grad(set_to_none=True)
    parts, z = loss_and_backward(sae, x, dead, 1.0)
    return parts, z, {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize(
    ("kind", "k"),
    [
        ("topk", 3),
        ("topk", [1, 2, 5]),
        ("batchtopk", 3),
        ("batchtopk", [1, 2, 5]),
        ("batchtopk", [0.3, 2, 1.55]),  # fractional: 10, 64 and 50 of the 32 · 40 entries
    ],
)
@pytest.mark.parametrize("n_dead", [0, 4, 30])  # none; fewer than aux_k = 6; more
def test_fast_gradients_equal_autograd(kind, k, n_dead):
    sae = _sae(kind, k)
    x = torch.randn(3, 32, 16, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(3, 40, dtype=torch.bool)
    dead[1:, torch.randperm(40, generator=torch.Generator().manual_seed(4))[:n_dead]] = True
    reference_parts, reference_z, reference = _reference(sae, x, dead)
    sae.zero_grad(set_to_none=True)
    parts, z = fast.loss_and_backward(sae, x, dead)
    assert z.is_sparse and z.is_coalesced()
    torch.testing.assert_close(z.to_dense(), reference_z, rtol=0, atol=0)
    for name in ("mse", "sparsity", "aux"):
        torch.testing.assert_close(parts[name], reference_parts[name], rtol=1e-6, atol=1e-7)
    assert (parts["aux"][1:] > 0).all() == (n_dead > 0) and parts["aux"][0] == 0
    # measured: largest difference 5e-7 of the largest gradient entry
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-4, atol=2e-6)


def test_batch_top_equals_topk_with_and_without_its_fallback():
    generator = torch.Generator().manual_seed(0)
    for n, count in ((100_000, [10, 400, 25]), (500, [10, 400, 25]), (5000, [2000, 1, 1])):
        scores = torch.randn(3, n, generator=generator)
        values, index = fast._batch_top(scores, torch.tensor(count), {})
        expected = scores.topk(max(count), dim=-1)
        assert torch.equal(values, expected.values) and torch.equal(index, expected.indices)


def test_firing_and_observe_read_sparse_latents_like_dense_ones():
    sae = _sae("batchtopk", [1, 2, 5])
    x = torch.randn(3, 32, 16, generator=torch.Generator().manual_seed(3))
    _, z = fast.loss_and_backward(sae, x, torch.zeros(3, 40, dtype=torch.bool))
    for got, expected in zip(firing(z), firing(z.to_dense()), strict=True):
        torch.testing.assert_close(got, expected)
    dense = _sae("batchtopk", [1, 2, 5])
    sae.observe(z)
    dense.observe(z.to_dense())
    torch.testing.assert_close(sae.threshold, dense.threshold)


def _source():
    features = SparseFeatures(40, 0.02, magnitude="exponential", seed=0)
    return Superposed(features, 16, seed=0)


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_fast_training_follows_the_reference(kind):
    runs = {}
    for method in ("reference", "fast"):
        sae = SAE(kind, 2, 16, 40, k=[2, 3], seed=1)
        result = train(sae, _source(), method=method, dead_window=64, **QUICK)
        assert result.method == method
        runs[method] = (sae, result)
    (reference, reference_result), (ours, result) = runs["reference"], runs["fast"]
    assert result.history["dead_fraction"].max() > 0  # AuxK took part
    # measured: weights within 2e-7 after 30 steps (Adam vs fused Adam, summation order)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=2e-6, msg=name)
    for name in ("loss", "l0", "dead_fraction"):
        torch.testing.assert_close(result.history[name], reference_result.history[name])
    for name, buffer in ours.named_buffers():
        torch.testing.assert_close(buffer, dict(reference.named_buffers())[name])


def test_method_and_precision_choices():
    assert train(SAE("topk", 1, 16, 40, k=2), _source(), **QUICK).method == "fast"
    assert train(SAE("relu", 1, 16, 40), _source(), **QUICK).method == "reference"
    matryoshka = SAE("matryoshka", 1, 16, 40, k=2)
    assert train(matryoshka, _source(), **QUICK).method == "reference"
    with pytest.raises(ValueError, match="method='fast' supports the topk and batchtopk"):
        train(SAE("relu", 1, 16, 40), _source(), method="fast", **QUICK)
    for method in ("auto", "reference"):
        with pytest.raises(ValueError, match="precision='bf16' is no longer offered for SAEs"):
            train(SAE("topk", 1, 16, 40, k=2), _source(), method=method, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        train(SAE("topk", 1, 16, 40, k=2), _source(), precision="fp16")
