"""Sweep specs: parsing, validation errors that name the key, cells and their hashes, packing."""

import hashlib
import json
from pathlib import Path

import pytest

from superpose.sweep import FIELDS, Cell, SweepSpec, pack, plan
from superpose.sweep.packing import bytes_per_cell

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

BASE = {
    "name": "t",
    "fixed": {"kind": "relu", "n_features": 2, "n_hidden": 1},
    "axes": {"feature_probability": [0.1, 1.0]},
    "training": {"steps": 10},
}


def make(**changes):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for path, value in changes.items():
        table, _, key = path.partition("__")
        if key:
            if value is None:
                data[table].pop(key, None)
            else:
                data[table][key] = value
        else:
            data[table] = value
    return SweepSpec.from_dict(data)


def test_toml_and_dict_give_the_same_cells(tmp_path):
    (tmp_path / "s.toml").write_text(
        """
name = "t"
[fixed]
kind = "relu"
n_features = 2
n_hidden = 1
[axes]
feature_probability = [0.1, 1]
[training]
steps = 10
"""
    )
    from_toml = SweepSpec.from_toml(tmp_path / "s.toml")
    assert [c.config_hash for c in from_toml.cells()] == [c.config_hash for c in make().cells()]


def test_ranges_resolve_to_values():
    spec = make(
        axes={
            "relative_importance": {"logspace": [0.1, 10], "num": 3},
            "feature_probability": {"linspace": [0.5, 1], "num": 2},
            "seed": {"range": 3},
            "n_hidden": {"range": [1, 6, 2]},
        },
        fixed__n_hidden=None,
    )
    assert spec.axes["relative_importance"] == pytest.approx((0.1, 1.0, 10.0))
    assert spec.axes["relative_importance"][0] == 0.1  # ends are exact
    assert spec.axes["feature_probability"] == (0.5, 1.0)
    assert spec.axes["seed"] == (0, 1, 2)
    assert spec.axes["n_hidden"] == (1, 3, 5)
    assert spec.shape == (3, 2, 3, 3)
    cells = spec.cells()
    assert len(cells) == 54
    assert len({c.config_hash for c in cells}) == 54
    # row-major: the last axis varies fastest
    assert [c.config["n_hidden"] for c in cells[:3]] == [1, 3, 5]


def test_cell_config_is_complete_and_hash_is_stable():
    cell = make().cells()[0]
    assert list(cell.config) == list(FIELDS)
    assert cell.config["lr"] == 1e-3 and cell.config["steps"] == 10
    # ints given for float fields are the same cell as the floats
    same = make(axes={"feature_probability": [0.1, 1]}).cells()[1]
    assert same.config_hash == make().cells()[1].config_hash
    assert isinstance(same.config["feature_probability"], float)
    # pinned: a change here silently orphans every stored result
    assert cell.config_hash == Cell.from_config(dict(cell.config)).config_hash
    canonical = json.dumps(dict(cell.config), sort_keys=True, separators=(",", ":"))
    assert cell.config_hash == hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert cell.config_hash == "8df0ee1372380bbc92e8"


def test_importance_profile():
    cell = make(fixed__importance_decay=0.5, fixed__relative_importance=3.0).cells()[0]
    assert cell.importance() == [1.0, 1.5]


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"fixed__n_feature": 2}, ValueError, r"fixed\.'n_feature'.*did you mean 'n_features'"),
        ({"training__stepz": 2}, ValueError, r"training\.'stepz'"),
        ({"fixed__steps": 2}, ValueError, r"fixed\.steps: steps belongs in \[training\]"),
        ({"axes__sparsity": [1]}, ValueError, r"axes\.'sparsity'"),
        ({"execution": {"budget": 1}}, ValueError, r"execution\.'budget'"),
        ({"axes__feature_probability": []}, ValueError, r"axes\.feature_probability is empty"),
        ({"axes__seed": {"range": [3, 3]}}, ValueError, r"axes\.seed\.range \[3, 3\] is empty"),
        ({"axes__seed": {"range": [0, 3, 0]}}, ValueError, r"axes\.seed\.range: step"),
        ({"axes__seed": {"range": 2.5}}, TypeError, r"axes\.seed\.range must be"),
        ({"axes__lr": {"logspace": [0, 1], "num": 3}}, ValueError, r"axes\.lr\.logspace.*> 0"),
        ({"axes__lr": {"logspace": [1e-3, 1e-2], "num": 0}}, ValueError, r"axes\.lr\.num"),
        ({"axes__lr": {"linspace": [1, 2]}}, ValueError, r"axes\.lr\.num"),
        ({"axes__lr": {"linspace": [1, 2], "n": 3}}, ValueError, r"in axes\.lr: 'n'"),
        ({"axes__lr": {"linspace": [1], "num": 3}}, TypeError, r"axes\.lr\.linspace must be"),
        ({"axes__lr": {"num": 3}}, ValueError, r"axes\.lr: a range table needs"),
        ({"axes__lr": 0.1}, TypeError, r"axes\.lr must be a list"),
        ({"axes__seed": [1, 1]}, ValueError, r"axes\.seed repeats values \[1\]"),
        ({"axes__n_hidden": [1, 2]}, ValueError, r"n_hidden is given in both \[fixed\]"),
        ({"fixed__kind": None}, ValueError, r"kind is required"),
        ({"fixed__kind": "sigmoid"}, ValueError, r"kind must be one of"),
        ({"fixed__n_features": 2.5}, TypeError, r"n_features must be int"),
        ({"fixed__seed": True}, TypeError, r"seed must be int"),
        ({"axes__feature_probability": [0.5, 1.5]}, ValueError, r"feature_probability must lie"),
        ({"training__lr": float("nan")}, ValueError, r"lr must be finite"),
        ({"training__schedule": "step"}, ValueError, r"schedule must be one of"),
        ({"training__warmup_steps": -1}, ValueError, r"warmup_steps must be an int >= 0"),
        (
            {"axes__warmup_steps": [0, 11]},
            ValueError,
            r"warmup_steps must be an int in \[0, steps=10\], got 11 \(in the cell "
            r"feature_probability=0\.1, warmup_steps=11\)",
        ),
        ({"training__log_every": 5}, ValueError, r"a sweep does not offer log_every"),
        ({"execution": {"max_chunk_cells": 0}}, ValueError, r"execution\.max_chunk_cells"),
        ({"name": "../x"}, ValueError, r"name '\.\./x'"),
    ],
)
def test_bad_specs_name_the_key(changes, error, match):
    with pytest.raises(error, match=match):
        make(**changes)


def test_unknown_top_level_key_and_missing_name():
    with pytest.raises(ValueError, match=r"unknown key 'axis'.*did you mean 'axes'"):
        SweepSpec.from_dict({**BASE, "axis": {}})
    with pytest.raises(ValueError, match="name is required"):
        SweepSpec.from_dict({k: v for k, v in BASE.items() if k != "name"})


def test_toml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "t"\n[fixed]\nkind = "relu"\nn_features = 2\nn_hidden = 1\nfoo = 1\n')
    with pytest.raises(ValueError, match=r"bad\.toml: unknown key fixed\.'foo'"):
        SweepSpec.from_toml(path)
    path.write_text("name = \n")
    with pytest.raises(ValueError, match=r"bad\.toml: invalid TOML"):
        SweepSpec.from_toml(path)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.name)
def test_example_specs_parse(path):
    spec = SweepSpec.from_toml(path)
    assert spec.cells()
    assert spec.name in plan(spec)


def test_phase_diagram_spec_is_a_few_chunks():
    spec = SweepSpec.from_toml(EXPERIMENTS / "phase_diagram.toml")
    assert spec.shape[:2] == (40, 40)
    chunks = pack(spec.cells(), **spec.execution)
    assert 1 < len(chunks) <= 5
    assert sum(len(c) for c in chunks) == 1600 * spec.shape[2]


def test_pack_groups_by_shape_and_splits_evenly():
    spec = make(
        axes={"n_hidden": [1, 2], "feature_probability": {"linspace": [0.1, 1], "num": 5}},
        fixed__n_hidden=None,
        execution={"max_chunk_cells": 3},
    )
    chunks = pack(spec.cells(), **spec.execution)
    assert [len(c) for c in chunks] == [3, 2, 3, 2]
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    for chunk in chunks:
        assert len({c.group() for c in chunk.cells}) == 1
    assert [c.config_hash for ch in chunks for c in ch.cells] == sorted(
        (c.config_hash for c in spec.cells()),
        key=[c.config_hash for c in spec.cells()].index,
    )
    # the memory budget caps chunks too (and a chunk always holds at least one cell)
    per_cell = bytes_per_cell(spec.cells()[0].config)
    tight = pack(spec.cells(), memory_budget_mb=2.5 * per_cell / 2**20, max_chunk_cells=100)
    assert max(len(c) for c in tight) == 2
    assert len(pack(spec.cells(), memory_budget_mb=1e-9, max_chunk_cells=100)) == 10


def test_plan_text():
    text = plan(make(execution={"max_chunk_cells": 1}), out="/nonexistent/sweep")
    assert "t: 2 cells (2 feature_probability)" in text
    assert "0 finished, 2 to train" in text
    assert "2 chunk(s) in 1 group(s)" in text
