"""Exact and near duplicate sets and label conflicts: known answers and properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cleanpipe.checks.duplicates import (exact_duplicate_sets, label_conflicts, near_duplicate_sets,
                                         row_hashes)


def _reference_groups(X):
    """Groups of equal rows by a slow loop (NaN equal to NaN, -0.0 equal to 0.0)."""
    keys = {}
    for i, row in enumerate(X):
        key = tuple("nan" if np.isnan(v) else float(v) + 0.0 for v in row)
        keys.setdefault(key, []).append(i)
    return sorted(g for g in keys.values() if len(g) > 1)


def _groups(sets):
    return sorted(np.flatnonzero(sets == s).tolist() for s in np.unique(sets[sets >= 0]))


def test_known_answer():
    X = np.array([[1, 2], [0, 0], [1, 2], [np.nan, 3], [np.nan, 3], [-0.0, 0]], dtype=np.float32)
    assert exact_duplicate_sets(X).tolist() == [0, 1, 0, 2, 2, 1]


matrices = hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 4)),
                      elements=st.sampled_from([0.0, -0.0, 1.0, 2.5, np.nan]))


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_sets_are_the_groups_of_equal_rows(X):
    assert _groups(exact_duplicate_sets(X)) == _reference_groups(X)


@settings(max_examples=30, deadline=None)
@given(matrices, st.randoms(use_true_random=False))
def test_row_order_does_not_change_membership(X, rnd):
    perm = np.array(rnd.sample(range(len(X)), len(X)))
    a, b = exact_duplicate_sets(X), exact_duplicate_sets(X[perm])
    assert ((a >= 0)[perm] == (b >= 0)).all()
    assert _groups(b) == _reference_groups(X[perm])


def test_hash_equal_rows_equal_hashes():
    X = np.array([[1, np.nan], [1, np.nan], [np.nan, 1]], dtype=np.float32)
    h = row_hashes(X)
    assert h[0] == h[1] != h[2]


def test_near_sets_join_exact_groups_larger_than_k():
    # 5 copies with k=1: each row sees one copy, the exact groups join the rest.
    dist = np.zeros((6, 1), np.float32)
    dist[5] = 9.0
    idx = np.array([[1], [0], [3], [2], [0], [0]])
    exact = np.array([0, 0, 0, 0, 0, -1])
    assert near_duplicate_sets(dist, idx, 0.5, exact).tolist() == [0, 0, 0, 0, 0, -1]


def test_label_conflicts_known_answer():
    sets = np.array([0, 0, 0, 1, 1, -1, 2, 2])
    labels = np.array([1, 1, 2, 0, 0, 3, 1, -1])
    conflict, agree = label_conflicts(sets, labels)
    assert conflict.tolist() == [True, True, True, False, False, False, False, False]
    np.testing.assert_allclose(agree, [0.5, 0.5, 0.0, 1, 1, np.nan, np.nan, np.nan])
