"""Where tables come from and go to: Parquet (local or S3), DuckDB and PostgreSQL.

One small interface (:class:`Source`, :class:`Sink`) with Arrow record batches in and out. The
database drivers (duckdb, adbc-driver-postgresql) are imported only when used; install them with
``pip install 'cleanpipe[warehouse]'``.
"""

from ._sql import qualified, quote_ident, redact
from .base import BATCH_ROWS, BatchHasher, Sink, Source, digest
from .duckdb import DuckDBSink, DuckDBSource
from .parquet import ParquetSink, ParquetSource, filesystem_for, is_s3
from .postgres import PostgresSink, PostgresSource, check_uri, describe_uri

__all__ = [
    "BATCH_ROWS", "BatchHasher", "DuckDBSink", "DuckDBSource", "ParquetSink", "ParquetSource",
    "PostgresSink", "PostgresSource", "Sink", "Source", "check_uri", "describe_uri", "digest",
    "filesystem_for", "is_s3", "qualified", "quote_ident", "redact",
]
