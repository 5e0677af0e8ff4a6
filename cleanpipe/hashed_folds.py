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
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
    u = (_mix(np.asarray(hashes, dtype=np.uint64) ^ _SAMPLE_SALT) >> np.uint64(11)) * 2.0 ** -53
    return (np.asarray(folds) != fold) & (u < rate)


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
            out[np.ix_(rows, cols)] = model.predict_proba(X[rows])
    return out
