"""SAE cells in sweeps: specs, hashes, packing independence, the store's columns, load_model,
resume and the dry-run plan."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from superpose import sae, sweep
from superpose.cli import main
from superpose.sweep import SAE_FIELDS, SAE_SPARSITY, Chunk, SweepSpec, pack, run_chunk
from superpose.sweep.execute import sae_source
from superpose.sweep.packing import bytes_per_cell
from superpose.sweep.streams import EVAL_STREAM, stream_seed

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCORES = ["mmcs", "mcc", "recovered", "l0", "dead_fraction", "mse", "explained_variance"]
SCORES += ["shrinkage", "precision", "recall", "f1", "final_mse", "final_sparsity", "final_aux"]
SCORES += ["latent_precision", "latent_recall", "latent_f1"]  # SynthSAEBench's per-latent F1
CHANCE = ["mmcs_chance", "mcc_chance", "recovered_chance"]  # sae.evaluate's chance levels
SCORES += CHANCE

BASE = {
    "name": "s",
    "task": "sae",
    "fixed": {"n_features": 12, "d_model": 6, "feature_probability": 0.1},
    "axes": {"sae_kind": ["relu", "topk"], "l1_coefficient": [0.003, 0.03], "k": [1, 3]},
    "training": {"steps": 40, "batch_size": 64, "lr": 0.003, "eval_samples": 1024},
}


def make(**changes):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    data["fixed"]["d_sae"] = 12
    for path, value in changes.items():
        table, _, key = path.partition("__")
        if not key:
            data[table] = value
        elif value is None:
            data[table].pop(key, None)
        else:
            data[table][key] = value
    return SweepSpec.from_dict(data)


def test_every_sae_kind_has_a_sparsity_field():
    assert set(SAE_SPARSITY) == set(sae.KINDS)
    assert all(SAE_FIELDS[name].per_instance for name in SAE_SPARSITY.values())


def test_cells_hold_none_for_unused_fields_and_merge():
    spec = make()
    cells = spec.cells()
    # 2 kinds x 2 l1 x 2 k = 8 grid points; relu ignores k and topk ignores l1: 4 cells
    assert spec.shape == (2, 2, 2) and len(cells) == 4
    assert [c.task for c in cells] == ["sae"] * 4
    assert [(c.config["sae_kind"], c.config["l1_coefficient"], c.config["k"]) for c in cells] == [
        ("relu", 0.003, None),
        ("relu", 0.03, None),
        ("topk", None, 1),
        ("topk", None, 3),
    ]
    assert list(cells[0].config) == list(SAE_FIELDS)
    assert cells[0].config["expected_active"] is None  # the constant profile's cells
    # the hash covers the task: no SAE cell can share a toy cell's identity
    canonical = json.dumps(
        {"task": "sae", **cells[0].config}, sort_keys=True, separators=(",", ":")
    )
    assert cells[0].config_hash == hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert cells[0].config_hash == "0668a8e16353a8589885"  # pinned: stores must stay readable
    assert "4 cells (2 sae_kind x 2 l1_coefficient x 2 k; 8 grid points" in sweep.plan(spec)
    assert SweepSpec.from_dict(spec.to_dict()).cells() == cells


def test_toy_cell_hashes_are_unchanged():
    """Hashes computed before SAE cells existed: existing stores keep resuming."""
    sparsity = SweepSpec.from_toml(EXPERIMENTS / "sparsity_grid.toml").cells()
    phase = SweepSpec.from_toml(EXPERIMENTS / "phase_diagram_small.toml").cells()
    assert (len(sparsity), len(phase)) == (72, 144)
    assert (sparsity[0].config_hash, sparsity[-1].config_hash) == (
        "2ba2b0fa6f7ce47d3fad",
        "568ffcb0405dc9917fdc",
    )
    assert (phase[0].config_hash, phase[-1].config_hash) == (
        "71fb91413d47ac6458e7",
        "0d1cc6b2c0cabb242866",
    )
    assert {c.task for c in sparsity} == {"toy"} and "task" not in sparsity[0].config


def test_example_spec():
    spec = SweepSpec.from_toml(EXPERIMENTS / "sae_grid.toml")
    cells = spec.cells()
    assert spec.task == "sae" and len(cells) == 36 and len({c.config_hash for c in cells}) == 36
    chunks = pack(cells, **spec.execution)
    assert [len(c) for c in chunks] == [6] * 6


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"task": "vae"}, ValueError, r"task must be one of \['sae', 'toy'\]"),
        ({"fixed__n_hidden": 2}, ValueError, r"fixed\.n_hidden: n_hidden is a field of task 'toy'"),
        ({"fixed__d_sea": 2}, ValueError, r"fixed\.'d_sea'.*did you mean 'd_sae'"),
        ({"axes__kind": ["relu"]}, ValueError, r"axes\.kind: kind is a field of task 'toy'"),
        (
            {"training__resample_every": 5},
            ValueError,
            r"training\.resample_every: a sweep does not offer resample_every: resampling",
        ),
        (
            {"training__sparsity_warmup_steps": 41},
            ValueError,
            r"sparsity_warmup_steps must be an int in \[0, steps=40\], got 41 \(in the",
        ),
        ({"fixed__seed": 0, "axes__seed": [1]}, ValueError, r"seed is given in both"),
        ({"fixed__steps": 5}, ValueError, r"fixed\.steps: steps belongs in \[training\]"),
        ({"fixed__d_sae": None}, ValueError, r"d_sae is required"),
        ({"axes__sae_kind": ["relu", "gated"]}, ValueError, r"sae_kind must be one of"),
        ({"fixed__profile": "flat"}, ValueError, r"profile must be one of"),
        ({"fixed__directions": "qr"}, ValueError, r"directions must be one of"),
        ({"axes__k": None}, ValueError, r"k is required when sae_kind in \['topk', 'batchtopk'"),
        ({"axes__k": [1, 13]}, ValueError, r"k=13 must be <= d_sae=12 \(in the cell "),
        ({"axes__k": [1.5]}, TypeError, r"k must be int"),
        ({"axes__l1_coefficient": [-1.0]}, ValueError, r"l1_coefficient must be >= 0"),
        (
            {"axes__sae_kind": ["topk"]},
            ValueError,
            r"l1_coefficient is used only when sae_kind = 'relu', which no cell has",
        ),
        (
            {"fixed__expected_active": 3.0},
            ValueError,
            r"expected_active is used only when profile = 'geometric'",
        ),
        (
            {
                "fixed__profile": "zipf",
                "fixed__feature_probability": None,
                "fixed__min_probability": 0.5,
            },
            ValueError,
            r"min_probability=0\.5 must be <= max_probability=0\.3",
        ),
        (
            {
                "fixed__profile": "geometric",
                "fixed__feature_probability": None,
                "fixed__expected_active": 20.0,
            },
            ValueError,
            r"expected_active=20\.0 is unreachable",
        ),
    ],
)
def test_bad_sae_specs_name_the_key(changes, error, match):
    with pytest.raises(error, match=match):
        make(**changes)


def test_a_toy_spec_names_sae_fields():
    spec = {"name": "t", "fixed": {"kind": "relu", "n_features": 2, "n_hidden": 1, "d_sae": 4}}
    with pytest.raises(
        ValueError, match=r"d_sae is a field of task 'sae', not of this spec's task 'toy'"
    ):
        SweepSpec.from_dict(spec)


def test_source_profiles():
    config = dict(make().cells()[0].config)
    constant = sae_source(config)
    assert constant.features.feature_probability.unique().tolist() == pytest.approx([0.1])
    assert constant.directions.shape == (12, 6) and constant.n_instances == 1
    geometric = sae_source({**config, "profile": "geometric", "expected_active": 2.0, "ratio": 0.9})
    assert geometric.features.feature_probability.sum().item() == pytest.approx(2.0)
    zipf = sae_source(
        {
            **config,
            "profile": "zipf",
            "zipf_exponent": 1.0,
            "max_probability": 0.3,
            "min_probability": 0.01,
        }
    )
    assert zipf.features.feature_probability[0, [0, -1]].tolist() == pytest.approx([0.3, 0.01])
    orthogonal = sae_source({**config, "directions": "orthogonal"}).directions[:6]
    torch.testing.assert_close(orthogonal @ orthogonal.T, torch.eye(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(sae_source(config).directions, constant.directions)
    assert not torch.equal(sae_source({**config, "data_seed": 1}).directions, constant.directions)


@pytest.mark.parametrize("kind", sorted(SAE_SPARSITY))
def test_packed_cells_match_cells_trained_alone(kind):
    option = SAE_SPARSITY[kind]
    values = [1, 3] if option == "k" else [0.001, 0.03]
    spec = make(axes={"sae_kind": [kind], option: values, "seed": [0, 1]})
    cells = spec.cells()
    packed = run_chunk(Chunk(tuple(cells), 0))
    assert [r.status for r in packed] == ["done"] * 4 and packed[0].chunk_cells == 4
    # measured: weights bit-identical, scores and losses within 3e-7 of the alone runs
    for k in (1, 2):
        alone = run_chunk(Chunk((cells[k],), 0))[0]
        assert alone.final_loss == pytest.approx(packed[k].final_loss, rel=1e-5, abs=1e-6)
        assert alone.weights.keys() == packed[k].weights.keys()
        for name, tensor in alone.weights.items():
            torch.testing.assert_close(tensor, packed[k].weights[name], rtol=1e-5, atol=1e-6)
        assert alone.metrics.keys() == packed[k].metrics.keys() == set(SCORES)
        for name, value in alone.metrics.items():
            assert value == pytest.approx(packed[k].metrics[name], rel=1e-5, abs=1e-6), name
    # instances differ: the hyper-parameter and the seed matter
    assert not torch.equal(packed[0].weights["W_dec"], packed[1].weights["W_dec"])
    assert not torch.equal(packed[0].weights["W_dec"], packed[2].weights["W_dec"])


def test_memory_estimate_bounds_chunks():
    cells = make(axes={"sae_kind": ["topk"], "k": [1, 2, 3, 4, 5]}).cells()
    small, large = (bytes_per_cell({**cells[0].config, "d_sae": d}, "sae") for d in (12, 48))
    assert 3 < large / small < 4  # latent-sized tensors dominate
    per_cell = bytes_per_cell(cells[0].config, "sae")
    tight = pack(cells, memory_budget_mb=2.5 * per_cell / 2**20, max_chunk_cells=100)
    assert [len(c) for c in tight] == [2, 2, 1]


def test_store_columns_load_model_and_resume(tmp_path):
    spec = make(axes={"sae_kind": ["relu", "batchtopk"], "l1_coefficient": [0.01], "k": [2, 4]})
    summary = sweep.run(spec, out=tmp_path, progress=False)
    assert (summary.cells, summary.done, summary.failed) == (3, 3, 0)
    frame = sweep.load(tmp_path)
    assert list(frame.columns[:4]) == ["config_hash", "status", "error", "task"]
    assert list(frame.columns[4 : 4 + len(SAE_FIELDS)]) == list(SAE_FIELDS)
    assert set(SCORES) <= set(frame.columns) and "kind" not in frame and "n_hidden" not in frame
    assert set(frame.task) == {"sae"} and set(frame.status) == {"done"}
    for column in ["final_loss", *SCORES]:
        assert frame[column].notna().all(), column
    assert frame.k.isna().tolist() == [True, False, False]
    assert frame.k.dtype == "Int64" and frame.k.tolist()[1:] == [2, 4]  # NULL for relu
    assert frame.l1_coefficient.isna().tolist() == [False, True, True]
    assert (frame.explained_variance > 0).all() and (frame.mmcs > 0.3).all()

    row = frame.iloc[2]
    model = sweep.load_model(tmp_path, row.config_hash)
    assert isinstance(model, sae.BatchTopKSAE) and not model.training
    assert (model.n_instances, model.d_in, model.d_sae) == (1, 6, 12) and model.k.tolist() == [4]
    assert model.threshold.item() > 0
    weights = sweep.load_weights(tmp_path, row.config_hash)
    assert set(weights) == {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold"}
    assert torch.equal(model.W_dec[0], weights["W_dec"])
    # the stored scores are the loaded SAE's scores on the cell's held-out stream
    rescored = sae.evaluate(
        model,
        sae_source(row),
        int(row.eval_samples),
        seed=stream_seed(int(row.data_seed), EVAL_STREAM),
        batch_size=int(row.batch_size),
    )
    for name in [*SCORES[:11], *CHANCE]:
        assert rescored[name][0] == pytest.approx(row[name], rel=1e-5, abs=1e-6), name
    assert row.mmcs_chance < row.mmcs  # a trained dictionary beats random ones

    more = make(axes={"sae_kind": ["relu", "batchtopk"], "l1_coefficient": [0.01], "k": [2, 4, 6]})
    resumed = sweep.run(more, out=tmp_path, progress=False)
    assert (resumed.done, resumed.skipped) == (1, 3)
    assert "4 finished, 0 to train" in sweep.plan(more, out=tmp_path)


def test_toy_and_sae_cells_share_a_store(tmp_path):
    toy = SweepSpec.from_dict(
        {
            "name": "toy",
            "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
            "training": {"steps": 5, "batch_size": 16, "eval_samples": 64},
        }
    )
    sweep.run(toy, out=tmp_path, progress=False)
    sweep.run(
        make(axes={"sae_kind": ["topk"], "k": [2]}, training__steps=5), out=tmp_path, progress=False
    )
    frame = sweep.load(tmp_path).set_index("task")
    assert frame.loc["toy", "n_hidden"] == 2 and frame.loc["sae", "d_sae"] == 12
    assert isinstance(
        sweep.load_model(tmp_path, frame.loc["toy", "config_hash"]), sweep.store.ToyModel
    )
    assert isinstance(sweep.load_model(tmp_path, frame.loc["sae", "config_hash"]), sae.TopKSAE)


def test_cli_dry_run(capsys):
    assert (
        main(["sweep", str(EXPERIMENTS / "sae_grid.toml"), "--dry-run", "--out", "/nonexistent"])
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("sweep sae_grid (task sae): 36 cells (3 sae_kind x 2 d_sae x ")
    assert "324 grid points" in text and "0 finished, 36 to train" in text
    assert "6 chunk(s) in 6 group(s)" in text
    assert "sae_kind=topk n_features=64 d_model=32 profile=zipf zipf_exponent=1.0" in text
    assert "per instance: k=[2, 4, 8] seed=[0, 1]" in text
    assert "feature_probability" not in text  # unused by the zipf profile


def test_a_diverged_sae_cell_leaves_the_others_as_alone():
    spec = make(axes={"sae_kind": ["relu"], "l1_coefficient": [0.001, 3e38, 0.01]})
    cells = spec.cells()
    results = {r.cell.config_hash: r for r in run_chunk(Chunk(tuple(cells), 0))}
    bad = results[cells[1].config_hash]
    assert bad.status == "diverged" and "NaN/inf" in bad.error and bad.weights is None
    alone = run_chunk(Chunk((cells[2],), 0))[0]
    packed = results[cells[2].config_hash]
    assert packed.status == "done"
    assert alone.final_loss == pytest.approx(packed.final_loss, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(alone.weights["W_dec"], packed.weights["W_dec"])
