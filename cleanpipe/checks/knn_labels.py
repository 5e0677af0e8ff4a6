"""A model-free label signal: how far a row's label agrees with its neighbours' labels.

In the spirit of SimiFeat and Datalab's kNN label check: a row whose neighbours carry another
label is suspect, whatever a model says. The score is smoothed towards the label's share of the
table, so a row with few labelled neighbours is not judged on one or two of them.
"""

from __future__ import annotations

import numpy as np


def knn_label_probs(idx: np.ndarray, labels: np.ndarray, n_classes: int, *, prior_weight: float = 1.0):
    """Class shares among each row's labelled neighbours, smoothed by the class prior.

    Parameters
    ----------
    idx : ndarray of shape (n_samples, k), int64
        Neighbours (-1 for a missing one).
    labels : ndarray of shape (n_samples,), int64
        Class codes, -1 for unlabelled.
    n_classes : int
    prior_weight : float, default=1.0
        Pseudo-count of the prior.

    Returns
    -------
    ndarray of shape (n_samples, n_classes), float64
        ``(count_k + w * prior_k) / (m + w)``, where ``m`` labelled neighbours hold ``count_k`` of
        class ``k`` and ``prior_k`` is the class's share of the labelled rows: rows sum to 1.
    """
    n, k = idx.shape
    lab = labels >= 0
    prior = np.bincount(labels[lab], minlength=n_classes).astype(np.float64)
    prior /= max(prior.sum(), 1.0)
    out = np.zeros((n, n_classes))
    nb = np.where(idx >= 0, labels[np.maximum(idx, 0)], -1)
    for j in range(k):  # over neighbours, not rows
        y = nb[:, j]
        ok = y >= 0
        out[np.flatnonzero(ok), y[ok]] += 1.0
    m = out.sum(axis=1, keepdims=True)
    return (out + prior_weight * prior) / (m + prior_weight)


def knn_label_score(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The neighbours' share of a row's own label (:func:`knn_label_probs`); NaN when unlabelled.
    Low is suspect."""
    out = np.full(len(labels), np.nan)
    lab = labels >= 0
    out[lab] = probs[np.flatnonzero(lab), labels[lab]]
    return out


def knn_assisted_issues(labels: np.ndarray, pred_probs: np.ndarray, knn_probs: np.ndarray,
                        weight: float):
    """The default label rule run on ``(1 - weight) * pred_probs + weight * knn_probs``.

    Returns
    -------
    is_issue : ndarray of shape (n_samples,), bool
        False on unlabelled rows.
    score : ndarray of shape (n_samples,), float64
        The rule's ``label_score`` on the mixed probabilities (NaN when unlabelled).
    """
    from ..api import find_label_issues

    lab = np.flatnonzero(labels >= 0)
    is_issue = np.zeros(len(labels), dtype=bool)
    score = np.full(len(labels), np.nan)
    if lab.size == 0:
        return is_issue, score
    mixed = (1 - weight) * pred_probs[lab] + weight * knn_probs[lab]
    found = find_label_issues(labels[lab], mixed / mixed.sum(axis=1, keepdims=True))
    is_issue[lab] = found["is_label_issue"].to_numpy()
    score[lab] = found["label_score"].to_numpy()
    return is_issue, score
