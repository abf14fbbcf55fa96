"""A small attention-only transformer whose weights are named and shaped as in the framework.

Tokens are embedded (``W_E``) and given a learned positional embedding (``W_pos``); each layer
is a set of causal attention heads that read the residual stream and add their outputs back
into it; the unembedding ``W_U`` reads the final residual stream. There are no MLPs and no
biases, so every path from the embedding to the logits is linear once the attention patterns
are fixed.

Shapes follow the framework's convention that a matrix maps column vectors:

=========  ===========================================  =====================================
weight     shape                                        role
=========  ===========================================  =====================================
``W_E``    ``(d_model, d_vocab)``                       column ``t`` is token ``t``'s vector
``W_pos``  ``(d_model, n_ctx)``                         column ``p`` is position ``p``'s vector
``W_Q``    ``(n_layers, n_heads, d_head, d_model)``     query read from the residual stream
``W_K``    ``(n_layers, n_heads, d_head, d_model)``     key read from the residual stream
``W_V``    ``(n_layers, n_heads, d_head, d_model)``     value read from the residual stream
``W_O``    ``(n_layers, n_heads, d_model, d_head)``     head output written to the stream
``W_U``    ``(d_vocab, d_model)``                       logits read from the residual stream
=========  ===========================================  =====================================

Layer norm is off by default. When on, it is a parameter-free layer norm (subtract the mean
over ``d_model``, divide by the standard deviation) applied to the input of every layer and
of the unembedding; any learned gain would fold into the next weight matrix anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from superpose._checks import make_generator, positive_int
from superpose.io import Saveable, saveable

LAYER_NORM_EPS = 1e-5


@dataclass
class Cache:
    """Activations of one forward pass.

    Attributes:
        residual: the residual stream before each layer and after the last one, ``n_layers + 1``
            tensors shaped ``(batch, pos, d_model)``; ``residual[0]`` is the embedding.
        scales: the layer-norm divisor read by each layer and by the unembedding,
            ``n_layers + 1`` tensors shaped ``(batch, pos, 1)`` (all ones without layer norm).
        patterns: attention patterns per layer, ``n_layers`` tensors shaped
            ``(batch, n_heads, query_pos, key_pos)``; each query row sums to 1.
        head_outputs: what each head writes to the residual stream, ``n_layers`` tensors shaped
            ``(batch, n_heads, pos, d_model)``.
    """

    residual: list[torch.Tensor]
    scales: list[torch.Tensor]
    patterns: list[torch.Tensor]
    head_outputs: list[torch.Tensor]


@saveable
class AttnOnlyTransformer(Saveable):
    """Attention-only transformer: embedding, causal attention layers, unembedding.

    Args:
        n_layers: number of attention layers (0 gives the zero-layer, bigram-only model).
        d_model: width of the residual stream.
        n_heads: heads per layer.
        d_vocab: vocabulary size.
        n_ctx: longest sequence the positional embedding covers.
        d_head: width of each head's query/key/value (default ``d_model // n_heads``).
        layer_norm: apply a parameter-free layer norm before every layer and the unembedding.
        seed: int or ``torch.Generator`` for the initial weights; None: torch's global
            generator (``torch.manual_seed`` fixes it), as for ``nn.Module`` initialisers.

    Every weight is initialised from a normal distribution with variance ``1 / fan_in``
    (``1`` for the embeddings), so residual vectors and logits start at unit scale.
    ``model.save(path)`` writes it to a folder and ``superpose.load(path)`` brings it back.

    Example:
        >>> model = AttnOnlyTransformer(n_layers=2, d_model=32, n_heads=4, d_vocab=10, n_ctx=8)
        >>> model(torch.zeros(3, 8, dtype=torch.long)).shape
        torch.Size([3, 8, 10])
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_vocab: int,
        n_ctx: int,
        *,
        d_head: int | None = None,
        layer_norm: bool = False,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int):
            raise TypeError(f"n_layers must be an integer >= 0, got {n_layers!r}")
        if n_layers < 0:
            raise ValueError(f"n_layers must be an integer >= 0, got {n_layers}")
        d_model = positive_int("d_model", d_model)
        n_heads = positive_int("n_heads", n_heads)
        d_vocab = positive_int("d_vocab", d_vocab)
        n_ctx = positive_int("n_ctx", n_ctx)
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(
                    f"d_model={d_model} must be divisible by n_heads={n_heads} "
                    "unless d_head is given"
                )
            d_head = d_model // n_heads
        d_head = positive_int("d_head", d_head)
        if not isinstance(layer_norm, bool):
            raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.n_layers, self.d_model, self.n_heads = n_layers, d_model, n_heads
        self.d_vocab, self.n_ctx, self.d_head = d_vocab, n_ctx, d_head
        self.layer_norm = layer_norm

        generator = make_generator(seed)

        def init(*shape: int, fan_in: int) -> nn.Parameter:
            weight = torch.randn(*shape, generator=generator) / math.sqrt(fan_in)
            return nn.Parameter(weight)

        self.W_E = init(d_model, d_vocab, fan_in=1)
        self.W_pos = init(d_model, n_ctx, fan_in=1)
        self.W_Q = init(n_layers, n_heads, d_head, d_model, fan_in=d_model)
        self.W_K = init(n_layers, n_heads, d_head, d_model, fan_in=d_model)
        self.W_V = init(n_layers, n_heads, d_head, d_model, fan_in=d_model)
        self.W_O = init(n_layers, n_heads, d_model, d_head, fan_in=n_heads * d_head)
        self.W_U = init(d_vocab, d_model, fan_in=d_model)

    def config(self) -> dict[str, object]:
        """Constructor arguments for :func:`superpose.load` (the seed only set the init)."""
        return {
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_vocab": self.d_vocab,
            "n_ctx": self.n_ctx,
            "d_head": self.d_head,
            "layer_norm": self.layer_norm,
        }

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus positional embedding: ``(batch, pos)`` tokens → ``(batch, pos, d_model)``."""
        n_pos = tokens.shape[-1]
        return self.W_E.T[tokens] + self.W_pos.T[:n_pos]

    def scale(self, residual: torch.Tensor) -> torch.Tensor:
        """Layer-norm divisor of ``residual (..., d_model)``, shaped ``(..., 1)``.

        With ``layer_norm=False`` it is 1, so :meth:`normalize` is the identity.
        """
        if not self.layer_norm:
            return torch.ones_like(residual[..., :1])
        return torch.sqrt(residual.var(dim=-1, keepdim=True, unbiased=False) + LAYER_NORM_EPS)

    def normalize(self, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Apply layer norm with a given divisor: linear in ``residual (..., d_model)``.

        Centring is linear, and dividing by a fixed ``scale (..., 1)`` is too, which is what
        makes the path expansion exact even with layer norm on (its scales frozen).
        """
        if not self.layer_norm:
            return residual
        return (residual - residual.mean(dim=-1, keepdim=True)) / scale

    def attention_pattern(self, layer: int, normalized: torch.Tensor) -> torch.Tensor:
        """Causal attention pattern of every head of ``layer``.

        Args:
            layer: index in ``[0, n_layers)``.
            normalized: the layer's (normalised) input, ``(batch, pos, d_model)``.

        Returns:
            ``(batch, n_heads, query_pos, key_pos)``, each row a distribution over keys at or
            before the query.
        """
        queries = torch.einsum("hdm,bpm->bhpd", self.W_Q[layer], normalized)
        keys = torch.einsum("hdm,bpm->bhpd", self.W_K[layer], normalized)
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(self.d_head)
        n_pos = normalized.shape[-2]
        future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)

    def head_outputs(
        self, layer: int, pattern: torch.Tensor, normalized: torch.Tensor
    ) -> torch.Tensor:
        """What each head of ``layer`` writes: ``A^h x W_V^hᵀ W_O^hᵀ``.

        Args:
            layer: index in ``[0, n_layers)``.
            pattern: ``(batch, n_heads, query_pos, key_pos)`` attention pattern.
            normalized: the values' source, ``(batch, pos, d_model)``.

        Returns:
            ``(batch, n_heads, pos, d_model)``.
        """
        values = torch.einsum("hdm,bpm->bhpd", self.W_V[layer], normalized)
        return torch.einsum("hmd,bhpd->bhpm", self.W_O[layer], pattern @ values)

    def run(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        """Forward pass that also returns the activations.

        Args:
            tokens: ``(batch, pos)`` integer tokens in ``[0, d_vocab)``, ``pos <= n_ctx``, on
                any device (they are moved to the model's).

        Returns:
            logits ``(batch, pos, d_vocab)`` and the :class:`Cache`, on the model's device.
        """
        self._check_tokens(tokens)
        residual = self.embed(tokens.to(self.W_E.device))
        cache = Cache(residual=[residual], scales=[], patterns=[], head_outputs=[])
        for layer in range(self.n_layers):
            scale = self.scale(residual)
            normalized = self.normalize(residual, scale)
            pattern = self.attention_pattern(layer, normalized)
            outputs = self.head_outputs(layer, pattern, normalized)
            residual = residual + outputs.sum(dim=1)
            cache.scales.append(scale)
            cache.patterns.append(pattern)
            cache.head_outputs.append(outputs)
            cache.residual.append(residual)
        scale = self.scale(residual)
        cache.scales.append(scale)
        return self.unembed(self.normalize(residual, scale)), cache

    def unembed(self, normalized: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., d_vocab)`` from the final normalised residual ``(..., d_model)``."""
        return normalized @ self.W_U.T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, pos, d_vocab)`` for tokens ``(batch, pos)``."""
        return self.run(tokens)[0]

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int):
            raise TypeError("tokens must be an integer tensor shaped (batch, pos)")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be shaped (batch, pos), got {tuple(tokens.shape)}")
        if not 1 <= tokens.shape[1] <= self.n_ctx:
            raise ValueError(
                f"tokens must have 1 to n_ctx={self.n_ctx} positions, got {tokens.shape[1]}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.d_vocab):
            raise ValueError(
                f"tokens must lie in [0, d_vocab={self.d_vocab}), got values in "
                f"[{tokens.min().item()}, {tokens.max().item()}]"
            )


def next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross entropy of predicting ``tokens[:, p + 1]`` from ``logits[:, p]``.

    Args:
        logits: ``(batch, pos, d_vocab)``.
        tokens: ``(batch, pos)``.

    Returns:
        ``(batch, pos - 1)`` losses in nats; column ``p`` is the loss of the prediction made at
        position ``p``.
    """
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
