"""Out-of-fold predicted probabilities by stratified K-fold cross-validation.

Each (model, fold) pair is fitted in its own joblib task (``n_jobs`` workers; any joblib backend,
Dask included, through ``joblib.parallel_config``). Several model families (``model="hgb,logreg"``)
share the same folds and their probabilities are averaged. The fold models also predict the rows
that have no label, averaged over folds, so every row of the table gets a predicted class.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed, parallel_config
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import ThreadpoolController

from .boosters import LightGBMFolds, XGBoostFolds, new_bins_key, resolve_device, resolve_models
from .detect import check_labels
from .errors import CleanpipeWarning, InputError
from .features import table_to_features
from .frames import as_table, is_table, label_codes
from .linear import LogisticFolds
from .threads import available_cpus
from .settings import (BACKENDS, DEFAULT_FOLDS, DEFAULT_MODEL, DEFAULT_SEED, MIN_FOLDS, MODELS,
                       MULTILABEL_ONLY_MODELS)

log = logging.getLogger(__name__)

#: Seconds to wait for a Dask scheduler to answer before giving up.
DASK_CONNECT_TIMEOUT = 10.0
#: Training rows of each fold model at most (a stratified sample of the fold's training rows);
#: ``None`` fits on all of them. Off by default: on the learning curves in ``benchmarks/RESULTS.md``
#: ("Whole job") detection quality still rose with the rows: on a 100,000-row 10-class table F1
#: 0.535 / 0.580 / 0.627 / 0.647 with 10k / 20k / 40k / all 80k rows per fold; on 1,000,000-row
#: 2-class tables (``lgb,logreg``) AUPRC 0.887 / 0.892 / 0.895 with 200k / 400k / all 800k rows
#: (numeric, 10% noise) and 0.931 / 0.939 with 200k / 400k (mixed, 30% noise), where the cleanlab
#: path fitting every row scored 0.891 and 0.945: a cap cut the time by 2-3x but lost AUPRC.
MAX_TRAIN_ROWS = None


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


def model_list(model) -> tuple:
    """The model families of ``model``, checked: a tuple of names, specs or estimators.

    Parameters
    ----------
    model : str, estimator, or sequence of them
        ``"hgb"``, ``"hgb,logreg"`` (comma-separated: an ensemble), ``["hgb", "logreg"]``,
        ``"package.module:Class"`` or an unfitted scikit-learn classifier.

    Returns
    -------
    tuple
        One entry per family, in the order given; ``model_list`` of it is itself.

    Raises
    ------
    InputError
        An empty list, an unknown name, or a family named twice.
    """
    if isinstance(model, str):
        items = [m.strip() for m in model.split(",")]
    elif isinstance(model, (list, tuple)):
        items = [m.strip() if isinstance(m, str) else m for m in model]
    else:
        items = [model]
    if not items or any(m == "" for m in items):
        raise InputError(f"--model {model!r} names no model (or an empty one); pass one or more of "
                         f"{', '.join(MODELS)} or package.module:Class, comma-separated")
    for m in items:
        if isinstance(m, str) and m not in MODELS and ":" not in m:
            raise InputError(f"--model '{m}' is not known; use {', '.join(MODELS)} or "
                             "package.module:Class, comma-separated for an ensemble (hgb,logreg)")
    names = [m for m in items if isinstance(m, str)]
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise InputError(f"--model names '{twice[0]}' twice; list each model family once")
    return tuple(items)


def model_label(model) -> str:
    """How the settings record ``model``: names comma-separated, estimators by class name."""
    items = model.split(",") if isinstance(model, str) else (
        model if isinstance(model, (list, tuple)) else [model])
    return ",".join(m.strip() if isinstance(m, str) else type(m).__name__ for m in items)


def make_model(model, *, categorical=None, seed: int = DEFAULT_SEED, device: str = "cpu"):
    """Build the scikit-learn classifier for ``model``.

    Parameters
    ----------
    model : str or estimator
        ``"gbm"`` (``"lgb"`` when LightGBM is installed, else ``"hgb"``: see
        :func:`cleanpipe.boosters.resolve_models`), ``"hgb"`` (HistGradientBoostingClassifier: NaN
        and categories natively), ``"logreg"``
        (imputation, one-hot categories, scaling, logistic regression; the design built once per
        cross-validation: :class:`cleanpipe.linear.LogisticFolds`), ``"lgb"`` (LightGBM, its
        bins shared by the fold fits: :class:`cleanpipe.boosters.LightGBMFolds`), ``"xgb"``
        (XGBoost: :class:`cleanpipe.boosters.XGBoostFolds`), ``"package.module:Class"``
        (imported and constructed without arguments; this runs that package's code), or an
        unfitted scikit-learn classifier.
    categorical : ndarray of bool, optional
        Which feature columns hold category codes.
    seed : int, default=0
        Set as ``random_state`` where the estimator has one.
    device : {"cpu", "cuda"}, default="cpu"
        Where ``"xgb"`` fits; on ``"cuda"`` every boosted family is ``"xgb"``.
    """
    cats = np.zeros(0, bool) if categorical is None else np.asarray(categorical, bool)
    model = resolve_models((model,), device)[0] if isinstance(model, str) else model
    if not isinstance(model, str):
        est = clone(model)
    elif model == "hgb":
        est = HistGradientBoostingClassifier(
            categorical_features=cats if cats.any() else None, random_state=seed)
    elif model == "logreg":
        est = LogisticFolds(categorical=cats if cats.any() else None)
    elif model == "lgb":
        est = LightGBMFolds(categorical=cats if cats.any() else None)
    elif model == "xgb":
        est = XGBoostFolds(categorical=cats if cats.any() else None, device=device)
    elif model in MULTILABEL_ONLY_MODELS:
        raise InputError(f"--model {model} is for multi-label labels only (one network for every "
                         "tag); pass --multi-label, or another model: hgb, logreg, gbm, lgb, xgb")
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


def train_sample(train: np.ndarray, y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """At most ``max_rows`` of the training rows ``train``, stratified on ``y``, in row order.

    Each class keeps its share of the sample to within about a row: in a random order (``seed``)
    a row's key is its position within its class over the class's size, and the ``max_rows``
    smallest keys are kept. The rows left out are only not trained on, so the fold's held-out
    rows are still predicted by a model that never saw them.
    """
    if max_rows is None or len(train) <= max_rows:
        return train
    perm = np.random.default_rng(seed).permutation(len(train))
    yc = y[train[perm]]
    counts = np.bincount(yc)
    order = np.argsort(yc, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(yc), np.int64)
    rank[order] = np.arange(len(yc)) - starts[yc[order]]
    key = (rank + 0.5) / counts[yc]
    keep = np.argsort(key, kind="stable")[:max_rows]
    return np.sort(train[perm[keep]])


def fold_threads(n_jobs: int) -> int:
    """OpenMP and BLAS threads of each fold model: the cores other processes leave idle, per worker.

    Measured on a shared 2-core machine at load 10: HistGradientBoosting on 40,000 rows took 17 s
    with one OpenMP thread and 160-320 s with two (its threads spin-wait for cores that other
    processes hold). So a model gets more than one thread only when cores are idle, split
    between the ``n_jobs`` workers. HistGradientBoosting's probabilities do not depend on its
    thread count (each feature's histogram is summed by one thread).
    """
    cores = available_cpus()  # affinity and cgroup quota, not the host's core count
    workers = cores if n_jobs < 0 else max(1, min(n_jobs, cores))
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)  # this process counts itself once
    except OSError:  # no load average on this platform: assume the cores are free
        busy = 0.0
    idle = max(1, int(cores - busy + 0.5))
    return max(1, idle // workers)


def _fit_fold(est, X, y, train, test, X_extra, n_classes):
    est = clone(est)
    if len(np.unique(y[train])) < 2:
        # A tiny table can leave a fold's training rows with one class: that model can only
        # predict it, so say so rather than fit a classifier that refuses one class.
        cols = np.unique(y[train])
        const = np.ones((1, 1), dtype=np.float32)
        probs = np.zeros((len(test), n_classes), dtype=np.float32)
        probs[:, cols] = const
        extra = np.zeros((len(X_extra), n_classes), dtype=np.float32)
        extra[:, cols] = const
        return test, probs, extra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        try:
            if hasattr(est, "fit_rows"):  # bins the whole X once, trains on the rows `train` only
                est.fit_rows(X, y, train)
            else:
                est.fit(X[train], y[train])
        except ValueError as exc:
            raise InputError(f"the model could not be fitted on a fold ({str(exc).splitlines()[0]}); "
                             "check the feature columns or try --model hgb") from None
    cols = np.asarray(est.classes_, dtype=np.int64)

    def full(P):
        # A fold can miss a rare class: its column stays 0.
        out = np.zeros((P.shape[0], n_classes), dtype=np.float32)
        out[:, cols] = P
        return out

    extra = full(est.predict_proba(X_extra)) if len(X_extra) else np.zeros((0, n_classes), np.float32)
    return test, full(est.predict_proba(X[test])), extra


@contextlib.contextmanager
def joblib_backend(backend: str | None = "loky", scheduler: str | None = None, *,
                   timeout: float | None = None):
    """Send the fold fits of every :func:`cross_val_probs` call inside the block to ``backend``.

    Parameters
    ----------
    backend : {"loky", "dask"} or None, default="loky"
        ``loky``: local worker processes (``n_jobs`` of them). ``dask``: the workers of the Dask
        cluster at ``scheduler`` (``n_jobs`` is then ignored: the cluster's cores are used).
        ``None`` leaves joblib's active configuration as it is.
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``; required for ``dask``.
    timeout : float, optional
        Seconds to wait for the scheduler to answer (default :data:`DASK_CONNECT_TIMEOUT`).

    Raises
    ------
    InputError
        Unknown backend, missing scheduler address, ``distributed`` not installed, or a scheduler
        that does not answer.

    Notes
    -----
    Dask workers unpickle the fold-fitting function by reference, so cleanpipe (and a custom
    model's package) must be importable on every worker. The folds, the seeds and the order in
    which fold results are combined do not depend on the backend, so the probabilities match
    the local ones.
    """
    if backend is None:
        yield
        return
    if backend not in BACKENDS:
        raise InputError(f"backend '{backend}' is not known; choose one of: {', '.join(BACKENDS)}")
    if backend == "loky":
        with parallel_config(backend="loky"):
            yield
        return
    client = dask_client(scheduler, timeout)
    try:
        with parallel_config(backend="dask", client=client):
            yield
    finally:
        client.close()


def dask_client(scheduler: str | None, timeout: float | None = None):
    """A ``distributed.Client`` on the scheduler at ``scheduler`` (``--backend dask``).

    Raises
    ------
    InputError
        No address, ``distributed`` not installed, or a scheduler that does not answer (or an
        address it cannot parse), each as one line naming the fix.
    """
    if not scheduler:
        raise InputError("backend dask needs the address of a running scheduler; pass --scheduler "
                         "tcp://HOST:8786 (start one with `dask scheduler` and `dask worker`)")
    try:
        from distributed import Client  # optional (cleanpipe[dask]): only for --backend dask
    except ImportError:
        raise InputError("backend dask needs the distributed package; pip install "
                         "'cleanpipe[dask]'") from None
    try:
        return Client(scheduler, timeout=timeout or DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check "
                         "--scheduler and that the scheduler is running") from None


def cross_val_probs(X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None,
                    model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED, n_jobs: int = 1,
                    categorical=None, X_extra: np.ndarray | None = None, class_names=None,
                    progress=None, backend: str | None = None,
                    scheduler: str | None = None,
                    max_train_rows: int | None = MAX_TRAIN_ROWS, device: str = "cpu") -> OutOfFold:
    """Out-of-fold probabilities of validated inputs; see :func:`out_of_fold_probs`.

    ``device`` is already resolved (``"cpu"`` or ``"cuda"``, see
    :func:`cleanpipe.boosters.resolve_device`): on ``cuda`` the boosted families are XGBoost on
    the GPU (:func:`cleanpipe.boosters.resolve_models`).

    ``progress``, if given, is called with ``(done, total)`` as (model, fold) fits finish.
    ``backend`` and ``scheduler`` are passed to :func:`joblib_backend` (``None``: joblib's active
    configuration).

    Notes
    -----
    Every model family of ``model`` (see :func:`model_list`) is fitted on the same folds, one
    joblib task per (model, fold) pair; a row's probabilities are the mean over families of the
    probabilities of the fold model that left it out. One family is the same path with one member.
    Each fold model is fitted on :func:`train_sample` of its fold's training rows (at most
    ``max_train_rows``, stratified; the folds themselves, and so which rows each model predicts,
    do not change). With ``n_jobs=1`` the fits get :func:`fold_threads` threads (the idle cores);
    inside loky workers joblib caps each task's threads at ``cpu_count // n_jobs``. Either way
    the fold workers and a model's threads share the cores rather than oversubscribe them.
    """
    models = resolve_models(model_list(model), device)
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
    if counts.max() < folds:
        if counts.max() < 2:
            raise InputError("every class has a single row; cross-validation needs a class with "
                             "at least 2 rows (merge classes or label more rows)")
        notes.append(f"every class has fewer rows than --folds {folds}: using {counts.max()} folds")
        folds = int(counts.max())
    for note in notes:
        warnings.warn(note, CleanpipeWarning, stacklevel=2)
    ests = [_with_threads(make_model(m, categorical=categorical, seed=seed, device=device), n_jobs)
            for m in models]
    X_extra = np.zeros((0, X.shape[1]), X.dtype) if X_extra is None else X_extra
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = [(train_sample(train, y, max_train_rows, seed + i), test)
                  for i, (train, test) in enumerate(cv.split(np.zeros(len(y)), y))]
    tasks = [(est, train, test) for train, test in splits for est in ests]
    log.info("fitting %d folds x %d model(s) on %d rows with %s", folds, len(ests), len(y),
             ", ".join(type(e).__name__ for e in ests))
    # Summed in float32 (a single model's rows are then copied exactly), divided once at the end.
    pred_probs = np.zeros((len(y), k), dtype=np.float32)
    extra = np.zeros((len(X_extra), k), dtype=np.float64)
    if progress:
        progress(0, len(tasks))
    with joblib_backend(backend, scheduler), _sequential_threads(n_jobs):
        # An ordered generator: results arrive as fits finish, and are summed in task order so
        # the output depends neither on n_jobs nor on the backend.
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_fold)(est, X, y, train, test, X_extra, k) for est, train, test in tasks)
        for done, (test, probs, extra_probs) in enumerate(results, 1):
            pred_probs[test] += probs
            extra += extra_probs
            if progress:
                progress(done, len(tasks))
    if len(ests) > 1:
        pred_probs /= len(ests)
    extra = (extra / len(tasks)).astype(np.float32)
    _renormalise(pred_probs)
    _renormalise(extra)
    return OutOfFold(pred_probs, extra, folds, notes)


def _with_threads(est, n_jobs: int):
    """``est`` with the thread count of one fold fit, where it takes one (``n_threads``), and
    a fresh ``bins_key`` / ``design_key`` where its fold fits can share one binning or design
    matrix (the probabilities depend on neither)."""
    params = est.get_params(deep=False)
    if "n_threads" in params:
        workers = available_cpus() if n_jobs < 0 else n_jobs
        threads = fold_threads(1) if n_jobs == 1 else max(1, available_cpus() // workers)
        est.set_params(n_threads=threads)
    if "bins_key" in params:
        est.set_params(bins_key=new_bins_key())
    if "design_key" in params:
        est.set_params(design_key=new_bins_key())
    return est


@contextlib.contextmanager
def _sequential_threads(n_jobs: int):
    """With ``n_jobs=1`` the fold fits run here, in turn: give them :func:`fold_threads` threads.

    Worker processes (``n_jobs != 1``) get ``cpu_count // n_jobs`` from joblib already. One limit
    around the whole loop, not one per task: entering a limit costs tens of milliseconds.
    """
    if n_jobs != 1:
        yield
        return
    threads = fold_threads(1)
    with _thread_controller().limit(limits={"openmp": threads, "blas": threads}):
        yield


@functools.lru_cache(maxsize=1)
def _thread_controller():
    # Finding the loaded OpenMP/BLAS libraries takes tens of milliseconds: once per process
    # (after the models' modules are imported, so their OpenMP runtime is among them).
    return ThreadpoolController()


def _renormalise(P: np.ndarray) -> None:
    # float32 sums drift from 1; the detectors check rows sum to 1.
    sums = P.sum(axis=1, keepdims=True, dtype=np.float64)
    np.divide(P, np.where(sums > 0, sums, 1.0).astype(P.dtype), out=P)


def out_of_fold_probs(X, y, *, model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED, n_jobs: int = 1,
                      categorical=None, backend: str | None = None,
                      scheduler: str | None = None,
                      max_train_rows: int | None = MAX_TRAIN_ROWS, device: str = "cpu") -> np.ndarray:
    """Out-of-fold predicted probabilities by stratified K-fold cross-validation.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features; NaN allowed with the default model.
    y : array-like of shape (n_samples,)
        Class indices ``0..K-1``.
    model : str, estimator, or list of them, default="hgb,logreg"
        A model family (see :func:`make_model`), or several: ``"hgb,logreg"`` or
        ``["hgb", "logreg"]`` fits each on the same folds and averages their probabilities.
    folds : int, default=5
        Number of stratified folds (shuffled with ``seed``).
    seed : int, default=0
    n_jobs : int, default=1
        (model, fold) pairs fitted in parallel through joblib; ``-1`` uses every core.
    categorical : array-like of bool, optional
        Columns of ``X`` holding category codes.
    backend : {"loky", "dask"}, optional
        Where the folds are fitted (see :func:`joblib_backend`); default: joblib's active
        configuration, which is local loky workers unless changed.
    scheduler : str, optional
        Dask scheduler address for ``backend="dask"``.
    max_train_rows : int or None, default=MAX_TRAIN_ROWS
        Each fold model is fitted on a stratified sample of at most this many of its fold's
        training rows (``None``: all of them); every row is still predicted by a model that did
        not see it.
    device : {"cpu", "auto", "cuda"}, default="cpu"
        Where the boosted families fit: ``cuda`` (or ``auto`` on a machine with an NVIDIA GPU and
        XGBoost) fits them as XGBoost on the GPU; see :func:`cleanpipe.boosters.resolve_device`.

    Returns
    -------
    ndarray of shape (n_samples, K), float32
        Row ``n`` holds the probabilities of the model that did not see row ``n`` (the mean over
        the model families, each fitted without row ``n``).

    Raises
    ------
    InputError
        Fewer than two classes, ``folds`` outside ``[2, n_samples]``, mismatched lengths, an
        unknown model name.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> out_of_fold_probs(X, y, model="logreg").shape
    (150, 3)
    >>> out_of_fold_probs(X, y, model=["hgb", "logreg"]).shape
    (150, 3)
    """
    model = model_list(model)
    if is_table(X):  # a DataFrame: its columns encoded as the CLI encodes them
        table = as_table(X, what="X")
        feats = table_to_features(table, table.column_names)
        X, categorical = feats.X, feats.categorical if categorical is None else categorical
    y, _ = label_codes(y, what="y")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError("X is ragged or not numeric; pass a (rows x features) numeric array") from None
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (rows x features), got shape {X.shape}")
    if X.shape[1] == 0:
        raise InputError("X has no feature columns; pass at least one feature")
    if np.isinf(X).any() or (np.abs(np.nan_to_num(X)) > np.finfo(np.float32).max).any():
        raise InputError("X holds +/-inf or values beyond float32's range; use NaN for a "
                         "missing value (the hgb model handles NaN)")
    X = X.astype(np.float32)
    y = check_labels(y, name="y")
    if len(y) != len(X):
        raise InputError(f"X has {len(X)} rows but y has {len(y)}; pass one label per row")
    check_folds(folds, len(y))
    if n_jobs == 0:
        raise InputError("n_jobs=0 is not valid; pass a positive count or -1 for every core")
    if len(np.unique(y)) < 2:
        raise InputError("y holds a single class; label-error detection needs at least two")
    if max_train_rows is not None and (isinstance(max_train_rows, bool) or max_train_rows < 2):
        raise InputError(f"max_train_rows={max_train_rows!r} is too small; pass None or at least 2")
    device = resolve_device(device)
    return cross_val_probs(X, y, model=model, folds=folds, seed=seed, n_jobs=n_jobs,
                           categorical=categorical, backend=backend, scheduler=scheduler,
                           max_train_rows=max_train_rows, device=device).pred_probs


def check_folds(folds: int, n_rows: int, *, option: str = "--folds") -> None:
    if folds < MIN_FOLDS:
        raise InputError(f"{option} {folds} is too small; cross-validation needs at least "
                         f"{MIN_FOLDS} folds")
    if folds > n_rows:
        raise InputError(f"{option} {folds} is more than the {n_rows} labelled rows; pass "
                         f"{option} between {MIN_FOLDS} and {n_rows}")


# --- multi-label: one-vs-rest ----------------------------------------------------------------------


def multilabel_folds(Y: np.ndarray, folds: int, seed: int) -> list:
    """Shuffled folds stratified on each row's number of tags (the top counts merged as needed).

    Rows with many tags are rare; tag counts above the largest ``c`` with at least ``folds`` rows
    having ``>= c`` tags are merged into ``c``, so every fold gets its share of heavily tagged rows.
    This is a cheap stand-in for iterative stratification (Sechidis et al., ECML 2011), which
    balances each class's positives instead; with shuffling the per-class counts stay close.
    """
    n_tags = np.asarray(Y, dtype=np.int64).sum(axis=1)
    at_least = np.cumsum(np.bincount(n_tags)[::-1])[::-1]  # at_least[c] = #rows with >= c tags
    cap = int(np.flatnonzero(at_least >= folds).max())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(cv.split(np.zeros(len(n_tags)), np.minimum(n_tags, cap)))


class TagModel:
    """``P(tag)`` of one class, fitted once and applied to any rows (picklable: the partitioned
    path ships it to the workers): a fitted binary model, or the base rate of a training set
    without positives (or negatives)."""

    def __init__(self, model=None, col: int = 1, rate: float = 0.0):
        self.model, self.col, self.rate = model, col, rate

    def __call__(self, A) -> np.ndarray:
        if self.model is None:
            return np.full(len(A), self.rate, np.float32)
        if not len(A):
            return np.zeros(0, np.float32)
        return self.model.predict_proba(A)[:, self.col].astype(np.float32)


def fit_tag(est, A, y, train) -> TagModel:
    """One class's model fitted on rows ``train`` of the design ``A`` (0/1 ``y``); a training set
    with one value predicts that base rate (:class:`TagModel`)."""
    y_train = y[train]
    rate = float(y_train.mean())
    if rate in (0.0, 1.0):  # a fold without positives (or negatives): the base rate is all it knows
        return TagModel(rate=rate)
    model = clone(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        model.fit(A[train], y_train)
    return TagModel(model, int(np.flatnonzero(np.asarray(model.classes_) == 1)[0]))


def _fit_binary(est, X, y, train, test, X_extra, others=None, est_extra=None):
    """One class of one fold: ``P(tag)`` for the test rows and the extra rows (float32).

    ``others`` (the row's other given tags) join the features when given; the extra rows have no
    tags, so ``est_extra`` is then fitted on ``X`` alone to predict them.
    """
    rate = float(y[train].mean())
    if rate in (0.0, 1.0):  # a fold without positives (or negatives): the base rate is all it knows
        return (np.full(len(test), rate, np.float32), np.full(len(X_extra), rate, np.float32))
    F = X if others is None else np.hstack([X, others.astype(X.dtype)])
    proba = fit_tag(est, F, y, train)
    if others is not None and len(X_extra):
        return proba(F[test]), fit_tag(est_extra, X, y, train)(X_extra)
    return proba(F[test]), (proba(X_extra) if others is None else np.zeros(0, np.float32))


def tag_count_notes(pos, n: int, folds: int, names) -> list:
    """What the fold models of a multi-label label cannot learn, in words: tags constant over the
    ``n`` labelled rows (``pos[c]`` of them have tag ``c``), and tags with fewer positive (or
    negative) rows than ``folds``. One machine and the partitions warn with these."""
    pos = np.asarray(pos, dtype=np.int64)
    notes = []
    constant = np.flatnonzero((pos == 0) | (pos == n))
    if constant.size:
        notes.append("class(es) " + ", ".join(f"'{names[c]}' ({'every' if pos[c] == n else 'no'} row)"
                                              for c in constant[:5])
                     + " are constant over the labelled rows: their probability is the base rate "
                     "and they cannot show issues; drop them from --label or check the data")
    rare = [c for c in range(len(pos)) if 0 < pos[c] < n and min(pos[c], n - pos[c]) < folds]
    if rare:
        notes.append("class(es) " + ", ".join(f"'{names[c]}' ({min(pos[c], n - pos[c])} rows)"
                                              for c in rare[:5])
                     + f" have fewer positive (or negative) rows than --folds {folds}: their fold "
                     "models see few such rows (a fold without any predicts its base rate), so "
                     "those rows' tags may look wrong; check them by hand")
    return notes


def cross_val_probs_multilabel(X: np.ndarray, Y: np.ndarray, *, model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS,
                               seed: int = DEFAULT_SEED, n_jobs: int = 1, categorical=None,
                               X_extra: np.ndarray | None = None, class_names=None,
                               progress=None, condition_on_tags: bool = True,
                               device: str = "cpu") -> OutOfFold:
    """One-vs-rest out-of-fold probabilities for a 0/1 label matrix (validated inputs).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_classes)
        0/1 (or bool) tag matrix.
    model, folds, seed, n_jobs, categorical
        As in :func:`cross_val_probs`; each model family of ``model`` is fitted once per (fold,
        class) to that class's 0/1 column, each fit a joblib task; families are averaged.
        ``"mlp"`` (multi-label only) is one network per fold for every tag at once, each tag read
        with its own given value hidden and the others shown
        (:func:`cleanpipe.multilabel_mlp.cross_val_probs_mlp`; it conditions on the tags whatever
        ``condition_on_tags`` says), fitted in this process.
    X_extra : ndarray of shape (n_extra, n_features), optional
        Rows without labels, predicted by every fold model and averaged.
    class_names : list of str, optional
        For the notes and warnings.
    progress : callable, optional
        Called with ``(done, total)`` as the ``folds * n_classes`` fits finish.
    device : {"cpu", "cuda"}, default="cpu"
        Resolved device of the boosted families (see :func:`cross_val_probs`).
    condition_on_tags : bool, default=True
        Give each class's model the row's other given tags as extra features, so ``pred_probs[n, k]``
        estimates ``P(tag k | x_n, other given tags of n)``. Rows without labels (``X_extra``) have
        no tags: a second model per (fold, class) fitted on the features alone predicts them.

    Returns
    -------
    OutOfFold
        ``pred_probs[n, k]`` is the probability of tag ``k`` for row ``n`` from the model of the fold
        that left row ``n`` out. Rows need not sum to 1.

    Warns
    -----
    CleanpipeWarning
        A class that every labelled row has (or none has): its probability is that constant base
        rate, and it can show no issue. A class with fewer positive (or negative) rows than
        ``folds``: fold models see few of them (one that sees none predicts the fold's base rate).

    Notes
    -----
    Folds come from :func:`multilabel_folds` (shuffled with ``seed``, stratified on the number of
    tags per row); the same folds serve every class. Results are assembled in task order, so the
    output does not depend on ``n_jobs``. Conditioning on the other given tags (the
    pseudo-likelihood of the given tag set, one tag at a time) lifted the AUPRC of the error rows by
    0.08-0.12 over features alone on three development cases of ``benchmarks/multilabel.py``, where
    a classifier chain (:class:`sklearn.multioutput.ClassifierChain`, 3 random orders) and stacking
    the first-level probabilities did not help (see benchmarks/RESULTS.md).
    """
    Y = np.asarray(Y).astype(np.int8, copy=False)
    n, k = Y.shape
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    notes = tag_count_notes(Y.sum(axis=0, dtype=np.int64), n, folds, names)
    for note in notes:
        warnings.warn(note, CleanpipeWarning, stacklevel=2)
    cats = np.zeros(X.shape[1], bool) if categorical is None else np.asarray(categorical, bool)
    conditioned = condition_on_tags and k > 1
    # One (model, model for the untagged extra rows) pair per family; they are the same model
    # unless each tag's model also sees the row's other given tags.
    ests, joint = [], []
    for name in resolve_models(model_list(model), device):
        if isinstance(name, str) and name in MULTILABEL_ONLY_MODELS:
            joint.append(name)
            continue
        est_x = make_model(name, categorical=categorical, seed=seed, device=device)
        est = (make_model(name, categorical=np.concatenate([cats, np.zeros(k - 1, bool)]), seed=seed,
                          device=device) if conditioned else est_x)
        ests.append((est, est_x))
    X_extra = np.zeros((0, X.shape[1]), X.dtype) if X_extra is None else X_extra
    splits = multilabel_folds(Y, folds, seed)
    tasks = [(f, c, pair) for f in range(folds) for c in range(k) for pair in ests]
    log.info("fitting %d one-vs-rest models (%d folds x %d classes x %d model(s)) on %d rows with %s",
             len(tasks), folds, k, len(ests), n, ", ".join(type(e).__name__ for e, _ in ests))
    pred_probs = np.zeros((n, k), dtype=np.float32)
    extra = np.zeros((len(X_extra), k), dtype=np.float64)
    # The joint network's folds count as fits too, so the bar moves while it trains.
    total = len(tasks) + (folds if joint else 0)
    if progress:
        progress(0, total)
    if joint:  # "mlp": one network for every tag, on the same folds
        from .multilabel_mlp import cross_val_probs_mlp

        pred_probs, extra = cross_val_probs_mlp(
            X, Y, splits, categorical=categorical, seed=seed, X_extra=X_extra,
            on_fold=(lambda f: progress(f + 1, total)) if progress else None)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_fit_binary)(est, X, Y[:, c], splits[f][0], splits[f][1], X_extra,
                             np.delete(Y, c, axis=1) if conditioned else None, est_x)
        for f, c, (est, est_x) in tasks)
    for done, ((f, c, _), (probs, extra_probs)) in enumerate(zip(tasks, results), total - len(tasks) + 1):
        pred_probs[splits[f][1], c] += probs
        extra[:, c] += extra_probs
        if progress:
            progress(done, total)
    families = len(ests) + len(joint)
    if families > 1:
        pred_probs /= families
    return OutOfFold(pred_probs, (extra / (folds * families)).astype(np.float32), folds, notes)
