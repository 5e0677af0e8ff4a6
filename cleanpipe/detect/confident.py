"""Confident learning: per-class thresholds, the confident joint, noise estimates and pruning.

Conventions: ``labels`` holds the *given* class of each row, ``pred_probs[n, k]`` the out-of-fold
probability that row ``n`` belongs to class ``k``. Joint matrices are indexed ``[given, true]``;
the noise matrix is ``P(given | true)`` indexed ``[given, true]`` (each column sums to 1).

Everything here walks ``pred_probs`` in row blocks (:func:`iter_blocks`), so the same code serves an
in-memory array and a memory-mapped one larger than RAM: one pass for the thresholds, one pass for
everything else, and every temporary is a block or a length-N vector.

References
----------
Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import DEFAULT_BLOCK_ROWS, map_blocks

#: Tolerance below a threshold that still counts as "confident" (float32 round-off).
_THRESHOLD_SLACK = 1e-6


@dataclass(frozen=True)
class ConfidentLearning:
    """Everything confident learning estimates from one ``(labels, pred_probs)`` pair.

    Attributes
    ----------
    thresholds : ndarray of shape (n_classes,)
        ``t_j``: mean of ``p_j`` over rows labelled ``j``.
    confident_joint : ndarray of shape (n_classes, n_classes), int
        ``C[i, j]``: rows labelled ``i`` whose most probable class above its threshold is ``j``.
    calibrated_joint : ndarray of shape (n_classes, n_classes), int
        ``C`` rescaled so row ``i`` sums to the count of label ``i`` (integers, row totals kept).
    joint : ndarray of shape (n_classes, n_classes)
        Estimated ``P(given=i, true=j)``.
    prior : ndarray of shape (n_classes,)
        Estimated ``P(true=j)``.
    noise_matrix : ndarray of shape (n_classes, n_classes)
        Estimated ``P(given=i | true=j)``; columns sum to 1.
    label_counts : ndarray of shape (n_classes,), int
    p_given : ndarray of shape (n_samples,)
        ``p_{given}`` per row.
    predicted : ndarray of shape (n_samples,), int
        Arg-max class per row.
    pair_rows, pair_true, pair_margin : ndarray
        Pruning candidates: the rows whose arg-max ``j`` is not their given label, ``j``, and the
        margin ``p_j - p_given`` (> 0).
    """

    thresholds: np.ndarray
    confident_joint: np.ndarray
    calibrated_joint: np.ndarray
    joint: np.ndarray
    prior: np.ndarray
    noise_matrix: np.ndarray
    label_counts: np.ndarray
    p_given: np.ndarray
    predicted: np.ndarray
    pair_rows: np.ndarray
    pair_true: np.ndarray
    pair_margin: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.thresholds)

    @property
    def issues_per_class(self) -> np.ndarray:
        """Estimated number of wrongly labelled rows per given class (calibrated off-diagonal)."""
        return self.label_counts - np.diag(self.calibrated_joint)

    @property
    def noise_rate_per_class(self) -> np.ndarray:
        """Estimated share of wrongly labelled rows among rows given each class."""
        return self.issues_per_class / np.maximum(self.label_counts, 1)


def _gather(pred_probs, rows: np.ndarray, cols: np.ndarray, block_rows: int) -> np.ndarray:
    """``pred_probs[rows[m], cols[m]]`` as float64 for sorted ``rows``, one block at a time."""
    out = np.empty(len(rows), dtype=np.float64)
    if isinstance(pred_probs, np.ndarray):
        out[:] = pred_probs[rows, cols]
        return out
    bounds = np.searchsorted(rows, np.arange(0, pred_probs.shape[0] + block_rows, block_rows))
    for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            start = b * block_rows
            block = np.asarray(pred_probs[start:min(start + block_rows, pred_probs.shape[0])])
            out[lo:hi] = block[rows[lo:hi] - start, cols[lo:hi]]
    return out


def _gather_given(labels: np.ndarray, pred_probs, block_rows: int) -> np.ndarray:
    """``p_given[n] = pred_probs[n, labels[n]]`` as float64."""
    return _gather(pred_probs, np.arange(len(labels)), labels, block_rows)


def class_thresholds(labels: np.ndarray, p_given: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class confidence thresholds ``t_j = mean(p_j | given = j)``.

    A class with no rows gets threshold 1: no row is confidently of a class never seen.
    """
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.bincount(labels, weights=p_given, minlength=n_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def calibrate_confident_joint(confident_joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rescale each row of the confident joint to the count of its given label.

    Row ``i`` of the result sums exactly to ``label_counts[i]`` (integer rounding keeps row totals,
    largest remainders first). A given class with no confident row is taken as clean: its whole
    count goes on the diagonal.

    Examples
    --------
    >>> calibrate_confident_joint(np.array([[3, 1], [0, 2]]), np.array([8, 2]))
    array([[6, 2],
           [0, 2]])
    """
    cj = np.asarray(confident_joint, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64)
    row_sums = cj.sum(axis=1)
    empty = row_sums == 0
    scaled = cj / np.where(empty, 1.0, row_sums)[:, None] * counts[:, None]
    scaled[empty] = 0.0
    scaled[empty, np.flatnonzero(empty)] = counts[empty]
    return round_preserving_row_totals(scaled)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round a non-negative matrix to integers so every row keeps its (rounded) total.

    Floors every entry, then gives the missing units of each row to its largest fractional parts.
    """
    floor = np.floor(matrix)
    frac = matrix - floor
    missing = np.rint(matrix.sum(axis=1) - floor.sum(axis=1)).astype(np.int64)
    k = matrix.shape[1]
    # Ties between equal remainders go to the diagonal first, so a square joint's rounding does
    # not depend on how the classes are numbered when the diagonal is involved.
    diag = np.eye(len(matrix), k, dtype=bool) if len(matrix) == k else np.zeros(matrix.shape, bool)
    order = np.lexsort((np.broadcast_to(np.arange(k), matrix.shape), ~diag, -frac), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(matrix.shape[1])[None, :].repeat(len(matrix), 0), 1)
    return (floor + (ranks < missing[:, None])).astype(np.int64)


def joint_prior_noise(calibrated_joint: np.ndarray):
    """Joint ``P(given, true)``, prior ``P(true)`` and noise matrix ``P(given | true)``.

    Returns
    -------
    joint : ndarray of shape (K, K)
    prior : ndarray of shape (K,)
    noise_matrix : ndarray of shape (K, K)
        Columns sum to 1; a true class with zero estimated mass gets the identity column.
    """
    cal = np.asarray(calibrated_joint, dtype=np.float64)
    joint = cal / max(cal.sum(), 1.0)
    prior = joint.sum(axis=0)
    k = len(prior)
    noise = np.where(prior > 0, joint / np.where(prior > 0, prior, 1.0), np.eye(k))
    return joint, prior, noise


def confident_learning(labels: np.ndarray, pred_probs, n_classes: int | None = None, *,
                       block_rows: int = DEFAULT_BLOCK_ROWS) -> ConfidentLearning:
    """Run confident learning over validated inputs (two passes over ``pred_probs``).

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
        Given labels in ``[0, n_classes)``.
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold probabilities; an ndarray, memmap or any row-sliceable array.
    n_classes : int, optional
        Defaults to ``pred_probs.shape[1]``.
    block_rows : int, default=65536
        Rows per block; bounds the temporaries.

    Returns
    -------
    ConfidentLearning

    Notes
    -----
    Pass 1 computes ``t_j = mean(p_j | given=j)``. Pass 2 counts the confident joint: row ``n`` with
    given ``i`` counts in ``C[i, j]`` for ``j = argmax_{k: p_k >= t_k} p_k``; rows with no class
    above its threshold are not counted. It also keeps each row's arg-max class, from which the
    pruning candidates are taken.
    """
    k = pred_probs.shape[1] if n_classes is None else n_classes
    n = len(labels)
    p_given = _gather_given(labels, pred_probs, block_rows)
    label_counts = np.bincount(labels, minlength=k)
    thresholds = class_thresholds(labels, p_given, k)

    predicted = np.empty(n, dtype=np.int32 if k < 2**31 else np.int64)
    thr = np.maximum(thresholds - _THRESHOLD_SLACK, 1e-12)

    def count(start, stop, block):
        given = labels[start:stop]
        confident = block >= thr.astype(block.dtype)
        # thr > 0, so a confident class has p > 0 and zeroing the others keeps the arg-max among
        # the confident classes; a row with none is not counted.
        guess = (block * confident).argmax(axis=1)
        counted = confident[np.arange(stop - start), guess]
        predicted[start:stop] = block.argmax(axis=1)
        return np.bincount(given[counted] * k + guess[counted], minlength=k * k)

    cj_flat = np.sum(map_blocks(count, pred_probs, block_rows), axis=0, dtype=np.int64)

    # Each row whose arg-max is not its label competes for pruning in one pair: (given, arg-max).
    pair_rows = np.flatnonzero(predicted != labels)
    pair_true = predicted[pair_rows]
    pair_margin = _gather(pred_probs, pair_rows, pair_true, block_rows) - p_given[pair_rows]

    confident_joint = cj_flat.reshape(k, k)
    calibrated = calibrate_confident_joint(confident_joint, label_counts)
    joint, prior, noise = joint_prior_noise(calibrated)
    return ConfidentLearning(
        thresholds=thresholds, confident_joint=confident_joint, calibrated_joint=calibrated,
        joint=joint, prior=prior, noise_matrix=noise, label_counts=label_counts,
        p_given=p_given, predicted=predicted,
        pair_rows=pair_rows, pair_true=pair_true, pair_margin=pair_margin,
    )


def top_per_group(groups: np.ndarray, scores: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Mask of the ``quota[g]`` highest-scoring members of each group ``g``.

    Parameters
    ----------
    groups : ndarray of shape (m,), int
        Group id of each member, in ``[0, len(quota))``.
    scores : ndarray of shape (m,)
        Higher = picked first; ties are broken by position (stable).
    quota : ndarray, int
        How many to pick per group.
    """
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-scores, groups))
    sorted_groups = groups[order]
    first = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.arange(len(order)) - first
    picked = np.zeros(len(groups), dtype=bool)
    picked[order] = rank < quota[sorted_groups]
    return picked


def prune_counts(cl: ConfidentLearning, *, min_keep: int = 1) -> np.ndarray:
    """Rows to prune per ``(given, true)`` pair: the calibrated off-diagonal, keeping ``min_keep`` rows per class.

    When a given class would lose more than ``label_counts - min_keep`` rows, its counts are scaled
    down proportionally.
    """
    counts = cl.calibrated_joint.astype(np.float64).copy()
    np.fill_diagonal(counts, 0)
    total = counts.sum(axis=1)
    allowed = np.maximum(cl.label_counts - min_keep, 0)
    scale = np.where(total > allowed, allowed / np.maximum(total, 1), 1.0)
    return np.floor(counts * scale[:, None]).astype(np.int64)


def flags_by_noise_rate(cl: ConfidentLearning, labels: np.ndarray, *, min_keep: int = 1) -> np.ndarray:
    """Prune by noise rate: for each pair ``(i, j)``, flag the ``n_ij`` rows given ``i`` with the largest ``p_j - p_i``.

    ``n_ij`` is the calibrated confident joint's off-diagonal count. A row competes in one pair
    only, ``(given, arg-max)``, so a row whose arg-max is its given label is never flagged and the
    candidates take O(N) memory whatever the number of classes.
    """
    quota = prune_counts(cl, min_keep=min_keep).ravel()
    k = cl.n_classes
    keys = labels[cl.pair_rows] * k + cl.pair_true
    picked = top_per_group(keys, cl.pair_margin, quota)
    flags = np.zeros(len(labels), dtype=bool)
    flags[cl.pair_rows[picked]] = True
    return flags


def flags_by_class(cl: ConfidentLearning, labels: np.ndarray, score: np.ndarray | None = None, *,
                   min_keep: int = 1) -> np.ndarray:
    """Prune by class: flag the estimated number of issues of each given class, lowest ``score`` first.

    ``score`` defaults to self-confidence ``p_given``. Rows whose arg-max is the given label are
    never flagged.
    """
    score = cl.p_given if score is None else score
    quota = prune_counts(cl, min_keep=min_keep).sum(axis=1)
    flags = top_per_group(labels, -score, quota)
    return flags & (cl.predicted != labels)
