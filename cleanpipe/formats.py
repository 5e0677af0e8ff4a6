"""Table file formats: which reader a file needs, and reading the ones that are not Parquet.

Parquet is read lazily through :mod:`pyarrow.dataset` (see :mod:`cleanpipe.io`). CSV, JSON lines
and Arrow IPC / Feather files are read whole with pyarrow's own readers, which infer a typed
schema; a CSV whose later rows do not fit the types guessed from its first block is read again as
one block so that every row takes part in the guess. Outputs stay Parquet.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.json as pjson

from .errors import InputError, first_line

#: The input formats, by the name the ``--format`` option and a pipeline's ``[source] type`` use.
FORMATS = ("parquet", "csv", "jsonl", "feather")

_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
    ".csv": "csv", ".tsv": "csv", ".tab": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".feather": "feather", ".arrow": "feather", ".ipc": "feather", ".arrows": "feather",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_MAGIC = ((b"PAR1", "parquet"), (b"ARROW1", "feather"))
#: The name standard input goes by on the command line.
STDIN = "-"


@dataclass(frozen=True)
class TableFormat:
    """How to read a table file.

    Parameters
    ----------
    kind : {None, 'parquet', 'csv', 'jsonl', 'feather'}
        None: from the file's first bytes, else its name (see :func:`detect`).
    delimiter : str or None
        CSV field delimiter; None: tab for ``.tsv`` / ``.tab`` names, else comma.
    header : bool
        Whether a CSV's first line names the columns (else they are named ``f0, f1, ...``).
    """

    kind: str | None = None
    delimiter: str | None = None
    header: bool = True

    def __post_init__(self):
        if self.kind is not None and self.kind not in FORMATS:
            raise InputError(f"format {self.kind!r} is not known; choose one of: {', '.join(FORMATS)}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise InputError(f"CSV delimiter {self.delimiter!r} must be one character, e.g. ',' or ';' "
                             "(write a tab as $'\\t' in a shell)")


def _suffix(name: str) -> str:
    name = name.lower()
    for c in _COMPRESSED:
        if name.endswith(c):
            name = name[: -len(c)]
            break
    return os.path.splitext(name)[1]


def detect(path: str | os.PathLike, head: bytes | None = None, given: str | None = None) -> str:
    """The format of a table file: ``given`` if set, else its magic bytes, else its name.

    A file whose name and first bytes say nothing is taken for Parquet, so that its reader names
    what is wrong with it.
    """
    if given is not None:
        return given
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            head = b""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return _EXTENSIONS.get(_suffix(os.fspath(path)), "csv" if os.fspath(path) == STDIN else "parquet")


def delimiter_for(path, fmt: TableFormat) -> str:
    """The CSV delimiter: the one given, else tab for ``.tsv`` / ``.tab`` names, else comma."""
    if fmt.delimiter is not None:
        return fmt.delimiter
    return "\t" if _suffix(os.fspath(path)) in (".tsv", ".tab") else ","


def _csv(source, path, fmt: TableFormat, what: str) -> pa.Table:
    parse = pcsv.ParseOptions(delimiter=delimiter_for(path, fmt))
    opts = dict(autogenerate_column_names=not fmt.header)

    def read(**extra):
        src = io.BytesIO(source) if isinstance(source, bytes) else source
        return pcsv.read_csv(src, read_options=pcsv.ReadOptions(**opts, **extra), parse_options=parse)

    try:
        return read()
    except pa.ArrowInvalid as exc:
        msg = first_line(exc)
    if "conversion error" in msg:
        # The types were guessed from the first block; guess them again from every row.
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
        try:
            return read(block_size=max(size, 1 << 20) + 1)
        except pa.ArrowInvalid as exc:
            msg = first_line(exc)
    if "parse error" in msg:
        # Only the single-threaded reader knows the line number of a ragged row.
        try:
            read(use_threads=False)
        except pa.ArrowInvalid as exc:
            msg = first_line(exc)
    msg = msg.replace("CSV parse error: Row #", "line ")
    raise InputError(f"{what} '{path}' is not a readable CSV file ({msg}); fix that line, or give "
                     "--delimiter / --no-header if the file uses another delimiter or has no header")


def read(path: str | os.PathLike, fmt: TableFormat = TableFormat(), *, what: str = "DATA",
         data: bytes | None = None) -> pa.Table:
    """Read a CSV, JSON-lines or Arrow IPC / Feather file (or ``data``, its bytes) whole.

    Raises
    ------
    InputError
        A file the format's reader refuses, named with the reader's reason (a ragged CSV line by
        its number).
    """
    kind = detect(path, data[:8] if data is not None else None, fmt.kind)
    source = data if data is not None else os.fspath(path)
    if kind == "csv":
        return _csv(source, path, fmt, what)
    try:
        if kind == "jsonl":
            return pjson.read_json(io.BytesIO(source) if data is not None else source)
        if kind == "feather":
            return feather.read_table(pa.BufferReader(source) if data is not None else source)
    except (pa.ArrowInvalid, OSError) as exc:
        name = "JSON-lines" if kind == "jsonl" else "Arrow IPC / Feather"
        raise InputError(f"{what} '{path}' is not a readable {name} file ({first_line(exc)}); "
                         "fix the file or give its real format with --format") from None
    raise InputError(f"{what} '{path}': format {kind!r} is read as a dataset, not whole")
