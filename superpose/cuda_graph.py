"""Training steps recorded once as a CUDA graph and replayed: the trainers' CUDA fast path.

A toy model's step on a GPU is dozens of tiny kernels (draw the batch, five small batched
products, a few elementwise passes, the fused AdamW update), each finishing in a few
microseconds: the step's time is the CPU's time to launch them. A CUDA graph records the
launches of one step and replays them all with one call, so a step costs about as much as
its kernels take to run.

What a step may do, for it to be recorded (``torch.cuda.graph``'s rules): the same kernels on
tensors of the same shapes at the same addresses every step (the parameters, their
gradients and the optimizer state stay put; the batch and temporaries come from the graph's
own memory pool); no host synchronisation (no ``.item()``, no ``bool(tensor)``); no copy
from host memory; random numbers only from CUDA generators registered with the graph, which
then advance on every replay exactly as they would eagerly, so a replayed run draws the same
batches as an eager one with the same seed. The optimizer must be ``capturable`` with its
learning rate a CUDA tensor, changed between replays with ``fill_``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

WARMUP_STEPS = 3
"""Steps run eagerly on a side stream before the capture (the optimizer creates its state
and the allocator its blocks; ``torch.cuda.graph`` recommends a few)."""


class CudaGraphStep:
    """A training step that runs eagerly :data:`WARMUP_STEPS` times, is then recorded as a
    CUDA graph, and is replayed from then on. Every call takes one step.

    Args:
        step: one training step with the rules of the module docstring; returns a tensor
            (e.g. the per-instance loss ``(instance,)``), the same tensor object on every
            replay.
        generators: the CUDA generators ``step`` draws from (registered with the graph; the
            device's default generator is registered by the capture itself).
    """

    def __init__(
        self, step: Callable[[], torch.Tensor], generators: Sequence[torch.Generator] = ()
    ) -> None:
        self._step = step
        self._generators = [g for g in generators if not _is_default(g)]
        self._stream = torch.cuda.Stream()
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._output: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        """Take one step; returns the step's output (overwritten by the next replay)."""
        if self._graph is not None:
            self._graph.replay()
            return self._output
        if self._calls < WARMUP_STEPS:
            self._calls += 1
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                output = self._step()
            torch.cuda.current_stream().wait_stream(self._stream)
            return output
        graph = torch.cuda.CUDAGraph()
        for generator in self._generators:
            graph.register_generator_state(generator)
        # records the step without running it, on this step's own stream: other threads
        # (e.g. a second trainer) may keep using the GPU, or record their own steps, meanwhile
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
            self._output = self._step()
        self._graph = graph
        graph.replay()
        return self._output


def _is_default(generator: torch.Generator) -> bool:
    """Whether ``generator`` is a CUDA device's default generator."""
    return any(generator is default for default in torch.cuda.default_generators)
