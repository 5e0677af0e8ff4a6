"""Tables Spark can reach, read and written the way cleanpipe reads and writes them on one machine.

* :func:`read_table`: a Parquet file or folder (its files checked to share one schema first, from
  their footers, with the one-line error of :func:`cleanpipe.io.open_dataset`), or a Delta table
  (its folder holds ``_delta_log/``): exactly the files of one version, as the log lists them, read
  by Spark's own Parquet reader. No Delta jars are needed: the log is read with ``deltalake``.
  A Parquet folder on an object store (``s3://bucket/table/``) is read by pyarrow inside the
  tasks, one partition a file, so Spark needs no object-store connector (hadoop-aws and the AWS
  SDK's jars, which a local or self-built Spark often lacks).
* :func:`read_iceberg`: the data files of one Iceberg snapshot, as pyiceberg plans the scan, read
  by Spark's Parquet reader (no Iceberg jars); refused when the snapshot has delete files or a file
  whose columns are not the snapshot's (a rename: Spark would read it as nulls).
* :func:`write_delta`: every partition writes its rows as one new Parquet file in the table's
  folder (on the executors), then the driver commits one Delta transaction that replaces the
  table's files by those: readers see the previous version until that commit. Only the files'
  names and sizes reach the driver.

Local paths are read and written by Spark (the executors and the driver share the file system, as
on one machine or a cluster's shared mount); an ``s3://`` folder is read by pyarrow in the tasks
with the credentials of the executors' environment (the standard AWS variables), and Spark's own
``s3a://`` reader stays the way to read one where the cluster has its connector.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError
from .sources.base import TABLE_COMMENT, table_format_schema
from .sources.delta import LOG_DIR, is_delta_table, open_table

#: Delta reader features whose tables cannot be read as plain Parquet files.
_UNREADABLE = ("deletionVectors", "columnMapping")


def read_table(spark, path: str, *, version: int | None = None, what: str = "DATA"):
    """A Spark DataFrame over a Parquet file or folder, or a Delta table's ``version`` (default:
    the latest).

    Raises
    ------
    InputError
        A missing path, Parquet files that disagree on schema, a Delta version that does not exist,
        a Delta table whose features Spark's Parquet reader cannot honour.
    """
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path and not path.startswith("s3://"):
        raise InputError(f"{what} '{path.split('://')[0]}://...': Spark reads that scheme through its own "
                         "connector; read it with spark.read.parquet(...) and pass the DataFrame "
                         "to cleanpipe.spark.flag (cleanpipe reads s3:// itself)")
    if "://" in path:
        if version is not None:
            raise InputError(f"{what} '{path}': version applies to local Delta tables only; read "
                             "a Delta table on an object store with delta-spark")
        return read_object_store(spark, path, what=what)
    path = os.path.abspath(path)
    if is_delta_table(path):
        table = open_table(path, version=version)
        features = set(getattr(table.protocol(), "reader_features", None) or ())
        if features & set(_UNREADABLE):
            raise InputError(f"Delta table '{path}' uses {sorted(features & set(_UNREADABLE))[0]}, "
                             "which plain Parquet reading cannot honour; read it with delta-spark, "
                             "or rewrite the table without that feature")
        files = table.file_uris()
        if not files:
            schema = table.schema().to_arrow()
            return spark.createDataFrame([], _spark_schema(pa.schema(schema)))
        # basePath: hive-style partition folders become columns, as the log's partition values do.
        return spark.read.option("basePath", path).parquet(*files)
    if version is not None:
        raise InputError(f"{what} '{path}' is not a Delta table (no {LOG_DIR}/ folder); version "
                         "applies to Delta tables only")
    from .io import open_dataset
    open_dataset(path, what=what)  # exists, readable, one schema across the files
    return spark.read.parquet(path)


def read_object_store(spark, uri: str, *, storage=None, what: str = "DATA"):
    """A Spark DataFrame over the Parquet files under ``uri`` (``s3://bucket/table/``, query
    options such as ``?endpoint_override=`` as :func:`pyarrow.fs.FileSystem.from_uri` reads them),
    read by pyarrow inside the tasks: one Spark partition a file, its batches streamed.

    The files are listed on the driver (names only); their footers are read in one Spark job, which
    checks that they share one schema before any row is read.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    uri : str
        The folder (or one file) on the object store.
    storage : (pyarrow.fs.FileSystem, str), optional
        The store as the tasks open it and ``uri``'s path in it (the filesystem travels to them
        pickled, credentials left to their environment unless it was made with them); default
        from ``uri``.
    what : str
        The name the errors give the table.

    Raises
    ------
    InputError
        A missing or empty folder, a Delta table or hive-partitioned folder (whose files alone do
        not say the table's rows), files that disagree on schema or that pyarrow cannot read.
    """
    from .partitions import _filesystem, partition_files
    from .sources._sql import redact
    filesystem, root = storage if storage is not None else _filesystem(uri)
    files = partition_files(uri, storage=(filesystem, root), what=what)
    shown = redact(uri)
    hive = next((f for f in files if "=" in os.path.dirname(os.path.relpath(f, root))), None)
    if hive is not None:
        raise InputError(f"{what} '{shown}' is hive-partitioned ('{hive}'): its partition values "
                         "live in folder names, which cleanpipe's object-store reader does not read; "
                         "read it with spark.read.parquet('s3a://...') (Spark's connector) and pass "
                         "the DataFrame to cleanpipe.spark.flag")
    # One file a task, in the listing's order: a partition's index is its file's.
    paths = spark.createDataFrame(spark.sparkContext.parallelize([(f,) for f in files], len(files)),
                                  "path STRING")
    footers = paths.mapInArrow(_footer_task(filesystem), _FOOTERS_DDL).collect()
    order = {f: i for i, f in enumerate(files)}
    schema = _one_schema(sorted(footers, key=lambda r: order[r["path"]]), shown, what)
    return paths.mapInArrow(_read_task(filesystem, schema), _spark_schema(schema))


def _footer_task(filesystem):
    """The ``mapInArrow`` function reading each file's schema from its footer (IPC bytes), or why
    it could not: ``parquet`` (pyarrow refused the bytes) or ``access`` (the store refused)."""
    def run(batches):
        out = {"path": [], "schema": [], "error": [], "kind": []}
        for batch in batches:
            for path in batch.column(0).to_pylist():
                blob = error = kind = None
                try:
                    with filesystem.open_input_file(path) as fh:
                        blob = pq.read_schema(fh).serialize().to_pybytes()
                except (pa.ArrowException, OSError) as exc:
                    error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    # pyarrow's IO errors are OSErrors; a file it cannot parse is ArrowInvalid.
                    kind = "access" if isinstance(exc, OSError) and not isinstance(
                        exc, (pa.ArrowInvalid, pa.ArrowNotImplementedError)) else "parquet"
                out["path"].append(path)
                out["schema"].append(blob)
                out["error"].append(error)
                out["kind"].append(kind)
        yield pa.RecordBatch.from_pydict(out, schema=_FOOTERS)
    return run


_FOOTERS = pa.schema([("path", pa.string()), ("schema", pa.binary()), ("error", pa.string()),
                      ("kind", pa.string())])
_FOOTERS_DDL = "path STRING, schema BINARY, error STRING, kind STRING"


def _one_schema(footers, uri: str, what: str) -> pa.Schema:
    """The files' one schema as Spark takes it, or the one-line error of the first file that is
    unreadable or differs (``uri`` as the message may show it)."""
    from .io import _check_unique_names, schema_disagreement
    from .sources._sql import redact
    for row in footers:
        if row["kind"] == "access":
            raise InputError(f"{what} file '{row['path']}' cannot be read by the Spark executors "
                             f"({redact(row['error'])}); give them access to the store (on a "
                             "cluster: spark.executorEnv.AWS_ACCESS_KEY_ID and the rest, or an "
                             "instance role)")
        if row["error"] is not None:
            raise InputError(f"{what} file '{row['path']}' is not a readable Parquet file "
                             f"({row['error']}); remove it from '{uri}' or replace it")
    schemas = [(row["path"], pa.ipc.read_schema(pa.py_buffer(row["schema"])).remove_metadata())
               for row in footers]
    first_path, merged = schemas[0]
    _check_unique_names(merged, first_path, what)
    for path, schema in schemas[1:]:
        if schema.equals(merged):
            continue
        try:
            # A column null throughout a file is written with type null (at any depth: a list of
            # tags empty in every row is list<null>): it takes the other files' type, as on the
            # Dask path. Nothing else is merged.
            if schema.names != merged.names:
                raise pa.ArrowTypeError("names differ")
            merged = pa.unify_schemas([merged, schema])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise schema_disagreement(what, path, schema, first_path, schemas[0][1]) from None
    return _as_spark_reads(merged, what, first_path)


def _as_spark_reads(schema: pa.Schema, what: str, where: str) -> pa.Schema:
    """``schema`` with the Arrow types Spark has no type for replaced by the ones Spark's own
    Parquet reader gives them: a dictionary by its values, an unsigned integer by the next wider
    signed one (``uint64`` by ``decimal(20, 0)``), ``float16`` by ``float32``, a timestamp by
    microseconds. A type with no such stand-in is refused in one line naming the column."""
    fields = [pa.field(f.name, _spark_type(f.type), f.nullable) for f in schema]
    for f in fields:
        try:
            _spark_schema(pa.schema([f]))
        except Exception as exc:  # noqa: BLE001 - pyspark's type errors have no common base
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{what} column '{f.name}' (in '{where}') has type {f.type}, which "
                             f"Spark cannot hold ({first}); cast it to a supported type when "
                             "writing the files, or read them with spark.read.parquet") from None
    return pa.schema(fields)


_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
          pa.uint64(): pa.decimal128(20, 0), pa.float16(): pa.float32()}


def _spark_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _spark_type(t.value_type)
    if t in _WIDER:
        return _WIDER[t]
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = pa.field(t.value_field.name, _spark_type(t.value_type), t.value_field.nullable)
        return pa.list_(inner) if pa.types.is_list(t) else pa.large_list(inner)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _spark_type(f.type), f.nullable) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_spark_type(t.key_type), _spark_type(t.item_type))
    return t


def _read_task(filesystem, schema: pa.Schema):
    """The ``mapInArrow`` function streaming each file's record batches, as ``schema`` types
    them (unsafe casts only where :func:`_as_spark_reads` narrowed a timestamp's unit, as
    Spark's reader does)."""
    def run(batches):
        for batch in batches:
            for path in batch.column(0).to_pylist():
                with filesystem.open_input_file(path) as fh:
                    for part in pq.ParquetFile(fh).iter_batches(batch_size=_READ_BATCH):
                        yield part.cast(schema, safe=False) if part.schema != schema else part
    return run


#: Rows a batch of the object-store reader hands Spark (Arrow's default batch size).
_READ_BATCH = 65_536


def read_iceberg(spark, table: str, *, catalog: str = "default", catalog_uri: str | None = None,
                 warehouse: str | None = None, snapshot_id: int | None = None):
    """A Spark DataFrame over one snapshot (default: the current one) of an Iceberg table.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    table, catalog, catalog_uri, warehouse, snapshot_id
        As for :class:`cleanpipe.sources.IcebergSource`.

    Raises
    ------
    InputError
        A missing table or snapshot, delete files (merge-on-read deletes), a data file whose
        columns differ from the snapshot's.
    """
    from .sources.iceberg import IcebergSource
    source = IcebergSource(table, catalog=catalog, catalog_uri=catalog_uri, warehouse=warehouse,
                           snapshot_id=snapshot_id)
    try:
        schema = source.schema()
        scan = source.table().scan(**({"snapshot_id": source.snapshot_id} if source.snapshot_id else {}))
        files = []
        for task in scan.plan_files():
            if task.delete_files:
                raise InputError(f"Iceberg table '{table}' has delete files (merge-on-read deletes), "
                                 "which plain Parquet reading cannot honour; compact the table or "
                                 "read it with iceberg-spark")
            files.append(task.file.file_path)
        for path in files:
            names = pq.read_schema(path.removeprefix("file://")).names
            if set(names) != set(schema.names):
                raise InputError(f"Iceberg table '{table}': data file '{path}' has columns "
                                 f"({', '.join(names)}), not the snapshot's ({', '.join(schema.names)}); "
                                 "a column was renamed or dropped since it was written: read the "
                                 "table with iceberg-spark or rewrite it")
    finally:
        source.close()
    if not files:
        return spark.createDataFrame([], _spark_schema(schema))
    return spark.read.schema(_spark_schema(schema)).parquet(*files)


def _spark_schema(schema: pa.Schema):
    from .spark import _spark_schema as convert
    return convert(schema)


#: Appended to a refused write of a Delta table's file: what the reader sees.
_NOT_COMMITTED = "; nothing was committed, the table is as it was"


def _write_task(folder: str, schema: pa.Schema, token: str):
    """The ``mapInArrow`` function that writes one partition as one Parquet file in ``folder``.

    A write the system refuses is sent back as the one line of
    :func:`cleanpipe.safety.write_error` (Spark returns only text), its half-written file removed.
    """
    def run(batches):
        from pyspark import TaskContext
        index = TaskContext.get().partitionId()
        name = f"part-{index:05d}-{token}.c000.zstd.parquet"
        path = os.path.join(folder, name)
        rows = 0
        try:
            with pq.ParquetWriter(path, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                    rows += batch.num_rows
            st = os.stat(path)
        except OSError as exc:  # pyarrow's IO errors are OSErrors too
            from .safety import write_error
            if os.path.isfile(path):
                os.remove(path)
            yield pa.RecordBatch.from_pydict(
                {"partition": [index], "path": [None], "size": [None], "rows": [None], "mtime": [None],
                 "error": [str(write_error(exc, path, then=_NOT_COMMITTED))]}, schema=_FILES)
            return
        yield pa.RecordBatch.from_pydict(
            {"partition": [index], "path": [name], "size": [st.st_size], "rows": [rows],
             "mtime": [int(st.st_mtime * 1000)], "error": [None]}, schema=_FILES)
    return run


_FILES = pa.schema([("partition", pa.int32()), ("path", pa.string()), ("size", pa.int64()),
                    ("rows", pa.int64()), ("mtime", pa.int64()), ("error", pa.string())])


def write_delta(df, target: str) -> int:
    """Replace (or create) the local Delta table ``target`` by ``df``'s rows, in one commit.

    Returns
    -------
    int
        The rows written.

    Raises
    ------
    InputError
        ``target`` is a file, or a folder that is neither empty nor a Delta table.
    """
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from .sources.delta import DeltaSink
    from .spark import arrow_schema

    target = os.path.abspath(os.fspath(target))
    DeltaSink().check(target)
    schema = table_format_schema(arrow_schema(df)).remove_metadata()
    os.makedirs(target, exist_ok=True)
    token = uuid.uuid4().hex
    files = df.mapInArrow(_write_task(target, schema, token), "partition INT, path STRING, "
                          "size LONG, rows LONG, mtime LONG, error STRING").collect()
    failed = sorted((f["partition"], f["error"]) for f in files if f["error"] is not None)
    if failed:  # the files the other partitions wrote are not in the log: readers never see them
        for f in files:
            if f["path"] is not None:
                try:
                    os.remove(os.path.join(target, f["path"]))
                except OSError:
                    pass
        raise InputError(failed[0][1])
    adds = [AddAction(f["path"], f["size"], {}, f["mtime"] or int(time.time() * 1000), True,
                      json.dumps({"numRecords": f["rows"]})) for f in files]
    if is_delta_table(target):
        open_table(target).create_write_transaction(adds, mode="overwrite", schema=schema)
    else:
        create_table_with_add_actions(target, DeltaSchema.from_arrow(schema), adds, mode="error",
                                      description=TABLE_COMMENT)
    return sum(f["rows"] for f in files)
