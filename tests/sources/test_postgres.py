"""PostgreSQL source and sink against a real server started by the test session."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cleanpipe.errors import InputError
from cleanpipe.sources import PostgresSink, PostgresSource

pytestmark = pytest.mark.postgres

EVIL = 'x"; DROP TABLE keep; --'


@pytest.fixture
def loaded(pg_env, tiny_table):
    """The PG* environment of a database holding ``train`` (the tiny table) and ``keep``."""
    sink = PostgresSink()
    sink.write("train", pa.RecordBatchReader.from_batches(tiny_table.schema, tiny_table.to_batches()))
    keep = pa.table({"a": [1]})
    sink.write("keep", pa.RecordBatchReader.from_batches(keep.schema, keep.to_batches()))
    return pg_env


def _tables() -> list:
    import adbc_driver_postgresql.dbapi as dbapi
    with dbapi.connect("postgresql://") as con, con.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return sorted(r[0] for r in cur.fetchall())


def test_table_and_query_read_as_record_batches(loaded, tiny_table):
    with PostgresSource(table="train") as src:
        schema = src.schema()
        assert schema.names == tiny_table.column_names
        back = src.reader(columns=["row_id", "x", "label"]).read_all().sort_by("row_id")
    assert back.column("x").to_pylist() == tiny_table.column("x").to_pylist()
    assert back.column("label").to_pylist() == tiny_table.column("label").to_pylist()
    with PostgresSource(query="SELECT row_id, label FROM train WHERE label = 1 ORDER BY row_id") as src:
        assert src.reader().read_all().num_rows == 20


def test_missing_table_lists_the_tables(loaded):
    with pytest.raises(InputError, match=r"table 'trian' not found .*keep, train"):
        PostgresSource(table="trian").schema()


def test_sink_failure_rolls_back_and_keeps_the_previous_table(loaded, tiny_table):
    def failing():
        yield tiny_table.to_batches()[0].slice(0, 5)
        raise RuntimeError("killed mid-ingest")

    with pytest.raises(InputError, match="killed mid-ingest"):
        PostgresSink().write("train", pa.RecordBatchReader.from_batches(tiny_table.schema, failing()))
    assert _tables() == ["keep", "train"]  # the staging table was rolled back with the rest
    with PostgresSource(table="train") as src:
        assert src.reader().read_all().num_rows == 60


def test_injection_shaped_identifiers_stay_identifiers(loaded, tiny_table):
    evil = tiny_table.rename_columns(["row_id", 'x"; DROP TABLE keep; --', "semi;colon", "label"])
    sink = PostgresSink()
    sink.check(EVIL)
    for _ in range(2):  # create, then replace through the staging swap
        assert sink.write(EVIL, pa.RecordBatchReader.from_batches(evil.schema, evil.to_batches())) == 60
    assert _tables() == sorted(["keep", "train", EVIL])
    with PostgresSource(table=EVIL) as src:
        back = src.reader(columns=["semi;colon", 'x"; DROP TABLE keep; --']).read_all()
    assert back.num_rows == 60
    with PostgresSource(query='SELECT * FROM "keep"') as src:
        assert src.reader().read_all().to_pylist() == [{"a": 1}]


def test_wrong_password_error_is_redacted(loaded, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "definitely-wrong-password")
    with pytest.raises(InputError, match="password authentication failed") as err:
        PostgresSource(table="train").schema()
    assert "definitely-wrong-password" not in str(err.value)
    assert "\n" not in str(err.value)
