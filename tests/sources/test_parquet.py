"""Parquet sources (file, directory, glob, hive partitions, S3 via moto) and the Parquet sink."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from cleanpipe.errors import InputError
from cleanpipe.sources import ParquetSink, ParquetSource


def _rows(source, **kw) -> pa.Table:
    return source.reader(**kw).read_all()


def test_file_directory_glob_and_hive_read_the_same_rows(tiny_table, tmp_path):
    pq.write_table(tiny_table, tmp_path / "one.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(tiny_table.slice(0, 25), parts / "a.parquet")
    pq.write_table(tiny_table.slice(25), parts / "b.parquet")
    (parts / "_SUCCESS").write_text("")  # skipped like pyarrow's own discovery
    hive = tmp_path / "hive"
    ds.write_dataset(tiny_table, hive, format="parquet", partitioning=["label"], partitioning_flavor="hive")

    file_src = ParquetSource(str(tmp_path / "one.parquet"))
    assert _rows(file_src).equals(tiny_table)
    assert file_src.local_parquet() == tmp_path / "one.parquet"
    dir_rows = _rows(ParquetSource(str(parts)))
    assert dir_rows.sort_by("row_id").equals(tiny_table.sort_by("row_id"))
    glob_src = ParquetSource(str(parts / "*.parquet"))
    assert glob_src.local_parquet() is None  # a glob is copied into the run directory
    assert _rows(glob_src, batch_rows=7).num_rows == 60
    hive_rows = _rows(ParquetSource(str(hive))).sort_by("row_id")
    assert "label" in hive_rows.column_names  # the partition key comes back as a column
    assert hive_rows.column("label").cast(pa.int64()).to_pylist() == tiny_table.column("label").to_pylist()


def test_reader_streams_selected_columns_in_batches(tiny_table, tmp_path):
    pq.write_table(tiny_table, tmp_path / "t.parquet")
    reader = ParquetSource(str(tmp_path / "t.parquet")).reader(columns=["label", "x"], batch_rows=16)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [16, 16, 16, 12]
    assert batches[0].schema.names == ["label", "x"]


def test_fingerprint_changes_when_a_file_changes(tiny_table, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(tiny_table, path)
    before = ParquetSource(str(path)).fingerprint()
    assert ParquetSource(str(path)).fingerprint() == before
    pq.write_table(tiny_table.slice(1), path)
    os.utime(path, ns=(1, 1))
    assert ParquetSource(str(path)).fingerprint() != before


@pytest.mark.parametrize("what, make", [
    ("does not exist", lambda p: str(p / "missing.parquet")),
    ("no files match", lambda p: str(p / "nothing-*.parquet")),
    ("holds no Parquet files; use a folder", lambda p: (p / "empty").mkdir() or str(p / "empty")),
    ("not a readable Parquet", lambda p: (p / "x.parquet").write_text("no") and str(p / "x.parquet")),
])
def test_unreadable_paths_are_one_line_input_errors(tmp_path, what, make):
    with pytest.raises(InputError, match=what) as err:
        ParquetSource(make(tmp_path)).schema()
    assert "\n" not in str(err.value)


def test_sink_replaces_atomically_and_a_failed_write_keeps_the_old_file(tiny_table, tmp_path):
    target = tmp_path / "out" / "flags.parquet"
    sink = ParquetSink()
    sink.check(str(target))
    assert sink.write(str(target), pa.RecordBatchReader.from_batches(
        tiny_table.schema, tiny_table.to_batches())) == 60

    def failing():
        yield tiny_table.to_batches()[0].slice(0, 5)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        sink.write(str(target), pa.RecordBatchReader.from_batches(tiny_table.schema, failing()))
    assert pq.read_table(target).equals(tiny_table)
    assert sorted(os.listdir(target.parent)) == ["flags.parquet"]  # no temporary left behind


def test_sink_removes_temporaries_of_dead_writers(tiny_table, tmp_path):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".cleanpipe-tmp-{dead.pid}-0123abcd-flags.parquet"
    stale.write_bytes(b"left by a killed run")
    ParquetSink().write(str(tmp_path / "flags.parquet"),
                        pa.RecordBatchReader.from_batches(tiny_table.schema, tiny_table.to_batches()))
    assert sorted(os.listdir(tmp_path)) == ["flags.parquet"]


def test_sink_check_refuses_directories(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        ParquetSink().check(str(tmp_path))


def test_s3_round_trip_through_moto(tiny_table, s3_env):
    endpoint, bucket = s3_env
    sink = ParquetSink(s3_endpoint=endpoint)
    uri = f"s3://{bucket}/data/part-0.parquet"
    sink.check(uri)
    sink.write(uri, pa.RecordBatchReader.from_batches(tiny_table.schema, tiny_table.to_batches()))
    source = ParquetSource(f"s3://{bucket}/data/", s3_endpoint=endpoint)
    assert source.local_parquet() is None
    assert _rows(source).equals(tiny_table)
    assert source.fingerprint() == ParquetSource(f"s3://{bucket}/data", s3_endpoint=endpoint).fingerprint()
    glob_rows = _rows(ParquetSource(f"s3://{bucket}/data/*.parquet", s3_endpoint=endpoint))
    assert glob_rows.equals(tiny_table)
    with pytest.raises(InputError, match="bucket 'no-such-bucket'"):
        sink.check("s3://no-such-bucket/x.parquet")
