"""Outliers: rows far from their neighbours, and rows the model finds unlike any class.

The neighbour score is the mean distance to a row's ``k`` nearest rows. Its threshold is
calibrated on the table itself: the log score's median plus ``z`` robust standard deviations
(1.4826 x the median absolute deviation), so a table of uniform density flags few rows and the
threshold does not depend on the scale of the features.
"""

from __future__ import annotations

import numpy as np

#: 1.4826 x MAD estimates the standard deviation of a normal sample.
_MAD_TO_SD = 1.4826


def knn_distance_score(dist: np.ndarray) -> np.ndarray:
    """Mean distance to the neighbours found (``inf`` places, where fewer exist, ignored).

    Returns
    -------
    ndarray of shape (n_samples,), float64
        0 for a row whose neighbours are all copies of it; NaN for a row with no neighbour.
    """
    finite = np.isfinite(dist)
    count = finite.sum(axis=1)
    total = np.where(finite, dist, 0).sum(axis=1, dtype=np.float64)
    return np.divide(total, count, out=np.full(len(dist), np.nan), where=count > 0)


def outlier_threshold(score: np.ndarray, z: float) -> float:
    """The score above which a row is an outlier: ``exp(median + z * 1.4826 * MAD)`` of the log
    positive scores (``inf`` when there are none)."""
    s = score[np.isfinite(score) & (score > 0)]
    if s.size == 0:
        return float("inf")
    log = np.log(s)
    med = np.median(log)
    mad = _MAD_TO_SD * np.median(np.abs(log - med))
    if mad == 0:  # over half the rows at one distance: deviations of the rest are all "large"
        mad = np.std(log)
    return float(np.exp(med + z * mad)) if mad > 0 else float("inf")


def probs_ood_score(pred_probs: np.ndarray) -> np.ndarray:
    """Normalised entropy of each row's out-of-fold probabilities, in [0, 1] (1: uniform, the
    model cannot place the row in any class).

    Notes
    -----
    ``H(p) / log K`` with ``H(p) = -sum_k p_k log p_k``; 0 for a one-hot row.
    """
    K = pred_probs.shape[1]
    if K < 2:
        return np.zeros(len(pred_probs))
    p = np.clip(pred_probs, 1e-12, 1.0)
    return -(pred_probs * np.log(p)).sum(axis=1) / np.log(K)
