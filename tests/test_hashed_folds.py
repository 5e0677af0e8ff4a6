"""Folds from a stable hash of the row id: the same in every partitioning (issue 21)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from cleanpipe.hashed_folds import (hashed_folds, id_hashes, in_training_sample, position_ids,
                                    predict_out_of_fold, sample_rate)


def test_known_answers():
    # pinned: a change here moves every user's folds
    assert hashed_folds(id_hashes(np.arange(10)), 5).tolist() == [1, 4, 3, 2, 1, 0, 2, 2, 2, 1]
    assert hashed_folds(id_hashes(np.array(["row-1", "row-2", "é"])), 5).tolist() == [0, 4, 4]
    assert int(id_hashes(np.array([12345]))[0]) == 14832135850170786401
    assert hashed_folds(id_hashes(np.arange(8)), 5).tolist() == \
        hashed_folds(id_hashes(pa.array(np.arange(8))), 5).tolist()
    h = id_hashes(np.array([0, 1, 12345]))
    assert h.dtype == np.uint64 and len(set(h.tolist())) == 3
    assert id_hashes(np.array(["a", "bc"])).tolist() == id_hashes(pa.array(["a", "bc"])).tolist()
    assert id_hashes(np.array([7]), seed=1)[0] != id_hashes(np.array([7]), seed=0)[0]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**62, 2**62)), min_size=1, max_size=200),
       st.lists(st.integers(0, 200), max_size=5), st.integers(2, 10), st.integers(0, 3))
def test_folds_do_not_depend_on_the_partitioning(ids, cuts, n_folds, seed):
    ids = np.array(ids, dtype=np.int64)
    whole = hashed_folds(id_hashes(ids, seed=seed), n_folds)
    bounds = [0, *sorted(min(c, len(ids)) for c in cuts), len(ids)]
    parts = [hashed_folds(id_hashes(ids[a:b], seed=seed), n_folds) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert whole.min() >= 0 and whole.max() < n_folds


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=100), st.integers(0, 50))
def test_string_ids_hash_the_same_in_any_slice(ids, cut):
    arr = pa.array(ids)
    cut = min(cut, len(ids))
    whole = id_hashes(arr)
    np.testing.assert_array_equal(np.concatenate([id_hashes(arr.slice(0, cut)),
                                                  id_hashes(arr.slice(cut))]), whole)
    np.testing.assert_array_equal(id_hashes(np.array(ids, dtype=object)), whole)


def test_stratification_holds_approximately():
    rng = np.random.default_rng(0)
    n, k, n_folds = 200_000, 7, 5
    y = rng.choice(k, n, p=[.4, .2, .15, .1, .1, .04, .01])
    folds = hashed_folds(id_hashes(rng.permutation(n) * 7919 + 13), n_folds)
    for c in range(k):
        counts = np.bincount(folds[y == c], minlength=n_folds)
        expected = (y == c).sum() / n_folds
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 1), (c, counts)


def test_training_sample_is_bounded_and_never_holds_its_own_fold():
    n, n_folds, max_rows = 100_000, 5, 20_000
    h = id_hashes(position_ids(3, 0, n))
    folds = hashed_folds(h, n_folds)
    for f in range(n_folds):
        outside = int((folds != f).sum())
        mask = in_training_sample(h, folds, f, sample_rate(outside, max_rows))
        assert not np.any(mask & (folds == f))
        assert abs(mask.sum() - max_rows) < 5 * np.sqrt(max_rows)
    assert in_training_sample(h, folds, 0, 1.0).sum() == (folds != 0).sum()


def test_each_row_is_predicted_by_a_model_that_did_not_see_it():
    rng = np.random.default_rng(1)
    n, n_folds = 3000, 3
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
    h = id_hashes(np.arange(n))
    folds = hashed_folds(h, n_folds)
    models = []
    for f in range(n_folds):
        keep = in_training_sample(h, folds, f, sample_rate(int((folds != f).sum()), 1000))
        models.append(LogisticRegression().fit(X[keep], y[keep]))
    # two partitions predicted on their own give the whole table's out-of-fold matrix
    whole = predict_out_of_fold(models, X, folds, 2)
    parts = np.concatenate([predict_out_of_fold(models, X[a:b], folds[a:b], 2)
                            for a, b in ((0, 1234), (1234, n))])
    np.testing.assert_array_equal(parts, whole)
    for f in range(n_folds):
        rows = folds == f
        np.testing.assert_array_equal(whole[rows], models[f].predict_proba(X[rows]))
    assert ((whole[:, 1] > 0.5) == y).mean() > 0.7
