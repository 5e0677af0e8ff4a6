"""Flag a partitioned Parquet dataset partition by partition, on this machine or a Dask cluster.

Each Parquet file of DATA is a partition. Nothing collects the table on one process: the workers
read their partitions, compute the passes of :func:`cleanpipe.detect.partitioned.detection_plan`
(the driver merges only small partials), and write each partition's flags themselves, one
Parquet file per input file, atomically; the driver then commits the dataset with
``_manifest.json`` (the summary) and ``_SUCCESS``. The flags equal the in-memory ``flag``'s.

Resumable: every partial a partition computes is kept under ``OUT/_work/`` keyed by the run's
inputs and the step, and every flags file carries the key of the estimates it was scored with;
a rerun after a failure (a worker lost, a partition unreadable and then fixed) recomputes only
the partitions and passes that had not finished.

The probabilities come from a list column of DATA (``--pred-probs COLUMN``), one float per class
in sorted class order. :func:`clean_partitions` then cleans the committed flags dataset the same
way, each worker its partition.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ._version import __version__
from .detect import partial_codec
from .detect.partitioned import (detection_plan, merge_pair, merge_tree, partition_partial,
                                 partition_result)
from .detect.partitioned_multilabel import multilabel_detection_plan
from .partitions_multilabel import tag_target
from .errors import CleanpipeError, InputError
from .features import _decoded, _is_label_type, columns_hint, list_column_matrix
from .settings import DEFAULT_METHOD, DEFAULT_MIXTURE, default_noisy_threshold
from .sources._sql import redact
from .sources.delta import LOG_DIR, is_delta_table, open_table

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.json"
WORK = "_work"
#: What cleanpipe writes into its ``_SUCCESS`` and ``_work/_cleanpipe`` markers, and under
#: ``written_by`` in its ``_manifest.json``: a marker without it (Spark's empty ``_SUCCESS``, a
#: user's own file) is not cleanpipe's, so it is refused like any other file, never replaced.
SIGNATURE = "cleanpipe partitioned dataset"
_WORK_MARKER = "_cleanpipe"
#: Metadata key of a flags partition: the estimates it was scored with.
RUN_KEY = b"cleanpipe.partition_run"
_FLAG_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")


def _filesystem(uri: str):
    """``(filesystem, path)`` for a local path or an ``s3://`` / ``file://`` URI."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot open '{uri}' ({exc}); check the URI and credentials") from None
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def is_dataset(data: str) -> bool:
    """DATA is a partitioned dataset (a directory, or a URI such as ``s3://bucket/table/``): with
    ``--engine dask`` it is flagged partition by partition. A single local file is read on one
    machine (only its fold fits go to the cluster)."""
    return "://" in str(data) or os.path.isdir(data)


def partition_files(data: str, *, storage=None, what: str = "DATA") -> list:
    """The Parquet files of DATA (a directory, a glob-free prefix on S3, or one file), sorted.

    ``storage`` is ``(filesystem, path)`` of ``data`` where the caller opened it (default: from the
    URI). A Delta table on an object store is refused: its folder also holds files that its log
    has removed."""
    filesystem, path = storage if storage is not None else _filesystem(data)
    shown = redact(data)  # a URI may carry credentials (user:secret@, secret_key=)
    local = "://" not in data or data.startswith("file://")
    if local and is_delta_table(path):
        # A Delta table's files are the ones its log lists: older versions' stay until VACUUM.
        return sorted(open_table(path, what=what).file_uris())
    if not path.strip("/"):
        raise InputError(f"{what} '{shown}' names no bucket; pass s3://bucket/table/")
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        named = what if what.endswith("path") else f"{what} path"  # the one-machine words
        raise InputError(f"{named} '{shown}' does not exist; pass a directory of Parquet files")
    if info.type == pafs.FileType.File:
        return [path]
    if filesystem.get_file_info(f"{path}/{LOG_DIR}").type == pafs.FileType.Directory:
        raise InputError(f"{what} '{shown}' is a Delta table on an object store, whose folder also "
                         "holds the files its log has removed; read it with delta-spark "
                         "(spark.read.format('delta')) or where it is local, or export the version "
                         "to read as plain Parquet files")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and not any(p.startswith((".", "_")) for p in os.path.relpath(i.path, path).split("/")))
    if not files:
        raise InputError(f"{what} directory '{shown}' holds no Parquet files; pass a directory "
                         "of .parquet files")
    return files


@dataclass(frozen=True)
class PartitionSource:
    """One partition of DATA: what a worker reads (picklable; the filesystem is rebuilt there)."""

    data: str
    path: str
    label: str
    probs: str | None
    classes: tuple = ()
    #: Where the out-of-fold stage wrote this partition's probabilities (``probs`` is then None):
    #: the output directory and the file (:mod:`cleanpipe.partitioned_oof`).
    oof_out: str = ""
    oof_path: str = ""
    #: A multi-label label (:class:`cleanpipe.target.Target`, ``None`` for one class per row).
    target: object = None

    @property
    def label_columns(self) -> list:
        return list(self.target.columns) if self.target is not None else [self.label]

    def tags(self, table: pa.Table):
        """``(tags, labelled, value_type)`` of a multi-label partition, over the dataset's classes."""
        from .partitions_multilabel import partition_tags
        return partition_tags(self, table)

    def _fs(self):
        return _filesystem(self.data)[0]

    def read(self, columns=None) -> pa.Table:
        try:
            with self._fs().open_input_file(self.path) as fh:
                return pq.read_table(fh, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"DATA partition '{self.path}' could not be read "
                             f"({str(exc).splitlines()[0]}); is it a Parquet file?") from None

    def schema(self) -> pa.Schema:
        try:
            with self._fs().open_input_file(self.path) as fh:
                return pq.read_schema(fh)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"DATA partition '{self.path}' could not be read "
                             f"({str(exc).splitlines()[0]}); is it a Parquet file?") from None

    def codes(self, table: pa.Table) -> np.ndarray:
        values = _decoded(table.column(self.label))
        classes = pa.array(list(self.classes), type=values.type)
        return pc.fill_null(pc.index_in(values, value_set=classes), -1).to_numpy().astype(np.int64)

    def probabilities(self, table: pa.Table) -> np.ndarray:
        """The probabilities of every row of this partition (``table`` holds its probs column)."""
        if self.oof_path:
            from .partitioned_oof import load_probs
            return load_probs(self.oof_out, self.oof_path, table.num_rows, len(self.classes),
                              self.path)
        return _probs(table.select([self.probs]), self.probs, len(self.classes), self.path)

    def __call__(self):
        """``(labels, pred_probs)`` of the labelled rows: what the detector's passes read."""
        table = self.read(self.label_columns + ([self.probs] if self.probs else []))
        if self.target is not None:
            tags, labelled, _ = self.tags(table)
            return tags[labelled], self.probabilities(table)[labelled]
        codes = self.codes(table)
        probs = self.probabilities(table)
        keep = codes >= 0
        return codes[keep], probs[keep]


def _probs(table: pa.Table, name: str, k: int, where: str) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        raise InputError(f"--pred-probs column '{name}' has type {col.type}; it must be a list "
                         "of floats, one per class")
    probs = list_column_matrix(col, name).astype(np.float64)  # as the in-memory flag reads it
    if len(probs) and probs.shape[1] != k:
        raise InputError(f"--pred-probs has {probs.shape[1]} columns but label '{table.column_names[0]}'"
                         f" has {k} classes; pass one column per class, in sorted class order "
                         f"(partition '{where}')")
    return probs.reshape(len(probs), k)


def _scan(src: PartitionSource):
    """A partition's schema check and its distinct labels: ``(label type, classes, rows)``."""
    if src.target is not None:
        from .partitions_multilabel import scan_tags
        return scan_tags(src)
    schema = src.schema()
    for name, opt in ((src.label, "--label"), (src.probs, "--pred-probs")):
        if name is not None and name not in schema.names:
            what = "label column" if opt == "--label" else "--pred-probs column"
            raise InputError(f"{what} '{name}' not found in DATA partition '{src.path}' (columns: "
                             f"{columns_hint(schema.names)}); pass {opt} with one of them")
    t = schema.field(src.label).type
    if not _is_label_type(t):
        raise InputError(f"label column '{src.label}' has type {t}; labels must be integers, "
                         "strings, bools or categories (pass another column with --label)")
    values = _decoded(src.read([src.label]).column(src.label))
    return str(values.type), pc.unique(values).drop_null(), len(values)


# ---------------------------------------------------------------- engines


class _Failed:
    def __init__(self, exc):
        self.exc = exc


def _reraise(exc: BaseException):
    """Raise a partition task's error on the driver: an ``OSError`` with a known errno that no
    task turned into one line (permission, full disk, read-only file system) becomes an
    :class:`InputError` (:func:`cleanpipe.safety.environment_error`); anything else (a bug, a lost
    worker) stays as it is. The tasks turn their own read errors into one line already."""
    if not isinstance(exc, CleanpipeError):
        from .safety import environment_error
        user = environment_error(exc, errno_only=True)
        if user is not None:
            raise user from None
    raise exc


class LocalEngine:
    """Partition tasks in this process, one after another (tests; small data on one machine).

    As on a cluster, a failing partition does not stop the others: they all run, then the first
    failure (in partition order) is raised, so a rerun finds every partition that could finish.
    """

    def map(self, fn, *iterables):
        out = []
        for args in zip(*iterables):
            failed = next((a for a in args if isinstance(a, _Failed)), None)
            if failed is not None:  # a task on a failed task's result fails with its error
                out.append(failed)
                continue
            try:
                out.append(fn(*args))
            except Exception as exc:  # re-raised by get, once every partition has run
                out.append(_Failed(exc))
        return out

    def get(self, handles):
        for h in handles:
            if isinstance(h, _Failed):
                _reraise(h.exc)
        return list(handles)

    def reduce(self, merge, handles):
        """The partials merged neighbours first, in a balanced tree
        (:func:`~cleanpipe.detect.partitioned.merge_tree`, as on a cluster)."""
        return merge_tree(merge, self.get(handles))

    reduce_handle = reduce

    def collect(self, handles):
        """One handle on the list of the results (here: the list)."""
        return self.get(handles)


class DaskEngine:
    """Partition tasks on the workers of a Dask cluster; per-partition state stays on them."""

    def __init__(self, client):
        self.client = client

    def map(self, fn, *iterables):
        futures = self.client.map(fn, *iterables, pure=False)
        return futures

    def get(self, handles):
        for future in handles:  # every partition that can finish does, before an error is raised
            future.exception()
        try:
            return self.client.gather(handles)
        except Exception as exc:  # noqa: BLE001 - mapped or re-raised as it is
            _reraise(exc)

    def reduce(self, merge, handles):
        """The partials merged on the workers, neighbours first (a tree: merges are associative),
        so the driver receives one partial whatever the number of partitions."""
        return self.get([self.reduce_handle(merge, handles)])[0]

    def reduce_handle(self, merge, handles):
        """As :meth:`reduce`, but the merged result stays on a worker: its future."""
        return merge_tree(lambda a, b: self.client.submit(merge, a, b, pure=False), handles)

    def collect(self, handles):
        """One future holding the list of the results, on a worker (not sent to the driver)."""
        return self.client.submit(_as_list, *handles, pure=False)


def _as_list(*items):
    return list(items)


def connect(scheduler: str | None, timeout: float | None = None):
    """A :class:`DaskEngine` on the scheduler at ``scheduler`` (as ``--backend dask`` connects)."""
    from .oof import dask_client
    return DaskEngine(dask_client(scheduler, timeout))


# ---------------------------------------------------------------- worker tasks


#: Appended to a failed partition write: what a rerun does.
_RESUME = "; the partitions already written are kept and a rerun resumes from them"


def _atomic_write(filesystem, path: str, data: bytes, *, mkdir: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary beside it and a rename, so ``path`` is either
    whole or untouched; a write the system refuses (permission, full disk, read-only file system)
    is one :class:`InputError` naming ``path`` and the fix (:func:`cleanpipe.safety.write_error`)."""
    tmp = f"{os.path.dirname(path)}/.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"
    try:
        if mkdir:
            filesystem.create_dir(os.path.dirname(path), recursive=True)
        with filesystem.open_output_stream(tmp) as fh:
            fh.write(data)
        filesystem.move(tmp, path)
    except BaseException as exc:
        try:
            filesystem.delete_file(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # pyarrow's IO errors are OSErrors too
            from .safety import write_error
            raise write_error(exc, path, then=_RESUME) from None
        raise


def _step_task(out: str, key: str, step, src: PartitionSource, cache):
    """Run ``step`` on one partition, or load its partial from a finished earlier run.

    Returns ``(cache, partial, reused)``; the cache (per-row arrays) stays on the worker.
    """
    filesystem, root = _filesystem(out)
    path = f"{root}/{WORK}/{key}/{os.path.basename(src.path)}.npz"
    try:
        with filesystem.open_input_file(path) as fh:
            return cache, partial_codec.loads(fh.read()), True
    except (FileNotFoundError, OSError, ValueError):
        pass  # not there, or not a partial this version wrote: compute it again
    cache = dict(cache or {})
    partial = partition_partial(step, src, cache)
    _atomic_write(filesystem, path, partial_codec.dumps(partial), mkdir=True)
    return cache, partial, False


def _write_task(out: str, run_key: str, est, src: PartitionSource, cache, index: int):
    """Score one partition and write its flags file, unless a finished run already wrote it."""
    filesystem, root = _filesystem(out)
    path = f"{root}/{os.path.basename(src.path)}"
    try:
        with filesystem.open_input_file(path) as fh:
            meta = pq.read_schema(fh).metadata or {}
        if meta.get(RUN_KEY) == run_key.encode():
            return 0, 0, True
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        pass
    table = src.read()
    if src.target is not None:
        from .partitions_multilabel import with_tag_flags
        table = with_tag_flags(table, src, partition_result(est, src, dict(cache or {}), index))
        flags = table.column("is_label_issue").to_numpy(zero_copy_only=False)
        labelled = table.column("label_score").is_valid().to_numpy(zero_copy_only=False)
        _write_flags(filesystem, path, table, run_key)
        return int(flags.sum()), int(labelled.sum()), False
    codes = src.codes(table.select([src.label]))
    probs = src.probabilities(table)
    res = partition_result(est, src, dict(cache or {}), index)
    keep = codes >= 0
    n = len(codes)
    predicted = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    predicted[keep] = res.predicted
    score = np.full(n, np.nan)
    score[keep] = res.label_score
    p_noisy = np.full(n, np.nan)
    p_noisy[keep] = res.p_noisy
    flags = np.zeros(n, dtype=bool)
    flags[keep] = res.is_label_issue
    label_type = table.schema.field(src.label).type
    classes = pa.array(list(src.classes), type=_decoded(table.column(src.label)).type)

    def decode(c):
        return classes.take(pa.array(c, mask=c < 0, type=pa.int64())).cast(label_type)

    cols = {"given_label": decode(codes), "predicted_label": decode(predicted),
            "label_score": pa.array(score, mask=~keep), "p_noisy": pa.array(p_noisy, mask=~keep),
            "is_label_issue": pa.array(flags)}
    _write_flags(filesystem, path, _appended(table, cols), run_key)
    return int(flags.sum()), int(keep.sum()), False


def _appended(table: pa.Table, cols: dict) -> pa.Table:
    for name, arr in cols.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, arr)
    return table


def _write_flags(filesystem, path: str, table: pa.Table, run_key: str) -> None:
    meta = dict(table.schema.metadata or {})
    meta[RUN_KEY] = run_key.encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _atomic_write(filesystem, path, sink.getvalue().to_pybytes())


# ---------------------------------------------------------------- the driver


def _fingerprint(files, data, label, probs, method, mixture, noisy_threshold) -> str:
    filesystem, _ = _filesystem(data)
    h = hashlib.sha256()
    for info in filesystem.get_file_info(list(files)):
        h.update(f"{info.path}\0{info.size}\0{info.mtime_ns}\0".encode())
    h.update(json.dumps([label, probs, method, mixture, noisy_threshold, __version__]).encode())
    return h.hexdigest()[:20]


def _digest(obj, h=None):
    """A hash of a step or estimates by value (pickle bytes depend on object identities)."""
    top = h is None
    h = hashlib.sha256() if top else h
    if isinstance(obj, np.ndarray):
        h.update(f"a{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif dataclasses.is_dataclass(obj):
        h.update(type(obj).__name__.encode())
        for f in dataclasses.fields(obj):
            h.update(f.name.encode())
            _digest(getattr(obj, f.name), h)
    elif isinstance(obj, dict):
        h.update(b"d")
        for k in sorted(obj):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"l{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    else:
        h.update(repr(obj).encode())
    return h.hexdigest()[:20] if top else h


def _merged_classes(scans, files, label):
    types = {}
    for (t, _, _), f in zip(scans, files):
        types.setdefault(t, f)
    if len(types) > 1:
        (t1, f1), (t2, f2) = list(types.items())[:2]
        raise InputError(f"label column '{label}' has type {t1} in DATA partition '{f1}' but {t2} "
                         f"in '{f2}'; give every partition the same label type (cast it when "
                         "writing the dataset)")
    uniq = pa.chunked_array([c for _, c, _ in scans], type=scans[0][1].type) if scans else None
    classes = pc.unique(uniq).drop_null()
    classes = classes.take(pc.array_sort_indices(classes))
    return classes.to_pylist()


def _written_here(out: str, path: str) -> bool:
    """Whether ``path`` (in ``out``) is a partition file cleanpipe wrote: a Parquet file whose
    metadata carries the key of a flags or a cleaned partition. A folder, anything unreadable or
    any other file is the user's."""
    filesystem, _ = _filesystem(out)
    try:
        with filesystem.open_input_file(path) as fh:
            meta = pq.read_schema(fh).metadata or {}
    except Exception:  # noqa: BLE001 - unreadable, a folder: not provably ours
        return False
    return RUN_KEY in meta or CLEAN_KEY in meta


def _marker_is_ours(filesystem, root: str, name: str) -> bool:
    """Whether the marker ``name`` in ``root`` (``_SUCCESS``, ``_manifest.json`` or ``_work``) is
    one cleanpipe wrote: it carries :data:`SIGNATURE`. Anything else, unreadable or not, is the
    user's."""
    try:
        if name == WORK:
            path = f"{root}/{WORK}/{_WORK_MARKER}"
        else:
            path = f"{root}/{name}"
        with filesystem.open_input_file(path) as fh:
            data = fh.read() if name == MANIFEST else fh.read(4096)  # a manifest lists every file
    except Exception:  # noqa: BLE001 - missing, a folder, unreadable: not provably ours
        return False
    if name != MANIFEST:
        return data.decode("utf-8", "replace").strip() == SIGNATURE
    try:
        manifest = json.loads(data)
    except ValueError:
        return False
    return isinstance(manifest, dict) and manifest.get("written_by") == SIGNATURE


def _mark_work(filesystem, root: str) -> None:
    """Create ``root/_work`` with cleanpipe's marker, so a rerun knows the folder is its own."""
    _atomic_write(filesystem, f"{root}/{WORK}/{_WORK_MARKER}", SIGNATURE.encode(), mkdir=True)


def _guard_out(out: str, inputs: dict, names, engine, *, option: str = "--out") -> None:
    """The output rule of the partitioned paths (flag and clean): refuse an ``out`` that is,
    contains or lies inside an input, or that holds anything cleanpipe did not write. A file
    named like one of the partitions ``names`` counts as cleanpipe's only when it carries a
    partition's metadata (the workers check, in parallel), and ``_SUCCESS``, ``_manifest.json``
    and ``_work`` only when they carry :data:`SIGNATURE`, so nothing of the user's is replaced.

    Parameters
    ----------
    out : str
        The output directory (a local path or a URI).
    inputs : dict
        ``option -> path or URI`` of what the run reads (``None`` values are skipped).
    names : iterable of str
        The partition files the run writes into ``out``.
    engine : LocalEngine or DaskEngine
    option : str, default="--out"

    Raises
    ------
    InputError
    """
    from .safety import check_plan, path_place
    inputs = {k: str(v) for k, v in inputs.items() if v is not None}
    if "://" not in out:  # local: real paths, symlinks and hard links resolved (safety)
        check_plan([path_place(p, k) for k, p in inputs.items() if "://" not in p],
                   [path_place(out, option, folder=True)])
    out_fs, out_root = _filesystem(out)
    for what, given in inputs.items():
        if "://" not in given or "://" not in out:
            continue  # local ones: checked above; one local, one remote: apart
        root = _filesystem(given)[1].rstrip("/")
        o = out_root.rstrip("/")
        if o == root or o.startswith(root + "/") or root.startswith(o + "/"):
            raise InputError(f"{option} '{out}' overlaps {what} '{given}'; inputs are never "
                             f"modified, choose another {option} outside it")
    if out_fs.get_file_info(out_root).type != pafs.FileType.Directory:
        return
    names = set(names)
    infos = out_fs.get_file_info(pafs.FileSelector(out_root))
    foreign = [i.base_name for i in infos if i.base_name not in names | {SUCCESS, MANIFEST, WORK}
               and not i.base_name.startswith(".tmp-")]
    foreign += [i.base_name for i in infos if i.base_name in (SUCCESS, MANIFEST, WORK)
                and not _marker_is_ours(out_fs, out_root, i.base_name)]
    same = [i.path for i in infos if i.base_name in names]
    if same:
        ours = engine.get(engine.map(_written_here, [out] * len(same), same))
        foreign += [os.path.basename(p) for p, mine in zip(same, ours) if not mine]
    if foreign:
        raise InputError(f"{option} directory '{out}' holds files cleanpipe did not write "
                         f"({', '.join(sorted(foreign)[:3])}{', ...' if len(foreign) > 3 else ''});"
                         f" they are never replaced: choose an empty or new {option} directory")


def _make_out(out_fs, out_root: str) -> None:
    """Uncommit ``out`` (it is being rewritten) and create it."""
    try:
        if out_fs.get_file_info(f"{out_root}/{SUCCESS}").type == pafs.FileType.File:
            out_fs.delete_file(f"{out_root}/{SUCCESS}")  # not committed until the end
        out_fs.create_dir(out_root, recursive=True)
    except OSError as exc:
        from .safety import write_error
        raise write_error(exc, out_root) from None


def flag_partitions(data: str, out: str, *, label: str = "label", pred_probs: str | None = None,
                    method: str | None = None, mixture: str = DEFAULT_MIXTURE,
                    noisy_threshold: float | None = None, engine=None, oof=None,
                    multi_label: bool = False) -> dict:
    """Flag every partition (Parquet file) of ``data`` into ``out``: one flags file per partition.

    Parameters
    ----------
    data : str
        A directory (local, or ``s3://bucket/prefix``) of Parquet files, or one file.
    out : str
        The output directory (created); gets one Parquet file per input file (its rows and
        columns plus given_label, predicted_label, label_score, p_noisy, is_label_issue),
        ``_manifest.json`` and, last, ``_SUCCESS``.
    label : str
        The label column: one class per row, or multi-label (a list-of-tags column, or several
        0/1 columns as ``"a,b,c"``; see :func:`cleanpipe.target.resolve_target`), whose flags
        files get the one-machine ``flag``'s columns, ``suspect_missing`` and
        ``suspect_spurious`` included.
    pred_probs : str, optional
        A list column of DATA: out-of-fold probabilities, one per class in sorted class order.
        None: they are computed on the workers from the other columns
        (:func:`cleanpipe.partitioned_oof.out_of_fold_partitions`, settings ``oof``; for a
        multi-label label one probability per tag, from the one-machine model families:
        :mod:`cleanpipe.hashed_folds_multilabel`).
    method, mixture, noisy_threshold
        As for :func:`cleanpipe.find_label_issues`.
    engine : LocalEngine or DaskEngine, optional
        Where the partition tasks run (default: this process).
    oof : cleanpipe.partitioned_oof.OofSettings, optional
        The fold models' settings when ``pred_probs`` is None (default: the default model,
        folds and seed, :data:`cleanpipe.settings.SCALE_SAMPLE_ROWS` training rows per model).
    multi_label : bool, default=False
        Treat ``label`` as multi-label (implied by a list column or several columns).

    Returns
    -------
    dict
        The summary written to ``_manifest.json`` (rows, classes, flagged, estimates, the
        partitions computed and reused by each pass).
    """
    engine = LocalEngine() if engine is None else engine
    if not isinstance(label, str):  # several 0/1 columns, as the pipelines' [columns] labels
        label, multi_label = ",".join(label), True
    files = partition_files(data)
    target = tag_target(data, files[0], label, multi_label) if files else None
    if target is not None:
        from .flag import detector_options
        method, noisy_threshold = detector_options(True, method, mixture, noisy_threshold)
    method = method or DEFAULT_METHOD
    if noisy_threshold is None:
        noisy_threshold = default_noisy_threshold(method)
    out_fs, out_root = _filesystem(out)
    _guard_out(out, {"DATA": data}, [os.path.basename(f) for f in files], engine)
    _make_out(out_fs, out_root)
    _mark_work(out_fs, out_root)
    bare = [PartitionSource(data, f, label, pred_probs, target=target) for f in files]
    scans = engine.get(engine.map(_scan, bare))
    classes = _merged_classes(scans, files, label)
    if target is not None and target.form == "columns":
        classes = list(target.columns)
    if len(classes) < 2:
        what = "tag(s)" if target is not None else "distinct value(s)"
        raise InputError(f"label column '{label}' has {len(classes)} {what}; "
                         "at least 2 classes are needed")
    sources = [PartitionSource(data, f, label, pred_probs, tuple(classes), target=target)
               for f in files]
    oof_info = None
    if pred_probs is None:
        from .partitioned_oof import default_settings, out_of_fold_partitions, probs_path
        oof = default_settings() if oof is None else oof
        oof_key = "oof-" + _digest((_fingerprint(files, data, label, oof.as_list(), None, None, None),
                                    classes))
        oof_info = out_of_fold_partitions(engine, out, oof_key, sources, n_classes=len(classes),
                                          oof=oof)
        sources = [dataclasses.replace(s, oof_out=out, oof_path=probs_path(out, oof_key, s.path))
                   for s in sources]
        probs_id = ["oof", *oof.as_list()]
    else:
        probs_id = pred_probs
    fp = _fingerprint(files, data, label, probs_id, method, mixture, noisy_threshold)
    if target is not None:
        plan = multilabel_detection_plan(len(classes), method=method, mixture=mixture,
                                         noisy_threshold=noisy_threshold)
    else:
        plan = detection_plan(len(classes), method=method, mixture=mixture,
                              noisy_threshold=noisy_threshold)
    clock, cpu_clock = time.perf_counter(), time.process_time()
    caches = [None] * len(sources)
    passes = []
    step, index = next(plan), 0
    while True:
        key = _digest((fp, index, step))
        handles = engine.map(_step_task, [out] * len(sources), [key] * len(sources),
                             [step] * len(sources), sources, caches)
        # only the merged partial comes back: the per-row caches stay where the partitions are
        reused = engine.get(engine.map(_third, handles))
        merged = engine.reduce(functools.partial(merge_pair, step), engine.map(_second, handles))
        caches = engine.map(_first, handles)
        passes.append({"step": step.kind, "computed": sum(not r for r in reused),
                       "reused": sum(reused)})
        try:
            step = plan.send(merged)
        except StopIteration as stop:
            est = stop.value
            break
        index += 1
    run_key = _digest((fp, est))
    seconds = {"detect": round(time.perf_counter() - clock, 3)}
    cpu = {"detect": round(time.process_time() - cpu_clock, 3)}  # the driver's (all on a LocalEngine)
    written = engine.get(engine.map(_write_task, [out] * len(sources), [run_key] * len(sources),
                                    [est] * len(sources), sources, caches, range(len(sources))))
    seconds["write"] = round(time.perf_counter() - clock - seconds["detect"], 3)
    cpu["write"] = round(time.process_time() - cpu_clock - cpu["detect"], 3)
    if target is not None:  # as the one-machine multi-label summary counts them
        issues = round(est.expected_issues)
        rate = est.expected_issues / max(est.n_rows, 1)
    else:
        issues = int(est.confident.issues_per_class.sum())
        rate = float(est.confident.issues_per_class.sum() / max(est.n_rows, 1))
    summary = {
        "source": _recorded(data), "partitions": len(files), "labelled_rows": int(est.n_rows),
        "n_classes": len(classes), "classes": [str(c) for c in classes], "method": method,
        **({"multi_label": True} if target is not None else {}),
        "flagged": int(sum(w[0] for w in written)),
        "estimated_issues": issues,
        "estimated_noise_rate": float(rate),
        "loss_bounds": list(est.mix.bounds),
        "passes": passes,
        "written": {"computed": sum(not w[2] for w in written), "reused": sum(w[2] for w in written)},
        "files": [os.path.basename(f) for f in files],
        "label": label,
        "run_key": run_key,
        "seconds": seconds,
        "driver_cpu_seconds": cpu,
    }
    if oof_info is not None:
        summary["oof"] = oof_info
    _commit(out_fs, out_root, summary, work=True)
    return summary


def _recorded(data: str) -> str:
    """DATA as the manifest records it: a local path made absolute (a later ``clean`` may run from
    another folder), a URI as given."""
    return data if "://" in data else os.path.abspath(data)


def _flagged_sources(source, flags_root: str) -> dict:
    """The local DATA a flags manifest records, ``option -> absolute path``, for the overlap check
    of ``clean``. A relative one (written before DATA was recorded absolute) was relative to a
    folder no longer known: it is taken against the manifest's folder, and against the current
    one too, and both are refused as outputs. A URI or nothing: none (a local --out cannot hit
    it; a remote one is checked against FLAGS)."""
    what = "DATA (the source of FLAGS)"
    if not source or "://" in source:
        return {}
    if os.path.isabs(source):
        return {what: source}
    return {what: os.path.normpath(os.path.join(flags_root, source)),
            f"{what}, taken from the current folder": os.path.abspath(source)}


def _commit(out_fs, out_root: str, summary: dict, *, work: bool = False) -> None:
    """Commit ``out``: ``_manifest.json`` (the summary, signed), the partials' ``_work`` removed
    (``work``: they only served a resume), and, last, ``_SUCCESS`` (signed)."""
    summary = dict(summary, written_by=SIGNATURE)
    _atomic_write(out_fs, f"{out_root}/{MANIFEST}", json.dumps(summary, indent=1).encode())
    if work:
        out_fs.delete_dir(f"{out_root}/{WORK}")
    _atomic_write(out_fs, f"{out_root}/{SUCCESS}", f"{SIGNATURE}\n".encode())


def _first(result):
    return result[0]


def _second(result):
    return result[1]


def _third(result):
    return result[2]


#: Metadata keys of a cleaned partition: the flags and options it was cleaned from, its counts.
CLEAN_KEY, CLEAN_COUNTS = b"cleanpipe.partition_clean", b"cleanpipe.partition_clean_counts"


def _clean_key(schema: pa.Schema, name: str, info, options: dict) -> str:
    """What a cleaned partition depends on: its flags (the estimates they were scored with, or the
    file's size and time when they carry none), the clean options and the cleanpipe version."""
    flagged = (schema.metadata or {}).get(RUN_KEY)
    made = flagged.decode() if flagged else f"{info.size}:{info.mtime_ns}"
    return _digest({"name": name, "flags": made, "options": options, "version": __version__})


def _clean_task(flags: str, out: str, name: str, options: dict):
    """Clean one flags partition into ``out`` (atomically), unless an earlier run already wrote it
    from the same flags and options; returns ``(counts, reused)``."""
    from .clean import clean_table
    filesystem, root = _filesystem(flags)
    out_fs, out_root = _filesystem(out)
    where = f"{root}/{name}"
    try:
        with filesystem.open_input_file(where) as fh:
            schema = pq.read_schema(fh)
        key = _clean_key(schema, name, filesystem.get_file_info(where), options)
        try:
            with out_fs.open_input_file(f"{out_root}/{name}") as fh:
                meta = pq.read_schema(fh).metadata or {}
            if meta.get(CLEAN_KEY) == key.encode() and CLEAN_COUNTS in meta:
                return json.loads(meta[CLEAN_COUNTS]), True
        except (FileNotFoundError, OSError, pa.ArrowInvalid, ValueError):
            pass  # not there, a folder, or not a partition this version wrote: clean it again
        with filesystem.open_input_file(where) as fh:
            table = pq.read_table(fh)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"FLAGS partition '{where}' could not be read "
                         f"({str(exc).splitlines()[0]}); flag the dataset again") from None
    result = clean_table(table, source=f"FLAGS partition '{name}'", **options)
    meta = dict(result.table.schema.metadata or {})
    meta.update({CLEAN_KEY: key.encode(), CLEAN_COUNTS: json.dumps(result.counts).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(result.table.replace_schema_metadata(meta), sink)
    _atomic_write(out_fs, f"{out_root}/{name}", sink.getvalue().to_pybytes())
    return result.counts, False


def clean_partitions(flags: str, out: str, *, mode: str = "drop", engine=None, **options) -> dict:
    """Clean every partition of a committed :func:`flag_partitions` output into ``out``.

    Each worker cleans its flags partition with :func:`cleanpipe.clean_table` (``mode`` and
    ``options`` as there; drop, weight and relabel decide row by row) and writes it atomically;
    ``_manifest.json`` (the summed counts) and ``_SUCCESS`` commit the cleaned dataset.

    Resumable: each cleaned partition records the flags and options it came from, so a rerun
    after a failure (a worker lost, a write refused) cleans only the partitions that had not
    finished; ``written`` in the summary counts both. FLAGS is only read.
    """
    engine = LocalEngine() if engine is None else engine
    flags_fs, flags_root = _filesystem(flags)
    try:
        with flags_fs.open_input_file(f"{flags_root}/{MANIFEST}") as fh:
            manifest = json.loads(fh.read())
        # FLAGS is only read, so a flags folder written before the markers were signed (an
        # empty _SUCCESS) still counts; its partitions' own metadata is checked as they are read
        committed = (flags_fs.get_file_info(f"{flags_root}/{SUCCESS}").type == pafs.FileType.File
                     and isinstance(manifest.get("files"), list))
    except (FileNotFoundError, OSError, ValueError, AttributeError):
        committed = False
    if not committed:
        raise InputError(f"FLAGS '{flags}' is not a committed partitioned flags dataset (no "
                         f"{SUCCESS}); run cleanpipe flag --engine dask on the data first")
    out_fs, out_root = _filesystem(out)
    names = manifest["files"]
    # the flagged data: a cleaned file there would be read again
    sources = _flagged_sources(manifest.get("source"), flags_root) if "://" not in flags else {}
    _guard_out(out, {"FLAGS": flags, **sources}, names, engine)
    _make_out(out_fs, out_root)
    options = dict(options, mode=mode)
    if options.get("label") is None:  # the CLI passes --label None when it is not given
        options["label"] = manifest.get("label")
    done = engine.get(engine.map(_clean_task, [flags] * len(names), [out] * len(names), names,
                                 [options] * len(names)))
    total: dict = {}
    for c, _ in done:
        for key, value in c.items():
            total[key] = total.get(key, 0) + value
    summary = {"source": flags, "partitions": len(names), "mode": mode, "counts": total,
               "settings": {k: v for k, v in options.items() if k != "mode"},
               "written": {"computed": sum(not r for _, r in done), "reused": sum(r for _, r in done)},
               "files": names}
    _commit(out_fs, out_root, summary)
    return summary
