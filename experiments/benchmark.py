"""Benchmark: ``superpose.train`` against the public TMS notebook's training recipe.

Run from the repository root::

    python experiments/benchmark.py            # full run, a few minutes on 2 CPU cores
    python experiments/benchmark.py --quick    # smoke run, seconds
    python experiments/benchmark.py --device cuda
    python experiments/benchmark.py --bf16 off  # skip the precision="bf16" columns
    python experiments/benchmark.py --configs BC --threads 2  # B and C only

For each configuration the reference recipe (:func:`reference_recipe`, a faithful
re-implementation of the public TMS notebook / ARENA exercises) and ``superpose.train`` run
back to back, the order reversed on every other configuration, from the same initial weights,
with the same steps, batch size and learning rate; ``superpose.train(..., precision="bf16")``
runs beside them where bfloat16 has hardware support (``--bf16 auto``: a CUDA device, or a
CPU with ``avx512_bf16`` or ``amx_bf16``), and on CUDA ``superpose.train(..., compile=True)``
(its compilation timed apart, in the 3-step warm-up). All trained models are then scored by
the same held-out evaluation (:func:`superpose.train.evaluate`, same samples). Every ratio
divides two numbers of the same run, and the header names the machine
(:mod:`superpose.machine`). Peak memory is the rise of the process's peak resident set (CPU)
or of PyTorch's peak allocation (CUDA) during training. A second table shows how our step
time and memory scale with ``n_features`` and with the number of instances.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch

from superpose import SparseFeatures, ToyModel, machine, train
from superpose.train import evaluate

BATCH_SIZE = 1024
LR = 1e-3
WEIGHT_DECAY = 0.0
EVAL_SAMPLES = 65536


def reference_recipe(
    W: torch.Tensor,
    b: torch.Tensor,
    importance: torch.Tensor,
    feature_probability: torch.Tensor,
    *,
    hidden_relu: bool,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REFERENCE RECIPE (the public TMS notebook / ARENA exercises), reimplemented for timing.

    ReLU-output model (``hidden_relu``: also a ReLU on the hidden layer) with an einsum
    forward on batches laid out ``(batch, instance, feature)``, autograd, and
    ``torch.optim.AdamW``; each step draws two uniforms per element (one for activity, one
    for magnitude) and minimises ``(importance * (out - x)**2)`` averaged over batch and
    features, summed over instances. The learning rate is set every step (constant schedule).
    Uses the global torch RNG, as the notebook does.

    Args:
        W: ``(instance, n_hidden, n_features)`` initial weights (copied).
        b: ``(instance, n_features)`` initial output bias (copied).
        importance: ``(instance, n_features)``.
        feature_probability: ``(instance, n_features)``.

    Returns:
        The trained ``W`` and ``b``, detached, same shapes.
    """
    W = W.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    n_instances, _, n_features = W.shape
    optimizer = torch.optim.AdamW([W, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        shape = (batch_size, n_instances, n_features)
        magnitude = torch.rand(shape, device=W.device)
        seeds = torch.rand(shape, device=W.device)
        x = torch.where(seeds <= feature_probability, magnitude, 0.0)
        hidden = torch.einsum("bif,ihf->bih", x, W)
        if hidden_relu:
            hidden = torch.relu(hidden)
        out = torch.relu(torch.einsum("bih,ihf->bif", hidden, W) + b)
        loss = (importance * (out - x) ** 2).mean(dim=(0, 2)).sum()
        loss.backward()
        optimizer.step()
    return W.detach(), b.detach()


@dataclass(frozen=True)
class Config:
    """One benchmark configuration (a batched ReLU-output or hidden-ReLU model)."""

    label: str
    kind: str
    n_features: int
    n_hidden: int
    importance: torch.Tensor  # (instance or 1, n_features)
    feature_probability: torch.Tensor  # (instance, n_features)
    steps: int

    @property
    def n_instances(self) -> int:
        return self.feature_probability.shape[0]


def _decay(n_instances: int, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's profile: importance ``100^-t`` over features and feature probability
    ``20^-t`` over instances (``t`` from 0 to 1); shapes ``(1, n)`` and ``(instance, n)``."""
    importance = 100.0 ** -torch.linspace(0, 1, n_features)[None, :]
    probability = 20.0 ** -torch.linspace(0, 1, n_instances)[:, None]
    return importance, probability.expand(n_instances, n_features).contiguous()


def configs(scale: float) -> list[Config]:
    """The five comparisons of issue 5, with steps scaled by ``scale``."""
    grid = 40
    grid_probability = torch.logspace(-2, 0, grid).repeat_interleave(grid)
    grid_importance = torch.logspace(-1, 1, grid).repeat(grid)
    importance_a = 0.9 ** torch.arange(5.0)[None, :]
    probability_a = (20.0 ** -torch.linspace(0, 1, 10))[:, None].expand(10, 5).contiguous()

    def steps(n: int) -> int:
        return max(10, round(n * scale))

    return [
        Config("A n=5 m=2 x10", "relu", 5, 2, importance_a, probability_a, steps(3000)),
        Config("B n=100 m=20 x20", "relu", 100, 20, *_decay(20, 100), steps(1000)),
        Config("C n=1000 m=100 x4", "relu", 1000, 100, *_decay(4, 1000), steps(250)),
        Config(
            "D n=2 m=1 x1600 grid",
            "relu",
            2,
            1,
            torch.stack([torch.ones(grid * grid), grid_importance], dim=1),
            grid_probability[:, None].expand(-1, 2).contiguous(),
            steps(400),
        ),
        Config("E hidden n=100 m=20 x20", "hidden_relu", 100, 20, *_decay(20, 100), steps(1000)),
    ]


@contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Yield a one-element list that receives the peak memory rise in MiB during the block.

    CUDA: PyTorch's peak allocation. CPU: the rise of the process's peak resident set
    (Linux ``/proc``; NaN elsewhere), after returning freed memory to the system.
    """
    result = [float("nan")]
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result[0] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak resident set size
        base = _status_kib("VmRSS")
    except OSError:
        yield result
        return
    yield result
    result[0] = (_status_kib("VmHWM") - base) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


@dataclass
class Run:
    """Timing and outcome of one training run."""

    ms_per_step: float
    memory_mib: float
    model: ToyModel


def run_reference(config: Config, init: ToyModel, steps: int, device: torch.device) -> Run:
    """Train a copy of ``init`` with :func:`reference_recipe`; return it as a ToyModel."""
    importance = init.importance.to(device)
    probability = config.feature_probability.to(device)
    with peak_memory(device) as memory:
        _sync(device)
        start = time.perf_counter()
        W, b = reference_recipe(
            init.W.to(device),
            init.b.to(device),
            importance,
            probability,
            hidden_relu=config.kind == "hidden_relu",
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            weight_decay=WEIGHT_DECAY,
        )
        _sync(device)
        elapsed = time.perf_counter() - start
    model = _copy(init).to(device)
    with torch.no_grad():
        model.W.copy_(W)
        model.b.copy_(b)
    return Run(1e3 * elapsed / steps, memory[0], model)


def run_ours(
    config: Config, init: ToyModel, steps: int, device: torch.device, **options: object
) -> Run:
    """Train a copy of ``init`` with ``superpose.train`` and ``options`` (e.g. a ``precision``;
    its held-out loss is computed by the caller, so ``eval_samples`` is kept to one batch)."""
    model = _copy(init)
    data = _data(config, device)
    with peak_memory(device) as memory:
        result = train(
            model,
            data,
            steps=steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            eval_samples=BATCH_SIZE,
            seed=0,
            device=device,
            progress=False,
            threads=torch.get_num_threads(),  # the reference's threads, not auto_threads'
            **options,
        )
    return Run(1e3 * result.wall_time / steps, memory[0], model)


def _data(config: Config, device: torch.device) -> SparseFeatures:
    return SparseFeatures(config.n_features, config.feature_probability, seed=0, device=device)


def _copy(model: ToyModel) -> ToyModel:
    copy = ToyModel(
        model.kind, model.n_instances, model.n_features, model.n_hidden, model.importance.cpu()
    )
    copy.load_state_dict(model.state_dict())
    return copy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


VARIANTS = {"bf16": {"precision": "bf16"}, "compiled": {"compile": True}}
"""Our trainer's opt-in options timed beside its defaults: bfloat16 products (CPUs with bf16
instructions, CUDA) and ``torch.compile`` of the step (CUDA)."""


def compare(
    config: Config, device: torch.device, reverse: bool, variants: Sequence[str]
) -> dict[str, float]:
    """Time the trainers on ``config`` back to back (the reference recipe, ours, and ours with
    each of ``variants`` from :data:`VARIANTS`; in reverse order if ``reverse``) and score them
    on the same held-out sample; returns the warm-up seconds (3 steps: allocator, kernels,
    compilation), ms/step, memory and mean held-out loss of each, keyed ``ref_*``, ``ours_*``
    and ``<variant>_*``."""
    init = ToyModel(
        config.kind,
        config.n_instances,
        config.n_features,
        config.n_hidden,
        config.importance,
        seed=0,
    )
    runners: list[tuple[str, Callable[..., Run]]] = [("ref", run_reference), ("ours", run_ours)]
    runners += [(name, partial(run_ours, **VARIANTS[name])) for name in variants]
    if reverse:
        runners.reverse()
    row: dict[str, float] = {}
    for name, runner in runners:
        begin = time.perf_counter()
        runner(config, init, 3, device)  # warm-up: allocator, kernels, lazy init, compilation
        warm_up = time.perf_counter() - begin
        run = runner(config, init, config.steps, device)
        loss = evaluate(run.model, _data(config, device), EVAL_SAMPLES, seed=12345)
        row |= {
            f"{name}_warmup_s": warm_up,
            f"{name}_ms": run.ms_per_step,
            f"{name}_mib": run.memory_mib,
            f"{name}_loss": loss.mean().item(),
        }
    return row


def comparison_table(
    device: torch.device, scale: float, variants: Sequence[str], letters: str = "ABCDE"
) -> None:
    """Print the reference-vs-ours table for the configurations named by ``letters`` (of
    A-E); for each of ``variants``, also ours with it: its ms/step, speed-up over the
    reference and held-out loss over ours in float32 (and, compiled, the seconds of its
    3-step warm-up: the compilation)."""
    header = (
        f"{'config':<24} {'steps':>5} {'ref ms':>8} {'ours ms':>8} {'speed-up':>8} "
        f"{'ref MiB':>8} {'ours MiB':>8} {'ref loss':>10} {'ours loss':>10} {'loss ratio':>10}"
    )
    for name in variants:
        header += f" {name + ' ms':>12} {name + ' x':>11} {name + '/fp32 loss':>18}"
        if name == "compiled":
            header += f" {'compile s':>9}"
    print(header)
    print("-" * len(header))
    for index, config in enumerate(configs(scale)):
        if config.label[0] not in letters:
            continue
        row = compare(config, device, reverse=index % 2 == 1, variants=variants)
        line = (
            f"{config.label:<24} {config.steps:>5} {row['ref_ms']:>8.2f} {row['ours_ms']:>8.2f} "
            f"{row['ref_ms'] / row['ours_ms']:>7.1f}x {row['ref_mib']:>8.1f} "
            f"{row['ours_mib']:>8.1f} {row['ref_loss']:>10.5f} {row['ours_loss']:>10.5f} "
            f"{row['ours_loss'] / row['ref_loss']:>10.4f}"
        )
        for name in variants:
            line += (
                f" {row[name + '_ms']:>12.3f} {row['ref_ms'] / row[name + '_ms']:>10.1f}x "
                f"{row[name + '_loss'] / row['ours_loss']:>18.4f}"
            )
            if name == "compiled":
                line += f" {row['compiled_warmup_s']:>9.1f}"
        print(line, flush=True)


def scaling_table(device: torch.device, quick: bool) -> None:
    """Print ms/step and memory of both trainers against n_features (n_hidden = n/10,
    one instance) and against instances (n=100, m=10), feature probability 0.01."""
    points = [(100, 1), (1000, 1), (10_000, 1), (100, 10), (100, 100)]
    if quick:
        points = [(100, 1), (1000, 1), (100, 10)]
    header = (
        f"{'n_features':>10} {'n_hidden':>8} {'instances':>9} {'steps':>5} {'ref ms':>9} "
        f"{'ours ms':>9} {'speed-up':>8} {'ref MiB':>8} {'ours MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for n_features, n_instances in points:
        n_hidden = n_features // 10
        work = n_features * n_hidden * n_instances
        steps = max(3, min(200, round(2e7 / work))) // (4 if quick else 1)
        config = Config(
            "",
            "relu",
            n_features,
            n_hidden,
            torch.ones(1, n_features),
            torch.full((n_instances, n_features), 0.01),
            steps,
        )
        init = ToyModel("relu", n_instances, n_features, n_hidden, seed=0)
        ref = run_reference(config, init, steps, device)
        ours = run_ours(config, init, steps, device)
        print(
            f"{n_features:>10} {n_hidden:>8} {n_instances:>9} {steps:>5} {ref.ms_per_step:>9.2f} "
            f"{ours.ms_per_step:>9.2f} {ref.ms_per_step / ours.ms_per_step:>7.1f}x "
            f"{ref.memory_mib:>8.1f} {ours.memory_mib:>8.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with few steps")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="also time precision='bf16' (auto: on CUDA or a CPU with bf16 instructions)",
    )
    parser.add_argument(
        "--configs",
        default="ABCDE",
        help="which of the configurations A-E to time (the scaling table only with all five)",
    )
    args = parser.parse_args()
    if not args.configs or set(args.configs) - set("ABCDE"):
        parser.error(f"--configs takes letters of ABCDE, got {args.configs!r}")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bf16 = args.bf16 == "on" or (
        args.bf16 == "auto" and (device.type == "cuda" or machine.has_bf16_units())
    )
    variants = ["bf16"] * bf16 + ["compiled"] * (device.type == "cuda")
    torch.manual_seed(0)
    print(machine.header("superpose benchmark", device))
    print(f"batch {BATCH_SIZE}, lr {LR}, AdamW wd {WEIGHT_DECAY}\n")
    start = time.perf_counter()
    comparison_table(device, 0.02 if args.quick else 1.0, variants, args.configs)
    if set(args.configs) == set("ABCDE"):
        print()
        scaling_table(device, args.quick)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s | load {machine.load_average():.2f} at the end")


if __name__ == "__main__":
    main()
