"""Optional fold models (issue 20): LightGBM over bins shared by the folds, XGBoost and --device."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.boosters import LightGBMFolds, cuda_present, resolve_models, resolve_device
from cleanpipe.cli import cli
from cleanpipe.errors import InputError
from cleanpipe.flagsfile import flag_settings
from cleanpipe.oof import cross_val_probs, out_of_fold_probs

lgb = pytest.importorskip("lightgbm")


class SeenRows(LightGBMFolds):
    """The real LightGBM fit on the shared bins; column 0 of X holds row ids. Predicts class 0 for
    a row the booster's training Dataset held (LightGBM's own record of its rows) and class 1
    otherwise, so ``P[:, 1] == 1`` everywhere means no row was predicted by a model that saw it."""

    def fit_rows(self, X, y, rows):
        super().fit_rows(X, y, rows)
        self.seen_ = np.unique(X[self.trained_rows_, 0].astype(np.int64))
        return self

    def predict_proba(self, X):
        super().predict_proba(X)  # the booster itself predicts these rows
        seen = np.isin(np.asarray(X)[:, 0].astype(np.int64), self.seen_)
        return np.stack([seen, ~seen], axis=1).astype(float)


def _table(n, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 3))]).astype(np.float32)
    y = ((X[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64) + (X[:, 2] > 1)) % k
    return X, y


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("cap", [None, 300])
def test_shared_bins_never_predict_a_row_they_trained_on(n_jobs, cap):
    X, y = _table(1000)
    oof = cross_val_probs(X, y, model=SeenRows(), folds=4, n_jobs=n_jobs, max_train_rows=cap)
    np.testing.assert_array_equal(oof.pred_probs[:, 1], 1.0)


def test_fit_rows_trains_on_exactly_the_rows_given():
    X, y = _table(500, k=3)
    rows = np.sort(np.random.default_rng(1).choice(500, 200, replace=False))
    est = LightGBMFolds().fit_rows(X, y, rows)
    np.testing.assert_array_equal(est.trained_rows_, rows)
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])
    P = est.predict_proba(X)
    assert P.shape == (500, 3) and np.allclose(P.sum(axis=1), 1)


def test_lightgbm_ensemble_is_identical_across_n_jobs_and_threads():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(900, 5)).astype(np.float32)
    X[:, 4] = rng.integers(0, 4, 900)  # a category
    X[rng.random(900) < 0.05, 0] = np.nan
    y = (X[:, 0] + (X[:, 4] == 2) + rng.normal(scale=0.7, size=900) > 0.3).astype(np.int64)
    cats = np.array([0, 0, 0, 0, 1], bool)
    one = out_of_fold_probs(X, y, model="lgb,logreg", folds=3, n_jobs=1, categorical=cats)
    two = out_of_fold_probs(X, y, model="lgb,logreg", folds=3, n_jobs=2, categorical=cats)
    np.testing.assert_array_equal(one, two)
    a = LightGBMFolds(categorical=cats, n_threads=1).fit(X, y).predict_proba(X)
    b = LightGBMFolds(categorical=cats, n_threads=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    # and the detection signal is real: the out-of-fold accuracy is far above the base rate
    assert (one.argmax(1) == y).mean() > 0.75


def test_device_resolution():
    assert resolve_device("auto", cuda=False) == "cpu"
    assert resolve_device("auto", cuda=True) == "cuda"
    assert resolve_device("cpu", cuda=True) == "cpu"
    assert resolve_device("cuda", cuda=True) == "cuda"
    with pytest.raises(InputError, match="--device cuda.*--device cpu"):
        resolve_device("cuda", cuda=False)
    assert resolve_models(("hgb", "logreg"), "cuda") == ("xgb", "logreg")
    assert resolve_models(("hgb", "xgb"), "cuda") == ("xgb",)
    assert resolve_models(("lgb", "logreg"), "cpu") == ("lgb", "logreg")


def test_cuda_code_path_runs_on_the_cpu():
    """On ``cuda`` the boosted family is XGBoost; without a GPU XGBoost falls back to the CPU, so
    the swap, the fold plumbing and the probabilities are tested here."""
    pytest.importorskip("xgboost")
    X, y = _table(600, k=3)
    X = X[:, 1:]
    P = cross_val_probs(X, y, model="hgb,logreg", folds=3, device="cuda").pred_probs
    Q = cross_val_probs(X, y, model="xgb,logreg", folds=3, device="cpu").pred_probs
    np.testing.assert_allclose(P, Q, atol=1e-6)
    assert (P.argmax(1) == y).mean() > 0.6
    np.testing.assert_array_equal(Q, cross_val_probs(X, y, model="xgb,logreg", folds=3,
                                                     n_jobs=2).pred_probs)


@pytest.fixture
def table_file(tmp_path):
    X, y = _table(400, k=3)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": X[:, 1], "b": X[:, 2], "c": X[:, 3], "label": y}), path)
    return path


@pytest.mark.skipif(cuda_present(), reason="this machine has a CUDA device")
def test_flag_device_cuda_without_a_gpu_is_one_line(table_file, tmp_path):
    res = CliRunner().invoke(cli, ["flag", str(table_file), "--device", "cuda", "--quiet",
                                   "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 2
    assert "--device cuda" in res.output and "Traceback" not in res.output


@pytest.mark.skipif(cuda_present(), reason="this machine has a CUDA device")
def test_flag_device_auto_falls_back_to_cpu_and_records_it(table_file, tmp_path):
    outs = {}
    for device in ("auto", "cpu"):
        out = tmp_path / f"{device}.parquet"
        res = CliRunner().invoke(cli, ["flag", str(table_file), "--device", device, "--quiet",
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
        outs[device] = pq.read_table(out)
        settings = flag_settings(pq.read_table(out))
        assert settings["device"] == "cpu" and settings["model"] == "lgb,logreg"
    assert outs["auto"].equals(outs["cpu"])
