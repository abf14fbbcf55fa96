"""Hand-written gradients for :class:`~superpose.models.ToyModel`: the trainer's fast path.

Autograd records every operation of the forward pass and replays it backwards. For these
two-layer models the backward pass is short enough to write out, which saves the recording,
the broadcast-heavy elementwise work of the generic loss and several temporaries. One step
is the five batched matrix products the model needs (two forward, three backward; ``bmm`` /
``baddbmm`` in the instance-major layout ``(instance, batch, feature)``, or a few broadcast
multiply-adds when the matrices are tiny, see :func:`matmul`) plus a few elementwise passes
over the batch.

Notation, per instance: ``x: (batch, n)`` the input, ``y`` its target (``x``, or ``|x|`` for
``"abs"``), ``h: (batch, m)`` the hidden activations, ``z = h W_read + b: (batch, n)`` the
output pre-activation, ``out = ReLU(z)`` (``z`` for ``"linear"``), ``W_read`` the output weights
(``W``, or ``W_out`` for ``"abs"``). With ``L = (1/B) Σ I_i (out − y)²`` summed over features and
averaged over the batch,

* ``g = ∂L/∂z = (2/B) I ⊙ (out − y) ⊙ [z > 0]`` (no mask for ``"linear"``),
* ``∂L/∂b = Σ_batch g``, ``∂L/∂W_read = hᵀ g``,
* ``d = ∂L/∂h = g W_readᵀ ⊙ [h > 0]`` (no mask when the hidden layer is linear),
* ``∂L/∂W_in = dᵀ x`` (``W_in = W``; for the tied kinds ``W``'s gradient is the sum of both
  terms), ``∂L/∂b_hidden = Σ_batch d``.

Instances are independent, so the gradient of the summed loss is each instance's own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from superpose.data import CompactBatch
from superpose.models import ToyModel

CHUNK_ELEMENTS = 2**18
"""Batch elements ``(instance × rows × n_features)`` per chunk in :func:`loss_and_backward`:
about 1 MiB per temporary, so a chunk's work stays in cache. A chunk holds several instances'
whole batches, or, when one instance's batch is larger, a block of its rows (a full-batch
step of 2 instances on 2,000 samples of 1,000 features, one idle core: 29 ms in blocks of
262 rows against 70 ms whole)."""

SMALL_PRODUCT = 4
"""Largest ``contraction × output columns`` for which :func:`matmul` avoids ``bmm``."""


def matmul(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """Batched ``add + a @ b`` for ``a: (instance, p, q)``, ``b: (instance, q, r)`` and ``add``
    broadcastable to ``(instance, p, r)``; returns ``(instance, p, r)``.

    ``bmm`` pays a fixed cost per matrix that dominates for tiny ones (``n_features=2,
    n_hidden=1`` grids of thousands of instances), so when ``q·r ≤`` :data:`SMALL_PRODUCT`
    the product is ``q`` broadcast multiply-adds over the ``(instance, p, r)`` output instead.
    """
    q, r = b.shape[1], b.shape[2]
    if q * r > SMALL_PRODUCT:
        return torch.bmm(a, b) if add is None else torch.baddbmm(add, a, b)
    out = a[:, :, :1] * b[:, :1, :] if add is None else torch.addcmul(add, a[:, :, :1], b[:, :1, :])
    for k in range(1, q):
        out.addcmul_(a[:, :, k : k + 1], b[:, k : k + 1, :])
    return out


def supports(model: ToyModel) -> bool:
    """Whether the hand-written gradients apply: any :data:`~superpose.models.KINDS` of a
    plain :class:`ToyModel` (a subclass that overrides the forward pass or the loss does not)."""
    cls = type(model)
    return all(
        getattr(cls, name) is getattr(ToyModel, name) for name in ("forward", "target", "loss")
    )


@torch.no_grad()
def loss_and_backward(
    model: ToyModel, x: torch.Tensor | CompactBatch, compile: bool = False
) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` on ``x: (instance, batch, n_features)`` or a
    :class:`~superpose.data.CompactBatch` standing for one.

    Sets every parameter's ``.grad`` to the gradient of the summed loss, as
    ``model.loss(x).sum().backward()`` would (up to float rounding), without autograd.
    The work is split into chunks of about :data:`CHUNK_ELEMENTS` batch elements on a CPU
    (instances, or blocks of rows of one instance, whose losses and gradients add up) so that
    each chunk's temporaries stay in cache; a GPU takes each part of the batch in one pass. A
    compact batch's repeated row is computed once, weighted. ``compile``: run the arithmetic
    through :func:`compiled` (a CUDA ``x`` only).
    """
    batch = CompactBatch.of(x) if isinstance(x, torch.Tensor) else x
    parameters = dict(model.named_parameters())
    grads = {name: torch.empty_like(parameter) for name, parameter in parameters.items()}
    loss = batch.parts[0].new_empty(model.n_instances)
    chunk = compiled() if compile else _chunk
    first = 0
    for part, repeats in zip(batch.parts, batch.repeats, strict=True):
        n_rows, n_features = part.shape[1], part.shape[2]
        rows, size = n_rows, part.shape[0]
        if part.device.type == "cpu":
            rows = min(n_rows, max(1, CHUNK_ELEMENTS // n_features))
            size = max(1, CHUNK_ELEMENTS // (rows * n_features))
        for offset in range(0, part.shape[0], size):
            instances = slice(first + offset, first + min(offset + size, part.shape[0]))
            for row in range(0, n_rows, rows):
                share = chunk(
                    model.kind,
                    {name: parameter[instances] for name, parameter in parameters.items()},
                    model.importance[instances],
                    part[offset : offset + size, row : row + rows],
                    {name: grad[instances] for name, grad in grads.items()},
                    batch.batch_size,
                    repeats if row + rows >= n_rows else 0,  # the last row is in the last block
                    row > 0,
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
        _, out, target, _ = _forward(model.kind, sliced, part)
        error = (out - target).square_().mul_(model.importance[instances, None, :]).sum(-1)
        error[:, -1] *= 1 + repeats
        losses.append(error.sum(-1) / batch.batch_size)
        first += part.shape[0]
    return torch.cat(losses)


def _forward(
    kind: str, parameters: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward pass for ``x: (instance, batch, n_features)`` and ``parameters`` sliced to
    its instances: ``hidden: (instance, batch, m)``, ``out`` and ``target: (instance, batch,
    n)``, and the output weights ``W_read: (instance, m, n)``."""
    W = parameters["W"]
    if kind == "abs":
        target = x.abs()
        w_read = parameters["W_out"]
        hidden = matmul(x, W.transpose(1, 2), parameters["b_hidden"][:, None, :]).relu_()
    else:
        target = x
        w_read = W
        hidden = matmul(x, W.transpose(1, 2))
        if kind == "hidden_relu":
            hidden.relu_()
    out = matmul(hidden, w_read, parameters["b"][:, None, :])  # (instance, batch, n)
    if kind != "linear":
        out.relu_()
    return hidden, out, target, w_read


def _chunk(
    kind: str,
    parameters: dict[str, torch.Tensor],
    importance: torch.Tensor,
    x: torch.Tensor,
    grads: dict[str, torch.Tensor],
    batch_size: int,
    repeats: int,
    accumulate: bool,
) -> torch.Tensor:
    """:func:`loss_and_backward` for some instances' rows: ``parameters`` and ``grads`` are
    the model's parameters and their gradients sliced to those instances, ``importance:
    (instance, n_features)``, ``x: (instance, rows, n_features)`` some of the rows of a batch
    of ``batch_size`` rows that the loss averages over, the last of them standing for ``1 +
    repeats`` rows. Returns those rows' share of the loss ``(instance,)``; their gradients are
    written into ``grads``, or added to it when ``accumulate``."""
    scale = importance[:, None, :] * (2.0 / batch_size)  # (instance, 1, n)
    hidden, out, target, w_read = _forward(kind, parameters, x)
    error = out - target
    grad_out = error * scale  # the gradient before the output ReLU's mask
    if repeats:  # every term below is linear in a row's grad_out
        grad_out[:, -1] *= 1 + repeats
    loss = torch.linalg.vecdot(error.flatten(1), grad_out.flatten(1)) * 0.5
    del error
    if kind != "linear":  # zero where out == 0, in place
        torch.ops.aten.threshold_backward.grad_input(grad_out, out, 0.0, grad_input=grad_out)
    del out
    grad_hidden = matmul(grad_out, w_read.transpose(1, 2))  # (instance, batch, m)
    if kind in ("hidden_relu", "abs"):
        grad_hidden = torch.ops.aten.threshold_backward(grad_hidden, hidden, 0.0)
    beta = 1.0 if accumulate else 0.0  # baddbmm ignores the old values when beta is 0
    _sum_rows(grad_out, grads["b"], accumulate)
    if kind == "abs":
        grads["W_out"].baddbmm_(hidden.transpose(1, 2), grad_out, beta=beta)
        _sum_rows(grad_hidden, grads["b_hidden"], accumulate)
        grads["W"].baddbmm_(grad_hidden.transpose(1, 2), x, beta=beta)
    else:
        grads["W"].baddbmm_(hidden.transpose(1, 2), grad_out, beta=beta)
        grads["W"].baddbmm_(grad_hidden.transpose(1, 2), x)
    return loss


def _sum_rows(values: torch.Tensor, out: torch.Tensor, accumulate: bool) -> None:
    """Write (or add, when ``accumulate``) ``values: (instance, rows, k)`` summed over rows
    into ``out: (instance, k)``."""
    if accumulate:
        out += values.sum(1)
    else:
        torch.sum(values, 1, out=out)
