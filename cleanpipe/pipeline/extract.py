"""Pin the input of a run: a local Parquet path the stages read, and a fingerprint of its rows.

A local Parquet file or directory is used where it is; its fingerprint is the names, sizes and
modification times of its files. Anything else (S3, a glob, a DuckDB or PostgreSQL table or
query) is streamed once, in record batches, into ``<run>/source/data.parquet``. That snapshot
gives every stage the same rows even if the table changes during the run, and its fingerprint is
a hash of the rows themselves (S3 objects and globs use their listing, so an unchanged listing
skips the download on a rerun). A flag stage run partition by partition on Dask reads the
dataset where it is, on the workers (:func:`in_place`): nothing is copied.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..io import open_dataset
from ..sources import BatchHasher, Source
from ..sources._sql import error_line
from .rundir import swap_in, temp_dir

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "source"
SNAPSHOT_FILE = "data.parquet"


@dataclass(frozen=True)
class Snapshot:
    """The pinned input of a run.

    Attributes
    ----------
    path : pathlib.Path or None
        Local Parquet file or directory with the rows; None for an ``s3://`` dataset the
        workers read where it is (:func:`in_place`).
    fingerprint : str
        Changes when the rows change.
    rows : int or None
        None where counting would read the remote dataset's footers on this process.
    copied : bool
        Whether ``path`` is a snapshot inside the run directory.
    """

    path: Path
    fingerprint: str
    rows: int
    copied: bool


def extract(source: Source, run_dir: Path, previous: dict, *, batch_rows: int) -> Snapshot:
    """Return the run's input, copying the rows into the run directory when needed.

    Parameters
    ----------
    source : Source
    run_dir : pathlib.Path
    previous : dict
        The ``input`` record of the previous run in this directory (``{}`` if none).
    batch_rows : int
        Rows per batch while copying.
    """
    local = source.local_parquet()
    if local is not None:
        rows = open_dataset(local, what="[source] path").count_rows()
        return Snapshot(local, source.fingerprint(), rows, False)
    snap = Path(run_dir) / SNAPSHOT_DIR / SNAPSHOT_FILE
    cheap = source.fingerprint()
    if cheap is not None and previous.get("fingerprint") == cheap and snap.is_file():
        log.info("source listing unchanged; reusing the snapshot %s", snap)
        return Snapshot(snap, cheap, int(previous.get("rows", 0)), True)
    log.info("copying %s into %s", source.describe(), snap)
    tmp = temp_dir(run_dir, SNAPSHOT_DIR)
    try:
        reader = source.reader(batch_rows=batch_rows)
        hasher = BatchHasher(reader.schema)
        with pq.ParquetWriter(tmp / SNAPSHOT_FILE, reader.schema, compression="zstd") as writer:
            for batch in reader:
                if cheap is None:
                    hasher.update(batch)
                else:
                    hasher.rows += batch.num_rows
                writer.write_batch(batch)
        swap_in(tmp, snap.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, pa.ArrowException)):
            raise InputError(f"reading {source.describe()} failed ({error_line(exc)})") from None
        raise
    return Snapshot(snap, cheap or hasher.hexdigest(), hasher.rows, True)


def in_place(source: Source) -> Snapshot:
    """The input left where it is, for a stage whose workers read it themselves (flagging
    partition by partition): fingerprinted by its listing, never copied onto this machine."""
    local = source.local_parquet()
    rows = open_dataset(local, what="[source] path").count_rows() if local is not None else None
    return Snapshot(local, source.fingerprint(), rows, False)
