"""Fold fits on a Dask cluster give the same out-of-fold probabilities as local loky workers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import run_cli

from cleanpipe.oof import cross_val_probs

distributed = pytest.importorskip("distributed")


@pytest.mark.slow  # starting loky's worker processes takes seconds on a small machine
def test_dask_and_loky_give_identical_out_of_fold_probabilities(digits_table, cluster):
    names = [c for c in digits_table.column_names if c.startswith("pixel_")]
    X = np.column_stack([digits_table.column(c).to_numpy() for c in names])[:900]
    y = digits_table.column("label").to_numpy()[:900]
    loky = cross_val_probs(X, y, model="logreg", folds=3, seed=7, n_jobs=2, backend="loky")
    dask = cross_val_probs(X, y, model="logreg", folds=3, seed=7, backend="dask",
                           scheduler=cluster.scheduler_address)
    np.testing.assert_allclose(dask.pred_probs, loky.pred_probs, rtol=0, atol=1e-6)
    assert np.array_equal(dask.pred_probs, loky.pred_probs)  # the same fits, combined in fold order


def test_pipeline_and_flag_cli_run_on_the_cluster(tmp_path, cluster, tiny_table):
    pq.write_table(tiny_table, tmp_path / "tiny.parquet")
    pipe = tmp_path / "tiny.toml"
    pipe.write_text('stages = ["oof", "flag"]\n[source]\ntype = "parquet"\npath = "tiny.parquet"\n'
                    '[columns]\nids = ["row_id"]\n[oof]\nmodel = "logreg"\nfolds = 3\n')
    common = ("run", pipe, "--until", "oof", "--json")
    local = run_cli(*common, "--runs-dir", tmp_path / "runs-loky")
    remote = run_cli(*common, "--runs-dir", tmp_path / "runs-dask", "--backend", "dask",
                     "--scheduler", cluster.scheduler_address)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    dirs = [json.loads(r.stdout)["run_dir"] for r in (local, remote)]
    a, b = (np.load(f"{d}/oof/pred_probs.npy") for d in dirs)
    assert np.array_equal(a, b)
    # The backend is not part of the stage key: a loky run reuses what the cluster computed.
    again = run_cli(*common, "--runs-dir", tmp_path / "runs-dask")
    assert json.loads(again.stdout)["actions"]["oof"] == "reused"

    out = tmp_path / "flags.parquet"
    res = run_cli("flag", tmp_path / "tiny.parquet", "--model", "logreg", "--folds", "3", "--id", "row_id",
                  "--out", out, "-q", "--backend", "dask", "--scheduler", cluster.scheduler_address)
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).num_rows == 60


def test_unreachable_scheduler_is_a_config_error(repo, monkeypatch):
    monkeypatch.setattr("cleanpipe.oof.DASK_CONNECT_TIMEOUT", 1.0)
    res = run_cli("run", repo / "pipelines" / "digits_parquet.toml", "--runs-dir", repo / "runs",
                  "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert res.exit_code == 2
    assert "[oof] scheduler" in res.stderr and "cannot reach the Dask scheduler" in res.stderr
    assert not (repo / "runs").exists()  # found before anything was written
