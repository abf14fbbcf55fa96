"""The shared training loop, seen through all three trainers: one divergence rule, one thread
choice, one callback contract, one result type, checkpoints that resume bit-identically, and
defaults that live in the config dataclasses only."""

from __future__ import annotations

import dataclasses
import inspect

import numpy
import pytest
import torch

import superpose
from superpose import SparseFeatures, ToyModel, circuits, sae, training
from superpose.circuits import AttnOnlyTransformer, MarkovChain
from superpose.circuits.train import CircuitsTrainConfig
from superpose.sae.train import SAETrainConfig
from superpose.train import TrainConfig
from superpose.training import DIVERGENCE_FACTOR, TrainingDiverged, TrainResult
from superpose.training.divergence import check_interval


def toy_run(**options):
    model = ToyModel("relu", 3, 5, 2, seed=0)
    data = SparseFeatures(5, 0.1, seed=0)
    result = superpose.train(
        model, data, **{"steps": 40, "log_every": 10, "progress": False} | options
    )
    return model, result


def sae_run(**options):
    source = sae.Superposed(SparseFeatures(16, 0.1, seed=0), 8, seed=0)
    model = sae.SAE("relu", 2, 8, 16, l1_coefficient=[0.01, 0.03], seed=0)
    settings = {"steps": 40, "batch_size": 64, "log_every": 10, "progress": False, "seed": 0}
    result = sae.train(model, source, **settings | options)
    return model, result


def circuits_run(**options):
    model = AttnOnlyTransformer(n_layers=1, d_model=8, n_heads=2, d_vocab=8, n_ctx=10, seed=0)
    task = MarkovChain(8, 10, seed=0)
    settings = {"steps": 40, "batch_size": 8, "log_every": 10, "progress": False, "seed": 0}
    result = circuits.train(model, task, **settings | options)
    return model, result


RUNS = {"toy": toy_run, "sae": sae_run, "circuits": circuits_run}


@pytest.mark.parametrize("trainer", RUNS)
def test_every_trainer_names_a_finite_blow_up(trainer):
    """A huge lr sends every trainer's loss far above its start while it stays finite for a
    while (0.4 returned a toy loss of 9e15 and a circuits loss of 5.8e25 without a word; an
    SAE at lr = 1e6 turns NaN at once, so it gets 100, measured to blow up finitely)."""
    lr = 100.0 if trainer == "sae" else 1e6
    with pytest.raises(TrainingDiverged, match="rose above 10000 times its first step") as info:
        RUNS[trainer](lr=lr, steps=400)
    error = info.value
    assert error.reason == "blow-up" and error.instances and error.step % 10 == 9


@pytest.mark.parametrize("trainer", RUNS)
def test_every_trainer_returns_the_one_result_type(trainer):
    _, result = RUNS[trainer]()
    assert isinstance(result, TrainResult)
    assert result.history_steps.tolist() == [10, 20, 30, 40]
    assert result.history_loss.shape[0] == 4 and torch.isfinite(result.history_loss).all()
    assert result.samples_per_second > 0


def test_the_rule_on_constructed_losses():
    reference = torch.tensor([1.0, 2.0])
    check_interval(torch.tensor([[5.0, 10.0], [9e3, 1e4]]), 0, reference)  # means below 1e4×
    check_interval(torch.tensor([[1e9, 1e9]]), 0, torch.tensor([0.0, 0.0]))  # a start at 0
    with pytest.raises(TrainingDiverged, match=r"at step 11 for instance\(s\) \[1\]"):
        check_interval(torch.tensor([[1.0, 3e4], [1.0, 3e4]]), 10, reference)
    with pytest.raises(TrainingDiverged, match=r"NaN/inf at step 3 for instance\(s\) \[0\]"):
        check_interval(torch.tensor([[1.0, 1.0], [float("inf"), 1e9]]), 2, reference)
    huge = torch.tensor([[3e38, 1.0], [3e38, 1.0]])  # finite steps, an overflowing mean
    with pytest.raises(TrainingDiverged, match=r"NaN/inf at step 3 for instance\(s\) \[0\]"):
        check_interval(huge, 2, torch.tensor([3e38, 1.0]))
    assert DIVERGENCE_FACTOR == 1e4


@pytest.mark.parametrize("trainer", RUNS)
def test_on_log_gets_per_instance_metrics_matching_the_history(trainer):
    seen = []
    _, result = RUNS[trainer](on_log=lambda step, metrics: seen.append((step, metrics)))
    assert [step for step, _ in seen] == [10, 20, 30, 40]
    for name, values in result.history.items():
        logged = numpy.stack([metrics[name] for _, metrics in seen])
        assert numpy.array_equal(logged.reshape(values.shape), values.numpy()), name


@pytest.mark.parametrize("trainer", RUNS)
def test_resumed_checkpoint_is_bit_identical(trainer, tmp_path):
    whole, whole_result = RUNS[trainer](checkpoint=tmp_path / "a.ckpt", checkpoint_every=20)
    # a run stopped after its checkpoint at step 20: the file holds the state there
    torch.manual_seed(123)  # the global generator's state must not matter on resume
    resumed, result = RUNS[trainer](resume_from=tmp_path / "a.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for name, values in whole_result.history.items():
        assert torch.equal(values, result.history[name]), name


def test_the_checkpoint_holds_the_state_at_its_step(tmp_path):
    half, _ = toy_run(steps=20)
    toy_run(steps=40, checkpoint=tmp_path / "c.ckpt", checkpoint_every=20)
    # overwritten at step 40: the last checkpoint is the finished run
    resumed, _ = toy_run(steps=40, resume_from=tmp_path / "c.ckpt")
    toy_run(steps=40, checkpoint=tmp_path / "d.ckpt", checkpoint_every=40)
    tensors = superpose.io.load_tensors(tmp_path / "d.ckpt")
    assert torch.equal(tensors["module.W"], resumed.W)
    assert not torch.equal(half.W, resumed.W)


def test_checkpoint_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="multiple of log_every=10"):
        toy_run(checkpoint=tmp_path / "x", checkpoint_every=15)
    with pytest.raises(ValueError, match="checkpoint needs checkpoint_every"):
        toy_run(checkpoint=tmp_path / "x")
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        toy_run(checkpoint_every=10)
    toy_run(checkpoint=tmp_path / "x", checkpoint_every=20)
    with pytest.raises(ValueError, match=r"other settings: lr=0\.001 \(now 0\.002\)"):
        toy_run(resume_from=tmp_path / "x", lr=2e-3)
    with pytest.raises(FileNotFoundError):
        toy_run(resume_from=tmp_path / "missing")


@pytest.mark.parametrize("trainer", RUNS)
def test_every_trainer_chooses_its_threads(trainer, monkeypatch):
    seen = []
    torch.set_num_threads(2)
    try:
        RUNS[trainer](on_log=lambda step, metrics: seen.append(torch.get_num_threads()))
        RUNS[trainer](on_log=lambda step, metrics: seen.append(torch.get_num_threads()), threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert seen == [1] * 4 + [2] * 4  # small steps: one thread, whatever the process had


@pytest.mark.parametrize(
    ("function", "config"),
    [
        (superpose.train, TrainConfig),
        (sae.train, SAETrainConfig),
        (circuits.train, CircuitsTrainConfig),
    ],
)
def test_each_default_lives_in_the_config(function, config):
    parameters = inspect.signature(function).parameters
    fields = [field for field in dataclasses.fields(config) if field.name in parameters]
    assert {field.name for field in dataclasses.fields(config)} - set(parameters) == set()
    for field in fields:
        default = parameters[field.name].default
        if default is not inspect.Parameter.empty:  # circuits' steps is required
            assert default == field.default, field.name
        assert field.metadata["doc"], field.name
    assert TrainConfig().steps == 10_000 and SAETrainConfig().steps == 5000
    assert CircuitsTrainConfig().schedule == "cosine"


def test_configs_check_every_field():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"warmup_steps must be an int in \[0, steps=5\]"):
        SAETrainConfig(steps=5, warmup_steps=6)
    with pytest.raises(ValueError, match=r"sparsity_warmup_steps must be an int in \[0, steps=5\]"):
        SAETrainConfig(steps=5, sparsity_warmup_steps=6)
    with pytest.raises(TypeError, match="batch_size must be a positive integer"):
        CircuitsTrainConfig(batch_size=2.5)


def test_progress_bar_shows_on_a_terminal_only(capsys):
    toy_run(progress=None)  # pytest captures output: not a terminal
    assert capsys.readouterr().err == ""
    toy_run(progress=True)
    assert "train relu" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        toy_run(progress="yes")


def test_documented_homes_are_reachable():
    assert training.lr_factor is superpose.training.schedule.lr_factor
    assert training.cpu_threads is superpose.runtime.cpu_threads
    assert superpose.TrainResult is sae.SAETrainResult is circuits.TrainResult
