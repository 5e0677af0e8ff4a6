"""Folds from a stable hash of the row id: the same in every partitioning (issue 21)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from cleanpipe.detect.partitioned import merge_tree
from cleanpipe.errors import InputError
from cleanpipe.hashed_folds import (fit_fold_model, fit_fold_models, hashed_folds, id_hashes,
                                    in_training_sample, merge_samples, position_ids,
                                    predict_out_of_fold, sample_partial, sample_rate,
                                    training_rate)
from cleanpipe.oof import make_model


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


# ---------------------------------------------------------------- training sample and fold models


def _table(n, seed=0, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.5 * rng.normal(size=n), np.linspace(-1, 1, k - 1)).astype(np.int64)
    return X, y


def test_sample_partial_known_answers():
    h = id_hashes(np.arange(6))
    X = np.arange(6, dtype=np.float32)[:, None]
    y = np.array([0, 1, 0, 1, -1, 0])
    s = sample_partial(X, y, h, n_folds=3, rate=1.0)
    order = np.argsort(h[[0, 1, 2, 3, 5]], kind="stable")
    assert s.X[:, 0].tolist() == np.array([0, 1, 2, 3, 5])[order].tolist()  # unlabelled row 4 out
    assert s.y.tolist() == y[[0, 1, 2, 3, 5]][order].tolist()
    assert s.folds.tolist() == hashed_folds(s.hashes, 3).tolist()
    assert np.all(np.diff(s.hashes.astype(np.float64)) >= 0)
    assert len(sample_partial(X, y, h, n_folds=3, rate=0.0)) == 0
    assert training_rate(1000, 5, 2000) == 1.0
    assert training_rate(1000, 5, 400) == 0.5  # 800 rows outside a fold, 400 kept


def test_sample_is_the_union_of_the_fold_models_samples():
    n, n_folds, max_rows = 20_000, 4, 3_000
    X, y = _table(n)
    h = id_hashes(np.arange(n))
    rate = training_rate(n, n_folds, max_rows)
    s = sample_partial(X, y, h, n_folds=n_folds, rate=rate)
    folds = hashed_folds(h, n_folds)
    for f in range(n_folds):
        want = np.sort(h[in_training_sample(h, folds, f, rate)])
        np.testing.assert_array_equal(np.sort(s.hashes[s.folds != f]), want)
        assert abs(len(want) - max_rows) < 5 * np.sqrt(max_rows)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.lists(st.integers(0, 300), max_size=6), st.floats(0.0, 1.0),
       st.integers(2, 6), st.integers(0, 3))
def test_merged_sample_does_not_depend_on_the_partitioning(n, cuts, rate, n_folds, seed):
    X, y = _table(n, seed)
    y[::7] = -1
    h = id_hashes(np.arange(n) * 3 + 1, seed=seed)
    whole = sample_partial(X, y, h, n_folds=n_folds, rate=rate)
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    parts = [sample_partial(X[a:b], y[a:b], h[a:b], n_folds=n_folds, rate=rate)
             for a, b in zip(bounds[:-1], bounds[1:])]
    left = functools.reduce(merge_samples, parts)
    right = functools.reduce(lambda a, b: merge_samples(b, a), parts[::-1])  # right fold
    tree = merge_tree(merge_samples, parts)  # what every engine runs
    for merged in (left, right, tree):
        for name in ("X", "y", "folds", "hashes"):
            np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    assert np.all(whole.y >= 0)


class _Recorder(ClassifierMixin, BaseEstimator):
    """Remembers the rows it was fitted on (by their first feature)."""

    def fit(self, X, y):
        self.seen_ = np.asarray(X)[:, 0].copy()
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))


def test_fold_model_never_sees_its_own_fold():
    n, n_folds = 2_000, 5
    X, y = _table(n)
    X[:, 0] = np.arange(n)  # row ids in the first feature
    h = id_hashes(np.arange(n))
    s = sample_partial(X, y, h, n_folds=n_folds, rate=0.5)
    models = fit_fold_models(s.X, s.y, s.folds, n_folds=n_folds, n_classes=3, model=_Recorder())
    assert [m.fold for m in models] == list(range(n_folds))
    folds = hashed_folds(h, n_folds)
    for f, m in enumerate(models):
        seen = m.estimators[0].seen_.astype(np.int64)
        np.testing.assert_array_equal(np.sort(seen), np.sort(s.X[s.folds != f, 0]).astype(np.int64))
        assert not np.any(folds[seen] == f)


def test_fold_models_are_oofs_models():
    # one family: the LogisticFolds that oof.make_model builds, fitted on the rows outside fold k
    n, n_folds = 1_500, 3
    X, y = _table(n, 2)
    h = id_hashes(np.arange(n))
    s = sample_partial(X, y, h, n_folds=n_folds, rate=1.0)
    models = fit_fold_models(s.X, s.y, s.folds, n_folds=n_folds, n_classes=3, model="logreg")
    for f, m in enumerate(models):
        ref = make_model("logreg").fit_rows(s.X, s.y, np.flatnonzero(s.folds != f))
        np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(X), rtol=1e-5, atol=1e-6)
        fold_alone = fit_fold_model(s.X, s.y, s.folds, f, n_classes=3, model="logreg")
        np.testing.assert_array_equal(fold_alone.predict_proba(X), m.predict_proba(X))
    P = predict_out_of_fold(models, X, hashed_folds(h, n_folds), 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert (P.argmax(axis=1) == y).mean() > 0.6


def test_default_ensemble_each_fold_alone_matches_all_folds():
    n, n_folds = 1_200, 3
    X, y = _table(n, 3)
    h = id_hashes(np.arange(n))
    s = sample_partial(X, y, h, n_folds=n_folds, rate=1.0)
    models = fit_fold_models(s.X, s.y, s.folds, n_folds=n_folds, n_classes=3)
    assert all(len(m.estimators) == 2 for m in models)  # gbm,logreg
    for f in range(n_folds):
        alone = fit_fold_model(s.X, s.y, s.folds, f, n_classes=3)
        np.testing.assert_array_equal(alone.predict_proba(X), models[f].predict_proba(X))


def test_one_class_fold_and_missing_class():
    X = np.arange(8, dtype=np.float32)[:, None]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.int16)
    models = fit_fold_models(X, y, folds, n_folds=2, n_classes=3, model="logreg")
    # fold 0 trains on class 1 alone: it can only say class 1
    np.testing.assert_array_equal(models[0].predict_proba(X[:2]), [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(models[1].predict_proba(X[:1]), [[1, 0, 0]])
    with pytest.raises(InputError, match="fold 2's training sample is empty"):
        fit_fold_models(X[:4], y[:4], np.full(4, 0, np.int16) + 2, n_folds=3, n_classes=2,
                        model="logreg")


def test_fold_counts_add_up_over_any_partitioning_and_the_check_refuses_empty_folds():
    from cleanpipe.hashed_folds import check_fold_counts, fold_counts
    h = id_hashes(np.arange(50))
    labelled = np.arange(50) % 4 != 0
    whole = fold_counts(h, labelled, 3)
    assert whole.sum() == labelled.sum()
    np.testing.assert_array_equal(fold_counts(h[:17], labelled[:17], 3)
                                  + fold_counts(h[17:], labelled[17:], 3), whole)
    check_fold_counts(whole, 3)
    for counts, n in (([4, 0, 9], 13), ([1, 1, 1], 3)):
        with pytest.raises(InputError) as exc:
            check_fold_counts(counts, 3)
        assert str(exc.value) == (f"{n} labelled rows cannot fill 3 folds (rows per fold: "
                                  f"{list(counts)}); pass fewer folds or more rows")


def test_a_null_id_is_refused_naming_the_column_and_the_fix():
    from cleanpipe.hashed_folds import table_hashes
    t = pa.table({"rid": pa.array([1, None, 3, None])})
    with pytest.raises(InputError) as exc:
        table_hashes(t, id_column="rid", partition=0, where="DATA partition 'p.parquet'")
    msg = str(exc.value)
    assert "id column 'rid' has 2 null value(s) in DATA partition 'p.parquet'" in msg
    assert "fill the nulls" in msg and "\n" not in msg
    ok = pa.table({"rid": pa.array(["a", "b"])})
    np.testing.assert_array_equal(table_hashes(ok, id_column="rid", partition=3, seed=2),
                                  id_hashes(pa.array(["a", "b"]), seed=2))
    np.testing.assert_array_equal(table_hashes(ok, id_column=None, partition=3, start=5, seed=2),
                                  id_hashes(position_ids(3, 5, 2), seed=2))


@functools.lru_cache(maxsize=1)
def _logreg_folds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 30)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] + rng.normal(size=3000) > 0).astype(np.int64)
    folds = hashed_folds(id_hashes(pa.array(np.arange(3000))), 3)
    models = [make_model("logreg", seed=0).fit(X[folds != f], y[folds != f]) for f in range(3)]
    return X, folds, models


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=3000, max_size=3000))
def test_a_rows_probabilities_do_not_depend_on_the_rows_predicted_beside_it(keep):
    """A partition's probabilities equal those rows of the whole table's, bit for bit: the logistic
    design's float32 product rounds a batch's trailing rows differently, which the padded blocks
    (BLOCK_ROWS) undo; without them some row moves in the last bit on most subsets."""
    from cleanpipe.hashed_folds import predict_out_of_fold
    X, folds, models = _logreg_folds()
    full = predict_out_of_fold(models, X, folds, 2)
    rows = np.flatnonzero(keep)
    np.testing.assert_array_equal(predict_out_of_fold(models, X[rows], folds[rows], 2), full[rows])
