"""Retrain's own quick noise estimate, for ``--loss auto`` on a table no flag run describes.

Confident learning (the code ``flag`` uses) on cross-validated probabilities of ``flag``'s default
model families, fitted on a seeded sample of at most :data:`QUICK_ROWS` labelled rows with
:data:`QUICK_FOLDS` folds: a few seconds where the full ``flag`` run takes minutes, and enough for
the three numbers :func:`cleanpipe.auto.choose_training` reads.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: Labelled rows the quick estimate is fitted on (a seeded random sample when there are more).
QUICK_ROWS = 4000
#: Cross-validation folds of the quick estimate.
QUICK_FOLDS = 3


def quick_estimate(table: pa.Table, columns: list, codes: np.ndarray, n_classes: int, *,
                   seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Noise matrix ``P(given | true)`` and true-class prior from a sample of the labelled rows.

    Parameters
    ----------
    table : pyarrow.Table
    columns : list of str
        Feature columns of ``table``.
    codes : ndarray of shape (table.num_rows,), int
        Label codes in ``[0, n_classes)``, negative for unlabelled rows.
    n_classes : int
    seed : int
        Seeds the sample, the folds and the models.

    Returns
    -------
    (noise_matrix, prior) or None
        None when a class has fewer than :data:`QUICK_FOLDS` rows in the sample (cross-validation
        needs a row of each class per fold); ``auto`` then has no estimate.
    """
    from ..detect.confident import confident_learning
    from ..features import table_to_features
    from ..oof import out_of_fold_probs

    rows = np.flatnonzero(codes >= 0)
    if len(rows) > QUICK_ROWS:
        rows = np.sort(np.random.default_rng([seed, 0x717569636B]).choice(rows, QUICK_ROWS, replace=False))
    y = codes[rows]
    if n_classes < 2 or np.bincount(y, minlength=n_classes).min() < QUICK_FOLDS:
        return None
    feats = table_to_features(table.take(pa.array(rows)), columns)
    probs = out_of_fold_probs(feats.X, y, folds=QUICK_FOLDS, seed=seed, categorical=feats.categorical)
    cl = confident_learning(y, probs, n_classes)
    return np.asarray(cl.noise_matrix, np.float64), np.asarray(cl.prior, np.float64)
