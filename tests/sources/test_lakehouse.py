"""Delta Lake and Iceberg tables as sources and sinks: real tables on local disk, a real SQLite
Iceberg catalog; commits are atomic (a failed write leaves the previous version readable)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpipe.errors import InputError

deltalake = pytest.importorskip("deltalake", reason="Delta Lake tests need deltalake (cleanpipe[lakehouse])")


def _failing(table: pa.Table, after: int = 1):
    """A reader that yields ``after`` batches of ``table`` and then fails, as a killed producer would."""
    def batches():
        yield from table.to_batches(max_chunksize=10)[:after]
        raise RuntimeError("the producer died")
    return pa.RecordBatchReader.from_batches(table.schema, batches())


# --- Delta Lake -------------------------------------------------------------------------------


def test_delta_round_trip_types_and_mark(tmp_path, tiny_table):
    from cleanpipe.sources import DeltaSink, DeltaSource
    target = str(tmp_path / "flags")
    sink = DeltaSink()
    assert sink.written_by_cleanpipe(target) is None
    sink.check(target)
    assert sink.write(target, tiny_table.to_reader(max_chunksize=16)) == 60
    assert sink.written_by_cleanpipe(target) is True
    source = DeltaSource(target)
    assert max(b.num_rows for b in source.reader(batch_rows=7)) <= 7
    # Delta keeps no row order (its writer takes batches in parallel): compare by id.
    back = source.reader(columns=["label", "row_id", "colour"]).read_all().sort_by("row_id")
    assert back.column_names == ["label", "row_id", "colour"]
    assert back["label"].to_pylist() == tiny_table["label"].to_pylist()
    assert back["row_id"].to_pylist() == tiny_table["row_id"].to_pylist()
    # The dictionary column came back as its values (Delta has no dictionary type).
    assert back["colour"].to_pylist() == tiny_table["colour"].cast(pa.string()).to_pylist()


def test_delta_unsigned_values_are_widened_not_wrapped(tmp_path):
    from cleanpipe.sources import DeltaSink, DeltaSource
    table = pa.table({"u8": pa.array([0, 200, 255], pa.uint8()), "u32": pa.array([0, 1, 2**32 - 1], pa.uint32())})
    DeltaSink().write(str(tmp_path / "t"), table.to_reader())
    back = DeltaSource(str(tmp_path / "t")).reader().read_all()
    back = back.sort_by("u8")
    assert back["u8"].to_pylist() == [0, 200, 255] and back["u32"].to_pylist() == [0, 1, 2**32 - 1]


def test_delta_failed_write_keeps_previous_version(tmp_path, tiny_table):
    from cleanpipe.sources import DeltaSink, DeltaSource
    target = str(tmp_path / "t")
    sink = DeltaSink()
    sink.write(target, tiny_table.to_reader())
    before = DeltaSource(target)
    version = before.table().version()
    with pytest.raises(RuntimeError, match="the producer died"):
        sink.write(target, _failing(tiny_table.slice(0, 30)))
    after = DeltaSource(target)
    assert after.table().version() == version
    assert after.reader().read_all().num_rows == 60
    assert after.fingerprint() == before.fingerprint()


def test_delta_overwrite_is_a_new_version_and_old_ones_stay_readable(tmp_path, tiny_table):
    from cleanpipe.sources import DeltaSink, DeltaSource
    target = str(tmp_path / "t")
    DeltaSink().write(target, tiny_table.to_reader())
    other = pa.table({"z": [1.5, 2.5]})
    assert DeltaSink().write(target, other.to_reader()) == 2  # a new schema replaces the old one
    latest = DeltaSource(target)
    assert latest.schema().names == ["z"] and latest.reader().read_all().num_rows == 2
    first = DeltaSource(target, version=0)
    assert first.reader().read_all().num_rows == 60
    assert first.fingerprint() != latest.fingerprint()


def test_delta_source_errors_are_one_line(tmp_path, tiny_table):
    from cleanpipe.sources import DeltaSink, DeltaSource
    with pytest.raises(InputError, match="does not exist; pass the folder of a Delta table"):
        DeltaSource(str(tmp_path / "missing")).schema()
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(tiny_table, plain / "part.parquet")
    with pytest.raises(InputError, match=r"is not a Delta table \(no _delta_log/ folder"):
        DeltaSource(str(plain)).schema()
    DeltaSink().write(str(tmp_path / "t"), tiny_table.to_reader())
    with pytest.raises(InputError, match="at version 7"):
        DeltaSource(str(tmp_path / "t"), version=7).schema()
    with pytest.raises(InputError, match="only local Delta tables"):
        DeltaSource("s3://bucket/t").schema()


def test_delta_sink_refuses_a_foreign_folder_and_a_file(tmp_path):
    from cleanpipe.sources import DeltaSink
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a Delta table and not empty"):
        DeltaSink().check(str(tmp_path / "mine"))
    assert DeltaSink().written_by_cleanpipe(str(tmp_path / "mine")) is False
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        DeltaSink().check(str(tmp_path / "f"))


def test_delta_table_not_written_by_cleanpipe_is_foreign(tmp_path, tiny_table):
    from cleanpipe.sources import DeltaSink
    deltalake.write_deltalake(str(tmp_path / "theirs"), tiny_table.cast(
        pa.schema([f.with_type(pa.string()) if f.name == "colour" else f for f in tiny_table.schema])))
    assert DeltaSink().written_by_cleanpipe(str(tmp_path / "theirs")) is False


# --- Iceberg ------------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path):
    """Settings of a fresh local Iceberg catalog (SQLite file + file warehouse)."""
    pytest.importorskip("pyiceberg.catalog.sql", reason="Iceberg tests need pyiceberg[sql-sqlite] "
                        "(cleanpipe[lakehouse])")
    (tmp_path / "warehouse").mkdir()
    return {"catalog": "test", "catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
            "warehouse": f"file://{tmp_path}/warehouse"}


def test_iceberg_round_trip_creates_namespace_and_marks_table(catalog, tiny_table):
    from cleanpipe.sources import IcebergSink, IcebergSource
    sink = IcebergSink(**catalog)
    assert sink.written_by_cleanpipe("lab.flags") is None
    sink.check("lab.flags")
    assert sink.write("lab.flags", tiny_table.to_reader(max_chunksize=16)) == 60
    assert sink.written_by_cleanpipe("lab.flags") is True
    src = IcebergSource("lab.flags", **catalog)
    back = src.reader(columns=["label", "row_id"], batch_rows=7).read_all()
    assert back.column_names == ["label", "row_id"]
    assert max(b.num_rows for b in src.reader(batch_rows=7)) <= 7
    assert back["label"].to_pylist() == tiny_table["label"].to_pylist()
    assert back["row_id"].to_pylist() == tiny_table["row_id"].to_pylist()


def test_iceberg_failed_write_keeps_previous_snapshot(catalog, tiny_table):
    from cleanpipe.sources import IcebergSink, IcebergSource
    sink = IcebergSink(**catalog)
    sink.write("lab.t", tiny_table.to_reader())
    before = IcebergSource("lab.t", **catalog)
    fingerprint = before.fingerprint()
    with pytest.raises(RuntimeError, match="the producer died"):
        sink.write("lab.t", _failing(tiny_table.slice(0, 30)))
    after = IcebergSource("lab.t", **catalog)
    assert after.fingerprint() == fingerprint
    assert after.reader().read_all().num_rows == 60


def test_iceberg_overwrite_with_a_new_schema_and_time_travel(catalog, tiny_table):
    from cleanpipe.sources import IcebergSink, IcebergSource
    sink = IcebergSink(**catalog)
    sink.write("lab.t", tiny_table.to_reader())
    first = IcebergSource("lab.t", **catalog)
    first.fingerprint()
    snapshot = first.snapshot_id
    other = pa.table({"score": [0.5, 0.25, 1.0], "label": ["a", "b", "c"]})  # label changes type
    assert sink.write("lab.t", other.to_reader()) == 3
    latest = IcebergSource("lab.t", **catalog)
    assert latest.schema().names == ["score", "label"]
    assert latest.reader().read_all()["label"].to_pylist() == ["a", "b", "c"]
    old = IcebergSource("lab.t", snapshot_id=snapshot, **catalog)
    assert old.schema().names == tiny_table.column_names  # the schema of that snapshot
    assert old.schema().field("label").type == pa.int64()
    assert old.reader(columns=["label"]).read_all()["label"].to_pylist() == tiny_table["label"].to_pylist()


def test_iceberg_errors_are_one_line(catalog, tiny_table):
    from cleanpipe.sources import IcebergSink, IcebergSource
    IcebergSink(**catalog).write("lab.t", tiny_table.to_reader())
    with pytest.raises(InputError, match=r"'lab.nope' not found in .* \(tables: lab.t\)"):
        IcebergSource("lab.nope", **catalog).schema()
    with pytest.raises(InputError, match="needs a namespace"):
        IcebergSource("flat", **catalog)
    with pytest.raises(InputError, match="has no snapshot 12345"):
        IcebergSource("lab.t", snapshot_id=12345, **catalog).schema()
    with pytest.raises(InputError, match="cannot open Iceberg"):
        IcebergSource("lab.t", catalog="x", catalog_uri="nosuchscheme://h/db").schema()


def test_partitioned_flag_reads_a_delta_tables_current_files_only(tmp_path):
    """``flag_partitions`` (the Dask path) on a Delta folder: the files of the latest version,
    not the older versions' files that stay in the folder until a vacuum."""
    import numpy as np
    from cleanpipe.flag import flag_table
    from cleanpipe.partitions import flag_partitions, partition_files
    rng = np.random.default_rng(2)
    n = 90
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n) * 0.5
    p[np.arange(n), y] += 0.5
    table = pa.table({"row_id": np.arange(n), "label": y,
                      "probs": pa.array(list(p), type=pa.list_(pa.float64()))})
    target = str(tmp_path / "t")
    deltalake.write_deltalake(target, table.slice(0, 30))
    deltalake.write_deltalake(target, table.slice(30), mode="overwrite")
    files = partition_files(target)
    assert len(files) == 1 and len(list((tmp_path / "t").glob("*.parquet"))) == 2
    flag_partitions(target, str(tmp_path / "flags"), label="label", pred_probs="probs")
    got = pq.read_table(tmp_path / "flags").sort_by("row_id")
    want = flag_table(table.slice(30), label="label", pred_probs="probs").table
    assert got["row_id"].to_pylist() == want["row_id"].to_pylist()
    assert got["label_score"].to_pylist() == want["label_score"].to_pylist()
    assert got["is_label_issue"].to_pylist() == want["is_label_issue"].to_pylist()
