"""Seeded synthetic token tasks whose structure is known, so circuits can be checked against it.

Every task has ``d_vocab``, ``n_ctx`` and ``sample(n_seq, seed)`` returning a :class:`Batch`:
tokens ``(batch, pos)`` and a mask ``(batch, pos)`` marking the positions whose *next* token
the task's planted structure determines (the last position is never marked).

* :class:`MarkovChain`: a random bigram model (what a zero-layer transformer can learn).
* :class:`ZipfMarkovChain`: a random bigram model whose unigram frequencies are exactly Zipfian.
* :class:`SkipTrigrams`: planted ``[A] … [B] → [C]`` rules (what one attention head can learn).
* :class:`RepeatedTokens`: random tokens whose segment repeats (what induction heads solve).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superpose._checks import make_generator, positive_int


@dataclass
class Batch:
    """Tokens ``(batch, pos)`` (long) and the mask ``(batch, pos)`` (bool) of planted targets."""

    tokens: torch.Tensor
    mask: torch.Tensor


_SINKHORN_MAX_STEPS = 100_000
_SINKHORN_TOLERANCE = 1e-12


def _check_sizes(d_vocab: int, n_ctx: int) -> tuple[int, int]:
    d_vocab = positive_int("d_vocab", d_vocab)
    n_ctx = positive_int("n_ctx", n_ctx)
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 (a context and a next token), got {n_ctx}")
    return d_vocab, n_ctx


def _last_position_off(mask: torch.Tensor) -> torch.Tensor:
    mask[:, -1] = False
    return mask


class MarkovChain:
    """A random Markov chain over ``d_vocab`` tokens, where each token depends on one before it.

    Token ``t`` is drawn from row ``tokens[t - lag]`` of the transition matrix: ``lag=1`` is an
    ordinary bigram chain (what the direct path learns); ``lag=2`` makes the token two back the
    informative one, which a model can only use by moving it forward with a previous-token
    head. Row ``a`` of the transition matrix is ``softmax(temperature · g_a)`` with ``g_a`` a
    standard normal vector, so ``log_transition`` is known exactly. The first ``lag`` tokens
    are drawn from the stationary distribution, so every position has the same marginal.

    Args:
        d_vocab: number of tokens.
        n_ctx: sequence length.
        temperature: spread of the transition logits (> 0; larger is more peaked).
        lag: how many positions back the token that sets the next one's law is, in
            ``[1, n_ctx)``.
        seed: int or ``torch.Generator`` for the transition matrix; None: torch's global
            generator.

    Attributes:
        log_transition: ``(d_vocab, d_vocab)``, ``[a, b] = log P(next = b | current = a)``.
        transition: its exponential, rows sum to 1.
        stationary: ``(d_vocab,)`` stationary distribution.
    """

    def __init__(
        self,
        d_vocab: int,
        n_ctx: int,
        *,
        temperature: float = 2.0,
        lag: int = 1,
        seed: int | torch.Generator | None = None,
    ) -> None:
        self.d_vocab, self.n_ctx = _check_sizes(d_vocab, n_ctx)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.lag = positive_int("lag", lag)
        if self.lag >= self.n_ctx:
            raise ValueError(f"lag must lie in [1, n_ctx={self.n_ctx}), got {lag}")
        self.temperature = float(temperature)
        log_transition, stationary = self._tables(make_generator(seed))
        self.log_transition = log_transition.float()
        self.transition = self.log_transition.exp()
        self.stationary = stationary.float()

    def _tables(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 ``log_transition (d_vocab, d_vocab)`` and ``stationary (d_vocab,)``."""
        logits = self.temperature * torch.randn(self.d_vocab, self.d_vocab, generator=generator)
        log_transition = logits.double().log_softmax(dim=-1)
        eigenvalues, eigenvectors = torch.linalg.eig(log_transition.exp().T)
        leading = eigenvectors[:, eigenvalues.real.argmax()].real
        return log_transition, leading / leading.sum()

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch:
        """``n_seq`` sequences of length ``n_ctx``.

        Marked are the positions whose next token's law is set by the chain, ``lag - 1 …
        n_ctx - 2`` (all but the last for ``lag=1``).
        """
        n_seq = positive_int("n_seq", n_seq)
        generator = make_generator(seed)
        tokens = torch.empty(n_seq, self.n_ctx, dtype=torch.long)
        tokens[:, : self.lag] = torch.multinomial(
            self.stationary, n_seq * self.lag, True, generator=generator
        ).reshape(n_seq, self.lag)
        for pos in range(self.lag, self.n_ctx):
            rows = self.transition[tokens[:, pos - self.lag]]
            tokens[:, pos] = torch.multinomial(rows, 1, generator=generator)[:, 0]
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, : self.lag - 1] = False
        return Batch(tokens, _last_position_off(mask))


class ZipfMarkovChain(MarkovChain):
    """A Markov chain whose stationary (unigram) distribution is exactly Zipfian.

    Token ``t`` is the ``t``-th most frequent: ``stationary[t] = (t + 1)^(-a) / Σ_s (s + 1)^(-a)``
    with ``a = zipf_exponent`` (``a = 0`` is uniform). The bigram structure is a random
    symmetric affinity ``K = exp(temperature · g)``, ``g`` a symmetric matrix of standard
    normals, scaled to the joint law of consecutive tokens ``F[a, b] = d_a K[a, b] d_b`` whose
    rows sum to the Zipf frequencies (``d`` by symmetric Sinkhorn iteration, in float64 to a
    relative error below ``1e-12``). Then ``transition[a, b] = F[a, b] / stationary[a]`` is
    reversible, so ``stationary @ transition = stationary`` and every position's marginal is
    the Zipf law. Each row is the affinity reweighted towards frequent tokens: frequent tokens
    follow everything often, and ``temperature`` sets how peaked (informative) the rows are.

    Args:
        d_vocab: number of tokens.
        n_ctx: sequence length.
        zipf_exponent: ``a >= 0``.
        temperature: spread of the affinity logits (> 0; larger is more peaked).
        lag: as in :class:`MarkovChain`.
        seed: int or ``torch.Generator`` for the affinity.

    Attributes:
        As :class:`MarkovChain`; ``stationary`` is the Zipf law above.
    """

    def __init__(
        self,
        d_vocab: int,
        n_ctx: int,
        *,
        zipf_exponent: float = 1.0,
        temperature: float = 2.0,
        lag: int = 1,
        seed: int | torch.Generator | None = 0,
    ) -> None:
        if isinstance(zipf_exponent, bool) or not isinstance(zipf_exponent, int | float):
            raise TypeError(f"zipf_exponent must be a number >= 0, got {zipf_exponent!r}")
        if not 0 <= zipf_exponent < float("inf"):
            raise ValueError(f"zipf_exponent must be a finite number >= 0, got {zipf_exponent}")
        self.zipf_exponent = float(zipf_exponent)
        super().__init__(d_vocab, n_ctx, temperature=temperature, lag=lag, seed=seed)

    def _tables(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ranks = torch.arange(1, self.d_vocab + 1, dtype=torch.float64)
        log_zipf = (-self.zipf_exponent * ranks.log()).log_softmax(dim=0)
        noise = torch.randn(self.d_vocab, self.d_vocab, generator=generator).double()
        log_affinity = self.temperature * (noise + noise.T) / 2**0.5
        log_scale = log_zipf / 2
        for _ in range(_SINKHORN_MAX_STEPS):
            log_rows = torch.logsumexp(log_affinity + log_scale, dim=1)  # log (K d)_a
            if (log_scale + log_rows - log_zipf).abs().max() < _SINKHORN_TOLERANCE:
                break
            log_scale = (log_scale + log_zipf - log_rows) / 2
        else:
            raise ValueError(
                f"temperature={self.temperature} is too large for the Sinkhorn scaling to "
                f"converge in {_SINKHORN_MAX_STEPS} steps; use a smaller one"
            )
        log_joint = log_scale[:, None] + log_affinity + log_scale
        return log_joint - log_zipf[:, None], log_zipf.exp()


class SkipTrigrams:
    """Planted skip-trigrams ``[trigger_i] … [query] → [output_i]`` among random filler tokens.

    Each sequence is uniform filler tokens with one trigger, drawn uniformly from
    ``n_triggers`` and placed in the first half of the context. After the trigger, each position
    holds the query token with probability ``query_prob``, and the token after a query is
    always the output paired with the sequence's trigger. Seen alone, the query predicts a
    uniform choice among the outputs (loss ``log n_triggers``); a head that attends from the
    query to the trigger and maps the trigger to its output predicts it exactly.

    Args:
        d_vocab: number of tokens; at least ``2 · n_triggers + 2`` (triggers, outputs, the
            query and one filler).
        n_ctx: sequence length (at least 4).
        n_triggers: number of planted rules.
        query_prob: probability of a query at each position after the trigger, in (0, 1).
        seed: int or ``torch.Generator`` choosing which tokens play which role; None:
            torch's global generator.

    Attributes:
        triggers, outputs: ``(n_triggers,)`` long; rule ``i`` is ``triggers[i] … query →
            outputs[i]``.
        query: the query token.
        fillers: ``(d_vocab - 2 · n_triggers - 1,)`` the remaining tokens.
    """

    def __init__(
        self,
        d_vocab: int,
        n_ctx: int,
        *,
        n_triggers: int = 4,
        query_prob: float = 0.2,
        seed: int | torch.Generator | None = None,
    ) -> None:
        self.d_vocab, self.n_ctx = _check_sizes(d_vocab, n_ctx)
        self.n_triggers = positive_int("n_triggers", n_triggers)
        if self.d_vocab < 2 * self.n_triggers + 2:
            raise ValueError(
                f"d_vocab must be at least 2 * n_triggers + 2 = "
                f"{2 * self.n_triggers + 2}, got {self.d_vocab}"
            )
        if self.n_ctx < 4:
            raise ValueError(f"n_ctx must be at least 4, got {self.n_ctx}")
        if not 0 < query_prob < 1:
            raise ValueError(f"query_prob must lie in (0, 1), got {query_prob!r}")
        self.query_prob = float(query_prob)
        roles = torch.randperm(self.d_vocab, generator=make_generator(seed))
        self.triggers = roles[: self.n_triggers]
        self.outputs = roles[self.n_triggers : 2 * self.n_triggers]
        self.query = int(roles[2 * self.n_triggers])
        self.fillers = roles[2 * self.n_triggers + 1 :]

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch:
        """``n_seq`` sequences; marked positions are the queries (whose next token is planted)."""
        n_seq = positive_int("n_seq", n_seq)
        generator = make_generator(seed)
        filler = torch.randint(len(self.fillers), (n_seq, self.n_ctx), generator=generator)
        tokens = self.fillers[filler]
        rule = torch.randint(self.n_triggers, (n_seq,), generator=generator)
        trigger_pos = torch.randint(self.n_ctx // 2, (n_seq,), generator=generator)
        positions = torch.arange(self.n_ctx)
        is_query = torch.rand(n_seq, self.n_ctx, generator=generator) < self.query_prob
        is_query &= (positions > trigger_pos[:, None]) & (positions < self.n_ctx - 1)
        is_output = torch.zeros_like(is_query)
        for pos in range(self.n_ctx - 1):
            is_query[:, pos] &= ~is_output[:, pos]
            is_output[:, pos + 1] = is_query[:, pos]
        tokens[torch.arange(n_seq), trigger_pos] = self.triggers[rule]
        tokens[is_query] = self.query
        tokens = torch.where(is_output, self.outputs[rule][:, None], tokens)
        return Batch(tokens, is_query)


class RepeatedTokens:
    """Random tokens in which one segment is immediately repeated.

    Each sequence draws a segment length ``L`` uniformly from ``[min_len, max_len]`` and a start
    ``s`` uniformly from ``[0, n_ctx - 2L]`` (or ``s = start`` when given), then copies
    ``tokens[s : s + L]`` to ``tokens[s + L : s + 2L]``. Because the offset varies between
    sequences, a model can predict the copy only by looking up where the current token
    occurred before (an induction head), not by a fixed positional offset. Marked positions
    are ``s + L … s + 2L - 2``: inside the copy, whose next token is the continuation.

    Args:
        d_vocab: number of tokens.
        n_ctx: sequence length.
        min_len, max_len: range of segment lengths, ``1 <= min_len <= max_len <= n_ctx // 2``.
        start: fixed start of the segment (so positions align across sequences), or ``None``.
        background: draw the tokens from this chain (same ``d_vocab`` and ``n_ctx``) instead of
            uniformly. A ``lag=2`` chain rewards a previous-token head on its own, the usual
            first step towards induction heads.
    """

    def __init__(
        self,
        d_vocab: int,
        n_ctx: int,
        *,
        min_len: int,
        max_len: int,
        start: int | None = None,
        background: MarkovChain | None = None,
    ) -> None:
        self.d_vocab, self.n_ctx = _check_sizes(d_vocab, n_ctx)
        if background is not None and (background.d_vocab, background.n_ctx) != (
            self.d_vocab,
            self.n_ctx,
        ):
            raise ValueError(
                f"background must have d_vocab={self.d_vocab} and n_ctx="
                f"{self.n_ctx}, got {background.d_vocab} and {background.n_ctx}"
            )
        self.background = background
        self.min_len = positive_int("min_len", min_len)
        self.max_len = positive_int("max_len", max_len)
        if not self.min_len <= self.max_len <= self.n_ctx // 2:
            raise ValueError(
                f"need 1 <= min_len <= max_len <= n_ctx // 2 = {self.n_ctx // 2}, "
                f"got min_len={min_len}, max_len={max_len}"
            )
        if start is not None and not 0 <= start <= self.n_ctx - 2 * self.max_len:
            raise ValueError(
                f"start must lie in [0, n_ctx - 2 * max_len = "
                f"{self.n_ctx - 2 * self.max_len}], got {start}"
            )
        self.start = start

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch:
        """``n_seq`` sequences; marked positions lie in the copy, before its last token."""
        n_seq = positive_int("n_seq", n_seq)
        generator = make_generator(seed)
        if self.background is None:
            tokens = torch.randint(self.d_vocab, (n_seq, self.n_ctx), generator=generator)
        else:
            tokens = self.background.sample(n_seq, generator).tokens
        length = torch.randint(self.min_len, self.max_len + 1, (n_seq,), generator=generator)
        if self.start is None:
            start = (torch.rand(n_seq, generator=generator) * (self.n_ctx - 2 * length + 1)).long()
        else:
            start = torch.full((n_seq,), self.start)
        positions = torch.arange(self.n_ctx)
        offset = positions - start[:, None]
        in_copy = (offset >= length[:, None]) & (offset < 2 * length[:, None])
        source = torch.where(in_copy, positions - length[:, None], positions)
        tokens = tokens.gather(1, source)
        mask = in_copy & (offset < 2 * length[:, None] - 1)
        return Batch(tokens, mask)
