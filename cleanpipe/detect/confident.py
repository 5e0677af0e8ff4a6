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

from ._validate import block_rows_for, map_blocks
from .exactsum import exact_group_sums
from .shrinkage import shrunk_noise_matrix

#: Tolerance below a threshold that still counts as "confident" (float32 round-off).
_THRESHOLD_SLACK = 1e-6
#: Per row, at most this many classes (those above ``p_given`` with the largest margins) compete
#: for a cell in :func:`flags_by_cell_margin`; bounds the candidates to ``8 N`` pairs.
MAX_COMPETITORS = 8
#: :func:`top_per_group` pre-selects by bucket counts from this many members on.
PREFILTER_MIN_MEMBERS = 4096
_MAX_BUCKETS = 128
#: Cap on groups x buckets of the pre-selection histogram (fewer buckets with many groups).
_MAX_BUCKET_CELLS = 1 << 22
#: Share of each class's predicted rows, those the model is surest of, that serve as its anchors
#: in :func:`anchor_joint`. Chosen on benchmarks/detection_quality.py (tuning seed, logistic
#: regression; 5%, 10% and 20% measured): smaller shares see too few pair flips to pass the
#: pattern test, larger ones reach into the rows the model confuses.
ANCHOR_SHARE = 0.10


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
    anchor_joint : ndarray of shape (n_classes, n_classes), int
        ``A[i, j]``: given labels ``i`` among the anchors of class ``j`` (:func:`anchor_joint`).
    pair_rows, pair_true, pair_margin : ndarray
        Pruning candidates: the rows whose arg-max ``j`` is not their given label, ``j``, and the
        margin ``p_j - p_given`` (> 0).
    cell_rows, cell_keys, cell_margin : ndarray
        Candidates of every off-diagonal cell: each ``(row, j)`` with ``p_j > p_given``, its cell
        ``given * n_classes + j`` and the margin ``p_j - p_given``; at most
        :data:`MAX_COMPETITORS` per row (its largest margins), sorted by row then class. Rows and
        cells are 32-bit where they fit. See :func:`flags_by_cell_margin`.
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
    anchor_joint: np.ndarray
    pair_rows: np.ndarray
    pair_true: np.ndarray
    pair_margin: np.ndarray
    cell_rows: np.ndarray
    cell_keys: np.ndarray
    cell_margin: np.ndarray

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


def take_cells(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows, cols]`` for a C-contiguous 2-D array, through flat positions.

    ``ndarray.take`` on the flat view is ~3x faster than 2-D fancy indexing for one value per
    row, which every pass here does.
    """
    flat = rows * np.int64(matrix.shape[1])
    flat += cols
    return matrix.reshape(-1).take(flat)


def _gather(pred_probs, rows: np.ndarray, cols: np.ndarray, block_rows: int | None) -> np.ndarray:
    """``pred_probs[rows[m], cols[m]]`` as float64 for sorted ``rows``, one block at a time."""
    out = np.empty(len(rows), dtype=np.float64)
    if isinstance(pred_probs, np.ndarray) and pred_probs.flags.c_contiguous:
        out[:] = take_cells(pred_probs, rows, cols)
        return out
    if isinstance(pred_probs, np.ndarray):
        out[:] = pred_probs[rows, cols]
        return out
    block_rows = block_rows_for(pred_probs, block_rows)
    bounds = np.searchsorted(rows, np.arange(0, pred_probs.shape[0] + block_rows, block_rows))
    for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            start = b * block_rows
            block = np.asarray(pred_probs[start:min(start + block_rows, pred_probs.shape[0])])
            out[lo:hi] = block[rows[lo:hi] - start, cols[lo:hi]]
    return out


def _gather_given(labels: np.ndarray, pred_probs, block_rows: int | None) -> np.ndarray:
    """``p_given[n] = pred_probs[n, labels[n]]`` as float64, block by block (small temporaries)."""
    out = np.empty(len(labels), dtype=np.float64)

    def gather(start, stop, block):
        out[start:stop] = take_cells(block, np.arange(stop - start), labels[start:stop])

    map_blocks(gather, pred_probs, block_rows)
    return out


def competitors(block: np.ndarray, given: np.ndarray, p_given: np.ndarray, disagree: np.ndarray,
                max_per_row: int = MAX_COMPETITORS):
    """Every class that beats the given label in a block of rows: ``(rows, classes, margins)``.

    Parameters
    ----------
    block : ndarray of shape (m, n_classes)
    given : ndarray of shape (m,), int
    p_given : ndarray of shape (m,), float64
        ``block[r, given[r]]`` in float64.
    disagree : ndarray of shape (m,), bool
        Rows whose arg-max is not the given label; only they can have a class above ``p_given``.
    max_per_row : int, default=MAX_COMPETITORS
        Keep at most this many classes per row, the most probable (all of those tied with the
        last one kept, so the result does not depend on class order).

    Returns
    -------
    rows : ndarray of int32
        Offsets into the block, sorted; a row appears once per competing class.
    classes : ndarray of int32
    margins : ndarray of float64
        ``p_class - p_given`` (> 0), computed in float64.
    """
    idx = np.flatnonzero(disagree)
    sub = np.take(block, idx, axis=0)  # ~2x faster than block[idx] for whole rows
    # Compared in the block's own dtype: p_given is a value of the block, so ``p_j > p_given``
    # and the order of the margins are those of the probabilities, without a float64 copy.
    p_sub = p_given[idx].astype(block.dtype)
    above = sub > p_sub[:, None]
    # Counted in the narrowest integer that holds K (a byte sum is ~2x faster than count_nonzero).
    count_type = np.uint8 if block.shape[1] < 2**8 else np.uint16 if block.shape[1] < 2**16 else np.int64
    n_above = np.add.reduce(above.view(np.uint8), axis=1, dtype=count_type)
    crowded = np.flatnonzero(n_above > max_per_row)
    if crowded.size:
        k = block.shape[1]
        kth = np.partition(sub[crowded], k - max_per_row, axis=1)[:, k - max_per_row]
        above[crowded] &= sub[crowded] >= kth[:, None]
    # Flat positions split by hand: ~2.5x faster than a 2-D np.nonzero.
    flat = np.flatnonzero(above)
    if above.size < 2**31:
        flat = flat.astype(np.int32)
    k = np.asarray(block.shape[1], dtype=flat.dtype)
    r = flat // k
    j = flat - r * k
    margin = sub.reshape(-1).take(flat).astype(np.float64) - p_given[idx[r]]
    # up to 8 pairs per row: 32-bit offsets and classes halve what the caller keeps for N rows
    return idx[r].astype(np.int32), j.astype(np.int32), margin


def class_thresholds(labels: np.ndarray, p_given: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class confidence thresholds ``t_j = mean(p_j | given = j)``, from exact sums.

    A class with no rows gets threshold 1: no row is confidently of a class never seen.
    """
    counts = np.bincount(labels, minlength=n_classes)
    return thresholds_from_sums(counts, exact_group_sums(p_given, labels, n_classes).totals())


def thresholds_from_sums(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """:func:`class_thresholds` from the per-class row counts and exact sums of ``p_given``.

    The sums are exact (:mod:`~cleanpipe.detect.exactsum`), so thresholds merged from partitions
    equal the in-memory ones bit for bit.
    """
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


def anchor_joint(labels: np.ndarray, predicted: np.ndarray, p_predicted: np.ndarray, n_classes: int, *,
                 share: float = ANCHOR_SHARE) -> np.ndarray:
    """Given labels of each class's anchors: the rows the model is surest belong to it.

    The anchors of class ``j`` are the ``ceil(share * m_j)`` rows predicted ``j`` (of ``m_j``) with
    the largest ``p_j``; ``A[i, j]`` counts those given label ``i``. Far from the classes'
    boundaries the model's own confusion is small, so the labels there show the noise rather
    than the model's weakness (anchor points: Patrini et al. 2017, Xia et al. 2019, here with the
    given labels of out-of-fold rows in place of the model's probabilities).

    Rows tied at a class's boundary are taken all together or not at all (order-independent).

    Examples
    --------
    >>> anchor_joint(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), np.array([.9, .8, .9, .6]), 2,
    ...              share=0.5)
    array([[1, 0],
           [0, 1]])
    """
    counts = np.bincount(predicted, minlength=n_classes)
    quota = np.ceil(share * counts).astype(np.int64)
    picked = top_per_group(predicted, p_predicted, quota, ties="all_or_none")
    flat = labels[picked].astype(np.int64) * n_classes + predicted[picked]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def pattern_supported(joint: np.ndarray) -> bool:
    """Whether a class-conditional noise pattern beats one symmetric rate in a joint ``[given, true]``.

    The class-conditional model (``K (K - 1)`` parameters) wins when its multinomial
    log-likelihood gain over the symmetric one, ``G / 2`` (the G-test statistic), beats the BIC
    penalty ``df / 2 log N``, ``df = K (K - 1) - 1``.

    Examples
    --------
    >>> bool(pattern_supported(np.array([[90, 0, 30], [5, 100, 0], [5, 0, 70]])))
    True
    >>> bool(pattern_supported(np.array([[98, 1, 1], [1, 98, 1], [1, 1, 98]])))
    False
    """
    c = np.asarray(joint, dtype=np.float64)
    k = len(c)
    if k < 2:
        return False
    n_true = c.sum(axis=0)
    total = max(n_true.sum(), 1.0)
    eye = np.eye(k, dtype=bool)
    r_ml = float(c[~eye].sum()) / total
    # G = 2 sum O log(O / E_sym), E_sym the symmetric maximum-likelihood fit
    expected = n_true[None, :] * np.where(eye, 1.0 - r_ml, r_ml / (k - 1))
    seen = (c > 0) & (expected > 0)
    g = 2.0 * float(np.sum(c[seen] * np.log(c[seen] / expected[seen])))
    return g > (k * (k - 1) - 1) * np.log(total)


def posterior_noise_matrix(calibrated_joint: np.ndarray, *, pattern_joint: np.ndarray | None = None):
    """The noise matrix that ``label_score`` conditions on, and whether its pattern is supported.

    Two models of ``P(given | true)`` compete for the calibrated joint ``C``:

    - *symmetric*: one noise rate ``r``, spread evenly over the other classes (1 parameter);
    - *class-conditional*: every column its own off-diagonal pattern (``K (K - 1)`` parameters).

    The class-conditional one is kept only when :func:`pattern_supported` finds the pattern in
    ``pattern_joint`` (default: ``C`` itself). :func:`confident_learning`'s callers pass the
    anchor joint (:func:`anchor_joint`): ``C`` counts every row near a class boundary, so a weak
    model's confusions, which are class-conditional by nature, would pass as a noise pattern on
    any large table; the anchors, the rows the model is surest of, show only the labels' own.
    Under the symmetric matrix the posterior of the given label is a monotone function of
    ``p_given``, so ``label_score`` then ranks exactly as self-confidence does: the noise matrix
    only reorders rows when the data support a pattern (pair flips between classes, say).

    Both estimates are smoothed (a Dirichlet prior worth one row per column, rule of succession
    for the rates), so no off-diagonal cell is exactly 0: a zero cell would make the posterior 1
    for a row the model says belongs to that class. When the pattern wins, each of its columns is
    then moved towards the symmetric matrix by an empirical-Bayes prior fitted to the pattern
    joint (:mod:`~cleanpipe.detect.shrinkage`): a column the anchors show unusual only by chance
    (a small table's symmetric noise that passed the test) keeps little of its own estimate, a
    real pair pattern nearly all of it.

    Parameters
    ----------
    calibrated_joint : ndarray of shape (n_classes, n_classes)
        Indexed ``[given, true]``; the rates and the pattern are estimated from it.
    pattern_joint : ndarray of shape (n_classes, n_classes), optional
        The joint the pattern test runs on.

    Returns
    -------
    noise_matrix : ndarray of shape (n_classes, n_classes)
        ``P(given | true)``, columns sum to 1, every entry > 0 for ``K >= 2``.
    class_conditional : bool
        Whether the class-conditional model won.

    Examples
    --------
    >>> t, cc = posterior_noise_matrix(np.array([[90, 0, 30], [5, 100, 0], [5, 0, 70]]))
    >>> bool(cc), bool(t[0, 2] > t[1, 2])
    (True, True)
    """
    c = np.asarray(calibrated_joint, dtype=np.float64)
    k = len(c)
    n_true = c.sum(axis=0)
    total = max(n_true.sum(), 1.0)
    off = c.copy()
    np.fill_diagonal(off, 0.0)
    m_true = off.sum(axis=0)
    eye = np.eye(k, dtype=bool)
    # symmetric: one rate, fitted by maximum likelihood, then smoothed
    rate = (m_true.sum() + 1.0) / (total + 2.0)
    sym = np.where(eye, 1.0 - rate, rate / max(k - 1, 1))
    if k < 2 or not pattern_supported(c if pattern_joint is None else pattern_joint):
        return sym, False
    # class-conditional: per-column rate and off-diagonal shares, each with a one-row prior,
    # then each column shrunk towards the symmetric matrix as far as the anchors allow
    col_rate = (m_true + 1.0) / (n_true + 2.0)
    share = (off + 1.0 / (k - 1)) / (m_true + 1.0)[None, :]
    pattern = c if pattern_joint is None else pattern_joint
    return shrunk_noise_matrix(col_rate, share, rate, pattern), True


@dataclass(frozen=True)
class ConfidentRows:
    """Confident learning's second pass over a set of rows, given the class thresholds.

    Everything here is per row, or a count over the rows: over partitions, the counts add and
    the rows of each partition are its own (row offsets are into the rows passed).

    Attributes
    ----------
    confident_counts : ndarray of shape (n_classes * n_classes,), int64
        The rows' contribution to the confident joint, flat ``[given * K + true]``.
    p_given, predicted, p_predicted : ndarray of shape (n,)
        ``p_given``, the arg-max class and its probability.
    pair_rows, pair_true, pair_margin, cell_rows, cell_keys, cell_margin : ndarray
        As in :class:`ConfidentLearning`.
    """

    confident_counts: np.ndarray
    p_given: np.ndarray
    predicted: np.ndarray
    p_predicted: np.ndarray
    pair_rows: np.ndarray
    pair_true: np.ndarray
    pair_margin: np.ndarray
    cell_rows: np.ndarray
    cell_keys: np.ndarray
    cell_margin: np.ndarray


def confident_rows(labels: np.ndarray, pred_probs, thresholds: np.ndarray, *,
                   p_given: np.ndarray | None = None, block_rows: int | None = None) -> ConfidentRows:
    """Pass 2 of :func:`confident_learning` over validated rows with known ``thresholds``.

    Row ``n`` with given ``i`` counts in ``C[i, j]`` for ``j = argmax_{k: p_k >= t_k} p_k``; rows
    with no class above its threshold are not counted. It also keeps each row's arg-max class, from
    which the pruning candidates are taken. Each row's results depend on that row and the
    thresholds only, so any split of the rows gives the same rows and counts that add up.
    """
    k = pred_probs.shape[1]
    n = len(labels)
    if p_given is None:
        p_given = _gather_given(labels, pred_probs, block_rows)
    predicted = np.empty(n, dtype=np.int32 if k < 2**31 else np.int64)
    p_predicted = np.empty(n, dtype=np.float64)
    row_type = np.int32 if n < 2**31 else np.int64
    key_type = np.int32 if k * k < 2**31 else np.int64
    thr = np.maximum(thresholds - _THRESHOLD_SLACK, 1e-12)

    def count(start, stop, block):
        given = labels[start:stop]
        thr_b = thr.astype(block.dtype)
        pred = block.argmax(axis=1)
        predicted[start:stop] = pred
        # A row whose arg-max clears its threshold counts there; only the others need the
        # arg-max among their confident classes (thr > 0, so zeroing the unconfident ones keeps
        # it; a row with no confident class is not counted).
        guess = pred.copy()
        p_max = take_cells(block, np.arange(stop - start), pred)
        p_predicted[start:stop] = p_max
        counted = p_max >= thr_b[pred]
        # A row whose largest probability is below every threshold has no confident class.
        rest = np.flatnonzero(~counted & (p_max >= thr_b.min()))
        if rest.size:
            sub = np.take(block, rest, axis=0)
            confident = sub >= thr_b
            g = (sub * confident).argmax(axis=1)
            guess[rest] = g
            counted[rest] = confident[np.arange(rest.size), g]
        rows, cls, margin = competitors(block, given, p_given[start:stop], pred != given)
        # each candidate's cell, (given, class), as one narrow key: what per-cell pruning groups by
        keys = given[rows].astype(key_type)
        keys *= key_type(k)
        keys += cls
        return (np.bincount(given[counted] * k + guess[counted], minlength=k * k),
                rows.astype(row_type) + start, keys, margin)

    parts = map_blocks(count, pred_probs, block_rows)
    cj_flat = np.sum([p[0] for p in parts], axis=0, dtype=np.int64)
    cell_rows, cell_keys, cell_margin = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
    del parts

    # Each row whose arg-max is not its label competes for pruning in one pair: (given, arg-max).
    pair_rows = np.flatnonzero(predicted != labels)
    pair_true = predicted[pair_rows]
    pair_margin = _gather(pred_probs, pair_rows, pair_true, block_rows) - p_given[pair_rows]
    return ConfidentRows(cj_flat, p_given, predicted, p_predicted, pair_rows, pair_true, pair_margin,
                         cell_rows, cell_keys, cell_margin)


def confident_learning(labels: np.ndarray, pred_probs, n_classes: int | None = None, *,
                       block_rows: int | None = None) -> ConfidentLearning:
    """Run confident learning over validated inputs (two passes over ``pred_probs``).

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
        Given labels in ``[0, n_classes)``.
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold probabilities; an ndarray, memmap or any row-sliceable array.
    n_classes : int, optional
        Defaults to ``pred_probs.shape[1]``.
    block_rows : int, optional
        Rows per block; bounds the temporaries (default: about 8 MiB of ``pred_probs``).

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
    p_given = _gather_given(labels, pred_probs, block_rows)
    label_counts = np.bincount(labels, minlength=k)
    thresholds = class_thresholds(labels, p_given, k)
    rows = confident_rows(labels, pred_probs, thresholds, p_given=p_given, block_rows=block_rows)
    predicted, p_predicted = rows.predicted, rows.p_predicted
    pair_rows, pair_true, pair_margin = rows.pair_rows, rows.pair_true, rows.pair_margin
    cell_rows, cell_keys, cell_margin = rows.cell_rows, rows.cell_keys, rows.cell_margin
    cj_flat = rows.confident_counts
    del rows

    # the arg-max probabilities serve only to pick the anchors: not kept (N floats)
    anchors = anchor_joint(labels, predicted, p_predicted, k)
    del p_predicted
    confident_joint = cj_flat.reshape(k, k)
    calibrated = calibrate_confident_joint(confident_joint, label_counts)
    joint, prior, noise = joint_prior_noise(calibrated)
    return ConfidentLearning(
        thresholds=thresholds, confident_joint=confident_joint, calibrated_joint=calibrated,
        joint=joint, prior=prior, noise_matrix=noise, label_counts=label_counts,
        p_given=p_given, predicted=predicted, anchor_joint=anchors,
        pair_rows=pair_rows, pair_true=pair_true, pair_margin=pair_margin,
        cell_rows=cell_rows, cell_keys=cell_keys, cell_margin=cell_margin,
    )


def top_per_group(groups: np.ndarray, scores: np.ndarray, quota: np.ndarray, *,
                  ties: str = "position", prefilter_min: int | None = None) -> np.ndarray:
    """Mask of the ``quota[g]`` highest-scoring members of each group ``g``.

    Parameters
    ----------
    groups : ndarray of shape (m,), int
        Group id of each member, in ``[0, len(quota))``.
    scores : ndarray of shape (m,)
        Higher = picked first.
    quota : ndarray, int
        How many to pick per group.
    ties : {"position", "all_or_none"}, default="position"
        Members tied at a group's boundary: broken by position (stable), or all picked when they
        all fit in the quota and none otherwise (the pick then does not depend on member order,
        and may hold fewer than ``quota[g]``).
    prefilter_min : int, optional
        Members from which on the coarse pre-selection below runs (default
        :data:`PREFILTER_MIN_MEMBERS`); it never changes the result.

    Notes
    -----
    On many members, a radix-select step first settles most of them without sorting: scores are
    cut into coarse buckets by a monotone map, and per group the members of every bucket wholly
    inside (or wholly outside) the quota are decided from bucket counts alone. Only each group's
    boundary bucket, where ties live too, goes through the exact sort, with the quota reduced by
    the members above it. That is what keeps per-cell pruning over a million rows cheap.
    """
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    if ties not in ("position", "all_or_none"):
        raise ValueError(f"unknown ties rule {ties!r}")
    quota = np.asarray(quota)
    limit = PREFILTER_MIN_MEMBERS if prefilter_min is None else prefilter_min
    n_buckets = min(_MAX_BUCKETS, _MAX_BUCKET_CELLS // max(len(quota), 1))
    if len(groups) < limit or n_buckets < 8:
        return _top_per_group_sorted(groups, scores, quota, ties)
    bucket = _monotone_buckets(scores, n_buckets)
    if bucket is None:
        return _top_per_group_sorted(groups, scores, quota, ties)
    n_groups = len(quota)
    # groups x buckets is capped far below 2**31: 32-bit cells
    cell = groups.astype(np.int32) * np.int32(n_buckets)
    cell += bucket
    hist = np.bincount(cell, minlength=n_groups * n_buckets)
    del cell
    hist = hist.reshape(n_groups, n_buckets)
    # at_or_above[g, b]: members of g in bucket b or higher (higher buckets hold higher scores);
    # it falls with b, so the buckets that fit whole are those from `first_in` up.
    at_or_above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    q = quota.astype(np.int64)
    first_in = np.count_nonzero(at_or_above > q[:, None], axis=1)
    padded = np.append(at_or_above, np.zeros((n_groups, 1), np.int64), axis=1)
    taken = padded[np.arange(n_groups), first_in]  # members in the buckets that fit whole
    # The bucket just below straddles the quota unless the buckets above fill it exactly.
    straddle = np.where(taken < q, first_in - 1, -1).astype(np.int32)  # buckets fit in 32 bits
    first_in = first_in.astype(np.int32)
    picked = bucket >= first_in[groups]
    rows = np.flatnonzero(bucket == straddle[groups])
    if rows.size:
        picked[rows] = _top_per_group_sorted(groups[rows], scores[rows], q - taken, ties)
    return picked


def _monotone_buckets(scores: np.ndarray, n_buckets: int):
    """``scores`` cut into ``n_buckets`` equal-width buckets: a non-decreasing integer map.

    Equal scores share a bucket, and a higher bucket always means a higher score. None when the
    scores are not all finite or all equal.
    """
    lo, hi = float(np.min(scores)), float(np.max(scores))
    span = hi - lo
    scale = n_buckets / span if np.isfinite(span) and span > 0 else np.inf
    if not np.isfinite(scale):  # NaN or inf scores, a range that overflows, or all equal
        return None
    b = np.subtract(scores, lo, dtype=np.float64)
    b *= scale
    bucket = b.astype(np.int32)  # n_buckets <= 128
    return np.minimum(bucket, n_buckets - 1, out=bucket)


def _top_per_group_sorted(groups, scores, quota, ties):
    """:func:`top_per_group` by sorting every member (the exact step)."""
    # Two argsorts (scores, then a stable one by group on a narrow integer type) rather than a
    # lexsort: ~3x faster on a million members. Ties by position need the first one stable.
    order = np.argsort(-scores, kind="stable" if ties == "position" else None)
    narrow = np.int16 if len(quota) <= np.iinfo(np.int16).max else np.int64
    order = order[np.argsort(groups[order].astype(narrow), kind="stable")]
    sorted_groups = groups[order]
    first = np.searchsorted(sorted_groups, sorted_groups, side="left")
    if ties == "all_or_none":
        # Rank each member by the last position of its run of equal (group, score).
        sorted_scores = scores[order]
        ends = np.flatnonzero(np.concatenate([(np.diff(sorted_groups) != 0)
                                              | (np.diff(sorted_scores) != 0), [True]]))
        last = ends[np.searchsorted(ends, np.arange(len(order)))]
        rank = last - first
    else:
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


def flags_by_cell_margin(cl: ConfidentLearning, labels: np.ndarray, *, min_keep: int = 1) -> np.ndarray:
    """Prune by noise rate as cleanlab does: per cell ``(i, j)``, the ``n_ij`` rows given ``i`` with the largest ``p_j - p_i``.

    Unlike :func:`flags_by_noise_rate`, a row competes in every cell ``(given, j)`` with ``p_j >
    p_given`` (up to :data:`MAX_COMPETITORS` of them), not only in its arg-max cell; it is flagged
    when any cell picks it, and never when its arg-max is its given label. Rows tied at a cell's
    boundary are picked all together or not at all.

    Notes
    -----
    Slow reference (what the vectorised code computes, up to the competitor cap and ties)::

        for i, j in off-diagonal cells:
            rows = [n for n in range(N) if labels[n] == i and p[n, j] > p[n, i]]
            take the n_ij with the largest p[n, j] - p[n, i]
    """
    quota = prune_counts(cl, min_keep=min_keep).ravel()
    picked = top_per_group(cl.cell_keys, cl.cell_margin, quota, ties="all_or_none")
    flags = np.zeros(len(labels), dtype=bool)
    flags[cl.cell_rows[picked]] = True
    return flags & (cl.predicted != labels)


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
