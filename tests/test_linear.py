"""The logistic-regression fold model over one design matrix per cross-validation (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.linear import LogisticFolds, logistic_pipeline
from cleanpipe.oof import cross_val_probs, make_model, out_of_fold_probs


class SeenRows(LogisticFolds):
    """The real fit on the shared design; column 0 of X holds row ids. Predicts class 0 for a row
    the logistic regression was fitted on and class 1 otherwise, so ``P[:, 1] == 1`` everywhere
    means no row was predicted by a model that saw it."""

    def fit_rows(self, X, y, rows):
        super().fit_rows(X, y, rows)
        self.seen_ = np.unique(X[np.asarray(rows), 0].astype(np.int64))
        return self

    def predict_proba(self, X):
        super().predict_proba(X)  # the fitted model itself predicts these rows
        seen = np.isin(np.asarray(X)[:, 0].astype(np.int64), self.seen_)
        return np.stack([seen, ~seen], axis=1).astype(float)


def _mixed(n, seed=0, levels=4):
    """Numbers (some missing) and one category column; the label depends on both."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[:, 3] = rng.integers(0, levels, n)
    X[rng.random(n) < 0.05, 0] = np.nan
    y = (np.nan_to_num(X[:, 0]) + (X[:, 3] == 1) + rng.normal(scale=0.7, size=n) > 0.3).astype(np.int64)
    return X, y, np.array([0, 0, 0, 1], bool)


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("cap", [None, 300])
def test_shared_design_never_predicts_a_row_it_trained_on(n_jobs, cap):
    rng = np.random.default_rng(0)
    X = np.column_stack([np.arange(1000), rng.normal(size=(1000, 2))]).astype(np.float32)
    y = (X[:, 1] + rng.normal(scale=0.5, size=1000) > 0).astype(np.int64)
    oof = cross_val_probs(X, y, model=SeenRows(), folds=4, n_jobs=n_jobs, max_train_rows=cap)
    np.testing.assert_array_equal(oof.pred_probs[:, 1], 1.0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 50))
def test_labels_outside_the_training_rows_change_nothing(seed):
    # The design is built from every row's features but never from a label: scrambling the
    # labels of the rows a fold model does not train on leaves its probabilities unchanged.
    X, y, cats = _mixed(300, seed)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(300, 200, replace=False))
    other = np.setdiff1d(np.arange(300), rows)
    scrambled = y.copy()
    scrambled[other] = rng.integers(0, 2, len(other))
    a = LogisticFolds(categorical=cats, design_key="k").fit_rows(X, y, rows).predict_proba(X)
    b = LogisticFolds(categorical=cats, design_key="k").fit_rows(X, scrambled, rows).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_same_probabilities_as_the_plain_pipeline_within_the_solver_tolerance():
    X, y, cats = _mixed(2000, seed=1)
    plain = logistic_pipeline(cats).fit(X, y).predict_proba(X)
    ours = LogisticFolds(categorical=cats).fit(X, y).predict_proba(X)
    assert np.abs(plain - ours).max() < 0.02
    np.testing.assert_allclose(ours.sum(axis=1), 1, atol=1e-6)


def test_logreg_is_deterministic_and_identical_across_n_jobs():
    X, y, cats = _mixed(900, seed=2)
    one = out_of_fold_probs(X, y, model="logreg", folds=3, n_jobs=1, categorical=cats)
    again = out_of_fold_probs(X, y, model="logreg", folds=3, n_jobs=1, categorical=cats)
    two = out_of_fold_probs(X, y, model="logreg", folds=3, n_jobs=2, categorical=cats)
    np.testing.assert_array_equal(one, again)
    np.testing.assert_array_equal(one, two)
    assert (one.argmax(1) == y).mean() > 0.7  # a real signal, far above the base rate


def test_wide_categories_keep_a_sparse_design():
    # 200 levels of one category: the one-hot block stays sparse rather than a dense
    # rows x levels matrix (memory bounded on large tables).
    X, y, cats = _mixed(3000, seed=3, levels=200)
    est = make_model("logreg", categorical=cats)
    assert isinstance(est, LogisticFolds)
    est.set_params(design_key="wide")
    est.fit_rows(X, y, np.arange(2000))
    _, D = est._design(X)
    assert sp.issparse(D) and D.dtype == np.float32
    P = est.predict_proba(X[2000:])
    assert P.shape == (1000, 2) and np.allclose(P.sum(axis=1), 1, atol=1e-6)
