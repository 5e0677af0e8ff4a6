"""Optional gradient-boosting fold models: LightGBM over features binned once, XGBoost on a GPU.

Both are scikit-learn style classifiers that :func:`cleanpipe.oof.make_model` builds for the model
families ``"lgb"`` and ``"xgb"``; their packages are optional
(``pip install 'cleanpipe[fast]'`` for LightGBM, ``'cleanpipe[gpu]'`` for XGBoost) and imported
only when a fold model is fitted.

:class:`LightGBMFolds` bins the whole feature matrix once (a ``lightgbm.Dataset``) and trains each
fold's model on a subset of its rows, which keeps the bins: the fold fits share one binning rather
than redoing it per fit. It implements ``fit_rows(X, y, rows)`` beside ``fit``, and
:func:`cleanpipe.oof.cross_val_probs` calls ``fit_rows`` with the fold's training rows. The bins
are computed from the feature values of every row (never the labels), so a fold model still
learns nothing about the rows it predicts.

:func:`resolve_device` turns ``--device auto|cpu|cuda`` into the device of the out-of-fold stage;
:func:`resolve_models` names the families that will be fitted: ``gbm`` (the default's booster)
becomes ``lgb`` when LightGBM is installed, else ``hgb``, and on ``cuda`` the boosted families
become XGBoost on the GPU. The resolved names are what the flags file's provenance records.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .errors import InputError

#: The family ``"gbm"`` names: the first of these whose package is installed (scikit-learn's
#: HistGradientBoosting always is).
GBM_CHOICES = (("lgb", "lightgbm"), ("hgb", "sklearn"))
#: Families that :func:`resolve_models` moves to the GPU (as ``xgb`` on ``cuda``).
BOOSTED = ("gbm", "hgb", "lgb", "xgb")
#: One fold model's settings, matched to scikit-learn's HistGradientBoostingClassifier defaults
#: (100 rounds, learning rate 0.1, 31 leaves, 20 rows per leaf, 255 bins) so that the families
#: are interchangeable.
ROUNDS, LEARNING_RATE, LEAVES, MIN_LEAF_ROWS, MAX_BIN = 100, 0.1, 31, 20, 255
#: Fraction of the training rows each tree is grown on (re-drawn every round). Measured on
#: ``benchmarks/whole_job.py`` (100,000 rows, 10 classes, tuning seed 0): 0.5 lifted detection F1
#: by 0.02 and AUPRC by 0.013 over 1.0 (all rows), for about the same time.
BAGGING_FRACTION = 0.5

_BINNED: dict = {}  # bins_key -> lightgbm.Dataset of the whole matrix (one entry: the latest)


def _require(package: str, family: str, extra: str):
    if importlib.util.find_spec(package) is None:
        raise InputError(f"--model {family} needs the {package} package; pip install "
                         f"'cleanpipe[{extra}]' (or pick --model hgb,logreg)")
    return importlib.import_module(package)


class LightGBMFolds(ClassifierMixin, BaseEstimator):
    """LightGBM gradient boosting whose fold fits share one binning of the feature matrix.

    Parameters
    ----------
    categorical : ndarray of bool, optional
        Columns holding category codes (missing: NaN).
    random_state : int, default=0
        Seeds the bagging draws and the rows sampled to place the bins.
    n_threads : int, default=1
        OpenMP threads of one fit. Histograms are built per feature (column-wise) and LightGBM's
        ``deterministic`` mode is on, so the probabilities do not depend on it.
    bins_key : str, optional
        Fits with the same key (and the same ``X`` and ``y`` object) reuse the binned matrix
        within a process; :func:`cleanpipe.oof.cross_val_probs` sets one per call. ``None``:
        bin on every fit.

    Notes
    -----
    ``fit_rows(X, y, rows)`` trains on ``X[rows]``, ``y[rows]`` from the shared binning of ``X``;
    ``fit(X, y)`` is ``fit_rows`` of every row. Class ``c`` is label value ``c`` for
    ``c < y.max() + 1`` (every class of the whole table, present in the fold or not).
    """

    def __init__(self, categorical=None, random_state: int = 0, n_threads: int = 1,
                 bins_key: str | None = None):
        self.categorical = categorical
        self.random_state = random_state
        self.n_threads = n_threads
        self.bins_key = bins_key

    def _params(self, n_classes: int) -> dict:
        multi = n_classes > 2
        return {"objective": "multiclass" if multi else "binary", "num_class": n_classes if multi else 1,
                "learning_rate": LEARNING_RATE, "num_leaves": LEAVES,
                "min_data_in_leaf": MIN_LEAF_ROWS, "bagging_fraction": BAGGING_FRACTION,
                "bagging_freq": 1, "seed": self.random_state, "num_threads": max(1, self.n_threads),
                "deterministic": True, "force_col_wise": True, "verbose": -1}

    def _binned(self, X, y):
        lgb = _require("lightgbm", "lgb", "fast")
        key = (self.bins_key, id(X), id(y), X.shape)
        if self.bins_key is not None and key in _BINNED:
            return _BINNED[key]
        cats = np.zeros(X.shape[1], bool) if self.categorical is None else np.asarray(self.categorical, bool)
        ds = lgb.Dataset(X, label=y, categorical_feature=[int(c) for c in np.flatnonzero(cats)],
                         free_raw_data=False,
                         params={"max_bin": MAX_BIN, "data_random_seed": self.random_state,
                                 "feature_pre_filter": False, "verbose": -1}).construct()
        if self.bins_key is not None:
            _BINNED.clear()  # one matrix at a time: memory stays bounded by the current table
            _BINNED[key] = ds
        return ds

    def fit_rows(self, X, y, rows):
        """Fit on rows ``rows`` of ``X`` and ``y``, binned with the whole of ``X``."""
        lgb = _require("lightgbm", "lgb", "fast")
        n_classes = max(2, int(np.max(y)) + 1)
        train = self._binned(X, y).subset(np.asarray(rows, dtype=np.int32))
        self.booster_ = lgb.train(self._params(n_classes), train, num_boost_round=ROUNDS)
        self.classes_ = np.arange(n_classes)
        self.trained_rows_ = np.asarray(train.used_indices)
        return self

    def fit(self, X, y):
        return self.fit_rows(X, y, np.arange(len(y)))

    def predict_proba(self, X):
        P = self.booster_.predict(np.asarray(X), num_threads=max(1, self.n_threads))
        if P.ndim == 1:  # binary: P(class 1)
            P = np.column_stack([1.0 - P, P])
        return P


class XGBoostFolds(ClassifierMixin, BaseEstimator):
    """XGBoost gradient boosting on ``device`` (``"cpu"`` or ``"cuda"``), settings matched to
    :class:`LightGBMFolds` (leaf-wise trees of 31 leaves, 100 rounds, half the rows per tree).

    Parameters
    ----------
    categorical : ndarray of bool, optional
    random_state : int, default=0
    device : {"cpu", "cuda"}, default="cpu"
    n_threads : int, default=1
        CPU threads (of the quantile sketch and, on ``cpu``, the fit).
    """

    def __init__(self, categorical=None, random_state: int = 0, device: str = "cpu", n_threads: int = 1):
        self.categorical = categorical
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    def fit(self, X, y):
        xgb = _require("xgboost", "xgb", "gpu")
        n_classes = max(2, int(np.max(y)) + 1)
        cats = np.zeros(X.shape[1], bool) if self.categorical is None else np.asarray(self.categorical, bool)
        types = ["c" if c else "q" for c in cats]
        self.booster_ = xgb.train(
            {"objective": "multi:softprob" if n_classes > 2 else "binary:logistic",
             **({"num_class": n_classes} if n_classes > 2 else {}),
             "tree_method": "hist", "device": self.device, "grow_policy": "lossguide",
             "max_depth": 0, "max_leaves": LEAVES, "learning_rate": LEARNING_RATE,
             "min_child_weight": 1e-3, "subsample": BAGGING_FRACTION, "max_bin": MAX_BIN + 1,
             "seed": self.random_state, "nthread": max(1, self.n_threads), "verbosity": 0},
            xgb.QuantileDMatrix(np.asarray(X), label=y, feature_types=types, enable_categorical=cats.any(),
                                nthread=max(1, self.n_threads)),
            num_boost_round=ROUNDS)
        self._types = types
        self.classes_ = np.arange(n_classes)
        return self

    def predict_proba(self, X):
        import xgboost as xgb

        P = self.booster_.predict(xgb.DMatrix(np.asarray(X), feature_types=self._types,
                                              enable_categorical="c" in self._types,
                                              nthread=max(1, self.n_threads)))
        if P.ndim == 1:
            P = np.column_stack([1.0 - P, P])
        return P


def new_bins_key() -> str:
    """A key that ties the fold fits of one cross-validation to one binning (not an output:
    the probabilities do not depend on it)."""
    return uuid.uuid4().hex


def cuda_present() -> bool:
    """Whether this machine shows an NVIDIA device (``/dev/nvidia0``, ...) and XGBoost is installed.

    Asked without importing torch or XGBoost, so ``flag --device auto`` costs nothing on a
    machine without one.
    """
    return (any(Path("/dev").glob("nvidia[0-9]*"))
            and importlib.util.find_spec("xgboost") is not None)


def resolve_device(device: str, *, cuda: bool | None = None) -> str:
    """``"cpu"`` or ``"cuda"``: where the boosted fold models of the out-of-fold stage run.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``auto``: ``cuda`` when a device is present (:func:`cuda_present`), else ``cpu``.
    cuda : bool, optional
        Whether a device is present (default: :func:`cuda_present`); given by tests.

    Raises
    ------
    InputError
        ``cuda`` asked for where there is none (or XGBoost is missing).
    """
    present = cuda_present() if cuda is None else cuda
    if device == "cuda" and not present:
        raise InputError("--device cuda was asked for but no CUDA device (or no xgboost package) "
                         "was found; pass --device cpu, or pip install 'cleanpipe[fast]' on a "
                         "machine with an NVIDIA GPU")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device!r} is not known; pass auto, cpu or cuda")
    return "cuda" if device == "cuda" or (device == "auto" and present) else "cpu"


def gbm_family() -> str:
    """What ``"gbm"`` fits here: ``"lgb"`` when LightGBM is installed, else ``"hgb"``."""
    return next(name for name, package in GBM_CHOICES if importlib.util.find_spec(package) is not None)


def resolve_models(models: tuple, device: str = "cpu") -> tuple:
    """The families that will be fitted for ``models`` (checked names, see
    :func:`cleanpipe.oof.model_list`) on ``device``.

    ``"gbm"`` becomes :func:`gbm_family`; on ``cuda`` each boosted family (:data:`BOOSTED`)
    becomes ``xgb``. Logistic regression and custom classifiers stay as they are (on the CPU). A
    family named twice after the swap (``hgb,xgb`` on ``cuda``) is kept once.
    """
    out = []
    for m in models:
        if isinstance(m, str) and m == "gbm":
            m = gbm_family()
        if device == "cuda" and isinstance(m, str) and m in BOOSTED:
            m = "xgb"
        if not (isinstance(m, str) and m in out):
            out.append(m)
    return tuple(out)
