"""Path expansion: the logits as a sum over paths through the attention heads.

With the attention patterns (and layer-norm scales, if any) frozen at their values on the
given tokens, an attention-only transformer is linear in its embedding. Expanding every
residual connection gives one term per path: the direct path (embedding → unembedding) and,
for every increasing sequence of heads, the embedding moved through those heads in turn,
e.g. ``"L0H2>L1H0"`` (the embedding through head 2 of layer 0, then head 0 of layer 1). There
are ``(n_heads + 1) ** n_layers`` paths and they sum to the model's logits exactly.
"""

from __future__ import annotations

import torch

from superpose.circuits.model import AttnOnlyTransformer

DIRECT = "direct"


def _extend(path: str, layer: int, head: int) -> str:
    step = f"L{layer}H{head}"
    return step if path == DIRECT else f"{path}>{step}"


def path_length(name: str) -> int:
    """Number of heads on the path ``name`` (0 for the direct path)."""
    return 0 if name == DIRECT else name.count(">") + 1


def path_expansion(model: AttnOnlyTransformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split the logits of ``tokens`` into one term per path.

    Args:
        model: the transformer (with or without layer norm).
        tokens: ``(batch, pos)`` integer tokens.

    Returns:
        Mapping from path name (``"direct"``, ``"L0H1"``, ``"L0H1>L1H3"``, …) to that path's
        logits ``(batch, pos, d_vocab)``, in order of path length; the terms sum to
        ``model(tokens)`` up to floating-point rounding.
    """
    _, cache = model.run(tokens)
    residual_paths = {DIRECT: cache.residual[0]}  # name -> (batch, pos, d_model)
    for layer in range(model.n_layers):
        for name, residual in list(residual_paths.items()):
            normalized = model.normalize(residual, cache.scales[layer])
            written = model.head_outputs(layer, cache.patterns[layer], normalized)
            for head in range(model.n_heads):
                residual_paths[_extend(name, layer, head)] = written[:, head]
    final_scale = cache.scales[-1]
    return {
        name: model.unembed(model.normalize(residual, final_scale))
        for name, residual in sorted(residual_paths.items(), key=lambda item: path_length(item[0]))
    }
