"""Benchmark: ``superpose.sae`` against SAELens's synthetic trainer and scikit-learn.

Run from the repository root (the peers come from the optional ``compare`` extra,
``pip install -e .[compare]``; a missing peer is skipped with a note)::

    python experiments/sae_benchmark.py              # 2M samples per SAE, several minutes
    python experiments/sae_benchmark.py --quick      # smoke run, about a minute
    python experiments/sae_benchmark.py --samples 500000 --repeats 2 --sklearn-samples 32768

The world (SAELens's toy setting): ``n_features`` ground-truth features with fixed unit
directions in ``d_model`` dimensions; feature ``i`` fires with a Zipf probability (exponent
0.5, from 0.3 down to 0.01, SAELens's ``zipfian_firing_probabilities``) and magnitude 1; an
activation is the sum of the firing features' directions (no bias). Every method trains on
fresh samples of that world with the same sample budget and batch size:

* ``saelens``: ``sae_lens.synthetic.train_toy_sae`` with its defaults (Adam lr 3e-4, betas
  0.9/0.999, constant schedule, batch 1,024) on a ``BatchTopKTrainingSAE`` (width, ``k``,
  otherwise SAELens defaults, AuxK included); its ``FeatureDictionary`` holds the world's
  directions.
* ``sklearn``: ``MiniBatchDictionaryLearning`` fed by ``partial_fit`` on the same stream,
  one mini-batch per call: coordinate-descent Lasso codes with non-negative coefficients
  while fitting (``alpha`` 1: with the true dictionary such a code has 8.5 non-zeros on
  average, about ``k``; ``lasso_lars`` gives the same codes, slower), and orthogonal
  matching pursuit with exactly ``k`` non-zeros (``sparse_encode(..., algorithm="omp",
  n_nonzero_coefs=k)``; the learner's own ``transform`` refuses OMP with positive codes) to
  encode, the sparse-coding counterpart of a TopK SAE. It is far slower, so it gets its own
  (smaller) budget, ``--sklearn-samples``; compare its samples/s, not its wall time.
* ``ours``: ``superpose.sae`` BatchTopK (``method="auto"``: its fast path), one SAE, and
  ``grid``: ``--grid`` SAEs trained together on shared batches. SAELens trains one SAE per
  run, so its rate for the grid is its one-SAE rate (``--grid`` runs one after another take
  ``--grid`` times as long): that is the ``saelens`` row, and the grid ratio divides by it.
  (0.4's ``ours-bf16`` and ``grid-bf16``, a bfloat16 selection product, measured slower than
  float32 on every CPU tried and were dropped with it.)

Every dictionary is scored by the same code on the same held-out sample: MCC (one-to-one
Hungarian matching of decoder rows to true directions, mean |cosine|) by
``superpose.sae.feature_recovery`` (SAELens's ``mean_correlation_coefficient`` before
``superpose.sae`` exists), explained variance ``1 - E|x - x_hat|^2 / Var(x)``, dead latents
(never non-zero on the held-out sample), and L0; codes are computed on held-out chunks of
:data:`EVAL_BATCH` (a BatchTopK SAE keeps ``k`` times the chunk size per chunk). SAELens's
own evaluation of its SAE is printed as a cross-check of the scorer. Repeats interleave the
methods, alternating order.
Seeds: ``--seed`` draws the directions, ``--seed + 1`` every SAE's initialisation and training
stream, ``--seed + 2`` the held-out sample (an SAE initialised from the directions' seed would
start at the true directions: unit rows from the same random numbers). All methods run in
float32 on ``--threads`` torch threads (default 1); scikit-learn's
BLAS is limited to the same count. One thread is the default because on a 2-core machine
with a little other load, two threads made ``ours`` 30 times slower (1,500 against 44,000
samples/s at load 1-3; its step is a few hundred small ops, each a parallel region that
waits for the second core) while SAELens's few large products lose less. Each row records
the 1-minute load average at its end, so that runs on a shared machine can be judged; the
last lines are the table in markdown.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from superpose import machine

N_FEATURES = 1024
D_MODEL = 256
WIDTH = 1024
K = 8
ZIPF_EXPONENT = 0.5
MAX_PROBABILITY = 0.3
MIN_PROBABILITY = 0.01
BATCH_SIZE = 1024
LR = 3e-4
SKLEARN_ALPHA = 1.0
EVAL_BATCH = 4096

Codec = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Maps held-out activations ``(batch, d_model)`` to latent codes ``(instance, batch, width)``
and reconstructions ``(instance, batch, d_model)``."""


def header(args: argparse.Namespace) -> str:
    """The run's first lines: the machine (:func:`superpose.machine.header`), then the
    benchmark's settings."""
    return (
        f"{machine.header('superpose SAE benchmark', args.device)}\n"
        f"{N_FEATURES} features (Zipf {ZIPF_EXPONENT}, p {MAX_PROBABILITY}..{MIN_PROBABILITY},"
        f" magnitude 1) in {D_MODEL} dims | BatchTopK width {WIDTH}, k {K} | batch "
        f"{BATCH_SIZE}, lr {LR} | {args.samples:,} samples per SAE "
        f"(sklearn {args.sklearn_samples:,}), eval {args.eval_samples:,}"
    )


@dataclass(frozen=True)
class World:
    """The benchmark's ground truth.

    Attributes:
        directions: ``(n_features, d_model)`` unit feature directions.
        probability: ``(n_features,)`` firing probabilities.
        origin: where the directions came from (printed).
        ours: the ``superpose.sae`` source of the same world, or None before it exists.
    """

    directions: torch.Tensor
    probability: torch.Tensor
    origin: str
    ours: object | None


def draw(world: World, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Activations ``(batch, d_model)``: each feature fires with its probability, value 1."""
    firing = torch.rand(batch_size, world.probability.numel(), generator=generator)
    return (firing < world.probability).float() @ world.directions


@dataclass
class Outcome:
    """One trained method: what it cost and what it learned."""

    method: str
    samples: int
    n_sae: int
    wall: float
    W_dec: torch.Tensor  # (instance, width, d_model)
    codec: Codec
    note: str = ""


@dataclass
class Score:
    """Held-out scores, one value per SAE (instance)."""

    mcc: np.ndarray
    explained_variance: np.ndarray
    dead_latents: np.ndarray
    l0: np.ndarray


@torch.no_grad()
def score(outcome: Outcome, world: World, held_out: torch.Tensor) -> Score:
    """Score ``outcome`` on ``held_out`` ``(n, d_model)`` against ``world.directions``."""
    n_sae, width = outcome.W_dec.shape[:2]
    fired = torch.zeros(n_sae, width, dtype=torch.bool)
    active = torch.zeros(n_sae, dtype=torch.float64)
    residual = torch.zeros(n_sae, dtype=torch.float64)
    for chunk in held_out.split(EVAL_BATCH):
        codes, reconstruction = outcome.codec(chunk)
        fired |= (codes != 0).any(dim=1)
        active += (codes != 0).sum(dim=(1, 2)).double()
        residual += (reconstruction - chunk).double().pow(2).sum(dim=(1, 2))
    x = held_out.double()
    variance = (x - x.mean(dim=0)).pow(2).sum()
    return Score(
        mcc=mcc(outcome.W_dec, world.directions),
        explained_variance=(1 - residual / variance).numpy(),
        dead_latents=(~fired).sum(dim=1).numpy(),
        l0=(active / len(held_out)).numpy(),
    )


def mcc(W_dec: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """MCC of each dictionary ``W_dec: (instance, width, d_model)`` against ``directions``:
    ``superpose.sae.feature_recovery`` when it exists, else SAELens's implementation."""
    try:
        from superpose.sae import feature_recovery
    except ImportError:
        from sae_lens.synthetic import mean_correlation_coefficient

        return np.array([mean_correlation_coefficient(w, directions) for w in W_dec])
    return np.asarray(feature_recovery(W_dec, directions)["mcc"], dtype=float)


# --- the world ------------------------------------------------------------------------------


def zipf_profile() -> torch.Tensor:
    """``(n_features,)`` firing probabilities: superpose's Zipf profile, else SAELens's."""
    try:
        from superpose.data import zipf_probability
    except ImportError:
        from sae_lens.synthetic import zipfian_firing_probabilities

        return zipfian_firing_probabilities(
            N_FEATURES, ZIPF_EXPONENT, MAX_PROBABILITY, MIN_PROBABILITY
        )
    return torch.as_tensor(
        zipf_probability(N_FEATURES, ZIPF_EXPONENT, MAX_PROBABILITY, MIN_PROBABILITY),
        dtype=torch.float32,
    ).reshape(N_FEATURES)


def make_world(seed: int) -> World:
    """The world of ``seed``: ``superpose.sae.Superposed``'s orthogonalized directions when it
    exists, else SAELens's default ``FeatureDictionary`` (random unit rows, then its
    orthogonalization: 200 Adam steps on the squared off-diagonal cosines)."""
    probability = zipf_profile()
    ours = ours_source(probability, seed)
    if ours is not None:
        directions = ours.directions.detach().cpu().float()
        return World(directions, probability, "superpose.sae.Superposed", ours)
    from sae_lens.synthetic import FeatureDictionary

    dictionary = FeatureDictionary(N_FEATURES, D_MODEL, seed=seed)
    directions = dictionary.feature_vectors.detach().clone()
    return World(directions, probability, "sae_lens FeatureDictionary (default init)", None)


# --- SAELens --------------------------------------------------------------------------------


def run_saelens(world: World, samples: int, seed: int, device: str) -> tuple[Outcome, str]:
    """Train SAELens's BatchTopK SAE with ``train_toy_sae``'s defaults on the world; returns the
    outcome and SAELens's own evaluation line (the scorer's cross-check)."""
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.synthetic import (
        ActivationGenerator,
        FeatureDictionary,
        eval_sae_on_synthetic_data,
        train_toy_sae,
    )

    torch.manual_seed(seed)
    dictionary = FeatureDictionary(N_FEATURES, D_MODEL, initializer=None, device=device)
    dictionary.feature_vectors.data.copy_(world.directions)
    generator = ActivationGenerator(N_FEATURES, world.probability, device=device)
    config = BatchTopKTrainingSAEConfig(d_in=D_MODEL, d_sae=WIDTH, k=K, device=device)
    sae = BatchTopKTrainingSAE(config)
    start = time.perf_counter()
    train_toy_sae(
        sae, dictionary, generator, training_samples=samples, batch_size=BATCH_SIZE, lr=LR,
        device=device,
    )  # fmt: skip
    wall = time.perf_counter() - start
    own = eval_sae_on_synthetic_data(sae, dictionary, generator, num_samples=32768)
    check = (
        f"SAELens's own eval of its SAE: MCC {own.mcc:.3f}, explained variance "
        f"{own.explained_variance:.3f}, dead {own.dead_latents}, L0 {own.sae_l0:.1f}"
    )
    sae.eval()

    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = sae.encode(x.to(device))
        return codes[None].cpu(), sae.decode(codes)[None].cpu()

    W_dec = sae.W_dec.detach().cpu()[None]
    return Outcome("saelens", samples, 1, wall, W_dec, codec), check


# --- scikit-learn ---------------------------------------------------------------------------


def run_sklearn(world: World, samples: int, seed: int) -> Outcome:
    """Fit ``MiniBatchDictionaryLearning`` by ``partial_fit`` on fresh batches of the world."""
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    generator = torch.Generator().manual_seed(seed)
    init = torch.randn(WIDTH, D_MODEL, generator=generator)
    learner = MiniBatchDictionaryLearning(
        n_components=WIDTH,
        alpha=SKLEARN_ALPHA,
        fit_algorithm="cd",
        batch_size=BATCH_SIZE,
        positive_code=True,
        dict_init=(init / init.norm(dim=1, keepdim=True)).numpy(),
        random_state=seed,
    )
    with threadpool_limits(torch.get_num_threads()), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Lasso's tolerance, each batch
        start = time.perf_counter()
        for _ in range(max(1, samples // BATCH_SIZE)):
            learner.partial_fit(draw(world, BATCH_SIZE, generator).numpy())
        wall = time.perf_counter() - start
    components = torch.as_tensor(learner.components_, dtype=torch.float32)

    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with threadpool_limits(torch.get_num_threads()):
            codes = sparse_encode(x.numpy(), components.numpy(), algorithm="omp", n_nonzero_coefs=K)
        codes = torch.as_tensor(codes, dtype=torch.float32)
        return codes[None], (codes @ components)[None]

    fitted = max(1, samples // BATCH_SIZE) * BATCH_SIZE
    note = f"alpha {SKLEARN_ALPHA}, OMP k={K} to encode"
    return Outcome("sklearn", fitted, 1, wall, components[None], codec, note)


# --- ours (superpose.sae; the only part that knows its API) ----------------------------------


def ours_source(probability: torch.Tensor, seed: int) -> object | None:
    """``superpose.sae.Superposed`` on the benchmark's features, or None before it exists."""
    try:
        from superpose.sae import Superposed
    except ImportError:
        return None
    from superpose import SparseFeatures

    features = SparseFeatures(N_FEATURES, probability[None, :], magnitude="constant", seed=seed + 1)
    return Superposed(features, d_model=D_MODEL, orthogonal=True, seed=seed)


def run_ours(world: World, samples: int, n_sae: int, seed: int, device: str) -> Outcome:
    """Train ``n_sae`` BatchTopK SAEs together with ``superpose.sae.train``."""
    from superpose.sae import SAE, train

    sae = SAE("batchtopk", n_instances=n_sae, d_in=D_MODEL, d_sae=WIDTH, k=K, seed=seed)
    start = time.perf_counter()
    train(
        sae, world.ours, steps=samples // BATCH_SIZE, batch_size=BATCH_SIZE, lr=LR, seed=seed,
        device=device, progress=False, method="auto",
    )  # fmt: skip
    wall = time.perf_counter() - start

    @torch.no_grad()
    def codec(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = sae.encode(x.to(device).expand(n_sae, *x.shape))
        return codes.cpu(), sae.decode(codes).cpu()

    W_dec = sae.W_dec.detach().cpu().float()
    name = "ours" if n_sae == 1 else f"ours x{n_sae}"
    return Outcome(name, (samples // BATCH_SIZE) * BATCH_SIZE, n_sae, wall, W_dec, codec)


# --- the table ------------------------------------------------------------------------------


def schedule(methods: Sequence[str], repeats: int) -> list[str]:
    """Run order: every method once per repeat, the order reversed on odd repeats
    (A B C, C B A, ...), so drifting machine load hits every method alike."""
    order: list[str] = []
    for repeat in range(repeats):
        order += list(methods) if repeat % 2 == 0 else list(reversed(methods))
    return order


COLUMNS = ("method", "samples", "wall s", "samples/s", "vs SAEL", "MCC", "EV", "dead", "L0")
COLUMNS += ("load",)


def cells(outcome: Outcome, result: Score, reference: float | None, load: float) -> list[str]:
    """One row's :data:`COLUMNS`; ``reference`` is SAELens's samples/s (None: no ratio),
    ``load`` the load average at the end of the run."""
    rate = outcome.samples * outcome.n_sae / outcome.wall
    return [
        outcome.method,
        f"{outcome.samples:,}",
        f"{outcome.wall:.1f}",
        f"{rate:,.0f}",
        f"{rate / reference:.2f}x" if reference else "-",
        f"{result.mcc.mean():.3f}",
        f"{result.explained_variance.mean():.3f}",
        f"{result.dead_latents.mean():.0f}",
        f"{result.l0.mean():.1f}",
        f"{load:.1f}",
    ]


def row(values: Sequence[str], note: str = "") -> str:
    """One aligned text line of :data:`COLUMNS`' values."""
    widths = (12, 10, 8, 10, 8, 6, 6, 6, 6, 5)
    text = " ".join(
        f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
        for i, (v, w) in enumerate(zip(values, widths, strict=True))
    )
    return f"{text}  {note}".rstrip()


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """The table in markdown (README-ready), :data:`COLUMNS` as its header."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(values) + " |" for values in rows])


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    parser.add_argument("--samples", type=int, default=2_000_000, help="per SAE")
    parser.add_argument("--sklearn-samples", type=int, default=65_536)
    parser.add_argument("--eval-samples", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--grid", type=int, default=8, help="SAEs trained together by ours")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (all methods)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default="saelens,sklearn,ours,grid",
        help="comma-separated subset of saelens,sklearn,ours,grid",
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.sklearn_samples, args.eval_samples = 16_384, 2_048, 8_192
    torch.set_num_threads(args.threads)
    print(header(args), flush=True)
    world = make_world(args.seed)
    print(f"directions: {world.origin}; mean true L0 {world.probability.sum().item():.2f}")
    held_out = draw(world, args.eval_samples, torch.Generator().manual_seed(args.seed + 2))
    seed = args.seed + 1  # SAEs and training streams: never the directions' seed

    runners: dict[str, Callable[[], Outcome]] = {
        "sklearn": lambda: run_sklearn(world, args.sklearn_samples, seed),
        "ours": lambda: run_ours(world, args.samples, 1, seed, args.device),
        "grid": lambda: run_ours(world, args.samples, args.grid, seed, args.device),
    }
    methods = [name for name in args.methods.split(",") if name]
    if world.ours is None:
        print("superpose.sae is not available: skipping ours and grid")
        methods = [name for name in methods if name not in runners or name == "sklearn"]
    table = row(COLUMNS)
    lines, rows, saelens_rate = [table, "-" * len(table)], [], None
    for name in schedule(methods, args.repeats):
        if name == "saelens":
            outcome, check = run_saelens(world, args.samples, seed, args.device)
            saelens_rate = outcome.samples / outcome.wall
            print(check, flush=True)
        else:
            outcome = runners[name]()
        load = machine.load_average()
        rows.append(cells(outcome, score(outcome, world, held_out), saelens_rate, load))
        lines.append(row(rows[-1], outcome.note))
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    print("\n" + markdown(rows) + "\n")
    print(
        "samples/s of a grid counts every SAE's samples (aggregate); 'vs SAEL' divides by the "
        "latest SAELens one-SAE rate, which is also its aggregate rate for runs one after "
        "another. EV: explained variance; dead: latents never active on the held-out sample; "
        "load: 1-minute load average at the end of the run."
    )


if __name__ == "__main__":
    cli()
