"""Multi-label data: :func:`find_multilabel_issues` over arrays and the ``flag`` stage on tables.

A row's label is a set of tags. In a table it is either one list column (``["cat", "outdoor"]``; an
empty list = no tag, a null list = an unlabelled row, kept and not checked) or several 0/1 columns,
one per class (``--label a,b,c``). The classes are the sorted union of the tags (or the 0/1 columns
in the order given). Out-of-fold probabilities are one-vs-rest
(:func:`cleanpipe.oof.cross_val_probs_multilabel`) and the detector is
:func:`cleanpipe.detect.multilabel.detect_multilabel`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._version import __version__
from .detect import check_pred_probs, iter_blocks
from .detect._validate import SUM_TOLERANCE
from .detect.multilabel import (DEFAULT_MULTILABEL_METHOD, MULTILABEL_METHODS, MultilabelDetection,
                               detect_multilabel)
from .errors import InputError
from .features import (columns_hint, decode_label_lists, encode_label_columns, encode_label_lists,
                       is_list_type, select_feature_columns, table_to_features)
from .flag import (OUTPUT_COLUMNS, FlagResult, _jsonable, _Source, load_pred_probs, oof_all_rows,
                   open_source, run_fields, run_on_table, write_streamed)
from .io import open_dataset
from .oof import DEFAULT_MODEL, check_folds, cross_val_probs_multilabel, model_label
from .rows import TakeRows

#: Columns ``flag`` adds to the input table for multi-label data.
MULTILABEL_OUTPUT_COLUMNS = OUTPUT_COLUMNS + ("suspect_missing", "suspect_spurious")
_MIXTURES = ("beta", "gaussian")


# --- arrays ----------------------------------------------------------------------------------------


def check_label_matrix(labels, n_rows: int, n_classes: int) -> np.ndarray:
    """Return the given tags as a ``(n_rows, n_classes)`` uint8 0/1 matrix.

    ``labels`` is either a 2-D array-like (anything with a ``shape``: ndarray, DataFrame) of 0/1 or
    bool, or a list of lists of class indices in ``[0, n_classes)`` (cleanlab's format).

    Raises
    ------
    InputError
        A shape that does not match ``pred_probs``, a value other than 0/1, a class index out of
        range, a row that is not a list.
    """
    if hasattr(labels, "shape"):
        arr = np.asarray(labels)
        if arr.ndim != 2:
            raise InputError(f"labels must be a 2-D 0/1 matrix (rows x classes), got shape {arr.shape}; "
                             "or pass a list of lists of class indices")
        if arr.shape != (n_rows, n_classes):
            raise InputError(f"labels has shape {arr.shape} but pred_probs has shape "
                             f"{(n_rows, n_classes)}; pass one 0/1 column per class, in the same order")
        if arr.dtype.kind not in "biuf":
            raise InputError(f"labels has dtype {arr.dtype}; pass a 0/1 (or bool) matrix")
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputError(f"labels holds {arr[r, c].item()!r} at row {r}, class {c}; a label matrix holds "
                             "only 0 and 1 (1 = tag present)")
        return arr.astype(np.uint8)
    try:
        arr = pa.array(list(labels))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InputError(f"labels is neither a 0/1 matrix nor a list of lists of class indices ({exc}); "
                         "pass e.g. [[0, 2], [], [1]]") from None
    if len(arr) != n_rows:
        raise InputError(f"labels has {len(arr)} rows but pred_probs has {n_rows}; pass one list of "
                         "class indices per row of pred_probs")
    if pa.types.is_null(arr.type):  # every row an empty list or None
        arr = arr.cast(pa.list_(pa.int64())) if len(arr) else arr
    if not is_list_type(arr.type) or not (pa.types.is_integer(arr.type.value_type)
                                          or pa.types.is_null(arr.type.value_type)):
        raise InputError(f"labels holds {arr.type}, not lists of integer class indices; pass e.g. "
                         "[[0, 2], [], [1]] or a 0/1 matrix")
    if arr.null_count:
        r = int(np.argmax(~arr.is_valid().to_numpy(zero_copy_only=False)))
        raise InputError(f"labels row {r} is None; pass [] for a row without tags and drop "
                         "unlabelled rows")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n_rows), lengths)
    flat = pc.list_flatten(arr)
    if flat.null_count:
        raise InputError(f"labels row {int(rows[np.argmax(~flat.is_valid().to_numpy(zero_copy_only=False))])} "
                         "holds None; pass integer class indices only")
    codes = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    out = (codes < 0) | (codes >= n_classes)
    if out.any():
        i = int(np.argmax(out))
        raise InputError(f"labels row {int(rows[i])} holds class index {codes[i]}, outside "
                         f"[0, {n_classes}); class indices must index the columns of pred_probs")
    Y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    Y[rows, codes] = 1
    return Y


def validate_multilabel(labels, pred_probs, *, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = "beta",
                        noisy_threshold: float = 0.5):
    """Check inputs once at the boundary; return the 0/1 label matrix and ``pred_probs`` unchanged."""
    _check_threshold(noisy_threshold)
    if method not in MULTILABEL_METHODS:
        raise InputError(f"method '{method}' is not known for multi-label data; choose one of: "
                         f"{', '.join(MULTILABEL_METHODS)}")
    if mixture not in _MIXTURES:
        raise InputError(f"mixture '{mixture}' is not known; choose one of: {', '.join(_MIXTURES)}")
    if getattr(pred_probs, "shape", None) is None:
        pred_probs = np.asarray(pred_probs)
    shape = tuple(pred_probs.shape)
    if len(shape) != 2:
        raise InputError(f"pred_probs must be 2-D (rows x classes), got shape {shape}")
    if shape[0] == 0:
        raise InputError("pred_probs has no rows; there is nothing to check")
    _check_range(pred_probs, "pred_probs")
    check_pred_probs(pred_probs, shape[0], require_sum_one=False)
    return check_label_matrix(labels, shape[0], shape[1]), pred_probs


def _check_range(pred_probs, name: str) -> None:
    """Values outside [0, 1] (NaN is left to :func:`check_pred_probs`), with the multi-label hint."""
    for start, _, block in iter_blocks(pred_probs):
        bad = (block < 0) | (block > 1 + SUM_TOLERANCE)
        if bad.any():
            r = start + int(np.argwhere(bad)[0][0])
            raise InputError(f"{name} row {r} holds a value outside [0, 1]; pass probabilities "
                             "(apply a sigmoid to each logit first)")


def _check_threshold(noisy_threshold) -> None:
    if not isinstance(noisy_threshold, (int, float)) or not 0 <= noisy_threshold < 1:
        raise InputError(f"noisy_threshold must be a number in [0, 1), got {noisy_threshold!r}")


def _int_lists(offsets: np.ndarray, codes: np.ndarray) -> list:
    """Python lists of class indices per row (through Arrow: no Python loop over rows here)."""
    return decode_label_lists(offsets, codes, pa.array(np.arange(int(codes.max(initial=-1)) + 1)),
                              pa.int64()).to_pylist()


def _matrix_lists(M: np.ndarray):
    """A 0/1 matrix as ``(offsets, codes)`` of the columns set in each row."""
    offsets = np.concatenate([[0], np.cumsum(M.sum(axis=1, dtype=np.int64))])
    return offsets, np.nonzero(M)[1]


def find_multilabel_issues(labels, pred_probs, *, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = "beta",
                           noisy_threshold: float = 0.5) -> pd.DataFrame:
    """Score every row of multi-label data and flag the likely mislabeled ones.

    Parameters
    ----------
    labels : array-like of shape (n_samples, n_classes), or list of lists of int
        The given tags: a 0/1 (or bool) matrix (anything with a ``shape``), or, as in cleanlab,
        one list of class indices per row (``[[0, 2], [], [1]]``).
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold probability of each tag, e.g. one-vs-rest sigmoid outputs; rows need not sum to
        1. A ``np.memmap`` works: it is walked in row blocks.
    method : {"posterior", "noise_rate", "mixture", "both"}, default="posterior"
        Which rule sets ``is_label_issue`` (see Notes). The scores do not depend on it.
    mixture : {"beta", "gaussian"}, default="beta"
        Family of the two-component mixture fitted to the per-row losses.
    noisy_threshold : float in [0, 1), default=0.5
        ``p_noisy`` from which the ``mixture`` and ``both`` rules count a row as noisy.

    Returns
    -------
    pandas.DataFrame
        One row per input row, in order: ``given_label`` and ``predicted_label`` (lists of class
        indices; predicted = ``p > 0.5``), ``label_score`` (in [0, 1], higher = more likely
        correct: one minus the posterior that the row holds a wrong tag), ``p_noisy`` (posterior of the high-loss mixture component), ``is_label_issue``
        (bool), ``suspect_missing`` and ``suspect_spurious`` (lists of class indices likely missing
        from / wrongly present in the row's tags; empty unless the row is flagged).

    Raises
    ------
    InputError
        Shapes that disagree, labels that are not 0/1 (or class indices out of range), NaN/inf or
        probabilities outside [0, 1], an unknown method.

    Notes
    -----
    Each class ``k`` is a binary problem with probabilities ``(1 - p_k, p_k)``. Its noise rates,
    ``rho0 = P(given 1 | true 0)`` (spurious) and ``rho1 = P(given 0 | true 1)`` (missing), are
    read off anchor rows: the given tags of the 5% of rows the model is surest lack (or have) the
    tag (:func:`cleanpipe.detect.multilabel.anchor_noise_rates`). Bayes' rule under
    class-conditional noise turns each cell's ``p`` into the posterior that its given tag is wrong,
    and a row's cells combine into ``p_error = 1 - prod_k (1 - post_k)``; ``label_score =
    1 - p_error``. ``posterior`` (default) flags the ``round(sum(p_error))`` rows of highest
    ``p_error``, as many as are expected wrong; a flagged row's suspects are its cells with a flip
    posterior >= 0.5 (or its likeliest flip). ``noise_rate`` is cleanlab's one-vs-rest rule:
    confident learning per class (thresholds ``t[k, 1] = mean(p_k | tag given)``,
    ``t[k, 0] = mean(1 - p_k | tag not given)``, the calibrated confident joint), that many cells
    per class and given side whose ``p > 0.5`` disagrees with the tag, and every row holding one.
    ``p_noisy`` comes from the two-component mixture fitted to the per-row binary cross-entropy
    ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]``; ``mixture`` flags rows with
    ``p_noisy >= noisy_threshold`` holding a disagreeing cell and ``both`` requires that and the
    ``noise_rate`` rule.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.tile([[1, 0], [0, 1]], (10, 1))
    >>> pred_probs = np.tile([[.9, .1], [.1, .9]], (10, 1))
    >>> labels[0] = [0, 1]  # row 0's tags were swapped
    >>> out = find_multilabel_issues(labels, pred_probs)
    >>> np.flatnonzero(out["is_label_issue"]).tolist()
    [0]
    >>> out.loc[0, ["suspect_missing", "suspect_spurious"]].tolist()
    [[0], [1]]
    """
    Y, pred_probs = validate_multilabel(labels, pred_probs, method=method, mixture=mixture,
                                        noisy_threshold=noisy_threshold)
    det = detect_multilabel(Y, pred_probs, method=method, mixture=mixture,
                            noisy_threshold=noisy_threshold)
    return pd.DataFrame({
        "given_label": _int_lists(*_matrix_lists(Y)),
        "predicted_label": _int_lists(*_matrix_lists(det.predicted)),
        "label_score": det.label_score,
        "p_noisy": det.p_noisy,
        "is_label_issue": det.is_label_issue,
        "suspect_missing": _int_lists(*det.suspects(spurious=False)),
        "suspect_spurious": _int_lists(*det.suspects(spurious=True)),
    })


# --- tables ----------------------------------------------------------------------------------------


def _split_label(label) -> list:
    if isinstance(label, str):
        return [label]
    return list(dict.fromkeys(label))


def encode_tags(table: pa.Table, cols: list, form: str):
    """``(Y, labelled, classes)`` of the label column(s) that :func:`resolve_label_columns` found.

    ``Y`` is the 0/1 tag matrix, ``labelled`` marks rows with a (possibly empty) tag set, and the
    classes are the sorted union of the tags of a list column, or the 0/1 columns in order.
    """
    if form == "list":
        return encode_label_lists(table.column(cols[0]), cols[0])
    return encode_label_columns(table.select(cols), cols)


def resolve_label_columns(schema: pa.Schema, label, *, where: str = "DATA") -> tuple:
    """The multi-label label column(s) of ``schema`` and their form, ``"list"`` or ``"columns"``.

    ``label`` is a column name, a comma-separated list of names, or a list of names.

    Raises
    ------
    InputError
        A missing column, or a single column that is not a list of tags.
    """
    names = schema.names
    cols = _split_label(label)
    if len(cols) == 1 and cols[0] not in names and "," in cols[0]:
        cols = [c.strip() for c in cols[0].split(",") if c.strip()]
    missing = [c for c in cols if c not in names]
    if missing:
        raise InputError(f"label column '{missing[0]}' not found in {where} (columns: "
                         f"{columns_hint(names)}); pass --label with a list column or 0/1 columns")
    if not cols:
        raise InputError("no label column given; pass --label with a list column or 0/1 columns")
    if len(cols) == 1:
        t = schema.field(cols[0]).type
        if not is_list_type(t):
            raise InputError(f"label column '{cols[0]}' has type {t}, not a list of tags; for "
                             "multi-label data pass a list column, or several 0/1 columns as "
                             "--label a,b,c (or drop --multi-label)")
        return cols, "list"
    lists = [c for c in cols if is_list_type(schema.field(c).type)]
    if lists:
        raise InputError(f"label column '{lists[0]}' is a list column; pass it alone as --label "
                         f"{lists[0]}, or pass only 0/1 columns")
    return cols, "columns"


def wants_multilabel(data, label: str, multi_label: bool = False) -> bool:
    """Whether ``flag`` should take the multi-label path for ``--label label`` on ``data``.

    True with ``--multi-label``, when ``label`` names a list column, or when it names several
    columns (``a,b,c``, not itself a column). Only the schema of ``data`` is read.
    """
    if multi_label:
        return True
    names = open_dataset(data).schema
    if label in names.names:
        return is_list_type(names.field(label).type)
    return "," in label


@dataclass(frozen=True)
class MultilabelFlagColumns:
    """The per-row results of the multi-label flag stage for every row of DATA, as Arrow arrays."""

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


def _output_columns(Y, labelled, classes, value_type, predicted, det: MultilabelDetection,
                    n_rows: int) -> MultilabelFlagColumns:
    lab_rows = np.flatnonzero(labelled)
    unl = ~labelled

    def suspects(spurious):
        # Detection rows are the labelled rows; spread them over DATA (null on unlabelled rows).
        off, codes = det.suspects(spurious=spurious)
        counts = np.zeros(n_rows, dtype=np.int64)
        counts[lab_rows] = np.diff(off)
        return decode_label_lists(np.concatenate([[0], np.cumsum(counts)]), codes, classes,
                                  value_type, unl)

    score = np.full(n_rows, np.nan)
    score[labelled] = det.label_score
    p_noisy = np.full(n_rows, np.nan)
    p_noisy[labelled] = det.p_noisy
    issue = np.zeros(n_rows, dtype=bool)
    issue[labelled] = det.is_label_issue
    return MultilabelFlagColumns({
        "given_label": decode_label_lists(*_matrix_lists(Y), classes, value_type, unl),
        "predicted_label": decode_label_lists(*_matrix_lists(predicted), classes, value_type),
        "label_score": pa.array(score, mask=unl),
        "p_noisy": pa.array(p_noisy, mask=unl),
        "is_label_issue": pa.array(issue),
        "suspect_missing": suspects(False),
        "suspect_spurious": suspects(True),
    })


def _flag_multilabel(src: _Source, *, label, features, exclude, ids, model, folds, seed, n_jobs,
                     pred_probs, method, mixture, noisy_threshold, progress):
    timings = {}
    t0 = time.perf_counter()
    where = src.name
    if src.n_rows == 0:
        raise InputError(f"{where} has no rows; pass a table with labelled rows")
    if method not in MULTILABEL_METHODS:
        raise InputError(f"--method {method} is not available for multi-label data; choose one of: "
                         f"{', '.join(MULTILABEL_METHODS)}")
    _check_threshold(noisy_threshold)
    label_cols, form = resolve_label_columns(src.schema, label, where=where)
    clash = [c for c in MULTILABEL_OUTPUT_COLUMNS if c in src.column_names]
    if clash:
        raise InputError(f"{where} already has a column '{clash[0]}', which flag writes; "
                         "rename it, or pass the original table rather than earlier flag output")
    label_table = src.read(label_cols)
    Y, labelled, classes_arr = encode_tags(label_table, label_cols, form)
    del label_table
    if form == "list":
        value_type = classes_arr.type
        what = f"label column '{label_cols[0]}'"
    else:
        value_type = pa.string()
        what = f"label columns {', '.join(label_cols)}"
    classes = classes_arr.to_pylist()
    k = len(classes)
    lab_rows = np.flatnonzero(labelled)
    n_lab = len(lab_rows)
    if n_lab == 0:
        raise InputError(f"{what} is entirely null; there is nothing to check")
    if k == 0:
        raise InputError(f"{what} holds no tags (every list is empty); there is nothing to check")
    if k == 1:
        raise InputError(f"{what} holds a single tag ({classes[0]!r}); that is a binary problem: "
                         "flag a 0/1 or bool column of it without --multi-label")
    notes = []
    if pred_probs is None:
        check_folds(folds, n_lab)
        if n_jobs == 0:
            raise InputError("--n-jobs 0 is not valid; pass a positive count or -1 for every core")
        cols = select_feature_columns(src.schema, label_cols, features=features, exclude=exclude,
                                      ids=ids)
        feats = table_to_features(src.read(cols), cols)
        timings["features_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        oof = cross_val_probs_multilabel(
            feats.X[labelled], Y[labelled], model=model, folds=folds, seed=seed, n_jobs=n_jobs,
            categorical=feats.categorical, X_extra=feats.X[~labelled],
            class_names=[str(c) for c in classes],
            progress=(lambda d, t: progress("folds", d, t)) if progress else None)
        feature_names, computed = feats.names, True
        del feats
        notes.extend(oof.notes)
        probs_all = oof_all_rows(oof, labelled)
        timings["oof_s"] = time.perf_counter() - t1
    else:
        probs_all = (load_pred_probs(pred_probs, lambda c: src.read([c]).column(c), src.column_names,
                                     classes)
                     if isinstance(pred_probs, (str, os.PathLike)) else np.asarray(pred_probs))
        if len(probs_all.shape) != 2:
            raise InputError(f"--pred-probs has shape {tuple(probs_all.shape)}, {len(probs_all.shape)}-D; "
                             "pass a 2-D array with one row per row of DATA and one column per "
                             "class (for two classes: numpy.column_stack([1 - p, p]))")
        if probs_all.shape[0] != src.n_rows:
            raise InputError(f"--pred-probs has shape {tuple(probs_all.shape)} but DATA has "
                             f"{src.n_rows} rows; pass one row of probabilities per row of DATA")
        if probs_all.shape[1] != k:
            raise InputError(f"--pred-probs has {probs_all.shape[1]} columns but {what} has {k} "
                             "classes; pass one column per class, in class order")
        feature_names, computed = [], False
    t2 = time.perf_counter()
    lab_probs = probs_all if n_lab == src.n_rows else TakeRows(probs_all, lab_rows)
    _check_range(lab_probs, "--pred-probs")
    check_pred_probs(lab_probs, n_lab, require_sum_one=False, name="--pred-probs")
    det = detect_multilabel(Y[labelled], lab_probs, method=method, mixture=mixture,
                            noisy_threshold=noisy_threshold)
    timings["detect_s"] = time.perf_counter() - t2

    predicted = np.zeros((src.n_rows, k), dtype=bool)
    predicted[labelled] = det.predicted
    if n_lab < src.n_rows:
        unl = np.flatnonzero(~labelled)
        predicted[unl] = np.asarray(TakeRows(probs_all, unl)[0:len(unl)]) > 0.5
    columns = _output_columns(Y, labelled, classes_arr, value_type, predicted, det, src.n_rows)
    settings = {"label": label_cols if form == "columns" else label_cols[0], "multi_label": True,
                "label_format": form, "features": feature_names,
                "model": model_label(model),
                "folds": folds if computed else None, "seed": seed, "n_jobs": n_jobs,
                "pred_probs": os.fspath(pred_probs) if isinstance(pred_probs, (str, os.PathLike))
                else ("array" if pred_probs is not None else None),
                "method": method, "mixture": mixture, "noisy_threshold": noisy_threshold}
    timings["total_s"] = time.perf_counter() - t0
    summary = build_multilabel_summary(det, Y[labelled], classes, n_rows=src.n_rows,
                                       source=src.name, settings=settings, timings=timings,
                                       notes=notes)
    score = columns.columns["label_score"].to_numpy(zero_copy_only=False)
    top = np.argsort(np.where(labelled, score, np.inf), kind="stable")[:10]
    top = top[labelled[top]]
    id_table = src.read(list(ids)).take(pa.array(top)) if ids else None
    summary["top_suspicious"] = _top_rows(columns, top, id_table, ids)
    return columns, summary, probs_all, det


def _top_rows(columns: MultilabelFlagColumns, top: np.ndarray, id_table, ids) -> list:
    values = {name: arr.to_pylist() for name, arr in columns.arrays(rows=top).items()}
    rows = []
    for j, i in enumerate(top):  # at most 10 rows
        row = {"row": int(i)}
        for c in ids:
            row[c] = _jsonable(id_table.column(c)[j].as_py())
        for c in MULTILABEL_OUTPUT_COLUMNS:
            v = values[c][j]
            row[c] = [_jsonable(x) for x in v] if isinstance(v, list) else _jsonable(v)
        rows.append(row)
    return rows


def build_multilabel_summary(det: MultilabelDetection, labels: np.ndarray, classes: list, *,
                             n_rows: int, source=None, settings=None, timings=None,
                             notes=()) -> dict:
    """The JSON-ready summary of a multi-label detection (what ``<out>.summary.json`` holds).

    Keys shared with the single-label summary keep their meaning per row: ``estimated_noise_rate``
    is the estimated share of rows with at least one wrong tag; ``noise_rate_per_class`` the share
    of rows whose tag of that class is wrong (missing or spurious); ``rows_per_class`` the rows
    given each tag; ``flagged_per_class`` the flagged rows with a suspect tag of that class.
    """
    cl = det.confident
    names = [str(_jsonable(c)) for c in classes]
    n_rows_lab = max(len(labels), 1)
    n_lab = len(labels)
    suspect_classes = np.zeros(len(classes), dtype=np.int64)
    pairs = np.unique(det.issue_rows * len(classes) + det.issue_classes)
    np.add.at(suspect_classes, pairs % len(classes), 1)
    # The estimates come from the flip posteriors (the calibrated confident joint over-counts
    # when the model is weak; its joint stays in the summary as a diagnostic).
    missing, spurious = det.expected_wrong[:, 0], det.expected_wrong[:, 1]
    return {
        "cleanpipe_version": __version__,
        "source": None if source is None else os.fspath(source),
        "multi_label": True,
        "rows": int(n_rows),
        "labelled_rows": int(n_lab),
        "unlabelled_rows": int(n_rows - n_lab),
        "classes": [_jsonable(c) for c in classes],
        "n_classes": len(classes),
        "estimated_noise_rate": det.expected_issues / n_rows_lab,
        "estimated_issues": round(det.expected_issues),
        "estimated_wrong_tags": round(float(missing.sum() + spurious.sum())),
        "noise_rate_per_class": dict(zip(names, map(float, (missing + spurious) / n_rows_lab))),
        "missing_per_class": dict(zip(names, map(round, missing))),
        "spurious_per_class": dict(zip(names, map(round, spurious))),
        "missing_rate_per_class": dict(zip(names, map(float, np.round(det.noise_matrix[:, 0, 1], 6)))),
        "spurious_rate_per_class": dict(zip(names, map(float, np.round(det.noise_matrix[:, 1, 0], 6)))),
        "rows_per_class": dict(zip(names, map(int, cl.label_counts[:, 1]))),
        "flagged": int(det.is_label_issue.sum()),
        "flagged_per_class": dict(zip(names, map(int, suspect_classes))),
        "flagged_tags": {"missing": int((~det.issue_given).sum()),
                         "spurious": int(det.issue_given.sum())},
        "noise_matrix": np.round(det.noise_matrix, 6).tolist(),
        "noise_matrix_axes": "[class][given][true]: P(given | true) with 0 = tag absent, 1 = present",
        "class_prior": np.round(cl.prior[:, 1], 6).tolist(),
        "thresholds": np.round(cl.thresholds, 6).tolist(),
        "confident_joint": cl.confident_joint.tolist(),
        **run_fields(det, settings, timings, notes),
    }


def flag_multilabel_table(table: pa.Table, *, label="label", features=None, exclude=(), ids=(),
                          model=DEFAULT_MODEL, folds: int = 5, seed: int = 0, n_jobs: int = 1,
                          pred_probs=None, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = "beta",
                          noisy_threshold: float = 0.5, source: str | None = None,
                          progress=None) -> FlagResult:
    """Run the multi-label flag stage on an Arrow table.

    Parameters
    ----------
    table : pyarrow.Table
    label : str or list of str, default="label"
        A list-of-tags column, or several 0/1 columns (a list, or ``"a,b,c"``).
    features, exclude, ids, model, folds, seed, n_jobs, pred_probs, source, progress
        As in :func:`cleanpipe.flag_table`; ``pred_probs`` has one column per class in class
        order and its rows need not sum to 1.
    method, mixture, noisy_threshold
        Detector settings (see :func:`cleanpipe.find_multilabel_issues`).

    Returns
    -------
    FlagResult
        ``table`` gains :data:`MULTILABEL_OUTPUT_COLUMNS`: ``given_label``, ``predicted_label``,
        ``suspect_missing`` and ``suspect_spurious`` are list columns of the tags' type;
        ``detection`` is a :class:`~cleanpipe.detect.multilabel.MultilabelDetection`.
    """
    return run_on_table(
        _flag_multilabel, table, source, label=label, features=features, exclude=exclude, ids=ids,
        model=model, folds=folds, seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method,
        mixture=mixture, noisy_threshold=noisy_threshold, progress=progress)


def flag_multilabel_dataset(path, out_path, *, outputs, label="label", features=None, exclude=(),
                            ids=(), model=DEFAULT_MODEL, folds: int = 5, seed: int = 0, n_jobs: int = 1,
                            pred_probs=None, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = "beta",
                            noisy_threshold: float = 0.5, save_pred_probs=None,
                            progress=None) -> dict:
    """Run the multi-label flag stage on a Parquet file or dataset, streaming it to ``out_path``.

    Every input column is written unchanged, plus :data:`MULTILABEL_OUTPUT_COLUMNS`, into a file
    staged by ``outputs`` (an :class:`~cleanpipe.io.AtomicOutputs`); see
    :func:`cleanpipe.flag.flag_dataset`.

    Returns
    -------
    dict
        The summary (see :func:`build_multilabel_summary`).
    """
    dataset, src = open_source(path)
    columns, summary, probs, _ = _flag_multilabel(
        src, label=label, features=features, exclude=exclude, ids=ids, model=model, folds=folds,
        seed=seed, n_jobs=n_jobs, pred_probs=pred_probs, method=method, mixture=mixture,
        noisy_threshold=noisy_threshold, progress=progress)
    if not save_pred_probs:
        probs = None  # unmaps a memory-mapped --pred-probs before the output is written
    write_streamed(dataset, columns, summary, out_path, outputs, probs=probs,
                   save_pred_probs=save_pred_probs, progress=progress)
    return summary
