"""Hand-written gradients for the TopK kinds: the SAE trainer's fast path.

A TopK or BatchTopK SAE keeps ``k`` of its ``d_sae`` latents per sample, so past the dense
encoder product the step only needs the active latents. Per instance, with ``x: (batch,
d_in)``, ``x_c = x − b_dec``, ``π = x_c W_enc + b_enc`` and the kept entries ``e = (row s,
latent j, value z_sj = ReLU(π_sj))``:

* decode ``x̂_s = b_dec + Σ_{e in s} z_e W_dec,j`` gathers ``k`` decoder rows per sample
  (``embedding_bag`` with per-entry weights), not a ``(batch, d_sae) × (d_sae, d_in)``
  product;
* with ``g = ∂L/∂x̂ = (2/B)(x̂ − x)``: ``∂L/∂W_dec,j = Σ_{e of j} z_e g_s`` touches only the
  rows that fired, ``∂L/∂π_e = (g_s · W_dec,j) [z_e > 0]`` is a dot product per entry,
  ``∂L/∂W_enc[:, j] = Σ_{e of j} ∂L/∂π_e x_c,s`` only the columns of active latents
  (both sums are ``embedding_bag`` over the entries sorted by latent),
  ``∂L/∂b_enc,j = Σ_{e of j} ∂L/∂π_e`` and ``∂L/∂b_dec = Σ_s g_s − (Σ_s ∂L/∂π_s) W_encᵀ``;
* no gradient into ``x``.

AuxK (see :mod:`superpose.sae.topk`) works on the dead latents only: their pre-activations
are gathered into ``(batch, n_dead)``, the top ``aux_k`` kept, and its gradient flows into
those latents' decoder rows, encoder columns and biases by products of that width.

Everything is float32. (0.4 offered a bfloat16 encoder product to select the active latents;
it measured slower than float32 on every CPU tried, so 0.5 dropped it.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from superpose.sae.base import SparseAutoencoder
from superpose.sae.topk import BatchTopKSAE, TopKSAE, batch_count, keep_top


def supports(sae: SparseAutoencoder) -> bool:
    """Whether the hand-written gradients apply: a plain :class:`TopKSAE` or
    :class:`BatchTopKSAE` (a subclass that changes the loss, such as the Matryoshka SAE, does
    not)."""
    return type(sae) in (TopKSAE, BatchTopKSAE)


CHUNK_ELEMENTS = 2**18
"""Gathered elements (rows × d_in) per chunk of :func:`_dots`: about 1 MiB per operand, so
the gathered rows stay in cache (materialising all of them at once was ten times slower for
a grid of 8 SAEs)."""

SUBSAMPLE = 64
"""Stride of the subsample from which :func:`_batch_top` guesses its candidates' threshold."""


def _dots(
    a: torch.Tensor, a_index: torch.Tensor, b: torch.Tensor, b_index: torch.Tensor
) -> torch.Tensor:
    """Row-wise dot products ``a[a_index[e]] · b[b_index[e]]`` ``(entries,)`` for ``a: (rows,
    d)``, ``b: (rows', d)`` and index vectors ``(entries,)``, gathered chunk by chunk."""
    out = a.new_empty(a_index.shape[0])
    size = max(1, CHUNK_ELEMENTS // a.shape[1])
    for start in range(0, out.shape[0], size):
        part = slice(start, start + size)
        left, right = a.index_select(0, a_index[part]), b.index_select(0, b_index[part])
        torch.linalg.vecdot(left, right, out=out[part])
    return out


def _batch_top(
    scores: torch.Tensor, count: torch.Tensor, workspace: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(count.max(), dim=-1)`` of ``scores: (instance, n)`` (``count:
    (instance,)``), found among the candidates above a threshold guessed from a strided
    subsample (about ``1.5·count.max()`` expected above it), which avoids a selection over
    every score; exact, with a full ``topk`` when a guess leaves too few candidates. The
    ``(instance, n)`` mask of candidates reuses ``workspace``'s buffer."""
    n_instances, n = scores.shape
    top = int(count.max())
    sample = scores[:, ::SUBSAMPLE]
    rank = 3 * top * sample.shape[1] // (2 * n) + 1
    if rank >= sample.shape[1] // 2:
        return scores.topk(top, dim=-1)
    guess = sample.topk(rank, dim=-1).values[:, -1:]
    above = _buffer(workspace, "above", scores, scores.shape, torch.bool)
    instance, index = torch.gt(scores, guess, out=above).nonzero(as_tuple=True)
    per_instance = torch.bincount(instance, minlength=n_instances)
    if bool((per_instance < top).any()):
        return scores.topk(top, dim=-1)
    start = per_instance.cumsum(0) - per_instance
    slot = torch.arange(instance.numel(), device=scores.device) - start[instance]
    candidates = scores.new_full((n_instances, int(per_instance.max())), -torch.inf)
    candidates[instance, slot] = scores[instance, index]
    where = torch.zeros_like(candidates, dtype=torch.long)
    where[instance, slot] = index
    values, chosen = candidates.topk(top, dim=-1)
    return values, where.gather(1, chosen)


def _active(
    sae: TopKSAE, pre: torch.Tensor, workspace: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept entries of ``pre: (instance, batch, d_sae)``: flat indices ``row · d_sae +
    latent`` ``(instance, entries)`` in increasing order and their pre-activations. Entries
    past an instance's own count (``k`` differs per instance) are kept with value ``−inf``."""
    n_instances, batch_size, d_sae = pre.shape
    if sae.kind == "batchtopk":
        count = batch_count(sae.k, batch_size)
        values, flat = _batch_top(pre.reshape(n_instances, -1), count, workspace)
        past = torch.arange(values.shape[1], device=pre.device) >= count[:, None]
    else:
        values, latent = pre.topk(int(sae.k.max()), dim=-1)  # (instance, batch, k)
        past = torch.arange(values.shape[2], device=pre.device) >= sae.k[:, None, None]
        past = past.expand_as(values).flatten(1)
        rows = torch.arange(batch_size, device=pre.device)[:, None] * d_sae
        values, flat = values.flatten(1), (latent + rows).flatten(1)
    values = values.masked_fill(past, -torch.inf)
    flat, order = flat.sort(dim=-1)
    return flat, values.gather(1, order)


@torch.no_grad()
def loss_and_backward(
    sae: TopKSAE,
    x: torch.Tensor,
    dead: torch.Tensor,
    workspace: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`superpose.sae.train.loss_and_backward` for a TopK or BatchTopK SAE without
    autograd: the same parts and the same ``.grad`` on every parameter (up to float
    rounding) from ``x: (instance, batch, d_in)`` and ``dead: (instance, d_sae)``. These
    kinds have no sparsity penalty, so there is no warm-up factor to apply.

    Args:
        workspace: a dict kept across steps (the trainer passes one) in which the step's
            large temporaries (the pre-activations ``(instance, batch, d_sae)``, the centred
            input and the errors ``(instance, batch, d_in)``) are reused: fresh buffers of
            those sizes each step cost page faults comparable to the encoder product (a grid
            of 8 SAEs of 1,024 latents on 256 dims faulted about 37 MB a step).

    Returns:
        The parts ``{"mse", "sparsity", "aux"}`` ``(instance,)`` and the latents as a
        coalesced sparse COO tensor ``(instance, batch, d_sae)`` (the kept entries; a few may
        be 0 where a kept pre-activation was negative).
    """
    n_instances, batch_size, d_in = x.shape
    d_sae = sae.d_sae
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    workspace = {} if workspace is None else workspace
    centred = torch.sub(x, b_dec[:, None, :], out=_buffer(workspace, "centred", x, x.shape))
    pre = _buffer(workspace, "pre", x, (n_instances, batch_size, d_sae))
    torch.bmm(centred, W_enc, out=pre).add_(b_enc[:, None, :])
    flat, values = _active(sae, pre, workspace)
    row = flat.div(d_sae, rounding_mode="floor")
    latent = flat - row * d_sae
    instance_rows = torch.arange(n_instances, device=x.device)[:, None]
    sample = (row + instance_rows * batch_size).flatten()  # (entries,) into (instance·batch)
    column = (latent + instance_rows * d_sae).flatten()  # into (instance·d_sae)
    centred_rows = centred.reshape(-1, d_in)
    z = values.flatten().clamp_min(0.0)  # ReLU; also zeroes the −inf padding
    offsets = torch.searchsorted(sample, torch.arange(n_instances * batch_size, device=x.device))
    decoder_rows = W_dec.reshape(-1, d_in)
    reconstruction = F.embedding_bag(
        column, decoder_rows, offsets, mode="sum", per_sample_weights=z
    ).view(n_instances, batch_size, d_in)
    reconstruction += b_dec[:, None, :]
    error = torch.sub(reconstruction, x, out=_buffer(workspace, "error", x, x.shape))
    mse = torch.linalg.vector_norm(error.flatten(1), dim=1).square_().div_(batch_size)
    grad_out = error.mul_(2.0 / batch_size)  # ∂L/∂x̂ (instance, batch, d_in)
    grad_rows = grad_out.reshape(-1, d_in)
    grad_pre = _dots(grad_rows, sample, decoder_rows, column).mul_(z > 0)

    by_latent = torch.argsort(column, stable=True)  # same order in identical instances
    sorted_column = column[by_latent]
    latent_offsets = torch.searchsorted(
        sorted_column, torch.arange(n_instances * d_sae, device=x.device)
    )
    grad_W_dec = F.embedding_bag(
        sample[by_latent], grad_rows, latent_offsets, mode="sum",
        per_sample_weights=z[by_latent],
    )  # fmt: skip
    grad_W_enc_t = F.embedding_bag(
        sample[by_latent], centred_rows, latent_offsets, mode="sum",
        per_sample_weights=grad_pre[by_latent],
    )  # fmt: skip
    grad_b_enc = torch.zeros(n_instances * d_sae, device=x.device).index_add_(0, column, grad_pre)
    grad_W_dec = grad_W_dec.view(n_instances, d_sae, d_in)
    grad_W_enc_t = grad_W_enc_t.view(n_instances, d_sae, d_in)
    grad_b_enc = grad_b_enc.view(n_instances, d_sae)
    aux = _aux(
        sae, x, reconstruction, pre, dead, centred, grad_W_dec, grad_W_enc_t, grad_b_enc,
        workspace,
    )  # fmt: skip
    grad_b_dec = grad_out.sum(1) - torch.bmm(grad_b_enc[:, None, :], W_enc.transpose(1, 2))[:, 0]

    for parameter, grad in (
        (W_enc, grad_W_enc_t.transpose(1, 2)),
        (b_enc, grad_b_enc),
        (W_dec, grad_W_dec),
        (b_dec, grad_b_dec),
    ):
        _set_grad(parameter, grad)
    instance = torch.arange(n_instances, device=x.device).repeat_interleave(flat.shape[1])
    indices = torch.stack([instance, row.flatten(), latent.flatten()])
    latents = torch.sparse_coo_tensor(
        indices, z, (n_instances, batch_size, d_sae), is_coalesced=True, check_invariants=False
    )
    return {"mse": mse, "sparsity": torch.zeros_like(mse), "aux": aux}, latents


def _buffer(
    workspace: dict[str, torch.Tensor],
    name: str,
    like: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``workspace[name]``, a buffer of ``shape`` on ``like``'s device with ``dtype`` (None:
    ``like``'s), made anew only when it is missing or differs."""
    dtype = like.dtype if dtype is None else dtype
    buffer = workspace.get(name)
    if (
        buffer is None
        or buffer.shape != shape
        or buffer.dtype != dtype
        or buffer.device != like.device
    ):
        buffer = workspace[name] = like.new_empty(shape, dtype=dtype)
    return buffer


def _set_grad(parameter: torch.Tensor, grad: torch.Tensor) -> None:
    """Set ``parameter.grad`` in the parameter's memory layout (the fused Adam reads the
    gradient as if laid out like its parameter: ``W_enc`` starts as a transposed copy)."""
    if grad.stride() != parameter.stride():
        grad = torch.empty_like(parameter).copy_(grad)
    parameter.grad = grad


def _aux(
    sae: TopKSAE,
    x: torch.Tensor,
    reconstruction: torch.Tensor,
    pre: torch.Tensor,
    dead: torch.Tensor,
    centred: torch.Tensor,
    grad_W_dec: torch.Tensor,
    grad_W_enc_t: torch.Tensor,
    grad_b_enc: torch.Tensor,
    workspace: dict[str, torch.Tensor],
) -> torch.Tensor:
    """AuxK's value ``(instance,)``, adding its gradients into ``grad_W_dec``, ``grad_W_enc_t``
    (the encoder's gradient transposed, ``(instance, d_sae, d_in)``) and ``grad_b_enc``;
    its ``(instance, batch, d_in)`` temporaries reuse ``workspace``'s buffers."""
    n_instances, batch_size, d_in = x.shape
    has_dead = dead.any(-1)
    if sae.aux_coefficient == 0 or not has_dead.any():
        return x.new_zeros(n_instances)
    n_dead = dead.sum(-1)
    width = int(n_dead.max())
    # dead latents first, in index order: (instance, width) indices, padding marked invalid
    which = torch.argsort((~dead).to(torch.int8), dim=-1, stable=True)[:, :width]
    valid = torch.arange(width, device=x.device) < n_dead[:, None]
    dead_pre = pre.gather(2, which[:, None, :].expand(-1, batch_size, -1)).relu_()
    dead_pre.masked_fill_(~valid[:, None, :], 0.0)
    aux_k = torch.full_like(sae.k, min(sae.aux_k, width), dtype=torch.long)
    dead_z = keep_top(dead_pre, aux_k)  # (instance, batch, width)
    dead_rows = sae.W_dec.gather(1, which[:, :, None].expand(-1, -1, d_in))
    error = torch.sub(x, reconstruction, out=_buffer(workspace, "aux_error", x, x.shape))
    spare = _buffer(workspace, "aux_spare", x, x.shape)
    error -= torch.bmm(dead_z, dead_rows, out=spare)
    scale = sae.aux_coefficient * has_dead
    aux = scale * torch.mul(error, error, out=spare).sum(-1).mean(-1)
    grad_estimate = error.mul_((-2.0 / batch_size) * scale[:, None, None])
    grad_dead_pre = torch.bmm(grad_estimate, dead_rows.transpose(1, 2)) * (dead_z > 0)
    index = which[:, :, None].expand(-1, -1, d_in)
    grad_W_dec.scatter_add_(1, index, torch.bmm(dead_z.transpose(1, 2), grad_estimate))
    grad_W_enc_t.scatter_add_(1, index, torch.bmm(grad_dead_pre.transpose(1, 2), centred))
    grad_b_enc.scatter_add_(1, which, grad_dead_pre.sum(1))
    return aux
