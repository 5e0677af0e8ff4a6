"""The ``flag`` stage on a table: features -> out-of-fold probabilities -> detection -> output table.

This is what ``cleanpipe flag`` and the pipeline's flag stage run, for single- and multi-label
data alike: the kind of label is resolved once (:func:`cleanpipe.target.resolve_target`) and the
stage branches on it only where the maths differ (the cross-validated model, the detector, the
output columns and the summary). It takes and returns Arrow tables and plain dicts, so the CLI and
the pipeline runner only read inputs and write outputs around it.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .boosters import resolve_device, resolve_models
from .detect.evidence import with_duplicate_labels
from .detect import Detection, check_labels, check_pred_probs, detect
from .detect.multilabel import detect_multilabel
from .errors import CleanpipeWarning, InputError
from .features import (decode_label_lists, decode_labels, list_column_matrix, select_feature_columns,
                       table_to_features)
from .formats import TableFormat
from .frames import as_table
from .flag_checks import (Appended, CheckColumns, CheckInputs, check_inputs, run_flag_checks,
                          write_against)
from .flagsfile import CHECK_COLUMNS, flag_provenance, jsonable, run_fields
from .io import open_dataset, with_metadata
from .multilabel import SIGMOID_HINT, build_multilabel_summary, check_threshold, matrix_lists
from .oof import (DEFAULT_MODEL, check_folds, cross_val_probs, cross_val_probs_multilabel, model_label,
                  model_list)
from .rows import ParquetMatrix, TakeRows
from .settings import (DEFAULT_DEVICE, DEFAULT_FOLDS, DEFAULT_MIXTURE, DEFAULT_MULTILABEL_METHOD,
                       DEFAULT_SEED, METHODS, MIXTURES, MULTILABEL_METHODS, CheckSettings, check_seed,
                       default_noisy_threshold)
from .target import Target, is_multilabel, resolve_target

#: Rows per record batch when streaming DATA to the output.
BATCH_ROWS = 65536
#: Rows the summary lists as the most suspicious.
TOP_ROWS = 10


@dataclass(frozen=True)
class FlagResult:
    """Output of :func:`flag_table`.

    Attributes
    ----------
    table : pyarrow.Table
        Every input column unchanged plus the flag columns (:attr:`cleanpipe.target.Target.output_columns`).
    summary : dict
        JSON-ready summary (noise estimates, counts, settings, versions, timings).
    pred_probs : array-like of shape (n_rows, n_classes)
        Out-of-fold probabilities of labelled rows; fold-averaged predictions for unlabelled rows.
    detection : Detection or MultilabelDetection
        The detector's output for the labelled rows.
    checks : CheckResult or None
        The data checks' output when ``checks=`` was given (its columns are in ``table`` too; its
        ``against_columns`` describe the rows of the ``against`` table).
    """

    table: pa.Table
    summary: dict
    pred_probs: np.ndarray
    detection: Detection
    checks: object = None


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
        return list_column_matrix(col, spec).astype(np.float64)
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


@dataclass(frozen=True)
class FlagColumns:
    """The per-row results of single-label flagging for every row of DATA, ready to append in slices."""

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
class TagFlagColumns:
    """The per-row results of multi-label flagging for every row of DATA, as whole Arrow arrays."""

    columns: dict

    def arrays(self, start: int = 0, stop: int | None = None, *, rows=None) -> dict:
        """The output columns for rows ``start..stop`` (or the indices ``rows``)."""
        if rows is not None:
            idx = pa.array(np.asarray(rows, dtype=np.int64))
            return {k: v.take(idx) for k, v in self.columns.items()}
        n = len(next(iter(self.columns.values())))
        stop = n if stop is None else stop
        return {k: v.slice(start, stop - start) for k, v in self.columns.items()}

    def fields(self) -> list:
        return [pa.field(k, v.type) for k, v in self.columns.items()]


@dataclass(frozen=True)
class Source:
    """What the flag stage needs from DATA, so a table in memory and a dataset on disk share it."""

    column_names: list
    schema: pa.Schema
    n_rows: int
    read: object  # read(columns) -> pa.Table
    name: str


def detector_options(multi_label: bool, method, mixture: str, noisy_threshold) -> tuple:
    """``(method, noisy_threshold)`` for the kind of label, None taking its default; checked."""
    if multi_label:
        method = DEFAULT_MULTILABEL_METHOD if method is None else method
        if method not in MULTILABEL_METHODS:
            raise InputError(f"--method {method} is not available for multi-label data; choose one "
                             f"of: {', '.join(MULTILABEL_METHODS)}")
        noisy_threshold = (default_noisy_threshold(method, True) if noisy_threshold is None
                           else noisy_threshold)
        check_threshold(noisy_threshold)
    else:
        method = METHODS[0] if method is None else method
        if method not in METHODS:
            raise InputError(f"method '{method}' is not known; choose one of: {', '.join(METHODS)}")
        noisy_threshold = default_noisy_threshold(method) if noisy_threshold is None else noisy_threshold
    if mixture not in MIXTURES:
        raise InputError(f"mixture '{mixture}' is not known; choose one of: {', '.join(MIXTURES)}")
    return method, noisy_threshold


def _check_classes(target: Target, classes: list, n_lab: int) -> None:
    what = target.described
    if n_lab == 0:
        fix = "" if target.multi_label else " (pass --label with the column that holds the labels)"
        raise InputError(f"{what} is entirely null; there is nothing to check{fix}")
    if not target.multi_label and len(classes) < 2:
        raise InputError(f"{what} holds a single class ({classes[0]!r}); label-error "
                         "detection needs at least two classes")
    if target.multi_label and len(classes) == 0:
        raise InputError(f"{what} holds no tags (every list is empty); there is nothing to check")
    if target.multi_label and len(classes) == 1:
        raise InputError(f"{what} holds a single tag ({classes[0]!r}); that is a binary problem: "
                         "flag a 0/1 or bool column of it without --multi-label")


def out_of_fold(src: Source, target: Target, enc, *, features, exclude, ids, model, folds, seed,
                n_jobs, progress=None, timings=None, feats=None, device: str = "cpu"):
    """Cross-validated probabilities of every row of ``src`` (see :func:`oof_all_rows`), with the
    feature names and the fold notes: what ``flag`` computes when no ``pred_probs`` are given and
    the pipeline's oof stage saves. ``timings`` (a dict) gets ``features_s`` and ``oof_s``;
    ``feats`` (a :class:`~cleanpipe.features.Features`) is the feature matrix when it was read
    already (for the data checks). ``device`` is resolved (``cpu`` or ``cuda``:
    :func:`cleanpipe.boosters.resolve_device`)."""
    t0 = time.perf_counter()
    timings = {} if timings is None else timings
    labelled = enc.labelled
    check_seed(seed)
    check_folds(folds, int(np.count_nonzero(labelled)))
    model = model_list(model)
    if n_jobs == 0:
        raise InputError("--n-jobs 0 is not valid; pass a positive count or -1 for every core")
    if feats is None:
        cols = feature_columns(src, target, features=features, exclude=exclude, ids=ids)
        feats = table_to_features(src.read(cols), cols)
    timings["features_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    names = [str(c) for c in enc.classes.to_pylist()]
    fold_progress = (lambda d, t: progress("folds", d, t)) if progress else None
    common = dict(model=model, folds=folds, seed=seed, n_jobs=n_jobs, categorical=feats.categorical,
                  X_extra=feats.X[~labelled], class_names=names, progress=fold_progress,
                  device=device)
    if target.multi_label:
        oof = cross_val_probs_multilabel(feats.X[labelled], enc.values[labelled], **common)
    else:
        oof = cross_val_probs(feats.X[labelled], enc.values[labelled], n_classes=len(names), **common)
    probs = oof_all_rows(oof, labelled)
    timings["oof_s"] = time.perf_counter() - t1
    return probs, feats.names, oof.notes


def feature_columns(src: Source, target: Target, *, features, exclude, ids) -> list:
    """The feature columns of ``src``: ``features``, else every column but the label(s), ``ids``
    and ``exclude``."""
    label = list(target.columns) if target.multi_label else target.columns[0]
    return select_feature_columns(src.schema, label, features=features, exclude=exclude, ids=ids)


def _given_probs(src: Source, pred_probs, target: Target, classes: list):
    """``pred_probs`` as given (path, column name or array), its shape checked against DATA."""
    probs = (load_pred_probs(pred_probs, lambda c: src.read([c]).column(c), src.column_names, classes)
             if isinstance(pred_probs, (str, os.PathLike)) else np.asarray(pred_probs))
    shape, k = tuple(probs.shape), len(classes)
    if len(shape) != 2:
        raise InputError(f"--pred-probs has shape {shape}, {len(shape)}-D; "
                         "pass a 2-D array with one row per row of DATA and one column per "
                         "class (for two classes: numpy.column_stack([1 - p, p]))")
    if shape[0] != src.n_rows:
        raise InputError(f"--pred-probs has shape {shape} but DATA has "
                         f"{src.n_rows} rows; pass one row of probabilities per row of DATA")
    if shape[1] != k:
        if target.multi_label:
            raise InputError(f"--pred-probs has {shape[1]} columns but {target.described} has {k} "
                             "classes; pass one column per class, in class order")
        raise InputError(f"--pred-probs has {shape[1]} columns but label '{target.columns[0]}' has "
                         f"{k} classes; pass one column per class, in sorted class order")
    return probs


def _spread(values: np.ndarray, labelled: np.ndarray, fill, everything: bool, dtype=None) -> np.ndarray:
    """A vector over the labelled rows spread over every row, ``fill`` elsewhere (``values``
    itself when every row is labelled)."""
    if everything:
        return values
    out = np.full(len(labelled), fill, dtype=values.dtype if dtype is None else dtype)
    out[labelled] = values
    return out


def warn_if_nothing_flagged(det: Detection, labels: np.ndarray, noisy_threshold: float) -> None:
    """A :class:`CleanpipeWarning` when ``mixture`` flags no row although a mixture was fitted and
    the model disagrees with some labels: say how far those rows fell short."""
    if (det.method == "mixture" and not det.is_label_issue.any() and det.mixture.fit is not None
            and np.any(det.predicted != labels)):
        top = float(np.max(det.p_noisy))
        warnings.warn(f"method 'mixture' flagged no row: the highest p_noisy is {top:.3f}, below "
                      f"the threshold {noisy_threshold}; lower --noisy-threshold, or use --method "
                      "combined", CleanpipeWarning, stacklevel=3)


def _detect_single(enc, probs_all, lab_probs, *, given: bool, everything: bool, **options):
    """Single-label detection; returns the detection, the output columns and the score vector."""
    labelled = enc.labelled
    y = enc.values if everything else enc.values[labelled]
    if not given:  # given probabilities were checked whole, unlabelled rows too
        check_pred_probs(lab_probs, len(y))
    y = check_labels(y, lab_probs.shape[1])
    det = detect(y, lab_probs, **options)
    warn_if_nothing_flagged(det, y, options["noisy_threshold"])
    predicted = _spread(det.predicted, labelled, 0, everything)
    if not everything:
        unl = np.flatnonzero(~labelled)
        predicted[unl] = np.asarray(TakeRows(probs_all, unl)[0:len(unl)]).argmax(axis=1)
    score = _spread(det.label_score, labelled, np.nan, everything, float)
    columns = FlagColumns(enc.values, enc.classes, enc.value_type, predicted, score,
                          _spread(det.p_noisy, labelled, np.nan, everything, float),
                          _spread(det.is_label_issue, labelled, False, everything))
    return det, columns, score


def _detect_multilabel(enc, probs_all, lab_probs, *, everything: bool, **options):
    """Multi-label detection; returns the detection, the output columns and the score vector."""
    labelled, n_rows = enc.labelled, len(enc.labelled)
    check_pred_probs(lab_probs, int(labelled.sum()), require_sum_one=False, name="--pred-probs",
                     range_hint=SIGMOID_HINT)
    det = detect_multilabel(enc.values[labelled], lab_probs, **options)
    predicted = np.zeros((n_rows, len(enc.classes)), dtype=bool)
    predicted[labelled] = det.predicted
    if not everything:
        unl = np.flatnonzero(~labelled)
        predicted[unl] = np.asarray(TakeRows(probs_all, unl)[0:len(unl)]) > 0.5
    columns = TagFlagColumns(tag_flag_columns(enc.values, labelled, enc.classes, enc.value_type,
                                              predicted, det))
    return det, columns, _spread(det.label_score, labelled, np.nan, False, float)


def tag_flag_columns(tags: np.ndarray, labelled: np.ndarray, classes: pa.Array,
                     value_type: pa.DataType, predicted: np.ndarray, det) -> dict:
    """The multi-label flag columns of some rows as Arrow arrays (one machine and partitions).

    ``tags``: the 0/1 matrix of every row (0 on unlabelled rows); ``predicted``: ``p > 0.5`` of
    every row; ``det``: the labelled rows' detection (a
    :class:`~cleanpipe.detect.multilabel.MultilabelDetection` or a partition's
    :class:`~cleanpipe.detect.partitioned_multilabel.PartitionMultilabelDetection`).
    """
    n_rows = len(labelled)
    lab_rows, unl = np.flatnonzero(labelled), ~labelled

    def suspects(spurious):
        # Detection rows are the labelled rows; spread them over DATA (null on unlabelled rows).
        off, codes = det.suspects(spurious=spurious)
        counts = np.zeros(n_rows, dtype=np.int64)
        counts[lab_rows] = np.diff(off)
        return decode_label_lists(np.concatenate([[0], np.cumsum(counts)]), codes, classes,
                                  value_type, unl)

    score = _spread(det.label_score, labelled, np.nan, False, float)
    return {
        "given_label": decode_label_lists(*matrix_lists(tags), classes, value_type, unl),
        "predicted_label": decode_label_lists(*matrix_lists(predicted), classes, value_type),
        "label_score": pa.array(score, mask=unl),
        "p_noisy": pa.array(_spread(det.p_noisy, labelled, np.nan, False, float), mask=unl),
        "is_label_issue": pa.array(_spread(det.is_label_issue, labelled, False, False)),
        "suspect_missing": suspects(False),
        "suspect_spurious": suspects(True),
    }


def _flag(src: Source, *, label, multi_label=False, features, exclude, ids, model, folds, seed,
          n_jobs, pred_probs, method=None, mixture=DEFAULT_MIXTURE, noisy_threshold=None, progress=None,
          checks=None, against=None, fmt: TableFormat = TableFormat(), device=DEFAULT_DEVICE):
    timings = {}
    t0 = time.perf_counter()
    where = src.name
    if src.n_rows == 0:
        raise InputError(f"{where} has no rows; pass a table with labelled rows")
    multi = is_multilabel(src.schema, label, multi_label)
    method, noisy_threshold = detector_options(multi, method, mixture, noisy_threshold)
    target = resolve_target(src.schema, label, multi_label=multi, where=where)
    clash = [c for c in target.output_columns if c in src.column_names]
    if clash:
        raise InputError(f"{where} already has a column '{clash[0]}', which flag writes; "
                         "rename it, or pass the original table rather than earlier flag output")
    enc = target.encode(src.read(list(target.columns)))
    labelled = enc.labelled
    classes = enc.classes.to_pylist()
    n_lab = int(np.count_nonzero(labelled))
    everything = n_lab == src.n_rows  # the common case: no copies of per-row vectors
    _check_classes(target, classes, n_lab)
    if against is not None and checks is None:  # leakage is one of the checks: run them all
        checks = CheckSettings()
    check_in = None
    if checks is not None:  # the checks' inputs, --against included, are checked before the folds
        check_in = _check_inputs(src, target, checks, against, features=features, exclude=exclude,
                                 ids=ids, fmt=fmt, columns_out=target.output_columns)
    notes, given = [], pred_probs is not None
    if not given:
        device = resolve_device(device)
        model = resolve_models(model_list(model), device)
        probs_all, feature_names, oof_notes = out_of_fold(
            src, target, enc, features=features, exclude=exclude, ids=ids, model=model, folds=folds,
            seed=seed, n_jobs=n_jobs, progress=progress, timings=timings,
            feats=None if check_in is None else check_in.features, device=device)
        notes.extend(oof_notes)
    else:
        probs_all = _given_probs(src, pred_probs, target, classes)
        if not multi:  # every row, unlabelled ones too, under the name the user gave
            check_pred_probs(probs_all, src.n_rows, name=f"--pred-probs '{os.fspath(pred_probs)}'"
                             if isinstance(pred_probs, (str, os.PathLike)) else "pred_probs")
        feature_names = []
    checked = None
    if check_in is not None:  # before detection, so that its evidence could feed the detector
        t3 = time.perf_counter()
        if not multi and not isinstance(probs_all, np.ndarray):
            # a Parquet file of probabilities, read whole once: the checks and the duplicates'
            # evidence take its rows in any order, and the detector then reads the same array
            probs_all = np.asarray(TakeRows(probs_all, np.arange(src.n_rows))[0:src.n_rows])
        checked = run_flag_checks(check_in, None if multi else enc.values,
                                  None if multi else probs_all, seed=seed)
        timings["checks_s"] = time.perf_counter() - t3
    t2 = time.perf_counter()
    det_probs = probs_all
    if checked is not None and not multi:  # the labels of a row's duplicates are evidence too
        det_probs = with_duplicate_labels(probs_all, np.where(labelled, enc.values, -1),
                                          checked.columns["duplicate_set"],
                                          noise=check_in.settings.duplicate_noise)
    lab_probs = det_probs if everything else TakeRows(det_probs, np.flatnonzero(labelled))
    options = dict(method=method, mixture=mixture, noisy_threshold=noisy_threshold)
    if multi:
        det, columns, score = _detect_multilabel(enc, probs_all, lab_probs, everything=everything,
                                                 **options)
    else:
        det, columns, score = _detect_single(enc, det_probs, lab_probs, given=given,
                                             everything=everything, **options)
    timings["detect_s"] = time.perf_counter() - t2
    label_columns = columns
    if checked is not None:
        columns = Appended(columns, CheckColumns(checked.columns))

    settings = {"label": target.setting,
                **({"multi_label": True, "label_format": target.form} if multi else {}),
                "features": feature_names, "ids": list(ids), "exclude": list(exclude),
                "model": model_label(model),
                "folds": None if given else folds, "seed": seed, "n_jobs": n_jobs,
                "device": None if given else device,
                "pred_probs": os.fspath(pred_probs) if isinstance(pred_probs, (str, os.PathLike))
                else ("array" if given else None), **options}
    if check_in is not None:
        settings["checks"] = check_in.settings.to_dict()
        settings["against"] = check_in.against_name
    timings["total_s"] = time.perf_counter() - t0
    build = build_multilabel_summary if multi else build_summary
    y = enc.values if everything else enc.values[labelled]
    summary = build(det, y, classes, n_rows=src.n_rows, source=src.name, settings=settings,
                    timings=timings, notes=notes)
    top = lowest(np.where(labelled, score, np.inf), TOP_ROWS)
    top = top[labelled[top]]
    id_table = src.read(list(ids)).take(pa.array(top)) if ids else None
    summary["top_suspicious"] = top_rows(label_columns, top, id_table, ids)
    if checked is not None:
        summary["issues"] = checked.summary
    return columns, summary, probs_all, det, checked


def _check_inputs(src: Source, target: Target, checks, against, *, features, exclude, ids, fmt,
                  columns_out) -> CheckInputs:
    """The checks' inputs (see :func:`cleanpipe.flag_checks.check_inputs`), their output columns
    checked against DATA's own."""
    clash = [c for c in CHECK_COLUMNS if c in src.column_names]
    if clash:
        raise InputError(f"{src.name} already has a column '{clash[0]}', which flag --checks "
                         "writes; rename it, or pass the original table rather than earlier flag output")
    cols = feature_columns(src, target, features=features, exclude=exclude, ids=ids)
    return check_inputs(checks, src.read(cols), cols, against=against, fmt=fmt)


def lowest(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` lowest ``values``, lowest first, ties by position: what
    ``np.argsort(values, kind="stable")[:n]`` gives, in O(N)."""
    if len(values) <= n:
        return np.argsort(values, kind="stable")
    kth = np.partition(values, n - 1)[n - 1]
    below = np.flatnonzero(values < kth)
    top = np.concatenate([below, np.flatnonzero(values == kth)[:n - len(below)]])
    return top[np.lexsort((top, values[top]))]


def top_rows(columns, top: np.ndarray, id_table, ids) -> list:
    """The summary's ``top_suspicious``: the rows ``top`` with their ids and flag columns."""
    values = {name: arr.to_pylist() for name, arr in columns.arrays(rows=top).items()}
    rows = []
    for j, i in enumerate(top):  # at most TOP_ROWS rows
        row = {"row": int(i)}
        for c in ids:
            row[c] = jsonable(id_table.column(c)[j].as_py())
        for c, v in values.items():
            row[c] = [jsonable(x) for x in v[j]] if isinstance(v[j], list) else jsonable(v[j])
        rows.append(row)
    return rows


def flag_table(table: pa.Table, *, label="label", multi_label: bool = False, features=None,
               exclude=(), ids=(), model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
               n_jobs: int = 1, pred_probs=None, method: str | None = None, mixture: str = DEFAULT_MIXTURE,
               source: str | None = None, progress=None,
               noisy_threshold: float | None = None, checks: CheckSettings | None = None,
               against=None, device: str = DEFAULT_DEVICE) -> FlagResult:
    """Run the flag stage on an Arrow table.

    Parameters
    ----------
    table : pyarrow.Table
    label : str or list of str, default="label"
        The label column (any of int, string, bool, dictionary; null labels are kept, not used),
        or for multi-label data a list-of-tags column or several 0/1 columns (a list, or
        ``"a,b,c"``).
    multi_label : bool, default=False
        Treat ``label`` as multi-label; implied by a list column or several columns.
    features, exclude, ids : sequence of str
        Feature columns (default: all but label, ids and excluded).
    model, folds, seed, n_jobs, device
        Cross-validation settings (see :func:`cleanpipe.out_of_fold_probs`); ``model`` may name
        several families (``"hgb,logreg"`` or a list), whose probabilities are averaged;
        ``device`` (``auto``, ``cpu``, ``cuda``) moves the boosted ones to a GPU.
    pred_probs : str or ndarray, optional
        Skip cross-validation: a path (``.npy`` / Parquet), a list column of ``table``, or an
        array with one row per table row (multi-label: one column per class in class order; rows
        need not sum to 1).
    method, mixture, noisy_threshold
        Detector settings (see :func:`cleanpipe.find_label_issues` and
        :func:`cleanpipe.find_multilabel_issues`); ``method`` and ``noisy_threshold`` default to
        the detector's own for the kind of label.
    source : str, optional
        Where the table came from, recorded in the summary.
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while folds are fitted.
    checks : CheckSettings, optional
        Also run the data checks (:func:`cleanpipe.checks.run_checks`: duplicates, outliers, the
        neighbours' labels, table-level checks) on the feature columns with these settings: their
        columns are appended after the flag columns and their summary is ``summary["issues"]``.
    against : str or path-like, optional
        A second table with the same feature columns (a test set): the checks also find the rows
        of each table that duplicate rows of the other (leakage). Needs ``checks``.

    Returns
    -------
    FlagResult
        Multi-label data adds ``suspect_missing`` and ``suspect_spurious``; its ``given_label``,
        ``predicted_label`` and suspects are list columns of the tags' type.
    """
    table = as_table(table)
    src = Source(table.column_names, table.schema, table.num_rows,
                 lambda cols: table.select(cols), source or "DATA")
    columns, summary, probs, det, checked = _flag(
        src, label=label, multi_label=multi_label, features=features, exclude=exclude, ids=ids,
        model=model, folds=folds, seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method,
        mixture=mixture, progress=progress, noisy_threshold=noisy_threshold, checks=checks,
        against=against, device=device)
    summary["source"] = None if source is None else os.fspath(source)
    out = table
    for name, col in columns.arrays().items():
        out = out.append_column(name, col)
    return FlagResult(out, summary, probs, det, checked)


def flag_multilabel_table(table: pa.Table, **options) -> FlagResult:
    """:func:`flag_table` with ``multi_label=True``."""
    return flag_table(table, multi_label=True, **options)


def flag_dataset(path, out_path, *, outputs, label="label", multi_label: bool = False,
                 features=None, exclude=(), ids=(), model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                 n_jobs: int = 1, pred_probs=None, method: str | None = None, mixture: str = DEFAULT_MIXTURE,
                 noisy_threshold: float | None = None, save_pred_probs=None, progress=None,
                 fmt: TableFormat = TableFormat(), checks: CheckSettings | None = None,
                 against=None, against_out=None, device: str = DEFAULT_DEVICE) -> dict:
    """Run the flag stage on a table file or Parquet dataset on disk, streaming it to ``out_path``.

    Only the label column(s) (and the feature columns, when out-of-fold probabilities are
    computed) are read whole; the output is written batch by batch, every input column unchanged
    plus the flag columns, into a file staged by ``outputs`` (an :class:`~cleanpipe.io.AtomicOutputs`).
    The options are those of :func:`flag_table`; ``fmt`` says how to read ``path`` (see
    :func:`cleanpipe.io.open_dataset`). With ``against``, the check columns of the second
    table's rows go to ``against_out`` (also staged by ``outputs``; see :func:`write_against`).

    Returns
    -------
    dict
        The summary (see :func:`build_summary`).
    """
    dataset, src = dataset_source(path, fmt=fmt)
    columns, summary, probs, _, checked = _flag(
        src, label=label, multi_label=multi_label, features=features, exclude=exclude, ids=ids,
        model=model, folds=folds, seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method,
        mixture=mixture, progress=progress, noisy_threshold=noisy_threshold, checks=checks,
        against=against, fmt=fmt, device=device)
    if checked is not None and against is not None and against_out is not None:
        write_against(checked, summary, against_out, outputs)
    if not save_pred_probs:
        probs = None  # unmaps a memory-mapped --pred-probs before the output is written
    write_streamed(dataset, columns, summary, out_path, outputs, probs=probs,
                   save_pred_probs=save_pred_probs, progress=progress)
    return summary


def dataset_source(path, *, what: str = "DATA", fmt: TableFormat = TableFormat()) -> tuple:
    """The dataset at ``path`` and the :class:`Source` view of it that the flag stage reads."""
    dataset = open_dataset(path, what=what, fmt=fmt)
    return dataset, Source(dataset.schema.names, dataset.schema, dataset.count_rows(),
                           lambda cols: dataset.to_table(columns=cols), os.fspath(path))


def write_streamed(dataset, columns, summary: dict, out_path, outputs, *, probs=None,
                   save_pred_probs=None, progress=None) -> None:
    """Write ``dataset`` batch by batch with ``columns`` (a FlagColumns-like) appended.

    The output goes to a file staged by ``outputs``; the probabilities too, when asked, written
    into a memory-mapped ``.npy`` block by block.
    """
    schema = with_metadata(pa.schema(list(dataset.schema) + columns.fields(),
                                     metadata=dataset.schema.metadata),
                           {"cleanpipe.flag": flag_provenance(summary)})
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


def build_summary(det: Detection, labels: np.ndarray, classes: list, *, n_rows: int,
                  source=None, settings=None, timings=None, notes=()) -> dict:
    """The JSON-ready summary of a single-label detection (what ``<out>.summary.json`` holds)."""
    cl = det.confident
    names = [str(jsonable(c)) for c in classes]
    n_lab = len(labels)
    flagged_per = np.bincount(labels[det.is_label_issue], minlength=len(classes))
    issues = cl.issues_per_class
    return {
        "cleanpipe_version": __version__,
        "source": None if source is None else os.fspath(source),
        "rows": int(n_rows),
        "labelled_rows": int(n_lab),
        "unlabelled_rows": int(n_rows - n_lab),
        "classes": [jsonable(c) for c in classes],
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
