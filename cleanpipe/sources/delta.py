"""Delta Lake tables (the ``deltalake`` package): read a version, replace by one transaction.

A Delta table is a folder of Parquet files and a ``_delta_log/`` of numbered JSON commits; which
files make up the table is decided by the log, not by the folder's listing (files of older
versions stay until a vacuum). So a Delta folder is never read as a plain Parquet folder: the
source reads the files of one version through :meth:`deltalake.DeltaTable.to_pyarrow_dataset`.

A write adds new Parquet files and then commits one log entry that removes the old files and adds
the new ones (``mode="overwrite"``): readers see the previous version until that commit and the
new one after; a write that fails before it leaves the previous version current (its orphaned
data files are removed by ``VACUUM``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from ._sql import error_line
from .base import TABLE_COMMENT, CountingReader, DatasetSource, Sink, digest, table_format_schema

_HINT = "pip install 'cleanpipe[lakehouse]' (or: pip install deltalake)"
#: The folder that makes a folder a Delta table.
LOG_DIR = "_delta_log"


def _deltalake():
    try:
        import deltalake  # optional (cleanpipe[lakehouse])
    except ImportError:
        raise InputError(f"Delta Lake tables need the deltalake package; {_HINT}") from None
    return deltalake


def is_delta_table(path) -> bool:
    """Whether the local folder ``path`` is a Delta table (it holds a ``_delta_log/`` folder)."""
    return os.path.isdir(os.path.join(os.fspath(path), LOG_DIR))


def _local(path: str) -> str:
    if "://" in str(path):
        raise InputError(f"Delta table '{path}': only local Delta tables are supported; copy the "
                         "table to a local folder, or read it with cleanpipe.spark")
    return os.path.abspath(path)


def open_table(path: str, *, version: int | None = None, what: str = "Delta table"):
    """The :class:`deltalake.DeltaTable` at ``path`` (at ``version``, else the latest).

    Raises
    ------
    InputError
        The package is missing, the folder does not exist or is not a Delta table, or the version
        does not exist.
    """
    deltalake = _deltalake()
    local = _local(path)
    if not os.path.exists(local):
        raise InputError(f"{what} '{path}' does not exist; pass the folder of a Delta table "
                         f"(the one holding {LOG_DIR}/)")
    if not is_delta_table(local):
        raise InputError(f"'{path}' is not a Delta table (no {LOG_DIR}/ folder in it); use "
                         "type = \"parquet\" for a folder of plain Parquet files")
    try:
        return deltalake.DeltaTable(local, version=version)
    except Exception as exc:  # noqa: BLE001  (deltalake raises its own and plain ones)
        at = f" at version {version}" if version is not None else ""
        raise InputError(f"cannot open Delta table '{path}'{at} ({error_line(exc)}); check the "
                         "folder and the version") from None


class DeltaSource(DatasetSource):
    """The rows of one version of a local Delta table.

    Parameters
    ----------
    path : str
        The table's folder (the one holding ``_delta_log/``).
    version : int, optional
        The version to read (time travel); default: the latest. The version read is pinned when
        the source is first opened, so every read of one run sees the same rows.
    """

    kind = "delta"

    def __init__(self, path: str, *, version: int | None = None):
        self.path = str(path)
        self.version = version
        self._table = None
        self._dataset = None

    def describe(self) -> str:
        return f"delta:{self.path}"

    def identity(self) -> dict:
        return {"kind": self.kind, "path": _local(self.path)}

    def table(self):
        """The opened :class:`deltalake.DeltaTable`, its version pinned."""
        if self._table is None:
            self._table = open_table(self.path, version=self.version)
        return self._table

    def dataset(self):
        """A :class:`pyarrow.dataset.Dataset` over exactly the files of the pinned version."""
        if self._dataset is None:
            try:
                self._dataset = self.table().to_pyarrow_dataset()
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001  (a protocol feature pyarrow cannot read)
                raise InputError(f"cannot read Delta table '{self.path}' ({error_line(exc)}); "
                                 "read it with cleanpipe.spark, or rewrite it without that "
                                 "table feature") from None
        return self._dataset

    def read_error(self, exc: Exception) -> Exception:
        return InputError(f"cannot read Delta table '{self.path}' ({error_line(exc)})")

    def fingerprint(self) -> str:
        # A Delta version never changes once committed: path and version name the rows.
        return digest([_local(self.path), self.table().version()])


class DeltaSink(Sink):
    """Replace local Delta tables with Arrow rows, one overwrite transaction per write.

    A target is the table's folder; a missing one is created. The table's description is set to
    cleanpipe's mark, which is how a later run knows it may replace it. Like a database table, a
    Delta table keeps no row order (the writer takes record batches in parallel): the written rows
    carry the source's columns, ids included, to be matched by.
    """

    kind = "delta"

    def describe(self, target: str) -> str:
        return f"delta:{target}"

    def check(self, target: str) -> None:
        _deltalake()
        local = Path(_local(target))
        if local.is_file():
            raise InputError(f"'{target}' is a file; a Delta table is a folder, name a new or "
                             "Delta folder")
        if local.is_dir() and not is_delta_table(local) and any(local.iterdir()):
            raise InputError(f"'{target}' is a folder that is not a Delta table and not empty; "
                             "name a new folder or an existing Delta table")
        parent = local if local.is_dir() else local.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot create Delta table '{target}': '{parent}' is not writable")

    def written_by_cleanpipe(self, target: str) -> bool | None:
        local = _local(target)
        if not os.path.exists(local):
            return None
        if not is_delta_table(local):
            return False if os.listdir(local) else None
        return open_table(target).metadata().description == TABLE_COMMENT

    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        deltalake = _deltalake()
        local = _local(target)
        counted = CountingReader(reader, schema=table_format_schema(reader.schema))
        try:
            deltalake.write_deltalake(local, counted, mode="overwrite", schema_mode="overwrite",
                                      description=TABLE_COMMENT)
        except Exception as exc:  # noqa: BLE001  (deltalake's errors are not OSError)
            if counted.error is not None:
                # The rows' producer failed, not the table: its own error says what went wrong.
                raise counted.error from None
            if isinstance(exc, (InputError, OSError)):
                raise
            raise InputError(f"cannot write Delta table '{target}' ({error_line(exc)}); the table "
                             "keeps its previous version") from None
        return counted.rows

