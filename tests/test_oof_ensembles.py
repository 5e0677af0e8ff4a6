"""Ensembles of model families: several families fitted on the same folds, probabilities averaged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joblib import parallel_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

import cleanpipe
from cleanpipe.errors import InputError
from cleanpipe.oof import cross_val_probs, cross_val_probs_multilabel, model_label, model_list


class SeenProbe(ClassifierMixin, BaseEstimator):
    """Column 0 of X holds row ids; predicts class 0 for a row it was trained on, class 1 otherwise."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.seen_ = set(X[:, 0].astype(int).tolist())
        return self

    def predict_proba(self, X):
        seen = np.isin(X[:, 0].astype(int), list(self.seen_))
        return np.stack([seen, ~seen], axis=1).astype(float)


class FoldProbe(SeenProbe):
    """Predicts a fingerprint of its training rows: equal outputs mean equal training folds."""

    def predict_proba(self, X):
        a = (sum(self.seen_) % 997 + 1) / 1000.0
        return np.tile([a, 1.0 - a], (len(X), 1))


class FoldProbeB(FoldProbe):
    """Another family with the same fingerprint (an ensemble needs distinct members)."""


def _ids_table(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n), rng.normal(size=n)]).astype(np.float32)
    y = np.arange(n) % 2
    return X, y


def _blobs(n=90, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(y[:, None] * 1.5, 1.0, size=(n, 4))
    return X, y


def test_an_ensemble_of_one_is_the_single_model():
    X, y = _blobs()
    single = cleanpipe.out_of_fold_probs(X, y, model="logreg", folds=3, seed=4)
    for one in (["logreg"], ("logreg",), " logreg "):
        np.testing.assert_array_equal(cleanpipe.out_of_fold_probs(X, y, model=one, folds=3, seed=4),
                                      single)


def test_ensemble_is_the_mean_of_its_members_on_the_same_folds():
    X, y = _blobs(seed=1)
    members = [LogisticRegression(C=0.05), GaussianNB()]
    each = [cleanpipe.out_of_fold_probs(X, y, model=m, folds=4, seed=2) for m in members]
    both = cleanpipe.out_of_fold_probs(X, y, model=members, folds=4, seed=2)
    np.testing.assert_allclose(both, (each[0] + each[1]) / 2, atol=1e-6)
    assert not np.allclose(each[0], each[1], atol=1e-2)  # the members differ, so the mean is informative
    # the same folds, whatever runs the tasks: two workers assemble the same matrix
    with parallel_config(backend="threading"):
        np.testing.assert_array_equal(
            cleanpipe.out_of_fold_probs(X, y, model=members, folds=4, seed=2, n_jobs=2), both)


@settings(max_examples=25)
@given(n=st.integers(12, 40), folds=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_rows_are_predicted_only_by_models_that_did_not_see_them(n, folds, seed):
    X, y = _ids_table(n, seed)
    oof = cross_val_probs(X, y, model=[SeenProbe(), FoldProbe()], folds=folds, seed=seed,
                          X_extra=X[:3] + n)  # ids no model saw
    seen = cross_val_probs(X, y, model=SeenProbe(), folds=folds, seed=seed)
    assert (seen.pred_probs[:, 1] == 1).all()  # SeenProbe alone: every row unseen by its model
    # FoldProbe's fingerprint is the same for every member iff the members share the folds
    fold_a = cross_val_probs(X, y, model=FoldProbe(), folds=folds, seed=seed).pred_probs
    pair = cross_val_probs(X, y, model=[FoldProbe(), FoldProbeB()], folds=folds, seed=seed).pred_probs
    np.testing.assert_allclose(pair, fold_a, atol=1e-6)
    np.testing.assert_allclose(oof.pred_probs, (seen.pred_probs + fold_a) / 2, atol=1e-6)
    assert (oof.extra_probs[:, 1] > 0).all() and oof.extra_probs.shape == (3, 2)


def test_multilabel_ensemble_is_the_mean_of_its_members():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 3)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0.3], axis=1).astype(int)
    members = ["logreg", GaussianNB()]
    each = [cross_val_probs_multilabel(X, Y, model=m, folds=3, seed=1, X_extra=X[:4]) for m in members]
    both = cross_val_probs_multilabel(X, Y, model=members, folds=3, seed=1, X_extra=X[:4])
    np.testing.assert_allclose(both.pred_probs, (each[0].pred_probs + each[1].pred_probs) / 2, atol=1e-6)
    np.testing.assert_allclose(both.extra_probs, (each[0].extra_probs + each[1].extra_probs) / 2, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("hgb,catboost", "--model 'catboost' is not known; use gbm, hgb, logreg"),
    (["hgb", "hgb"], "names 'hgb' twice"),
    ("hgb,", "names no model"),
    ([], "names no model"),
])
def test_bad_model_names_fail_in_one_line(spec, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        model_list(spec)
    X, y = _blobs()
    with pytest.raises(InputError, match="model"):
        cleanpipe.out_of_fold_probs(X, y, model=spec)


def test_model_label_spells_the_models_as_the_cli_does():
    assert model_label("hgb") == "hgb" and model_label(["hgb", "logreg"]) == "hgb,logreg"
    assert model_label(("logreg", GaussianNB())) == "logreg,GaussianNB"
    assert model_list(" hgb , logreg ") == ("hgb", "logreg")
