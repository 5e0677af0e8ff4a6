"""The default rule that combines confident learning and the loss mixture, and the other methods.

Each method returns the same :class:`Detection`; every signal stays visible in it whatever the method
(``p_noisy`` from the mixture, the confident-learning estimates, ``label_score``), only
``is_label_issue`` depends on the method.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# METHODS: the names accepted by detect (the first is the default)
from ..settings import (DEFAULT_METHOD, DEFAULT_MIXTURE, METHODS, NOISY_THRESHOLD,  # noqa: F401  (METHODS: API here)
                        default_noisy_threshold)
from ._validate import map_blocks, row_chunks
from .exactsum import ExactSums, empty_sums, exact_group_sums, exact_sum
from .confident import (ConfidentLearning, confident_learning, flags_by_cell_margin, flags_by_class,
                         flags_by_noise_rate, posterior_noise_matrix)
from .mixture import LossMixture, fit_loss_mixture
from .temperature import count_error_prob, fit_temperature

_LOSS_FLOOR = 1e-12
#: Standard errors within which the combined rule defers to cleanlab's per-cell pruning.
_Z = 2.0
#: The high-loss component counts as a population of wrong labels only if its mean cross-entropy
#: exceeds this: ``p_given < 1/2`` for its typical row, i.e. the model does not back the label.
NOISY_COMPONENT_MIN_LOSS = float(np.log(2.0))
#: ... and only if it holds at least this share of the rows the EM saw: twice the share the
#: mixture clips off the top (5%). A smaller noisy population lies mostly above the upper clip
#: bound, out of the fit, and what the EM calls "noisy" inside is the tail of the correct rows.
NOISY_COMPONENT_MIN_SHARE = 0.10
#: ... and only if it holds more rows than the model's own probabilities explain, by this many
#: standard deviations (:func:`mixture_exceeds_null`).
NULL_EXCESS_Z = 2.0


def noisy_component_present(mix: LossMixture) -> bool:
    """The component test: is the high-loss mixture component a population of wrong labels?

    Only then, and when the count also passes :func:`mixture_exceeds_null`, may the mixture's
    count raise the number of flags. Two conditions here, both needed:

    1. its mean cross-entropy is above ``log 2``: its typical row has ``p_given < 1/2``, the model
       does not back the label (:data:`NOISY_COMPONENT_MIN_LOSS`);
    2. it holds at least 10% of the rows the EM saw, twice the 5% the fit clips off the top
       (:data:`NOISY_COMPONENT_MIN_SHARE`): a prior that a noisy population is either big enough
       to be seen inside the fitted range or is left to the noise-matrix posterior.

    A two-component fit always finds a "noisy" component: on a clean table it fits the upper
    tail of correct rows (mean ``p_given`` ~0.8 on the benchmark's clean tables, 0.99 on near-clean
    MNIST), and its count, ``#{p_noisy > 0.8}``, then takes in every clipped row: 5% of the table
    or more. A likelihood-ratio or BIC test against one component does not tell the two apart:
    clean losses are J-shaped, not Beta, so thousands of rows always favour two components, and
    the moment-matched EM's likelihood is not a maximum to test with.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clean = -np.log(rng.beta(30, 1, 5000))                          # p_given near 1
    >>> noisy = np.concatenate([clean, -np.log(rng.beta(1, 6, 1500))])  # + rows the model rejects
    >>> noisy_component_present(fit_loss_mixture(clean)), noisy_component_present(fit_loss_mixture(noisy))
    (False, True)
    """
    return bool(mix.fit is not None and mix.noisy_mean_loss > NOISY_COMPONENT_MIN_LOSS
                and mix.fit.weights[mix.fit.noisy] >= NOISY_COMPONENT_MIN_SHARE)


def _loss_threshold(mix: LossMixture, noisy_threshold: float) -> float:
    """The smallest loss whose ``p_noisy`` exceeds ``noisy_threshold`` (inf if none), by bisection.

    ``p_noisy`` is non-decreasing in the loss, and losses lie in ``[0, -log 1e-12]``
    (:func:`cross_entropy`).
    """
    def above(loss):
        return mix.p_noisy(np.array([loss]))[0] > noisy_threshold

    lo, hi = 0.0, float(-np.log(_LOSS_FLOOR))
    if not above(hi):
        return np.inf
    if above(lo):
        return lo
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if above(mid) else (mid, hi)
    return hi


def mixture_exceeds_null(mix: LossMixture, pred_probs, observed: int, *,
                        noisy_threshold: float = NOISY_THRESHOLD, z: float = NULL_EXCESS_Z,
                        block_rows: int | None = None) -> bool:
    """The component test's third part: more high-loss rows than the model itself predicts?

    If every label were drawn from the out-of-fold probabilities (labels as the model expects
    them, no errors beyond its own uncertainty), row ``n`` would land in the mixture's count
    ``#{p_noisy > noisy_threshold}`` with probability ``q_n = sum_j p_nj [p_noisy(-log p_nj) >
    noisy_threshold]``. The count ``observed`` must exceed that null's mean ``sum q_n`` by ``z``
    standard deviations, ``sqrt(sum q_n (1 - q_n))``.

    A weak model's high-loss rows are as many as its own uncertainty predicts (a 79%-accurate
    model on clean labels: 2,944 counted, 3,161 expected), so its count measures the model, not
    the labels; label noise that the model does not absorb adds rows beyond the null (digits,
    25% instance-dependent noise: 468 counted, 305 expected). Noise a calibrated model absorbs
    entirely cannot be told from clean labels this way, and is then left to the posterior.

    One pass over ``pred_probs``.
    """
    if mix.fit is None:
        return False
    cut = null_cut(mix, noisy_threshold)
    if cut <= _LOSS_FLOOR:  # losses are floored there: no cell can count
        return observed > z

    parts = map_blocks(lambda start, stop, block: null_moments(block, cut), pred_probs, block_rows)
    mean, var = functools.reduce(ExactSums.merge, parts, empty_sums(2)).totals()
    return null_exceeded(observed, mean, var, z)


def null_cut(mix: LossMixture, noisy_threshold: float) -> float:
    """The probability below which a cell counts in :func:`mixture_exceeds_null`'s null."""
    # p_noisy is non-decreasing in the loss, so a cell counts exactly when p < exp(-L*): one
    # comparison per cell instead of a posterior per cell.
    return float(np.exp(-_loss_threshold(mix, noisy_threshold)))


def null_moments(block: np.ndarray, cut: float):
    """Exact-sum partial of the null's ``sum q_n`` and ``sum q_n (1 - q_n)`` over a block of rows.

    Exact sums (:mod:`~cleanpipe.detect.exactsum`), so the test gives the same answer for any
    split of the rows.
    """
    # in the block's own dtype (no float64 copy of the block); each row's q in float64
    q = np.where(block < block.dtype.type(cut), block, 0).sum(axis=1, dtype=np.float64)
    return exact_group_sums(np.concatenate([q, q * (1.0 - q)]),
                            np.repeat(np.arange(2), len(q)), 2)


def null_exceeded(observed: int, mean: float, var: float, z: float = NULL_EXCESS_Z) -> bool:
    """``observed > mean + z sqrt(max(var, 1))``: the count beats the null by ``z`` deviations."""
    return bool(observed > mean + z * np.sqrt(max(var, 1.0)))


@dataclass(frozen=True)
class Detection:
    """Per-row results and the estimates behind them.

    Attributes
    ----------
    is_label_issue : ndarray of shape (n_samples,), bool
    label_score : ndarray of shape (n_samples,)
        In [0, 1]; higher = more likely correct.
    p_noisy : ndarray of shape (n_samples,)
        Posterior of the high-loss mixture component.
    predicted : ndarray of shape (n_samples,), int
    loss : ndarray of shape (n_samples,)
        Cross-entropy ``-log p_given``.
    confident : ConfidentLearning
    mixture : LossMixture
    method : str
    """

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_noisy: np.ndarray
    predicted: np.ndarray
    loss: np.ndarray
    confident: ConfidentLearning
    mixture: LossMixture
    method: str


def label_quality(labels: np.ndarray, pred_probs, cl: ConfidentLearning, *,
                  block_rows: int | None = None, alongside=None):
    """The default ``label_score``: posterior that the given label is the true one.

    Under a noise model ``T = P(given | true)`` estimated from confident learning's calibrated
    joint (:func:`~cleanpipe.detect.confident.posterior_noise_matrix`: smoothed, and symmetric
    unless the data support a class-conditional pattern), with the out-of-fold probabilities
    standing in for ``P(true | x)``:

    ``P(true = given | x, given) = T[given, given] p_given / sum_j T[given, j] p_j``.

    It is 1 when the model and the noise estimate agree that the label is right and falls as the
    other classes, weighted by how often they are mislabeled as the given one, take over. Under
    the symmetric matrix it is a monotone function of ``p_given`` (self-confidence's order).

    With ``alongside`` (a callable), it runs during the pass (see :func:`map_blocks`) and
    ``(label_score, alongside())`` is returned.
    """
    t, _ = posterior_noise_matrix(cl.calibrated_joint, pattern_joint=cl.anchor_joint)
    return posterior_scores(labels, pred_probs, t, cl.p_given, block_rows=block_rows,
                            alongside=alongside)


def posterior_scores(labels: np.ndarray, pred_probs, t: np.ndarray, p_given: np.ndarray, *,
                     block_rows: int | None = None, alongside=None):
    """:func:`label_quality` under a given noise matrix ``t``: each row's score from that row alone."""
    t_cast = {np.dtype(np.float32): t.astype(np.float32), np.dtype(np.float64): t}
    out = np.empty(len(labels), dtype=np.float64)

    def score(start, stop, block):
        given = labels[start:stop]
        # sum_j T[g, j] p_j row by row: O(N K). A per-row dot (einsum) rather than BLAS, so the
        # result does not depend on how many rows a block holds, and no product matrix.
        den = np.einsum("ij,ij->i", t_cast[block.dtype].take(given, axis=0), block).astype(np.float64)
        num = t[given, given] * p_given[start:stop]
        out[start:stop] = np.divide(num, den, out=np.ones_like(num), where=den > 0)

    walked = map_blocks(score, pred_probs, block_rows, alongside=alongside)
    np.clip(out, 0.0, 1.0, out=out)
    return out if alongside is None else (out, walked[1])


def expected_f1_count(error_prob: np.ndarray, eligible: np.ndarray, *,
                      wrong_rows: float | None = None) -> int:
    """How many rows to flag to maximise the expected F1, given each row's probability of error.

    Parameters
    ----------
    error_prob : ndarray of shape (n_samples,)
        ``q_n``, the probability that row ``n`` is wrongly labelled (``1 - label_score``).
    eligible : ndarray of shape (n_samples,), bool
        Rows that may be flagged.
    wrong_rows : float, optional
        ``T``, the expected number of wrongly labelled rows, those that cannot be flagged included
        (F1's denominator counts every wrong row). Default: ``sum q`` over the eligible rows (the
        others taken as surely right).

    Returns
    -------
    int
        ``argmax_k 2 sum_{i <= k} q_(i) / (k + T)`` over the eligible ``q`` in decreasing order; 0
        when no eligible row has ``q > 0``.

    Notes
    -----
    Flagging the ``k`` most probable errors gives ``E[TP] = sum_{i <= k} q_(i)`` and
    ``E[#errors] = sum_n q_n``; the ratio above is the plug-in estimate of the expected F1 (Ye,
    Chai, Lee & Chieu, "Optimizing F-measures: a tale of two approaches", ICML 2012).

    No sort is needed: with ``f(k) = S_k / (k + T)``, adding the next row helps exactly when its
    ``q > f(k)``, so ``f`` rises then falls and its first maximiser takes every ``q > f*``. The
    threshold ``t <- f({q > t})`` from ``t = 0`` climbs to ``f*`` in a few passes (Dinkelbach's
    iteration for a ratio). The sums are exact (:mod:`~cleanpipe.detect.exactsum`): the count
    does not depend on the order of the rows.

    Examples
    --------
    >>> expected_f1_count(np.array([0.9, 0.8, 0.1, 0.05]), np.ones(4, dtype=bool))
    2
    >>> expected_f1_count(np.array([0.9, 0.8, 0.4, 0.0]), np.ones(4, dtype=bool))
    2
    >>> expected_f1_count(np.array([0.9, 0.8, 0.4, 0.0]), np.ones(4, dtype=bool), wrong_rows=5.0)
    3
    """
    q = np.asarray(error_prob, dtype=np.float64)[eligible]
    eligible_total = exact_sum(q)
    if not eligible_total > 0:
        return 0
    total = eligible_total if wrong_rows is None else max(float(wrong_rows), eligible_total)
    threshold = 0.0
    while True:
        taken = q[q > threshold]
        ratio, done = dinkelbach_step(threshold, len(taken), exact_sum(taken), total)
        if done:
            return len(taken)
        threshold = ratio


def dinkelbach_step(threshold: float, n_taken: int, taken_sum: float, total: float):
    """One step of :func:`expected_f1_count`'s iteration: ``(ratio, done)``.

    ``n_taken`` and ``taken_sum`` count and (exactly) sum the eligible ``q > threshold``; the sums
    are exact so that partitions merged give the in-memory count.
    """
    ratio = taken_sum / (n_taken + total)
    return ratio, bool(ratio <= threshold)


def _combined_flags(cl: ConfidentLearning, labels: np.ndarray, p_noisy: np.ndarray, score: np.ndarray,
                    disagrees: np.ndarray, noisy_threshold: float = NOISY_THRESHOLD, *,
                    pruned: np.ndarray | None = None, mixture_counts: bool = True,
                    error_prob: np.ndarray | None = None) -> np.ndarray:
    """The default rule: how many from three estimates, which from ``label_score``.

    1. ``k0 = expected_f1_count(error_prob)``: the count that maximises the expected F1 under the
       noise-matrix posterior (``error_prob`` from the temperature-calibrated, noise-inverted
       probabilities, :func:`~cleanpipe.detect.temperature.count_error_prob`; ``1 -
       label_score`` if not given), or the loss mixture's count ``#{p_noisy >
       noisy_threshold}`` when it is larger and the mixture passes :func:`noisy_component_present`
       (sizeable instance-dependent errors look plausible to the model, so the posterior misses
       them, but their loss gives them away).
    2. ``P``, the rows cleanlab's per-cell rule prunes (:func:`flags_by_cell_margin`). Both are
       estimates with sampling error of order ``sqrt(k0)``: when ``|P| > k0``, ``k = min(|P|, k0 +
       Z sqrt(k0))`` with ``Z = 2``, otherwise ``k = k0``.
    3. Rows are ranked by ``label_score`` lowered by ``Z`` standard errors for rows in ``P``:
       ``score - Z * score (1 - score) / sqrt(C[given, predicted])``, the delta-method error of the
       posterior from the noise-matrix cell it leans on (``C`` the calibrated joint). On large data
       that is a tie-break; on small data, where a cell holds a handful of rows, the two rules'
       agreement outweighs a noisy posterior. The ``k`` lowest are flagged, except rows whose
       arg-max class is their given label.
    """
    k, rank_by = combined_count_and_rank(cl, labels, p_noisy, score, disagrees, noisy_threshold,
                                         pruned=pruned, mixture_counts=mixture_counts,
                                         error_prob=error_prob)
    flags = np.zeros(len(score), dtype=bool)
    if k > 0:
        flags[_lowest(rank_by, k)] = True
    return flags & disagrees


def combined_count_and_rank(cl: ConfidentLearning, labels: np.ndarray, p_noisy: np.ndarray,
                            score: np.ndarray, disagrees: np.ndarray,
                            noisy_threshold: float = NOISY_THRESHOLD, *,
                            pruned: np.ndarray | None = None, mixture_counts: bool = True,
                            error_prob: np.ndarray | None = None):
    """The number of rows ``k`` the combined rule flags and the order it takes them in.

    ``pruned``, if given, is :func:`flags_by_cell_margin` already computed. ``mixture_counts``:
    whether the mixture's count may raise ``k`` (the outcome of :func:`noisy_component_present`).
    ``error_prob``: each row's probability of error for the expected-F1 count, over every row
    (the rows that cannot be flagged count in F1's denominator); default ``1 - score`` over the
    rows that may be flagged.

    Returns
    -------
    k : int
    rank_by : ndarray of shape (n_samples,)
        Lowest first; ``label_score`` minus the standard-error shift of the rows in cleanlab's
        per-cell pruning (see :func:`_combined_flags`).
    """
    if error_prob is None:
        k0 = expected_f1_count(1.0 - score, disagrees)
    else:
        k0 = expected_f1_count(error_prob, disagrees, wrong_rows=exact_sum(error_prob))
    if mixture_counts:
        k0 = max(k0, int(np.count_nonzero(p_noisy > noisy_threshold)))
    if pruned is None:
        pruned = flags_by_cell_margin(cl, labels)
    k = combined_count(k0, int(np.count_nonzero(pruned)))
    return k, shifted_rank(score, pruned, cl.calibrated_joint, labels, cl.predicted)


def combined_count(k0: int, n_pruned: int) -> int:
    """``k``: ``k0`` moved up towards the per-cell count ``n_pruned`` within ``Z sqrt(k0)``."""
    return min(n_pruned, int(k0 + _Z * np.sqrt(k0))) if n_pruned > k0 else k0


def shifted_rank(score: np.ndarray, pruned: np.ndarray, calibrated_joint: np.ndarray,
                 labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``rank_by`` of :func:`combined_count_and_rank`; each row's from that row alone."""
    # Only the pruned rows move: the shift is computed for them alone.
    rows = np.flatnonzero(pruned)
    s = score[rows]
    cell = calibrated_joint[labels[rows], predicted[rows]]
    rank_by = score.copy()
    rank_by[rows] = s - _Z * s * (1.0 - s) / np.sqrt(np.maximum(cell, 1))
    return rank_by


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The ``k``-th smallest value (1-based), partitioning only the values below a sampled bound.

    A strided sample bounds the answer from above with a few standard errors to spare; when the
    bound holds (at least ``k`` values at or under it, checked exactly) only those are
    partitioned, otherwise all of them. Either way the result is exact.
    """
    n = len(values)
    step = max(1, n // 16384)
    if step > 1:
        sample = np.sort(values[::step])
        q = k / n
        slack = 4.0 * np.sqrt(q * (1 - q) / len(sample)) + 2.0 / len(sample)
        bound = sample[min(len(sample) - 1, int(np.ceil((q + slack) * len(sample))))]
        below = values[values <= bound]
        if len(below) >= k:
            return np.partition(below, k - 1)[k - 1]
    return np.partition(values, k - 1)[k - 1]


def _lowest(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest scores in O(N).

    Rows tied at the boundary are taken all together or not at all, so the chosen set does not
    depend on row order (it may then hold fewer than ``k`` rows).
    """
    if k >= len(score):
        return np.arange(len(score))
    kth = _kth_smallest(score, k)
    at_most = np.flatnonzero(score <= kth)
    return at_most if len(at_most) <= k else np.flatnonzero(score < kth)


def cross_entropy(p_given: np.ndarray) -> np.ndarray:
    """Per-row loss ``-log p_given`` as float32 (floored at 1e-12), chunk by chunk (:func:`row_chunks`)."""
    out = np.empty(len(p_given), dtype=np.float32)
    for s, e in row_chunks(len(p_given)):
        chunk = np.maximum(p_given[s:e], _LOSS_FLOOR)
        out[s:e] = np.negative(np.log(chunk, out=chunk), out=chunk)
    return out


def detect(labels: np.ndarray, pred_probs, *, method: str = DEFAULT_METHOD, mixture: str = DEFAULT_MIXTURE,
           noisy_threshold: float | None = None, block_rows: int | None = None) -> Detection:
    """Score and flag rows of validated inputs (see :func:`cleanpipe.find_label_issues`).

    Notes
    -----
    The default ``"combined"`` rule ranks rows by ``label_score`` (the posterior that the given
    label is true under the estimated noise matrix, :func:`label_quality`) and flags the ``k``
    lowest, except rows whose arg-max class is their given label; ``k`` is the count that
    maximises the expected F1 under that posterior, read off temperature-calibrated, noise-inverted
    probabilities (:mod:`cleanpipe.detect.temperature`), or, when the mixture passes its component test
    (:func:`noisy_component_present` and :func:`mixture_exceeds_null`), the number of rows with
    ``p_noisy > noisy_threshold`` if larger, moved up towards cleanlab's per-cell count within two
    standard errors; rows cleanlab's per-cell rule also prunes rank up to two standard errors of
    their score earlier (see :func:`_combined_flags`). Other methods: ``noise_rate`` (confident
    learning, prune by noise rate, each row in its arg-max cell), ``per_class`` (prune by class,
    ranked by self-confidence), ``both`` (their intersection), ``mixture`` (``p_noisy >
    noisy_threshold`` and arg-max differs from the label). ``noisy_threshold`` None: the
    method's default (:func:`cleanpipe.settings.default_noisy_threshold`).
    """
    if noisy_threshold is None:
        noisy_threshold = default_noisy_threshold(method)
    cl = confident_learning(labels, pred_probs, block_rows=block_rows)

    def from_confident_learning():
        # Needs only `cl`, not label_score: runs on a core of its own during the label_score pass.
        loss = cross_entropy(cl.p_given)
        mix = fit_loss_mixture(loss, family=mixture)
        pruned = flags_by_cell_margin(cl, labels) if method == "combined" else None
        return loss, mix, mix.p_noisy(loss), pruned

    # label_quality's noise matrix, kept: the combined rule's count reads it too
    t, _ = posterior_noise_matrix(cl.calibrated_joint, pattern_joint=cl.anchor_joint)
    score, (loss, mix, p_noisy, pruned) = posterior_scores(
        labels, pred_probs, t, cl.p_given, block_rows=block_rows, alongside=from_confident_learning)
    disagrees = cl.predicted != labels
    if method == "combined":
        counts = noisy_component_present(mix) and mixture_exceeds_null(
            mix, pred_probs, int(np.count_nonzero(p_noisy > noisy_threshold)),
            noisy_threshold=noisy_threshold, block_rows=block_rows)
        temperature = fit_temperature(labels, pred_probs, p_given=cl.p_given, block_rows=block_rows)
        error_prob = count_error_prob(labels, pred_probs, t, temperature, block_rows=block_rows)
        flags = _combined_flags(cl, labels, p_noisy, score, disagrees, noisy_threshold,
                                pruned=pruned, mixture_counts=counts, error_prob=error_prob)
    elif method == "noise_rate":
        flags = flags_by_noise_rate(cl, labels)
    elif method == "per_class":
        flags = flags_by_class(cl, labels)
    elif method == "both":
        flags = flags_by_noise_rate(cl, labels) & flags_by_class(cl, labels)
    elif method == "mixture":
        flags = (p_noisy > noisy_threshold) & disagrees
    else:
        raise ValueError(f"unknown method {method!r}")
    return Detection(flags, score, p_noisy, cl.predicted, loss, cl, mix, method)
