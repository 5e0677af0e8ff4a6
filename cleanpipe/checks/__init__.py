"""Data checks beyond wrong labels: duplicates, label conflicts, outliers, a kNN label signal,
table-level findings and leakage against a second table, in one pass over one neighbour index.

:func:`run_checks` validates its inputs once, builds one :class:`~cleanpipe.neighbors.NeighborIndex`
over the standardised features and hands its neighbours to each check (pure functions over arrays,
one module each). Its :class:`CheckResult` holds one column per finding (length ``n`` each, ready
to become table columns) and a JSON-able summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..neighbors import NeighborIndex
from ..settings import DEFAULT_SEED, CheckSettings, check_seed
from .duplicates import (default_radius, exact_duplicate_sets, label_conflicts, near_duplicate_sets,
                         row_hashes)
from .encode import Scaler, feature_matrices
from .knn_labels import knn_assisted_issues, knn_label_probs, knn_label_score
from .leakage import cross_matches, leak_columns
from .outliers import knn_distance_score, outlier_threshold, probs_ood_score
from .table_checks import class_balance, table_findings

__all__ = ["CheckResult", "CheckSettings", "run_checks", "check_table", "feature_matrix",
           "feature_matrices"]


@dataclass
class CheckResult:
    """What :func:`run_checks` found.

    Attributes
    ----------
    columns : dict of str -> ndarray
        One array of length ``n_samples`` per finding:

        - ``duplicate_set`` (int64): near-duplicate set of the row (exact duplicates included),
          numbered in the order of each set's first row; -1 for none.
        - ``exact_duplicate_set`` (int64): group of rows with equal feature values; -1 for none.
        - ``is_exact_duplicate``, ``is_near_duplicate`` (bool): in such a group / set.
        - ``label_conflict`` (bool): a labelled row whose set holds another label;
          ``duplicate_label_agreement`` (float, NaN when no labelled duplicate): share of the set's
          other labelled rows with the row's label (evidence for the label detector).
        - ``outlier_score`` (float): mean distance to the ``k`` nearest rows over its median in the
          table (1 is typical, higher is more isolated); ``is_outlier`` (bool): above the
          calibrated threshold.
        - ``probs_ood_score`` (float, with ``pred_probs``): normalised entropy of the row's
          out-of-fold probabilities (1: the model cannot place it in any class).
        - ``knn_label_score`` (float, with labels; NaN when unlabelled): the neighbours' smoothed
          share of the row's label; low is suspect.
        - ``knn_is_label_issue`` (bool), ``knn_label_quality`` (float) (opt-in, with labels,
          ``pred_probs`` and ``settings.knn_weight > 0``): the default label rule on the
          out-of-fold probabilities mixed with the neighbours' label shares.
        - ``null_fraction`` (float), ``is_null_heavy`` (bool) (with ``table``).
        - ``leaks_into_against`` (bool), ``against_row`` (int64, -1 for none),
          ``against_distance`` (float) (with ``against``).
    against_columns : dict of str -> ndarray
        With ``against``: ``leaks_into_main``, ``main_row``, ``main_distance`` per row of it.
    summary : dict
        JSON-able: counts per check, thresholds used, table-level findings, timings.
    """

    columns: dict = field(default_factory=dict)
    against_columns: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def feature_matrix(table: pa.Table, columns) -> np.ndarray:
    """``columns`` of ``table`` encoded as ``flag`` encodes them (float32, NaN where missing): the
    ``X`` of :func:`run_checks`. For a second table use :func:`feature_matrices`, which gives a
    category the same code in both."""
    return feature_matrices(table, columns)[0]


def _matrix(X, what: str) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a numeric matrix; encode the table with "
                         "cleanpipe.checks.feature_matrix first") from None
    if X.ndim != 2 or X.shape[1] == 0:
        raise InputError(f"{what} must be 2-D (rows x features) with at least one feature column; "
                         f"got shape {X.shape}")
    if np.isinf(X).any():
        raise InputError(f"{what} holds +/-inf; replace it with NaN (missing) or a finite value")
    return X


def _check_inputs(X, labels, pred_probs, table, against, settings, seed):
    X = _matrix(X, "the feature matrix")
    n = X.shape[0]
    if n == 0:
        raise InputError("the table has no rows; there is nothing to check")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be {n} integer class codes (-1 for unlabelled); got "
                             f"shape {labels.shape}, dtype {labels.dtype}")
        if labels.size and labels.min() < -1:
            raise InputError(f"labels hold {int(labels.min())}; class codes are >= 0, -1 for unlabelled")
        labels = labels.astype(np.int64)
    if pred_probs is not None:
        pred_probs = np.asarray(pred_probs, dtype=np.float64)
        if pred_probs.ndim != 2 or pred_probs.shape[0] != n:
            raise InputError(f"pred_probs must have shape ({n}, n_classes); got {pred_probs.shape}")
        if not np.isfinite(pred_probs).all() or pred_probs.min() < 0 or pred_probs.max() > 1:
            raise InputError("pred_probs must hold probabilities in [0, 1] (no NaN)")
        if labels is not None and labels.max(initial=-1) >= pred_probs.shape[1]:
            raise InputError(f"labels hold class {int(labels.max())} but pred_probs has "
                             f"{pred_probs.shape[1]} columns; pass one column per class")
    if table is not None and table.num_rows != n:
        raise InputError(f"the table has {table.num_rows} rows but the feature matrix {n}; pass "
                         "the table the features were encoded from")
    if against is not None:
        against = _matrix(against, "the second table's feature matrix")
        if against.shape[1] != X.shape[1]:
            raise InputError(f"the second table has {against.shape[1]} feature columns after "
                             f"encoding, the first {X.shape[1]}; both need the same feature columns")
    settings = (CheckSettings() if settings is None else settings).check()
    check_seed(seed, option="seed")
    return X, labels, pred_probs, against, settings


def run_checks(X, labels=None, *, pred_probs=None, table=None, columns=None, against=None,
               settings: CheckSettings | None = None, seed: int = DEFAULT_SEED) -> CheckResult:
    """Run every data check on one table, over one shared neighbour index.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features as ``flag`` encodes them (:func:`feature_matrix`); NaN where missing. They are
        standardised here (missing values at the mean) before distances are measured.
    labels : array-like of shape (n_samples,), int, optional
        Class codes, -1 for unlabelled. Without them the label checks are skipped.
    pred_probs : array-like of shape (n_samples, n_classes), optional
        Out-of-fold probabilities; adds ``probs_ood_score``.
    table : pyarrow.Table, optional
        The raw rows ``X`` was encoded from: null-heavy rows and columns, constant and
        identifier-like columns.
    columns : list of str, optional
        The feature columns of ``table`` (default: all of them).
    against : array-like of shape (n_other, n_features), optional
        A second table in the same encoding (:func:`feature_matrices`): leakage both ways.
    settings : CheckSettings, optional
    seed : int, default=0
        Seed of the approximate index.

    Returns
    -------
    CheckResult

    Raises
    ------
    InputError
        Shapes that do not match, inf in a matrix, bad label codes or probabilities, an
        out-of-range setting.

    Examples
    --------
    >>> X = np.array([[0., 0.], [0., 0.], [1., 0.], [0., 1.], [9., 9.]])
    >>> r = run_checks(X, np.array([0, 1, 0, 1, 0]), settings=CheckSettings(k=2))
    >>> r.columns["is_exact_duplicate"].tolist(), r.columns["label_conflict"].tolist()
    ([True, True, False, False, False], [True, True, False, False, False])
    """
    X, labels, pred_probs, against, cfg = _check_inputs(X, labels, pred_probs, table, against,
                                                        settings, seed)
    cols, against_cols, times = {}, {}, {}
    summary = {"settings": cfg.to_dict(), "rows": X.shape[0]}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        times[f"{name}_s"] = time.perf_counter() - t
        return out

    run = timed("neighbors", _Shared.build, X, cfg, seed)
    summary["neighbors"] = run.neighbor_summary()
    summary["duplicates"] = timed("duplicates", _duplicates, run, cfg, cols)
    summary["outliers"] = timed("outliers", _outliers, run, cfg, pred_probs, cols)
    if labels is not None:
        summary.update(timed("labels", _label_checks, run, cfg, labels, pred_probs, cols))
    if table is not None:
        names = list(table.schema.names) if columns is None else list(columns)
        summary["table"] = timed("table", _table_checks, table, names, cfg, cols)
    if against is not None:
        summary["leakage"] = timed("leakage", _leakage, run, cfg, against, seed, cols,
                                   against_cols)
    summary["timings"] = times
    return CheckResult(cols, against_cols, summary)


@dataclass
class _Shared:
    """What every check reads: the matrix, its row hashes and exact groups, the standardised
    matrix and its one neighbour index, each row's neighbours."""

    X: np.ndarray
    hashes: np.ndarray
    exact: np.ndarray
    scaler: Scaler
    Z: np.ndarray
    index: NeighborIndex | None
    dist: np.ndarray
    idx: np.ndarray
    radius: float = 0.0

    @classmethod
    def build(cls, X, cfg: CheckSettings, seed: int) -> "_Shared":
        n = X.shape[0]
        hashes = row_hashes(X)
        scaler = Scaler.fit(X)
        Z = scaler.transform(X, clip=cfg.clip)
        k = min(cfg.k, n - 1)
        if k >= 1:
            index = NeighborIndex.build(Z, method=cfg.neighbors, seed=seed)
            dist, idx = index.kneighbors(k)
        else:  # one row: nobody to compare with
            index, dist, idx = None, np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        return cls(X, hashes, exact_duplicate_sets(X, hashes), scaler, Z, index, dist, idx)

    @property
    def k(self) -> int:
        return self.dist.shape[1]

    def neighbor_summary(self) -> dict:
        if self.index is None:
            return {"method": "none", "k": 0, "note": "a single row"}
        return {"method": self.index.method, "k": self.k, "note": self.index.note}


def _duplicates(run: _Shared, cfg: CheckSettings, cols: dict) -> dict:
    exact = run.exact
    run.radius = (cfg.near_radius if cfg.near_radius is not None
                  else default_radius(run.dist, cfg.near_fraction) if run.k else 0.0)
    near = near_duplicate_sets(run.dist, run.idx, run.radius, exact)
    cols.update(duplicate_set=near, exact_duplicate_set=exact, is_exact_duplicate=exact >= 0,
                is_near_duplicate=near >= 0)
    return {
        "radius": run.radius,
        "radius_calibrated": cfg.near_radius is None,
        "exact_rows": int((exact >= 0).sum()), "exact_sets": int(exact.max() + 1),
        "near_rows": int((near >= 0).sum()), "near_sets": int(near.max() + 1),
        # copies beyond the first of each set: what dropping duplicates would remove
        "exact_extra_rows": int((exact >= 0).sum() - (exact.max() + 1)),
        "near_extra_rows": int((near >= 0).sum() - (near.max() + 1)),
    }


def _outliers(run: _Shared, cfg: CheckSettings, pred_probs, cols: dict) -> dict:
    score = knn_distance_score(run.dist) if run.k else np.full(len(run.X), np.nan)
    threshold = outlier_threshold(score, cfg.outlier_z)
    finite = score[np.isfinite(score) & (score > 0)]
    typical = float(np.median(finite)) if finite.size else 1.0
    cols["outlier_score"] = score / typical
    cols["is_outlier"] = np.nan_to_num(score, nan=0.0) > threshold
    out = {"rows": int(cols["is_outlier"].sum()), "z": cfg.outlier_z,
           "threshold": threshold / typical if np.isfinite(threshold) else None}
    if pred_probs is not None:
        cols["probs_ood_score"] = probs_ood_score(pred_probs)
        out["probs_ood_median"] = float(np.median(cols["probs_ood_score"]))
    return out


def _label_checks(run: _Shared, cfg: CheckSettings, labels, pred_probs, cols: dict) -> dict:
    n_classes = max(int(labels.max(initial=-1)) + 1,
                    pred_probs.shape[1] if pred_probs is not None else 0)
    conflict, agreement = label_conflicts(cols["duplicate_set"], labels)
    cols.update(label_conflict=conflict, duplicate_label_agreement=agreement)
    out = {"label_conflicts": {"rows": int(conflict.sum()),
                               "sets": int(np.unique(cols["duplicate_set"][conflict]).size)},
           "class_balance": class_balance(labels, n_classes, cfg.imbalance)}
    if run.k and n_classes:
        probs = knn_label_probs(run.idx, labels, n_classes)
        cols["knn_label_score"] = knn_label_score(probs, labels)
        outvoted = (labels >= 0) & (probs.argmax(axis=1) != labels)
        out["knn_labels"] = {"rows_outvoted": int(outvoted.sum()), "k": run.k}
        if pred_probs is not None and cfg.knn_weight > 0:
            issue, quality = knn_assisted_issues(labels, pred_probs, probs, cfg.knn_weight)
            cols.update(knn_is_label_issue=issue, knn_label_quality=quality)
            out["knn_labels"].update(weight=cfg.knn_weight, label_issues=int(issue.sum()))
    return out


def _table_checks(table: pa.Table, names: list, cfg: CheckSettings, cols: dict) -> dict:
    per_row, findings = table_findings(table, names, cfg.null_heavy)
    cols.update(null_fraction=per_row, is_null_heavy=per_row > cfg.null_heavy)
    findings["null_heavy_rows"] = int(cols["is_null_heavy"].sum())
    return findings


def _leakage(run: _Shared, cfg: CheckSettings, against, seed: int, cols: dict,
             against_cols: dict) -> dict:
    """Rows of each table within the near-duplicate radius of (or equal to) a row of the other:
    the second table is searched in the run's index, and indexed itself for the way back."""
    Za = run.scaler.transform(against, clip=cfg.clip)
    hashes_a = row_hashes(against)
    index = run.index if run.index is not None else NeighborIndex.build(run.Z, method="exact")
    main = leak_columns(*index.query(Za, 1),
                        cross_matches(hashes_a, against, run.hashes, run.X), run.radius)
    other_index = NeighborIndex.build(Za, method=cfg.neighbors, seed=seed)
    back = leak_columns(*other_index.query(run.Z, 1),
                        cross_matches(run.hashes, run.X, hashes_a, against), run.radius)
    cols.update(leaks_into_against=back["leak_near"], against_row=back["leak_row"],
                against_distance=back["leak_distance"])
    against_cols.update(leaks_into_main=main["leak_near"], main_row=main["leak_row"],
                        main_distance=main["leak_distance"])
    return {"rows": int(back["leak_near"].sum()), "exact_rows": int(back["leak_exact"].sum()),
            "against_rows": int(main["leak_near"].sum()),
            "against_exact_rows": int(main["leak_exact"].sum()), "radius": run.radius}


def check_table(table: pa.Table, *, label: str | None = None, features=None, exclude=(), ids=(),
                against: pa.Table | None = None, pred_probs=None,
                settings: CheckSettings | None = None, seed: int = DEFAULT_SEED) -> CheckResult:
    """:func:`run_checks` on an Arrow table: pick the feature columns as ``flag`` does, encode
    them (with ``against``, in the same codes), encode a single-label ``label`` column.

    Parameters
    ----------
    table : pyarrow.Table
    label : str, optional
        The class column; without it the label checks are skipped. A list (multi-label) column
        is not a class: pass none.
    features, exclude, ids : sequence of str
        As for ``flag``: the feature columns are ``features``, else every column but the label,
        ``ids`` and ``exclude``.
    against : pyarrow.Table, optional
        A second table holding the same feature columns (leakage).
    pred_probs, settings, seed
        As for :func:`run_checks`.

    Raises
    ------
    InputError
        A column not found, no feature column left, ``against`` without a feature column.
    """
    from ..features import encode_labels, select_feature_columns

    cols = select_feature_columns(table.schema, [] if label is None else label, features=features,
                                  exclude=tuple(exclude), ids=tuple(ids))
    if label is not None and label not in table.schema.names:
        raise InputError(f"label column '{label}' not found (columns: "
                         f"{', '.join(table.schema.names[:12])}); pass --label with one of them")
    X, Xa = feature_matrices(table, cols, against)
    labels = None if label is None else encode_labels(table.column(label), label)[0]
    return run_checks(X, labels, pred_probs=pred_probs, table=table, columns=cols, against=Xa,
                      settings=settings, seed=seed)
