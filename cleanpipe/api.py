"""The public Python API over arrays: :func:`find_label_issues`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .detect import Detection, check_labels, check_pred_probs, detect
from .errors import InputError
from .frames import label_codes
from .settings import DEFAULT_METHOD, DEFAULT_MIXTURE, METHODS, MIXTURES, default_noisy_threshold


def validate(labels, pred_probs, *, method: str = DEFAULT_METHOD, mixture: str = DEFAULT_MIXTURE):
    """Check inputs once at the boundary; return ``labels`` as int64 and ``pred_probs`` unchanged."""
    if method not in METHODS:
        raise InputError(f"method '{method}' is not known; choose one of: {', '.join(METHODS)}")
    if mixture not in MIXTURES:
        raise InputError(f"mixture '{mixture}' is not known; choose one of: {', '.join(MIXTURES)}")
    shape = getattr(pred_probs, "shape", None)
    if shape is None:
        try:
            pred_probs = np.asarray(pred_probs, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError("pred_probs is ragged or not numeric; pass a (rows x classes) array "
                             "of probabilities") from None
        shape = pred_probs.shape
    n_classes = shape[1] if len(shape) == 2 else None
    try:
        labels = check_labels(labels, n_classes)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("labels is ragged or not a 1-D array of class indices; pass one integer "
                         "label per row") from None
    check_pred_probs(pred_probs, len(labels))
    return labels, pred_probs


def detection_frame(det: Detection, labels: np.ndarray, classes=None) -> pd.DataFrame:
    """The per-row columns of a :class:`Detection` as a DataFrame; labels as ``classes`` values
    (an Arrow array) when given, else as class indices."""
    # Every column is a fresh array owned by the frame (labels copied: it may be the caller's), so
    # pandas need not copy them again into consolidated blocks.
    given, predicted = np.array(labels, dtype=np.int64), det.predicted.astype(np.int64)
    if classes is not None:
        values = np.asarray(classes.to_numpy(zero_copy_only=False))
        given, predicted = values[given], values[predicted]
    return pd.DataFrame({
        "given_label": given,
        "predicted_label": predicted,
        "label_score": det.label_score,
        "p_noisy": det.p_noisy,
        "is_label_issue": det.is_label_issue,
    }, copy=False)


def find_label_issues(labels, pred_probs, *, method: str = DEFAULT_METHOD, mixture: str = DEFAULT_MIXTURE,
                      noisy_threshold: float | None = None) -> pd.DataFrame:
    """Score every row and flag the likely mislabeled ones.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Given class of each row: an index in ``[0, n_classes)``, or a string / category (a
        pandas or polars Series, a list), which is matched to the columns of ``pred_probs`` in
        sorted order, the order of a scikit-learn classifier's ``classes_``.
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold predicted probabilities (rows sum to 1), e.g. from :func:`out_of_fold_probs`.
        A ``np.memmap`` works: the matrix is walked in row blocks and never copied whole.
    method : {"combined", "noise_rate", "per_class", "both", "mixture"}, default="combined"
        Which rule sets ``is_label_issue`` (see Notes). The scores do not depend on it.
    mixture : {"beta", "gaussian"}, default="beta"
        Family of the two-component loss mixture.
    noisy_threshold : float, optional
        ``p_noisy`` above which the mixture counts a row as noisy: for ``combined``'s number of
        issues (default 0.8), and the rows ``mixture`` flags (default 0.5, likelier noisy than
        clean).

    Returns
    -------
    pandas.DataFrame
        One row per input row, in order, with columns ``given_label``, ``predicted_label``
        (arg-max class), ``label_score`` (in [0, 1], higher = more likely correct), ``p_noisy``
        (posterior of the high-loss mixture component) and ``is_label_issue`` (bool).

    Raises
    ------
    InputError
        Shapes that disagree, labels outside ``[0, n_classes)``, NaN/inf or negative
        probabilities, rows that do not sum to 1, an unknown method.

    Notes
    -----
    Confident learning computes per-class thresholds ``t_j = mean(p_j | given = j)``, counts the
    confident joint ``C[given, true]``, calibrates it to the label counts and derives the joint,
    the class prior and the noise matrix ``P(given | true)``. Its off-diagonal gives the number of
    label issues per given class. The loss mixture fits two Beta (or Gaussian) components by EM to
    the normalised cross-entropy losses ``-log p_given``; ``p_noisy`` is the posterior of the
    high-loss component. ``label_score`` is the posterior that the given label is the true one,
    ``T[g, g] p_g / sum_j T[g, j] p_j`` with ``T`` the estimated noise matrix, smoothed and
    symmetric (self-confidence's order) unless BIC supports a class-conditional pattern among
    each class's anchors (the 10% of its predicted rows the model is surest of). The
    default ``combined`` rule flags the ``k`` rows with the lowest ``label_score``, where ``k`` is
    the count that maximises the expected F1 under each row's probability of error (the same
    posterior on probabilities first calibrated to the given labels by one temperature, then
    freed of the noise, ``T^{-1}``: see :mod:`cleanpipe.detect.temperature`; every expected wrong
    row counts in F1's denominator) or, when the mixture's
    high-loss component is a population the model rejects (mean ``p_given < 1/2``, >= 10% of the
    fitted rows, more such rows than labels drawn from the model's own probabilities would give),
    the number of rows with ``p_noisy > noisy_threshold`` if larger (moved towards
    cleanlab's per-cell pruning count by at
    most two standard errors), and never a row whose arg-max is its label; rows that per-cell
    pruning also flags rank up to two standard errors of their score earlier.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 1, 1, 1])
    >>> pred_probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.95, .05]])
    >>> find_label_issues(labels, pred_probs)["is_label_issue"].tolist()
    [False, False, False, False, True]
    """
    labels, classes = label_codes(labels)
    shape = getattr(pred_probs, "shape", ())
    if classes is not None and len(shape) == 2 and len(classes) != shape[1]:
        raise InputError(f"labels hold {len(classes)} distinct classes but pred_probs has {shape[1]} "
                         "columns; pass integer class indices, or labels covering every class "
                         "(a pandas categorical keeps classes no row carries)")
    labels, pred_probs = validate(labels, pred_probs, method=method, mixture=mixture)
    if noisy_threshold is None:
        noisy_threshold = default_noisy_threshold(method)
    if not 0.0 <= noisy_threshold < 1.0:
        raise InputError(f"noisy_threshold {noisy_threshold} is outside [0, 1); pass a posterior "
                         "threshold such as 0.8")
    det = detect(labels, pred_probs, method=method, mixture=mixture, noisy_threshold=noisy_threshold)
    return detection_frame(det, labels, classes)

