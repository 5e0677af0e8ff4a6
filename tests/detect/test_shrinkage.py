"""Tests for cleanpipe.detect.shrinkage: the empirical-Bayes pull of the noise matrix's columns."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betaln

from cleanpipe.detect.combine import posterior_scores
from cleanpipe.detect.confident import pattern_supported, posterior_noise_matrix
from cleanpipe.detect.shrinkage import (column_weights, rate_concentration, share_concentration,
                                        shrunk_noise_matrix)


def _symmetric_joint(per_class, rate_num, rate_den):
    """A joint ``[given, true]`` whose every column has the same rate, split evenly."""
    k = len(per_class)
    cols = []
    for n in per_class:
        off = n * rate_num // rate_den // (k - 1)
        col = np.full(k, off)
        cols.append(col)
    c = np.array(cols).T
    np.fill_diagonal(c, np.asarray(per_class) - (k - 1) * np.diag(c))
    return c


def test_equal_columns_known_answer():
    # Every column 10% off the diagonal, split evenly: nothing to learn beyond one rate.
    even = np.array([[90, 5, 5], [5, 90, 5], [5, 5, 90]])
    assert rate_concentration(even) == np.inf
    assert share_concentration(even) == np.inf
    w, v = column_weights(even)
    np.testing.assert_array_equal(w, 0.0)
    np.testing.assert_array_equal(v, 0.0)


def test_no_off_diagonal_rows_is_symmetric():
    assert rate_concentration(np.diag([10, 20, 30])) == np.inf
    assert share_concentration(np.diag([10, 20, 30])) == np.inf


def test_pair_pattern_keeps_its_split():
    pair = np.array([[70, 0, 30], [30, 70, 0], [0, 30, 70]])
    _, v = column_weights(pair)
    assert np.all(v > 0.99)


def test_rate_concentration_is_the_grid_maximiser():
    # Oracle: the beta-binomial marginal likelihood evaluated point by point.
    joint = np.array([[95, 40], [5, 60]])
    n, m = joint.sum(axis=0), np.array([5, 40])
    mu = (m.sum() + 1) / (n.sum() + 2)

    def ll(s):
        return sum(betaln(mj + s * mu, nj - mj + s * (1 - mu)) - betaln(s * mu, s * (1 - mu))
                   for mj, nj in zip(m, n))

    s = rate_concentration(joint)
    grid = np.exp(np.linspace(-4.0, 16.0, 401))
    assert np.isfinite(s)
    assert ll(s) >= max(ll(g) for g in grid) - 1e-9


def test_small_table_chance_pattern_is_pulled_towards_symmetric():
    # iris with 40% symmetric noise (benchmark seed 0): 16 anchors, a chance pattern that the
    # BIC test accepts. The shrunk matrix lies nearer the symmetric one than the raw columns.
    anchors = np.array([[6, 1, 0], [0, 0, 1], [0, 4, 4]])
    calibrated = np.array([[30, 11, 5], [13, 26, 13], [8, 13, 31]])
    assert pattern_supported(anchors)
    t, cc = posterior_noise_matrix(calibrated, pattern_joint=anchors)
    assert cc
    k = 3
    off = calibrated * (1 - np.eye(k))
    raw_rate = (off.sum(axis=0) + 1) / (calibrated.sum(axis=0) + 2)
    raw_share = (off + 0.5) / (off.sum(axis=0) + 1)
    raw = np.where(np.eye(k, dtype=bool), 1 - raw_rate, raw_share * raw_rate)
    rate = (off.sum() + 1) / (calibrated.sum() + 2)
    sym = np.where(np.eye(k, dtype=bool), 1 - rate, rate / 2)
    assert np.abs(t - sym).sum() < np.abs(raw - sym).sum()


@st.composite
def column_estimates(draw):
    k = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    own_rate = rng.uniform(0.01, 0.5, k)
    own_share = rng.dirichlet(np.ones(max(k - 1, 1)), size=k).T if k > 2 else np.ones((1, k))
    share = np.zeros((k, k))
    for j in range(k):
        share[np.arange(k) != j, j] = own_share[:, j]
    rate = float(rng.uniform(0.01, 0.5))
    joint = rng.integers(0, 40, size=(k, k)) + np.diag(rng.integers(5, 200, size=k))
    return own_rate, share, rate, joint


@settings(max_examples=40, deadline=None)
@given(est=column_estimates())
def test_shrunk_matrix_is_a_noise_matrix_between_the_two(est):
    own_rate, share, rate, joint = est
    k = len(own_rate)
    t = shrunk_noise_matrix(own_rate, share, rate, joint)
    np.testing.assert_allclose(t.sum(axis=0), 1.0)
    assert np.all(t > 0)
    # each column's rate lies between its own and the symmetric one
    col_rate = 1 - np.diag(t)
    lo, hi = np.minimum(own_rate, rate), np.maximum(own_rate, rate)
    assert np.all(col_rate >= lo - 1e-12) and np.all(col_rate <= hi + 1e-12)
    # the rows permute with the classes
    perm = np.random.default_rng(k).permutation(k)
    t_perm = shrunk_noise_matrix(own_rate[perm], share[np.ix_(perm, perm)], rate,
                                 joint[np.ix_(perm, perm)])
    np.testing.assert_allclose(t_perm, t[np.ix_(perm, perm)], atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 6), per_class=st.integers(20, 200), seed=st.integers(0, 2**32 - 1))
def test_symmetric_anchors_rank_like_self_confidence(k, per_class, seed):
    # Anchors whose columns share one rate and an even split: whatever the columns' own
    # estimates say, the matrix is the symmetric one and label_score orders rows as p_given does.
    anchors = _symmetric_joint([per_class * (k - 1)] * k, 1, 10)
    rng = np.random.default_rng(seed)
    own_rate = rng.uniform(0.01, 0.5, k)
    share = np.where(np.eye(k, dtype=bool), 0.0, rng.uniform(0.1, 1.0, (k, k)))
    share /= share.sum(axis=0, keepdims=True)
    t = shrunk_noise_matrix(own_rate, share, 0.2, anchors)
    sym = np.where(np.eye(k, dtype=bool), 0.8, 0.2 / (k - 1))
    np.testing.assert_allclose(t, sym, atol=1e-12)
    probs = rng.dirichlet(np.ones(k), size=300)
    labels = rng.integers(0, k, 300)
    p_given = probs[np.arange(300), labels]
    score = posterior_scores(labels, probs, t, p_given)
    order = np.argsort(p_given, kind="stable")
    assert np.all(np.diff(score[order]) >= -1e-12)
