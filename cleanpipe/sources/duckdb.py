"""DuckDB: read a table or a query as Arrow record batches; write a table by staging and swapping.

A write creates the new rows in a staging table, then drops the target and renames the staging
table onto it inside one transaction: a reader sees the old table or the new one, and a killed
run leaves the old table as it was.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from ._sql import error_line, qualified, quote_ident, strip_query
from .base import BATCH_ROWS, TABLE_COMMENT, Sink, Source

_HINT = "pip install 'cleanpipe[warehouse]' (or: pip install duckdb)"


def _duckdb():
    try:
        import duckdb  # optional (cleanpipe[warehouse])
    except ImportError:
        raise InputError(f"DuckDB sources need the duckdb package; {_HINT}") from None
    return duckdb


def connect(database: str, *, read_only: bool):
    """Open ``database`` (a file path or ``:memory:``).

    Raises
    ------
    InputError
        The package is missing, or the file cannot be opened (missing when ``read_only``, locked
        by another process, not a DuckDB file).
    """
    duckdb = _duckdb()
    try:
        return duckdb.connect(str(database), read_only=read_only)
    except duckdb.Error as exc:
        raise InputError(f"cannot open DuckDB database '{database}' ({error_line(exc)}); check "
                         "the path and that no other process holds it open for writing") from None


def _reader(relation, batch_rows: int) -> pa.RecordBatchReader:
    # duckdb >= 1.4 names it to_arrow_reader; older releases fetch_record_batch.
    method = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    return method(batch_rows)


def _tables(con, schema: str | None) -> list:
    rows = con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                       "coalesce(?, current_schema()) ORDER BY table_name", [schema]).fetchall()
    return [r[0] for r in rows]


class DuckDBSource(Source):
    """Rows of a DuckDB table or query.

    Parameters
    ----------
    database : str
        Path of the database file (opened read-only).
    table : str, optional
        Table name (quoted, so any characters work). Exactly one of ``table`` and ``query``.
    query : str, optional
        A SELECT statement, run as written.
    schema : str, optional
        Schema of ``table`` (default: DuckDB's current schema, ``main``).
    """

    kind = "duckdb"

    def __init__(self, database: str, *, table: str | None = None, query: str | None = None,
                 schema: str | None = None):
        if (table is None) == (query is None):
            raise InputError("a DuckDB source needs exactly one of table and query")
        self.database, self.table, self.query, self.db_schema = str(database), table, query, schema
        self._con = None

    def describe(self) -> str:
        what = f"table {qualified(self.table, self.db_schema)}" if self.table else "query"
        return f"duckdb:{self.database} {what}"

    def identity(self) -> dict:
        return {"kind": self.kind, "database": str(Path(self.database).resolve()),
                "schema": self.db_schema, "table": self.table, "query": self.query}

    def _connection(self):
        if self._con is None:
            if not Path(self.database).is_file():
                raise InputError(f"DuckDB database '{self.database}' does not exist; check the path")
            self._con = connect(self.database, read_only=True)
        return self._con

    def _sql(self) -> str:
        if self.query is not None:
            return strip_query(self.query)
        return f"SELECT * FROM {qualified(self.table, self.db_schema)}"

    def _relation(self, columns=None):
        con = self._connection()
        duckdb = _duckdb()
        if self.table is not None and self.table not in _tables(con, self.db_schema):
            names = ", ".join(_tables(con, self.db_schema)[:12]) or "none"
            raise InputError(f"table '{self.table}' not found in DuckDB database '{self.database}' "
                             f"(tables: {names}); fix the table name")
        cols = "*" if columns is None else ", ".join(quote_ident(c, key="column") for c in columns)
        try:
            return con.sql(f"SELECT {cols} FROM ({self._sql()}) AS cleanpipe_source")
        except duckdb.Error as exc:
            raise InputError(f"DuckDB cannot run the source query on '{self.database}' "
                             f"({error_line(exc)}); fix the query") from None

    def schema(self) -> pa.Schema:
        return _reader(self._relation().limit(0), 1).schema

    def reader(self, *, columns=None, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        return _reader(self._relation(columns), batch_rows)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class DuckDBSink(Sink):
    """Replace DuckDB tables with Arrow rows (staging table + rename in one transaction).

    Parameters
    ----------
    database : str
        Path of the database file (created if missing).
    schema : str, optional
        Schema of the target tables (default: ``main``).
    """

    kind = "duckdb"

    def __init__(self, database: str, *, schema: str | None = None):
        self.database, self.db_schema = str(database), schema

    def describe(self, target: str) -> str:
        return f"duckdb:{self.database} table {qualified(target, self.db_schema)}"

    def check(self, target: str) -> None:
        quote_ident(target, key="table")
        parent = Path(self.database).resolve().parent
        if not parent.is_dir():
            raise InputError(f"directory '{parent}' of DuckDB database '{self.database}' does not "
                             "exist; create it first")
        if Path(self.database).exists():
            connect(self.database, read_only=True).close()

    def written_by_cleanpipe(self, target: str) -> bool | None:
        if not Path(self.database).exists():
            return None
        con = connect(self.database, read_only=True)
        try:
            # DuckDB matches names case-insensitively, quoted ones too
            rows = con.execute("SELECT comment FROM duckdb_tables() WHERE database_name = "
                               "current_database() AND lower(schema_name) = lower(coalesce(?, "
                               "current_schema())) AND lower(table_name) = lower(?)",
                               [self.db_schema, target]).fetchall()
        finally:
            con.close()
        if not rows:
            return None
        return any(r[0] == TABLE_COMMENT for r in rows)

    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        duckdb = _duckdb()
        con = connect(self.database, read_only=False)
        token = uuid.uuid4().hex[:12]
        view, stage = f"cleanpipe_arrow_{token}", f"cleanpipe_stage_{token}"
        try:
            con.register(view, reader)
            con.begin()
            try:
                con.execute(f"CREATE TABLE {qualified(stage, self.db_schema)} AS SELECT * FROM {quote_ident(view)}")
                rows = con.execute(f"SELECT count(*) FROM {qualified(stage, self.db_schema)}").fetchone()[0]
                con.execute(f"DROP TABLE IF EXISTS {qualified(target, self.db_schema)}")
                con.execute(f"ALTER TABLE {qualified(stage, self.db_schema)} RENAME TO {quote_ident(target)}")
                con.execute(f"COMMENT ON TABLE {qualified(target, self.db_schema)} IS '{TABLE_COMMENT}'")
                con.commit()
            except BaseException:
                con.rollback()
                raise
        except duckdb.Error as exc:
            raise InputError(f"cannot write table '{target}' to DuckDB database '{self.database}' "
                             f"({error_line(exc)})") from None
        finally:
            con.close()
        return int(rows)
