"""Safe files: safetensors results with JSON metadata, and models saved to / loaded from folders."""

import json
import sys

import pytest
import safetensors.torch
import torch

import superpose
from superpose import io
from superpose.circuits import AttnOnlyTransformer
from superpose.io import (
    CorruptFile,
    NotAModelFolder,
    Saveable,
    load_metadata,
    load_tensors,
    save_tensors,
    saveable,
)
from superpose.models import KINDS, ToyModel


def test_tensors_and_metadata_round_trip(tmp_path):
    tensors = {"W": torch.randn(3, 2, 5), "steps": torch.arange(4), "mask": torch.ones(2).bool()}
    metadata = {"config": {"lr": 0.01, "seeds": [0, 1]}, "names": ["a", "b"], "quick": False}
    path = save_tensors(tensors, tmp_path / "deep" / "results.safetensors", metadata)
    loaded = load_tensors(path)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype
    assert load_metadata(path) == metadata
    assert load_metadata(save_tensors({"x": torch.zeros(1)}, tmp_path / "plain.st")) == {}
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["results.safetensors"]


def test_tensor_files_reject_bad_values_and_never_unpickle(tmp_path):
    with pytest.raises(TypeError, match=r"tensors\['config'\] must be a torch.Tensor"):
        save_tensors({"W": torch.zeros(2), "config": {"lr": 1}}, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        load_tensors(tmp_path / "missing.safetensors")
    pickled = tmp_path / "old.pt"
    torch.save({"W": torch.zeros(2)}, pickled)
    for read in (load_tensors, load_metadata):
        with pytest.raises(CorruptFile, match=r"old.pt is corrupt or not a safetensors file"):
            read(pickled)
    foreign = tmp_path / "foreign.safetensors"  # metadata that superpose did not write
    foreign.write_bytes(safetensors.torch.save({"W": torch.zeros(2)}, metadata={"format": "pt"}))
    assert torch.equal(load_tensors(foreign)["W"], torch.zeros(2))
    with pytest.raises(CorruptFile, match="has metadata that is not JSON"):
        load_metadata(foreign)
    path = save_tensors({"W": torch.zeros(100)}, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptFile, match=r"cut.safetensors is corrupt") as error:
        load_tensors(path)
    assert error.value.path == path


@pytest.mark.parametrize("kind", KINDS)
def test_toy_model_save_load_round_trip(tmp_path, kind):
    model = ToyModel(kind, 3, 5, 2, importance=[[0.9**i for i in range(5)]] * 3, seed=[1, 2, 3])
    with torch.no_grad():  # every parameter non-trivial, including the zero-initialised biases
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
        model.importance[1] = 2.0
    assert model.save(tmp_path / "model") == tmp_path / "model"
    rng = torch.random.get_rng_state()
    loaded = superpose.load(tmp_path / "model")
    assert torch.equal(torch.random.get_rng_state(), rng)  # loading draws no random numbers
    assert type(loaded) is ToyModel and loaded.config() == model.config()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.rand(3, 16, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), model(x)) and torch.equal(loaded.loss(x), model.loss(x))
    record = json.loads((tmp_path / "model" / "config.json").read_text())
    assert record["class"] == "ToyModel" and record["superpose_version"] == superpose.__version__
    assert record["config"] == {"kind": kind, "n_instances": 3, "n_features": 5, "n_hidden": 2}
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]


def test_dtype_survives_and_a_bad_config_writes_nothing(tmp_path):
    model = ToyModel("hidden_relu", 2, 3, 2, seed=0).double()
    loaded = superpose.load(model.save(tmp_path / "double"))
    assert {t.dtype for t in loaded.state_dict().values()} == {torch.float64}
    assert torch.equal(loaded.W, model.W) and loaded.W.requires_grad
    model.n_hidden = torch.tensor(2)  # config() now returns a tensor: not JSON
    with pytest.raises(TypeError, match="not JSON serializable"):
        model.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_transformer_save_load_round_trip(tmp_path):
    model = AttnOnlyTransformer(2, 16, 2, 7, 6, d_head=4, layer_norm=True, seed=3)
    model.save(tmp_path / "tf")
    loaded = superpose.load(tmp_path / "tf")
    assert isinstance(loaded, AttnOnlyTransformer) and loaded.config() == model.config()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    tokens = torch.randint(0, 7, (4, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(tokens), model(tokens))


def test_load_imports_the_saving_module(tmp_path, monkeypatch):
    """A model folder loads without its module imported first: superpose.load imports the
    superpose module named in config.json, whose @saveable registers the class."""
    AttnOnlyTransformer(1, 8, 2, 5, 4).save(tmp_path / "tf")
    monkeypatch.setattr(io, "_SAVEABLE", {"ToyModel": ToyModel})
    monkeypatch.delitem(sys.modules, "superpose.circuits.model")
    loaded = superpose.load(tmp_path / "tf")
    assert type(loaded).__name__ == "AttnOnlyTransformer"
    assert sys.modules["superpose.circuits.model"].AttnOnlyTransformer is type(loaded)


def test_load_errors_name_the_problem(tmp_path):
    folder = ToyModel("relu", 2, 4, 2, seed=0).save(tmp_path / "m")
    weights, config = folder / "weights.safetensors", folder / "config.json"
    good_weights, good_config = weights.read_bytes(), config.read_text()

    with pytest.raises(FileNotFoundError, match="no saved model at"):
        superpose.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        NotAModelFolder,
        match=r"empty is not a superpose model folder: it has neither config.json nor "
        r"weights.safetensors \(a folder holding the config.json and weights.safetensors",
    ) as not_a_folder:
        superpose.load(tmp_path / "empty")
    assert not_a_folder.value.path == tmp_path / "empty"
    assert not isinstance(not_a_folder.value, CorruptFile)
    with pytest.raises(NotAModelFolder, match=r"config.json is a file, not a superpose model"):
        superpose.load(config)
    config.unlink()
    with pytest.raises(CorruptFile, match=r"config.json is missing \(the folder has weights"):
        superpose.load(folder)
    config.write_text(good_config)

    weights.write_bytes(good_weights[:-8])  # truncated
    with pytest.raises(CorruptFile, match=r"weights.safetensors is truncated or altered") as error:
        superpose.load(folder)
    assert error.value.path == weights
    altered = bytearray(good_weights)
    altered[-1] ^= 0xFF  # same size, one bit pattern changed
    weights.write_bytes(bytes(altered))
    with pytest.raises(CorruptFile, match="SHA-256 differs"):
        superpose.load(folder)
    weights.unlink()
    with pytest.raises(CorruptFile, match=r"weights.safetensors is missing"):
        superpose.load(folder)
    weights.write_bytes(good_weights)

    config.write_text("{not json")
    with pytest.raises(CorruptFile, match=r"config.json is not valid JSON"):
        superpose.load(folder)
    record = json.loads(good_config)
    config.write_text(json.dumps({**record, "class": "Nope", "module": "elsewhere"}))
    with pytest.raises(ValueError, match=r"names class 'Nope'.*not a registered saveable class"):
        superpose.load(folder)
    config.write_text(json.dumps({**record, "config": {**record["config"], "n_features": 5}}))
    with pytest.raises(CorruptFile, match=r"does not fit ToyModel.*'W': \(2, 2, 4\)"):
        superpose.load(folder)
    config.write_text(good_config)
    assert superpose.load(folder).n_features == 4

    with pytest.raises(ValueError, match="must be a folder"):
        ToyModel().save(weights)


def test_registering_a_saveable_class(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_SAVEABLE", dict(io._SAVEABLE))

    class Tiny(Saveable):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n
            self.w = torch.nn.Parameter(torch.arange(float(n)))

        def config(self) -> dict[str, object]:
            return {"n": self.n}

    with pytest.raises(TypeError, match="Tiny is not registered"):
        Tiny(3).save(tmp_path / "tiny")
    assert saveable(Tiny) is Tiny
    loaded = superpose.load(Tiny(3).save(tmp_path / "tiny"))
    assert type(loaded) is Tiny and loaded.w.tolist() == [0.0, 1.0, 2.0]

    with pytest.raises(TypeError, match=r"needs a subclass of superpose.io.Saveable"):
        saveable(torch.nn.Linear)
    other = type("ToyModel", (Saveable,), {})
    with pytest.raises(ValueError, match="already named 'ToyModel'"):
        saveable(other)
