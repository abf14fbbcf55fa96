"""Weight-based circuit analysis: virtual weights, QK/OV circuits, composition, copying.

All functions read the weights only (no data); layer norm, when on, is ignored here (its
scales depend on the input). Head matrices come back stacked as ``(n_layers, n_heads, ...)``.

Conventions (the framework's): ``W_QK^h = W_Q^hᵀ W_K^h`` is the bilinear form with attention
score ``x_queryᵀ W_QK x_key / sqrt(d_head)``; ``W_OV^h = W_O^h W_V^h`` maps what a key position
holds to what the head writes at the query position.
"""

from __future__ import annotations

import math
import re

import torch

from superpose._checks import make_generator, positive_int
from superpose.circuits.factored import FactoredMatrix
from superpose.circuits.model import AttnOnlyTransformer
from superpose.circuits.tasks import MarkovChain

COMPOSITIONS = ("q", "k", "v")
_HEAD = re.compile(r"L(\d+)H(\d+)")


def qk_circuit(model: AttnOnlyTransformer) -> FactoredMatrix:
    """``W_QK = W_Qᵀ W_K`` of every head: ``(n_layers, n_heads, d_model, d_model)``, rank d_head."""
    return FactoredMatrix(model.W_Q.transpose(-1, -2), model.W_K)


def ov_circuit(model: AttnOnlyTransformer) -> FactoredMatrix:
    """``W_OV = W_O W_V`` of every head: ``(n_layers, n_heads, d_model, d_model)``, rank d_head."""
    return FactoredMatrix(model.W_O, model.W_V)


def full_qk_circuit(model: AttnOnlyTransformer) -> FactoredMatrix:
    """``W_Eᵀ W_QK W_E``: ``(n_layers, n_heads, d_vocab, d_vocab)``, query token × key token.

    Entry ``[l, h, a, b]`` is the score (times ``sqrt(d_head)``) head ``h`` of layer ``l`` gives
    from a query holding token ``a`` to a key holding token ``b``, reading the token embeddings
    directly (exact for layer 0 without layer norm, the direct path for later layers).
    """
    return model.W_E.T @ qk_circuit(model) @ model.W_E


def full_ov_circuit(model: AttnOnlyTransformer) -> FactoredMatrix:
    """``W_U W_OV W_E``: ``(n_layers, n_heads, d_vocab, d_vocab)``, output logit × source token.

    Column ``b`` holds the logits a head adds when it attends fully to a position holding
    token ``b`` (read directly from the embedding).
    """
    return model.W_U @ ov_circuit(model) @ model.W_E


def _head_index(model: AttnOnlyTransformer, name: str, role: str) -> tuple[int, int]:
    match = _HEAD.fullmatch(name)
    if match is None:
        raise ValueError(f"{role} head must be named 'L<layer>H<head>', got {name!r}")
    layer, head = int(match[1]), int(match[2])
    if layer >= model.n_layers or head >= model.n_heads:
        raise ValueError(
            f"{role} {name!r} is outside the model's n_layers={model.n_layers}, "
            f"n_heads={model.n_heads}"
        )
    return layer, head


def virtual_weights(model: AttnOnlyTransformer, writer: str, reader: str) -> torch.Tensor:
    """How strongly ``reader`` reads what ``writer`` writes: ``W_reader @ W_writer``.

    Args:
        model: the transformer.
        writer: ``"embed"`` (``W_E``, input ``d_vocab``), ``"pos"`` (``W_pos``, input ``n_ctx``)
            or a head ``"L<l>H<h>"`` (``W_O``, input ``d_head``).
        reader: a head's input ``"L<l>H<h>.q"``, ``".k"`` or ``".v"`` (output ``d_head``), or
            ``"unembed"`` (``W_U``, output ``d_vocab``). A head can only read heads of earlier
            layers.

    Returns:
        ``(reader output, writer input)``.
    """
    if writer in ("embed", "pos"):
        written, writer_layer = (model.W_E if writer == "embed" else model.W_pos), -1
    else:
        writer_layer, head = _head_index(model, writer, "writer")
        written = model.W_O[writer_layer, head]
    if reader == "unembed":
        return model.W_U @ written
    name, _, part = reader.partition(".")
    if part not in COMPOSITIONS:
        raise ValueError(f"reader must be 'unembed' or 'L<layer>H<head>.q|k|v', got {reader!r}")
    layer, head = _head_index(model, name, "reader")
    if layer <= writer_layer:
        raise ValueError(
            f"reader {reader!r} cannot read writer {writer!r}: a head reads only "
            "the embeddings and heads of earlier layers"
        )
    read = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[part][layer, head]
    return read @ written


def _frobenius(matrix: torch.Tensor | FactoredMatrix) -> torch.Tensor:
    if isinstance(matrix, FactoredMatrix):
        return matrix.frobenius_norm()
    return torch.linalg.matrix_norm(matrix)


def composition_score(
    W_A: torch.Tensor | FactoredMatrix, W_B: torch.Tensor | FactoredMatrix
) -> torch.Tensor:
    """``‖W_A W_B‖_F / (‖W_A‖_F ‖W_B‖_F)``, in ``[0, 1]``.

    Args:
        W_A: ``(..., m, k)`` the reading matrix (tensor or :class:`FactoredMatrix`).
        W_B: ``(..., k, n)`` the writing matrix; leading dimensions broadcast.

    Returns:
        ``(...)`` scores. For independent random matrices whose distribution is invariant
        under rotations of the shared ``k``-dimensional space, ``E[score²] = 1 / k`` exactly
        (see :func:`composition_baseline`).
    """
    if W_A.shape[-1] != W_B.shape[-2]:
        raise ValueError(f"W_A's columns ({W_A.shape[-1]}) must match W_B's rows ({W_B.shape[-2]})")
    product = W_A @ W_B
    return _frobenius(product) / (_frobenius(W_A) * _frobenius(W_B))


def composition_baseline(d_model: int) -> float:
    """``1 / sqrt(d_model)``: the root-mean-square composition score of random matrices.

    For ``W_A``, ``W_B`` independent and one of them rotation-invariant in the shared space,
    ``E‖W_A W_B‖² = ‖W_A‖² ‖W_B‖² / d_model``; scores well above this mean real composition.
    """
    return 1.0 / math.sqrt(positive_int("d_model", d_model))


def composition_scores(model: AttnOnlyTransformer, kind: str) -> torch.Tensor:
    """Q-, K- or V-composition of every head with every head of an earlier layer.

    ``kind="q"``: ``W_QK^{h2 T} W_OV^{h1}`` (earlier head feeds the query);
    ``"k"``: ``W_QK^{h2} W_OV^{h1}`` (it feeds the key); ``"v"``: ``W_OV^{h2} W_OV^{h1}``.

    Returns:
        ``(n_layers, n_heads, n_layers, n_heads)``: ``[l2, h2, l1, h1]`` is the score of head
        ``h2`` of layer ``l2`` reading head ``h1`` of layer ``l1``; NaN where ``l1 >= l2``.
    """
    if kind not in COMPOSITIONS:
        raise ValueError(f"kind must be one of {COMPOSITIONS}, got {kind!r}")
    qk, ov = qk_circuit(model), ov_circuit(model)
    reader = {"q": qk.T, "k": qk, "v": ov}[kind]
    n_layers, n_heads = model.n_layers, model.n_heads
    scores = torch.full((n_layers, n_heads, n_layers, n_heads), math.nan, device=model.W_Q.device)
    for later in range(n_layers):
        for earlier in range(later):
            W_A = reader[later][:, None]  # (n_heads later, 1, d_model, d_model)
            W_B = ov[earlier][None]  # (1, n_heads earlier, d_model, d_model)
            scores[later, :, earlier] = composition_score(W_A, W_B).detach()
    return scores


def random_composition_scores(
    d_model: int, d_head: int, n_samples: int, seed: int | torch.Generator | None
) -> torch.Tensor:
    """Composition scores of random head-shaped matrices, for comparison with trained ones.

    Both matrices are products of standard normal factors ``(d_model, d_head) @ (d_head,
    d_model)``, the shape of ``W_QK`` and ``W_OV``.

    Returns:
        ``(n_samples,)`` scores; their mean square is ``1 / d_model`` in expectation.
    """
    d_model = positive_int("d_model", d_model)
    d_head = positive_int("d_head", d_head)
    n_samples = positive_int("n_samples", n_samples)
    generator = make_generator(seed)

    def draw() -> FactoredMatrix:
        return FactoredMatrix(
            torch.randn(n_samples, d_model, d_head, generator=generator),
            torch.randn(n_samples, d_head, d_model, generator=generator),
        )

    return composition_score(draw(), draw())


def copying_score(model: AttnOnlyTransformer) -> torch.Tensor:
    """``Σ λ / Σ |λ|`` over the eigenvalues of each head's full OV circuit ``W_U W_OV W_E``.

    +1 when all eigenvalues are positive (the head copies the tokens it attends to, raising
    their logits), -1 when all are negative (it suppresses them). Uses the ``d_head`` nonzero
    eigenvalues from the factored form (complex ones contribute their real part above).

    Returns:
        ``(n_layers, n_heads)``.
    """
    eigenvalues = full_ov_circuit(model).eigenvalues().detach()
    return eigenvalues.real.sum(dim=-1) / eigenvalues.abs().sum(dim=-1)


def direct_path_kl(model: AttnOnlyTransformer, chain: MarkovChain) -> torch.Tensor:
    """``KL(chain's next-token law ‖ direct-path prediction)`` per current token, in nats.

    The direct path predicts from the current token ``a`` at position ``p`` the logits
    ``W_U norm(W_E[:, a] + W_pos[:, p])``. The KL from ``chain.transition[a]`` is averaged over
    the prediction positions ``p = 0 … chain.n_ctx - 2``, which a token visits equally often
    when the chain starts from its stationary law. For a zero-layer model (layer norm or not)
    the direct path is the whole model, so this is exact with no sampling:
    ``stationary @ direct_path_kl(model, chain)`` is its expected next-token loss minus the
    chain's entropy rate.

    Args:
        model: the transformer; its ``d_vocab`` must equal the chain's, its ``n_ctx`` cover it.
        chain: a lag-1 :class:`~superpose.circuits.tasks.MarkovChain` (or subclass).

    Returns:
        ``(d_vocab,)``, entry ``a`` for current token ``a``.
    """
    if chain.lag != 1:
        raise ValueError(f"chain must have lag=1 (the direct path sees one token), got {chain.lag}")
    if chain.d_vocab != model.d_vocab or chain.n_ctx > model.n_ctx:
        raise ValueError(
            f"chain (d_vocab={chain.d_vocab}, n_ctx={chain.n_ctx}) does not match the model "
            f"(d_vocab={model.d_vocab}, n_ctx={model.n_ctx})"
        )
    with torch.no_grad():
        residual = model.W_E.T[:, None] + model.W_pos.T[None, : chain.n_ctx - 1]
        logits = model.unembed(model.normalize(residual, model.scale(residual)))
        log_probs = logits.log_softmax(dim=-1).cpu()  # (current, position, next)
    true = chain.log_transition[:, None]
    return (true.exp() * (true - log_probs)).sum(dim=-1).mean(dim=-1)
