"""Where tables come from and go to: Parquet (local or S3), DuckDB, PostgreSQL, Delta Lake and
Iceberg.

One small interface (:class:`Source`, :class:`Sink`) with Arrow record batches in and out. The
database drivers (duckdb, adbc-driver-postgresql) are imported only when used; install them with
``pip install 'cleanpipe[warehouse]'``; the table formats (deltalake, pyiceberg) with
``pip install 'cleanpipe[lakehouse]'``.
"""

from ._sql import qualified, quote_ident, redact
from .base import BATCH_ROWS, BatchHasher, CountingReader, Sink, Source, digest
from .delta import DeltaSink, DeltaSource, is_delta_table
from .duckdb import DuckDBSink, DuckDBSource
from .iceberg import IcebergSink, IcebergSource
from .parquet import ParquetSink, ParquetSource, filesystem_for, is_s3
from .postgres import PostgresSink, PostgresSource, check_uri, describe_uri

__all__ = [
    "BATCH_ROWS", "BatchHasher", "CountingReader", "DeltaSink", "DeltaSource", "DuckDBSink",
    "DuckDBSource", "IcebergSink", "IcebergSource", "is_delta_table", "ParquetSink", "ParquetSource",
    "PostgresSink", "PostgresSource", "Sink", "Source", "check_uri", "describe_uri", "digest",
    "filesystem_for", "is_s3", "qualified", "quote_ident", "redact",
]
