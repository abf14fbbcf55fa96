"""The ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Circuits Updates —
April 2024", the training update to Bricken et al. 2023 "Towards Monosemanticity").

Per instance: ``z = ReLU(π)`` and

    ``sparsity = λ · E_batch Σ_j z_j ‖W_dec,j‖₂``

so shrinking decoder rows cannot buy a smaller penalty and the decoder is left
unconstrained. ``λ`` (``l1_coefficient``) may differ per instance.

``unit_decoder=True`` gives the earlier form (Sharkey, Braun & Millidge 2022; Bricken et al.
2023): decoder rows kept at unit norm (the trainer renormalises them after every step) and a
plain L1 on the latents, ``sparsity = λ · E_batch Σ_j z_j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from superpose.sae.base import Seed, SparseAutoencoder, per_instance, register


@register
class ReLUSAE(SparseAutoencoder):
    """``n_instances`` ReLU SAEs with the decoder-norm-weighted L1 penalty.

    Args:
        n_instances, d_in, d_sae, seed: see :class:`~superpose.sae.base.SparseAutoencoder`.
        l1_coefficient: ``λ ≥ 0``, a scalar or one per instance ``(instance,)``. The default
            suits the unit-scale synthetic sources (features of magnitude ≤ 1 along unit
            directions).
        unit_decoder: False (default): a free decoder and the decoder-norm-weighted L1.
            True: unit-norm decoder rows and a plain L1 on the latents.

    Buffers:
        l1_coefficient: ``(instance,)``.
    """

    kind = "relu"
    sparsity_parameter = "l1_coefficient"

    def __init__(
        self,
        n_instances: int,
        d_in: int,
        d_sae: int,
        *,
        l1_coefficient: float | Sequence[float] = 0.01,
        unit_decoder: bool = False,
        seed: Seed = None,
    ) -> None:
        super().__init__(n_instances, d_in, d_sae, seed=seed)
        if not isinstance(unit_decoder, bool):
            raise TypeError(f"unit_decoder must be a bool, got {unit_decoder!r}")
        self.unit_decoder = unit_decoder
        self.register_buffer(
            "l1_coefficient",
            per_instance("l1_coefficient", l1_coefficient, self.n_instances, low=0.0),
        )

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``z = ReLU(π)``, shape ``(instance, batch, d_sae)``."""
        return torch.relu(pre)

    def sparsity(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``λ E_batch Σ_j z_j ‖W_dec,j‖`` per instance ``(instance,)``; with a unit decoder
        ``λ E_batch Σ_j z_j``."""
        if self.unit_decoder:
            return self.l1_coefficient * z.sum(-1).mean(-1)
        norms = self.W_dec.norm(dim=-1)  # (instance, d_sae)
        return self.l1_coefficient * (z * norms[:, None, :]).sum(-1).mean(-1)

    def hyperparameters(self) -> dict[str, Any]:
        return {"l1_coefficient": self.l1_coefficient.tolist(), "unit_decoder": self.unit_decoder}
