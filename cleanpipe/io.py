"""Tables in and out: Parquet files and directories read with pyarrow, atomic writes.

Every output is first written to a temporary file in the destination directory and renamed over
the final path only when complete, so a crash or kill never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import InputError

TMP_PREFIX = ".cleanpipe-tmp-"


def open_dataset(path: str | os.PathLike, *, what: str = "DATA") -> ds.Dataset:
    """Open a Parquet file or a directory of Parquet files (hive partitions allowed) as a dataset.

    Nothing but the footers is read: columns and batches are read on demand.

    Raises
    ------
    InputError
        Missing path, a file that is not Parquet, files that disagree on schema.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} path '{path}' does not exist; pass an existing Parquet file or directory")
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
            if not files:
                raise InputError(f"{what} directory '{path}' holds no Parquet files; pass a directory "
                                 "that holds .parquet files, or one Parquet file")
            schemas = {f: pq.read_schema(f) for f in files}
            first = schemas[files[0]]
            _check_unique_names(first, files[0], what)
            for f, schema in schemas.items():
                if not schema.equals(first, check_metadata=False):
                    raise InputError(
                        f"{what} files disagree on schema: '{f}' has ({_schema_str(schema)}) but "
                        f"'{files[0]}' has ({_schema_str(first)}); make the files share one schema")
            return ds.dataset(path, format="parquet", partitioning="hive")
        _check_unique_names(pq.read_schema(path), path, what)
        return ds.dataset(path, format="parquet")
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} '{path}' is not a readable Parquet file ({first_line}); "
                         "pass a Parquet file or a directory of Parquet files") from None


def _check_unique_names(schema: pa.Schema, path, what: str) -> None:
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise InputError(f"{what} '{path}' has duplicate column name(s) "
                         f"{', '.join(repr(n) for n in dup)}; rename them so every column name is unique")


def read_table(path: str | os.PathLike, *, what: str = "DATA", columns=None) -> pa.Table:
    """Read a Parquet file or dataset whole (or only ``columns``); see :func:`open_dataset`."""
    dataset = open_dataset(path, what=what)
    try:
        return dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} '{path}' could not be read ({first_line}); is the file "
                         "truncated or corrupt?") from None


def _schema_str(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def summary_path_for(flags_path: str | os.PathLike) -> Path:
    """The summary sidecar of a flags file: ``x.flags.parquet`` -> ``x.flags.summary.json``."""
    p = Path(flags_path)
    return p.with_suffix(".summary.json") if p.suffix else Path(f"{p}.summary.json")


def check_output_path(out: str | os.PathLike, *inputs: str | os.PathLike, option: str = "--out") -> Path:
    """Check that ``out`` can be written: its directory exists and it is none of the inputs."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} directory '{parent}' does not exist; create it first or choose "
                         f"another {option}")
    if out.is_dir():
        raise InputError(f"{option} '{out}' is a directory; pass a file path such as '{out / 'flags.parquet'}'")
    for inp in inputs:
        try:
            same = Path(inp).resolve() == out.resolve()
            inside = Path(inp).is_dir() and Path(inp).resolve() in out.resolve().parents
        except OSError:
            continue
        if same or inside:
            raise InputError(f"{option} '{out}' would overwrite the input '{inp}'; inputs are never "
                             f"modified, choose another {option}")
    return out


class AtomicOutputs:
    """Stage several output files and publish them together.

    ``stage(final)`` returns a temporary path beside ``final``; writers fill it. On a clean exit
    from the ``with`` block every staged file is renamed onto its final path; on an exception every
    temporary is removed and no final path is touched.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []

    def stage(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
        self._staged.append((tmp, final))
        return tmp

    def __enter__(self) -> "AtomicOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, final in self._staged:
                _fsync(tmp)
                os.replace(tmp, final)
        else:
            for tmp, _ in self._staged:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_temps(directory: str | os.PathLike) -> int:
    """Remove temporaries that killed runs left in ``directory``; return how many were removed.

    A temporary carries its writer's process id; those of live processes are left alone, so two
    runs writing into one directory do not delete each other's files.
    """
    removed = 0
    for p in Path(directory).glob(f"{TMP_PREFIX}*"):
        pid = p.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():  # a staged folder (a model directory)
                shutil.rmtree(p)
            else:
                p.unlink()
            removed += 1
    return removed


def with_metadata(schema: pa.Schema, metadata: dict) -> pa.Schema:
    """``schema`` with ``metadata`` added as JSON values under their keys."""
    existing = dict(schema.metadata or {})
    existing.update({k.encode(): json.dumps(v).encode() for k, v in metadata.items()})
    return schema.with_metadata(existing)


def write_parquet(table: pa.Table, path: Path, *, metadata: dict | None = None) -> None:
    """Write ``table`` to ``path`` (call inside :class:`AtomicOutputs` with a staged path)."""
    if metadata:
        table = table.replace_schema_metadata(with_metadata(table.schema, metadata).metadata)
    pq.write_table(table, path, compression="zstd")


def read_json(path: str | os.PathLike, *, what: str, fix: str):
    """Parse a JSON file a user pointed at, with one-line errors that name it and say ``fix``.

    Raises
    ------
    InputError
        ``"{what} '{path}' does not exist; {fix}"``, ``"... cannot be read (reason); ..."`` or
        ``"... is not valid JSON (detail); ..."``. The caller checks the shape of the value.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist; {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(f"{what} '{path}' cannot be read ({reason}); {fix}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{what} '{path}' is not valid JSON ({exc}); {fix}") from None


def write_json(obj, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def write_npy(array: np.ndarray, path: Path) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
