"""Multi-label fold models of the hashed folds: fitted once on the training sample, applied to any
partition (out-of-fold at scale for a tag label, issue 21).

The multi-label side of :mod:`cleanpipe.hashed_folds`, with the model families of the one-machine
:func:`cleanpipe.oof.cross_val_probs_multilabel`: per family, one model per tag fitted on the
features and the row's other given tags (:func:`cleanpipe.oof.fit_tag`), so a tag's probability
is ``P(tag k | x, other given tags)``; a second one per tag on the features alone predicts the rows
without tags (only when the table has some); ``mlp`` is the joint network of
:mod:`cleanpipe.multilabel_mlp` (one per fold, seed ``seed * 1000 + fold`` as on one machine).
The families' probabilities are averaged; rows need not sum to 1.

Folds are :func:`cleanpipe.hashed_folds.hashed_folds` of the rows' hashes, as for one class per
row, and not stratified on the tags: a fold that is a pure function of a row's id cannot count
the rows of a stratum in other partitions (exact stratification needs a global sort per stratum,
for the one-machine stratum, the tag count, or for any tag). The hash is independent of the tags,
so every tag and every tag count spreads over the folds in proportion, within a few
``sqrt(n / F)`` of its ``n`` positives; the one-machine fold split's point, heavily tagged or rare
rows in every fold, is met in expectation, and exactly enough for tags with many positives.
"""

from __future__ import annotations

import warnings

import numpy as np

from .hashed_folds import blocked as _blocked
from .settings import MULTILABEL_ONLY_MODELS

class TagFoldModel:
    """Fold ``fold``'s fitted multi-label model: the mean of its families' tag probabilities.

    ``families`` holds, per family, ``("tags", per-tag models, per-tag models on the features
    alone or None)`` or ``("mlp", design, network)``.
    """

    def __init__(self, fold: int, n_classes: int, families: tuple):
        self.fold = fold
        self.n_classes = n_classes
        self.families = tuple(families)

    def predict_tags(self, X, Y, labelled) -> np.ndarray:
        """Probabilities of rows ``X`` (float32 ``(n, n_classes)``): a labelled row's tag ``k``
        given its other given tags ``Y``; a row without tags from its features alone."""
        from .multilabel_mlp import predict_network
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32).reshape(len(X), self.n_classes)
        lab, unl = np.flatnonzero(labelled), np.flatnonzero(~np.asarray(labelled, dtype=bool))
        P = np.zeros((len(X), self.n_classes), np.float32)
        for kind, first, second in self.families:
            if kind == "mlp":
                Z = _blocked(lambda A: _transform(first, A), X)
                P[lab] += _blocked(lambda A, B: predict_network(second, A, B), Z[lab], Y[lab])
                P[unl] += _blocked(lambda A: predict_network(second, A), Z[unl])
                continue
            for c in range(self.n_classes):  # conditioned on the other tags, as fitted
                F = (np.hstack([X[lab], np.delete(Y[lab], c, axis=1)]) if self.n_classes > 1
                     else X[lab])
                P[lab, c] += _blocked(first[c], F)
                if unl.size:
                    P[unl, c] += _blocked((second or first)[c], X[unl])
        if len(self.families) > 1:
            P /= len(self.families)
        return P


def _transform(pre, X) -> np.ndarray:
    D = pre.transform(X)
    D = D.toarray() if hasattr(D, "toarray") else np.asarray(D)
    return np.ascontiguousarray(D, dtype=np.float32)


def fit_tag_fold_model(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, fold: int, *,
                       model, seed: int = 0, categorical=None,
                       untagged_rows: bool = True) -> TagFoldModel:
    """Fold ``fold``'s multi-label model, fitted on the sample rows outside ``fold``.

    Parameters
    ----------
    X : ndarray of shape (m, n_features)
        The training sample's features (:class:`cleanpipe.hashed_folds.TrainingSample`).
    Y : ndarray of shape (m, n_classes)
        Their given 0/1 tags.
    folds : ndarray of shape (m,)
    fold : int
    model : str, estimator, or list of them
        As for :func:`cleanpipe.oof.cross_val_probs_multilabel` (``"mlp"``: the joint network).
    seed : int, default=0
    categorical : ndarray of bool, optional
        Columns of ``X`` holding category codes.
    untagged_rows : bool, default=True
        The table has rows without tags: fit each tag's second model, on the features alone,
        that predicts them (as on one machine, only when there are such rows).

    Returns
    -------
    TagFoldModel
        It never saw a row of fold ``fold``.

    Raises
    ------
    InputError
        The fold's training rows are empty.

    Examples
    --------
    >>> from cleanpipe.hashed_folds import hashed_folds, id_hashes
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2)); Y = np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(np.int8)
    >>> folds = hashed_folds(id_hashes(np.arange(300)), 3)
    >>> m = fit_tag_fold_model(X, Y, folds, 0, model="logreg")
    >>> m.predict_tags(X[:4], Y[:4], np.ones(4, bool)).shape
    (4, 2)
    """
    from .boosters import resolve_models
    from .errors import InputError
    from .oof import fit_tag, make_model, model_list
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y).astype(np.int8, copy=False)
    k = Y.shape[1]
    train = np.flatnonzero(np.asarray(folds) != fold)
    if train.size == 0:
        raise InputError(f"fold {fold}'s training sample is empty ({len(Y)} sample rows); pass "
                         "fewer folds or a larger training sample")
    cats = np.zeros(X.shape[1], bool) if categorical is None else np.asarray(categorical, bool)
    conditioned = k > 1
    families = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for name in resolve_models(model_list(model)):
            if isinstance(name, str) and name in MULTILABEL_ONLY_MODELS:
                families.append(_fit_mlp(X, Y, train, cats, seed * 1000 + fold))
                continue
            est_x = _one_thread(make_model(name, categorical=categorical, seed=seed))
            est = (_one_thread(make_model(name, categorical=np.concatenate(
                [cats, np.zeros(k - 1, bool)]), seed=seed)) if conditioned else est_x)
            tags, alone = [], [] if (conditioned and untagged_rows) else None
            for c in range(k):
                F = np.hstack([X, np.delete(Y, c, axis=1).astype(X.dtype)]) if conditioned else X
                try:
                    tags.append(fit_tag(est, F, Y[:, c], train))
                    if alone is not None:
                        alone.append(fit_tag(est_x, X, Y[:, c], train))
                except ValueError as exc:
                    raise InputError(f"the model could not be fitted on fold {fold} "
                                     f"({str(exc).splitlines()[0]}); check the feature columns "
                                     "or try --model hgb") from None
            families.append(("tags", tuple(tags), None if alone is None else tuple(alone)))
    return TagFoldModel(fold, k, tuple(families))


def _one_thread(est):
    """``est`` with one fold fit's threads (:func:`cleanpipe.oof._with_threads`) and no shared
    design or binning: those caches key on the matrix's ``id``, and each tag's design (features
    and the other tags) is a new matrix, which may reuse a freed one's ``id``."""
    from .oof import _with_threads
    est = _with_threads(est, 1)
    params = est.get_params(deep=False)
    est.set_params(**{key: None for key in ("bins_key", "design_key") if key in params})
    return est


def _fit_mlp(X, Y, train, cats, seed: int):
    """``("mlp", design, network)``: the design fitted on the training rows, as on one machine."""
    from .linear import preprocessing
    from .multilabel_mlp import fit_network
    pre = preprocessing(cats if cats.any() else None).fit(X[train])
    return ("mlp", pre, fit_network(_transform(pre, X[train]), Y[train], seed=seed))


def predict_tags_out_of_fold(models, X: np.ndarray, Y: np.ndarray, labelled: np.ndarray,
                             folds: np.ndarray, n_classes: int) -> np.ndarray:
    """One partition's out-of-fold tag probabilities: row ``n`` from ``models[folds[n]]``.

    Parameters
    ----------
    models : list of TagFoldModel
    X : ndarray of shape (n, n_features)
    Y : ndarray of shape (n, n_classes)
        The rows' given 0/1 tags (0 on rows without tags).
    labelled : ndarray of bool of shape (n,)
    folds : ndarray of shape (n,)
    n_classes : int

    Returns
    -------
    ndarray of shape (n, n_classes), float64
    """
    out = np.zeros((len(X), n_classes), dtype=np.float64)
    labelled = np.asarray(labelled, dtype=bool)
    for f, model in enumerate(models):
        rows = np.flatnonzero(folds == f)
        if rows.size:
            out[rows] = model.predict_tags(X[rows], Y[rows], labelled[rows])
    return out
