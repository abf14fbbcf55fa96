"""One-layer transformer on planted skip-trigrams: its head's QK and OV circuits recover them.

The task plants rules ``[trigger_i] … [query] → [output_i]`` among random filler tokens. A
one-layer attention-only transformer with a single head solves them by attending from the
query to the trigger (the full QK circuit ``W_Eᵀ W_QK W_E`` scores triggers above fillers on
the query's row) and mapping the trigger to its output (the full OV circuit ``W_U W_OV W_E``
sends trigger ``i`` to output ``i``). The direct path alone could only reach ``log
n_triggers`` on the planted targets.

Writes ``results/circuits_skip_trigram/{metrics.json, tensors.safetensors}``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from superpose.circuits import (
    AttnOnlyTransformer,
    SkipTrigrams,
    full_ov_circuit,
    full_qk_circuit,
    masked_loss,
    path_expansion,
    train,
)
from superpose.circuits.store import save_results
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

D_VOCAB, N_CTX, D_MODEL, N_TRIGGERS = 32, 24, 32, 4
STEPS, QUICK_STEPS, BATCH_SIZE, LR = 1000, 60, 64, 1e-2
EVAL_SEQUENCES = 1024


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the one-layer model and store its circuits restricted to the planted tokens."""
    start = time.process_time()
    steps = QUICK_STEPS if quick else STEPS
    task = SkipTrigrams(D_VOCAB, N_CTX, n_triggers=N_TRIGGERS, query_prob=0.2, seed=0)
    model = AttnOnlyTransformer(
        n_layers=1, d_model=D_MODEL, n_heads=1, d_vocab=D_VOCAB, n_ctx=N_CTX, seed=0
    )
    held_out = task.sample(EVAL_SEQUENCES, seed=2)
    with cpu_threads(1):
        history = train(
            model,
            task,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            schedule="cosine",
            log_every=20,
            seed=1,
            device=device,
            evaluate=lambda model: {"planted_loss": masked_loss(model, held_out)},
            progress=not quick,
        )
    model.cpu()
    with torch.no_grad():
        qk = full_qk_circuit(model).product()[0, 0]  # (query token, key token)
        ov = full_ov_circuit(model).product()[0, 0]  # (output logit, source token)
        paths = path_expansion(model, held_out.tokens)
        logits = model(held_out.tokens)
    query_row = qk[task.query]
    ov_block = ov[task.outputs][:, task.triggers]  # (output j, trigger i)
    path_error = (sum(paths.values()) - logits).abs().max() / logits.abs().max()
    metrics = {
        "d_vocab": D_VOCAB,
        "n_ctx": N_CTX,
        "d_model": D_MODEL,
        "n_triggers": N_TRIGGERS,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "quick": quick,
        "planted_loss": masked_loss(model, held_out),
        "direct_path_bound": math.log(N_TRIGGERS),
        # Smallest gap between a trigger's and the best filler's score on the query's row.
        "qk_trigger_margin": (
            query_row[task.triggers].min() - query_row[task.fillers].max()
        ).item(),
        # Share of triggers whose strongest output (among the outputs) is their own.
        "ov_accuracy": (ov_block.argmax(dim=0) == torch.arange(N_TRIGGERS)).float().mean().item(),
        "path_expansion_relative_error": path_error.item(),
        "cpu_seconds": time.process_time() - start,
    }
    save_results(
        Path(results) / "circuits_skip_trigram",
        metrics,
        {
            "query_row": query_row,
            "ov_block": ov_block,
            "triggers": task.triggers,
            "outputs": task.outputs,
            "query": torch.tensor(task.query),
            "history_steps": history.history_steps,
            "history_planted_loss": history.history_metrics["planted_loss"],
        },
    )
    print(
        f"one-layer skip-trigrams: loss on planted targets {metrics['planted_loss']:.4f} "
        f"(direct path alone: {math.log(N_TRIGGERS):.3f}); QK margin "
        f"{metrics['qk_trigger_margin']:.2f}; OV accuracy {metrics['ov_accuracy']:.2f}; "
        f"CPU {metrics['cpu_seconds']:.1f} s"
    )


if __name__ == "__main__":
    experiment_script(main, __doc__)
