"""Bounded training samples per fold and the fold models' thread split (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin

from cleanpipe.errors import InputError
from cleanpipe.oof import cross_val_probs, fold_threads, out_of_fold_probs, train_sample


class BoundedProbe(ClassifierMixin, BaseEstimator):
    """Column 0 of X holds row ids. Refuses to fit on more than ``limit`` rows; predicts class 0
    for a row it was trained on and class 1 for any other, so ``P[:, 1] == 1`` on every row means
    that no row was predicted by a model that saw it."""

    def __init__(self, limit=None):
        self.limit = limit

    def fit(self, X, y):
        if self.limit is not None and len(X) > self.limit:
            raise ValueError(f"fitted on {len(X)} rows, more than {self.limit}")
        self.classes_ = np.unique(y)
        self.seen_ = np.unique(X[:, 0].astype(np.int64))
        return self

    def predict_proba(self, X):
        seen = np.isin(X[:, 0].astype(np.int64), self.seen_)
        return np.stack([seen, ~seen], axis=1).astype(float)


def _ids_table(n, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n), rng.normal(size=n)]).astype(np.float32)
    y = (rng.random(n) < 0.3).astype(np.int64)
    return X, y


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sampled_folds_never_predict_a_row_they_trained_on(n_jobs):
    X, y = _ids_table(1000)
    oof = cross_val_probs(X, y, model=BoundedProbe(limit=150), folds=4, n_jobs=n_jobs,
                          max_train_rows=150)
    np.testing.assert_array_equal(oof.pred_probs[:, 1], 1.0)


def test_without_a_cap_the_fold_models_see_every_training_row():
    X, y = _ids_table(400)
    with pytest.raises(InputError, match="more than 150"):
        cross_val_probs(X, y, model=BoundedProbe(limit=150), folds=4, max_train_rows=None)
    oof = cross_val_probs(X, y, model=BoundedProbe(), folds=4, max_train_rows=None)
    np.testing.assert_array_equal(oof.pred_probs[:, 1], 1.0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 400), cap=st.integers(2, 400), k=st.integers(2, 5), seed=st.integers(0, 9))
def test_train_sample_is_a_stratified_subset_in_row_order(n, cap, k, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    train = np.sort(rng.choice(n, size=max(2, n * 4 // 5), replace=False))
    got = train_sample(train, y, cap, seed)
    assert len(got) == min(cap, len(train))
    assert np.all(np.diff(got) > 0) and np.isin(got, train).all()
    np.testing.assert_array_equal(got, train_sample(train, y, cap, seed))
    if len(got) < len(train):
        counts = np.bincount(y[train], minlength=k)
        if counts[counts > 0].min() >= 2:
            # each class keeps its share of the sample, to within one row
            want = counts * len(got) / len(train)
            assert np.all(np.abs(np.bincount(y[got], minlength=k) - want) <= 1 + 1e-9)


def test_sampled_default_model_is_identical_across_n_jobs():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    y = (X[:, 0] + rng.normal(scale=0.7, size=600) > 0).astype(np.int64)
    one = out_of_fold_probs(X, y, folds=3, n_jobs=1, max_train_rows=250)
    two = out_of_fold_probs(X, y, folds=3, n_jobs=2, max_train_rows=250)
    np.testing.assert_array_equal(one, two)
    full = out_of_fold_probs(X, y, folds=3, max_train_rows=None)
    assert not np.array_equal(one, full)  # the cap was in effect


def test_fold_threads_split_idle_cores_between_workers(monkeypatch):
    monkeypatch.setattr("cleanpipe.oof.available_cpus", lambda: 8)
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    assert fold_threads(1) == 8 and fold_threads(2) == 4 and fold_threads(-1) == 1
    monkeypatch.setattr("os.getloadavg", lambda: (1.0, 0.0, 0.0))  # this process alone
    assert fold_threads(1) == 8
    monkeypatch.setattr("os.getloadavg", lambda: (6.2, 0.0, 0.0))
    assert fold_threads(1) == 3 and fold_threads(2) == 1
    monkeypatch.setattr("os.getloadavg", lambda: (30.0, 0.0, 0.0))
    assert fold_threads(1) == 1


def test_max_train_rows_is_checked():
    X, y = _ids_table(50)
    with pytest.raises(InputError, match="max_train_rows"):
        out_of_fold_probs(X, y, max_train_rows=1)


def test_fold_threads_do_not_change_the_probabilities(monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] + rng.normal(size=400) > 0).astype(np.int64) + (X[:, 2] > 1)
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr("cleanpipe.oof.fold_threads", lambda n_jobs, t=threads: t)
        runs.append(out_of_fold_probs(X, y, folds=3))
    np.testing.assert_array_equal(runs[0], runs[1])

