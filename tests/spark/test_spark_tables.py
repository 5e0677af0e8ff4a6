"""Parquet and Delta tables read and written by local Spark: the files of one Delta version, one
commit per write (a failed job leaves the previous version), the one-line errors of one machine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpipe.errors import InputError
from cleanpipe.io import open_dataset

pytestmark = pytest.mark.spark
deltalake = pytest.importorskip("deltalake", reason="Delta Lake tests need deltalake (cleanpipe[lakehouse])")


def _rows(n: int = 90) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({"row_id": np.arange(n), "x": rng.normal(size=n), "label": rng.integers(0, 3, n)})


def test_write_delta_commits_once_and_reads_back(spark, tmp_path):
    from cleanpipe.spark_tables import read_table, write_delta
    target = tmp_path / "flags"
    df = spark.createDataFrame(_rows()).repartition(3)
    assert write_delta(df, target) == 90
    table = deltalake.DeltaTable(str(target))
    assert table.version() == 0 and table.metadata().description == "written by cleanpipe"
    assert sorted(table.to_pyarrow_dataset().to_table()["row_id"].to_pylist()) == list(range(90))
    assert write_delta(df.where("row_id < 30"), target) == 30
    assert deltalake.DeltaTable(str(target)).version() == 1
    back = read_table(spark, target)
    assert sorted(r["row_id"] for r in back.collect()) == list(range(30))
    assert read_table(spark, target, version=0).count() == 90
    # The same table on one machine: the CLI's reader follows the log too.
    assert open_dataset(target).count_rows() == 30


def test_failed_spark_job_leaves_the_previous_version(spark, tmp_path):
    from pyspark.sql import functions as F

    from cleanpipe.spark_tables import read_table, write_delta
    target = tmp_path / "t"
    df = spark.createDataFrame(_rows()).repartition(3)
    write_delta(df, target)
    failing = df.withColumn("check", F.expr("assert_true(row_id < 80)"))
    with pytest.raises(Exception, match="row_id < 80"):
        write_delta(failing, target)
    assert deltalake.DeltaTable(str(target)).version() == 0
    assert read_table(spark, target).count() == 90


def test_read_errors_are_the_one_machine_errors(spark, tmp_path):
    from cleanpipe.spark_tables import read_table, write_delta
    with pytest.raises(InputError, match="does not exist"):
        read_table(spark, tmp_path / "missing")
    # A label whose type differs between two files of one dataset.
    parts = tmp_path / "parts"
    parts.mkdir()
    rows = _rows()
    pq.write_table(rows.slice(0, 45), parts / "a.parquet")
    pq.write_table(rows.slice(45).set_column(2, "label", rows["label"].slice(45).cast(pa.string())),
                   parts / "b.parquet")
    with pytest.raises(InputError) as remote:
        read_table(spark, parts)
    with pytest.raises(InputError) as local:
        open_dataset(parts)
    assert str(remote.value) == str(local.value) and "disagree on schema" in str(remote.value)
    write_delta(spark.createDataFrame(rows), tmp_path / "d")
    with pytest.raises(InputError, match="at version 5"):
        read_table(spark, tmp_path / "d", version=5)
    with pytest.raises(InputError, match="not a Delta table"):
        read_table(spark, parts, version=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a Delta table and not empty"):
        write_delta(spark.createDataFrame(rows), tmp_path / "mine")


def test_flag_a_delta_table_and_write_the_flags_as_delta(spark, tmp_path):
    """The whole path on Spark: Delta in, flags computed on the executors, Delta out."""
    from cleanpipe import spark as cs
    from cleanpipe.flag import flag_table
    from cleanpipe.flagsfile import FLAG_COLUMNS
    from cleanpipe.spark_tables import read_table, write_delta
    rng = np.random.default_rng(4)
    n, k = 150, 3
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n) * 0.4
    p[np.arange(n), y] += 0.6
    table = pa.table({"row_id": np.arange(n), "label": y,
                      "probs": pa.array(list(p), type=pa.list_(pa.float64()))})
    deltalake.write_deltalake(str(tmp_path / "train"), table)
    flags = cs.flag(read_table(spark, tmp_path / "train"), label="label", pred_probs="probs")
    assert write_delta(flags, tmp_path / "flags") == n
    got = deltalake.DeltaTable(str(tmp_path / "flags")).to_pyarrow_dataset().to_table().sort_by("row_id")
    want = flag_table(table, label="label", pred_probs="probs").table
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col


def test_read_iceberg_snapshots(spark, tmp_path):
    pytest.importorskip("pyiceberg.catalog.sql", reason="Iceberg tests need pyiceberg[sql-sqlite]")
    from cleanpipe.sources import IcebergSink, IcebergSource
    from cleanpipe.spark_tables import read_iceberg
    (tmp_path / "wh").mkdir()
    cat = {"catalog": "t", "catalog_uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"file://{tmp_path}/wh"}
    sink = IcebergSink(**cat)
    rows = _rows()
    sink.write("lab.train", rows.to_reader(max_chunksize=40))
    first = IcebergSource("lab.train", **cat)
    first.fingerprint()
    sink.write("lab.train", rows.slice(0, 20).to_reader())
    df = read_iceberg(spark, "lab.train", **cat)
    assert sorted(r["row_id"] for r in df.collect()) == list(range(20))
    assert df.columns == rows.column_names
    old = read_iceberg(spark, "lab.train", snapshot_id=first.snapshot_id, **cat)
    assert old.count() == 90
    with pytest.raises(InputError, match="not found"):
        read_iceberg(spark, "lab.nope", **cat)
    # A renamed column: the old files hold the old name, which Spark would read as nulls.
    table = sink._cat.catalog().load_table("lab.train")
    with table.update_schema() as update:
        update.rename_column("x", "feature")
    table.append(rows.slice(0, 5).rename_columns(["row_id", "feature", "label"]))
    with pytest.raises(InputError, match="was renamed or dropped"):
        read_iceberg(spark, "lab.train", **cat)


def test_a_write_the_system_refuses_is_one_line_and_the_table_is_unchanged(spark, tmp_path,
                                                                           monkeypatch):
    """A partition's file cannot be written (a folder is where the file goes: EISDIR from the
    system, on the executor): one line naming the file and the fix, not Spark's Python trace;
    the other partitions' files are removed and nothing is committed."""
    import os
    import types

    from cleanpipe import spark_tables
    from cleanpipe.spark_tables import read_table, write_delta
    target = tmp_path / "t"
    df = spark.createDataFrame(_rows()).repartition(3)
    write_delta(df, target)
    before = sorted(os.listdir(target))
    monkeypatch.setattr(spark_tables, "uuid", types.SimpleNamespace(
        uuid4=lambda: types.SimpleNamespace(hex="feed")))  # the driver names the files
    blocked = target / "part-00001-feed.c000.zstd.parquet"
    blocked.mkdir()
    with pytest.raises(InputError) as err:
        write_delta(df.where("row_id < 60"), target)
    assert str(err.value) == (f"cannot write '{blocked}' (is a directory); pass a file path; "
                              "nothing was committed, the table is as it was")
    assert deltalake.DeltaTable(str(target)).version() == 0
    assert read_table(spark, target).count() == 90
    assert sorted(os.listdir(target)) == sorted(before + [blocked.name])  # no stray part files
