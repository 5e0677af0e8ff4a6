"""Evidence for the label detector from outside the model: the labels of a row's duplicates."""

from __future__ import annotations

import numpy as np


def with_duplicate_labels(pred_probs: np.ndarray, labels: np.ndarray, sets: np.ndarray, *,
                          noise: float) -> np.ndarray:
    """Out-of-fold probabilities of rows in duplicate sets, updated by the other labels of their set.

    Rows of one set (equal or near-equal features) share one true class, and each labelled
    member's given label is a noisy report of it. Under symmetric noise at rate ``noise``, a
    report of class ``j`` multiplies the odds of ``j`` by ``(1 - noise) (K - 1) / noise``; each
    row's probabilities are multiplied by the reports of the *other* members of its set and
    renormalised (its own label is what the detector judges, so it is left out). Where a set's
    labels disagree, the minority label loses the model's support; where they agree, the
    agreed label gains it.

    Parameters
    ----------
    pred_probs : ndarray of shape (n_samples, n_classes)
    labels : ndarray of shape (n_samples,), int
        Given labels, -1 for unlabelled rows (they report nothing).
    sets : ndarray of shape (n_samples,), int
        Duplicate set of each row, -1 for none (``duplicate_set`` of :func:`cleanpipe.checks.run_checks`).
    noise : float
        Assumed share of wrong labels, in ``[0, (K - 1) / K)`` (beyond it a report would count
        against the class it names); 0 returns ``pred_probs`` unchanged.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        ``pred_probs`` itself when no set holds two labelled rows, else a float64 copy with the
        set members' rows updated.

    Examples
    --------
    >>> p = np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.5, 0.5]])
    >>> with_duplicate_labels(p, np.array([1, 1, 0, 0]), np.array([0, 0, 0, -1]), noise=0.2).round(3)
    array([[0.6  , 0.4  ],
           [0.6  , 0.4  ],
           [0.086, 0.914],
           [0.5  , 0.5  ]])
    """
    sets = np.asarray(sets)
    labels = np.asarray(labels)
    k = pred_probs.shape[1]
    member = (sets >= 0) & (labels >= 0)
    if noise <= 0 or k < 2 or not member.any():
        return pred_probs
    rows = np.flatnonzero(sets >= 0)
    ids, inv = np.unique(sets[rows], return_inverse=True)
    counts = np.zeros((len(ids), k), dtype=np.float64)
    lab = labels[rows]
    np.add.at(counts, (inv[lab >= 0], lab[lab >= 0]), 1.0)
    others = counts[inv]
    own = lab >= 0
    others[np.flatnonzero(own), lab[own]] -= 1.0
    if not others.any():
        return pred_probs
    log_ratio = np.log((1.0 - noise) * (k - 1) / noise)
    out = np.array(pred_probs, dtype=np.float64)
    logp = np.log(np.maximum(out[rows], 1e-300)) + others * log_ratio
    logp -= logp.max(axis=1, keepdims=True)
    upd = np.exp(logp)
    out[rows] = upd / upd.sum(axis=1, keepdims=True)
    return out
