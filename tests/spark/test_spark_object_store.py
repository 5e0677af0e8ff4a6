"""A Parquet folder on an object store (a moto S3 server) read by local Spark through pyarrow in
the tasks, with no object-store connector on Spark's classpath: the rows, one partition a file,
the flags of one machine, and the one-line errors of the local reader."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpipe.errors import InputError
from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS
from spark_folders import read_folder

pytestmark = pytest.mark.spark


def _servers():
    name = "cleanpipe_test_servers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "sources" / "servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture
def bucket():
    """``(filesystem, uri of a fresh bucket)``. The credentials ride in the URI: the Spark
    session's Python workers were started before any test could set AWS variables for them."""
    endpoint = _servers().moto_server()
    if not endpoint.startswith("http"):
        pytest.skip(endpoint)
    import pyarrow.fs as pafs
    host = endpoint.split("://")[1]
    name = f"b-{uuid.uuid4().hex[:10]}"
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing-secret",
                           allow_bucket_creation=True)
    fs.create_dir(name)
    query = f"?endpoint_override={host}&scheme=http&region=us-east-1"
    return fs, lambda key: f"s3://testing:testing-secret@{name}/{key}{query}", name


def _table(n: int = 300, k: int = 3, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    noisy = np.where(rng.random(n) < 0.15, (y + 1) % k, y)
    return pa.table({"row_id": np.arange(n), "x": rng.normal(size=n).astype(np.float32),
                     "city": pa.array([None if i % 7 == 0 else f"c{i % 5}" for i in range(n)]),
                     "label": noisy, "probs": pa.array(list(p), type=pa.list_(pa.float64()))})


def _put(fs, bucket_name: str, key: str, table: pa.Table) -> None:
    with fs.open_output_stream(f"{bucket_name}/{key}") as fh:
        pq.write_table(table, fh)


def test_rows_partitions_and_flags_equal_one_machine(spark, bucket):
    from cleanpipe import spark as cs
    from cleanpipe.spark_tables import read_table
    fs, uri, name = bucket
    table = _table()
    for i, (a, b) in enumerate([(0, 100), (100, 100), (100, 220), (220, 300)]):  # one file empty
        part = table.slice(a, b - a)
        if i == 3:  # its text column null throughout: written as type null, read as text
            part = part.set_column(2, "city", pa.nulls(part.num_rows))
            table = table.set_column(2, "city", pa.concat_arrays(
                [table["city"].combine_chunks().slice(0, a), pa.nulls(b - a, pa.string())]))
        _put(fs, name, f"train/part-{i}.parquet", part)
    _put(fs, name, "train/_SUCCESS", pa.table({"x": [1]}))  # skipped, like Spark's reader does
    df = read_table(spark, uri("train"))
    assert df.rdd.getNumPartitions() == 4
    assert df.columns == table.column_names
    rows = pa.Table.from_pylist([r.asDict() for r in df.collect()])
    assert rows["row_id"].to_pylist() == list(range(300))  # file by file, in the listing's order
    assert rows["x"].to_pylist() == table["x"].to_pylist()
    assert rows["city"].to_pylist() == table["city"].to_pylist()
    flags = pa.Table.from_pylist([r.asDict() for r in cs.flag(df, label="label", pred_probs="probs")
                                  .select("row_id", *FLAG_COLUMNS).collect()])
    want = flag_table(table, label="label", pred_probs="probs").table
    for col in FLAG_COLUMNS:
        assert flags[col].to_pylist() == want[col].to_pylist(), col


def test_errors_are_one_line_and_name_the_file(spark, bucket):
    from cleanpipe.spark_tables import read_table
    fs, uri, name = bucket
    table = _table(60)
    with pytest.raises(InputError, match="does not exist"):
        read_table(spark, uri("missing"))
    _put(fs, name, "mixed/a.parquet", table.slice(0, 30))
    _put(fs, name, "mixed/b.parquet", table.slice(30).set_column(
        3, "label", table["label"].slice(30).cast(pa.string())))
    with pytest.raises(InputError, match=r"disagree on schema: '.*mixed/b.parquet' has .*label: string"):
        read_table(spark, uri("mixed"))
    _put(fs, name, "broken/a.parquet", table)
    with fs.open_output_stream(f"{name}/broken/b.parquet") as fh:
        fh.write(b"not parquet at all")
    with pytest.raises(InputError, match=r"'.*broken/b.parquet' is not a readable Parquet file"):
        read_table(spark, uri("broken"))
    _put(fs, name, "hive/day=1/a.parquet", table)
    with pytest.raises(InputError, match="hive-partitioned"):
        read_table(spark, uri("hive"))
    _put(fs, name, "delta/a.parquet", table)
    with fs.open_output_stream(f"{name}/delta/_delta_log/00000000000000000000.json") as fh:
        fh.write(b"{}")
    with pytest.raises(InputError, match="Delta table on an object store"):
        read_table(spark, uri("delta"))
    with pytest.raises(InputError, match="version applies to local Delta tables"):
        read_table(spark, uri("mixed"), version=0)
    # A null column merges with one other type, not two.
    _put(fs, name, "three/a.parquet", table.select(["row_id"]).append_column("v", pa.nulls(60)))
    _put(fs, name, "three/b.parquet", table.select(["row_id"]).append_column("v", pa.array(["s"] * 60)))
    _put(fs, name, "three/c.parquet", table.select(["row_id"]).append_column("v", pa.array([1] * 60)))
    with pytest.raises(InputError, match=r"disagree on schema: '.*three/c.parquet' has"):
        read_table(spark, uri("three"))
    with pytest.raises(InputError, match=r"'gs://\.\.\.': Spark reads that scheme through its own"):
        read_table(spark, "gs://bucket/table/")
    with pytest.raises(InputError, match="names no bucket"):
        read_table(spark, "s3://")


def test_every_message_is_one_line_without_the_uri_credentials(spark, bucket):
    from cleanpipe.spark_tables import read_table
    fs, uri, name = bucket
    _put(fs, name, "hive/day=1/a.parquet", _table(10))
    for key in ("missing", "hive"):
        with pytest.raises(InputError) as err:
            read_table(spark, uri(key))
        assert "\n" not in str(err.value) and "testing-secret" not in str(err.value), str(err.value)


def test_types_spark_has_no_type_for_are_read_as_spark_reads_them(spark, bucket):
    """pandas' categoricals (dictionaries), unsigned integers, float16 and nanosecond timestamps:
    the types Spark's own Parquet reader widens; a column null throughout a file at any depth
    (a list of tags empty in every row) takes the other files' type."""
    import datetime as dt

    from cleanpipe.spark_tables import read_table
    fs, uri, name = bucket
    when = [dt.datetime(2026, 1, 1, 0, 0, 0, 123456), None]
    first = pa.table({"c": pa.array(["a", "b"]).dictionary_encode(),
                      "u8": pa.array([1, 255], pa.uint8()), "u64": pa.array([1, 2**64 - 1], pa.uint64()),
                      "h": pa.array([0.5, 1.5], pa.float16()),
                      "ts": pa.array(when, pa.timestamp("ns")),
                      "tags": pa.array([[], []], pa.list_(pa.null()))})
    second = first.set_column(5, "tags", pa.array([["x"], []], pa.list_(pa.string())))
    _put(fs, name, "types/a.parquet", first)
    _put(fs, name, "types/b.parquet", second)
    df = read_table(spark, uri("types"))
    types = dict(df.dtypes)
    assert types == {"c": "string", "u8": "smallint", "u64": "decimal(20,0)", "h": "float",
                     "ts": "timestamp_ntz", "tags": "array<string>"}
    rows = [r.asDict() for r in df.collect()]
    assert [r["c"] for r in rows] == ["a", "b", "a", "b"]
    assert [r["u8"] for r in rows] == [1, 255, 1, 255]
    assert [int(r["u64"]) for r in rows] == [1, 2**64 - 1] * 2
    assert [r["h"] for r in rows] == [0.5, 1.5] * 2
    assert [r["tags"] for r in rows] == [[], [], ["x"], []]
    assert rows[0]["ts"].replace(tzinfo=None) == when[0] and rows[1]["ts"] is None


def test_an_executor_refused_by_the_store_is_told_to_get_credentials():
    from cleanpipe.spark_tables import _one_schema
    rows = [{"path": "b/t/a.parquet", "schema": None, "kind": "access",
             "error": "AWS Error ACCESS_DENIED during GetObject operation: secret_key=abc"}]
    with pytest.raises(InputError) as err:
        _one_schema(rows, "s3://b/t/", "DATA")
    assert "cannot be read by the Spark executors" in str(err.value)
    assert "spark.executorEnv.AWS_ACCESS_KEY_ID" in str(err.value) and "abc" not in str(err.value)


def test_a_spark_pipeline_reads_an_s3_source(spark, bucket, tmp_path, monkeypatch):
    """``[source] path = "s3://..."`` with ``backend = "spark"``: the executors read it with the
    store ``[source]`` names and the credentials of their environment (here given to the session's
    Python workers through ``SparkContext.environment``, as ``spark.executorEnv.*`` would)."""
    import json
    import os

    from click.testing import CliRunner

    from cleanpipe.cli import cli
    fs, uri, name = bucket
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
             "AWS_EC2_METADATA_DISABLED": "true"}
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
        monkeypatch.setitem(spark.sparkContext.environment, key, value)
    table = _table(200, seed=5)
    for i in range(2):
        _put(fs, name, f"train/part-{i}.parquet", table.slice(100 * i, 100))
    endpoint = _servers().moto_server()
    pipe = tmp_path / "s3.toml"
    pipe.write_text('name = "s3"\nstages = ["flag"]\n'
                    f'[source]\ntype = "parquet"\npath = "s3://{name}/train/"\n'
                    f's3_endpoint = "{endpoint}"\ns3_region = "us-east-1"\n'
                    '[oof]\nbackend = "spark"\n[flag]\npred_probs = "probs"\n')
    res = CliRunner().invoke(cli, ["run", str(pipe), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    got = read_folder(os.path.join(json.loads(res.stdout)["run_dir"], "flag", "flags"))
    want = flag_table(table, label="label", pred_probs="probs").table
    assert got["row_id"].to_pylist() == list(range(200))
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
