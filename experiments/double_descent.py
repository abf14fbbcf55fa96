"""Memorization and double descent (Henighan et al. 2023): ReLU-output models on T samples.

The paper's setting: the tied ReLU-output model ``x' = ReLU(WᵀW x + b)`` with ``m = 2`` hidden
dimensions, ``n`` features of importance 1, each zero with probability ``S`` and otherwise
U[0, 1], every sample rescaled to unit norm; finite training sets of ``T`` samples, trained full
batch with AdamW (weight decay 1e-2) for 50,000 steps, a linear warm-up over 2,500 steps to
lr 1e-3, then cosine decay to 0. The test loss is measured on fresh samples of the same
(rescaled) distribution. The paper uses ``n = 10,000``, ``S = 0.999`` (``--full``, for a GPU);
the default is the 10× smaller replication (``n = 1,000``, ``S = 0.99``, ARENA's ``T`` list).

Each ``T`` is one batched model whose instances are seeds: instance ``k`` has its own data set
(drawn from the data stream seeded with ``T``) and its own initialisation (seed ``k``). The
models of different ``T`` train concurrently on two threads (one torch thread each).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from superpose import SparseFeatures, ToyModel, analysis, train
from superpose.io import save_json, save_rows, save_tensors
from superpose.runtime import cpu_threads

N_HIDDEN = 2
SCALED = {"n_features": 1_000, "feature_probability": 0.01}
FULL = {"n_features": 10_000, "feature_probability": 0.001}
DATASET_SIZES = (3, 5, 6, 8, 10, 15, 30, 50, 100, 200, 500, 1000, 2000)
N_SEEDS = 2
OPTIMIZER = {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 2_500, "weight_decay": 1e-2}
STEPS = 50_000
EVAL_SAMPLES = 16_384
WORKERS = 2


def train_dataset_size(
    n_samples: int,
    n_features: int,
    feature_probability: float,
    *,
    n_hidden: int = N_HIDDEN,
    n_seeds: int = N_SEEDS,
    steps: int = STEPS,
    warmup_steps: int = OPTIMIZER["warmup_steps"],
    lr: float = OPTIMIZER["lr"],
    weight_decay: float = OPTIMIZER["weight_decay"],
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Train ``n_seeds`` instances on their own data sets of ``n_samples`` unit-norm samples.

    ``steps``, ``lr`` and ``weight_decay`` default to the paper's schedule; they are the levers
    that move the middle regime's test-loss bump (the README's double-descent row gives what
    each measured).

    Returns CPU tensors: ``W: (seed, n_hidden, n_features)``, ``b: (seed, n_features)``,
    ``hidden: (seed, n_samples, n_hidden)`` the training points' hidden vectors ``W x``,
    ``data_dimensionality: (seed, n_samples)``, ``feature_dimensionality: (seed, n_features)``,
    ``train_loss`` and ``test_loss: (seed,)`` (the test loss on fresh unit-norm samples).
    """
    data = SparseFeatures(
        n_features,
        feature_probability,
        n_samples=n_samples,
        n_instances=n_seeds,
        normalize=True,
        seed=n_samples,
        device=device,
    )
    model = ToyModel("relu", n_seeds, n_features, n_hidden, seed=list(range(n_seeds)))
    options = {**OPTIMIZER, "warmup_steps": warmup_steps, "lr": lr, "weight_decay": weight_decay}
    result = train(
        model,
        data,
        steps=steps,
        batch_size=None,
        log_every=max(1, steps // 50),
        eval_samples=EVAL_SAMPLES,
        device=device,
        progress=False,
        **options,
    )
    with torch.no_grad():
        train_loss = model.loss(data.dataset)
        hidden = analysis.hidden_vectors(model.W, data.dataset)
    return {
        "W": model.W.detach().cpu(),
        "b": model.b.detach().cpu(),
        "hidden": hidden.cpu(),
        "data_dimensionality": analysis.data_dimensionality(hidden).cpu(),
        "feature_dimensionality": analysis.feature_dimensionality(model.W).cpu(),
        "train_loss": train_loss.cpu(),
        "test_loss": result.loss,
    }


def main(results: Path, device: str = "cpu", quick: bool = False, full: bool = False) -> None:
    """Train every ``T`` of :data:`DATASET_SIZES` and store, in ``results/double_descent``:
    ``runs.safetensors`` (per ``T`` the tensors of :func:`train_dataset_size` under keys
    ``"<name>/<T>"``; ``dataset_sizes``; ``test_loss`` and ``train_loss`` ``(T, seed)``; the
    config as metadata), ``losses.csv`` (one row per ``T`` and seed) and ``config.json``.
    ``full``: the paper's size (for a GPU)."""
    setting = FULL if full else SCALED
    sizes = (3, 10, 100, 300) if quick else DATASET_SIZES
    steps, warmup = (300, 30) if quick else (STEPS, OPTIMIZER["warmup_steps"])
    n_features = 200 if quick else setting["n_features"]
    start = time.perf_counter()

    def run(n_samples: int) -> dict[str, torch.Tensor]:
        begun = time.perf_counter()
        out = train_dataset_size(
            n_samples,
            n_features,
            setting["feature_probability"],
            n_seeds=N_SEEDS,
            steps=steps,
            warmup_steps=warmup,
            device=device,
        )
        print(f"T={n_samples}: {time.perf_counter() - begun:.0f} s", flush=True)
        return out

    order = sorted(sizes, reverse=True)  # largest first: the two workers finish together
    with cpu_threads(1), ThreadPoolExecutor(WORKERS) as pool:
        runs = dict(zip(order, pool.map(run, order), strict=True))
    seconds = time.perf_counter() - start
    stored: dict[str, object] = {"dataset_sizes": torch.tensor(sizes)}
    for name in ("test_loss", "train_loss"):
        stored[name] = torch.stack([runs[T][name] for T in sizes])
    for T in sizes:
        stored.update({f"{name}/{T}": value for name, value in runs[T].items()})
    config = {
        "n_features": n_features,
        "n_hidden": N_HIDDEN,
        "feature_probability": setting["feature_probability"],
        "dataset_sizes": list(sizes),
        "n_seeds": N_SEEDS,
        "steps": steps,
        **OPTIMIZER,
        "warmup_steps": warmup,
        "eval_samples": EVAL_SAMPLES,
        "normalize": True,
        "device": device,
        "quick": quick,
        "full": full,
        "seconds": seconds,
    }
    folder = Path(results) / "double_descent"
    save_tensors(stored, folder / "runs.safetensors", metadata={"config": config})
    save_json(config, folder / "config.json")
    save_rows(
        [
            {
                "n_samples": T,
                "seed": k,
                "test_loss": float(runs[T]["test_loss"][k]),
                "train_loss": float(runs[T]["train_loss"][k]),
                "max_data_dimensionality": float(runs[T]["data_dimensionality"][k].max()),
                "max_feature_dimensionality": float(runs[T]["feature_dimensionality"][k].max()),
            }
            for T in sizes
            for k in range(N_SEEDS)
        ],
        folder / "losses.csv",
    )
    print(f"double descent: {len(sizes)} data-set sizes × {N_SEEDS} seeds in {seconds:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a small smoke-test run")
    parser.add_argument(
        "--full", action="store_true", help="the paper's size, n=10,000, S=0.999 (for a GPU)"
    )
    args = parser.parse_args()
    main(args.results, device=args.device, quick=args.quick, full=args.full)
