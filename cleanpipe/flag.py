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

from . import __version__
from .api import validate
from .detect import Detection, detect
from .errors import InputError
from .features import columns_hint, decode_labels, encode_labels, select_feature_columns, table_to_features
from .oof import check_folds, cross_val_probs

#: Columns ``flag`` adds to the input table.
OUTPUT_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")


@dataclass(frozen=True)
class FlagResult:
    """Output of :func:`flag_table`.

    Attributes
    ----------
    table : pyarrow.Table
        Every input column unchanged plus :data:`OUTPUT_COLUMNS`.
    summary : dict
        JSON-ready summary (noise estimates, counts, settings, versions, timings).
    pred_probs : ndarray of shape (n_rows, n_classes), float32
        Out-of-fold probabilities of labelled rows; fold-averaged predictions for unlabelled rows.
    detection : Detection
        The detector's output for the labelled rows.
    """

    table: pa.Table
    summary: dict
    pred_probs: np.ndarray
    detection: Detection


def load_pred_probs(spec: str, table: pa.Table, classes: list) -> np.ndarray:
    """Read user-supplied probabilities: a ``.npy`` file, a Parquet file, or a list column of the table.

    A Parquet file needs one numeric column per class; when its column names are the class names
    they are put in class order, otherwise the columns are taken in class order as they stand.
    """
    k = len(classes)
    path = Path(spec)
    if spec in table.column_names and not path.exists():
        col = table.column(spec)
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
                or pa.types.is_fixed_size_list(col.type)):
            raise InputError(f"--pred-probs column '{spec}' has type {col.type}; it must be a list "
                             "of floats, one per class")
        from .features import _vector
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
        pt = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"--pred-probs '{spec}' is neither a .npy nor a Parquet file ({exc})") from None
    names = [str(c) for c in classes]
    if set(names) <= set(pt.column_names):
        pt = pt.select(names)
    for field in pt.schema:
        if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type)):
            raise InputError(f"--pred-probs '{spec}' column '{field.name}' has type {field.type}; "
                             "every column must hold a class probability")
    if pt.num_columns != k:
        raise InputError(f"--pred-probs '{spec}' has {pt.num_columns} columns but the label has "
                         f"{k} classes; pass one column per class")
    return np.column_stack([c.to_numpy(zero_copy_only=False).astype(np.float64) for c in pt.columns])


def _versions() -> dict:
    import sklearn
    return {"cleanpipe": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "pyarrow": pa.__version__}


def flag_table(table: pa.Table, *, label: str = "label", features=None, exclude=(), ids=(),
               model="hgb", folds: int = 5, seed: int = 0, n_jobs: int = 1, pred_probs=None,
               method: str = "combined", mixture: str = "beta", source: str | None = None,
               progress=None) -> FlagResult:
    """Run the flag stage on an Arrow table.

    Parameters
    ----------
    table : pyarrow.Table
    label : str, default="label"
        The label column (any of int, string, bool, dictionary). Null labels are kept, not used.
    features, exclude, ids : sequence of str
        Feature columns (default: all but label, ids and excluded).
    model, folds, seed, n_jobs
        Cross-validation settings (see :func:`cleanpipe.out_of_fold_probs`).
    pred_probs : str or ndarray, optional
        Skip cross-validation: a path (``.npy`` / Parquet), a list column of ``table``, or an
        array with one row per table row.
    method, mixture
        Detector settings (see :func:`cleanpipe.find_label_issues`).
    source : str, optional
        Where the table came from, recorded in the summary.
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while folds are fitted.

    Returns
    -------
    FlagResult
    """
    timings = {}
    t0 = time.perf_counter()
    if table.num_rows == 0:
        raise InputError(f"{source or 'DATA'} has no rows; pass a table with labelled rows")
    if label not in table.column_names:
        raise InputError(f"label column '{label}' not found in {source or 'DATA'} (columns: "
                         f"{columns_hint(table.column_names)}); pass --label with one of them")
    clash = [c for c in OUTPUT_COLUMNS if c in table.column_names]
    if clash:
        raise InputError(f"{source or 'DATA'} already has a column '{clash[0]}', which flag writes; "
                         "rename it, or pass the original table rather than earlier flag output")
    codes, classes_arr = encode_labels(table.column(label), label)
    classes = classes_arr.to_pylist()
    labelled = codes >= 0
    n_lab = int(labelled.sum())
    if n_lab == 0:
        raise InputError(f"label column '{label}' is entirely null; there is nothing to check")
    if len(classes) < 2:
        raise InputError(f"label column '{label}' holds a single class ({classes[0]!r}); label-error "
                         "detection needs at least two classes")
    y = codes[labelled]
    notes = []
    if pred_probs is None:
        check_folds(folds, n_lab)
        if n_jobs == 0:
            raise InputError("--n-jobs 0 is not valid; pass a positive count or -1 for every core")
        cols = select_feature_columns(table.schema, label, features=features, exclude=exclude, ids=ids)
        feats = table_to_features(table, cols)
        timings["features_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        oof = cross_val_probs(feats.X[labelled], y, n_classes=len(classes), model=model, folds=folds,
                              seed=seed, n_jobs=n_jobs, categorical=feats.categorical,
                              X_extra=feats.X[~labelled], class_names=[str(c) for c in classes],
                              progress=(lambda d, t: progress("folds", d, t)) if progress else None)
        notes.extend(oof.notes)
        probs_all = np.empty((table.num_rows, len(classes)), dtype=np.float32)
        probs_all[labelled] = oof.pred_probs
        probs_all[~labelled] = oof.extra_probs
        feature_names = feats.names
        timings["oof_s"] = time.perf_counter() - t1
    else:
        probs_all = (load_pred_probs(pred_probs, table, classes) if isinstance(pred_probs, str)
                     else np.asarray(pred_probs))
        if probs_all.ndim != 2 or probs_all.shape[0] != table.num_rows:
            raise InputError(f"--pred-probs has shape {tuple(probs_all.shape)} but DATA has "
                             f"{table.num_rows} rows; pass one row of probabilities per row of DATA")
        if probs_all.shape[1] != len(classes):
            raise InputError(f"--pred-probs has {probs_all.shape[1]} columns but label '{label}' has "
                             f"{len(classes)} classes; pass one column per class, in sorted class order")
        feature_names = []
    t2 = time.perf_counter()
    lab_probs = probs_all[labelled] if not labelled.all() else probs_all
    y, lab_probs = validate(y, lab_probs, method=method, mixture=mixture)
    det = detect(y, lab_probs, method=method, mixture=mixture)
    timings["detect_s"] = time.perf_counter() - t2

    out = _output_table(table, label, labelled, codes, classes_arr, probs_all, det)
    settings = {"label": label, "features": feature_names, "model": model if isinstance(model, str)
                else type(model).__name__, "folds": folds, "seed": seed, "n_jobs": n_jobs,
                "pred_probs": pred_probs if isinstance(pred_probs, str) else
                ("array" if pred_probs is not None else None), "method": method, "mixture": mixture}
    timings["total_s"] = time.perf_counter() - t0
    summary = build_summary(det, y, classes, n_rows=table.num_rows, source=source,
                            settings=settings, timings=timings, notes=notes)
    summary["top_suspicious"] = _top_rows(out, ids, 10)
    return FlagResult(out, summary, probs_all, det)


def _output_table(table, label, labelled, codes, classes_arr, probs_all, det) -> pa.Table:
    n = table.num_rows
    label_type = table.schema.field(label).type
    out_type = label_type.value_type if pa.types.is_dictionary(label_type) else label_type
    predicted = probs_all.argmax(axis=1).astype(np.int64)
    predicted[labelled] = det.predicted
    score = np.full(n, np.nan)
    score[labelled] = det.label_score
    p_noisy = np.full(n, np.nan)
    p_noisy[labelled] = det.p_noisy
    issue = np.zeros(n, dtype=bool)
    issue[labelled] = det.is_label_issue
    new = {
        "given_label": decode_labels(codes, classes_arr, out_type),
        "predicted_label": decode_labels(predicted, classes_arr, out_type),
        "label_score": pa.array(score, mask=~labelled),
        "p_noisy": pa.array(p_noisy, mask=~labelled),
        "is_label_issue": pa.array(issue),
    }
    out = table
    for name, col in new.items():
        out = out.append_column(name, col)
    return out


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


def _top_rows(out: pa.Table, ids, k: int) -> list:
    score = out.column("label_score").to_numpy(zero_copy_only=False)
    score = np.where(np.isnan(score), np.inf, score)
    top = np.argsort(score, kind="stable")[:k]
    top = top[np.isfinite(score[top])]
    rows = []
    for i in top:
        row = {"row": int(i)}
        for c in list(ids) + ["given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"]:
            row[c] = _jsonable(out.column(c)[int(i)].as_py())
        rows.append(row)
    return rows


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
        "mixture": det.mixture.to_dict(),
        "method": det.method,
        "settings": settings or {},
        "versions": _versions(),
        "timings": {k: round(v, 4) for k, v in (timings or {}).items()},
        "notes": list(notes),
    }
