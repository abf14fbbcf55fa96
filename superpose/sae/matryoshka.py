"""The Matryoshka SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka
Sparse Autoencoders"; Nabeshima 2024) on BatchTopK latents.

The dictionary's first ``m_1 < m_2 < … < m_G = d_sae`` latents (the ``prefixes``) must each
reconstruct the input on their own, so early latents learn general features:

    ``mse = Σ_g E_batch ‖x − (z_{:m_g} W_dec,{:m_g} + b_dec)‖²``

(summed over prefixes as in the paper; the full dictionary's term is one of them). Latents
are BatchTopK's (see :mod:`superpose.sae.topk`), with AuxK.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from superpose.sae.base import register
from superpose.sae.topk import BatchTopKSAE


def default_prefixes(d_sae: int) -> list[int]:
    """``d_sae/8, d_sae/4, d_sae/2, d_sae`` (rounded down; empty and repeated sizes dropped)."""
    return sorted({d_sae // 8, d_sae // 4, d_sae // 2, d_sae} - {0})


@register
class MatryoshkaSAE(BatchTopKSAE):
    """``n_instances`` Matryoshka BatchTopK SAEs (arguments as
    :class:`~superpose.sae.topk.TopKSAE`, plus ``prefixes``: increasing sizes ending at
    ``d_sae``, default :func:`default_prefixes`)."""

    kind = "matryoshka"

    def __init__(
        self,
        n_instances: int,
        d_in: int,
        d_sae: int,
        *,
        prefixes: Sequence[int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(n_instances, d_in, d_sae, **options)
        prefixes = default_prefixes(self.d_sae) if prefixes is None else list(prefixes)
        increasing = all(a < b for a, b in itertools.pairwise(prefixes))
        if (
            not prefixes
            or any(isinstance(m, bool) or not isinstance(m, int) for m in prefixes)
            or prefixes[0] < 1
            or prefixes[-1] != self.d_sae
            or not increasing
        ):
            raise ValueError(
                f"prefixes must be increasing ints in [1, d_sae={self.d_sae}] ending at "
                f"d_sae, got {prefixes!r}"
            )
        self.prefixes = prefixes

    def reconstruction_error(
        self, x: torch.Tensor, z: torch.Tensor, reconstruction: torch.Tensor
    ) -> torch.Tensor:
        """``Σ_g E_batch ‖x − x̂_{m_g}‖²`` per instance ``(instance,)``."""
        partial = self.b_dec[:, None, :].expand_as(x)
        total = x.new_zeros(self.n_instances)
        start = 0
        for end in self.prefixes:
            partial = torch.baddbmm(partial, z[..., start:end], self.W_dec[:, start:end])
            total = total + (partial - x).square().sum(-1).mean(-1)
            start = end
        return total

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "prefixes": self.prefixes}
