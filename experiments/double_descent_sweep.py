"""Double descent over the data-set size T and the hidden dimension m (Henighan et al. 2023).

The setting of ``double-descent`` (the tied ReLU-output model, unit-norm sparse samples,
full-batch AdamW with weight decay 1e-2, a warm-up over 5 % of the steps, then cosine decay)
trained for every pair of :data:`HIDDEN_DIMS` and data-set sizes ``T``, to see where the
test-loss bump sits as ``m`` grows. The default (:data:`DEFAULT`) is 10× smaller again than
``double-descent``'s scaled size: ``n = 100``, ``S = 0.95`` (5 active features per sample),
``T`` from 5 to 1,000, 5,000 steps (the tests' setting), so the 48 models fit a few minutes
on 2 cores. ``--full`` (:data:`FULL`) runs it at ``double-descent``'s scaled size
(``n = 1,000``, ``S = 0.99``, ``T`` up to 5,000, 50,000 steps: for a GPU).

Each ``(m, T)`` is one batched model whose instances are seeds, trained by
``double-descent``'s ``train_dataset_size``: every ``m`` sees the same data sets for a given
``T`` (seeded with ``T``), and instance ``k`` is initialised with seed ``k``. The models train
concurrently on two threads (one torch thread each), the most expensive first.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from superpose import registry
from superpose.io import save_json, save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads

HIDDEN_DIMS = (2, 3, 4, 6, 8, 10)
DEFAULT = {
    "n_features": 100,
    "feature_probability": 0.05,
    "dataset_sizes": (5, 10, 20, 50, 100, 200, 500, 1000),
    "steps": 5_000,
    "n_seeds": 4,
}
FULL = {
    "n_features": 1_000,
    "feature_probability": 0.01,
    "dataset_sizes": (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    "steps": 50_000,
    "n_seeds": 4,
}
QUICK = {
    "n_features": 40,
    "feature_probability": 0.1,
    "dataset_sizes": (4, 40, 200),
    "steps": 200,
    "n_seeds": 2,
}
WARMUP_FRACTION = 0.05
"""Warm-up steps as a fraction of the run (the paper's 2,500 of 50,000)."""
WORKERS = 2


def bump(test_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The double-descent bump of each test-loss curve ``test_loss: (curve, T)`` over
    increasing ``T``: the size index where the loss rises most above its lowest value at any
    smaller ``T``, and that rise, each ``(curve,)``. A curve that never rises gets index -1 and
    height 0 (the small-``T`` loss itself is not a bump: the loss first falls, then rises)."""
    lowest_before = torch.cummin(test_loss, dim=-1).values[..., :-1]
    rise = test_loss[..., 1:] - lowest_before  # (curve, T - 1)
    height, index = rise.max(-1)
    rises = height > 0
    return torch.where(rises, index + 1, -1), torch.where(rises, height, 0.0)


def main(results: Path, device: str = "cpu", quick: bool = False, full: bool = False) -> None:
    """Train every ``(m, T)`` and store, in ``results/double_descent_sweep``:
    ``sweep.safetensors`` (``hidden_dims: (m,)``, ``dataset_sizes: (T,)``; shaped
    ``(m, T, seed)``: ``test_loss``, ``train_loss``, ``max_data_dimensionality`` and
    ``max_feature_dimensionality``; ``peak_index`` and ``peak_height: (m,)``, the :func:`bump`
    of each ``m``'s seed-mean test loss; the config as metadata),
    ``losses.csv`` (one row per ``m``, ``T`` and seed) and ``config.json``. ``full``:
    ``double-descent``'s scaled size (for a GPU)."""
    setting = QUICK if quick else FULL if full else DEFAULT
    hidden_dims = (2, 4) if quick else HIDDEN_DIMS
    sizes = setting["dataset_sizes"]
    steps = setting["steps"]
    warmup = round(WARMUP_FRACTION * steps)
    double_descent = registry.load("experiments", "double-descent")
    start = time.perf_counter()

    def run(cell: tuple[int, int]) -> dict[str, torch.Tensor]:
        m, T = cell
        begun = time.perf_counter()
        out = double_descent.train_dataset_size(
            T,
            setting["n_features"],
            setting["feature_probability"],
            n_hidden=m,
            n_seeds=setting["n_seeds"],
            steps=steps,
            warmup_steps=warmup,
            device=device,
        )
        print(f"m={m} T={T}: {time.perf_counter() - begun:.0f} s", flush=True)
        return {
            "test_loss": out["test_loss"],
            "train_loss": out["train_loss"],
            "max_data_dimensionality": out["data_dimensionality"].amax(-1),
            "max_feature_dimensionality": out["feature_dimensionality"].amax(-1),
        }

    cells = sorted(((m, T) for m in hidden_dims for T in sizes), key=lambda c: -c[0] * c[1])
    with cpu_threads(1), ThreadPoolExecutor(WORKERS) as pool:
        runs = dict(zip(cells, pool.map(run, cells), strict=True))
    seconds = time.perf_counter() - start
    names = next(iter(runs.values())).keys()
    stored = {
        name: torch.stack([torch.stack([runs[m, T][name] for T in sizes]) for m in hidden_dims])
        for name in names
    }
    peak, height = bump(stored["test_loss"].mean(-1))
    stored |= {
        "hidden_dims": torch.tensor(hidden_dims),
        "dataset_sizes": torch.tensor(sizes),
        "peak_index": peak,
        "peak_height": height,
    }
    config = {
        **{key: list(value) if key == "dataset_sizes" else value for key, value in setting.items()},
        "hidden_dims": list(hidden_dims),
        **double_descent.OPTIMIZER,
        "warmup_steps": warmup,
        "eval_samples": double_descent.EVAL_SAMPLES,
        "normalize": True,
        "device": device,
        "quick": quick,
        "full": full,
        "seconds": seconds,
    }
    folder = Path(results) / "double_descent_sweep"
    save_tensors(stored, folder / "sweep.safetensors", metadata={"config": config})
    save_json(config, folder / "config.json")
    save_rows(
        [
            {"n_hidden": m, "n_samples": T, "seed": k}
            | {name: float(runs[m, T][name][k]) for name in names}
            for m in hidden_dims
            for T in sizes
            for k in range(setting["n_seeds"])
        ],
        folder / "losses.csv",
    )
    print(f"double descent sweep: {len(cells)} (m, T) cells in {seconds:.0f} s")


if __name__ == "__main__":
    experiment_script(main, __doc__, {"full": "double-descent's scaled size, n=1,000 (a GPU)"})
