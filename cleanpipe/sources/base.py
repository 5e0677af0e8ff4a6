"""The one interface every table source and sink implements: Arrow record batches in and out.

A :class:`Source` gives a schema and a :class:`pyarrow.RecordBatchReader` over its rows (or a
subset of the columns), so a table larger than memory is read in batches. A :class:`Sink`
takes a record batch reader and replaces a target (a file, an object, a table) with its rows
atomically: readers of the target see the old rows or the new rows, never a mix or a half.
"""

from __future__ import annotations

import abc
import hashlib
import json
from pathlib import Path

import pyarrow as pa

#: The comment cleanpipe puts on every table it writes: a table without it is the user's.
TABLE_COMMENT = "written by cleanpipe"


#: Rows per record batch when a source is read in batches.
BATCH_ROWS = 65536


class Source(abc.ABC):
    """A table to read.

    Subclasses open nothing in ``__init__`` beyond cheap checks; :meth:`schema` is the first call
    that touches the data and doubles as the reachability check.
    """

    #: Short name of the kind of source (``parquet``, ``duckdb``, ``postgres``).
    kind: str = ""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the rows come from, for logs and manifests; never holds a secret."""

    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows.

        Raises
        ------
        InputError
            The source cannot be reached or read.
        """

    @abc.abstractmethod
    def reader(self, *, columns=None, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        """Stream the rows (only ``columns``, in that order, if given) in record batches."""

    def identity(self) -> dict:
        """What the source points at (not its content): the same dict means the same table."""
        return {"kind": self.kind, "where": self.describe()}

    def fingerprint(self) -> str | None:
        """A cheap content fingerprint (file names, sizes, times), or ``None`` when only reading
        every row can tell whether the data changed (database tables and queries)."""
        return None

    def local_parquet(self) -> Path | None:
        """A local Parquet file or directory holding exactly these rows, if there is one."""
        return None

    def close(self) -> None:
        """Release connections; the source may not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DatasetSource(Source):
    """A source whose rows are a :class:`pyarrow.dataset.Dataset` (files, or a table format's
    pinned files): schema, row count and reading come from :meth:`dataset`."""

    @abc.abstractmethod
    def dataset(self):
        """The dataset over exactly this source's files; raises InputError when unreadable."""

    @abc.abstractmethod
    def read_error(self, exc: Exception) -> Exception:
        """The one-line InputError for a read that failed with ``exc``."""

    def schema(self) -> pa.Schema:
        return self.dataset().schema

    def count_rows(self) -> int:
        return self.dataset().count_rows()

    def reader(self, *, columns=None, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        try:
            # One file and one batch ahead: pyarrow's defaults (4 files, 16 batches) decode several
            # row groups at once, hundreds of MiB for 1M-row row groups.
            return self.dataset().scanner(columns=columns, batch_size=batch_rows, fragment_readahead=1,
                                          batch_readahead=1).to_reader()
        except (OSError, pa.ArrowException) as exc:
            raise self.read_error(exc) from None


class Sink(abc.ABC):
    """Somewhere to write tables: targets are file paths, object URIs or table names."""

    kind: str = ""

    @abc.abstractmethod
    def describe(self, target: str) -> str:
        """Where ``target`` lands, for logs and manifests; never holds a secret."""

    @abc.abstractmethod
    def check(self, target: str) -> None:
        """Raise :class:`~cleanpipe.errors.InputError` if ``target`` cannot be written."""

    @abc.abstractmethod
    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        """Replace ``target`` by the rows of ``reader`` atomically; return the row count."""

    def written_by_cleanpipe(self, target: str) -> bool | None:
        """Whether ``target`` exists and cleanpipe wrote it (``None``: it does not exist)."""
        return None

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def digest(obj) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``obj`` (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class BatchHasher:
    """Hash a stream of record batches by content: equal rows in equal order, equal hash.

    Each column is hashed through its Arrow IPC serialisation, batch by batch; the result does
    not depend on how a driver happens to cut the stream into batches only if the cuts are the
    same, which holds for one driver reading one unchanged table.
    """

    def __init__(self, schema: pa.Schema):
        self._h = hashlib.sha256()
        # Names and types count: a renamed column is a different table.
        self._h.update(schema.remove_metadata().serialize())
        self.rows = 0

    def update(self, batch: pa.RecordBatch) -> None:
        self._h.update(batch.serialize())
        self.rows += batch.num_rows

    def hexdigest(self) -> str:
        return "sha256:" + self._h.hexdigest()


class CountingReader:
    """A record batch stream that counts its rows as a writer pulls them and keeps the error its
    producer raised: table-format writers (deltalake, pyiceberg) report it only as text, and a
    producer's error is not the table's.

    Attributes
    ----------
    reader : pyarrow.RecordBatchReader
        The stream to hand to the writer, its batches cast to ``schema`` when one is given (also exported through ``__arrow_c_stream__``).
    rows : int
        Rows pulled so far.
    error : BaseException or None
        What the producer raised, if it failed.
    """

    def __init__(self, reader: pa.RecordBatchReader, *, schema: pa.Schema | None = None):
        self.rows = 0
        self.error = None
        schema = reader.schema if schema is None else schema
        cast = not schema.equals(reader.schema)

        def batches():
            try:
                for batch in reader:
                    self.rows += batch.num_rows
                    yield batch.cast(schema) if cast else batch
            except BaseException as exc:
                self.error = exc
                raise

        self.reader = pa.RecordBatchReader.from_batches(schema, batches())

    def __arrow_c_stream__(self, requested_schema=None):
        return self.reader.__arrow_c_stream__(requested_schema)


_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
          pa.uint64(): pa.int64()}


def table_format_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` in the types Delta Lake and Iceberg hold: dictionaries as their values, unsigned
    integers as the next wider signed type (the formats have none; ``uint64`` becomes ``int64``,
    and a value beyond its range fails the cast rather than wrapping)."""
    def plain(t: pa.DataType) -> pa.DataType:
        if pa.types.is_dictionary(t):
            return plain(t.value_type)
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            item = t.value_field.with_type(plain(t.value_type))
            return pa.list_(item) if pa.types.is_list(t) else pa.large_list(item)
        return _WIDER.get(t, t)

    return pa.schema([f.with_type(plain(f.type)) for f in schema], metadata=schema.metadata)
