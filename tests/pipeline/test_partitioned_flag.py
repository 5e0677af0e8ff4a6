"""The flag stage partition by partition on Dask (``[oof] backend = "dask"`` with a ``[flag]
pred_probs`` column): the same flags as ``cleanpipe flag --engine dask``, resumable, and the
settings it cannot take refused before any work (issue 21)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli

distributed = pytest.importorskip("distributed")

BOUNDS = (0, 400, 401, 401, 900, 1500)  # a single-row and an empty partition among them
FLAG_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")


def write_dataset(root, *, n=1500, k=3, seed=0):
    """A dataset of len(BOUNDS) - 1 Parquet files: id, string label y, a list column of probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 1.5
    logits[np.arange(n), y] += 2
    p = np.exp(logits)
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), y)
    names = np.array(["ant", "bee", "cat"])[labels]
    os.makedirs(root)
    for i, (a, b) in enumerate(zip(BOUNDS[:-1], BOUNDS[1:])):
        pq.write_table(pa.table({"id": np.arange(a, b), "y": pa.array(names[a:b], pa.string()),
                                 "probs": pa.array(list(p[a:b]), type=pa.list_(pa.float32()))}),
                       os.path.join(root, f"part-{i:03d}.parquet"))


def read_flags(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files])


@pytest.fixture
def data(tmp_path):
    write_dataset(tmp_path / "data")
    return tmp_path / "data"


def pipeline_file(folder, scheduler=None):
    """``parts.toml`` flagging ``data/`` with its probs column: on the cluster at ``scheduler``,
    or on one machine without one."""
    backend = f'backend = "dask"\nscheduler = "{scheduler}"\n' if scheduler else ""
    path = folder / ("parts.toml" if scheduler else "one.toml")
    path.write_text('name = "parts"\nstages = ["flag"]\n[source]\ntype = "parquet"\npath = "data"\n'
                    f'[columns]\nlabel = "y"\nids = ["id"]\n[oof]\n{backend}'
                    '[flag]\npred_probs = "probs"\n')
    return path


def test_pipeline_flags_equal_the_cli_partition_by_partition(tmp_path, data, cluster):
    addr = cluster.scheduler_address
    ref = tmp_path / "ref"
    res = run_cli("flag", data, "--engine", "dask", "--scheduler", addr, "--label", "y",
                  "--pred-probs", "probs", "--out", ref, "--json")
    assert res.exit_code == 0, res.output

    pipe = pipeline_file(tmp_path, addr)
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    out = os.path.join(run_dir, "flag", "flags")
    assert {"_SUCCESS", "_manifest.json"} <= set(os.listdir(out))
    got, want = read_flags(out), read_flags(ref)
    for col in ("id", *FLAG_COLUMNS):
        assert got[col].to_pylist() == want[col].to_pylist(), col
    m = manifest(run_dir)
    record = m["stages"]["flag"]
    assert record["status"] == "done" and record["outputs"]["flags"] == "flag/flags"
    summary = json.loads((tmp_path / "ref" / "_manifest.json").read_text())
    assert record["summary"]["flagged"] == summary["flagged"] and record["summary"]["partitions"] == 5
    assert m["input"]["data"] == str(data) and m["input"]["rows"] == 1500  # read in place
    assert not [f for f in os.listdir(run_dir) if f.startswith(("flag.partial", "source"))]

    # a rerun after success reuses the stage
    again = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["actions"]["flag"] == "reused"

    # the same column flagged on one machine (no backend): the same flags, as one file
    one = run_cli("run", pipeline_file(tmp_path), "--runs-dir", tmp_path / "runs-one", "--json")
    assert one.exit_code == 0, one.output
    single = pq.read_table(os.path.join(json.loads(one.stdout)["run_dir"], "flag", "flags.parquet"))
    for col in ("id", *FLAG_COLUMNS):
        assert single[col].to_pylist() == want[col].to_pylist(), col


def test_a_failed_run_resumes_per_partition(tmp_path, data, cluster, monkeypatch):
    from test_partitioned_clean_stage import _faults
    from cleanpipe.pipeline.config import load_pipeline
    from cleanpipe.pipeline.manifest import stage_key
    from cleanpipe.pipeline.runner import stage_settings
    from cleanpipe.sources import ParquetSource

    pipe = pipeline_file(tmp_path, cluster.scheduler_address)
    runs = tmp_path / "runs"
    p = load_pipeline(pipe)
    key = stage_key("flag", ParquetSource(str(data)).fingerprint(), stage_settings(p, "flag"))
    run_dir = runs / "parts" / "r1"
    partial = run_dir / f"flag.partial-{key.rsplit(':', 1)[-1][:16]}"
    error_lines, full_disk = _faults()
    with monkeypatch.context() as mp:
        full_disk(mp, partial, "part-002.parquet")  # the disk fills while that flags file is written
        res = run_cli("run", pipe, "--runs-dir", runs, "--run-id", "r1")
    assert res.exit_code == 2, res.output
    assert "Traceback (most recent call last)" not in res.output
    assert f"cannot write '{partial}/part-002.parquet' (no space left" in error_lines(res.output)[-1]
    assert manifest(run_dir)["stages"]["flag"]["status"] == "failed"
    written = {f: os.stat(partial / f).st_mtime_ns for f in os.listdir(partial)
               if f.endswith(".parquet") and f != "part-002.parquet"}
    assert len(written) == 4 and not (partial / "part-002.parquet").exists()

    res = run_cli("run", pipe, "--runs-dir", runs, "--run-id", "r1", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads((run_dir / "flag" / "summary.json").read_text())
    # every pass of every partition read back from the failed attempt; one flags file written
    assert all(s["computed"] == 0 and s["reused"] == 5 for s in summary["passes"])
    assert summary["written"] == {"computed": 1, "reused": 4}
    assert {f: os.stat(run_dir / "flag" / "flags" / f).st_mtime_ns for f in written} == written
    assert not partial.exists()


@pytest.mark.parametrize("sets, expected", [
    (["stages=['oof', 'flag']"], "[flag] pred_probs = 'probs' takes the probabilities from the source"),
    (["flag.pred_probs=''"], "[flag] pred_probs is empty"),
    (["oof.scheduler=''"], "[oof] backend = \"dask\" needs scheduler"),
    (["flag.checks=true"], "where [flag] checks is not available"),
    (["stages=['flag', 'clean', 'retrain']"], "retrain trains one model on one machine; write "
                                               "stages = ['flag', 'clean']"),
    (["sink.type='parquet'", "sink.flags='flags.parquet'"], "so remove [sink] flags"),
    (["source.type='csv'"], "[source] type = 'csv' cannot be read that way"),
    (["source.path='data/*.parquet'"], "is a glob: name the dataset's directory"),
    (["source.path='data/part-000.parquet'"], "is a file, not a dataset directory"),
    (["flag.pred_probs='nope'"], "[flag] pred_probs names 'nope', which is not a column of the source"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, data, sets, expected):
    # An unreachable scheduler: every mistake is found before connecting to it.
    pipe = pipeline_file(tmp_path, "tcp://127.0.0.1:9")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", *(a for s in sets for a in ("--set", s)))
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "runs").exists()


def test_s3_dataset_read_by_the_workers(tmp_path, data, cluster, s3_env):
    import pyarrow.fs as pafs

    from cleanpipe.partitions import flag_partitions
    endpoint, bucket = s3_env
    s3 = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                           region="us-east-1")
    for f in sorted(os.listdir(data)):
        with s3.open_output_stream(f"{bucket}/table/{f}") as fh:
            fh.write((data / f).read_bytes())
    pipe = pipeline_file(tmp_path, cluster.scheduler_address)
    pipe.write_text(pipe.read_text().replace('path = "data"\n', f'path = "s3://{bucket}/table/"\n'
                                             f's3_endpoint = "{endpoint}"\n'))
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    assert not os.path.exists(os.path.join(run_dir, "source"))  # nothing copied onto this machine
    flag_partitions(str(data), str(tmp_path / "ref"), label="y", pred_probs="probs")
    got, want = read_flags(os.path.join(run_dir, "flag", "flags")), read_flags(tmp_path / "ref")
    for col in ("id", *FLAG_COLUMNS):
        assert got[col].to_pylist() == want[col].to_pylist(), col
