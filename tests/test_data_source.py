"""The batch contract (:mod:`superpose.data.source`): every source satisfies its protocol, a
sweep's stream is named explicitly, and a sweep cell's held-out loss is
:func:`superpose.train.evaluate` on the cell's evaluation stream."""

import importlib

import pytest
import torch

import superpose.data
from superpose import SparseFeatures, ToyModel, fast, sae
from superpose.data import ActivationBatchSource, BatchSource
from superpose.sweep import Chunk, SweepSpec, run_chunk
from superpose.sweep.streams import EVAL_STREAM, TRAIN_STREAM, CellStreams, stream_seed

train_module = importlib.import_module("superpose.train")  # the module, not the function
evaluate = train_module.evaluate

SOURCES = {
    "dense": lambda: SparseFeatures(5, [[0.3], [0.1]], seed=0),
    "sparse": lambda: SparseFeatures(64, 0.01, seed=0),
    "finite": lambda: SparseFeatures(6, 0.3, n_samples=40, seed=0),
    "correlated": lambda: SparseFeatures(6, 0.2, correlated_sets=[[0, 1]], seed=0),
    "cells": lambda: CellStreams(torch.tensor([[0.1] * 5, [0.5] * 5]), [3, 4]),
    "cells_eval": lambda: CellStreams(torch.full((2, 5), 0.3), [3, 3], stream=EVAL_STREAM),
}


@pytest.mark.parametrize("name", SOURCES)
def test_every_feature_source_keeps_the_batch_contract(name):
    source = SOURCES[name]()
    assert isinstance(source, BatchSource)
    n, rows = 2, 4096  # the sparse source's run is large enough to be drawn sparsely
    own = source.generators()
    assert source.generator is None or own == [source.generator]
    before = [g.get_state() for g in own]
    batch = source.sample_rows(rows, n)
    assert batch.dense().shape == (n, rows, source.n_features) and batch.n_instances == n
    assert batch.parts[0].device == source.device
    after = [g.get_state() for g in own]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # advanced
    held_out = source.draw(rows, n)
    assert held_out.shape == (n, rows, source.n_features) and held_out.is_contiguous()
    assert source.n_samples == (40 if name == "finite" else None)


def test_a_passed_generator_is_the_one_drawn_from():
    data = SparseFeatures(5, 0.1, seed=0)
    generator = torch.Generator().manual_seed(9)
    assert data.generators(generator) == [generator]
    state = data.generator.get_state()
    batch = data.sample_rows(16, 2, generator)
    assert torch.equal(data.generator.get_state(), state)  # its own stream did not move
    again = SparseFeatures(5, 0.1, seed=1).sample_rows(16, 2, torch.Generator().manual_seed(9))
    assert torch.equal(batch.dense(), again.dense())


def test_objects_without_the_members_are_not_sources():
    class NoDraw:
        n_features, n_samples, device, generator = 5, None, torch.device("cpu"), None

        def generators(self, generator=None):
            return []

        def sample_rows(self, batch_size, n_instances=None, generator=None, sparse=True):
            raise NotImplementedError

    assert not isinstance(NoDraw(), BatchSource)
    assert not isinstance(torch.zeros(3), BatchSource)
    assert not isinstance(SparseFeatures(5, 0.1), ActivationBatchSource)
    with pytest.raises(TypeError, match="BatchSource"):
        train_module.train(ToyModel("relu", 1, 5, 2), NoDraw(), steps=1, progress=False)


def test_activation_sources_keep_their_contract():
    features = SparseFeatures(8, 0.2, seed=0)
    toy = ToyModel("relu", 2, 8, 3, seed=0)
    for source in (sae.Superposed(features, 4, seed=1), sae.ModelActivations(toy, features, 1)):
        assert isinstance(source, ActivationBatchSource)
        assert source.generator is features.generator and source.device == features.device
        x = source.sample(16, 3)
        assert x.shape == (3, 16, source.d_model) and source.n_instances == 1


def test_a_cell_stream_is_named_explicitly_not_by_a_generator():
    # p = 1 with uniform magnitudes: a cell's batch is its stream's uniforms themselves
    streams = CellStreams(torch.ones(2, 3), [5, 6])
    assert streams.stream == TRAIN_STREAM and streams.generator is None
    held_out = streams.with_stream(EVAL_STREAM)
    assert held_out.stream == EVAL_STREAM and held_out.seeds == [5, 6]
    expected = torch.rand(
        16, 3, generator=torch.Generator().manual_seed(stream_seed(6, EVAL_STREAM))
    )
    assert torch.equal(held_out.draw(16, 2)[1], expected)
    assert not torch.equal(streams.draw(16, 2)[1], expected)
    named = torch.Generator().manual_seed(EVAL_STREAM)  # no longer a way to pick the stream
    with pytest.raises(ValueError, match="stream=0"):
        streams.generators(named)
    with pytest.raises(ValueError, match="stream=0"):
        streams.draw(8, 2, named)
    with pytest.raises(ValueError, match="stream=0"):
        streams.sample_rows(8, 2, named)
    with pytest.raises(ValueError, match="stream must be >= 0"):
        CellStreams(torch.ones(1, 3), [0], stream=-1)
    with pytest.raises(TypeError, match="stream must be an int"):
        CellStreams(torch.ones(1, 3), [0], stream="eval")


def test_evaluate_draws_the_sources_own_stream_in_blocks():
    model = ToyModel("relu", 2, 64, 2, seed=0)
    loss = evaluate(model, SparseFeatures(64, 0.01, seed=3), 5000, seed=None, batch_size=2048)
    data = SparseFeatures(64, 0.01, seed=3)  # its batches of 2048 rows are compact
    blocks = [(data.sample_rows(rows, 2), rows) for rows in (2048, 2048, 904)]
    assert blocks[0][0].repeats[0] > 0  # empty rows left out
    total = sum(fast.batch_loss(model, batch).double() * rows for batch, rows in blocks)
    assert torch.equal(loss, (total / 5000).float())
    drawn = model.loss(SparseFeatures(64, 0.01, seed=3).draw(5000, 2)).double() * 5000
    loss = evaluate(model, SparseFeatures(64, 0.01, seed=3), 5000, seed=None)  # one chunk
    assert torch.equal(loss, (drawn / 5000).float())
    with pytest.raises(ValueError, match="finite data set"):
        evaluate(model, SparseFeatures(64, 0.1, n_samples=10), 100, batch_size=10)


def test_train_measures_its_held_out_loss_on_eval_data():
    data = SparseFeatures(5, 0.1, seed=0)
    model = ToyModel("relu", 2, 5, 2, seed=0)
    result = train_module.train(
        model,
        data,
        steps=5,
        batch_size=64,
        eval_samples=300,
        eval_data=SparseFeatures(5, 0.3, seed=4),
        progress=False,
    )
    expected = evaluate(model, SparseFeatures(5, 0.3, seed=4), 300, seed=None, batch_size=64)
    assert torch.equal(result.loss, expected)
    with pytest.raises(ValueError, match=r"eval_data\.n_features=6"):
        train_module.train(model, data, steps=1, eval_data=SparseFeatures(6, 0.1), progress=False)
    with pytest.raises(ValueError, match="fresh data"):
        train_module.train(model, data, steps=1, eval_data=SparseFeatures(5, 0.1, n_samples=9))
    with pytest.raises(ValueError, match="named stream"):  # a seed would share one generator
        train_module.train(model, CellStreams(torch.ones(2, 5), [0, 1]), steps=1, seed=0)


def test_a_sweep_cells_held_out_loss_is_evaluate_on_its_eval_stream():
    spec = SweepSpec.from_dict(
        {
            "name": "held_out",
            "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
            "axes": {"feature_probability": [0.5, 0.02], "seed": [4]},
            "training": {"steps": 20, "batch_size": 64, "lr": 0.01, "eval_samples": 500},
        }
    )
    for cell in spec.cells():
        result = run_chunk(Chunk((cell,), 0))[0]
        model = ToyModel("relu", 1, 3, 2)
        model.load_state_dict({name: value[None] for name, value in result.weights.items()})
        p = torch.full((1, 3), float(cell.config["feature_probability"]))

        def loss(stream, cell=cell, p=p, model=model):
            streams = CellStreams(p, [int(cell.config["seed"])], stream=stream)
            return float(evaluate(model, streams, 500, seed=None, batch_size=64)[0])

        assert result.final_loss == loss(EVAL_STREAM) != loss(TRAIN_STREAM)


@pytest.mark.parametrize(
    ("name", "home", "internal"),
    [
        ("FEATURE_MAJOR", "sampling", "FEATURE_MAJOR"),
        ("PART_ELEMENTS", "sampling", "_PART_ELEMENTS"),
        ("SLACK_SIGMAS", "sampling", "_SLACK_SIGMAS"),
        ("UNIFORM_CHUNK", "sampling", "_UNIFORM_CHUNK"),
        ("SPARSE_DENSITY", "sparse", "_SPARSE_DENSITY"),
        ("SPARSE_MIN_ELEMENTS", "sparse", "_SPARSE_MIN_ELEMENTS"),
    ],
)
def test_tuning_constants_are_internal_and_their_old_names_deprecated(name, home, internal):
    assert name not in superpose.data.__all__
    with pytest.warns(DeprecationWarning, match=f"superpose.data.{name} is an internal"):
        value = getattr(superpose.data, name)
    assert value == getattr(getattr(superpose.data, home), internal)
    with pytest.raises(AttributeError):
        superpose.data.NOT_A_NAME  # noqa: B018
