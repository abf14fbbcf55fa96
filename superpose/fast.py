"""Hand-written gradients for :class:`~superpose.models.ToyModel`: the trainer's fast path.

Autograd records every operation of the forward pass and replays it backwards. For these
two-layer models the backward pass is short enough to write out, which saves the recording,
the broadcast-heavy elementwise work of the generic loss and several temporaries. One step
is the five batched matrix products the model needs (two forward, three backward; ``bmm`` /
``baddbmm`` in the instance-major layout ``(instance, batch, feature)``, or a few broadcast
multiply-adds when the matrices are tiny, see :func:`matmul`) plus a few elementwise passes
over the batch.

Notation, per instance, for a kind described by its :class:`~superpose.models.ModelKind`:
``x: (batch, n)`` the input, ``y`` its target (``x``, or ``|x|`` with ``abs_target``), ``h:
(batch, m)`` the hidden activations, ``z = h W_read + b: (batch, n)`` the output
pre-activation, ``out = ReLU(z)`` (``z`` without ``output_relu``), ``W_read`` the output weights
(``W`` when ``tied``, else ``W_out``). With ``L = (1/B) Σ I_i (out − y)²`` summed over features
and averaged over the batch,

* ``g = ∂L/∂z = (2/B) I ⊙ (out − y) ⊙ [z > 0]`` (no mask without ``output_relu``),
* ``∂L/∂b = Σ_batch g``, ``∂L/∂W_read = hᵀ g``,
* ``d = ∂L/∂h = g W_readᵀ ⊙ [h > 0]`` (no mask when the hidden layer is linear, not
  ``privileged``),
* ``∂L/∂W_in = dᵀ x`` (``W_in = W``; for the tied kinds ``W``'s gradient is the sum of both
  terms), ``∂L/∂b_hidden = Σ_batch d`` (with ``hidden_bias``).

Instances are independent, so the gradient of the summed loss is each instance's own.

``precision="bf16"`` (opt-in) rounds the five products' operands to bfloat16 and accumulates
in float32: ``bmm`` on bfloat16 operands (the CPU's bf16 instructions; its result is rounded
to bfloat16 once more) or, for the tiny products of :func:`matmul`, float32 multiply-adds of
the rounded operands (exact products). The loss, the elementwise passes, the gradients'
sums, the weights and the optimiser state stay float32. Products of bfloat16 operands run
faster on CPUs with bfloat16 instructions (measured on one thread of an AVX512-BF16 CPU
without AMX: 2.3× for ``n_features=1000, n_hidden=100``, 1.7× for ``100, 20``; AMX tiles
promise more), while the roundings add elementwise passes; emulated elsewhere, they only cost.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from superpose.data import CompactBatch, feature_major
from superpose.data.sampling import FEATURE_MAJOR
from superpose.models import ModelKind, ToyModel
from superpose.training.result import PRECISIONS

CHUNK_ELEMENTS = 2**18
"""Batch elements ``(instance × rows × n_features)`` per chunk in :func:`loss_and_backward`:
about 1 MiB per temporary, so a chunk's work stays in cache. A chunk holds several instances'
whole batches, or, when one instance's batch is larger, a block of its rows (a full-batch
step of 2 instances on 2,000 samples of 1,000 features, one idle core: 29 ms in blocks of
262 rows against 70 ms whole)."""

BLOCK_WEIGHTS = CHUNK_ELEMENTS // 16
"""Largest weight matrix (``n_hidden × n_features`` of one instance) for which an instance's
batch is split into blocks of rows: each block reads the weights again, which costs more than
the cache saves for large models (one instance of n=10,000, m=1,000 on 1,024 rows, one
thread: 1.82 s per step in blocks of 26 rows against 1.24 s whole)."""

SMALL_PRODUCT = 4
"""Largest ``contraction × output columns`` for which :func:`matmul` avoids ``bmm``."""


_OPERAND_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """Batched ``add + a @ b`` for ``a: (instance, p, q)``, ``b: (instance, q, r)`` and a
    float32 ``add`` broadcastable to ``(instance, p, r)``; returns float32 ``(instance, p, r)``.

    ``a`` and ``b`` are both float32 or both bfloat16 (then ``bmm``'s bfloat16 result is
    widened, or the multiply-adds below run in float32 on the exact products).

    ``bmm`` pays a fixed cost per matrix that dominates for tiny ones (``n_features=2,
    n_hidden=1`` grids of thousands of instances), so when ``q·r ≤`` :data:`SMALL_PRODUCT`
    the product is ``q`` broadcast multiply-adds instead, written as ``(instance, r, p)``
    and returned as its transposed view (column-major, like a batch drawn feature-major,
    :data:`~superpose.data.sampling.FEATURE_MAJOR`): each pass then broadcasts one number per
    instance and column along the ``p`` rows, about 10× faster than broadcasting a row of
    ``r ≤ 4`` numbers along the last axis. A product with fewer output columns than its
    contraction (``r < q < p``: the hidden layer's, ``x Wᵀ``), or of a column-major ``a``, is
    computed as ``(bᵀ aᵀ)ᵀ`` by ``bmm`` and returned as that transposed view too: measured on
    one CPU thread, 2.7× faster for ``n_features=5, n_hidden=2`` ×10 instances and 5–10 % for
    ``n_features=100, n_hidden=20``.
    """
    p, q, r = a.shape[1], b.shape[1], b.shape[2]
    if q * r > SMALL_PRODUCT:
        # few output columns, or a feature-major a: (bᵀ aᵀ)ᵀ, a transposed view, runs faster
        if r < q < p or feature_major(a):
            return _bmm(b.mT, a.mT, None if add is None else add.mT).mT
        return _bmm(a, b, add)
    # (bᵀ aᵀ)ᵀ as q outer products of bᵀ's columns (instance, r, 1) and aᵀ's rows (instance,
    # 1, p): the p axis innermost, so every pass broadcasts scalars along it
    a_t, b_t = a.mT, b.mT
    out = b_t[:, :, :1].float() * a_t[:, :1, :]
    if add is not None:
        out += add.mT
    for k in range(1, q):
        out.addcmul_(b_t[:, :, k : k + 1], a_t[:, k : k + 1, :])
    return out.mT


def _bmm(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None) -> torch.Tensor:
    """``add + a @ b`` by ``bmm`` / ``baddbmm`` (see :func:`matmul`), float32."""
    if a.dtype != torch.float32:
        product = torch.bmm(a, b)
        return product.float() if add is None else torch.add(add, product)
    return torch.bmm(a, b) if add is None else torch.baddbmm(add, a, b)


def _product_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, add: bool) -> None:
    """``out (+)= a @ b`` in place for float32 ``out: (instance, p, r)`` and ``a: (instance,
    p, q)``, ``b: (instance, q, r)``, both float32 or both bfloat16 (its result widened)."""
    if a.dtype == torch.float32:
        if add:
            out.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=out)
    elif add:
        out.add_(torch.bmm(a, b))
    else:
        out.copy_(torch.bmm(a, b))


def supports(model: ToyModel) -> bool:
    """Whether the hand-written gradients apply: any :data:`~superpose.models.KINDS` of a
    plain :class:`ToyModel` (a subclass that overrides the forward pass or the loss does not)."""
    cls = type(model)
    return all(
        getattr(cls, name) is getattr(ToyModel, name) for name in ("forward", "target", "loss")
    )


@torch.no_grad()
def loss_and_backward(
    model: ToyModel,
    x: torch.Tensor | CompactBatch,
    compile: bool = False,
    precision: str = "fp32",
) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` on ``x: (instance, batch, n_features)`` or a
    :class:`~superpose.data.CompactBatch` standing for one.

    Sets every parameter's ``.grad`` to the gradient of the summed loss, as
    ``model.loss(x).sum().backward()`` would (up to float rounding; with ``precision="bf16"``
    up to the products' bfloat16 rounding, see the module docstring), without autograd.
    The work is split into chunks of about :data:`CHUNK_ELEMENTS` batch elements on a CPU
    (instances, or blocks of rows of one instance, whose losses and gradients add up) so that
    each chunk's temporaries stay in cache; a GPU takes each part of the batch in one pass. A
    compact batch's repeated row is computed once, weighted. ``compile``: run the arithmetic
    through :func:`compiled` (a CUDA ``x`` only).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    batch = CompactBatch.of(x) if isinstance(x, torch.Tensor) else x
    parameters = dict(model.named_parameters())
    grads = {name: torch.empty_like(parameter) for name, parameter in parameters.items()}
    loss = batch.parts[0].new_empty(model.n_instances)
    chunk = compiled() if compile else _chunk
    first = 0
    for part, repeats in zip(batch.parts, batch.repeats, strict=True):
        n_rows, n_features = part.shape[1], part.shape[2]
        if n_features <= FEATURE_MAJOR:  # the layout the samplers draw (a no-op for theirs)
            part = part.mT.contiguous().mT
        rows, size = n_rows, part.shape[0]
        if part.device.type == "cpu":
            if model.W[0].numel() <= BLOCK_WEIGHTS:  # blocks re-read the weights
                rows = min(n_rows, max(1, CHUNK_ELEMENTS // n_features))
            size = max(1, CHUNK_ELEMENTS // (rows * n_features))
        for offset in range(0, part.shape[0], size):
            instances = slice(first + offset, first + min(offset + size, part.shape[0]))
            for row in range(0, n_rows, rows):
                share = chunk(
                    model.kind_spec,
                    {name: parameter[instances] for name, parameter in parameters.items()},
                    model.importance[instances],
                    part[offset : offset + size, row : row + rows],
                    {name: grad[instances] for name, grad in grads.items()},
                    batch.batch_size,
                    repeats if row + rows >= n_rows else 0,  # the last row is in the last block
                    row > 0,
                    _OPERAND_DTYPES[precision],
                )
                if row > 0:
                    loss[instances] += share
                else:
                    loss[instances] = share
        first += part.shape[0]
    for name, parameter in parameters.items():
        parameter.grad = grads[name]
    return loss


@cache
def compiled() -> Callable[..., torch.Tensor]:
    """The step's arithmetic (:func:`_chunk`) through ``torch.compile``, which fuses the
    elementwise passes between the products into a few GPU kernels: 25–35 % off a step of
    the benchmark's configurations B and D on an H100 once compiled, which takes a few
    seconds per kind and batch shape (then shapes become dynamic, so one more compile
    covers the rest)."""
    return torch.compile(_chunk, fullgraph=True)


@torch.no_grad()
def batch_loss(model: ToyModel, batch: CompactBatch) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` of the batch that ``batch`` stands for, as
    ``model.loss(batch.dense())`` would give (up to float rounding), computing the repeated
    rows once."""
    parameters = dict(model.named_parameters())
    losses = []
    first = 0
    for part, repeats in zip(batch.parts, batch.repeats, strict=True):
        instances = slice(first, first + part.shape[0])
        sliced = {name: parameter[instances] for name, parameter in parameters.items()}
        _, out, target, _, _ = _forward(model.kind_spec, sliced, part, torch.float32)
        error = (out - target).square_().mul_(model.importance[instances, None, :]).sum(-1)
        error[:, -1] *= 1 + repeats
        losses.append(error.sum(-1) / batch.batch_size)
        first += part.shape[0]
    return torch.cat(losses)


def _forward(
    kind: ModelKind, parameters: dict[str, torch.Tensor], x: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward pass of a ``kind`` model for ``x: (instance, batch, n_features)`` and
    ``parameters`` sliced to its instances, with products of ``dtype`` operands (``.to(dtype)``
    is free for float32): ``hidden: (instance, batch, m)``, ``out`` and ``target: (instance,
    batch, n)``, and the operands the backward pass reuses, the output weights ``W_read:
    (instance, m, n)`` and ``x``, both as ``dtype``."""
    x_operand = x.to(dtype)
    W = parameters["W"].to(dtype)
    w_read = W if kind.tied else parameters["W_out"].to(dtype)
    hidden_bias = parameters["b_hidden"][:, None, :] if kind.hidden_bias else None
    hidden = matmul(x_operand, W.transpose(1, 2), hidden_bias)
    if kind.privileged:
        hidden.relu_()
    out = matmul(hidden.to(dtype), w_read, parameters["b"][:, None, :])  # (instance, batch, n)
    if kind.output_relu:
        out.relu_()
    return hidden, out, kind.target(x), w_read, x_operand


def _chunk(
    kind: ModelKind,
    parameters: dict[str, torch.Tensor],
    importance: torch.Tensor,
    x: torch.Tensor,
    grads: dict[str, torch.Tensor],
    batch_size: int,
    repeats: int,
    accumulate: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """:func:`loss_and_backward` for some instances' rows of a ``kind`` model: ``parameters``
    and ``grads`` are the model's parameters and their gradients sliced to those instances,
    ``importance: (instance, n_features)``, ``x: (instance, rows, n_features)`` some of the rows
    of a batch of ``batch_size`` rows that the loss averages over, the last of them standing
    for ``1 + repeats`` rows. Returns those rows' share of the loss ``(instance,)``; their
    gradients are written into ``grads``, or added to it when ``accumulate``. ``dtype``: the
    products' operand type."""
    scale = importance[:, None, :] * (2.0 / batch_size)  # (instance, 1, n)
    hidden, out, target, w_read, x_operand = _forward(kind, parameters, x, dtype)
    error = out - target
    grad_out = error * scale  # the gradient before the output ReLU's mask
    if repeats:  # every term below is linear in a row's grad_out
        grad_out[:, -1] *= 1 + repeats
    if feature_major(error):  # flatten in storage order
        loss = torch.linalg.vecdot(error.mT.flatten(1), grad_out.mT.flatten(1)) * 0.5
    else:
        loss = torch.linalg.vecdot(error.flatten(1), grad_out.flatten(1)) * 0.5
    del error
    if kind.output_relu:  # zero where out == 0, in place
        torch.ops.aten.threshold_backward.grad_input(grad_out, out, 0.0, grad_input=grad_out)
    del out
    grad_out_operand = grad_out.to(dtype)
    grad_hidden = matmul(grad_out_operand, w_read.transpose(1, 2))  # (instance, batch, m)
    if kind.privileged:
        grad_hidden = torch.ops.aten.threshold_backward(grad_hidden, hidden, 0.0)
    hidden_operand = hidden.to(dtype)
    grad_hidden_operand = grad_hidden.to(dtype).transpose(1, 2)
    _sum_rows(grad_out, grads["b"], accumulate)
    _product_into(grads[kind.readout], hidden_operand.transpose(1, 2), grad_out_operand, accumulate)
    if kind.hidden_bias:
        _sum_rows(grad_hidden, grads["b_hidden"], accumulate)
    # a tied W already holds its readout gradient: add to it
    _product_into(grads["W"], grad_hidden_operand, x_operand, kind.tied or accumulate)
    return loss


def _sum_rows(values: torch.Tensor, out: torch.Tensor, accumulate: bool) -> None:
    """Write (or add, when ``accumulate``) ``values: (instance, rows, k)`` summed over rows
    into ``out: (instance, k)``."""
    if accumulate:
        out += values.sum(1)
    else:
        torch.sum(values, 1, out=out)
