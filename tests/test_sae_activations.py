"""``sae.Activations``: your own activations (a tensor, a memory-mapped ``.npy`` or
``.safetensors`` file) as an SAE source, with or without true directions."""

import numpy as np
import pytest
import torch

from superpose import SparseFeatures, sae
from superpose._checks import make_generator
from superpose.io import CorruptFile, save_tensors
from superpose.sae.sources import ACTIVATIONS_STREAM, activations_for, check_source


def _rows(n_samples: int = 500, d_model: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_samples, d_model, generator=torch.Generator().manual_seed(seed))


def _drawn(source: sae.Activations, batch_size: int, seed: int) -> torch.Tensor:
    """The row indices a source seeded ``seed`` draws first (uniform, with replacement)."""
    generator = make_generator(seed, stream=ACTIVATIONS_STREAM)
    return torch.randint(source.n_samples, (batch_size,), generator=generator)


def test_a_tensor_source_serves_random_rows_shared_by_every_instance():
    data = _rows().double()
    source = sae.Activations(data, seed=3)
    assert (source.n_instances, source.d_model, source.n_samples) == (1, 8, 500)
    assert source.directions is None and source.n_features is None
    assert source.device == torch.device("cpu")
    x = source.sample(64, 4)
    assert x.shape == (4, 64, 8) and x.dtype == torch.float32
    assert torch.equal(x[0], x[3])  # one draw for every SAE instance
    torch.testing.assert_close(x[0], data[_drawn(source, 64, 3)].float(), rtol=0, atol=0)
    assert source.sample(3).shape == (1, 3, 8)
    assert source.sample(2000).shape == (1, 2000, 8)  # with replacement: more than n_samples


def test_batches_are_reproducible_with_a_seed_and_follow_torch_without_one():
    data = _rows()
    first, again = sae.Activations(data, seed=0), sae.Activations(data, seed=0)
    assert torch.equal(first.sample(32), again.sample(32))
    assert torch.equal(first.sample(32), again.sample(32))  # the streams advance together
    assert not torch.equal(sae.Activations(data, seed=1).sample(32), again.sample(32))
    assert not torch.equal(first.sample(32), first.sample(32))  # a fresh batch each time

    unseeded = sae.Activations(data)
    assert unseeded.generator is torch.default_generator
    torch.manual_seed(5)
    batch = unseeded.sample(32)
    torch.manual_seed(5)
    assert torch.equal(unseeded.sample(32), batch)

    generator = torch.Generator().manual_seed(9)  # a generator given to sample wins
    batch = first.sample(16, generator=generator)
    assert torch.equal(batch, again.sample(16, generator=torch.Generator().manual_seed(9)))


def test_a_memory_mapped_npy_file_larger_than_the_batch(tmp_path):
    data = _rows(5000, 16).numpy().astype(np.float16)
    np.save(tmp_path / "acts.npy", data)
    source = sae.Activations(tmp_path / "acts.npy", seed=2)
    assert isinstance(source.data, np.memmap)  # read lazily, never loaded whole
    assert (source.n_samples, source.d_model) == (5000, 16)
    x = source.sample(128)
    assert x.shape == (1, 128, 16) and x.dtype == torch.float32
    expected = torch.from_numpy(data[_drawn(source, 128, 2).numpy()]).float()
    assert torch.equal(x[0], expected)
    assert sae.Activations(str(tmp_path / "acts.npy"), seed=2).sample(128).equal(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_a_safetensors_source(tmp_path, dtype):
    data = _rows(300, 8).to(dtype)
    save_tensors({"acts": data, "other": torch.zeros(2, 8)}, tmp_path / "two.safetensors")
    save_tensors({"acts": data}, tmp_path / "one.safetensors", metadata={"model": "gpt2"})
    source = sae.Activations(tmp_path / "two.safetensors", key="acts", seed=4)
    assert isinstance(source.data, np.ndarray) and source.n_samples == 300
    x = source.sample(64)
    assert torch.equal(x[0], data[_drawn(source, 64, 4)].float())
    only = sae.Activations(tmp_path / "one.safetensors", seed=4)  # its only tensor
    assert torch.equal(only.sample(64), x)
    with pytest.raises(ValueError, match=r"key must name one of the tensors.*'acts', 'other'"):
        sae.Activations(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match="key must name one of the tensors"):
        sae.Activations(tmp_path / "two.safetensors", key="missing")


def test_bad_input_is_refused_naming_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"data must be float activations shaped"):
        sae.Activations(torch.randn(10))
    with pytest.raises(ValueError, match=r"data must be float activations shaped"):
        sae.Activations(torch.zeros(10, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"data must be float activations shaped"):
        sae.Activations(np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="data must be a tensor"):
        sae.Activations([[1.0, 2.0]])
    with pytest.raises(FileNotFoundError, match="data: no file"):
        sae.Activations(tmp_path / "missing.npy")
    (tmp_path / "acts.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data must be a \.npy or \.safetensors file"):
        sae.Activations(tmp_path / "acts.csv")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(CorruptFile, match="not a safetensors file"):
        sae.Activations(tmp_path / "bad.safetensors")
    save_tensors({"acts": _rows()}, tmp_path / "whole.safetensors")
    whole = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(whole[:-8])
    with pytest.raises(CorruptFile, match="not a safetensors file"):
        sae.Activations(tmp_path / "truncated.safetensors")
    save_tensors({"ids": torch.arange(6).view(3, 2)}, tmp_path / "ids.safetensors")
    with pytest.raises(TypeError, match="must hold floats"):
        sae.Activations(tmp_path / "ids.safetensors")
    with pytest.raises(ValueError, match="key names a tensor"):
        sae.Activations(_rows(), key="acts")
    with pytest.raises(ValueError, match=r"directions must be shaped \(n_features, d_model=8\)"):
        sae.Activations(_rows(), directions=torch.randn(4, 7))
    with pytest.raises(ValueError, match="directions must be finite"):
        sae.Activations(_rows(), directions=torch.full((4, 8), torch.nan))
    source = sae.Activations(_rows())
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        source.sample(0)
    with pytest.raises(TypeError, match="n_instances must be a positive integer"):
        source.sample(4, 1.5)


def test_check_source_and_activations_for_take_either_kind_of_source():
    source = sae.Activations(_rows(), seed=0)
    assert check_source(source, 3, 8) is source
    with pytest.raises(ValueError, match=r"source.d_model=8 but the SAE's d_in=4"):
        check_source(source, 3, 4)
    with pytest.raises(TypeError, match="Activations"):
        check_source(_rows(), 3, 8)
    x = activations_for(source, 3, 10, torch.Generator().manual_seed(0))
    assert x.shape == (3, 10, 8) and torch.equal(x[0], x[2])

    world = sae.Superposed(SparseFeatures(16, 0.1, seed=0), d_model=8, seed=0)
    assert world.device == torch.device("cpu")
    assert world.generator is world.features.generator


def _model() -> sae.SparseAutoencoder:
    model = sae.SAE("topk", 4, 8, 16, k=[1, 2, 4, 8], seed=0)
    with torch.no_grad():
        model.b_dec.normal_(generator=torch.Generator().manual_seed(1))
    return model.eval()


def test_evaluate_without_directions_scores_what_needs_no_ground_truth():
    data = _rows(2000)
    source = sae.Activations(data, seed=0)
    model = _model()
    scores = sae.evaluate(model, source, n_samples=1000, seed=7, batch_size=300)
    truthless = ["mmcs", "mcc", "recovered", "precision", "recall", "f1", "latent_f1"]
    assert scores[truthless].isna().all().all()
    assert (
        scores[["l0", "dead_fraction", "mse", "explained_variance", "shrinkage"]]
        .notna()
        .all()
        .all()
    )

    # the same numbers by hand, from the rows evaluate draws (seed 7, chunks of 300)
    generator = make_generator(7)
    x = torch.cat([source.sample(rows, 1, generator)[0] for rows in (300, 300, 300, 100)])
    x = x.expand(4, -1, -1)
    with torch.no_grad():
        z = model.encode(x)
        error = (model.decode(z) - x).square().sum(-1)
    np.testing.assert_allclose(scores["l0"], (z > 0).sum(-1).float().mean(-1), rtol=1e-6)
    np.testing.assert_allclose(scores["mse"], error.mean(-1), rtol=1e-5)
    variance = (x - x.mean(1, keepdim=True)).square().sum((1, 2))
    np.testing.assert_allclose(
        scores["explained_variance"], 1 - error.sum(-1) / variance, rtol=1e-4
    )
    assert (scores["l0"] <= np.array([1, 2, 4, 8])).all()


def test_evaluate_with_directions_gives_the_dictionary_scores():
    directions = torch.randn(12, 8, generator=torch.Generator().manual_seed(3))
    source = sae.Activations(_rows(2000), directions=directions * 3, seed=0)  # any norm
    assert source.n_features == 12
    model = _model()
    scores = sae.evaluate(model, source, n_samples=500)
    recovery = sae.feature_recovery(model, directions)
    np.testing.assert_allclose(scores["mmcs"], recovery["mmcs"], rtol=1e-6)
    np.testing.assert_allclose(scores["mcc"], recovery["mcc"], rtol=1e-6)
    np.testing.assert_allclose(scores["recovered"], recovery["recovered"])
    assert scores[["precision", "recall", "f1"]].isna().all().all()  # no feature values


def test_a_k_sweep_of_topk_saes_on_saved_activations(tmp_path):
    world = sae.Superposed(SparseFeatures(16, 0.05, seed=0), d_model=8, seed=0)
    saved = world.sample(20000, 1, torch.Generator().manual_seed(0))[0]
    np.save(tmp_path / "acts.npy", saved.numpy())
    source = sae.Activations(tmp_path / "acts.npy", seed=0)
    model = sae.SAE("topk", 4, 8, 32, k=[1, 2, 4, 8], seed=0)
    sae.train(
        model, source, steps=500, batch_size=128, lr=3e-3, schedule="cosine", seed=0, progress=False
    )

    scores = sae.evaluate(model, source, n_samples=8192)
    assert scores[["mmcs", "mcc", "recovered", "precision", "recall", "f1"]].isna().all().all()
    assert list(scores["l0"][:3]) == pytest.approx([1, 2, 4], abs=0.05)
    assert (scores["l0"] <= np.array([1, 2, 4, 8])).all()
    assert scores["explained_variance"].is_monotonic_increasing  # measured 0.87 → 0.96
    assert scores["explained_variance"].iloc[0] > 0.8

    known = sae.Activations(tmp_path / "acts.npy", directions=world.directions, seed=0)
    scores = sae.evaluate(model, known, n_samples=8192)
    assert scores["mcc"].iloc[0] > 0.97  # one feature per sample at k = 1 (measured 0.994)
    assert scores["mcc"].iloc[0] == scores["mcc"].max()
    assert scores[["precision", "recall", "f1"]].isna().all().all()  # no feature values
