"""Zero-layer transformer on a random Markov chain: it learns the bigram table, W_U W_E ≈ log T.

A zero-layer attention-only transformer predicts the next token from the current token (and
its position) alone, through the direct path ``W_U (W_E + W_pos)``. Trained on a random Markov
chain, its predictions should match the true transition probabilities up to the sampling noise
of the data it saw; that noise is measured by counting bigrams in as many fresh transitions.

Writes ``results/circuits_bigram/{metrics.json, tensors.safetensors}``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from superpose.circuits import (
    AttnOnlyTransformer,
    MarkovChain,
    empirical_bigram,
    next_token_kl,
    train,
)
from superpose.circuits.store import save_results
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

D_VOCAB, N_CTX, D_MODEL = 24, 32, 32
STEPS, QUICK_STEPS, BATCH_SIZE, LR = 1500, 100, 128, 3e-2
EVAL_SEQUENCES = 4096


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the zero-layer model and store its bigram table, the truth and the KLs."""
    start = time.process_time()
    steps = QUICK_STEPS if quick else STEPS
    chain = MarkovChain(D_VOCAB, N_CTX, temperature=2.0, seed=0)
    model = AttnOnlyTransformer(
        n_layers=0, d_model=D_MODEL, n_heads=1, d_vocab=D_VOCAB, n_ctx=N_CTX, seed=0
    )
    with cpu_threads(1):
        history = train(
            model,
            chain,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            schedule="cosine",
            log_every=10,
            seed=1,
            device=device,
            progress=not quick,
        )
    model.cpu()
    held_out = chain.sample(EVAL_SEQUENCES, seed=2).tokens
    with torch.no_grad():
        model_kl = next_token_kl(chain, held_out, model(held_out).log_softmax(-1))
        learned = (model.W_U @ model.W_E).T.log_softmax(-1)  # (current, next)
    # Counting bigrams in as many fresh transitions as the model was trained on.
    counted = chain.sample(steps * BATCH_SIZE, seed=3).tokens
    counting_kl = next_token_kl(chain, held_out, empirical_bigram(counted, D_VOCAB)[held_out])
    unigram = chain.stationary.log().expand(*held_out.shape, D_VOCAB)
    metrics = {
        "d_vocab": D_VOCAB,
        "n_ctx": N_CTX,
        "d_model": D_MODEL,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "quick": quick,
        "kl_model": model_kl,
        "kl_counting_same_data": counting_kl,
        "kl_unigram": next_token_kl(chain, held_out, unigram),
        # Counting this many transitions gives the model's KL (KL ≈ V (V - 1) / 2N).
        "equivalent_counted_transitions": D_VOCAB * (D_VOCAB - 1) / (2 * model_kl),
        "trained_transitions": steps * BATCH_SIZE * (N_CTX - 1),
        "entropy_rate": -(chain.stationary[:, None] * chain.transition * chain.log_transition)
        .sum()
        .item(),
        "final_train_loss": history.history_loss[-1].item(),
        "cpu_seconds": time.process_time() - start,
    }
    save_results(
        Path(results) / "circuits_bigram",
        metrics,
        {
            "learned_log_probs": learned,
            "true_log_transition": chain.log_transition,
            "history_steps": history.history_steps,
            "history_loss": history.history_loss,
        },
    )
    print(
        f"zero-layer bigram: KL(true || model) = {model_kl:.2e} nats (counting the same data: "
        f"{counting_kl:.2e}, unigram: {metrics['kl_unigram']:.3f}); "
        f"CPU {metrics['cpu_seconds']:.1f} s"
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
