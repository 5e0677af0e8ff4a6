"""DuckDB source and sink against a real database file, injection-shaped names included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cleanpipe.errors import InputError
from cleanpipe.sources import DuckDBSink, DuckDBSource

duckdb = pytest.importorskip("duckdb")

EVIL = 'x"; DROP TABLE keep; --'


@pytest.fixture
def db(tmp_path, tiny_table):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.register("t", tiny_table)
    con.execute("CREATE TABLE train AS SELECT * FROM t")
    con.execute("CREATE TABLE keep AS SELECT 1 AS a")
    con.close()
    return str(path)


def _tables(path) -> list:
    con = duckdb.connect(path, read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    finally:
        con.close()


def test_table_and_query_sources_stream_batches(db, tiny_table):
    with DuckDBSource(db, table="train") as src:
        assert src.schema().names == tiny_table.column_names
        batches = list(src.reader(columns=["label", "x"], batch_rows=16))
        assert sum(b.num_rows for b in batches) == 60 and len(batches) >= 2
    with DuckDBSource(db, query="SELECT * FROM train WHERE label = 2 ORDER BY row_id;") as src:
        assert src.reader().read_all().num_rows == 20


def test_missing_table_names_the_tables_there(db):
    with pytest.raises(InputError, match=r"table 'trian' not found .*tables: keep, train"):
        DuckDBSource(db, table="trian").schema()


def test_bad_query_is_one_line(db):
    with pytest.raises(InputError, match="fix the query") as err:
        DuckDBSource(db, query="SELEC nonsense").schema()
    assert "\n" not in str(err.value)


def test_sink_swaps_tables_and_keeps_the_old_one_on_failure(db, tiny_table):
    sink = DuckDBSink(db)
    sink.check("flags")
    first = tiny_table.slice(0, 10)
    assert sink.write("flags", pa.RecordBatchReader.from_batches(first.schema, first.to_batches())) == 10

    def failing():
        yield tiny_table.to_batches()[0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(InputError, match="killed mid-write"):
        sink.write("flags", pa.RecordBatchReader.from_batches(tiny_table.schema, failing()))
    assert _tables(db) == ["flags", "keep", "train"]  # no staging table left
    with DuckDBSource(db, table="flags") as src:
        assert src.reader().read_all().num_rows == 10  # the previous rows, intact


def test_injection_shaped_table_and_column_names(db, tiny_table):
    evil = tiny_table.rename_columns(["row_id", 'x"; DROP TABLE keep; --', "col;umn", "label"])
    sink = DuckDBSink(db)
    sink.check(EVIL)
    sink.write(EVIL, pa.RecordBatchReader.from_batches(evil.schema, evil.to_batches()))
    sink.write(EVIL, pa.RecordBatchReader.from_batches(evil.schema, evil.to_batches()))  # replace
    assert _tables(db) == sorted(["keep", "train", EVIL])
    with DuckDBSource(db, table=EVIL) as src:
        back = src.reader(columns=['x"; DROP TABLE keep; --', "col;umn"]).read_all()
    assert back.num_rows == 60 and back.column_names == ['x"; DROP TABLE keep; --', "col;umn"]
    with DuckDBSource(db, table="keep") as src:
        assert src.reader().read_all().to_pylist() == [{"a": 1}]
