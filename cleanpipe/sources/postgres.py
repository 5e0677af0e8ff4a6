"""PostgreSQL through ADBC: tables and queries as Arrow record batches; writes by bulk ingest.

Connections come from a ``postgresql://`` URI without a password, or from libpq's ``PG*``
environment variables (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGDATABASE``); the password comes
from ``PGPASSWORD`` or a ``.pgpass`` file and is never printed: every message that could carry a
driver's text goes through :func:`~cleanpipe.sources._sql.redact`.

A write bulk-loads the rows (``COPY`` under the hood) into a staging table with a generated name,
then drops the target and renames the staging table onto it in the same transaction, so a killed
run rolls back and leaves the previous table intact.
"""

from __future__ import annotations

import os
import uuid

import pyarrow as pa

from ..errors import ConfigError, InputError
from ._sql import error_line, qualified, quote_ident, redact, split_uri, strip_query
from .base import BATCH_ROWS, TABLE_COMMENT, Sink, Source

_HINT = "pip install 'cleanpipe[warehouse]' (or: pip install adbc-driver-postgresql)"
#: PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1 bytes).
MAX_IDENT_BYTES = 63


def _dbapi():
    try:
        import adbc_driver_postgresql.dbapi as dbapi  # optional (cleanpipe[warehouse])
    except ImportError:
        raise InputError(f"PostgreSQL sources need the ADBC driver; {_HINT}") from None
    return dbapi


def check_uri(uri: str, *, key: str = "uri") -> None:
    """Refuse a URI that is not ``postgresql://`` or that carries a password.

    Raises
    ------
    ConfigError
        Names ``key`` and says to use ``PGPASSWORD`` or ``~/.pgpass``.
    """
    if not uri.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{key} must be a postgresql:// URI such as postgresql://user@host:5432/db; "
                          f"got {redact(uri)!r}")
    has_password = split_uri(uri)["password"] is not None
    if has_password:
        raise ConfigError(f"{key} holds a password ({redact(uri)}); remove it and set PGPASSWORD "
                          "in the environment or put it in ~/.pgpass")


def check_identifier(name: str, *, key: str = "table") -> None:
    """Refuse names PostgreSQL would silently truncate (longer than 63 bytes)."""
    quote_ident(name, key=key)
    if len(name.encode("utf-8")) > MAX_IDENT_BYTES:
        raise ConfigError(f"{key} {name[:20]!r}... is {len(name.encode())} bytes; PostgreSQL "
                          f"identifiers hold at most {MAX_IDENT_BYTES}, pick a shorter name")


def describe_uri(uri: str | None) -> str:
    """The server a URI (or, for ``None``, the ``PG*`` environment) points at, without secrets."""
    if uri:
        return redact(uri)
    env = os.environ
    user = env.get("PGUSER", "")
    host, port = env.get("PGHOST", "localhost"), env.get("PGPORT", "5432")
    return redact(f"postgresql://{user}{'@' if user else ''}{host}:{port}/{env.get('PGDATABASE', user)}"
                  " (from PG* environment)")


def connect(uri: str | None):
    """An ADBC DB-API connection (autocommit off).

    Raises
    ------
    InputError
        The driver is missing or the server refuses the connection (message redacted).
    """
    dbapi = _dbapi()
    try:
        # "postgresql://" alone makes libpq take every setting from the PG* variables.
        return dbapi.connect(uri or "postgresql://")
    except dbapi.Error as exc:
        raise InputError(f"cannot connect to PostgreSQL at {describe_uri(uri)} ({error_line(exc)}); "
                         "check host, port, user and database, and give the password in PGPASSWORD "
                         "or ~/.pgpass") from None


def _tables(cur, schema: str | None) -> list:
    if schema is None:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() ORDER BY 1")
    else:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = $1 ORDER BY 1", (schema,))
    return [r[0] for r in cur.fetchall()]


class PostgresSource(Source):
    """Rows of a PostgreSQL table or query.

    Parameters
    ----------
    uri : str, optional
        ``postgresql://user@host:port/db`` without a password; ``None`` uses the ``PG*``
        environment.
    table : str, optional
        Table name (quoted, so any characters work). Exactly one of ``table`` and ``query``.
    query : str, optional
        A SELECT statement, run as written (add ORDER BY for a stable input fingerprint).
    schema : str, optional
        Schema of ``table`` (default: the first schema of the search path).
    """

    kind = "postgres"

    def __init__(self, uri: str | None = None, *, table: str | None = None, query: str | None = None,
                 schema: str | None = None):
        if (table is None) == (query is None):
            raise InputError("a PostgreSQL source needs exactly one of table and query")
        self.uri, self.table, self.query, self.db_schema = uri, table, query, schema
        self._con = None
        self._cursors = []

    def describe(self) -> str:
        what = f"table {qualified(self.table, self.db_schema)}" if self.table else "query"
        return f"{describe_uri(self.uri)} {what}"

    def identity(self) -> dict:
        return {"kind": self.kind, "server": describe_uri(self.uri), "schema": self.db_schema,
                "table": self.table, "query": self.query}

    def _cursor(self):
        if self._con is None:
            self._con = connect(self.uri)
        cur = self._con.cursor()
        self._cursors.append(cur)
        return cur

    def _execute(self, columns=None, limit: int | None = None):
        dbapi = _dbapi()
        cur = self._cursor()
        try:
            if self.table is not None and self.table not in _tables(cur, self.db_schema):
                names = ", ".join(_tables(cur, self.db_schema)[:12]) or "none"
                raise InputError(f"table '{self.table}' not found at {describe_uri(self.uri)} "
                                 f"(tables: {names}); fix the table name or schema")
            base = (strip_query(self.query) if self.query is not None
                    else f"SELECT * FROM {qualified(self.table, self.db_schema)}")
            cols = "*" if columns is None else ", ".join(quote_ident(c, key="column") for c in columns)
            sql = f"SELECT {cols} FROM ({base}) AS cleanpipe_source"
            cur.execute(sql + (f" LIMIT {int(limit)}" if limit is not None else ""))
        except dbapi.Error as exc:
            self._con.rollback()
            raise InputError(f"PostgreSQL cannot read the source at {describe_uri(self.uri)} "
                             f"({error_line(exc)}); fix the table or query") from None
        return cur

    def schema(self) -> pa.Schema:
        return self._execute(limit=0).fetch_arrow_table().schema

    def reader(self, *, columns=None, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        # The driver sizes batches by bytes (about 16 MB each), not by rows.
        return self._execute(columns).fetch_record_batch()

    def close(self) -> None:
        for cur in self._cursors:
            cur.close()
        self._cursors = []
        if self._con is not None:
            self._con.rollback()  # reads only; nothing to keep
            self._con.close()
            self._con = None


class PostgresSink(Sink):
    """Replace PostgreSQL tables with Arrow rows (bulk ingest into staging, swap in one transaction).

    Parameters
    ----------
    uri : str, optional
        As for :class:`PostgresSource`.
    schema : str, optional
        Schema of the target tables (default: the first schema of the search path).
    """

    kind = "postgres"

    def __init__(self, uri: str | None = None, *, schema: str | None = None):
        self.uri, self.db_schema = uri, schema

    def describe(self, target: str) -> str:
        return f"{describe_uri(self.uri)} table {qualified(target, self.db_schema)}"

    def check(self, target: str) -> None:
        check_identifier(target, key="table")
        con = connect(self.uri)
        try:
            cur = con.cursor()
            if self.db_schema is not None:
                cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
                            (self.db_schema,))
                if not cur.fetchall():
                    raise InputError(f"schema '{self.db_schema}' does not exist at "
                                     f"{describe_uri(self.uri)}; create it or fix the schema")
            cur.close()
        finally:
            con.rollback()
            con.close()

    def written_by_cleanpipe(self, target: str) -> bool | None:
        con = connect(self.uri)
        try:
            cur = con.cursor()
            cur.execute("SELECT obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = coalesce($1, current_schema()) "
                        "AND c.relname = $2", (self.db_schema, target))
            rows = cur.fetchall()
            cur.close()
        finally:
            con.rollback()
            con.close()
        if not rows:
            return None
        return rows[0][0] == TABLE_COMMENT

    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        dbapi = _dbapi()
        con = connect(self.uri)
        # A generated staging name: the driver's own SQL never sees a user-supplied identifier.
        stage = f"cleanpipe_stage_{uuid.uuid4().hex[:12]}"
        try:
            cur = con.cursor()
            kwargs = {"db_schema_name": self.db_schema} if self.db_schema is not None else {}
            cur.adbc_ingest(stage, reader, mode="create", **kwargs)
            cur.execute(f"SELECT count(*) FROM {qualified(stage, self.db_schema)}")
            rows = cur.fetchone()[0]
            cur.execute(f"DROP TABLE IF EXISTS {qualified(target, self.db_schema)}")
            cur.execute(f"ALTER TABLE {qualified(stage, self.db_schema)} RENAME TO {quote_ident(target)}")
            cur.execute(f"COMMENT ON TABLE {qualified(target, self.db_schema)} IS '{TABLE_COMMENT}'")
            con.commit()
            cur.close()
        except dbapi.Error as exc:
            con.rollback()
            raise InputError(f"cannot write table '{target}' at {describe_uri(self.uri)} "
                             f"({error_line(exc)}); the previous table is unchanged") from None
        except BaseException:
            con.rollback()
            raise
        finally:
            con.close()
        return int(rows)
