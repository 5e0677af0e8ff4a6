"""Apache Iceberg tables (the ``pyiceberg`` package): read a snapshot, replace by one commit.

An Iceberg table lives in a catalog (a SQL database such as a local SQLite file, a REST service,
Glue, Hive); the catalog points at the table's current metadata file, and a write is a new
metadata file that the catalog swaps in with one atomic compare-and-set. A write here is one
transaction: the new data files are written, then a single commit replaces the table's rows (and
its schema, when it changed); readers see the previous snapshot until that commit. A write that
fails before it leaves the previous snapshot current (its orphaned data files are removed by
Iceberg's orphan-file maintenance).

A catalog is named by ``catalog`` (its name in ``~/.pyiceberg.yaml`` or the ``PYICEBERG_CATALOG__*``
environment variables, pyiceberg's own configuration) and, optionally, ``catalog_uri`` and
``warehouse`` set here (``sqlite:////abs/catalog.db`` and ``file:///abs/warehouse`` for a local
catalog).
"""

from __future__ import annotations

import pyarrow as pa

from ..errors import InputError
from ._sql import error_line, redact
from .base import BATCH_ROWS, TABLE_COMMENT, CountingReader, Sink, Source, digest, table_format_schema

_HINT = "pip install 'cleanpipe[lakehouse]' (or: pip install 'pyiceberg[sql-sqlite]')"


def _pyiceberg():
    try:
        import pyiceberg.catalog  # optional (cleanpipe[lakehouse])
        import pyiceberg.exceptions
    except ImportError:
        raise InputError(f"Iceberg tables need the pyiceberg package; {_HINT}") from None
    return pyiceberg


def split_identifier(table: str) -> tuple:
    """``'ns.sub.name'`` -> ``('ns.sub', 'name')``; a table needs a namespace."""
    namespace, _, name = str(table).rpartition(".")
    if not namespace or not name:
        raise InputError(f"Iceberg table {table!r} needs a namespace: write it as "
                         "'namespace.table', e.g. 'default.events'")
    return namespace, name


class _Catalog:
    """The catalog settings shared by the source and the sink; opened once, on first use."""

    def __init__(self, catalog: str = "default", *, catalog_uri: str | None = None,
                 warehouse: str | None = None):
        self.catalog_name, self.catalog_uri, self.warehouse = catalog, catalog_uri, warehouse
        self._catalog = None

    def where(self) -> str:
        """The catalog, for messages and identities (its URI redacted, else its name)."""
        return redact(self.catalog_uri) if self.catalog_uri else f"catalog {self.catalog_name}"

    def catalog(self):
        if self._catalog is None:
            pyiceberg = _pyiceberg()
            props = {k: v for k, v in (("uri", self.catalog_uri), ("warehouse", self.warehouse)) if v}
            try:
                self._catalog = pyiceberg.catalog.load_catalog(self.catalog_name, **props)
            except Exception as exc:  # noqa: BLE001  (pyiceberg raises ValueError and driver errors)
                raise InputError(f"cannot open Iceberg {self.where()} ({error_line(exc)}); check "
                                 "catalog_uri / warehouse or pyiceberg's configuration of "
                                 f"'{self.catalog_name}'") from None
        return self._catalog

    def load(self, table: str):
        """The :class:`pyiceberg.table.Table` named ``table``, or ``None`` when it does not exist."""
        pyiceberg = _pyiceberg()
        catalog = self.catalog()
        split_identifier(table)
        try:
            return catalog.load_table(table)
        except (pyiceberg.exceptions.NoSuchTableError, pyiceberg.exceptions.NoSuchNamespaceError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot load Iceberg table '{table}' from {self.where()} "
                             f"({error_line(exc)})") from None

    def tables_hint(self, table: str) -> str:
        namespace, _ = split_identifier(table)
        try:
            names = [".".join(t) for t in self.catalog().list_tables(namespace)]
        except Exception:  # noqa: BLE001  (a missing namespace: no tables to list)
            names = []
        return ", ".join(names[:12]) or "none"

    def close(self) -> None:
        close = getattr(self._catalog, "close", None)
        if close is not None:
            close()
        self._catalog = None


class IcebergSource(Source):
    """The rows of one snapshot of an Iceberg table.

    Parameters
    ----------
    table : str
        ``namespace.name``.
    catalog : str, default="default"
        The catalog's name in pyiceberg's configuration.
    catalog_uri, warehouse : str, optional
        Catalog properties set here rather than in pyiceberg's configuration.
    snapshot_id : int, optional
        The snapshot to read (time travel); default: the current one, pinned when the source is
        first opened so that every read of one run sees the same rows.
    """

    kind = "iceberg"

    def __init__(self, table: str, *, catalog: str = "default", catalog_uri: str | None = None,
                 warehouse: str | None = None, snapshot_id: int | None = None):
        split_identifier(table)
        self.table_name = str(table)
        self.snapshot_id = snapshot_id
        self._cat = _Catalog(catalog, catalog_uri=catalog_uri, warehouse=warehouse)
        self._table = None

    def describe(self) -> str:
        return f"iceberg:{self._cat.where()} table {self.table_name}"

    def identity(self) -> dict:
        return {"kind": self.kind, "catalog": self._cat.where(), "table": self.table_name}

    def table(self):
        if self._table is None:
            table = self._cat.load(self.table_name)
            if table is None:
                raise InputError(f"Iceberg table '{self.table_name}' not found in "
                                 f"{self._cat.where()} (tables: {self._cat.tables_hint(self.table_name)}); "
                                 "fix the table name")
            if self.snapshot_id is None:
                snap = table.current_snapshot()
                self.snapshot_id = snap.snapshot_id if snap is not None else None
            elif table.snapshot_by_id(self.snapshot_id) is None:
                raise InputError(f"Iceberg table '{self.table_name}' has no snapshot "
                                 f"{self.snapshot_id}; pick one of its snapshots or leave "
                                 "snapshot_id unset")
            self._table = table
        return self._table

    def _scan(self, columns=None):
        kwargs = {"snapshot_id": self.snapshot_id} if self.table() is not None and self.snapshot_id else {}
        if columns is not None:
            kwargs["selected_fields"] = tuple(columns)
        return self.table().scan(**kwargs)

    def schema(self) -> pa.Schema:
        from pyiceberg.io.pyarrow import schema_to_pyarrow
        table = self.table()
        schema_id = table.snapshot_by_id(self.snapshot_id).schema_id if self.snapshot_id else None
        schema = table.schema() if schema_id is None else table.schemas()[schema_id]
        return schema_to_pyarrow(schema, include_field_ids=False)

    def reader(self, *, columns=None, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        try:
            reader = self._scan(columns).to_arrow_batch_reader()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read Iceberg table '{self.table_name}' ({error_line(exc)})") from None
        schema = reader.schema
        if columns is not None:  # the scan keeps the table's column order; callers ask for theirs
            schema = pa.schema([schema.field(c) for c in columns])

        def batches():
            for batch in reader:
                if columns is not None:
                    batch = pa.RecordBatch.from_arrays([batch.column(c) for c in columns], schema=schema)
                # Re-cut to batch_rows: file-sized batches would hold whole data files in memory.
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def fingerprint(self) -> str:
        # A snapshot never changes once committed: catalog, table and snapshot name the rows.
        self.table()
        return digest([self._cat.where(), self.table_name, self.snapshot_id])

    def close(self) -> None:
        self._cat.close()


class IcebergSink(Sink):
    """Replace Iceberg tables with Arrow rows, one catalog commit per write.

    A missing table (and namespace) is created with cleanpipe's mark in its ``comment``
    property, which is how a later run knows it may replace the table.

    Parameters
    ----------
    catalog, catalog_uri, warehouse
        As for :class:`IcebergSource`.
    """

    kind = "iceberg"

    def __init__(self, catalog: str = "default", *, catalog_uri: str | None = None,
                 warehouse: str | None = None):
        self._cat = _Catalog(catalog, catalog_uri=catalog_uri, warehouse=warehouse)

    def where(self) -> str:
        return self._cat.where()

    def describe(self, target: str) -> str:
        return f"iceberg:{self._cat.where()} table {target}"

    def check(self, target: str) -> None:
        split_identifier(target)
        self._cat.load(target)  # reaches the catalog

    def written_by_cleanpipe(self, target: str) -> bool | None:
        table = self._cat.load(target)
        if table is None:
            return None
        return table.properties.get("comment") == TABLE_COMMENT

    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        pyiceberg = _pyiceberg()
        catalog = self._cat.catalog()
        namespace, _ = split_identifier(target)
        rows = CountingReader(reader, schema=table_format_schema(reader.schema))
        try:
            table = self._cat.load(target)
            if table is None:
                catalog.create_namespace_if_not_exists(namespace)
                tx = catalog.create_table_transaction(target, schema=rows.reader.schema,
                                                      properties={"comment": TABLE_COMMENT})
                tx.append(rows.reader)
            else:
                tx = table.transaction()
                _replace_schema(tx, table, rows.reader.schema)
                tx.set_properties(comment=TABLE_COMMENT)
                tx.overwrite(rows.reader)
            tx.commit_transaction()
        except Exception as exc:  # noqa: BLE001  (pyiceberg's errors are not OSError)
            if rows.error is not None:
                raise rows.error from None
            if isinstance(exc, (InputError, OSError)):
                raise
            hint = "; the table keeps its previous snapshot"
            if isinstance(exc, pyiceberg.exceptions.CommitFailedException):
                hint = "; another writer committed first, rerun"
            raise InputError(f"cannot write Iceberg table '{target}' to {self._cat.where()} "
                             f"({error_line(exc)}){hint}") from None
        return rows.rows

    def close(self) -> None:
        self._cat.close()


def _replace_schema(tx, table, schema: pa.Schema) -> None:
    """Within ``tx``, make ``table``'s columns those of ``schema`` (same names and types kept)."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    old = schema_to_pyarrow(table.schema(), include_field_ids=False)
    if old.equals(schema, check_metadata=False):
        return
    keep = {f.name for f in schema if f.name in old.names and old.field(f.name).type == f.type}
    with tx.update_schema(allow_incompatible_changes=True) as update:
        for name in old.names:
            if name not in keep:
                update.delete_column(name)
    with tx.update_schema(allow_incompatible_changes=True) as update:
        update.union_by_name(pa.schema([f for f in schema if f.name not in keep]))
        names = schema.names
        for before, name in zip(names, names[1:]):  # the new column order
            update.move_after(name, before)

