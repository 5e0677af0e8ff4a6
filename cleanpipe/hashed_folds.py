"""Folds and training samples from a stable hash of each row's id (out-of-fold at scale, issue 21).

On one machine the folds come from a shuffled ``StratifiedKFold`` over the whole table; over
partitions that needs the table in one place. Here a row's fold is a pure function of its id (or
of its position in a stable ordering, :func:`position_ids`) and the seed, so every partition knows
its rows' folds without a shuffle, and a row keeps its fold whatever the partitioning, the order
of the partitions or the number of workers.

The hash is uniform, so each class spreads over the folds in proportion: with ``n_c`` rows of a
class, each fold gets ``n_c / F`` of them within a few ``sqrt(n_c / F)`` (stratified in
expectation; exact stratification would need a global sort per class).

Each fold model trains on a bounded sample of the other folds' rows: a second, independent
uniform number per row, ``u``, keeps a row for model ``f`` when ``fold != f`` and ``u < rate``,
``rate = max_rows / rows outside f`` (:func:`sample_rate`). A Bernoulli sample at one rate is
proportional to the classes (stratified in expectation) and is drawn by every partition on its
own. The default size, :data:`cleanpipe.settings.SCALE_SAMPLE_ROWS` rows per fold model, is
not yet set by a learning-curve measurement (see ``benchmarks/RESULTS.md``). Every partition is
then predicted by the models that did not see its rows (:func:`predict_out_of_fold`).

Partition by partition: :func:`sample_partial` keeps one partition's rows of the sample (one rate
for every fold model, :func:`training_rate`), :func:`merge_samples` merges two such partials
(associative; the rows sorted by hash, so any partitioning merges to the same sample), and
:func:`fit_fold_models` (or :func:`fit_fold_model`, one fold per task) fits the fold models on
the merged sample with the model construction of :mod:`cleanpipe.oof`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .settings import DEFAULT_MODEL

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
#: Mixed into the hash for the sample's uniform number, so it is independent of the fold.
_SAMPLE_SALT = np.uint64(0x5DEECE66D)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs look uniform."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def _string_hashes(arr: pa.Array) -> np.ndarray:
    """FNV-1a of each string's UTF-8 bytes, vectorised over byte positions (nulls hash as '')."""
    arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
    arr = pa.concat_arrays([arr]) if isinstance(arr, pa.ChunkedArray) else arr
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    valid = np.asarray(arr.is_valid())
    lengths = np.where(valid, lengths, 0)
    h = np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):
            rows = np.flatnonzero(lengths > j)
            h[rows] ^= data[offsets[rows] + j].astype(np.uint64)
            h[rows] *= _FNV_PRIME
    return h


def id_hashes(ids, *, seed: int = 0) -> np.ndarray:
    """A stable 64-bit hash of each id, the same on every machine and in every partition.

    Parameters
    ----------
    ids : array-like of shape (n,)
        Integer ids (numpy or Arrow), or strings / bytes (numpy object or str arrays, Arrow
        string or binary arrays).
    seed : int, default=0
        Another seed draws other folds for the same ids.

    Returns
    -------
    ndarray of shape (n,), uint64

    Examples
    --------
    >>> id_hashes(np.array([0, 1, 2]))[:2].tolist() == id_hashes(np.array([0, 1]))[:2].tolist()
    True
    """
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_integer(ids.type):
            base = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64).view(np.uint64)
        else:
            base = _string_hashes(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
    else:
        arr = np.asarray(ids)
        if arr.dtype.kind in "iu":
            base = arr.astype(np.int64).view(np.uint64)
        else:
            base = _string_hashes(pa.array(arr.astype(object).tolist()))
    with np.errstate(over="ignore"):
        return _mix(base + _mix(np.uint64(seed) * _GOLDEN + _GOLDEN))


def position_ids(partition: int, start: int, n: int) -> np.ndarray:
    """Ids of rows by their position in a stable ordering: ``partition << 40 | row``.

    For tables without an id column whose partitions keep their order and contents (the
    files of a written dataset, in name order): row ``start + i`` of partition ``partition``.
    """
    return (np.int64(partition) << np.int64(40)) | (np.arange(n, dtype=np.int64) + start)


def table_hashes(table: pa.Table, *, id_column: str | None, partition: int, start: int = 0,
                 seed: int = 0, where: str = "the table") -> np.ndarray:
    """The stable hashes of one partition's rows: of ``id_column``, else of their positions.

    The one place both engines (:mod:`cleanpipe.partitioned_oof`, :mod:`cleanpipe.spark_oof`)
    take a partition's hashes from, so a null id is refused alike on each.

    Parameters
    ----------
    table : pyarrow.Table
        The partition's rows (or a batch of them, starting at row ``start``).
    id_column : str or None
        The id column; None: each row's position, :func:`position_ids` ``(partition, start, n)``.
    partition : int
    start : int, default=0
    seed : int, default=0
    where : str, default="the table"
        Names the partition in an error.

    Raises
    ------
    InputError
        The id column holds a null: every null would hash alike and land in one fold, and
        hashing them by position instead would make their folds depend on the partitioning.
    """
    if id_column is None:
        return id_hashes(position_ids(partition, start, table.num_rows), seed=seed)
    ids = table.column(id_column)
    if ids.null_count:
        from .errors import InputError
        raise InputError(f"id column '{id_column}' has {ids.null_count} null value(s) in {where}; "
                         "a row's fold is a hash of its id, so every row needs one: fill the "
                         "nulls, or leave the id out (no --id / id_column=) to take folds from "
                         "row positions")
    return id_hashes(ids, seed=seed)


def fold_counts(hashes: np.ndarray, labelled: np.ndarray, n_folds: int) -> np.ndarray:
    """Labelled rows per fold of one partition (a partial: partitions' counts add up).

    Examples
    --------
    >>> int(fold_counts(id_hashes(np.arange(10)), np.ones(10, bool), 3).sum())
    10
    """
    folds = hashed_folds(hashes, n_folds)[np.asarray(labelled, dtype=bool)]
    return np.bincount(folds, minlength=n_folds).astype(np.int64)


def check_fold_counts(counts, n_folds: int) -> None:
    """Refuse, before any sample or fit, labelled rows that cannot fill ``n_folds`` folds.

    Parameters
    ----------
    counts : array-like of shape (n_folds,)
        Labelled rows per fold, summed over the partitions (:func:`fold_counts`).
    n_folds : int

    Raises
    ------
    InputError
        A fold without a labelled row, or fewer than two labelled rows per fold in all: some
        fold model would have nothing to train on, or nothing to predict. Per class there is no
        such floor: a fold model whose sample lacks a class gives it probability 0, as on one
        machine.

    Examples
    --------
    >>> check_fold_counts([3, 4, 2], 3)
    >>> check_fold_counts([3, 0, 2], 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cleanpipe.errors.InputError: 5 labelled rows cannot fill 3 folds (rows per fold: [3, 0, 2]); ...
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(n_folds)
    if (counts == 0).any() or counts.sum() < 2 * n_folds:
        from .errors import InputError
        raise InputError(f"{int(counts.sum())} labelled rows cannot fill {n_folds} folds (rows per "
                         f"fold: {counts.tolist()}); pass fewer folds or more rows")


def hashed_folds(hashes: np.ndarray, n_folds: int) -> np.ndarray:
    """Each row's fold in ``[0, n_folds)`` from its hash (multiply-shift: no modulo bias).

    Examples
    --------
    >>> f = hashed_folds(id_hashes(np.arange(100_000)), 5)
    >>> bool(np.all(np.abs(np.bincount(f) - 20_000) < 1_000))
    True
    """
    hi = (np.asarray(hashes, dtype=np.uint64) >> np.uint64(32)).astype(np.uint64)
    with np.errstate(over="ignore"):
        return ((hi * np.uint64(n_folds)) >> np.uint64(32)).astype(np.int16)


def sample_rate(rows_outside: int, max_rows: int) -> float:
    """The Bernoulli rate that keeps about ``max_rows`` of a fold model's ``rows_outside`` rows."""
    return 1.0 if rows_outside <= max_rows else max_rows / rows_outside


def in_training_sample(hashes: np.ndarray, folds: np.ndarray, fold: int, rate: float) -> np.ndarray:
    """Rows fold model ``fold`` trains on: outside ``fold`` and kept at ``rate``.

    The kept rows are the same in any partitioning (a pure function of each row's hash), and a
    row is never in its own fold's sample, so the model that predicts it has not seen it.
    """
    return (np.asarray(folds) != fold) & (_uniform(hashes) < rate)


#: Rows are predicted in blocks of a multiple of this many (the last one padded with copies of
#: its last row): a BLAS or torch kernel may round a batch's trailing rows differently from
#: full blocks, so without it a row's probabilities could move in the last bit with the number
#: of rows predicted beside it, that is with the partitioning.
BLOCK_ROWS = 64


def blocked(predict, A, *rest):
    """``predict(A, *rest)`` with the rows padded to a multiple of :data:`BLOCK_ROWS`."""
    n = len(A)
    pad = -n % BLOCK_ROWS
    if n == 0 or pad == 0:
        return predict(A, *rest)
    grown = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in (A, *rest)]
    return predict(*grown)[:n]


def predict_out_of_fold(models, X: np.ndarray, folds: np.ndarray, n_classes: int) -> np.ndarray:
    """One partition's out-of-fold probabilities: row ``n`` from ``models[folds[n]]``.

    ``models[f]`` was fitted on :func:`in_training_sample` of fold ``f`` and so never saw a row of
    fold ``f``. Its ``classes_`` (the class codes it saw) map its columns into ``n_classes``.
    """
    out = np.zeros((len(X), n_classes), dtype=np.float64)
    for f, model in enumerate(models):
        rows = np.flatnonzero(folds == f)
        if rows.size:
            cols = np.asarray(getattr(model, "classes_", np.arange(n_classes)), dtype=np.int64)
            out[np.ix_(rows, cols)] = blocked(model.predict_proba, X[rows])
    return out


# ---------------------------------------------------------------- the training sample, partition-wise


def _uniform(hashes: np.ndarray) -> np.ndarray:
    """Each row's sample number in [0, 1), independent of its fold (53 bits of a second hash)."""
    return (_mix(np.asarray(hashes, dtype=np.uint64) ^ _SAMPLE_SALT) >> np.uint64(11)) * 2.0 ** -53


def training_rate(n_rows: int, n_folds: int, max_rows: int) -> float:
    """One Bernoulli rate for every fold model: about ``max_rows`` training rows each.

    A fold model trains on the other ``n_folds - 1`` folds, ``n_rows (n_folds - 1) / n_folds``
    rows in expectation (the hash spreads rows evenly over the folds); the rate keeps
    ``max_rows`` of them. The union of the fold models' samples is then about
    ``max_rows n_folds / (n_folds - 1)`` rows: what the driver's partials add up to.
    """
    outside = -(-int(n_rows) * (n_folds - 1) // n_folds)  # ceil
    return sample_rate(outside, max_rows)


@dataclass(frozen=True)
class TrainingSample:
    """The rows some fold model trains on, with their labels and folds (a mergeable partial).

    Rows are sorted by hash (ties keep their order), so the merge of any partitioning of a table
    holds the same rows in the same order, and fold models fitted on it are the same.

    Attributes
    ----------
    X : ndarray of shape (m, n_features), float32
    y : ndarray of shape (m,), int64, or (m, K), int8
        Class codes ``0..K-1``; or, for a multi-label label, the rows' 0/1 tags.
    folds : ndarray of shape (m,), int16
    hashes : ndarray of shape (m,), uint64
    """

    X: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _sorted_sample(X, y, folds, hashes) -> TrainingSample:
    order = np.argsort(hashes, kind="stable")
    return TrainingSample(np.ascontiguousarray(X[order], dtype=np.float32),
                          y[order].astype(np.int64 if y.ndim == 1 else np.int8),
                          folds[order].astype(np.int16),
                          hashes[order].astype(np.uint64))


def sample_partial(X: np.ndarray, y: np.ndarray, hashes: np.ndarray, *, n_folds: int,
                   rate: float, labelled=None) -> TrainingSample:
    """One partition's share of the training sample: its labelled rows some fold model keeps.

    A row is kept when ``y >= 0`` (labelled) and its sample number is below ``rate``; fold
    model ``f`` then trains on the kept rows outside fold ``f``, exactly the rows
    :func:`in_training_sample` ``(hashes, folds, f, rate)`` selects. The partial holds about
    ``rate`` times the partition's rows: bounded by the sample, not by the table.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,) or (n, K)
        Class codes, ``-1`` for a row without a label; or the rows' 0/1 tags (multi-label).
    hashes : ndarray of shape (n,), uint64
        :func:`id_hashes` of the rows' ids.
    n_folds : int
    rate : float
        :func:`training_rate` of the whole table.
    labelled : ndarray of bool of shape (n,), optional
        The rows with a label; default ``y >= 0`` (one class per row). Multi-label rows without
        tags pass it.

    Examples
    --------
    >>> h = id_hashes(np.arange(6))
    >>> s = sample_partial(np.zeros((6, 1)), np.array([0, 1, 0, 1, -1, 0]), h, n_folds=3, rate=1.0)
    >>> len(s)
    5
    """
    y = np.asarray(y)
    hashes = np.asarray(hashes, dtype=np.uint64)
    labelled = y >= 0 if labelled is None else np.asarray(labelled, dtype=bool)
    keep = np.flatnonzero(labelled & (_uniform(hashes) < rate))
    h = hashes[keep]
    return _sorted_sample(np.asarray(X)[keep], y[keep], hashed_folds(h, n_folds), h)


def merge_samples(a: TrainingSample, b: TrainingSample) -> TrainingSample:
    """Two partials' rows together, sorted by hash: associative, and the same for any grouping."""
    return _sorted_sample(np.concatenate([a.X, b.X]), np.concatenate([a.y, b.y]),
                          np.concatenate([a.folds, b.folds]), np.concatenate([a.hashes, b.hashes]))


# ---------------------------------------------------------------- the fold models


class FoldModel:
    """Fold ``fold``'s fitted model: the mean of its families' probabilities over ``n_classes``.

    ``classes_`` is every class code, so :func:`predict_out_of_fold` maps its columns directly; a
    class that the fold's sample lacks gets probability 0 from that family, as in
    :func:`cleanpipe.oof.cross_val_probs`.
    """

    def __init__(self, fold: int, n_classes: int, estimators: tuple):
        self.fold = fold
        self.n_classes = n_classes
        self.estimators = tuple(estimators)
        self.classes_ = np.arange(n_classes)

    def predict_proba(self, X) -> np.ndarray:
        P = np.zeros((len(X), self.n_classes), dtype=np.float32)
        if not len(X):
            return P
        for est in self.estimators:
            cols = np.asarray(est.classes_, dtype=np.int64)
            P[:, cols] += np.asarray(est.predict_proba(X), dtype=np.float32)
        if len(self.estimators) > 1:
            P /= len(self.estimators)
        sums = P.sum(axis=1, keepdims=True, dtype=np.float64)
        np.divide(P, np.where(sums > 0, sums, 1.0).astype(P.dtype), out=P)
        return P


class _OneClass:
    """What a fold model whose training rows hold one class can say: that class."""

    def __init__(self, cls: int):
        self.classes_ = np.array([cls])

    def predict_proba(self, X):
        return np.ones((len(X), 1), dtype=np.float32)


def _estimators(model, categorical, seed: int) -> list:
    from .oof import _with_threads, make_model, model_list  # the model construction of oof.py
    from .boosters import resolve_models
    return [_with_threads(make_model(m, categorical=categorical, seed=seed), 1)
            for m in resolve_models(model_list(model))]


def _fit(ests, X, y, folds, fold: int, n_classes: int) -> FoldModel:
    from sklearn.base import clone

    from .errors import InputError
    train = np.flatnonzero(np.asarray(folds) != fold)
    present = np.unique(y[train])
    if present.size == 0:
        raise InputError(f"fold {fold}'s training sample is empty ({len(y)} sample rows); pass "
                         "fewer folds or a larger training sample")
    if present.size == 1:
        return FoldModel(fold, n_classes, (_OneClass(int(present[0])),))
    fitted = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for est in ests:
            est = clone(est)
            try:
                if hasattr(est, "fit_rows"):  # bins the whole sample once, trains on `train`
                    est.fit_rows(X, y, train)
                else:
                    est.fit(X[train], y[train])
            except ValueError as exc:
                raise InputError(f"the model could not be fitted on fold {fold} "
                                 f"({str(exc).splitlines()[0]}); check the feature columns or "
                                 "try --model hgb") from None
            fitted.append(est)
    return FoldModel(fold, n_classes, tuple(fitted))


def fit_fold_model(X: np.ndarray, y: np.ndarray, folds: np.ndarray, fold: int, *, n_classes: int,
                   model=DEFAULT_MODEL, seed: int = 0, categorical=None) -> FoldModel:
    """Fold ``fold``'s model alone (one task on a cluster); see :func:`fit_fold_models`."""
    X = np.asarray(X, dtype=np.float32)
    return _fit(_estimators(model, categorical, seed), X, np.asarray(y, dtype=np.int64), folds,
                fold, n_classes)


def fit_fold_models(X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, n_folds: int,
                    n_classes: int, model=DEFAULT_MODEL, seed: int = 0, categorical=None) -> list:
    """The ``n_folds`` fold models of a training sample: model ``k`` fitted on its rows outside fold ``k``.

    Parameters
    ----------
    X : ndarray of shape (m, n_features)
        The training sample's features (:class:`TrainingSample`'s ``X``).
    y : ndarray of shape (m,)
        Class codes ``0..n_classes-1``.
    folds : ndarray of shape (m,)
        Each sample row's fold (:func:`hashed_folds`).
    n_folds : int
    n_classes : int
    model : str, estimator, or list of them, default=DEFAULT_MODEL
        As in :func:`cleanpipe.oof.make_model` (``"gbm,logreg"``: both families, averaged).
    seed : int, default=0
        The models' ``random_state``.
    categorical : ndarray of bool, optional
        Columns of ``X`` holding category codes.

    Returns
    -------
    list of FoldModel
        ``n_folds`` models; ``models[k]`` never saw a row of fold ``k``, so
        :func:`predict_out_of_fold` gives every row the probabilities of a model that did not
        see it.

    Raises
    ------
    InputError
        A fold whose training rows are empty, or a model that cannot be fitted.

    Notes
    -----
    Built as :func:`cleanpipe.oof.cross_val_probs` builds its fold models (``make_model`` per
    family, the families' probabilities averaged, a fold left with one class predicts it). The
    boosters and the logistic design are binned on the whole sample, as there on the whole
    table. Fitting fold ``k`` alone (:func:`fit_fold_model`) gives the same model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2)); y = (X[:, 0] > 0).astype(int)
    >>> folds = hashed_folds(id_hashes(np.arange(300)), 3)
    >>> models = fit_fold_models(X, y, folds, n_folds=3, n_classes=2, model="logreg")
    >>> predict_out_of_fold(models, X, folds, 2).shape
    (300, 2)
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    ests = _estimators(model, categorical, seed)
    return [_fit(ests, X, y, folds, k, n_classes) for k in range(n_folds)]
