"""The joint multi-label network (``--model mlp``): known answers, determinism, wiring."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cleanpipe.errors import InputError
from cleanpipe.multilabel_mlp import cross_val_probs_mlp
from cleanpipe.oof import cross_val_probs_multilabel, multilabel_folds, out_of_fold_probs


@pytest.fixture(scope="module")
def planted():
    """600 rows, 4 tags each a threshold of its own feature plus a shared one; 5% of cells flipped.

    Returns (X, clean tags, given tags, flipped cells).
    """
    rng = np.random.default_rng(0)
    n, k = 600, 4
    x = rng.normal(size=(n, k + 2))
    true = (x[:, :k] + 0.5 * x[:, k:k + 1] > np.array([0.0, 0.4, -0.3, 0.8])).astype(np.int64)
    flip = rng.random(true.shape) < 0.05
    return x.astype(np.float32), true, true ^ flip, flip


def test_flipped_tags_get_less_confidence_than_clean_ones(planted):
    X, _, given, flip = planted
    P, _ = cross_val_probs_mlp(X, given, multilabel_folds(given, 3, 0), seed=0)
    assert P.shape == given.shape and P.dtype == np.float32
    assert np.all((P >= 0) & (P <= 1))
    conf = np.where(given == 1, P, 1 - P)  # probability of the given value of each cell
    assert conf[flip].mean() < 0.5 < conf[~flip].mean()
    assert roc_auc_score(flip.ravel(), -conf.ravel()) > 0.9


def test_same_seed_same_probabilities_other_seed_other(planted):
    X, _, given, _ = planted
    folds = multilabel_folds(given, 3, 0)
    a, _ = cross_val_probs_mlp(X, given, folds, seed=0)
    b, _ = cross_val_probs_mlp(X, given, folds, seed=0)
    c, _ = cross_val_probs_mlp(X, given, folds, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_row_is_predicted_without_its_own_tag(planted):
    # the given value of a cell never reaches its own prediction: changing the held-out rows'
    # tag k leaves their column k unchanged (it moves the other columns, which see it)
    X, _, given, _ = planted
    folds = multilabel_folds(given, 3, 0)
    from cleanpipe.multilabel_mlp import _design, fit_predict

    train, test = folds[0]
    D = _design(X, None, train)
    Y = given.astype(np.float32)
    P, _ = fit_predict(D[train], Y[train], D[test], Y[test], seed=0)
    Y2 = Y[test].copy()
    Y2[:, 0] = 1 - Y2[:, 0]
    P2, _ = fit_predict(D[train], Y[train], D[test], Y2, seed=0)
    assert np.array_equal(P[:, 0], P2[:, 0])
    assert not np.array_equal(P[:, 1:], P2[:, 1:])


def test_rows_without_tags_are_predicted_from_the_features(planted):
    X, true, given, _ = planted
    out = cross_val_probs_multilabel(X[:500], given[:500], model="mlp", folds=3, seed=0,
                                     X_extra=X[500:])
    assert out.extra_probs.shape == (100, 4)
    assert np.all((out.extra_probs >= 0) & (out.extra_probs <= 1))
    assert roc_auc_score(true[500:].ravel(), out.extra_probs.ravel()) > 0.85


def test_mlp_joins_an_ensemble_as_one_family(planted):
    X, _, given, _ = planted
    alone = cross_val_probs_multilabel(X, given, model="mlp", folds=3, seed=0).pred_probs
    lr = cross_val_probs_multilabel(X, given, model="logreg", folds=3, seed=0).pred_probs
    both = cross_val_probs_multilabel(X, given, model="mlp,logreg", folds=3, seed=0).pred_probs
    np.testing.assert_allclose(both, (alone + lr) / 2, rtol=1e-5, atol=1e-6)


def test_single_label_mlp_is_a_one_line_user_error():
    X = np.random.default_rng(0).normal(size=(60, 3))
    with pytest.raises(InputError, match="--model mlp is for multi-label labels only"):
        out_of_fold_probs(X, np.arange(60) % 2, model="mlp", folds=3)



@pytest.mark.parametrize("model", ["mlp", "mlp,logreg"])
def test_progress_counts_the_networks_folds(planted, model):
    # the joint network trains fold by fold before the per-tag fits: the bar moves from 0 to the
    # total by one fit at a time, and the network's folds are counted in it
    X, _, given, _ = planted
    calls = []
    cross_val_probs_multilabel(X, given, model=model, folds=3, seed=0,
                               progress=lambda done, total: calls.append((done, total)))
    totals = {t for _, t in calls}
    per_tag = 3 * given.shape[1] if "logreg" in model else 0
    assert totals == {3 + per_tag}
    assert [d for d, _ in calls] == list(range(0, 3 + per_tag + 1))
