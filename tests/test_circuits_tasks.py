"""Synthetic token tasks and the bigram estimators used to judge zero-layer models."""

from __future__ import annotations

import math

import pytest
import torch

from superpose.circuits import (
    MarkovChain,
    RepeatedTokens,
    SkipTrigrams,
    empirical_bigram,
    next_token_kl,
)


def lag_frequencies(tokens: torch.Tensor, lag: int, d_vocab: int) -> torch.Tensor:
    """Empirical ``P(tokens[t] = b | tokens[t - lag] = a)`` as a ``(d_vocab, d_vocab)`` table."""
    pairs = tokens[:, :-lag].flatten() * d_vocab + tokens[:, lag:].flatten()
    counts = torch.bincount(pairs, minlength=d_vocab * d_vocab).reshape(d_vocab, d_vocab)
    return counts / counts.sum(-1, keepdim=True)


def test_markov_chain_is_a_stationary_chain():
    chain = MarkovChain(10, 20, temperature=2.0, seed=0)
    torch.testing.assert_close(chain.transition.sum(-1), torch.ones(10))
    torch.testing.assert_close(chain.stationary @ chain.transition, chain.stationary)
    assert chain.stationary.sum().item() == pytest.approx(1.0, abs=1e-6)
    batch = chain.sample(3, seed=1)
    assert batch.tokens.shape == (3, 20)
    assert batch.mask[:, :-1].all() and not batch.mask[:, -1].any()
    assert torch.equal(batch.tokens, chain.sample(3, seed=1).tokens)
    assert not torch.equal(batch.tokens, chain.sample(3, seed=2).tokens)


@pytest.mark.parametrize("lag", [1, 2])
def test_markov_chain_samples_follow_the_transition_matrix(lag):
    d_vocab = 6
    chain = MarkovChain(d_vocab, 40, temperature=1.0, lag=lag, seed=0)
    tokens = chain.sample(4000, seed=1).tokens
    error = (lag_frequencies(tokens, lag, d_vocab) - chain.transition).abs().max()
    # About 26,000 transitions per row: standard error at most 0.003; measured 0.005 (lag 1)
    # and 0.007 (lag 2).
    assert error < 0.015
    if lag == 2:  # adjacent tokens are then nearly independent, not linked by the matrix
        assert (lag_frequencies(tokens, 1, d_vocab) - chain.transition).abs().max() > 0.2
        assert not chain.sample(2, seed=0).mask[:, 0].any()


def test_bigram_kl_of_the_truth_is_zero_and_counting_noise_is_as_predicted():
    d_vocab, n_seq, n_ctx = 12, 400, 26
    chain = MarkovChain(d_vocab, n_ctx, seed=0)
    held_out = chain.sample(1000, seed=1).tokens
    assert next_token_kl(chain, held_out, chain.log_transition[held_out]) == 0
    kls = [
        next_token_kl(
            chain, held_out, empirical_bigram(chain.sample(n_seq, seed=s).tokens, d_vocab)[held_out]
        )
        for s in range(2, 12)
    ]
    predicted = d_vocab * (d_vocab - 1) / (2 * n_seq * (n_ctx - 1))
    # Ten repeats: measured mean 0.87 × the asymptotic d_vocab (d_vocab - 1) / 2N (additive
    # smoothing lowers it slightly).
    assert sum(kls) / len(kls) == pytest.approx(predicted, rel=0.2)
    with pytest.raises(ValueError, match="smoothing"):
        empirical_bigram(held_out, d_vocab, smoothing=0)


def test_skip_trigrams_plant_their_rules():
    task = SkipTrigrams(20, 16, n_triggers=3, query_prob=0.3, seed=0)
    roles = torch.cat([task.triggers, task.outputs, torch.tensor([task.query]), task.fillers])
    assert sorted(roles.tolist()) == list(range(20))
    batch = task.sample(500, seed=1)
    tokens, mask = batch.tokens, batch.mask
    assert torch.equal(mask, tokens == task.query)
    assert not mask[:, -1].any()
    is_trigger = torch.isin(tokens, task.triggers)
    assert (is_trigger.sum(1) == 1).all()
    trigger_pos = is_trigger.long().argmax(1)
    assert (trigger_pos < 8).all()
    rule = (tokens.gather(1, trigger_pos[:, None]) == task.triggers).long().argmax(1)
    queries = mask.nonzero()
    assert len(queries) > 500
    assert (queries[:, 1] > trigger_pos[queries[:, 0]]).all()
    following = tokens[queries[:, 0], queries[:, 1] + 1]
    assert torch.equal(following, task.outputs[rule[queries[:, 0]]])
    others = ~mask & ~is_trigger & ~torch.isin(tokens, task.outputs)
    assert torch.isin(tokens[others], task.fillers).all()
    assert torch.equal(tokens, task.sample(500, seed=1).tokens)


def test_repeated_tokens_repeat_a_segment():
    task = RepeatedTokens(50, 24, min_len=3, max_len=8)
    batch = task.sample(300, seed=0)
    lengths = batch.mask.sum(1) + 1
    assert lengths.min() == 3 and lengths.max() == 8
    for tokens, mask, length in zip(batch.tokens, batch.mask, lengths, strict=True):
        marked = mask.nonzero().flatten()
        assert torch.equal(marked, torch.arange(marked[0], marked[0] + length - 1))
        copy = torch.arange(marked[0], marked[0] + length)
        assert torch.equal(tokens[copy], tokens[copy - length])
    aligned = RepeatedTokens(50, 24, min_len=12, max_len=12, start=0).sample(4, seed=0)
    assert torch.equal(aligned.tokens[:, 12:], aligned.tokens[:, :12])
    assert aligned.mask[:, 12:23].all() and not aligned.mask[:, :12].any()


def test_repeated_tokens_on_a_background_chain():
    chain = MarkovChain(10, 30, lag=2, seed=0)
    task = RepeatedTokens(10, 30, min_len=5, max_len=5, start=0, background=chain)
    tokens = task.sample(2000, seed=1).tokens
    assert torch.equal(tokens[:, 5:10], tokens[:, :5])
    uniform = RepeatedTokens(10, 30, min_len=5, max_len=5, start=0).sample(2000, seed=1).tokens
    # Outside the copy the chain's lag-2 law holds (measured error 0.029, about 3.5 standard
    # errors of the largest of 100 entries); uniform tokens miss it by far (measured 0.86).
    after = (lag_frequencies(tokens[:, 10:], 2, 10) - chain.transition).abs().max()
    assert after < 0.05
    assert (lag_frequencies(uniform[:, 10:], 2, 10) - chain.transition).abs().max() > 0.5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MarkovChain(5, 1), "n_ctx"),
        (lambda: MarkovChain(5, 8, temperature=0), "temperature"),
        (lambda: MarkovChain(5, 8, lag=8), "lag"),
        (lambda: SkipTrigrams(9, 10, n_triggers=4), "d_vocab"),
        (lambda: SkipTrigrams(20, 10, query_prob=1.0), "query_prob"),
        (lambda: SkipTrigrams(20, 3), "n_ctx"),
        (lambda: RepeatedTokens(10, 10, min_len=4, max_len=3), "min_len"),
        (lambda: RepeatedTokens(10, 10, min_len=2, max_len=6), "n_ctx // 2"),
        (lambda: RepeatedTokens(10, 10, min_len=2, max_len=4, start=3), "start"),
        (
            lambda: RepeatedTokens(10, 10, min_len=2, max_len=4, background=MarkovChain(11, 10)),
            "background",
        ),
        (lambda: MarkovChain(5, 8).sample(0, seed=0), "n_seq"),
    ],
)
def test_bad_task_arguments_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_uniform_repeats_have_log_vocab_entropy_outside_the_copy():
    # Sanity of the evaluation set: tokens outside the copy are uniform.
    tokens = RepeatedTokens(8, 20, min_len=5, max_len=5, start=0).sample(4000, seed=0).tokens
    counts = torch.bincount(tokens[:, 10:].flatten(), minlength=8).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities * probabilities.log()).sum().item()
    assert entropy == pytest.approx(math.log(8), abs=1e-3)
