"""One source of defaults: a sweep cell's training fields are its trainer's settings, and a
cell trains exactly like the direct call with the same arguments unset."""

import inspect

import pytest
import torch

from superpose import sae, sweep
from superpose.cli import main
from superpose.data import SparseFeatures
from superpose.models import ToyModel
from superpose.sweep import TASKS, Chunk, SweepSpec, run_chunk
from superpose.sweep import execute as sweep_execute
from superpose.sweep.execute import SAE_LOG_EVERY, build_sae, sae_source
from superpose.sweep.spec import NOT_SWEPT, SAE_SPARSITY, TRAINER_CONFIGS
from superpose.sweep.streams import EVAL_STREAM, TRAIN_STREAM, CellStreams, stream_seed
from superpose.train import cpu_threads, train
from superpose.training.config import settings

TRAINERS = {"toy": train, "sae": sae.train}
FIXED = {
    "toy": {"kind": "relu", "n_features": 3, "n_hidden": 2, "feature_probability": 0.3},
    "sae": {"sae_kind": "topk", "n_features": 12, "d_model": 6, "d_sae": 12, "k": 2},
}


def spec(task, **training):
    return SweepSpec.from_dict(
        {"name": "s", "task": task, "fixed": FIXED[task], "training": training}
    )


@pytest.mark.parametrize("task", ["toy", "sae"])
def test_every_trainer_setting_is_a_field_with_the_trainers_default(task):
    fields = TASKS[task]
    parameters = inspect.signature(TRAINERS[task]).parameters
    names = {setting.name for setting in settings(TRAINER_CONFIGS[task])}
    assert set(NOT_SWEPT[task]) < names  # no stale exclusion, and most settings are swept
    for setting in settings(TRAINER_CONFIGS[task]):
        if setting.name in NOT_SWEPT[task]:
            assert setting.name not in fields
            continue
        field = fields[setting.name]
        assert field.table == "training" and not field.per_instance, setting.name
        assert field.default == setting.default == parameters[setting.name].default, setting.name
        assert type(field.default) is type(setting.default), setting.name
        if (task, setting.name) != ("toy", "batch_size"):  # narrowed: no full batch in sweeps
            assert field.check is setting.metadata["check"], setting.name
            assert field.doc == setting.metadata["doc"], setting.name
    assert fields["steps"].default == (10_000 if task == "toy" else 5000)


def test_model_and_source_defaults_come_from_their_definitions():
    features = SparseFeatures(3)
    assert features.magnitude_name == sweep.FIELDS["magnitude"].default
    assert features.feature_probability.unique().tolist() == [
        sweep.FIELDS["feature_probability"].default
    ]
    fields = sweep.SAE_FIELDS
    assert sae.ReLUSAE(1, 2, 2).l1_coefficient.item() == pytest.approx(
        fields["l1_coefficient"].default
    )
    assert sae.JumpReLUSAE(1, 2, 2).l0_coefficient.item() == pytest.approx(
        fields["l0_coefficient"].default
    )
    with pytest.raises(TypeError, match="k"):  # TopK has no default k: a spec must give it
        sae.TopKSAE(1, 2, 2)
    assert fields["k"].default is fields["d_sae"].default  # required
    evaluate = inspect.signature(sae.evaluate).parameters
    assert fields["eval_samples"].default == evaluate["n_samples"].default
    assert SAE_SPARSITY == {kind: cls.sparsity_parameter for kind, cls in sae.KINDS.items()}
    assert SAE_SPARSITY["matryoshka"] == "k" and SAE_SPARSITY["relu"] == "l1_coefficient"


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("task", ["toy", "sae"])
def test_unset_training_fields_resolve_like_the_direct_call(task, monkeypatch):
    """The trainer call a cell with no training field set makes, resolved against the
    trainer's signature, is the direct call with every argument unset (fails on a spec
    default that drifted from the trainer's, as the SAE sweep's 10,000 steps had)."""
    calls = []

    def record(*args, **kwargs):
        calls.append(inspect.signature(TRAINERS[task]).bind(*args, **kwargs))
        raise _Recorded

    monkeypatch.setattr(sweep_execute, "train" if task == "toy" else "train_sae", record)
    cell = spec(task).cells()[0]
    assert run_chunk(Chunk((cell,), 0))[0].status == "error"
    call = calls[0]
    call.apply_defaults()
    direct = inspect.signature(TRAINERS[task]).bind(*call.args[:2])
    direct.apply_defaults()
    for setting in settings(TRAINER_CONFIGS[task]):
        if (task, setting.name) == ("toy", "eval_samples"):  # measured by the sweep itself
            assert cell.config["eval_samples"] == direct.arguments["eval_samples"]
            continue
        assert call.arguments[setting.name] == direct.arguments[setting.name], setting.name


def direct_run(cell, **training):
    """Train ``cell``'s model as execute builds it, calling the trainer directly with only
    ``training`` given; returns the trained module."""
    config = cell.config
    if cell.task == "sae":
        model = build_sae([config])
        sae.train(
            model,
            sae_source(config),
            **training,
            log_every=SAE_LOG_EVERY,
            seed=stream_seed(config["data_seed"], TRAIN_STREAM),
            progress=False,
        )
        return model
    model = ToyModel(
        config["kind"],
        1,
        config["n_features"],
        config["n_hidden"],
        torch.tensor([cell.importance()]),
        seed=[config["seed"]],
    )
    probability = torch.full((1, config["n_features"]), config["feature_probability"])
    data = CellStreams(
        probability, [config["seed"]], magnitude=config["magnitude"], stream=TRAIN_STREAM
    )
    train(model, data, **training, eval_data=data.with_stream(EVAL_STREAM), progress=False)
    return model


@pytest.mark.parametrize(
    ("task", "training"),
    [
        ("toy", {"steps": 60}),
        ("sae", {"steps": 60}),
        pytest.param("toy", {"batch_size": 16}, marks=pytest.mark.slow),  # 10,000 steps
        pytest.param("sae", {"batch_size": 16}, marks=pytest.mark.slow),  # 5000 steps
    ],
)
def test_a_cell_trains_like_the_direct_call_with_the_same_fields_unset(task, training):
    cell = spec(task, **training).cells()[0]
    stored = run_chunk(Chunk((cell,), 0), threads=1)[0]
    with cpu_threads(1):
        direct = direct_run(cell, **training)
    assert stored.status == "done"
    for name, tensor in direct.state_dict().items():
        assert torch.equal(stored.weights[name], tensor[0]), name


def test_field_reprs_are_readable():
    text = repr(sweep.SAE_FIELDS)
    assert "lambda" not in text and "function" not in text and "object at" not in text
    assert repr(sweep.SAE_FIELDS["k"]) == (
        "<Field k: int = required [fixed], per instance, when sae_kind in "
        "['topk', 'batchtopk', 'matryoshka']; An int ≥ 1; active latents per sample>"
    )


@pytest.mark.parametrize("task", ["toy", "sae"])
def test_cli_prints_the_fields(task, capsys):
    assert main(["sweep", "--fields", task]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:]
    assert header.split() == ["field", "table", "default", "allowed", "applies", "when", "doc"]
    assert [row.split()[0] for row in rows] == list(TASKS[task])
    column = header.index("default")
    assert all(row[column - 2 : column] == "  " for row in rows)  # aligned
    steps = next(row for row in rows if row.startswith("steps "))
    default = TRAINER_CONFIGS[task].steps
    assert steps.split()[:3] == ["steps", "training", str(default)]
    assert "An int ≥ 1" in steps and steps.endswith("optimisation steps")
    assert "lambda" not in "\n".join(lines) and "object at" not in "\n".join(lines)


def test_cli_fields_details(capsys):
    assert main(["sweep", "--fields", "sae"]) == 0
    rows = {row.split()[0]: row for row in capsys.readouterr().out.splitlines()}
    assert "sae_kind in ['topk', 'batchtopk', 'matryoshka']" in rows["k"]
    assert "required" in rows["k"] and "profile = 'zipf'" in rows["min_probability"]
    assert (
        '"constant"' in rows["schedule"] and "One of constant, linear, cosine" in rows["schedule"]
    )
    assert main(["sweep", "--fields"]) == 0  # the toy task by default
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["kind", "fixed", "required"]
    with pytest.raises(SystemExit):
        main(["sweep", "--fields", "vae"])
    with pytest.raises(SystemExit, match=r"give a SPEC\.toml"):
        main(["sweep"])
