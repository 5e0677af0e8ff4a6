"""``[oof] backend = "dask"`` on a Parquet dataset without ``[flag] pred_probs``: the flag stage
computes the out-of-fold probabilities on the workers and flags partition by partition, as
``cleanpipe flag DATASET --engine dask`` does (issue 21)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli

distributed = pytest.importorskip("distributed")

BOUNDS = (0, 400, 401, 401, 900, 1500)
FLAG_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")


def write_dataset(root, *, n=1500, seed=0):
    """id, three numeric features, string label y (3 classes, 15% flipped), in 5 files."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.7)
    y = np.where(rng.random(n) < 0.15, rng.integers(0, 3, n), y)
    names = np.array(["ant", "bee", "cat"])[y]
    os.makedirs(root)
    for i, (a, b) in enumerate(zip(BOUNDS[:-1], BOUNDS[1:])):
        pq.write_table(pa.table({"id": np.arange(a, b), "a": X[a:b, 0], "b": X[a:b, 1],
                                 "c": X[a:b, 2], "y": names[a:b]}),
                       os.path.join(root, f"part-{i:03d}.parquet"))


def read_flags(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files])


@pytest.fixture
def data(tmp_path, monkeypatch):
    for module in ("cleanpipe.pipeline.stages", "cleanpipe.pipeline.runner", "cleanpipe.cli.flag"):
        monkeypatch.setattr(f"{module}.SCALE_SAMPLE_ROWS", 600)  # a sample smaller than the table
    write_dataset(tmp_path / "data")
    return tmp_path / "data"


def pipeline_file(folder, scheduler):
    path = folder / "oofparts.toml"
    path.write_text('name = "oofparts"\nstages = ["flag"]\n[source]\ntype = "parquet"\n'
                    'path = "data"\n[columns]\nlabel = "y"\nids = ["id"]\n[oof]\nmodel = "logreg"\n'
                    f'folds = 3\nseed = 5\nbackend = "dask"\nscheduler = "{scheduler}"\n')
    return path


def test_pipeline_computes_the_probabilities_on_the_workers(tmp_path, data, cluster):
    addr = cluster.scheduler_address
    ref = tmp_path / "ref"
    res = run_cli("flag", data, "--engine", "dask", "--scheduler", addr, "--label", "y", "--id",
                  "id", "--model", "logreg", "--folds", "3", "--seed", "5", "--out", ref, "--json")
    assert res.exit_code == 0, res.output
    res = run_cli("run", pipeline_file(tmp_path, addr), "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    out = os.path.join(run_dir, "flag", "flags")
    got, want = read_flags(out), read_flags(ref)
    for col in ("id", *FLAG_COLUMNS):
        assert got[col].to_pylist() == want[col].to_pylist(), col
    record = manifest(run_dir)["stages"]["flag"]
    assert record["status"] == "done"
    oof = record["summary"]["oof"]
    assert oof["model"] == "logreg" and oof["folds"] == 3 and oof["predicted"] == 5
    assert 600 < oof["training_rows"] < 1200  # ~600 x 3/2, sampled from 1500 rows
    with open(os.path.join(run_dir, "flag", "summary.json")) as fh:
        summary = json.load(fh)
    assert summary["oof"]["features"] == ["a", "b", "c"]
    again = run_cli("run", pipeline_file(tmp_path, addr), "--runs-dir", tmp_path / "runs", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["actions"]["flag"] == "reused"


@pytest.mark.parametrize("sets, expected", [
    (["stages=['oof', 'flag']"], "so the oof stage has nothing to compute; write stages = ['flag']"),
    (["stages=['flag', 'clean', 'retrain']"], "retrain trains one model on one machine; write "
                                               "stages = ['flag', 'clean']"),
    (["flag.checks=true"], "where [flag] checks is not available"),
    (["oof.n_jobs=4"], "[oof] n_jobs 4 does not apply when the fold models are fitted partition by "
                       "partition on Dask"),
    (["oof.device='cuda'"], "[oof] device cuda is not available when the fold models are fitted "
                            "partition by partition on Dask"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, data, sets, expected):
    pipe = pipeline_file(tmp_path, "tcp://127.0.0.1:9")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", *(a for s in sets for a in ("--set", s)))
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "runs").exists()
