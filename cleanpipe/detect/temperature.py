"""How many rows are wrong: the error probabilities behind the combined rule's count.

``label_score`` (:func:`~cleanpipe.detect.combine.label_quality`) ranks rows; the combined rule's
count, the number that maximises the expected F1, needs each row's probability of error on an
absolute scale. Two things bias that scale when it is read straight off the out-of-fold
probabilities:

1. **Confidence.** An over-confident model (a deep network's 96% mean confidence at 93% accuracy
   on CIFAR-10's test set) puts near-zero probability on the given label of every row it gets
   wrong, so each of its own mistakes looks like a certain label error and the count swells; an
   under-confident one (the average of a boosted model and a logistic regression on two-class
   tables) shrinks the count. One temperature, fitted to the given labels
   (:func:`fit_temperature`), puts the probabilities on the scale of the labels they were trained
   on (Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017).
2. **Noise.** Probabilities fitted to noisy labels estimate ``P(given | x) = sum_j T[given, j]
   P(true = j | x)``, not ``P(true | x)``: treating them as the latter counts the noise twice on
   a noisy table. :func:`count_error_prob` inverts the noise matrix first.

Only the count uses these probabilities; the ranking stays ``label_score``'s.
"""

from __future__ import annotations

import numpy as np

from ._validate import map_blocks
from .confident import _gather_given

#: Search range of ``log(temperature)``: temperatures from 1/20 to 20.
_LOG_T_RANGE = (-3.0, 3.0)
#: Golden-section steps: the bracket shrinks to ``6 * 0.618**30`` ~ 3e-6 in ``log T``.
_GOLDEN_STEPS = 30
#: About this many cells (rows x classes) of ``pred_probs`` enter the fit: a hashed sample of the
#: rows (:func:`fit_sample`), so the fit costs a bounded amount of memory and time on any table.
MAX_FIT_CELLS = 200_000
_PROB_FLOOR = 1e-12


def _row_hash(labels: np.ndarray, p_given: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's (given label, ``p_given``): splitmix64's finaliser.

    A function of the row's own values, not of its position, so a partition can tell which of
    its rows are in the fit's sample without knowing where it starts.
    """
    x = np.asarray(p_given, dtype=np.float64).view(np.uint64).copy()
    x ^= np.asarray(labels, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def fit_sample(labels: np.ndarray, p_given: np.ndarray, n_rows: int, n_classes: int,
               max_cells: int = MAX_FIT_CELLS) -> np.ndarray:
    """Which rows enter :func:`fit_temperature`'s fit (a boolean mask over the given rows).

    Every row when the table holds at most ``max_cells`` cells; otherwise each row with
    probability ``max_cells / (n_rows * n_classes)``, by a hash of its label and ``p_given``
    (:func:`_row_hash`): about ``max_cells`` cells, the same rows whether the table is read whole
    or partition by partition.
    """
    share = max_cells / max(n_rows * n_classes, 1)
    if share >= 1.0:
        return np.ones(len(labels), dtype=bool)
    return _row_hash(labels, p_given) < np.uint64(int(share * 2.0**64))


def sample_log_probs(labels: np.ndarray, pred_probs, rows: np.ndarray, block_rows=None):
    """``(log pred_probs[rows] (floored), labels[rows])``: the fit's input, rows in order."""
    k = pred_probs.shape[1]

    def take(start, stop, block):
        lo, hi = np.searchsorted(rows, [start, stop])
        sub = np.take(block, rows[lo:hi] - start, axis=0).astype(np.float64)
        return np.log(np.maximum(sub, _PROB_FLOOR, out=sub), out=sub)

    parts = map_blocks(take, pred_probs, block_rows) if len(rows) else []
    log_p = np.concatenate(parts, axis=0) if parts else np.zeros((0, k))
    return log_p, labels[rows]


def _nll(log_p: np.ndarray, given: np.ndarray, log_t: float) -> float:
    """Mean negative log-likelihood of ``given`` under ``softmax(log_p / exp(log_t))``."""
    z = log_p / np.exp(log_t)
    top = z.max(axis=1)
    lse = np.log(np.exp(z - top[:, None]).sum(axis=1)) + top
    return float(np.mean(lse - z[np.arange(len(given)), given]))


def fit_temperature(labels: np.ndarray, pred_probs, *, p_given: np.ndarray | None = None,
                    block_rows: int | None = None, max_cells: int = MAX_FIT_CELLS) -> float:
    """The temperature ``T`` that makes ``softmax(log p / T)`` fit the given labels best.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold probabilities (an ndarray, memmap or any row-sliceable array).
    block_rows : int, optional
        Rows per block when reading ``pred_probs``.
    p_given : ndarray of shape (n_samples,), optional
        ``pred_probs[n, labels[n]]`` if already at hand (it picks the sample).
    max_cells : int, default=MAX_FIT_CELLS
        Fit on about this many cells: the rows :func:`fit_sample` picks.

    Returns
    -------
    float
        In ``[exp(-3), exp(3)]``; above 1 softens over-confident probabilities, below 1 sharpens
        under-confident ones. 1 when the labels hold one class only.

    Notes
    -----
    Minimises the mean log-loss of the given labels over ``log T`` by golden-section search
    (the log-loss of a temperature-scaled softmax is convex in ``1 / T``, so the search finds
    its minimum). Out-of-fold probabilities were not fitted on the rows they score, so the
    labels can calibrate them without the optimism of an in-sample fit.

    Examples
    --------
    >>> p = np.array([[0.99, 0.01], [0.99, 0.01], [0.99, 0.01], [0.01, 0.99]])
    >>> bool(fit_temperature(np.array([0, 0, 1, 1]), p) > 1)   # one confident row is wrong
    True
    """
    n, k = pred_probs.shape
    if n == 0 or k < 2 or len(np.unique(labels)) < 2:
        return 1.0
    if p_given is None:
        p_given = _gather_given(labels, pred_probs, block_rows)
    rows = np.flatnonzero(fit_sample(labels, p_given, n, k, max_cells))
    return temperature_from_sample(*sample_log_probs(labels, pred_probs, rows, block_rows))


def temperature_from_sample(log_p: np.ndarray, given: np.ndarray) -> float:
    """:func:`fit_temperature`'s search on its sample: ``log p`` rows and their given labels."""
    if len(given) == 0:
        return 1.0
    lo, hi = _LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(log_p, given, a), _nll(log_p, given, b)
    for _ in range(_GOLDEN_STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(log_p, given, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(log_p, given, b)
    return float(np.exp(0.5 * (lo + hi)))


def count_error_prob(labels: np.ndarray, pred_probs, noise_matrix: np.ndarray, temperature: float, *,
                     block_rows: int | None = None) -> np.ndarray:
    """Each row's probability that its given label is wrong, for the count (not the ranking).

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
    pred_probs : array-like of shape (n_samples, n_classes)
    noise_matrix : ndarray of shape (n_classes, n_classes)
        ``T = P(given | true)`` indexed ``[given, true]``, invertible (the smoothed matrix of
        :func:`~cleanpipe.detect.confident.posterior_noise_matrix`).
    temperature : float
        From :func:`fit_temperature`.
    block_rows : int, optional

    Returns
    -------
    ndarray of shape (n_samples,), float64
        ``q_n`` in ``[0, 1]``.

    Notes
    -----
    With ``p~ = softmax(log p / temperature)`` standing for ``P(given | x)``, the clean-class
    probabilities are ``pi = T^{-1} p~``, clipped at 0 and renormalised (the inverse of a noise
    matrix is not a stochastic map: where ``p~`` is below what the noise alone would give, the
    class gets 0), and

    ``q_n = 1 - T[g, g] pi_g / sum_j T[g, j] pi_j``,  ``g`` the given label.

    A class whose ``pi`` is 0 makes ``q = 1``: the model gives the label less probability than
    mislabelling alone would.

    Examples
    --------
    >>> t = np.array([[0.9, 0.1], [0.1, 0.9]])
    >>> count_error_prob(np.array([0, 0]), np.array([[0.95, 0.05], [0.05, 0.95]]), t, 1.0).round(3)
    array([0., 1.])
    """
    t = np.asarray(noise_matrix, dtype=np.float64)
    t_inv_t = np.linalg.inv(t).T
    out = np.empty(len(labels), dtype=np.float64)

    def error_prob(start, stop, block):
        out[start:stop] = block_error_prob(labels[start:stop], block, t, t_inv_t, temperature)

    map_blocks(error_prob, pred_probs, block_rows)
    return out


def block_error_prob(given: np.ndarray, block: np.ndarray, t: np.ndarray, t_inv_t: np.ndarray,
                     temperature: float) -> np.ndarray:
    """:func:`count_error_prob` on one block of rows (``t_inv_t = inv(t).T``); row by row, so the
    answer does not depend on how the rows are blocked or partitioned."""
    z = np.log(np.maximum(block.astype(np.float64), _PROB_FLOOR))
    z *= 1.0 / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z, out=z)
    p /= p.sum(axis=1, keepdims=True)
    pi = np.einsum("ij,jk->ik", p, t_inv_t)
    np.maximum(pi, 0.0, out=pi)
    pi /= np.maximum(pi.sum(axis=1, keepdims=True), _PROB_FLOOR)
    den = np.einsum("ij,ij->i", t.take(given, axis=0), pi)
    num = t[given, given] * pi[np.arange(len(given)), given]
    score = np.divide(num, den, out=np.ones_like(num), where=den > 0)
    return 1.0 - np.clip(score, 0.0, 1.0)
