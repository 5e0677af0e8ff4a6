"""The clean stage after a flag stage that ran partition by partition on Dask: the partitioned
clean of ``cleanpipe clean FLAGS --engine dask`` on the same cluster, into the run directory,
resumable per partition, the input untouched; a retrain stage after it refused (issue 21)."""

from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli
from test_partitioned_flag import write_dataset as write_probs_dataset
from test_partitioned_oof_stage import write_dataset as write_features_dataset

distributed = pytest.importorskip("distributed")


def _faults():
    """``(error_lines, full_disk)`` of ``tests/partition_faults.py``."""
    import importlib.util
    import sys
    name = "cleanpipe_partition_faults"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "partition_faults.py")
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    module = sys.modules[name]
    return module.error_lines, module.full_disk


def read_parts(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files])


def checksums(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in sorted(os.listdir(folder))}


def pipeline_file(folder, scheduler, *, mode="drop", probs=True):
    """``parts.toml``: flag ``data/`` on the cluster (its probs column, or probabilities computed
    on the workers), then clean the flags with ``mode``."""
    flag = '[flag]\npred_probs = "probs"\n' if probs else ""
    model = "" if probs else 'model = "logreg"\nfolds = 3\nseed = 5\n'
    path = folder / "parts.toml"
    path.write_text('name = "parts"\nstages = ["flag", "clean"]\n[source]\ntype = "parquet"\n'
                    'path = "data"\n[columns]\nlabel = "y"\nids = ["id"]\n'
                    f'[oof]\n{model}backend = "dask"\nscheduler = "{scheduler}"\n{flag}'
                    f'[clean]\nmode = "{mode}"\n')
    return path


def clean_with_the_cli(flags, out, scheduler, mode):
    res = run_cli("clean", flags, "--engine", "dask", "--scheduler", scheduler, "--mode", mode,
                  "--out", out, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("mode", ["drop", "weight", "relabel"])
def test_cleaned_rows_equal_the_cli_and_the_input_is_untouched(tmp_path, cluster, mode):
    write_probs_dataset(tmp_path / "data")
    before = checksums(tmp_path / "data")
    addr = cluster.scheduler_address
    pipe = pipeline_file(tmp_path, addr, mode=mode)
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    cleaned = os.path.join(run_dir, "clean", "cleaned")
    assert {"_SUCCESS", "_manifest.json"} <= set(os.listdir(cleaned))
    assert sorted(f for f in os.listdir(cleaned) if f.endswith(".parquet")) == sorted(before)

    counts = clean_with_the_cli(os.path.join(run_dir, "flag", "flags"), tmp_path / "ref", addr, mode)
    got, want = read_parts(cleaned), read_parts(tmp_path / "ref")
    assert got.column_names == want.column_names
    assert {"id", "y", "probs"} <= set(got.column_names)  # every original column kept
    assert got.to_pydict() == want.to_pydict()  # row for row, every column
    assert got.num_rows == counts["rows_out"] and counts["rows_in"] == 1500
    if mode == "drop":
        assert 0 < counts["dropped"] and got.num_rows == 1500 - counts["dropped"]

    m = manifest(run_dir)
    record = m["stages"]["clean"]
    assert record["status"] == "done"
    assert record["outputs"] == {"cleaned": "clean/cleaned", "summary": "clean/summary.json"}
    assert record["rows_in"] == 1500 and record["rows_out"] == counts["rows_out"]
    assert record["settings"]["mode"] == mode and record["settings"]["label"] == "y"
    assert record["summary"]["flagged"] == counts["flagged"]
    assert record["summary"]["written"] == {"computed": 5, "reused": 0}
    assert m["status"] == "done"
    assert not [f for f in os.listdir(run_dir) if ".partial" in f]

    again = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["actions"] == {"flag": "reused", "clean": "reused"}
    assert checksums(tmp_path / "data") == before


def test_probabilities_computed_on_the_workers_then_cleaned(tmp_path, cluster, monkeypatch):
    for module in ("cleanpipe.pipeline.stages", "cleanpipe.pipeline.runner"):
        monkeypatch.setattr(f"{module}.SCALE_SAMPLE_ROWS", 600)  # a sample smaller than the table
    write_features_dataset(tmp_path / "data")
    before = checksums(tmp_path / "data")
    addr = cluster.scheduler_address
    res = run_cli("run", pipeline_file(tmp_path, addr, probs=False), "--runs-dir", tmp_path / "runs",
                  "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    counts = clean_with_the_cli(os.path.join(run_dir, "flag", "flags"), tmp_path / "ref", addr, "drop")
    got = read_parts(os.path.join(run_dir, "clean", "cleaned"))
    assert got.to_pydict() == read_parts(tmp_path / "ref").to_pydict()
    assert {"id", "a", "b", "c", "y"} <= set(got.column_names)
    assert 0 < counts["dropped"] and got.num_rows == counts["rows_out"]
    assert checksums(tmp_path / "data") == before


def test_a_failed_partition_resumes_without_redoing_the_others(tmp_path, cluster, monkeypatch):
    error_lines, full_disk = _faults()
    from cleanpipe.pipeline.config import load_pipeline
    from cleanpipe.pipeline.manifest import stage_key
    from cleanpipe.pipeline.runner import stage_settings
    from cleanpipe.sources import ParquetSource

    data = tmp_path / "data"
    write_probs_dataset(data)
    pipe = pipeline_file(tmp_path, cluster.scheduler_address)
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "parts" / "r1"
    p = load_pipeline(pipe)
    flag_key = stage_key("flag", ParquetSource(str(data)).fingerprint(), stage_settings(p, "flag"))
    key = stage_key("clean", flag_key, stage_settings(p, "clean"))
    partial = run_dir / f"clean.partial-{key.rsplit(':', 1)[-1][:16]}"
    with monkeypatch.context() as mp:
        full_disk(mp, partial, "part-002.parquet")  # the disk fills while that file is written
        res = run_cli("run", pipe, "--runs-dir", runs, "--run-id", "r1")
    assert res.exit_code == 2, res.output
    assert "Traceback (most recent call last)" not in res.output
    assert error_lines(res.output)[-1].endswith(
        f"cannot write '{partial}/part-002.parquet' (no space left on the device); free some space "
        "or write the outputs elsewhere; the partitions already written are kept and a rerun "
        "resumes from them")
    m = manifest(run_dir)
    assert m["stages"]["flag"]["status"] == "done" and m["stages"]["clean"]["status"] == "failed"
    written = {f: os.stat(partial / f).st_mtime_ns for f in os.listdir(partial)
               if f.endswith(".parquet") and f != "part-002.parquet"}
    assert len(written) == 4 and not (partial / "_SUCCESS").exists()
    assert not (partial / "part-002.parquet").exists()
    assert not [f for f in os.listdir(partial) if f.startswith(".tmp-")]  # nothing half-written

    res = run_cli("run", pipe, "--runs-dir", runs, "--run-id", "r1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["actions"] == {"flag": "reused", "clean": "ran"}
    cleaned = run_dir / "clean" / "cleaned"
    assert manifest(run_dir)["stages"]["clean"]["summary"]["written"] == {"computed": 1, "reused": 4}
    assert {f: os.stat(cleaned / f).st_mtime_ns for f in written} == written  # not rewritten
    assert not partial.exists()
    clean_with_the_cli(run_dir / "flag" / "flags", tmp_path / "ref", cluster.scheduler_address, "drop")
    assert read_parts(cleaned).to_pydict() == read_parts(tmp_path / "ref").to_pydict()


@pytest.mark.parametrize("sets, expected", [
    (["stages=['flag', 'clean', 'retrain']"],
     "retrain trains one model on one machine; write stages = ['flag', 'clean'] (then cleanpipe "
     "retrain <run>/clean/cleaned"),
    (["clean.drop_outliers=true"], "where [clean] drop_outliers is not available"),
    (["sink.type='parquet'", "sink.cleaned='cleaned.parquet'"],
     "its cleaned dataset stays in the run directory (<run>/clean/cleaned/), so remove [sink] cleaned"),
    (["clean.mode='trim'"], "[clean] mode"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, sets, expected):
    write_probs_dataset(tmp_path / "data")
    pipe = pipeline_file(tmp_path, "tcp://127.0.0.1:9")  # unreachable: refused before connecting
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", *(a for s in sets for a in ("--set", s)))
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "runs").exists()
