"""Pipelines over S3 (moto), injection-shaped DuckDB names, and secrets that must never leak."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import FAST, manifest, only_run_dir, run_cli

from cleanpipe.sources import ParquetSource

EVIL = 'x"; DROP TABLE keep; --'


def test_s3_round_trip_hive_source_to_s3_sink(tmp_path, tiny_table, s3_env):
    endpoint, bucket = s3_env
    from cleanpipe.sources import filesystem_for
    fs, _ = filesystem_for(f"s3://{bucket}", s3_endpoint=endpoint)
    ds.write_dataset(tiny_table, f"{bucket}/train", filesystem=fs, format="parquet",
                     partitioning=["colour"], partitioning_flavor="hive")
    pipe = tmp_path / "s3.toml"
    pipe.write_text(f"""
stages = ["oof", "flag", "clean"]
[source]
type = "parquet"
path = "s3://{bucket}/train/"
s3_endpoint = "{endpoint}"
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
[sink]
type = "parquet"
s3_endpoint = "{endpoint}"
flags = "s3://{bucket}/out/flags.parquet"
cleaned = "s3://{bucket}/out/cleaned.parquet"
""")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = only_run_dir(tmp_path / "runs", "s3")
    m = manifest(run_dir)
    assert m["input"]["data"] == "source/data.parquet" and m["input"]["rows"] == 60
    remote = ParquetSource(f"s3://{bucket}/out/flags.parquet", s3_endpoint=endpoint).reader().read_all()
    local = pq.read_table(run_dir / "flag" / "flags.parquet")
    assert remote.equals(local) and remote.num_rows == 60
    assert "colour" in remote.column_names  # the hive partition key came through as a column
    cleaned = ParquetSource(f"s3://{bucket}/out/cleaned.parquet", s3_endpoint=endpoint).reader().read_all()
    assert cleaned.num_rows == m["stages"]["clean"]["rows_out"]
    # Unchanged listing: the snapshot is not downloaded again and every stage is reused.
    again = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert set(json.loads(again.stdout)["actions"].values()) == {"reused"}


def test_duckdb_injection_shaped_source_and_sink_names(tmp_path, tiny_table):
    duckdb = pytest.importorskip("duckdb")
    from cleanpipe.sources import quote_ident
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.register("t", tiny_table.rename_columns(["row_id", "x;1", 'qu"ote', "label"]))
    con.execute(f"CREATE TABLE {quote_ident(EVIL)} AS SELECT * FROM t")
    con.execute("CREATE TABLE keep AS SELECT 42 AS answer")
    con.close()
    pipe = tmp_path / "evil.toml"
    pipe.write_text(f"""
stages = ["oof", "flag"]
[source]
type = "duckdb"
database = "w.duckdb"
table = '{EVIL}'
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
[sink]
type = "duckdb"
database = "w.duckdb"
flags = '{EVIL}_flags; DROP TABLE keep'
""")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    con = duckdb.connect(str(db), read_only=True)
    tables = sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    assert tables == sorted(["keep", EVIL, f"{EVIL}_flags; DROP TABLE keep"])
    assert con.execute("SELECT answer FROM keep").fetchall() == [(42,)]
    flags = con.sql(f"SELECT * FROM {quote_ident(EVIL + '_flags; DROP TABLE keep')}").to_arrow_table()
    con.close()
    assert flags.num_rows == 60 and {"x;1", 'qu"ote', "is_label_issue"} <= set(flags.column_names)


@pytest.mark.postgres
@pytest.mark.slow
def test_password_from_pgpassword_appears_nowhere(repo, digits_table, pg_env, caplog):
    password = pg_env["PGPASSWORD"]
    from cleanpipe.sources import PostgresSink
    PostgresSink().write("digits", pa.RecordBatchReader.from_batches(digits_table.schema,
                                                                     digits_table.to_batches()))
    runs = repo / "runs"
    with caplog.at_level(logging.DEBUG):
        ok = run_cli("-vv", "run", repo / "pipelines" / "digits_postgres.toml", "--runs-dir", runs, *FAST)
        assert ok.exit_code == 0, ok.output
        as_json = run_cli("run", repo / "pipelines" / "digits_postgres.toml", "--runs-dir", runs, "--json", *FAST)
        assert as_json.exit_code == 0
        # Failures carry driver text: a missing table, then a wrong password
        bad = run_cli("run", repo / "pipelines" / "digits_postgres.toml", "--runs-dir", runs,
                      "--set", 'source.table="nope"')
        assert bad.exit_code == 2 and "nope" in bad.stderr
        wrong = run_cli("run", repo / "pipelines" / "digits_postgres.toml", "--runs-dir", runs,
                        env={"PGPASSWORD": password + "-wrong"})
        assert wrong.exit_code == 2 and "password authentication failed" in wrong.stderr
    texts = [r.stdout + r.stderr for r in (ok, as_json, bad, wrong)] + [caplog.text]
    assert "digits_postgres: run" in ok.stdout and any("INFO" in t or "copying" in t for t in texts)
    for text in texts:
        assert password not in text
    run_dir = only_run_dir(runs, "digits_postgres")
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    for path in run_dir.rglob("*.parquet"):
        meta = pq.read_schema(path).metadata or {}
        assert all(password.encode() not in v for v in meta.values())
    assert password not in json.dumps(manifest(run_dir))
