"""The ``flag`` stage on a table: features -> out-of-fold probabilities -> detection -> output table.

This is what ``cleanpipe flag`` runs; it takes and returns Arrow tables and plain dicts, so the CLI
and the pipeline runner only read inputs and write outputs around it.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .api import validate
from .detect import Detection, check_pred_probs, detect
from .detect.combine import NOISY_THRESHOLD
from .errors import InputError
from .features import (_vector, columns_hint, decode_labels, encode_labels, select_feature_columns,
                       table_to_features)
from .io import open_dataset, with_metadata
from .settings import check_seed
from .oof import DEFAULT_MODEL, check_folds, cross_val_probs, model_label, model_list
from .rows import ParquetMatrix, TakeRows

#: Columns ``flag`` adds to the input table.
OUTPUT_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")
#: Rows per record batch when streaming DATA to the output.
BATCH_ROWS = 65536


@dataclass(frozen=True)
class FlagResult:
    """Output of :func:`flag_table`.

    Attributes
    ----------
    table : pyarrow.Table
        Every input column unchanged plus :data:`OUTPUT_COLUMNS`.
    summary : dict
        JSON-ready summary (noise estimates, counts, settings, versions, timings).
    pred_probs : array-like of shape (n_rows, n_classes)
        Out-of-fold probabilities of labelled rows; fold-averaged predictions for unlabelled rows.
    detection : Detection
        The detector's output for the labelled rows.
    """

    table: pa.Table
    summary: dict
    pred_probs: np.ndarray
    detection: Detection


def load_pred_probs(spec: str, list_column, column_names: list, classes: list):
    """Open user-supplied probabilities: a ``.npy`` file, a Parquet file, or a list column of DATA.

    ``.npy`` files are memory-mapped and Parquet files read one row group at a time, so neither
    has to fit in memory. A Parquet file needs one numeric column per class (or a single list
    column); when its column names are the class names they are put in class order, otherwise the
    columns are taken in class order as they stand. ``list_column(name)`` reads a column of DATA.
    """
    path = Path(spec)
    if spec in column_names and not path.exists():
        col = list_column(spec)
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
                or pa.types.is_fixed_size_list(col.type)):
            raise InputError(f"--pred-probs column '{spec}' has type {col.type}; it must be a list "
                             "of floats, one per class")
        return _vector(col, spec).astype(np.float64)
    if not path.exists():
        raise InputError(f"--pred-probs '{spec}' is neither a file nor a column of DATA; pass a .npy "
                         "file, a Parquet file or a list-of-float column name")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"--pred-probs '{spec}' is not a readable .npy array ({exc}); save it "
                             "with numpy.save") from None
        if arr.dtype.kind not in "fiu":
            raise InputError(f"--pred-probs '{spec}' has dtype {arr.dtype}; pass float probabilities")
        return arr
    try:
        names = pq.read_schema(path).names
        wanted = [str(c) for c in classes]
        return ParquetMatrix(path, wanted if set(wanted) <= set(names) else None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"--pred-probs '{spec}' is neither a .npy nor a Parquet file ({exc})") from None


def oof_all_rows(oof, labelled: np.ndarray) -> np.ndarray:
    """float32 probabilities of every row: out-of-fold for the ``labelled`` ones, the fold models'
    mean (``oof.extra_probs``) for the others."""
    probs = np.empty((len(labelled), oof.pred_probs.shape[1]), dtype=np.float32)
    probs[labelled] = oof.pred_probs
    probs[~labelled] = oof.extra_probs
    return probs


def _versions() -> dict:
    import sklearn
    return {"cleanpipe": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "pyarrow": pa.__version__}


@dataclass(frozen=True)
class FlagColumns:
    """The per-row results of the flag stage for every row of DATA, ready to append in slices."""

    codes: np.ndarray
    classes: pa.Array
    label_type: pa.DataType
    predicted: np.ndarray
    label_score: np.ndarray
    p_noisy: np.ndarray
    is_label_issue: np.ndarray

    def arrays(self, start: int = 0, stop: int | None = None, *, rows=None) -> dict:
        """The output columns for rows ``start..stop`` (or the indices ``rows``) as Arrow arrays."""
        sl = slice(start, stop) if rows is None else np.asarray(rows, dtype=np.int64)
        missing = self.codes[sl] < 0
        return {
            "given_label": decode_labels(self.codes[sl], self.classes, self.label_type),
            "predicted_label": decode_labels(self.predicted[sl], self.classes, self.label_type),
            "label_score": pa.array(self.label_score[sl], mask=missing),
            "p_noisy": pa.array(self.p_noisy[sl], mask=missing),
            "is_label_issue": pa.array(self.is_label_issue[sl]),
        }

    def fields(self) -> list:
        return [pa.field("given_label", self.label_type), pa.field("predicted_label", self.label_type),
                pa.field("label_score", pa.float64()), pa.field("p_noisy", pa.float64()),
                pa.field("is_label_issue", pa.bool_())]


@dataclass(frozen=True)
class _Source:
    """What the flag stage needs from DATA, so a table in memory and a dataset on disk share it."""

    column_names: list
    schema: pa.Schema
    n_rows: int
    read: object  # read(columns) -> pa.Table
    name: str


def _flag(src: _Source, *, label, features, exclude, ids, model, folds, seed, n_jobs, pred_probs,
          method, mixture, progress, noisy_threshold=NOISY_THRESHOLD):
    timings = {}
    t0 = time.perf_counter()
    where = src.name
    if src.n_rows == 0:
        raise InputError(f"{where} has no rows; pass a table with labelled rows")
    if label not in src.column_names:
        raise InputError(f"label column '{label}' not found in {where} (columns: "
                         f"{columns_hint(src.column_names)}); pass --label with one of them")
    clash = [c for c in OUTPUT_COLUMNS if c in src.column_names]
    if clash:
        raise InputError(f"{where} already has a column '{clash[0]}', which flag writes; "
                         "rename it, or pass the original table rather than earlier flag output")
    codes, classes_arr = encode_labels(src.read([label]).column(label), label)
    classes = classes_arr.to_pylist()
    labelled = codes >= 0
    n_lab = int(np.count_nonzero(labelled))
    everything = n_lab == src.n_rows  # the common case: no copies of per-row vectors
    if n_lab == 0:
        raise InputError(f"label column '{label}' is entirely null; there is nothing to check (pass "
                         "--label with the column that holds the labels)")
    if len(classes) < 2:
        raise InputError(f"label column '{label}' holds a single class ({classes[0]!r}); label-error "
                         "detection needs at least two classes")
    y = codes if everything else codes[labelled]
    notes = []
    k = len(classes)
    if pred_probs is None:
        check_seed(seed)
        check_folds(folds, n_lab)
        model = model_list(model)
        if n_jobs == 0:
            raise InputError("--n-jobs 0 is not valid; pass a positive count or -1 for every core")
        cols = select_feature_columns(src.schema, label, features=features, exclude=exclude, ids=ids)
        feats = table_to_features(src.read(cols), cols)
        timings["features_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        oof = cross_val_probs(feats.X[labelled], y, n_classes=k, model=model, folds=folds,
                              seed=seed, n_jobs=n_jobs, categorical=feats.categorical,
                              X_extra=feats.X[~labelled], class_names=[str(c) for c in classes],
                              progress=(lambda d, t: progress("folds", d, t)) if progress else None)
        feature_names = oof_features = feats.names
        del feats
        notes.extend(oof.notes)
        probs_all = oof_all_rows(oof, labelled)
        timings["oof_s"] = time.perf_counter() - t1
    else:
        probs_all = (load_pred_probs(pred_probs, lambda c: src.read([c]).column(c),
                                     src.column_names, classes)
                     if isinstance(pred_probs, (str, os.PathLike)) else np.asarray(pred_probs))
        if len(probs_all.shape) != 2:
            raise InputError(f"--pred-probs has shape {tuple(probs_all.shape)}, {len(probs_all.shape)}-D; "
                             "pass a 2-D array with one row per row of DATA and one column per "
                             "class (for two classes: numpy.column_stack([1 - p, p]))")
        if probs_all.shape[0] != src.n_rows:
            raise InputError(f"--pred-probs has shape {tuple(probs_all.shape)} but DATA has "
                             f"{src.n_rows} rows; pass one row of probabilities per row of DATA")
        if probs_all.shape[1] != k:
            raise InputError(f"--pred-probs has {probs_all.shape[1]} columns but label '{label}' has "
                             f"{k} classes; pass one column per class, in sorted class order")
        # Every row, unlabelled ones too, under the name the user gave (row numbers are DATA rows).
        check_pred_probs(probs_all, src.n_rows, name=f"--pred-probs '{os.fspath(pred_probs)}'"
                         if isinstance(pred_probs, (str, os.PathLike)) else "pred_probs")
        feature_names, oof_features = [], None
    t2 = time.perf_counter()
    lab_probs = probs_all if everything else TakeRows(probs_all, np.flatnonzero(labelled))
    y, lab_probs = validate(y, lab_probs, method=method, mixture=mixture)
    det = detect(y, lab_probs, method=method, mixture=mixture, noisy_threshold=noisy_threshold)
    timings["detect_s"] = time.perf_counter() - t2

    if everything:
        predicted, score, p_noisy, issue = det.predicted, det.label_score, det.p_noisy, det.is_label_issue
    else:
        predicted = np.empty(src.n_rows, dtype=det.predicted.dtype)
        predicted[labelled] = det.predicted
        unl = np.flatnonzero(~labelled)
        predicted[unl] = np.asarray(TakeRows(probs_all, unl)[0:len(unl)]).argmax(axis=1)
        score = np.full(src.n_rows, np.nan)
        score[labelled] = det.label_score
        p_noisy = np.full(src.n_rows, np.nan)
        p_noisy[labelled] = det.p_noisy
        issue = np.zeros(src.n_rows, dtype=bool)
        issue[labelled] = det.is_label_issue
    label_type = src.schema.field(label).type
    out_type = label_type.value_type if pa.types.is_dictionary(label_type) else label_type
    columns = FlagColumns(codes, classes_arr, out_type, predicted, score, p_noisy, issue)

    settings = {"label": label, "features": feature_names, "model": model_label(model),
                "folds": folds if oof_features else None, "seed": seed,
                "n_jobs": n_jobs, "pred_probs": os.fspath(pred_probs) if isinstance(
                    pred_probs, (str, os.PathLike)) else ("array" if pred_probs is not None else None),
                "method": method, "mixture": mixture, "noisy_threshold": noisy_threshold}
    timings["total_s"] = time.perf_counter() - t0
    summary = build_summary(det, y, classes, n_rows=src.n_rows, source=src.name,
                            settings=settings, timings=timings, notes=notes)
    ranked = np.where(labelled, score, np.inf)
    top = np.argpartition(ranked, min(10, len(ranked) - 1))[:10] if len(ranked) > 10 else np.arange(len(ranked))
    top = top[np.lexsort((top, ranked[top]))]  # lowest score first, ties by row: O(N), no full sort
    top = top[labelled[top]]
    id_table = src.read(list(ids)).take(pa.array(top)) if ids else None
    summary["top_suspicious"] = _top_rows(columns, top, id_table, ids)
    return columns, summary, probs_all, det


def flag_table(table: pa.Table, *, label: str = "label", features=None, exclude=(), ids=(),
               model=DEFAULT_MODEL, folds: int = 5, seed: int = 0, n_jobs: int = 1, pred_probs=None,
               method: str = "combined", mixture: str = "beta", source: str | None = None,
               progress=None, noisy_threshold: float = NOISY_THRESHOLD) -> FlagResult:
    """Run the flag stage on an Arrow table.

    Parameters
    ----------
    table : pyarrow.Table
    label : str, default="label"
        The label column (any of int, string, bool, dictionary). Null labels are kept, not used.
    features, exclude, ids : sequence of str
        Feature columns (default: all but label, ids and excluded).
    model, folds, seed, n_jobs
        Cross-validation settings (see :func:`cleanpipe.out_of_fold_probs`); ``model`` may name
        several families (``"hgb,logreg"`` or a list), whose probabilities are averaged.
    pred_probs : str or ndarray, optional
        Skip cross-validation: a path (``.npy`` / Parquet), a list column of ``table``, or an
        array with one row per table row.
    method, mixture, noisy_threshold
        Detector settings (see :func:`cleanpipe.find_label_issues`).
    source : str, optional
        Where the table came from, recorded in the summary.
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while folds are fitted.

    Returns
    -------
    FlagResult
    """
    return run_on_table(
        _flag, table, source, label=label, features=features, exclude=exclude, ids=ids,
        model=model, folds=folds, seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method,
        mixture=mixture, progress=progress, noisy_threshold=noisy_threshold)


def run_on_table(flagger, table: pa.Table, source, **settings) -> FlagResult:
    """Run a flag stage (``_flag`` or its multi-label twin) on an in-memory table."""
    src = _Source(table.column_names, table.schema, table.num_rows,
                  lambda cols: table.select(cols), source or "DATA")
    columns, summary, probs, det = flagger(src, **settings)
    summary["source"] = None if source is None else os.fspath(source)
    out = table
    for name, col in columns.arrays().items():
        out = out.append_column(name, col)
    return FlagResult(out, summary, probs, det)


def flag_dataset(path, out_path, *, outputs, label: str = "label", features=None, exclude=(),
                 ids=(), model=DEFAULT_MODEL, folds: int = 5, seed: int = 0, n_jobs: int = 1,
                 pred_probs=None, method: str = "combined", mixture: str = "beta",
                 noisy_threshold: float = NOISY_THRESHOLD, save_pred_probs=None,
                 progress=None) -> dict:
    """Run the flag stage on a Parquet file or dataset on disk, streaming it to ``out_path``.

    Only the label column (and the feature columns, when out-of-fold probabilities are computed)
    is read whole; the output is written batch by batch, every input column unchanged plus the
    flag columns, into a file staged by ``outputs`` (an :class:`~cleanpipe.io.AtomicOutputs`).

    Returns
    -------
    dict
        The summary (see :func:`build_summary`).
    """
    dataset, src = open_source(path)
    columns, summary, probs = _flag(
        src, label=label, features=features, exclude=exclude, ids=ids, model=model, folds=folds,
        seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method, mixture=mixture,
        progress=progress, noisy_threshold=noisy_threshold)[:3]
    if not save_pred_probs:
        probs = None  # unmaps a memory-mapped --pred-probs before the output is written
    write_streamed(dataset, columns, summary, out_path, outputs, probs=probs,
                   save_pred_probs=save_pred_probs, progress=progress)
    return summary


def open_source(path) -> tuple:
    """The dataset at ``path`` and the :class:`_Source` view of it that the flag stages read."""
    dataset = open_dataset(path)
    return dataset, _Source(dataset.schema.names, dataset.schema, dataset.count_rows(),
                            lambda cols: dataset.to_table(columns=cols), os.fspath(path))


def write_streamed(dataset, columns, summary: dict, out_path, outputs, *, probs=None,
                   save_pred_probs=None, progress=None) -> None:
    """Write ``dataset`` batch by batch with ``columns`` (a FlagColumns-like) appended.

    The output goes to a file staged by ``outputs``; the probabilities too, when asked, written
    into a memory-mapped ``.npy`` block by block.
    """
    # n_jobs changes nothing in the result, so it stays out of the file: outputs are
    # byte-identical across --n-jobs for one --seed.
    provenance = {"cleanpipe_version": __version__, "source": summary["source"],
                  "settings": {k: v for k, v in summary["settings"].items() if k != "n_jobs"}}
    schema = with_metadata(pa.schema(list(dataset.schema) + columns.fields(),
                                     metadata=dataset.schema.metadata), {"cleanpipe.flag": provenance})
    with pq.ParquetWriter(outputs.stage(out_path), schema, compression="zstd") as writer:
        start = 0
        # Little read-ahead: the scan's default buffers many batches and fragments at once.
        for batch in dataset.to_batches(batch_size=BATCH_ROWS, batch_readahead=1,
                                        fragment_readahead=1):
            stop = start + batch.num_rows
            arrays = list(batch.columns) + list(columns.arrays(start, stop).values())
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            start = stop
            if progress:
                progress("writing rows", stop, summary["rows"])
    if save_pred_probs:
        mm = np.lib.format.open_memmap(outputs.stage(save_pred_probs), mode="w+",
                                       dtype=np.float32, shape=probs.shape)
        for a in range(0, probs.shape[0], BATCH_ROWS):
            mm[a:a + BATCH_ROWS] = np.asarray(probs[a:a + BATCH_ROWS])
        mm.flush()
        del mm


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (bytes,)):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def _top_rows(columns: FlagColumns, top: np.ndarray, id_table, ids) -> list:
    values = {name: arr.to_pylist() for name, arr in columns.arrays(rows=top).items()}
    rows = []
    for j, i in enumerate(top):
        row = {"row": int(i)}
        for c in ids:
            row[c] = _jsonable(id_table.column(c)[j].as_py())
        for c in OUTPUT_COLUMNS:
            row[c] = _jsonable(values[c][j])
        rows.append(row)
    return rows


def run_fields(det, settings, timings, notes) -> dict:
    """The summary keys every flag stage shares: mixture, method, settings, versions, timings, notes."""
    return {"mixture": det.mixture.to_dict(), "method": det.method, "settings": settings or {},
            "versions": _versions(),
            "timings": {k: round(v, 4) for k, v in (timings or {}).items()},
            "notes": list(notes)}


def build_summary(det: Detection, labels: np.ndarray, classes: list, *, n_rows: int,
                  source=None, settings=None, timings=None, notes=()) -> dict:
    """The JSON-ready summary of a detection (what ``<out>.summary.json`` holds)."""
    cl = det.confident
    names = [str(_jsonable(c)) for c in classes]
    n_lab = len(labels)
    flagged_per = np.bincount(labels[det.is_label_issue], minlength=len(classes))
    issues = cl.issues_per_class
    return {
        "cleanpipe_version": __version__,
        "source": None if source is None else os.fspath(source),
        "rows": int(n_rows),
        "labelled_rows": int(n_lab),
        "unlabelled_rows": int(n_rows - n_lab),
        "classes": [_jsonable(c) for c in classes],
        "n_classes": len(classes),
        "estimated_noise_rate": float(issues.sum() / max(n_lab, 1)),
        "estimated_issues": int(issues.sum()),
        "noise_rate_per_class": dict(zip(names, map(float, cl.noise_rate_per_class))),
        "rows_per_class": dict(zip(names, map(int, cl.label_counts))),
        "flagged": int(det.is_label_issue.sum()),
        "flagged_per_class": dict(zip(names, map(int, flagged_per))),
        "noise_matrix": np.round(cl.noise_matrix, 6).tolist(),
        "noise_matrix_axes": "[given][true]: P(given label | true label)",
        "class_prior": np.round(cl.prior, 6).tolist(),
        "thresholds": np.round(cl.thresholds, 6).tolist(),
        "confident_joint": cl.confident_joint.tolist(),
        **run_fields(det, settings, timings, notes),
    }
