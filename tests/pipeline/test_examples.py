"""The shipped example pipelines, end to end: Parquet, DuckDB and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import FAST, manifest, only_run_dir, run_cli
from sklearn.metrics import f1_score

FLAG_COLUMNS = ["given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"]


def _check_flags(flags: pa.Table, digits: pa.Table) -> None:
    assert flags.num_rows == digits.num_rows
    assert flags.column_names[:len(digits.column_names)] == digits.column_names
    assert flags.column_names[-5:] == FLAG_COLUMNS
    truth = flags.column("is_flipped").to_numpy(zero_copy_only=False)
    found = flags.column("is_label_issue").to_numpy(zero_copy_only=False)
    assert f1_score(truth, found) > 0.6  # logreg on digits with 30% flipped labels


@pytest.mark.slow  # all four stages on the 1797-row table, twice: about 10 s on a busy 2-core box
def test_parquet_pipeline_runs_all_four_stages_then_resumes_without_work(repo, digits_table):
    runs = repo / "runs"
    res = run_cli("run", repo / "pipelines" / "digits_parquet.toml", "--runs-dir", runs, *FAST)
    assert res.exit_code == 0, res.output
    run_dir = only_run_dir(runs, "digits_parquet")
    m = manifest(run_dir)
    assert m["status"] == "done" and m["input"]["rows"] == 1797
    assert [m["stages"][s]["status"] for s in ("oof", "flag", "clean", "retrain")] == ["done"] * 4
    for stage in ("oof", "flag", "clean", "retrain"):
        rec = m["stages"][stage]
        assert rec["seconds"] >= 0 and rec["peak_rss_mib"] > 0 and rec["key"].startswith("sha256:")
    assert m["versions"]["cleanpipe"] and m["settings"]["oof"]["folds"] == 3
    assert np.load(run_dir / "oof" / "pred_probs.npy").shape == (1797, 10)
    flags = pq.read_table(repo / "examples" / "data" / "out" / "digits.flags.parquet")
    _check_flags(flags, digits_table)
    assert flags.equals(pq.read_table(run_dir / "flag" / "flags.parquet"))
    cleaned = pq.read_table(repo / "examples" / "data" / "out" / "digits.cleaned.parquet")
    assert cleaned.num_rows == 1797 - m["stages"]["flag"]["summary"]["flagged"]
    assert {"model.pt", "model.json", "metrics.json"} <= {p.name for p in (run_dir / "retrain" / "model").iterdir()}
    assert "digits_parquet: run" in res.stdout and "retrain" in res.stdout

    again = run_cli("run", repo / "pipelines" / "digits_parquet.toml", "--runs-dir", runs, *FAST, "--json")
    assert again.exit_code == 0, again.output
    import json
    out = json.loads(again.stdout)
    assert out["actions"] == {s: "reused" for s in ("oof", "flag", "clean", "retrain")}
    assert manifest(run_dir)["stages"]["oof"]["finished"] == m["stages"]["oof"]["finished"]


def test_duckdb_pipeline_writes_tables_back(repo, digits_table):
    duckdb = pytest.importorskip("duckdb")
    db = repo / "examples" / "data" / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    # The loading step documented at the top of pipelines/digits_duckdb.toml.
    con.execute(f"CREATE OR REPLACE TABLE digits AS FROM '{repo / 'examples' / 'data' / 'digits_noisy.parquet'}'")
    con.close()
    res = run_cli("run", repo / "pipelines" / "digits_duckdb.toml", "--runs-dir", repo / "runs", *FAST)
    assert res.exit_code == 0, res.output
    m = manifest(only_run_dir(repo / "runs", "digits_duckdb"))
    assert m["status"] == "done" and m["input"]["kind"] == "duckdb"
    assert m["input"]["data"] == "source/data.parquet"  # a snapshot: every stage saw the same rows
    con = duckdb.connect(str(db), read_only=True)
    tables = sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    assert tables == ["digits", "digits_cleaned", "digits_flags"]
    flags = con.sql("SELECT * FROM digits_flags ORDER BY row_id").to_arrow_table()
    cleaned = con.sql("SELECT * FROM digits_cleaned").to_arrow_table()
    con.close()
    _check_flags(flags, digits_table)
    assert cleaned.num_rows == 1797 and "sample_weight" in cleaned.column_names  # mode = "weight"
    assert m["stages"]["clean"]["published"]["rows"] == 1797


@pytest.mark.postgres
def test_postgres_pipeline_reads_and_writes_through_adbc(repo, digits_table, pg_env):
    from cleanpipe.sources import PostgresSink, PostgresSource
    PostgresSink().write("digits", pa.RecordBatchReader.from_batches(digits_table.schema,
                                                                     digits_table.to_batches()))
    res = run_cli("run", repo / "pipelines" / "digits_postgres.toml", "--runs-dir", repo / "runs", *FAST)
    assert res.exit_code == 0, res.output
    run_dir = only_run_dir(repo / "runs", "digits_postgres")
    m = manifest(run_dir)
    assert m["status"] == "done" and m["input"]["kind"] == "postgres" and m["input"]["rows"] == 1797
    assert (run_dir / "retrain" / "model" / "model.pt").is_file()
    with PostgresSource(query="SELECT * FROM digits_flags ORDER BY row_id") as src:
        flags = src.reader().read_all()
    _check_flags(flags, digits_table)
    with PostgresSource(table="digits_cleaned") as src:
        cleaned = src.reader().read_all()
    assert "original_label" in cleaned.column_names  # mode = "relabel"
    assert m["stages"]["clean"]["summary"]["relabelled"] > 0
    with PostgresSource(table="digits") as src:  # the source table is never modified
        assert src.schema().names == digits_table.column_names
