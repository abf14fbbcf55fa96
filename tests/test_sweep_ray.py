"""The Ray backend on a local 2-CPU Ray: same stored results as the local backend."""

import pandas as pd
import pytest

from superpose import sweep
from superpose.sweep import SweepSpec

ray = pytest.importorskip("ray")

COMPARED = ["status", "final_loss", "dimensions_per_feature", "mean_superposition", "mean_norm"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_stores_the_same_results_as_local(local_ray, tmp_path):
    spec = SweepSpec.from_dict(
        {
            "name": "ray",
            "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
            "axes": {
                "feature_probability": {"logspace": [1, 0.05], "num": 3},
                "seed": [0, 1],
                # lr is not per-instance: two packing groups
                "lr": [0.01, 0.003],
            },
            "training": {"steps": 60, "batch_size": 128, "eval_samples": 2048},
            "execution": {"max_chunk_cells": 2},
        }
    )
    on_ray = sweep.run(spec, out=tmp_path / "ray", backend="ray", progress=False)
    assert (on_ray.done, on_ray.failed) == (12, 0)
    assert ray.is_initialized()  # a Ray it did not start is left running
    sweep.run(spec, out=tmp_path / "local", progress=False)
    a = sweep.load(tmp_path / "ray").set_index("config_hash").sort_index()
    b = sweep.load(tmp_path / "local").set_index("config_hash").sort_index()
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED], rtol=1e-5, atol=1e-7)
    resumed = sweep.run(spec, out=tmp_path / "ray", backend="ray", progress=False)
    assert (resumed.done, resumed.skipped) == (0, 12)


def test_ray_backend_runs_sae_cells(local_ray, tmp_path):
    spec = SweepSpec.from_dict(
        {
            "name": "ray_sae",
            "task": "sae",
            "fixed": {"n_features": 12, "d_model": 6, "d_sae": 12},
            "axes": {"sae_kind": ["relu", "topk"], "l1_coefficient": [0.003, 0.03], "k": [1, 3]},
            "training": {"steps": 40, "batch_size": 64, "lr": 0.003, "eval_samples": 1024},
            "execution": {"max_chunk_cells": 1},
        }
    )
    on_ray = sweep.run(spec, out=tmp_path / "ray", backend="ray", progress=False)
    assert (on_ray.done, on_ray.failed) == (4, 0)
    sweep.run(spec, out=tmp_path / "local", progress=False)
    a = sweep.load(tmp_path / "ray").set_index("config_hash").sort_index()
    b = sweep.load(tmp_path / "local").set_index("config_hash").sort_index()
    compared = ["status", "final_loss", "mcc", "l0", "explained_variance", "f1"]
    pd.testing.assert_frame_equal(a[compared], b[compared], rtol=1e-5, atol=1e-7)
    resumed = sweep.run(spec, out=tmp_path / "ray", backend="ray", progress=False)
    assert (resumed.done, resumed.skipped) == (0, 4)
