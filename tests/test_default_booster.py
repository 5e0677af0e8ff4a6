"""The default booster ``gbm``: LightGBM when installed, else HistGradientBoosting (issue 20)."""

from __future__ import annotations

import importlib.util

import numpy as np

from cleanpipe import boosters
from cleanpipe.boosters import gbm_family, resolve_models
from cleanpipe.oof import cross_val_probs


def test_gbm_is_lightgbm_when_installed():
    want = "lgb" if importlib.util.find_spec("lightgbm") is not None else "hgb"
    assert gbm_family() == want
    assert resolve_models(("gbm", "logreg")) == (want, "logreg")


def test_without_lightgbm_the_default_is_hgb_logreg(monkeypatch):
    monkeypatch.setattr(boosters, "GBM_CHOICES", (("lgb", "cleanpipe_no_such_package"), ("hgb", "sklearn")))
    assert resolve_models(("gbm", "logreg")) == ("hgb", "logreg")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    y = (X[:, 0] + rng.normal(scale=0.5, size=300) > 0).astype(np.int64)
    np.testing.assert_array_equal(cross_val_probs(X, y, folds=3).pred_probs,
                                  cross_val_probs(X, y, model="hgb,logreg", folds=3).pred_probs)
