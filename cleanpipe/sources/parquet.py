"""Table files (Parquet, CSV, JSON lines, Feather), directories, globs and hive-partitioned
datasets, on local disk or ``s3://``.

Everything goes through :mod:`pyarrow.fs` and :mod:`pyarrow.dataset`, so a local path and an S3
URI are read the same way, in record batches. S3 settings come from the pipeline (endpoint,
region, anonymous access) or the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); credentials never live in a pipeline file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import formats
from ..errors import InputError
from ..io import TMP_PREFIX, check_partition_keys, cleanup_stale_temps, walk_files, written_by_cleanpipe
from ._sql import error_line
from .base import DatasetSource, Sink, digest

_GLOB_CHARS = "*?["


def is_s3(path: str) -> bool:
    return str(path).startswith("s3://")


def _is_glob(path: str) -> bool:
    return any(c in path for c in _GLOB_CHARS)


def filesystem_for(path: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                   s3_anonymous: bool = False):
    """The pyarrow filesystem for ``path`` and the path inside it.

    Parameters
    ----------
    path : str
        A local path or an ``s3://bucket/key`` URI.
    s3_endpoint : str, optional
        ``http(s)://host:port`` of an S3-compatible store (MinIO, moto, Ceph); default from
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, else AWS itself.
    s3_region : str, optional
        Default from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
    s3_anonymous : bool, default=False
        Read public buckets without credentials.

    Returns
    -------
    (pyarrow.fs.FileSystem, str)

    Raises
    ------
    InputError
        A URI scheme other than ``s3://``.
    """
    path = str(path)
    if is_s3(path):
        endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        kwargs = {"anonymous": bool(s3_anonymous), "connect_timeout": 10, "request_timeout": 60}
        if endpoint:
            scheme, sep, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host if sep else endpoint, scheme=scheme if sep else "https")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), path[len("s3://"):].rstrip("/")
    if "://" in path:
        raise InputError(f"'{path}' uses an unsupported scheme; use a local path or an s3:// URI")
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _arrow_error(what: str, exc: BaseException) -> InputError:
    return InputError(f"{what} ({error_line(exc)})")


def file_format(fmt: formats.TableFormat, path: str):
    """The :mod:`pyarrow.dataset` file format that reads ``path`` as ``fmt`` says."""
    kind = fmt.kind or "parquet"
    if kind == "csv":
        return ds.CsvFileFormat(
            parse_options=pa.csv.ParseOptions(delimiter=formats.delimiter_for(path, fmt)),
            read_options=pa.csv.ReadOptions(autogenerate_column_names=not fmt.header))
    return {"parquet": "parquet", "jsonl": ds.JsonFileFormat(), "feather": "ipc"}[kind]


class ParquetSource(DatasetSource):
    """Table files: one file, a directory (hive partitions become columns), or a glob of files,
    in Parquet or another of :data:`cleanpipe.formats.FORMATS`.

    Parameters
    ----------
    path : str
        Local path or ``s3://`` URI; ``*``, ``?`` and ``[...]`` make it a glob (``*`` also
        matches ``/``).
    s3_endpoint, s3_region, s3_anonymous
        See :func:`filesystem_for`.
    fmt : TableFormat
        The files' format (its ``kind`` None: Parquet). Non-Parquet files are streamed, and a
        pipeline copies them into its run folder's Parquet snapshot once.
    """

    kind = "parquet"

    def __init__(self, path: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                 s3_anonymous: bool = False, fmt: formats.TableFormat = formats.TableFormat()):
        self.path = str(path)
        self.fmt = fmt
        self._parquet = (fmt.kind or "parquet") == "parquet"
        self._fs, self._inner = filesystem_for(self.path, s3_endpoint=s3_endpoint,
                                               s3_region=s3_region, s3_anonymous=s3_anonymous)
        self._dataset = None
        self._files = None

    def describe(self) -> str:
        return self.path

    def identity(self) -> dict:
        return {"kind": self.kind, "path": self.path if is_s3(self.path) else self._inner}

    def _list(self):
        """(files, partition base dir or None) with the FileInfo of every data file."""
        if self._files is not None:
            return self._files
        local = not is_s3(self.path)
        try:
            if _is_glob(self._inner):
                cut = min(self._inner.find(c) for c in _GLOB_CHARS if c in self._inner)
                base = self._inner[:cut].rsplit("/", 1)[0] or "/"
                if local:
                    # One walk for every local dataset: no link out of the base, no file twice.
                    paths = [f for f in (walk_files(base, what="[source] path") if os.path.isdir(base)
                                         else []) if fnmatch.fnmatchcase(f, self._inner)]
                    files = self._fs.get_file_info(paths) if paths else []
                else:
                    infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True,
                                                                     allow_not_found=True))
                    files = [i for i in infos if i.is_file and fnmatch.fnmatchcase(i.path, self._inner)]
                if not files:
                    raise InputError(f"no files match '{self.path}'; check the pattern")
                self._files = (sorted(files, key=lambda i: i.path), base)
                return self._files
            info = self._fs.get_file_info(self._inner)
            if info.type == pafs.FileType.NotFound:
                if local and os.path.islink(self._inner):
                    raise InputError(f"'{self.path}' is a broken or looping symlink; point it at a "
                                     "Parquet file, directory or glob")
                raise InputError(f"'{self.path}' does not exist; pass an existing Parquet file, "
                                 "directory or glob")
            if info.type == pafs.FileType.File:
                self._files = ([info], None)
                return self._files
            if local:
                paths = walk_files(self._inner, what="[source] path")
                files = self._fs.get_file_info(paths) if paths else []
            else:
                infos = self._fs.get_file_info(pafs.FileSelector(self._inner, recursive=True))
                # Skip what pyarrow's dataset discovery skips: hidden and _metadata-like files.
                files = [i for i in infos if i.is_file and not any(
                    part.startswith((".", "_")) for part in i.path[len(self._inner):].split("/") if part)]
        except InputError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise _arrow_error(f"cannot list '{self.path}'", exc) from None
        if not files:
            what = "Parquet" if self._parquet else self.fmt.kind
            raise InputError(f"directory '{self.path}' holds no {what} files; use a folder that "
                             "holds them (names starting with . or _ are skipped)")
        self._files = (sorted(files, key=lambda i: i.path), self._inner)
        return self._files

    def dataset(self) -> ds.Dataset:
        """The :class:`pyarrow.dataset.Dataset` over every file (hive partitions discovered)."""
        if self._dataset is None:
            files, base = self._list()
            fmt = file_format(self.fmt, self.path)
            try:
                if base is None:
                    self._dataset = ds.dataset(files[0].path, filesystem=self._fs, format=fmt)
                else:
                    first = (pq.read_schema(files[0].path, filesystem=self._fs) if self._parquet
                             else ds.dataset(files[0].path, filesystem=self._fs, format=fmt).schema)
                    check_partition_keys([f.path for f in files], base, first.names,
                                         what="[source] path")
                    self._dataset = ds.dataset([f.path for f in files], filesystem=self._fs,
                                               format=fmt, partitioning="hive",
                                               partition_base_dir=base)
            except (OSError, pa.ArrowException) as exc:
                name = (self.fmt.kind or "parquet").replace("jsonl", "JSON-lines").capitalize() \
                    if not self._parquet else "Parquet"
                raise _arrow_error(f"'{self.path}' is not a readable {name} dataset", exc) from None
        return self._dataset

    def read_error(self, exc: Exception) -> Exception:
        return _arrow_error(f"cannot read '{self.path}'", exc)

    def fingerprint(self) -> str:
        files, _ = self._list()
        return digest([[f.path, f.size, f.mtime_ns] for f in files])

    def local_parquet(self) -> Path | None:
        if is_s3(self.path) or _is_glob(self._inner) or not self._parquet:
            return None
        return Path(self._inner)


class ParquetSink(Sink):
    """Write tables as single Parquet files, locally or to ``s3://``.

    The rows go to a temporary file beside the target, which is then moved onto it: a rename on
    local disk; on S3 a server-side copy, which publishes the whole object or nothing.
    """

    kind = "parquet"

    def __init__(self, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                 s3_anonymous: bool = False):
        self._opts = {"s3_endpoint": s3_endpoint, "s3_region": s3_region, "s3_anonymous": s3_anonymous}

    def describe(self, target: str) -> str:
        return str(target)

    def check(self, target: str) -> None:
        fs, inner = filesystem_for(target, **self._opts)
        try:
            info = fs.get_file_info(inner)
            if info.type == pafs.FileType.Directory:
                raise InputError(f"'{target}' is a directory; name a .parquet file")
            if is_s3(target):
                bucket = inner.split("/", 1)[0]
                if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise InputError(f"bucket '{bucket}' of '{target}' does not exist; create it "
                                     "or fix the URI")
                return
        except InputError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise _arrow_error(f"cannot reach '{target}'", exc) from None
        parent = Path(inner).parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise InputError(f"cannot create '{target}': '{parent}' is not a writable directory")

    def written_by_cleanpipe(self, target: str) -> bool | None:
        fs, inner = filesystem_for(target, **self._opts)
        try:
            if fs.get_file_info(inner).type == pafs.FileType.NotFound:
                return None
        except (OSError, pa.ArrowException) as exc:
            raise _arrow_error(f"cannot reach '{target}'", exc) from None
        return written_by_cleanpipe(inner, filesystem=fs if is_s3(target) else None)

    def write(self, target: str, reader: pa.RecordBatchReader) -> int:
        fs, inner = filesystem_for(target, **self._opts)
        parent, _, name = inner.rpartition("/")
        tmp = f"{parent}/{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"
        rows = 0
        try:
            if not is_s3(target):
                os.makedirs(parent, exist_ok=True)
                # Temporaries of runs killed while writing here (their process is gone).
                cleanup_stale_temps(parent)
            with pq.ParquetWriter(tmp, reader.schema, filesystem=fs, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            if not is_s3(target):
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            fs.move(tmp, inner)
        except BaseException as exc:
            with contextlib.suppress(OSError, pa.ArrowException):
                fs.delete_file(tmp)
            if isinstance(exc, (OSError, pa.ArrowException)):
                raise _arrow_error(f"cannot write '{target}'", exc) from None
            raise
        return rows
