"""Tables in and out: Parquet files and directories read with pyarrow (CSV, JSON lines and Feather
through :mod:`cleanpipe.formats`), atomic writes.

Every output is first written to a temporary file in the destination directory and renamed over
the final path only when complete, so a crash or kill never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from . import formats
from .errors import CleanpipeWarning, InputError, first_line

TMP_PREFIX = ".cleanpipe-tmp-"


# The last table read whole: commands open their input more than once, and standard input can
# be read only once.
_whole: dict = {}


def _read_whole(path: str | os.PathLike, fmt: formats.TableFormat, what: str) -> ds.Dataset:
    if os.fspath(path) == formats.STDIN:
        key = (formats.STDIN, fmt)
        if key not in _whole:
            _whole.clear()
            _whole[key] = formats.read(formats.STDIN, fmt, what=what, data=sys.stdin.buffer.read())
        return ds.dataset(_whole[key])
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, fmt)
    if key not in _whole:
        _whole.clear()
        _whole[key] = formats.read(path, fmt, what=what)
    return ds.dataset(_whole[key])


def open_dataset(path: str | os.PathLike, *, what: str = "DATA",
                 fmt: formats.TableFormat = formats.TableFormat()) -> ds.Dataset:
    """Open a table file, a directory of Parquet files (hive partitions allowed), a Delta Lake
    table (a directory holding ``_delta_log/``: its latest version), or ``-`` (standard input) as
    a dataset.

    Parquet is read lazily: nothing but the footers up front, columns and batches on demand.
    CSV, JSON lines and Arrow IPC / Feather (told by ``fmt``, else the file's first bytes or
    name; see :func:`cleanpipe.formats.detect`) are read whole, once per run.

    Raises
    ------
    InputError
        Missing path, a file its format's reader refuses, files that disagree on schema.
    """
    if os.fspath(path) == formats.STDIN:
        return _read_whole(path, fmt, what)
    path = Path(path)
    if not os.path.lexists(path):
        raise InputError(f"{what} path '{path}' does not exist; pass an existing table file "
                         "(Parquet, CSV, JSON lines, Feather) or a directory of Parquet files")
    if path.is_file() and formats.detect(path, given=fmt.kind) != "parquet":
        dataset = _read_whole(path, fmt, what)
        _check_unique_names(dataset.schema, path, what)
        return dataset
    if path.is_dir() and os.path.isdir(path / "_delta_log"):
        # The log, not the listing, says which files are the table: never read it as a folder.
        from .sources.delta import DeltaSource
        dataset = DeltaSource(str(path)).dataset()
        _check_unique_names(dataset.schema, path, what)
        return dataset
    try:
        if path.is_dir():
            files = dataset_files(path, what=what)
            schemas = {f: pq.read_schema(f) for f in files}
            first = schemas[files[0]]
            _check_unique_names(first, files[0], what)
            for f, schema in schemas.items():
                if not schema.equals(first, check_metadata=False):
                    raise schema_disagreement(what, f, schema, files[0], first)
            check_partition_keys(files, path, first.names, what=what)
            return ds.dataset([str(f) for f in files], format="parquet", partitioning="hive",
                              partition_base_dir=str(path))
        if not path.exists():
            raise InputError(f"{what} '{path}' is a broken or looping symlink; point it at a Parquet "
                             "file or pass the file itself")
        _check_unique_names(pq.read_schema(path), path, what)
        return ds.dataset(path, format="parquet")
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"{what} '{path}' is not a readable Parquet file ({first_line(exc)}); "
                         "pass a Parquet, CSV, JSON-lines or Feather file (or a directory of "
                         "Parquet files), or give its format with --format") from None


def _hidden(name: str) -> bool:
    # What pyarrow's dataset discovery skips: hidden files and _metadata-like ones.
    return name.startswith((".", "_"))


def walk_files(root: str | os.PathLike, *, what: str = "DATA") -> list:
    """Every data file under ``root``, as paths below ``root`` as given, sorted.

    Symlinks are followed only while they stay inside ``root`` (a link out of it is skipped with
    a warning), and a file or folder reached twice (two links to one file, a link to a parent
    folder) is visited once. Names starting with ``.`` or ``_`` are skipped.

    Raises
    ------
    InputError
        A broken or looping symlink.
    """
    root = os.fspath(root)
    real_root = os.path.realpath(root)
    st = os.stat(root)
    seen = {(st.st_dev, st.st_ino)}
    out, stack = [], [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if _hidden(e.name):
                continue
            if e.is_symlink():
                try:
                    target = os.path.realpath(e.path, strict=True)
                except OSError:
                    raise InputError(f"{what} '{e.path}' is a broken or looping symlink; remove it or "
                                     "point it at a Parquet file") from None
                if target != real_root and not is_inside(target, real_root):
                    warnings.warn(f"{what} '{e.path}' links outside '{root}' and was not followed; "
                                  "copy the file into the folder to read it", CleanpipeWarning,
                                  stacklevel=2)
                    continue
            try:
                est = os.stat(e.path)
            except FileNotFoundError:
                continue  # vanished while listing
            key = (est.st_dev, est.st_ino)
            if key in seen:
                continue
            seen.add(key)
            if e.is_dir():
                subdirs.append(e.path)
            elif e.is_file():
                out.append(e.path)
        stack.extend(reversed(subdirs))
    return sorted(out)


def dataset_files(path: str | os.PathLike, *, what: str = "DATA") -> list:
    """The data files of the directory ``path`` (see :func:`walk_files`), at least one."""
    files = [Path(f) for f in walk_files(path, what=what)]
    if not files:
        raise InputError(f"{what} directory '{path}' holds no Parquet files; pass a directory "
                         "that holds .parquet files, or one Parquet file")
    return files


def check_partition_keys(files, root, names, *, what: str = "DATA") -> None:
    """Refuse a hive partition key (a ``key=value`` folder) that repeats a column of the files."""
    root = os.fspath(root).rstrip("/")
    for f in files:
        rel = os.fspath(f)[len(root):].strip("/").split("/")[:-1]
        for part in rel:
            key = part.split("=", 1)[0] if "=" in part else None
            if key is not None and key in names:
                raise InputError(f"{what} folder '{part}' makes '{key}' a partition column, but the "
                                 f"files already have a column '{key}'; rename the folder or drop "
                                 "the column from the files")


def _check_unique_names(schema: pa.Schema, path, what: str) -> None:
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise InputError(f"{what} '{path}' has duplicate column name(s) "
                         f"{', '.join(repr(n) for n in dup)}; rename them so every column name is unique")


def read_table(path: str | os.PathLike, *, what: str = "DATA", columns=None,
               fmt: formats.TableFormat = formats.TableFormat()) -> pa.Table:
    """Read a table file or dataset whole (or only ``columns``); see :func:`open_dataset`."""
    dataset = open_dataset(path, what=what, fmt=fmt)
    try:
        return dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{what} '{path}' could not be read ({first_line(exc)}); is the file "
                         "truncated or corrupt? Rewrite it from its source") from None


def _schema_str(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def schema_disagreement(what: str, path, schema: pa.Schema, first_path, first: pa.Schema) -> InputError:
    """The one-line error of a dataset's file ``path`` whose schema is not its first file's: the
    same words on one machine and on Spark's object-store reader."""
    return InputError(f"{what} files disagree on schema: '{path}' has ({_schema_str(schema)}) but "
                      f"'{first_path}' has ({_schema_str(first)}); make the files share one schema")


def check_output_path(out: str | os.PathLike, *, option: str = "--out") -> Path:
    """Check that the file ``out`` can be created: its folder exists and it is not a folder.

    Collisions with inputs and other outputs are :mod:`cleanpipe.safety`'s business.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} directory '{parent}' does not exist; create it first or choose "
                         f"another {option}")
    if out.is_dir():
        raise InputError(f"{option} '{out}' is a directory; pass a file path such as '{out / 'flags.parquet'}'")
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


def pid_alive(pid: int) -> bool:
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
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
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


def is_inside(child: str, parent: str) -> bool:
    """Whether the path ``child`` lies strictly below the folder ``parent`` (both real paths)."""
    parent = parent.rstrip("/") or "/"
    return child != parent and child.startswith(parent if parent == "/" else parent + "/")


def written_by_cleanpipe(path, *, filesystem=None) -> bool:
    """Whether the existing file at ``path`` is one cleanpipe wrote.

    A Parquet file with ``cleanpipe.*`` metadata, a JSON summary or model file that records the
    cleanpipe version, a report page, or a float32 matrix ``.npy`` (what ``--save-pred-probs``
    writes). Anything else, or anything unreadable, is the user's.
    """
    path = os.fspath(path)
    try:
        if filesystem is not None or path.endswith((".parquet", ".pq")) or _has_parquet_magic(path):
            meta = pq.read_schema(path, filesystem=filesystem).metadata or {}
            return any(k.startswith(b"cleanpipe.") for k in meta)
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except Exception:  # noqa: BLE001 - unreadable: not provably ours
        return False
    if head.startswith(b"\x93NUMPY"):
        return b"'descr': '<f4'" in head and re.search(rb"'shape': \(\d+, \d+\)", head) is not None
    if head.lstrip().startswith(b"{"):
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        versions = obj.get("versions") if isinstance(obj, dict) else None
        return isinstance(obj, dict) and ("cleanpipe_version" in obj or (
            isinstance(versions, dict) and "cleanpipe" in versions))
    return b"<title>cleanpipe report" in head


def _has_parquet_magic(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"
