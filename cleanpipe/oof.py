"""Out-of-fold predicted probabilities by stratified K-fold cross-validation.

Each fold's model is fitted in its own joblib task (``n_jobs`` workers; any joblib backend, Dask
included, through ``joblib.parallel_config``). The fold models also predict the rows that have no
label, averaged over folds, so every row of the table gets a predicted class.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from .errors import CleanpipeWarning, InputError

log = logging.getLogger(__name__)

#: Names accepted by ``model=`` besides ``"package.module:Class"``.
MODELS = ("hgb", "logreg")


@dataclass(frozen=True)
class OutOfFold:
    """Result of :func:`cross_val_probs`.

    Attributes
    ----------
    pred_probs : ndarray of shape (n_labelled, n_classes), float32
        Out-of-fold probabilities of the labelled rows.
    extra_probs : ndarray of shape (n_extra, n_classes), float32
        Mean over fold models of the probabilities of ``X_extra`` (rows without a label).
    folds : int
    notes : list of str
        What was adapted, in words (rare classes, ...).
    """

    pred_probs: np.ndarray
    extra_probs: np.ndarray
    folds: int
    notes: list = field(default_factory=list)


def make_model(model, *, categorical=None, seed: int = 0):
    """Build the scikit-learn classifier for ``model``.

    Parameters
    ----------
    model : str or estimator
        ``"hgb"`` (HistGradientBoostingClassifier: NaN and categories natively), ``"logreg"``
        (imputation, one-hot categories, scaling, logistic regression), ``"package.module:Class"``
        (imported and constructed without arguments; this runs that package's code), or an
        unfitted scikit-learn classifier.
    categorical : ndarray of bool, optional
        Which feature columns hold category codes.
    seed : int, default=0
        Set as ``random_state`` where the estimator has one.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = np.zeros(0, bool) if categorical is None else np.asarray(categorical, bool)
    if not isinstance(model, str):
        est = clone(model)
    elif model == "hgb":
        est = HistGradientBoostingClassifier(
            categorical_features=cats if cats.any() else None, random_state=seed)
    elif model == "logreg":
        numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                StandardScaler())
        if cats.any():
            onehot = make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                                   OneHotEncoder(handle_unknown="ignore"))
            prep = ColumnTransformer([("num", numeric, np.flatnonzero(~cats)),
                                      ("cat", onehot, np.flatnonzero(cats))])
        else:
            prep = numeric
        est = make_pipeline(prep, LogisticRegression(max_iter=1000))
    elif ":" in model:
        est = _import_estimator(model)
    else:
        raise InputError(f"--model '{model}' is not known; use hgb, logreg or package.module:Class")
    if "random_state" in est.get_params(deep=False):
        est.set_params(random_state=seed)
    return est


def _import_estimator(spec: str):
    module_name, _, cls_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"--model '{spec}' could not be imported ({exc}); pass "
                         "package.module:Class of an installed scikit-learn classifier") from None
    if not inspect.isclass(cls):
        raise InputError(f"--model '{spec}' is not a class; pass package.module:Class")
    try:
        est = cls()
    except Exception as exc:  # noqa: BLE001 - any constructor failure is the user's model's
        raise InputError(f"--model '{spec}' cannot be built without arguments ({exc})") from None
    if not (hasattr(est, "fit") and hasattr(est, "predict_proba") and hasattr(est, "get_params")):
        raise InputError(f"--model '{spec}' is not a scikit-learn classifier with predict_proba")
    return est


def _fit_fold(est, X, y, train, test, X_extra, n_classes):
    est = clone(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        est.fit(X[train], y[train])
    cols = np.asarray(est.classes_, dtype=np.int64)

    def full(P):
        # A fold can miss a rare class: its column stays 0.
        out = np.zeros((P.shape[0], n_classes), dtype=np.float32)
        out[:, cols] = P
        return out

    extra = full(est.predict_proba(X_extra)) if len(X_extra) else np.zeros((0, n_classes), np.float32)
    return test, full(est.predict_proba(X[test])), extra


def cross_val_probs(X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None, model="hgb",
                    folds: int = 5, seed: int = 0, n_jobs: int = 1, categorical=None,
                    X_extra: np.ndarray | None = None, class_names=None,
                    progress=None) -> OutOfFold:
    """Out-of-fold probabilities of validated inputs; see :func:`out_of_fold_probs`.

    ``progress``, if given, is called with ``(done, total)`` as folds finish.
    """
    k = int(y.max()) + 1 if n_classes is None else n_classes
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    counts = np.bincount(y, minlength=k)
    notes = []
    present = np.flatnonzero(counts)
    rare = [c for c in present if counts[c] < folds]
    singletons = [c for c in present if counts[c] == 1]
    if rare:
        notes.append("class(es) " + ", ".join(f"'{names[c]}' ({counts[c]} rows)" for c in rare[:5])
                     + f" have fewer rows than --folds {folds}: they are spread over fewer folds")
    if singletons:
        notes.append("class(es) " + ", ".join(f"'{names[c]}'" for c in singletons[:5]) +
                     " have a single row: no fold model sees them, so those rows will look "
                     "mislabeled; check them by hand or merge the class")
    for note in notes:
        warnings.warn(note, CleanpipeWarning, stacklevel=2)
    est = make_model(model, categorical=categorical, seed=seed)
    X_extra = np.zeros((0, X.shape[1]), X.dtype) if X_extra is None else X_extra
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(cv.split(np.zeros(len(y)), y))
    log.info("fitting %d folds on %d rows with %s", folds, len(y), type(est).__name__)
    # An ordered generator: results arrive as folds finish, and are summed in fold order so the
    # output does not depend on n_jobs.
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_fit_fold)(est, X, y, train, test, X_extra, k) for train, test in splits)
    pred_probs = np.empty((len(y), k), dtype=np.float32)
    extra = np.zeros((len(X_extra), k), dtype=np.float64)
    if progress:
        progress(0, folds)
    for done, (test, probs, extra_probs) in enumerate(results, 1):
        pred_probs[test] = probs
        extra += extra_probs
        if progress:
            progress(done, folds)
    extra = (extra / folds).astype(np.float32)
    _renormalise(pred_probs)
    _renormalise(extra)
    return OutOfFold(pred_probs, extra, folds, notes)


def _renormalise(P: np.ndarray) -> None:
    # float32 sums drift from 1; the detectors check rows sum to 1.
    sums = P.sum(axis=1, keepdims=True, dtype=np.float64)
    np.divide(P, np.where(sums > 0, sums, 1.0).astype(P.dtype), out=P)


def out_of_fold_probs(X, y, *, model="hgb", folds: int = 5, seed: int = 0, n_jobs: int = 1,
                      categorical=None) -> np.ndarray:
    """Out-of-fold predicted probabilities by stratified K-fold cross-validation.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features; NaN allowed with the default model.
    y : array-like of shape (n_samples,)
        Class indices ``0..K-1``.
    model : str or estimator, default="hgb"
        See :func:`make_model`.
    folds : int, default=5
        Number of stratified folds (shuffled with ``seed``).
    seed : int, default=0
    n_jobs : int, default=1
        Folds fitted in parallel through joblib; ``-1`` uses every core.
    categorical : array-like of bool, optional
        Columns of ``X`` holding category codes.

    Returns
    -------
    ndarray of shape (n_samples, K), float32
        Row ``n`` holds the probabilities of the model that did not see row ``n``.

    Raises
    ------
    InputError
        Fewer than two classes, ``folds`` outside ``[2, n_samples]``, mismatched lengths.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> out_of_fold_probs(X, y, model="logreg").shape
    (150, 3)
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (rows x features), got shape {X.shape}")
    from .detect import check_labels
    y = check_labels(y, name="y")
    if len(y) != len(X):
        raise InputError(f"X has {len(X)} rows but y has {len(y)}; pass one label per row")
    check_folds(folds, len(y))
    if n_jobs == 0:
        raise InputError("n_jobs=0 is not valid; pass a positive count or -1 for every core")
    if len(np.unique(y)) < 2:
        raise InputError("y holds a single class; label-error detection needs at least two")
    return cross_val_probs(X, y, model=model, folds=folds, seed=seed, n_jobs=n_jobs,
                           categorical=categorical).pred_probs


def check_folds(folds: int, n_rows: int, *, option: str = "--folds") -> None:
    if folds < 2:
        raise InputError(f"{option} {folds} is too small; cross-validation needs at least 2 folds")
    if folds > n_rows:
        raise InputError(f"{option} {folds} is more than the {n_rows} labelled rows; pass "
                         f"{option} between 2 and {n_rows}")
