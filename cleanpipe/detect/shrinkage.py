"""How far a class-conditional noise matrix may stray from the symmetric one: empirical Bayes.

:func:`~cleanpipe.detect.confident.posterior_noise_matrix` chooses between one symmetric noise
rate and a class-conditional pattern by a BIC test on the anchors (the rows the model is surest
of). When the pattern wins, each column of the class-conditional matrix was estimated on its own,
from a handful of anchor rows on small tables, so a column that came out unusual by chance
reorders rows as much as a real pair flip would. Here each column is shrunk towards the symmetric
matrix, as far as the anchors themselves say the columns differ:

- each column's noise rate ``r_j`` has a Beta prior with the pooled rate as its mean and a
  concentration ``s`` (how alike the columns' rates are);
- each column's split of its off-diagonal mass over the other classes has a symmetric Dirichlet
  prior with concentration ``a`` (how close to even the splits are).

``s`` and ``a`` are fitted by maximum marginal likelihood (beta-binomial and Dirichlet-multinomial)
on the anchor joint; an infinite one (the columns no more different than sampling explains) means
the symmetric value. The posterior mean of column ``j`` then mixes the column's own estimate with
the symmetric one, with weight ``n_j / (n_j + s)`` on its own rate and ``m_j / (m_j + a)`` on its own
split (``n_j`` anchors of class ``j``, ``m_j`` of them given another label). Under symmetric noise
that the BIC test took for a pattern by chance the weights are small and ``label_score`` stays
close to self-confidence's order; a real pair pattern (off-diagonal mass piled on one class per
column) fits a small ``a``, weights near 1, and keeps its matrix.

Everything here is a function of two small joint matrices, so any partitioning of the rows that
merges those (:mod:`cleanpipe.detect.partitioned`) gets the same matrix.

References
----------
Minka, "Estimating a Dirichlet distribution", 2000 (the Dirichlet-multinomial likelihood);
Efron & Morris, "Stein's estimation rule and its competitors", JASA 1973 (shrinking many column
estimates towards a pooled one by a prior fitted to them).
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln

#: The concentrations searched, on a log grid: ``exp(-4)`` (each column on its own) to ``exp(16)``
#: (~9e6 prior rows: the symmetric matrix for any table). A grid, not a root finder: the marginal
#: likelihood can be flat or have its maximum at the boundary, and 401 points cost nothing next to
#: one pass over the rows.
_LOG_CONCENTRATIONS = np.linspace(-4.0, 16.0, 401)


def _column_counts(joint: np.ndarray):
    """``(n, m, off)``: per column ``j`` (true class) its rows, its off-diagonal rows and the
    ``(K - 1, K)`` off-diagonal counts, column ``j``'s other classes in order."""
    c = np.asarray(joint, dtype=np.float64)
    k = len(c)
    eye = np.eye(k, dtype=bool)
    off = c.T[~eye].reshape(k, k - 1).T
    return c.sum(axis=0), off.sum(axis=0), off


def rate_concentration(joint: np.ndarray) -> float:
    """``s``: the Beta prior's concentration on the columns' noise rates (``inf``: all alike).

    Maximises the beta-binomial marginal likelihood of each column's off-diagonal count ``m_j`` of
    ``n_j`` rows, the prior's mean fixed at the pooled rate ``(sum m + 1) / (sum n + 2)`` (smoothed
    as the symmetric matrix's rate is), over :data:`_LOG_CONCENTRATIONS`; ``inf`` when the
    binomial (one shared rate) fits at least as well, or no anchor is off the diagonal.

    Examples
    --------
    >>> rate_concentration(np.array([[90, 10], [10, 90]]))
    inf
    >>> bool(rate_concentration(np.array([[95, 40], [5, 60]])) < 100)
    True
    """
    n, m, _ = _column_counts(joint)
    keep = n > 0
    n, m = n[keep], m[keep]
    # With no off-diagonal rows (or only those) there is no spread between the columns to fit.
    if len(n) < 2 or m.sum() == 0 or m.sum() == n.sum():
        return float("inf")
    # the pooled rate smoothed as the symmetric matrix's own (rule of succession)
    mu = (m.sum() + 1.0) / (n.sum() + 2.0)
    s = np.exp(_LOG_CONCENTRATIONS)[:, None]
    # the binomial coefficients are common to both models and cancel
    ll = np.sum(betaln(m + s * mu, n - m + s * (1.0 - mu)) - betaln(s * mu, s * (1.0 - mu)), axis=1)
    ll_shared = float(np.sum(m * np.log(mu) + (n - m) * np.log1p(-mu)))
    return _fitted(ll, ll_shared)


def share_concentration(joint: np.ndarray) -> float:
    """``a``: the symmetric Dirichlet prior's concentration on each column's off-diagonal split.

    Maximises the Dirichlet-multinomial marginal likelihood of the columns' off-diagonal counts
    (prior mean: an even split over the ``K - 1`` other classes) over :data:`_LOG_CONCENTRATIONS`;
    ``inf`` when the even split fits at least as well, and for ``K < 3`` (one other class: nothing
    to split).

    Examples
    --------
    >>> share_concentration(np.array([[50, 5, 5], [5, 50, 5], [5, 5, 50]]))
    inf
    >>> bool(share_concentration(np.array([[50, 0, 10], [10, 50, 0], [0, 10, 50]])) < 1)
    True
    """
    c = np.asarray(joint, dtype=np.float64)
    k = len(c)
    if k < 3:
        return float("inf")
    _, m, off = _column_counts(c)
    a = np.exp(_LOG_CONCENTRATIONS)
    per_cell = a[:, None] / (k - 1)
    # an empty cell adds gammaln(0 + x) - gammaln(x) = 0: only the occupied cells enter, so the
    # grid costs (grid x occupied cells), at most the anchors' count, not grid x K^2
    hit = off[off > 0]
    ll = (np.sum(gammaln(a[:, None]) - gammaln(m[None, :] + a[:, None]), axis=1)
          + np.sum(gammaln(hit[None, :] + per_cell) - gammaln(per_cell), axis=1))
    ll_even = float(np.sum(off) * np.log(1.0 / (k - 1)))
    return _fitted(ll, ll_even)


def _fitted(ll: np.ndarray, ll_limit: float) -> float:
    """The grid's maximiser of ``ll``, or ``inf`` when the limit model (infinite concentration)
    fits as well.

    A relative 1e-12 keeps round-off at the top of the grid (``exp(16)``, the limit within ~1e-7)
    from passing for a better fit.
    """
    best = int(np.argmax(ll))
    if ll[best] > ll_limit + 1e-12 * max(abs(ll_limit), 1.0):
        return float(np.exp(_LOG_CONCENTRATIONS[best]))
    return float("inf")


def column_weights(pattern_joint: np.ndarray):
    """``(w, v)``: how much of each column's own rate (``w``) and split (``v``) to keep, in [0, 1].

    ``w_j = n_j / (n_j + s)`` and ``v_j = m_j / (m_j + a)`` on the anchor joint's counts, ``s`` and
    ``a`` from :func:`rate_concentration` and :func:`share_concentration` (0 where they are
    infinite): the weight a Beta / Dirichlet posterior mean puts on the column's own estimate.
    """
    n, m, _ = _column_counts(pattern_joint)
    s, a = rate_concentration(pattern_joint), share_concentration(pattern_joint)
    w = n / (n + s) if np.isfinite(s) else np.zeros_like(n)
    v = m / (m + a) if np.isfinite(a) else np.zeros_like(m)
    return w, v


def shrunk_noise_matrix(own_rate: np.ndarray, own_share: np.ndarray, rate: float,
                        pattern_joint: np.ndarray) -> np.ndarray:
    """The class-conditional matrix with each column moved towards the symmetric one.

    Parameters
    ----------
    own_rate : ndarray of shape (n_classes,)
        Each column's own (smoothed) noise rate.
    own_share : ndarray of shape (n_classes, n_classes)
        Each column's own split of its noise over the given classes (diagonal ignored; each
        column's off-diagonal entries sum to 1).
    rate : float
        The symmetric matrix's one rate.
    pattern_joint : ndarray of shape (n_classes, n_classes)
        The joint the weights are fitted on (the anchors, :func:`column_weights`).

    Returns
    -------
    ndarray of shape (n_classes, n_classes)
        ``P(given | true)`` indexed ``[given, true]``; columns sum to 1.

    Notes
    -----
    ``r_j = w_j own_rate_j + (1 - w_j) rate`` and, off the diagonal,
    ``T[i, j] = r_j (v_j own_share[i, j] + (1 - v_j) / (K - 1))``; ``T[j, j] = 1 - r_j``.
    """
    k = len(own_rate)
    w, v = column_weights(pattern_joint)
    col_rate = w * own_rate + (1.0 - w) * rate
    share = v[None, :] * own_share + (1.0 - v[None, :]) / max(k - 1, 1)
    return np.where(np.eye(k, dtype=bool), 1.0 - col_rate[None, :], share * col_rate[None, :])
