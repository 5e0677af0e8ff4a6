"""Multi-label detection: every class as its own binary problem, vectorised across classes.

Conventions: ``labels`` is a 0/1 matrix ``(n_samples, n_classes)`` of *given* tags, ``pred_probs[n, k]``
the out-of-fold probability that row ``n`` has tag ``k`` (independent sigmoid-style probabilities; rows
need not sum to 1). Per-class binary arrays are indexed ``[class, given, true]`` with 0 = tag absent
and 1 = tag present, so ``[k, 0, 1]`` counts *missing* tags (given absent, truly present) and
``[k, 1, 0]`` *spurious* ones (given present, truly absent).

The default rule is a posterior one: the probabilities are recalibrated within strata of the row's
other given tags (:mod:`~cleanpipe.detect.tag_calibration`), one missing and one spurious rate are
read off anchor cells (:func:`~cleanpipe.detect.anchors.anchor_noise_rates`), Bayes' rule under class-conditional noise gives every
cell the posterior that its tag is wrong (:func:`flip_posteriors`), a row's cells combine into
``p_error = 1 - prod(1 - post)`` (:func:`row_error_posterior`), and the ``round(sum(p_error))``
likeliest rows are flagged (:func:`flag_top_expected`). Confident learning (cleanlab's rule, kept
as ``method="noise_rate"`` and as diagnostics) runs on the ``n_classes`` binary problems
``(labels[:, k], [1 - p_k, p_k])`` at once: thresholds, the confident joint and its calibration
are computed for every class in one pass over row blocks, reusing
:func:`~cleanpipe.detect.confident.calibrate_confident_joint` and
:func:`~cleanpipe.detect.confident.top_per_group`. The per-row loss mixture is the single-label
one, :func:`~cleanpipe.detect.mixture.fit_loss_mixture`, fitted to each row's binary
cross-entropy.

Over partitions (issue 21), the sums and counts are mergeable partials: the threshold sums
(:func:`binary_threshold_sums`, exact), the confident joints (:func:`multilabel_confident_counts`),
the label counts and the few-tags counts of the anchors
(:func:`~cleanpipe.detect.anchors.few_tags_counts`); :func:`multilabel_estimates` finishes them.
The rest (the anchor tails, the tag-count recalibration, the posterior rule's count and cut, the
noise-rate quotas) and the plan that drives them are in
:mod:`~cleanpipe.detect.partitioned_multilabel`, over the pieces of this module.

References
----------
Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021.
Thyagarajan, Snorrason, Northcutt & Mueller, "Identifying Incorrect Annotations in Multi-Label
Classification Data", ICLR 2023 workshop (the one-vs-rest reduction, aggregated over classes).
Scott, Blanchard & Handy, "Classification with Asymmetric Label Noise: Consistency and Maximal
Denoising", COLT 2013; Patrini et al., "Making Deep Neural Networks Robust to Label Noise: a Loss
Correction Approach", CVPR 2017 (noise rates from anchor points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MULTILABEL_METHODS: the names accepted by detect_multilabel (the first is the default)
from ..settings import (DEFAULT_MIXTURE, DEFAULT_MULTILABEL_METHOD, MULTILABEL_METHODS,  # noqa: F401
                        MULTILABEL_NOISY_THRESHOLD)
from ._validate import iter_blocks
from .anchors import anchor_noise_rates
from .tag_calibration import TagCountCalibrated, TagCountCalibration, fit_tag_count_calibration
from .confident import _THRESHOLD_SLACK, calibrate_confident_joint, thresholds_from_sums, top_per_group
from .exactsum import empty_sums, exact_group_sums, exact_sum
from .mixture import LossMixture, fit_loss_mixture

#: Probabilities are kept this far from 0 and 1 in the binary cross-entropy.
_PROB_FLOOR = 1e-12
#: Target number of (row, class) cells per block: bounds the float64 temporaries to ~32 MB.
_BLOCK_CELLS = 1 << 22


def _block_rows(n_classes: int) -> int:
    return max(1024, _BLOCK_CELLS // max(n_classes, 1))


@dataclass(frozen=True)
class MultilabelConfident:
    """Confident-learning estimates for the ``n_classes`` one-vs-rest binary problems.

    Attributes
    ----------
    thresholds : ndarray of shape (n_classes, 2)
        ``t[k, j]``: mean probability of ``true = j`` over rows given ``j`` for class ``k``, i.e.
        ``t[k, 1] = mean(p_k | tag given)`` and ``t[k, 0] = mean(1 - p_k | tag not given)``.
    confident_joint : ndarray of shape (n_classes, 2, 2), int
        ``C[k, g, j]``: rows given ``g`` for class ``k`` confidently counted as ``true = j``.
    calibrated_joint : ndarray of shape (n_classes, 2, 2), int
        ``C[k]`` rescaled so row ``g`` sums to ``label_counts[k, g]``.
    prior : ndarray of shape (n_classes, 2)
        Estimated ``P(true = j)`` per class.
    noise_matrix : ndarray of shape (n_classes, 2, 2)
        Estimated ``P(given = g | true = j)`` per class, indexed ``[k, g, j]``; ``[k, :, j]`` sums to 1.
    label_counts : ndarray of shape (n_classes, 2), int
        Rows without / with each tag.
    label_score : ndarray of shape (n_samples,)
        Per-row score in [0, 1], the minimum over classes of the pair scores (see
        :func:`pair_scores`); higher = more likely correct.
    loss : ndarray of shape (n_samples,)
        Per-row binary cross-entropy summed over classes.
    predicted : ndarray of shape (n_samples, n_classes), bool
        ``p > 0.5``: the tags the model predicts.
    pair_rows, pair_classes, pair_margin : ndarray
        Pruning candidates: the (row, class) cells where ``p > 0.5`` disagrees with the given tag,
        and the margin ``|2 p - 1|`` (> 0) by which it does. Sorted by row, then class.
    pair_given : ndarray of bool
        The given tag at each candidate cell (True = given present, so a suspect spurious tag).
    """

    thresholds: np.ndarray
    confident_joint: np.ndarray
    calibrated_joint: np.ndarray
    prior: np.ndarray
    noise_matrix: np.ndarray
    label_counts: np.ndarray
    label_score: np.ndarray
    loss: np.ndarray
    predicted: np.ndarray
    pair_rows: np.ndarray
    pair_classes: np.ndarray
    pair_margin: np.ndarray
    pair_given: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.thresholds)

    @property
    def missing_per_class(self) -> np.ndarray:
        """Estimated number of rows missing each tag (given absent, truly present)."""
        return self.calibrated_joint[:, 0, 1]

    @property
    def spurious_per_class(self) -> np.ndarray:
        """Estimated number of rows wrongly given each tag (given present, truly absent)."""
        return self.calibrated_joint[:, 1, 0]

    @property
    def noise_rate_per_class(self) -> np.ndarray:
        """Estimated share of rows whose tag ``k`` is wrong: ``(missing_k + spurious_k) / n``."""
        n = max(int(self.label_counts[0].sum()), 1)
        return (self.missing_per_class + self.spurious_per_class) / n

    @property
    def row_noise_rate(self) -> float:
        """Estimated share of rows with at least one wrong tag, ``1 - prod_k (1 - r_k)``.

        ``r_k`` is :attr:`noise_rate_per_class`; the product assumes the classes' errors are
        independent of each other.
        """
        return float(1.0 - np.prod(1.0 - np.clip(self.noise_rate_per_class, 0.0, 1.0)))


def binary_thresholds(labels: np.ndarray, pred_probs, *, block_rows: int | None = None) -> np.ndarray:
    """Per-class one-vs-rest thresholds ``t[k, 1] = mean(p_k | y_k = 1)``, ``t[k, 0] = mean(1 - p_k | y_k = 0)``.

    A class side with no rows gets threshold 1 (no row is confidently of a side never seen), as
    :func:`~cleanpipe.detect.confident.class_thresholds` does for a class with no rows.

    Examples
    --------
    >>> labels = np.array([[1, 0], [1, 1], [0, 0]])
    >>> binary_thresholds(labels, np.array([[.9, .2], [.7, .6], [.1, .4]]))
    array([[0.9, 0.8],
           [0.7, 0.6]])
    """
    k = labels.shape[1]
    sums = empty_sums(2 * k)
    for start, stop, block in iter_blocks(pred_probs, block_rows or _block_rows(k)):
        sums = sums.merge(binary_threshold_sums(labels[start:stop], block))
    pos = labels.sum(axis=0, dtype=np.int64)
    counts = np.stack([len(labels) - pos, pos], axis=1)
    return thresholds_from_sums(counts, sums.totals().reshape(k, 2))


def binary_threshold_sums(labels: np.ndarray, p: np.ndarray):
    """Exact sums behind :func:`binary_thresholds` over some rows: group ``2 k + side``.

    ``side`` 1 sums ``p_k`` over the rows given tag ``k``, side 0 sums ``1 - p_k`` over the
    others; exact (:mod:`~cleanpipe.detect.exactsum`), so partitions merge to the same thresholds.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    k = y.shape[1]
    values = np.where(y, p, 1.0 - p)
    groups = 2 * np.arange(k)[None, :] + y
    return exact_group_sums(values.ravel(), groups.ravel(), 2 * k)


def multilabel_confident_counts(labels: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Some rows' contribution to the ``K`` binary confident joints, flat ``[4 k + 2 given + true]``.

    A count per cell given the thresholds: over partitions the counts add.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    k = y.shape[1]
    thr = thresholds - _THRESHOLD_SLACK
    conf1 = p >= thr[:, 1]
    conf0 = (1.0 - p) >= thr[:, 0]
    guess = np.where(conf1 & conf0, p > 0.5, conf1)
    counted = conf1 | conf0
    offsets = (4 * np.arange(k))[None, :]
    return np.bincount((offsets + 2 * y + guess)[counted], minlength=4 * k)


def multilabel_estimates(label_counts: np.ndarray, confident_joint: np.ndarray, n: int):
    """``(calibrated, prior, noise_matrix)`` of the binary joints from merged counts."""
    calibrated = _calibrate(confident_joint, label_counts)
    joint = calibrated / max(n, 1)
    prior = joint.sum(axis=1)
    k = len(confident_joint)
    eye = np.broadcast_to(np.eye(2), (k, 2, 2))
    has = prior[:, None, :] > 0
    noise = np.where(has, joint / np.where(has, prior[:, None, :], 1.0), eye)
    return calibrated, prior, noise


def pair_scores(labels: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Score of every (row, class) cell in [0, 1]; higher = the given tag is more likely right.

    Parameters
    ----------
    labels : ndarray of shape (n, n_classes), 0/1 or bool
    p : ndarray of shape (n, n_classes)
        Probabilities of the tags.
    thresholds : ndarray of shape (n_classes, 2)
        From :func:`binary_thresholds`.

    Returns
    -------
    ndarray of shape (n, n_classes), float64

    Notes
    -----
    The score is the smaller of the self-confidence ``q_given`` (``p`` where the tag is given,
    ``1 - p`` where it is not) and the threshold-adjusted margin mapped to [0, 1],
    ``(1 + (a_given - a_other) / max(a_given, a_other)) / 2`` with ``a_1 = p / t[k, 1]`` and
    ``a_0 = (1 - p) / t[k, 0]``. The self-confidence ranks spurious tags well; the adjusted margin
    puts a rare class's missing tags (whose ``p`` stays low in absolute terms) on the scale of the
    others. Taking the smaller keeps both kinds of evidence.

    Examples
    --------
    >>> pair_scores(np.array([[1, 0]]), np.array([[0.9, 0.2]]), np.array([[0.8, 0.9], [0.7, 0.5]]))
    array([[0.9, 0.8]])
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    t = np.maximum(thresholds, 1e-12)
    a1 = p / t[:, 1]
    a0 = (1.0 - p) / t[:, 0]
    a_given = np.where(y, a1, a0)
    a_other = np.where(y, a0, a1)
    margin = (a_given - a_other) / np.maximum(np.maximum(a_given, a_other), 1e-12)
    return np.minimum(np.where(y, p, 1.0 - p), 0.5 * (1.0 + margin))


def binary_cross_entropy(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row binary cross-entropy summed over classes, ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]``.

    Probabilities are clipped to ``[1e-12, 1 - 1e-12]`` first, so each cell costs at most ~27.6.

    Examples
    --------
    >>> binary_cross_entropy(np.array([[1, 0]]), np.array([[0.5, 0.5]])).round(4)
    array([1.3863])
    """
    y = np.asarray(labels).astype(bool)
    p = np.clip(np.asarray(p, dtype=np.float64), _PROB_FLOOR, 1.0 - _PROB_FLOOR)
    return -np.where(y, np.log(p), np.log1p(-p)).sum(axis=1)


def _calibrate(confident_joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Calibrate the ``K`` binary confident joints at once (each row keeps its label count).

    Stacks them into one ``(2K, 2)`` matrix for :func:`calibrate_confident_joint`, whose rows are
    independent; an empty row (no confident cell) is taken as clean, as there, by putting one count
    on its diagonal first.
    """
    k = len(confident_joint)
    cj = confident_joint.copy()
    cls, given = np.nonzero(cj.sum(axis=2) == 0)
    cj[cls, given, given] = 1
    return calibrate_confident_joint(cj.reshape(2 * k, 2), label_counts.reshape(2 * k)).reshape(k, 2, 2)


def multilabel_confident_learning(labels: np.ndarray, pred_probs, *,
                                  block_rows: int | None = None) -> MultilabelConfident:
    """Confident learning on every class's binary problem, in two passes over row blocks.

    Parameters
    ----------
    labels : ndarray of shape (n_samples, n_classes), 0/1 or bool
        Validated given tags.
    pred_probs : array-like of shape (n_samples, n_classes)
        Validated tag probabilities; an ndarray, memmap or any row-sliceable array.
    block_rows : int, optional
        Rows per block (default: about 4 million cells per block).

    Returns
    -------
    MultilabelConfident

    Notes
    -----
    For class ``k`` the binary problem has probabilities ``(1 - p_k, p_k)``. Pass 1 computes
    :func:`binary_thresholds`. Pass 2 counts the confident joint: a cell given ``g`` counts in
    ``C[k, g, j]`` for the most probable side ``j`` among those whose probability reaches its
    threshold (``p_k >= t[k, 1]`` for ``j = 1``, ``1 - p_k >= t[k, 0]`` for ``j = 0``); cells with
    neither are not counted. It also keeps the per-row scores, losses and the sparse pruning
    candidates. The calibrated joint rescales ``C[k, g, :]`` to the ``label_counts[k, g]`` rows;
    ``joint = calibrated / n``, ``prior[k, j] = sum_g joint[k, g, j]`` and the noise matrix is
    ``joint[k, g, j] / prior[k, j]`` (the identity column where ``prior`` is 0).
    """
    n, k = labels.shape
    block_rows = block_rows or _block_rows(k)
    thresholds = binary_thresholds(labels, pred_probs, block_rows=block_rows)
    cj_flat = np.zeros(4 * k, dtype=np.int64)
    score = np.empty(n)
    loss = np.empty(n)
    predicted = np.empty((n, k), dtype=bool)
    rows, classes, margins, givens = [], [], [], []
    for start, stop, block in iter_blocks(pred_probs, block_rows):
        y = labels[start:stop].astype(bool)
        p = block.astype(np.float64, copy=False)
        cj_flat += multilabel_confident_counts(y, p, thresholds)
        score[start:stop] = pair_scores(y, p, thresholds).min(axis=1)
        loss[start:stop] = binary_cross_entropy(y, p)
        predicted[start:stop] = p > 0.5
        r, c, margin, given = candidate_cells(y, p)
        rows.append(r + start)
        classes.append(c)
        margins.append(margin)
        givens.append(given)
    pos = labels.sum(axis=0, dtype=np.int64)
    label_counts = np.stack([n - pos, pos], axis=1)
    confident_joint = cj_flat.reshape(k, 2, 2)
    calibrated, prior, noise = multilabel_estimates(label_counts, confident_joint, n)
    return MultilabelConfident(
        thresholds=thresholds, confident_joint=confident_joint, calibrated_joint=calibrated,
        prior=prior, noise_matrix=noise, label_counts=label_counts, label_score=np.clip(score, 0, 1),
        loss=loss, predicted=predicted, pair_rows=np.concatenate(rows).astype(np.int64),
        pair_classes=np.concatenate(classes).astype(np.int64), pair_margin=np.concatenate(margins),
        pair_given=np.concatenate(givens).astype(bool),
    )


def candidate_cells(labels: np.ndarray, p: np.ndarray):
    """The pruning candidates of some rows: ``(rows, classes, margin, given)`` of the cells whose
    ``p > 0.5`` disagrees with the given tag, by row then class; ``margin = |2 p - 1|``."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    r, c = np.nonzero((p > 0.5) != y)
    return r, c, np.abs(2.0 * p[r, c] - 1.0), y[r, c]


def prune_quota(cl: MultilabelConfident, *, min_keep: int = 1) -> np.ndarray:
    """Cells to flag per ``(class, given)``: the calibrated off-diagonal, keeping ``min_keep`` rows per side.

    Returns
    -------
    ndarray of shape (n_classes, 2), int
        ``[k, 0]``: missing tags to flag, ``[k, 1]``: spurious tags to flag.
    """
    off = np.stack([cl.calibrated_joint[:, 0, 1], cl.calibrated_joint[:, 1, 0]], axis=1)
    return np.minimum(off, np.maximum(cl.label_counts - min_keep, 0))


def flag_pairs_by_noise_rate(cl: MultilabelConfident, *, min_keep: int = 1) -> np.ndarray:
    """Prune by noise rate per class: mask over the candidate cells of ``cl``.

    For each class ``k`` and given side ``g``, flags the ``prune_quota[k, g]`` candidate cells with
    the largest margin ``|2 p - 1|`` (the most confident disagreement). Only cells whose ``p > 0.5``
    disagrees with the given tag compete, so a row whose tags the model reproduces is never flagged.
    """
    quota = prune_quota(cl, min_keep=min_keep).ravel()
    groups = 2 * cl.pair_classes + cl.pair_given
    return top_per_group(groups, cl.pair_margin, quota)


def flip_posteriors(labels: np.ndarray, p: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Posterior that each given tag is wrong, ``P(true_k != given_k | x, given)``, in [0, 1].

    Parameters
    ----------
    labels : ndarray of shape (n, n_classes), 0/1 or bool
    p : ndarray of shape (n, n_classes)
        Probability of the given tag being present, as fitted to the noisy tags.
    noise : ndarray of shape (n_classes, 2, 2)
        ``P(given | true)``, e.g. from :func:`anchor_noise_rates`.

    Notes
    -----
    With ``p = rho0 + (1 - rho0 - rho1) pi`` (see :func:`anchor_noise_rates`),
    ``pi = (p - rho0) / (1 - rho0 - rho1)`` clipped to [0, 1], and Bayes' rule gives
    ``P(true 0 | given 1) = rho0 (1 - pi) / p`` and ``P(true 1 | given 0) = rho1 pi / (1 - p)``.

    Examples
    --------
    >>> noise = np.array([[[0.9, 0.2], [0.1, 0.8]]])  # rho0 = 0.1, rho1 = 0.2
    >>> flip_posteriors(np.array([[1], [0]]), np.array([[0.5], [0.5]]), noise).round(4)
    array([[0.0857],
           [0.2286]])
    """
    y = np.asarray(labels).astype(bool)
    p = np.clip(np.asarray(p, dtype=np.float64), _PROB_FLOOR, 1.0 - _PROB_FLOOR)
    rho0, rho1 = noise[:, 1, 0], noise[:, 0, 1]
    pi = np.clip((p - rho0) / np.maximum(1.0 - rho0 - rho1, _PROB_FLOOR), 0.0, 1.0)
    post = np.where(y, rho0 * (1.0 - pi) / p, rho1 * pi / (1.0 - p))
    return np.clip(post, 0.0, 1.0)


def row_error_posterior(post: np.ndarray) -> np.ndarray:
    """``1 - prod_k (1 - post_k)``: the posterior that a row holds at least one wrong tag.

    Treats the tags' errors as independent given the row (each posterior already conditions on
    the row's features and, through the model, on its other given tags).

    Examples
    --------
    >>> row_error_posterior(np.array([[0.5, 0.5], [0.0, 1.0]]))
    array([0.75, 1.  ])
    """
    with np.errstate(divide="ignore"):
        return np.clip(-np.expm1(np.log1p(-post).sum(axis=1)), 0.0, 1.0)


def flag_top_expected(p_error: np.ndarray) -> np.ndarray:
    """Flag the ``m = round(sum(p_error))`` rows of highest ``p_error``: as many as are expected wrong.

    Rows tied at the cut are flagged all together or not at all, whichever count is nearer ``m``
    (so the result does not depend on row order); a row with ``p_error == 0`` never is.

    Examples
    --------
    >>> flag_top_expected(np.array([0.9, 0.1, 0.7, 0.2, 0.0])).tolist()
    [True, False, True, False, False]
    >>> flag_top_expected(np.full(8, 0.2)).tolist()  # m = 2 of 8 tied rows: none
    [False, False, False, False, False, False, False, False]
    """
    m = expected_count(exact_sum(p_error))
    if m == 0:
        return np.zeros(len(p_error), dtype=bool)
    cut = np.partition(p_error, len(p_error) - m)[len(p_error) - m]
    above = p_error > cut
    if take_tied(m, int(above.sum()), int((p_error >= cut).sum())):
        above = p_error >= cut
    return above & (p_error > 0)


def expected_count(total: float) -> int:
    """``m = round(sum(p_error))``, from the exact sum (so any partitioning gives the same ``m``)."""
    return int(round(float(total)))


def take_tied(m: int, n_above: int, n_with_tied: int) -> bool:
    """Whether :func:`flag_top_expected` takes the rows tied at its cut: the count nearer ``m``."""
    return abs(n_with_tied - m) <= abs(n_above - m)


def suspect_lists(n_rows: int, issue_rows: np.ndarray, issue_classes: np.ndarray,
                  issue_given: np.ndarray, *, spurious: bool):
    """The suspect spurious (or missing) classes of every row as ``(offsets, classes)`` (see
    :meth:`MultilabelDetection.suspects`)."""
    keep = issue_given == spurious
    offsets = np.searchsorted(issue_rows[keep], np.arange(n_rows + 1))
    return offsets.astype(np.int64), issue_classes[keep]


@dataclass(frozen=True)
class MultilabelDetection:
    """Per-row results, the flagged (row, class) cells and the estimates behind them.

    Attributes
    ----------
    is_label_issue : ndarray of shape (n_samples,), bool
    label_score : ndarray of shape (n_samples,)
        In [0, 1]; higher = more likely correct: ``1 - p_error``.
    p_error : ndarray of shape (n_samples,)
        Posterior that the row holds at least one wrong tag (:func:`row_error_posterior`).
    noise_matrix : ndarray of shape (n_classes, 2, 2)
        The anchor noise rates behind ``p_error`` (:func:`anchor_noise_rates`), ``[k, given, true]``.
    expected_wrong : ndarray of shape (n_classes, 2)
        Sum of the flip posteriors per class and given side: ``[k, 0]`` expected missing tags,
        ``[k, 1]`` expected spurious tags.
    p_noisy : ndarray of shape (n_samples,)
        Posterior of the high-loss component of the mixture fitted to the per-row BCE.
    loss : ndarray of shape (n_samples,)
        Per-row binary cross-entropy summed over classes.
    predicted : ndarray of shape (n_samples, n_classes), bool
        ``p > 0.5``.
    issue_rows, issue_classes : ndarray of int
        The suspect (row, class) cells, sorted by row then class; each belongs to a flagged row.
    issue_given : ndarray of bool
        The given tag at each suspect cell: True = a suspect spurious tag, False = a missing one.
    confident : MultilabelConfident
    mixture : LossMixture
    method : str
    calibration : TagCountCalibration
        The per-stratum Platt maps applied to ``pred_probs`` before the anchor rates and the flip
        posteriors (:func:`~cleanpipe.detect.tag_calibration.fit_tag_count_calibration`).
    """

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_error: np.ndarray
    noise_matrix: np.ndarray
    expected_wrong: np.ndarray
    p_noisy: np.ndarray
    loss: np.ndarray
    predicted: np.ndarray
    issue_rows: np.ndarray
    issue_classes: np.ndarray
    issue_given: np.ndarray
    confident: MultilabelConfident
    mixture: LossMixture
    method: str
    calibration: TagCountCalibration

    def suspects(self, *, spurious: bool):
        """The suspect spurious (or missing) classes of every row as ``(offsets, classes)``.

        Row ``n``'s suspects are ``classes[offsets[n]:offsets[n + 1]]`` (ascending), the layout of
        an Arrow list array; ``offsets`` has ``n_samples + 1`` entries.
        """
        return suspect_lists(len(self.is_label_issue), self.issue_rows, self.issue_classes,
                             self.issue_given, spurious=spurious)

    @property
    def expected_issues(self) -> float:
        """Expected number of rows with at least one wrong tag, ``sum(p_error)`` (exact)."""
        return exact_sum(self.p_error)


def posterior_rows(labels: np.ndarray, q: np.ndarray, noise: np.ndarray):
    """Some rows' ``p_error`` and the exact sums of their flip posteriors per ``2 class + given``.

    ``q``: the recalibrated probabilities. The sums add over blocks and partitions
    (:mod:`~cleanpipe.detect.exactsum`); :func:`expected_wrong_from_sums` finishes them.
    """
    y = np.asarray(labels).astype(bool)
    k = y.shape[1]
    post = flip_posteriors(y, q, noise)
    groups = 2 * np.arange(k)[None, :] + y
    return row_error_posterior(post), exact_group_sums(post.ravel(), groups.ravel(), 2 * k)


def expected_wrong_from_sums(sums) -> np.ndarray:
    """``[k, given]`` sums of the flip posteriors (``[k, 0]`` missing, ``[k, 1]`` spurious tags)."""
    return sums.totals().reshape(-1, 2)


def _posterior_pass(labels, pred_probs, noise, block_rows):
    """Row posteriors ``p_error`` and the per-class sums of the flip posteriors, block by block."""
    n, k = labels.shape
    p_error = np.empty(n)
    sums = empty_sums(2 * k)
    for start, stop, block in iter_blocks(pred_probs, block_rows):
        p_error[start:stop], part = posterior_rows(labels[start:stop], block, noise)
        sums = sums.merge(part)
    return p_error, expected_wrong_from_sums(sums)


def posterior_suspect_cells(labels: np.ndarray, q: np.ndarray, noise: np.ndarray):
    """``(rows, classes, given)`` of the suspect cells of some flagged rows: a flip posterior
    >= 0.5, or the row's most likely flip (``rows`` index the rows given)."""
    y = np.asarray(labels).astype(bool)
    post = flip_posteriors(y, q, noise)
    top = (post == post.max(axis=1, keepdims=True)) & (post > 0)
    r, c = np.nonzero((post >= 0.5) | top)
    return r, c, y[r, c]


def _posterior_suspects(labels, pred_probs, noise, flags, block_rows):
    """The suspect cells of the flagged rows: flip posterior >= 0.5, or the row's most likely flip."""
    rows, classes, givens = [], [], []
    for start, stop, block in iter_blocks(pred_probs, block_rows):
        sel = np.flatnonzero(flags[start:stop])
        r, c, g = posterior_suspect_cells(labels[start:stop][sel], block[sel], noise)
        rows.append(sel[r] + start)
        classes.append(c)
        givens.append(g)
    return (np.concatenate(rows).astype(np.int64), np.concatenate(classes).astype(np.int64),
            np.concatenate(givens).astype(bool))


def detect_multilabel(labels: np.ndarray, pred_probs, *, method: str = DEFAULT_MULTILABEL_METHOD,
                      mixture: str = DEFAULT_MIXTURE, noisy_threshold: float = MULTILABEL_NOISY_THRESHOLD,
                      min_keep: int = 1,
                      block_rows: int | None = None) -> MultilabelDetection:
    """Score and flag rows of validated multi-label inputs (see :func:`cleanpipe.find_multilabel_issues`).

    Parameters
    ----------
    labels : ndarray of shape (n_samples, n_classes), 0/1 or bool
    pred_probs : array-like of shape (n_samples, n_classes)
        Tag probabilities in [0, 1]; an ndarray, memmap or any row-sliceable array.
    method : {"posterior", "noise_rate", "mixture", "both"}, default="posterior"
    mixture : {"beta", "gaussian"}, default="beta"
        Family of the mixture fitted to the per-row binary cross-entropy.
    noisy_threshold : float, default=0.5
        ``p_noisy`` from which ``mixture`` and ``both`` count a row as noisy.
    min_keep : int, default=1
        Rows per class and side that pruning never takes.
    block_rows : int, optional
        Rows per block.

    Returns
    -------
    MultilabelDetection

    Notes
    -----
    ``posterior`` (default) first recalibrates the probabilities within strata of the row's other
    given tags (:func:`~cleanpipe.detect.tag_calibration.fit_tag_count_calibration`), estimates
    one missing and one spurious rate from anchor cells (:func:`anchor_noise_rates`), turns every
    cell's probability into the posterior that its given tag is wrong (:func:`flip_posteriors`),
    combines a row's cells into ``p_error = 1 - prod(1 -
    post)`` and flags the ``round(sum(p_error))`` rows of highest ``p_error``
    (:func:`flag_top_expected`): the expected number of wrong rows. A flagged row's suspects are
    its cells with a flip posterior >= 0.5, or else its most likely flip. ``noise_rate`` flags every
    cell chosen by :func:`flag_pairs_by_noise_rate` and every row holding one: the one-vs-rest
    confident-learning rule of cleanlab, aggregated with "any". ``mixture`` flags rows with
    ``p_noisy >= noisy_threshold`` that hold at least one candidate cell (its suspects are those
    cells); ``both`` keeps the ``noise_rate`` cells of rows that also have
    ``p_noisy >= noisy_threshold``. The scores (``label_score = 1 - p_error``, ``p_noisy``) do not
    depend on the method.
    """
    cl = multilabel_confident_learning(labels, pred_probs, block_rows=block_rows)
    mix = fit_loss_mixture(cl.loss, family=mixture)
    p_noisy = mix.p_noisy(cl.loss)
    n, k = labels.shape
    block_rows = block_rows or _block_rows(k)
    # the posterior rule reads probabilities recalibrated per number of other given tags (see
    # tag_calibration); the confident-learning rules keep the probabilities they were given
    calibration = fit_tag_count_calibration(labels, pred_probs, block_rows=block_rows)
    calibrated = TagCountCalibrated(labels, pred_probs, calibration)
    noise = anchor_noise_rates(labels, calibrated, block_rows=block_rows)
    p_error, expected_wrong = _posterior_pass(labels, calibrated, noise, block_rows)
    common = dict(label_score=1.0 - p_error, p_error=p_error, noise_matrix=noise,
                  expected_wrong=expected_wrong, p_noisy=p_noisy, loss=cl.loss, predicted=cl.predicted,
                  confident=cl, mixture=mix, method=method, calibration=calibration)
    if method == "posterior":
        flags = flag_top_expected(p_error)
        rows, classes, givens = _posterior_suspects(labels, calibrated, noise, flags, block_rows)
        return MultilabelDetection(is_label_issue=flags, issue_rows=rows, issue_classes=classes,
                                   issue_given=givens, **common)
    if method in ("noise_rate", "both"):
        cells = flag_pairs_by_noise_rate(cl, min_keep=min_keep)
        if method == "both":
            cells &= p_noisy[cl.pair_rows] >= noisy_threshold
    elif method == "mixture":
        cells = p_noisy[cl.pair_rows] >= noisy_threshold
    else:
        raise ValueError(f"unknown method {method!r}")
    flags = np.zeros(n, dtype=bool)
    flags[cl.pair_rows[cells]] = True
    return MultilabelDetection(
        is_label_issue=flags, issue_rows=cl.pair_rows[cells], issue_classes=cl.pair_classes[cells],
        issue_given=cl.pair_given[cells], **common)
