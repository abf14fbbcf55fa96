"""Behavioural measures on data: attention-pattern scores of heads and losses by position.

* :func:`previous_token_scores`: how much each head attends to the previous position.
* :func:`prefix_matching_scores`: how much each head attends to the token *after* an earlier
  occurrence of the current token, the signature of an induction head.
* :func:`loss_by_position`, :func:`masked_loss`, :func:`in_context_learning_score`: the model's
  next-token loss at each position, on a task's planted positions, and late minus early.
* :func:`next_token_kl`: distance of predictions from a Markov chain's true next-token law.
"""

from __future__ import annotations

import torch

from superpose.circuits.model import AttnOnlyTransformer, next_token_losses
from superpose.circuits.tasks import Batch, MarkovChain


def _patterns(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """All attention patterns stacked ``(n_layers, batch, n_heads, query_pos, key_pos)``."""
    if model.n_layers == 0:
        raise ValueError("the model has no attention heads (n_layers=0)")
    with torch.no_grad():
        return torch.stack(model.run(tokens)[1].patterns)


def previous_token_scores(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position ``p >= 1`` to position ``p - 1``.

    Args:
        model: the transformer.
        tokens: ``(batch, pos)`` with ``pos >= 2``.

    Returns:
        ``(n_layers, n_heads)`` scores in ``[0, 1]``.
    """
    patterns = _patterns(model, tokens)
    return patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))


def prefix_matching_scores(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Attention to the positions right after earlier occurrences of the current token.

    For a query at ``q`` the matching keys are the ``k <= q`` with ``tokens[k - 1] ==
    tokens[q]`` (and ``k - 1 < q``). The score is the attention mass on matching keys, averaged
    over the queries that have at least one; an induction head scores near 1 on repeated
    random tokens.

    Args:
        model: the transformer.
        tokens: ``(batch, pos)`` tokens, e.g. from :class:`RepeatedTokens`.

    Returns:
        ``(n_layers, n_heads)`` scores in ``[0, 1]``.
    """
    patterns = _patterns(model, tokens)
    tokens = tokens.to(patterns.device)
    same = tokens[:, :, None] == tokens[:, None, :]  # (batch, query, earlier)
    matching = torch.zeros_like(same)
    matching[:, :, 1:] = same[:, :, :-1]  # key k matches when tokens[k - 1] == tokens[q]
    matching &= torch.ones_like(same[0]).tril()  # causal: k <= q
    has_match = matching.any(dim=-1)  # (batch, query)
    if not has_match.any():
        raise ValueError("tokens contain no repeated token, so no query has a prefix match")
    mass = (patterns * matching[None, :, None]).sum(dim=-1)  # (layer, batch, head, query)
    return mass.transpose(-1, -2)[:, has_match].mean(dim=1)


def loss_by_position(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss at each prediction position ``0 … pos - 2``.

    Args:
        model: the transformer.
        tokens: ``(batch, pos)``.

    Returns:
        ``(pos - 1,)`` losses in nats, averaged over the batch.
    """
    tokens = tokens.to(model.W_E.device)
    with torch.no_grad():
        return next_token_losses(model(tokens), tokens).mean(dim=0)


def masked_loss(model: AttnOnlyTransformer, batch: Batch) -> float:
    """Mean next-token loss over the batch's marked positions (the task's planted targets)."""
    if not batch.mask.any():
        raise ValueError("batch.mask marks no position")
    with torch.no_grad():
        tokens = batch.tokens.to(model.W_E.device)
        losses = next_token_losses(model(tokens), tokens)
    return losses[batch.mask[:, :-1].to(losses.device)].mean().item()


def in_context_learning_score(
    model: AttnOnlyTransformer, tokens: torch.Tensor, *, early: int, late: int
) -> float:
    """Loss at prediction position ``late`` minus loss at ``early`` (negative: context helps).

    Args:
        model: the transformer.
        tokens: ``(batch, pos)``.
        early, late: prediction positions with ``0 <= early < late <= pos - 2``.
    """
    n_pos = tokens.shape[1]
    if not 0 <= early < late <= n_pos - 2:
        raise ValueError(
            f"need 0 <= early < late <= pos - 2 = {n_pos - 2}, got early={early}, late={late}"
        )
    losses = loss_by_position(model, tokens)
    return (losses[late] - losses[early]).item()


def next_token_kl(chain: MarkovChain, tokens: torch.Tensor, log_probs: torch.Tensor) -> float:
    """Mean ``KL(true next-token law ‖ predicted)`` over positions ``0 … pos - 2``, in nats.

    Args:
        chain: the Markov chain that generated ``tokens``.
        tokens: ``(batch, pos)``.
        log_probs: ``(batch, pos, d_vocab)`` predicted log probabilities of the next token
            (e.g. ``model(tokens).log_softmax(-1)``, or a bigram table indexed by ``tokens``).
    """
    true = chain.log_transition[tokens[:, :-1].cpu()]  # (batch, pos - 1, d_vocab)
    kl = (true.exp() * (true - log_probs[:, :-1].cpu())).sum(dim=-1)
    return kl.mean().item()


def empirical_bigram(tokens: torch.Tensor, d_vocab: int, smoothing: float = 0.5) -> torch.Tensor:
    """Log transition table ``(d_vocab, d_vocab)`` estimated by counting bigrams in ``tokens``.

    ``smoothing`` is added to every count (additive smoothing; > 0 keeps every entry finite).
    With ``N`` counted transitions its KL from the truth is about ``d_vocab (d_vocab - 1) /
    (2 N)``: the sampling noise a model trained on the same amount of data is up against.
    """
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing!r}")
    counts = torch.full((d_vocab, d_vocab), float(smoothing))
    pairs = tokens[:, :-1].reshape(-1) * d_vocab + tokens[:, 1:].reshape(-1)
    counts += torch.bincount(pairs, minlength=d_vocab * d_vocab).reshape(d_vocab, d_vocab)
    return (counts / counts.sum(dim=-1, keepdim=True)).log()
