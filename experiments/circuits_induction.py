"""One- vs two-layer transformers on repeated random tokens: induction heads form in two layers.

Training sequences contain a segment that is immediately repeated, at a random offset and
length, so only in-context lookup predicts the copy. Outside the copy, tokens follow a random
lag-2 Markov chain (each token's law depends on the token two back), which rewards a layer-0
previous-token head on its own, as natural text does. A two-layer attention-only transformer
then forms an induction head: it K-composes with the previous-token head (which writes "the
previous token was A" into each position) to attend from the current token A to the position
after A's earlier occurrence, and copies that token. The loss on the copy drops abruptly
during training (the induction-head phase change). A one-layer model cannot compose heads and
stays far above. Evaluation uses uniformly random tokens whose first half repeats, so only
induction helps there.

Writes ``results/circuits_induction/{metrics.json, tensors.safetensors}``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from superpose.circuits import (
    AttnOnlyTransformer,
    MarkovChain,
    RepeatedTokens,
    composition_baseline,
    composition_scores,
    copying_score,
    in_context_learning_score,
    loss_by_position,
    masked_loss,
    path_expansion,
    prefix_matching_scores,
    previous_token_scores,
    random_composition_scores,
    train,
)
from superpose.circuits.store import save_results
from superpose.circuits.tasks import Batch
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

D_VOCAB, N_CTX, D_MODEL, N_HEADS = 64, 32, 64, 4
MIN_LEN, MAX_LEN, BACKGROUND_TEMPERATURE = 4, 16, 1.0
STEPS, QUICK_STEPS, BATCH_SIZE, LR, WARMUP = 1500, 60, 64, 1e-2, 100
EVAL_SEQUENCES, QUICK_EVAL_SEQUENCES = 512, 64


def train_model(
    n_layers: int, eval_batch: Batch, steps: int, device: str, progress: bool
) -> tuple[AttnOnlyTransformer, dict[str, torch.Tensor]]:
    """Train a model with ``n_layers`` on the repeated-token task; return it and its history.

    Logged alongside the training loss: the loss on the copy in ``eval_batch``, the best
    previous-token score in layer 0 and the best prefix-matching score in the last layer.
    """
    background = MarkovChain(D_VOCAB, N_CTX, temperature=BACKGROUND_TEMPERATURE, lag=2, seed=0)
    task = RepeatedTokens(D_VOCAB, N_CTX, min_len=MIN_LEN, max_len=MAX_LEN, background=background)
    model = AttnOnlyTransformer(
        n_layers=n_layers,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_vocab=D_VOCAB,
        n_ctx=N_CTX,
        seed=0,
    )

    def evaluate(model: AttnOnlyTransformer) -> dict[str, float]:
        return {
            "repeated_loss": masked_loss(model, eval_batch),
            "previous_token": previous_token_scores(model, eval_batch.tokens)[0].max().item(),
            "prefix_matching": prefix_matching_scores(model, eval_batch.tokens)[-1].max().item(),
        }

    with cpu_threads(1):
        history = train(
            model,
            task,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            schedule="cosine",
            warmup_steps=min(WARMUP, steps),
            log_every=25,
            seed=1,
            device=device,
            progress=progress,
            evaluate=evaluate,
        )
    return model.cpu(), {
        "history_steps": history.history_steps,
        "history_loss": history.history_loss,
        **{f"history_{name}": values for name, values in history.history_metrics.items()},
    }


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train both models, measure their heads and store what the figure draws."""
    start = time.process_time()
    steps = QUICK_STEPS if quick else STEPS
    # Uniform tokens whose 16-token first half repeats: only induction helps, positions align.
    aligned = RepeatedTokens(D_VOCAB, N_CTX, min_len=N_CTX // 2, max_len=N_CTX // 2, start=0)
    eval_batch = aligned.sample(QUICK_EVAL_SEQUENCES if quick else EVAL_SEQUENCES, seed=2)
    tokens = eval_batch.tokens
    metrics: dict[str, object] = {
        "d_vocab": D_VOCAB,
        "n_ctx": N_CTX,
        "d_model": D_MODEL,
        "n_heads": N_HEADS,
        "segment_lengths": [MIN_LEN, MAX_LEN],
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "quick": quick,
        "log_vocab": math.log(D_VOCAB),
    }
    tensors: dict[str, torch.Tensor] = {"example_tokens": tokens[0]}
    for n_layers in (1, 2):
        model, history = train_model(n_layers, eval_batch, steps, device, not quick)
        name = f"{n_layers}_layer"
        with torch.no_grad():
            paths = path_expansion(model, tokens)
            logits, cache = model.run(tokens)
        prefix = prefix_matching_scores(model, tokens)
        metrics[name] = {
            "repeated_loss": masked_loss(model, eval_batch),
            "in_context_learning_score": in_context_learning_score(
                model, tokens, early=1, late=N_CTX - 2
            ),
            "previous_token_scores": previous_token_scores(model, tokens).tolist(),
            "prefix_matching_scores": prefix.tolist(),
            "copying_scores": copying_score(model).tolist(),
            "path_expansion_relative_error": (
                (sum(paths.values()) - logits).abs().max() / logits.abs().max()
            ).item(),
        }
        tensors.update({f"{name}_{key}": value for key, value in history.items()})
        tensors[f"{name}_loss_by_position"] = loss_by_position(model, tokens)
        tensors[f"{name}_patterns"] = torch.stack(cache.patterns)[:, 0]  # first sequence
        if n_layers == 2:
            scores = {kind: composition_scores(model, kind)[1, :, 0] for kind in "qkv"}
            previous = previous_token_scores(model, tokens)[0].argmax().item()
            induction = prefix[1].argmax().item()
            random_scores = random_composition_scores(D_MODEL, model.d_head, 1000, seed=3)
            metrics[name].update(
                {
                    "previous_token_head": f"L0H{previous}",
                    "induction_head": f"L1H{induction}",
                    "k_composition_induction_previous": scores["k"][induction, previous].item(),
                    "composition_baseline": composition_baseline(D_MODEL),
                    "random_composition_mean": random_scores.mean().item(),
                    "random_composition_99th_percentile": random_scores.quantile(0.99).item(),
                }
            )
            tensors.update({f"{kind}_composition": value for kind, value in scores.items()})
    metrics["cpu_seconds"] = time.process_time() - start
    save_results(Path(results) / "circuits_induction", metrics, tensors)
    two = metrics["2_layer"]
    print(
        f"repeated-token loss: 1 layer {metrics['1_layer']['repeated_loss']:.3f}, 2 layers "
        f"{two['repeated_loss']:.3f} (log vocab {math.log(D_VOCAB):.3f}); induction head "
        f"{two['induction_head']} prefix matching {max(max(two['prefix_matching_scores'])):.2f};"
        f" K-composition with {two['previous_token_head']} "
        f"{two['k_composition_induction_previous']:.3f} (random baseline "
        f"{two['composition_baseline']:.3f}); CPU {metrics['cpu_seconds']:.1f} s"
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
