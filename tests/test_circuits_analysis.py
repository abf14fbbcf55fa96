"""Factored matrices, QK/OV circuits, virtual weights, composition and attention scores."""

from __future__ import annotations

import math

import pytest
import torch

from superpose.circuits import (
    AttnOnlyTransformer,
    Batch,
    FactoredMatrix,
    composition_baseline,
    composition_score,
    composition_scores,
    copying_score,
    full_ov_circuit,
    full_qk_circuit,
    in_context_learning_score,
    loss_by_position,
    masked_loss,
    ov_circuit,
    prefix_matching_scores,
    previous_token_scores,
    qk_circuit,
    random_composition_scores,
    virtual_weights,
)


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def model(n_layers: int = 2, seed: int = 0) -> AttnOnlyTransformer:
    return AttnOnlyTransformer(
        n_layers=n_layers, d_model=12, n_heads=3, d_vocab=7, n_ctx=9, seed=seed
    ).double()


# --- FactoredMatrix -------------------------------------------------------------------------


def test_factored_matrix_matches_its_product():
    A, B = gaussian(2, 3, 9, 4, seed=1), gaussian(2, 3, 4, 6, seed=2)
    matrix = FactoredMatrix(A, B)
    dense = A @ B
    assert matrix.shape == (2, 3, 9, 6)
    assert matrix.rank == 4
    torch.testing.assert_close(matrix.product(), dense)
    torch.testing.assert_close(matrix.T.product(), dense.transpose(-1, -2))
    torch.testing.assert_close(matrix[1, 2].product(), dense[1, 2])
    torch.testing.assert_close(matrix.frobenius_norm(), torch.linalg.matrix_norm(dense))
    U, S, Vh = matrix.svd()
    assert S.shape == (2, 3, 4)
    torch.testing.assert_close(S, torch.linalg.svdvals(dense)[..., :4])
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, dense)
    torch.testing.assert_close(
        U.transpose(-1, -2) @ U, torch.eye(4, dtype=torch.float64).expand(2, 3, 4, 4)
    )


def test_factored_products_keep_the_smaller_rank():
    left = FactoredMatrix(gaussian(8, 2, seed=1), gaussian(2, 5, seed=2))
    right = FactoredMatrix(gaussian(5, 3, seed=3), gaussian(3, 6, seed=4))
    for product in (left @ right, right.T @ left.T):
        assert product.rank == 2
    torch.testing.assert_close((left @ right).product(), left.product() @ right.product())
    dense = gaussian(6, 8, seed=5)
    torch.testing.assert_close((dense @ left).product(), dense @ left.product())
    torch.testing.assert_close((left @ dense[:5]).product(), left.product() @ dense[:5])


def test_factored_eigenvalues_are_the_nonzero_spectrum():
    matrix = FactoredMatrix(gaussian(10, 3, seed=1), gaussian(3, 10, seed=2))
    factored = matrix.eigenvalues()
    dense = torch.linalg.eigvals(matrix.product())
    largest = dense[dense.abs().argsort(descending=True)[:3]]
    key = lambda values: sorted(values.tolist(), key=lambda z: (round(z.real, 6), z.imag))  # noqa: E731
    for a, b in zip(key(factored), key(largest), strict=True):
        assert abs(a - b) < 1e-9
    with pytest.raises(ValueError, match="square"):
        FactoredMatrix(gaussian(4, 2), gaussian(2, 5)).eigenvalues()


def test_factored_matrix_rejects_mismatched_factors():
    with pytest.raises(ValueError, match="must match"):
        FactoredMatrix(gaussian(4, 3), gaussian(2, 5))
    with pytest.raises(ValueError, match="2-D"):
        FactoredMatrix(gaussian(4), gaussian(4, 5))


# --- circuits and virtual weights ---------------------------------------------------------


def test_circuits_are_the_framework_products():
    m = model()
    layer, head = 1, 2
    W_QK = m.W_Q[layer, head].T @ m.W_K[layer, head]
    W_OV = m.W_O[layer, head] @ m.W_V[layer, head]
    torch.testing.assert_close(qk_circuit(m)[layer, head].product(), W_QK)
    torch.testing.assert_close(ov_circuit(m)[layer, head].product(), W_OV)
    torch.testing.assert_close(full_qk_circuit(m)[layer, head].product(), m.W_E.T @ W_QK @ m.W_E)
    torch.testing.assert_close(full_ov_circuit(m)[layer, head].product(), m.W_U @ W_OV @ m.W_E)
    assert full_ov_circuit(m).rank == m.d_head


def test_full_qk_circuit_gives_the_layer0_attention_scores():
    m = model(1)
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    m.W_pos.data.zero_()  # only the tokens then set the scores
    pattern = m.run(tokens)[1].patterns[0][0, 1]  # head 1: (query, key)
    scores = full_qk_circuit(m)[0, 1].product()[tokens[0]][:, tokens[0]] / math.sqrt(m.d_head)
    expected = scores.masked_fill(torch.ones(5, 5).triu(1).bool(), -math.inf).softmax(-1)
    torch.testing.assert_close(pattern, expected)


def test_virtual_weights_multiply_reader_and_writer():
    m = model()
    torch.testing.assert_close(virtual_weights(m, "L0H1", "L1H2.k"), m.W_K[1, 2] @ m.W_O[0, 1])
    torch.testing.assert_close(virtual_weights(m, "embed", "L0H0.q"), m.W_Q[0, 0] @ m.W_E)
    torch.testing.assert_close(virtual_weights(m, "pos", "L1H1.v"), m.W_V[1, 1] @ m.W_pos)
    torch.testing.assert_close(virtual_weights(m, "L1H0", "unembed"), m.W_U @ m.W_O[1, 0])
    assert virtual_weights(m, "embed", "unembed").shape == (7, 7)


@pytest.mark.parametrize(
    ("writer", "reader", "message"),
    [
        ("L1H0", "L1H2.q", "cannot read"),
        ("L1H0", "L0H2.k", "cannot read"),
        ("L2H0", "unembed", "outside"),
        ("L0H3", "unembed", "outside"),
        ("head", "unembed", "L<layer>H<head>"),
        ("embed", "L1H0.x", "q\\|k\\|v"),
    ],
)
def test_virtual_weights_reject_impossible_connections(writer, reader, message):
    with pytest.raises(ValueError, match=message):
        virtual_weights(model(), writer, reader)


# --- composition ----------------------------------------------------------------------------


def test_composition_score_analytic_values():
    eye = torch.eye(16, dtype=torch.float64)
    assert composition_score(eye, eye).item() == pytest.approx(1 / 4, abs=1e-15)
    reads_first, writes_last = eye[:, :8] @ eye[:8], eye[:, 8:] @ eye[8:]
    assert composition_score(reads_first, writes_last).item() == 0
    u, v, w = gaussian(5, 1, seed=1), gaussian(16, 1, seed=2), gaussian(1, 6, seed=3)
    aligned = composition_score(u @ v.T, v @ w)
    assert aligned.item() == pytest.approx(1.0, abs=1e-12)
    A, B = gaussian(3, 16, 16, seed=4), gaussian(16, 16, seed=5)
    scores = composition_score(A, B)
    assert scores.shape == (3,)
    assert ((scores > 0) & (scores < 1)).all()
    with pytest.raises(ValueError, match="must match"):
        composition_score(gaussian(4, 5), gaussian(4, 5))


def test_composition_score_accepts_factored_matrices():
    A = FactoredMatrix(gaussian(16, 4, seed=1), gaussian(4, 16, seed=2))
    B = FactoredMatrix(gaussian(16, 4, seed=3), gaussian(4, 16, seed=4))
    dense = composition_score(A.product(), B.product())
    for left, right in ((A, B), (A.product(), B), (A, B.product())):
        torch.testing.assert_close(composition_score(left, right), dense)


def test_random_composition_matches_the_analytic_baseline():
    d_model, n_samples = 64, 4000
    scores = random_composition_scores(d_model, 16, n_samples, seed=0)
    assert composition_baseline(d_model) == 0.125
    # E[score²] = 1/d_model exactly. Measured: 0.9973 / d_model with a relative standard
    # error of 0.18 %, so 1 % is over five standard errors.
    assert (scores**2).mean().item() == pytest.approx(1 / d_model, rel=0.01)
    # The mean score sits just below the root mean square (Jensen); measured 0.12464 with a
    # standard error of 0.00011.
    assert scores.mean().item() == pytest.approx(composition_baseline(d_model), rel=0.01)
    with pytest.raises(ValueError, match="d_model"):
        composition_baseline(0)


def test_composition_scores_of_a_model():
    m = model(3)
    qk, ov = qk_circuit(m), ov_circuit(m)
    for kind, reader in (("q", qk.T), ("k", qk), ("v", ov)):
        scores = composition_scores(m, kind)
        assert scores.shape == (3, 3, 3, 3)
        later, earlier = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
        by_layers = scores.permute(0, 2, 1, 3)  # (later layer, earlier layer, head, head)
        assert by_layers[later <= earlier].isnan().all()
        assert not by_layers[later > earlier].isnan().any()
        expected = composition_score(reader[2, 1].product(), ov[0, 2].product())
        assert scores[2, 1, 0, 2].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        composition_scores(m, "x")


def test_copying_score_signs():
    m = AttnOnlyTransformer(n_layers=1, d_model=6, n_heads=1, d_vocab=6, n_ctx=4).double()
    eye = torch.eye(6, dtype=torch.float64)
    with torch.no_grad():
        for weight in (m.W_E, m.W_U, m.W_V[0, 0], m.W_O[0, 0]):
            weight.copy_(eye)
        assert copying_score(m).item() == pytest.approx(1.0, abs=1e-12)
        m.W_O[0, 0].copy_(-eye)
        assert copying_score(m).item() == pytest.approx(-1.0, abs=1e-12)
        m.W_O[0, 0].copy_(torch.diag(torch.tensor([1.0, 1, 1, 1, -1, -1])))
        assert copying_score(m).item() == pytest.approx(1 / 3, abs=1e-12)


# --- attention-pattern scores --------------------------------------------------------------


def uniform_attention_model() -> AttnOnlyTransformer:
    m = model(2)
    with torch.no_grad():
        m.W_Q.zero_()  # every score 0: each query attends uniformly to keys 0 … q
    return m


def test_previous_token_score_of_uniform_attention():
    tokens = torch.randint(7, (4, 9), generator=torch.Generator().manual_seed(0))
    scores = previous_token_scores(uniform_attention_model(), tokens)
    expected = sum(1 / (p + 1) for p in range(1, 9)) / 8
    torch.testing.assert_close(scores, torch.full((2, 3), expected, dtype=torch.float64))


def test_prefix_matching_score_matches_a_direct_count():
    m = model(2, seed=1)
    tokens = torch.randint(4, (6, 9), generator=torch.Generator().manual_seed(2))
    patterns = torch.stack(m.run(tokens)[1].patterns).detach()
    total, count = torch.zeros(2, 3, dtype=torch.float64), 0
    for b in range(6):
        for q in range(9):
            keys = [k for k in range(1, q + 1) if tokens[b, k - 1] == tokens[b, q]]
            if keys:
                total += patterns[:, b, :, q, keys].sum(-1)
                count += 1
    torch.testing.assert_close(prefix_matching_scores(m, tokens), total / count)
    uniform = prefix_matching_scores(uniform_attention_model(), torch.tensor([[0, 1, 0, 1]]))
    # Queries 2 (key 1 matches) and 3 (key 2 matches), each 1/(q + 1) of uniform attention.
    torch.testing.assert_close(
        uniform, torch.full((2, 3), (1 / 3 + 1 / 4) / 2, dtype=torch.float64)
    )


def test_scores_need_heads_and_repeats():
    with pytest.raises(ValueError, match="n_layers=0"):
        previous_token_scores(model(0), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no repeated token"):
        prefix_matching_scores(model(1), torch.tensor([[0, 1, 2, 3]]))


# --- losses on data ------------------------------------------------------------------------


def test_losses_by_position_marked_positions_and_in_context_learning():
    m = model(2, seed=3)
    tokens = torch.randint(7, (5, 9), generator=torch.Generator().manual_seed(4))
    log_probs = m(tokens).detach().log_softmax(-1)
    losses = -log_probs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # (batch, pos - 1)
    torch.testing.assert_close(loss_by_position(m, tokens), losses.mean(0))
    mask = torch.zeros(5, 9, dtype=torch.bool)
    mask[1, 2] = mask[3, 6] = mask[:, -1] = True  # the last position has no target
    expected = (losses[1, 2] + losses[3, 6]) / 2
    assert masked_loss(m, Batch(tokens, mask)) == pytest.approx(expected.item(), rel=1e-12)
    icl = in_context_learning_score(m, tokens, early=1, late=7)
    assert icl == pytest.approx((losses[:, 7].mean() - losses[:, 1].mean()).item(), rel=1e-12)
    with pytest.raises(ValueError, match="early < late"):
        in_context_learning_score(m, tokens, early=3, late=8)
    with pytest.raises(ValueError, match="marks no position"):
        masked_loss(m, Batch(tokens, torch.zeros_like(mask)))
