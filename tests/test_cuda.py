"""The CUDA paths (skipped without a GPU): the recorded training step, and every trainer on a
CUDA device. Tolerances were measured on an NVIDIA H100 (torch 2.11, CUDA 13)."""

from __future__ import annotations

import pytest
import torch

from superpose import SparseFeatures, ToyModel, sae, train
from superpose.circuits import AttnOnlyTransformer, ZipfMarkovChain
from superpose.circuits import train as train_circuits
from superpose.cuda_graph import WARMUP_STEPS, CudaGraphStep
from superpose.sweep.streams import CellStreams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_recorded_step_draws_what_eager_steps_draw_from_a_seeded_generator():
    calls = WARMUP_STEPS + 5
    eager_generator = torch.Generator("cuda").manual_seed(7)
    eager = [torch.rand(6, generator=eager_generator, device="cuda") for _ in range(calls)]
    generator = torch.Generator("cuda").manual_seed(7)
    step = CudaGraphStep(
        lambda: torch.rand(6, generator=generator, device="cuda") * 1.0, [generator]
    )
    recorded = [step().clone() for _ in range(calls)]
    for k in range(calls):
        assert torch.equal(recorded[k], eager[k]), k
    assert not torch.equal(recorded[-1], recorded[-2])  # replays advance the generator


def test_recorded_step_follows_the_global_cuda_generator():
    calls = WARMUP_STEPS + 4
    torch.cuda.manual_seed(3)
    eager = [torch.rand(4, device="cuda") for _ in range(calls)]
    torch.cuda.manual_seed(3)
    step = CudaGraphStep(
        lambda: torch.rand(4, device="cuda") + 0.0, [torch.cuda.default_generators[0]]
    )
    recorded = [step().clone() for _ in range(calls)]
    assert all(torch.equal(a, b) for a, b in zip(recorded, eager, strict=True))


def _pair(kind: str, **data_options: object) -> tuple[ToyModel, ToyModel, SparseFeatures]:
    model = ToyModel(
        kind, n_instances=4, n_features=20, n_hidden=5, importance=0.9 ** torch.arange(20.0), seed=0
    )
    twin = ToyModel(
        kind, n_instances=4, n_features=20, n_hidden=5, importance=0.9 ** torch.arange(20.0), seed=0
    )
    data = SparseFeatures(20, [[0.3], [0.1], [0.03], [0.01]], seed=1, device="cuda", **data_options)
    return model, twin, data


@pytest.mark.parametrize("kind", ["relu", "hidden_relu", "abs", "linear"])
def test_recorded_fast_training_follows_the_autograd_reference(kind):
    model, twin, data = _pair(kind)
    options = dict(
        steps=300,
        batch_size=256,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=20,
        log_every=10,
        seed=5,
        device="cuda",
        progress=False,
    )
    fast = train(model, data, method="fast", **options)
    reference = train(twin, data, method="reference", **options)
    assert fast.method == "fast" and reference.method == "reference"
    # fresh batches every replay: the interval means track the reference's step for step
    torch.testing.assert_close(fast.history_loss, reference.history_loss, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(model.W, twin.W, rtol=0, atol=2e-3)


def test_recorded_training_on_a_finite_normalized_set_full_batch():
    model, twin, _ = _pair("relu")
    data = SparseFeatures(
        20, 0.1, n_samples=50, n_instances=4, normalize=True, seed=2, device="cuda"
    )
    options = dict(
        steps=200,
        batch_size=None,
        lr=1e-2,
        weight_decay=1e-2,
        log_every=20,
        device="cuda",
        progress=False,
    )
    fast = train(model, data, method="fast", **options)
    reference = train(twin, data, method="reference", **options)
    torch.testing.assert_close(fast.history_loss, reference.history_loss, rtol=2e-3, atol=1e-6)


def test_recorded_training_is_repeatable_under_torch_manual_seed():
    results = []
    for _ in range(2):
        torch.manual_seed(11)
        model = ToyModel("relu", 3, 10, 3)
        data = SparseFeatures(10, 0.05, device="cuda")
        results.append(train(model, data, steps=50, device="cuda", progress=False).history_loss)
        results.append(model.W.detach().clone())
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[3])


def test_sweep_streams_advance_under_the_recorded_step():
    data = CellStreams(torch.full((3, 4), 0.5), [0, 0, 1], device="cuda")
    step = CudaGraphStep(lambda: data.draw(8, 3) + 0.0, data.generators())
    batches = [step().clone() for _ in range(WARMUP_STEPS + 3)]
    assert not torch.equal(batches[-1], batches[-2])
    eager = CellStreams(torch.full((3, 4), 0.5), [0, 0, 1], device="cuda")
    expected = [eager.draw(8, 3) for _ in batches]
    assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


@pytest.mark.parametrize("kind", ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
def test_sae_trains_and_scores_on_cuda(kind):
    features = SparseFeatures(32, 0.05, seed=0, device="cuda")
    source = sae.Superposed(features, d_model=16, seed=0)
    options = {"k": 4} if kind in ("topk", "batchtopk", "matryoshka") else {}
    model = sae.SAE(kind, n_instances=2, d_in=16, d_sae=64, seed=1, **options)
    resampling = {"resample_every": 50, "dead_window": 256} if kind == "relu" else {}
    sae.train(model, source, steps=200, batch_size=256, device="cuda", progress=False, **resampling)
    scores = sae.evaluate(model, source, n_samples=4096)
    assert model.W_dec.device.type == "cuda"
    assert scores["mmcs"].between(0.3, 1.0).all()
    assert scores["explained_variance"].gt(0.0).all()


def test_circuits_train_on_cuda():
    task = ZipfMarkovChain(32, 8, seed=0)
    model = AttnOnlyTransformer(1, 8, 1, 32, 8, seed=0)
    result = train_circuits(model, task, steps=50, seed=0, device="cuda", progress=False)
    assert result.device.startswith("cuda")
    assert torch.isfinite(result.history_loss).all()
    assert result.history_loss[-1] < result.history_loss[0]


# warnings torch's inductor gives about itself on the CUDA machine (torch 2.11): a deprecated
# torch.jit decorator in a module it imports, and advice to enable TF32 (we keep float32)
@pytest.mark.filterwarnings("ignore:.torch.jit.script_method. is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:TensorFloat32 tensor cores:UserWarning")
def test_compiled_fast_training_follows_the_autograd_reference():
    model, twin, data = _pair("relu")
    options = dict(
        steps=200, batch_size=256, lr=3e-3, log_every=10, seed=5, device="cuda", progress=False
    )
    compiled = train(model, data, method="fast", compile=True, **options)
    reference = train(twin, data, method="reference", **options)
    torch.testing.assert_close(compiled.history_loss, reference.history_loss, rtol=2e-3, atol=1e-6)
