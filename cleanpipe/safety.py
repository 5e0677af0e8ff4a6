"""The one output-safety rule every command and every sink goes through.

Before any work, every input and every output of a run is resolved to a canonical identity, a
:class:`Place`:

* a local path: its real path, after symlinks and ``..`` (plus device and inode when it exists, so
  a hard link is the file it links to);
* an ``s3://`` URI: bucket and key with empty segments and trailing slashes removed;
* a glob: its real base folder and the pattern below it (an output that matches it would join the
  input set on the next run);
* a database table: the engine, the database file (DuckDB, real path) or server (PostgreSQL: host,
  port, database), the schema with its default filled in (``main``, ``public``) and the name folded
  as the engine folds it (DuckDB matches names case-insensitively, even quoted ones; cleanpipe
  quotes every PostgreSQL name, which PostgreSQL then matches exactly). A source *query* counts as
  reading every table whose name it mentions.

:func:`check_plan` then refuses, with one line, any output that is, contains or lies inside an
input, or that is or nests with another output of the same run. :func:`check_overwrite` refuses
to replace an existing file or table that cleanpipe did not write, unless the user passed
``--overwrite``; nothing but cleanpipe's own files is ever deleted, even then. :func:`check_writable`
proves that the folder of every local output takes a new file before long work starts.

Failures of the environment found later (a full disk, a read-only file system, a permission, a
file that vanished, a corrupt Parquet page) are turned into one line by :func:`environment_error`,
which the CLI calls for any ``OSError`` or Arrow read error that reaches it.
"""

from __future__ import annotations

import contextvars
import errno
import fnmatch
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .errors import CleanpipeError, InputError, first_line
from .io import TMP_PREFIX, check_output_path, is_inside, written_by_cleanpipe
from .sources._sql import split_uri
from .sources.base import TABLE_COMMENT  # noqa: F401  (the sinks' mark, checked by guard_pipeline)

#: Default schema of each engine, filled in where a pipeline leaves ``schema`` unset.
DEFAULT_SCHEMA = {"duckdb": "main", "postgres": "public"}
_GLOB_CHARS = "*?["
#: Every host name that means "this machine" to libpq.
_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "[::1]"}

#: The inputs of the command running now, named in messages about a read that failed mid-run.
_CURRENT_INPUTS: contextvars.ContextVar = contextvars.ContextVar("cleanpipe_inputs", default=())
_CURRENT_OUTPUTS: contextvars.ContextVar = contextvars.ContextVar("cleanpipe_outputs", default=())


@dataclass(frozen=True)
class Place:
    """The canonical identity of one input or output.

    Attributes
    ----------
    kind : str
        ``path`` (local file or folder), ``s3``, ``glob`` or ``table``.
    key : tuple
        The canonical identity: ``(real path,)``; ``(bucket/key,)``; ``(real base, pattern)``;
        ``(engine, database or server, schema, folded name)``.
    option : str
        Where the user named it (``--out``, ``DATA``, ``[sink] flags``), for messages.
    given : str
        How the user wrote it.
    inode : tuple or None
        ``(st_dev, st_ino)`` of an existing local path.
    query : str or None
        A database source given as a query (``key[3]`` is then empty).
    folder : bool
        An output folder (a model or run directory): anything below it counts as written.
    """

    kind: str
    key: tuple
    option: str
    given: str
    inode: tuple | None = None
    query: str | None = None
    folder: bool = False

    def __str__(self) -> str:
        return f"{self.option} '{self.given}'" if self.option else f"'{self.given}'"


def _real(path) -> str:
    try:
        return os.path.realpath(os.fspath(path), strict=False)
    except OSError as exc:  # a symlink loop on some Pythons
        raise InputError(f"'{path}' cannot be resolved ({exc.strerror or exc}); remove the "
                         "looping symlink or pass another path") from None


def _inode(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def is_glob(path: str) -> bool:
    return any(c in str(path) for c in _GLOB_CHARS)


def path_place(path, option: str, *, folder: bool = False) -> Place:
    """A local path, ``s3://`` URI or glob (of either) as a :class:`Place`; ``folder`` marks an
    output folder."""
    given = os.fspath(path)
    if given.startswith("s3://"):
        parts = [p for p in given[len("s3://"):].split("/") if p and p != "."]
        inner = "/".join(parts)
        if is_glob(inner):
            cut = min(inner.find(c) for c in _GLOB_CHARS if c in inner)
            return Place("glob", ("s3://" + inner[:cut].rsplit("/", 1)[0], "s3://" + inner),
                         option, given)
        return Place("s3", ("s3://" + inner,), option, given, folder=folder)
    if is_glob(given):
        absolute = os.path.abspath(given)
        cut = min(absolute.find(c) for c in _GLOB_CHARS if c in absolute)
        base = absolute[:cut].rsplit("/", 1)[0] or "/"
        real_base = _real(base)
        return Place("glob", (real_base, real_base + absolute[len(base):]), option, given)
    real = _real(given)
    return Place("path", (real,), option, given, inode=_inode(real), folder=folder)


def fold(engine: str, name: str | None) -> str | None:
    """``name`` as ``engine`` compares it: DuckDB ignores case (quoted names too); cleanpipe quotes
    every PostgreSQL name, which PostgreSQL then compares exactly."""
    if name is None:
        return None
    return name.lower() if engine == "duckdb" else name


def pg_server(uri: str | None) -> str:
    """``host:port/database`` of a PostgreSQL URI (``None``: the ``PG*`` environment), with every
    name for this machine folded to ``local``; the fragment marker ``#`` is not special to libpq."""
    env = os.environ
    host, port, db, user = (env.get("PGHOST", ""), env.get("PGPORT", "5432"), env.get("PGDATABASE"),
                            env.get("PGUSER"))
    if uri:
        parts = split_uri(uri)
        params = parts["params"]
        host = params.get("host") or parts["host"] or host
        port = params.get("port") or parts["port"] or port
        db = params.get("dbname") or parts["dbname"] or db
        user = params.get("user") or parts["user"] or user
    host = "local" if host.lower() in _LOCAL_HOSTS or host.startswith("/") else host.lower()
    return f"{host}:{port}/{db or user or ''}"


def table_place(engine: str, where: str, schema: str | None, table: str | None, option: str, *,
                query: str | None = None) -> Place:
    """A DuckDB (``where`` = database file) or PostgreSQL (``where`` = URI or None) table."""
    server = _real(where) if engine == "duckdb" else pg_server(where)
    schema = fold(engine, schema or DEFAULT_SCHEMA[engine])
    given = table if table is not None else "query"
    return Place("table", (engine, server, schema, fold(engine, table)), option,
                 f"{schema}.{given}" if table is not None else given, query=query)


def iceberg_place(where: str, table: str, option: str) -> Place:
    """An Iceberg table: the catalog (its URI, else its name) and ``namespace.name``, compared
    exactly (the catalogs keep names as written)."""
    namespace, _, name = table.rpartition(".")
    return Place("table", ("iceberg", where, namespace, name), option, table)


def source_places(source) -> list:
    """The places a :class:`~cleanpipe.sources.Source` reads."""
    if source.kind in ("parquet", "delta"):
        # A Delta table is its folder: an output inside it would land among its files.
        return [path_place(source.path, "the source")]
    if source.kind == "iceberg":
        return [iceberg_place(source.identity()["catalog"], source.table_name, "the source")]
    where = source.database if source.kind == "duckdb" else source.uri
    places = [table_place(source.kind, where, source.db_schema, source.table, "the source",
                          query=source.query)]
    if source.kind == "duckdb":
        places.append(path_place(source.database, "the source database"))
    return places


def sink_place(sink, target: str, option: str) -> Place:
    """The place a :class:`~cleanpipe.sources.Sink` writes ``target`` to."""
    if sink.kind in ("parquet", "delta"):
        return path_place(target, option, folder=sink.kind == "delta")
    if sink.kind == "iceberg":
        return iceberg_place(sink.where(), target, option)
    return table_place(sink.kind, sink.database if sink.kind == "duckdb" else sink.uri,
                       sink.db_schema, target, option)


def relation(out: Place, inp: Place) -> str | None:
    """How output ``out`` touches input ``inp``: ``is``, ``contains``, ``is inside``, ``matches``,
    or ``None`` when they are apart."""
    if out.kind == "table" or inp.kind == "table":
        if out.kind != inp.kind or out.key[:2] != inp.key[:2]:
            return None
        if inp.query is not None:
            name = out.key[3]
            # DuckDB folds every name; PostgreSQL folds unquoted ones, and a folded name is lower case.
            folds = out.key[0] == "duckdb" or name == name.lower()
            hit = re.search(rf'(?<![\w$]){re.escape(name)}(?![\w$])', inp.query,
                            re.IGNORECASE if folds else 0)
            return "is read by the source query of" if hit else None
        return "is" if out.key == inp.key else None
    if out.kind == "glob":
        return None  # outputs are never globs (refused where they are named)
    o = out.key[0]
    if inp.kind == "glob":
        base, pattern = inp.key
        if fnmatch.fnmatchcase(o, pattern):
            return "matches"
        if o == base or is_inside(base, o):
            return "contains"
        if out.folder and is_inside(o, base):
            return "is inside"
        return None
    if out.kind != inp.kind:
        return None
    i = inp.key[0]
    if o == i or (out.inode is not None and out.inode == inp.inode):
        return "is"
    if is_inside(i, o):
        return "contains"
    if is_inside(o, i):
        return "is inside"
    return None


def _knob(option: str) -> str:
    """The option to change for an output named ``option`` (``--out (its summary)`` -> ``--out``)."""
    return option if option.startswith("[") else option.split(" ")[0]


def check_plan(inputs, outputs) -> None:
    """Refuse an output that is, contains or lies inside an input, or that is or nests with another
    output; remember both lists for messages about faults found later in the run.

    Parameters
    ----------
    inputs, outputs : iterable of Place
        ``None`` entries are skipped.

    Raises
    ------
    InputError
        One line naming both places and the option to change.
    """
    inputs = [p for p in inputs if p is not None]
    outputs = [p for p in outputs if p is not None]
    for out in outputs:
        for inp in inputs:
            rel = relation(out, inp)
            if rel:
                why = {"is": "", "contains": f" (the input lies inside {out.given!r})",
                       "is inside": " (it lies inside the input folder)",
                       "matches": " (it matches the input pattern, so the next run would read it)",
                       }.get(rel, " (the source query reads that table)")
                the = "" if inp.option.startswith("the ") else "the input "
                raise InputError(f"{out} would overwrite {the}{inp}{why}; inputs are never "
                                 f"modified, choose another {_knob(out.option)}")
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            rel = relation(a, b) or relation(b, a)
            if rel:
                raise InputError(f"{a} and {b} name the same place; one output would replace the "
                                 f"other, choose another {_knob(b.option)}")
    _CURRENT_INPUTS.set(tuple(inputs))
    _CURRENT_OUTPUTS.set(tuple(outputs))


# --- who wrote an existing file ------------------------------------------------------------------

#: Files of a model directory written by ``cleanpipe retrain``.
MODEL_FILES = ("model.pt", "model.json", "metrics.json")


def check_overwrite(place: Place, *, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse to replace an existing local file cleanpipe did not write, unless ``overwrite``.

    Folders are never replaced here (a model directory has its own rule, :func:`check_model_dir`).
    """
    if place.kind != "path":
        return
    path = place.key[0]
    if os.path.isdir(path):
        raise InputError(f"{place} is a directory; name a file, such as "
                         f"'{os.path.join(place.given, 'out' + (Path(place.given).suffix or '.parquet'))}'")
    if os.path.lexists(place.given) and not overwrite and not written_by_cleanpipe(path):
        raise InputError(f"{place} exists and was not written by cleanpipe; pass {flag} to "
                         f"replace it, or choose another {_knob(place.option)}")


def check_model_dir(path, *, overwrite: bool) -> None:
    """An existing model directory is replaced only with ``overwrite``, and only when it holds
    nothing but cleanpipe's own files: replacing it must not delete anything else."""
    path = Path(path)
    if not path.is_dir():
        return
    entries = [e.name for e in path.iterdir()]
    if not entries:
        return
    foreign = sorted(n for n in entries if n not in MODEL_FILES)
    if foreign:
        raise InputError(f"--out '{path}' holds files cleanpipe did not write ('{foreign[0]}'"
                         f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); "
                         "they are never deleted, even with --overwrite: choose a new or empty "
                         "directory")
    if not overwrite:
        raise InputError(f"--out '{path}' exists and is not empty; pass --overwrite to replace it or "
                         "choose another directory")


def guard_files(inputs: dict, outputs: dict, *, overwrite: bool = False, model_dir=None) -> None:
    """The whole rule for a command that reads and writes local files (or ``s3://`` URIs).

    Parameters
    ----------
    inputs : dict
        ``option -> path`` of every input the command reads (``None`` values are skipped).
    outputs : dict
        ``option -> path`` of every file the command writes (``None`` values are skipped).
    overwrite : bool, default=False
        Replace existing files that cleanpipe did not write.
    model_dir : (option, path), optional
        A model directory the command writes (``retrain --out``).

    Raises
    ------
    InputError
        A missing output folder, an output that collides with an input or another output, an
        existing foreign file without ``overwrite``, an output folder that takes no new file.
    """
    outputs = {k: v for k, v in outputs.items() if v is not None}
    for option, path in outputs.items():
        if not str(path).startswith("s3://"):
            check_output_path(path, option=option)
    out_places = [path_place(path, option) for option, path in outputs.items()]
    if model_dir is not None:
        out_places.append(path_place(model_dir[1], model_dir[0], folder=True))
    check_plan([path_place(p, option) for option, p in inputs.items() if p is not None], out_places)
    for place in out_places:
        if model_dir is not None and place.given == str(model_dir[1]):
            check_model_dir(place.given, overwrite=overwrite)
        else:
            check_overwrite(place, overwrite=overwrite)
    check_writable(*out_places)


def guard_pipeline(p, ends, run_dir, *, overwrite: bool = False) -> None:
    """The rule for ``cleanpipe run``: the run directory and every sink target against the source
    and the pipeline file, and each other; existing sink files or tables that cleanpipe did not
    write are replaced only with ``overwrite``.

    Parameters
    ----------
    p : Pipeline
    ends : Endpoints
        The opened source and sink (:func:`~cleanpipe.pipeline.preflight.preflight`).
    run_dir : path-like
    overwrite : bool, default=False

    Raises
    ------
    InputError
    """
    inputs = [path_place(p.file, "the pipeline file"), *source_places(ends.source)]
    if getattr(p.flag, "against", None) is not None and "flag" in p.stages:
        inputs.append(path_place(p.flag.against, "[flag] against"))
    outputs = [path_place(run_dir, "--runs-dir (the run directory)", folder=True)]
    for stage, target in ends.targets.items():
        key = "flags" if stage == "flag" else "cleaned"
        outputs.append(sink_place(ends.sink, target, f"[sink] {key}"))
    if ends.sink is not None and ends.sink.kind == "duckdb":
        # The database file a DuckDB sink creates must not land in a source folder or on an input
        # file; sharing the source's own database file is fine (other tables).
        check_plan([i for i in inputs if i.option != "the source database"],
                   [path_place(ends.sink.database, "[sink] database")])
    check_plan(inputs, outputs)
    for place, target in zip(outputs[1:], ends.targets.values()):
        if ends.sink.kind == "parquet" and place.kind == "path" and os.path.isdir(place.key[0]):
            raise InputError(f"{place} is a directory; name a .parquet file")
        if not overwrite and ends.sink.written_by_cleanpipe(target) is False:
            what = "table" if place.kind == "table" else "file"
            raise InputError(f"{place} names an existing {what} that cleanpipe did not write; pass "
                             f"--overwrite to replace it, or choose another {_knob(place.option)}")
    check_writable(*outputs)


# --- the environment -----------------------------------------------------------------------------


def check_writable(*places) -> None:
    """Prove that the folder of each output takes a new file (create and remove a temporary), so a
    read-only folder or file system, or a full disk, fails before long work, not after it.

    Parameters
    ----------
    *places : Place
        Local outputs; the closest existing folder at or above each is probed.
    """
    done = set()
    for place in places:
        if place is None or place.kind != "path":
            continue
        folder = nearest_folder(place.given)
        if folder in done:
            continue
        done.add(folder)
        probe = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-probe")
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            what = _FIXES.get(exc.errno, (exc.strerror or "cannot write",))[0]
            raise InputError(f"cannot write {place}: folder '{folder}' refuses new files ({what}); "
                             f"{_write_fix(exc.errno, _knob(place.option))}") from None


def _write_fix(code: int | None, knob: str) -> str:
    """What to do when a write failed with ``errno`` ``code`` (the option to change is ``knob``)."""
    return {errno.EACCES: f"fix the folder's permissions or choose another {knob}",
            errno.EPERM: f"fix the folder's permissions or choose another {knob}",
            errno.ENOSPC: f"free some space or choose another {knob}",
            errno.EDQUOT: f"free some space or choose another {knob}",
            errno.EISDIR: f"remove or rename that folder, or choose another {knob}",
            errno.ENOTDIR: f"a folder on the path is a file; fix the path or choose another {knob}",
            }.get(code, f"choose another {knob} on a writable file system")


def write_error(exc: BaseException, path, *, knob: str | None = None, then: str = "") -> InputError:
    """One line for a write of ``path`` that failed with ``exc`` (an ``OSError``, or an Arrow error
    whose text carries the errno): the file, what the system said and the fix.

    Parameters
    ----------
    exc : BaseException
    path : str
        The file being written (its final name, not a temporary's).
    knob : str, optional
        The option that names where the outputs go, for the fix; None (a library call, a pipeline
        stage) gives the fix without one.
    then : str, default=""
        Appended to the message (``"; finished partitions are kept, rerun to resume"``).

    Returns
    -------
    InputError
    """
    code = _errno_of(exc)
    what, fix = _FIXES.get(code, (first_line(exc), "check the output folder, then rerun"))
    if knob is not None:
        fix = _write_fix(code, knob)
    return InputError(f"cannot write '{path}' ({what}); {fix}{then}")


_TASK_PATH = re.compile(r"\[Errno \d+\][^\n']*'([^'\n]+)'")


def spark_write_error(exc: BaseException, path) -> InputError | None:
    """One line for a Spark job that failed with a fault of the environment while ``path`` was
    being written, or ``None`` (anything else: re-raise it as it is).

    Spark sends a task's error back as text (a ``PythonException``, a ``Py4JJavaError`` holding
    the JVM's trace), so the errno is read from that text, or from Hadoop's exception name
    (:data:`_JAVA_FAULTS`). Spark's own writer failing is :func:`write_error` of ``path``; a
    Python task failing names the file in its error (a task before the write, reading its
    partition), with the fix of the same table.
    """
    code = _errno_of(exc)
    if code not in _FIXES:
        return None
    text = str(exc)
    if "Python worker" not in text:
        return write_error(exc, path)
    m = _TASK_PATH.search(text)
    what, fix = _FIXES[code]
    return InputError(f"{what} at '{m.group(1) if m else path}'; {fix}")


def nearest_folder(path) -> str:
    """The closest existing folder at or above the folder of ``path``."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    while parent and not os.path.isdir(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return parent


_FIXES = {
    errno.ENOSPC: ("no space left on the device", "free some space or write the outputs elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write the outputs elsewhere"),
    errno.EROFS: ("read-only file system", "write the outputs to a writable folder"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
    errno.ENOENT: ("no such file or directory", "check that nothing moves or deletes the files "
                   "while cleanpipe runs, then rerun"),
    errno.ELOOP: ("too many levels of symbolic links", "remove the looping symlink"),
    errno.EIO: ("input/output error", "check the disk, then rerun"),
    errno.EISDIR: ("is a directory", "pass a file path"),
    errno.ENOTDIR: ("not a directory", "fix the path"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n), then rerun"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}

_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]|errno[ =:]+(\d+)", re.IGNORECASE)


#: Hadoop's exceptions for faults of the table above: Spark's JVM writer names no errno.
_JAVA_FAULTS = {"ParentNotDirectoryException": errno.ENOTDIR, "AccessDeniedException": errno.EACCES,
                "DiskOutOfSpaceException": errno.ENOSPC}


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return code
    m = _ERRNO_TEXT.search(str(exc))  # pyarrow and torch put it in the text
    if m:
        return int(m.group(1) or m.group(2))
    for name, code in _JAVA_FAULTS.items():
        if name in str(exc):
            return code
    text = str(exc).lower()
    for code in _FIXES:
        if os.strerror(code).lower() in text:
            return code
    return None


def environment_error(exc: BaseException, *, path=None,
                      errno_only: bool = False) -> CleanpipeError | None:
    """One-line :class:`InputError` for a fault of the environment, or ``None`` for a bug.

    An ``OSError`` with a known ``errno`` (also when only its text carries it, as pyarrow's and
    torch's do) names the path and the fix; any other Arrow read error names the inputs of the run
    and asks whether a file is truncated or corrupt, unless ``errno_only`` (a caller that knows
    the error did not come from reading a Parquet file, such as a task's on the driver).
    """
    code = _errno_of(exc) if isinstance(exc, (OSError, pa.ArrowException, RuntimeError)) else None
    where = path or getattr(exc, "filename", None)
    if code in _FIXES:
        what, fix = _FIXES[code]
        if where is None:
            places = _CURRENT_OUTPUTS.get() if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) \
                else _CURRENT_INPUTS.get() + _CURRENT_OUTPUTS.get()
            where = ", ".join(p.given for p in places) or None
        at = f" at '{where}'" if where else ""
        return InputError(f"{what}{at}; {fix}")
    if errno_only:
        return None
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowIOError)) or (
            isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException) and code is None
            and "parquet" in str(exc).lower()):
        inputs = ", ".join(str(p) for p in _CURRENT_INPUTS.get()
                           if not p.given.endswith((".json", ".npy", ".toml"))) or "an input"
        return InputError(f"cannot read {inputs} ({first_line(exc)}); is a Parquet file truncated "
                          "or corrupt? Rewrite it from its source, or remove the damaged file")
    return None
