"""Multi-label data over arrays: :func:`find_multilabel_issues`, its checks, and the summary of a run.

A row's label is a set of tags. In a table it is either one list column (``["cat", "outdoor"]``; an
empty list = no tag, a null list = an unlabelled row, kept and not checked) or several 0/1 columns,
one per class (``--label a,b,c``). The classes are the sorted union of the tags (or the 0/1 columns
in the order given; :mod:`cleanpipe.target`). Out-of-fold probabilities are one-vs-rest
(:func:`cleanpipe.oof.cross_val_probs_multilabel`) and the detector is
:func:`cleanpipe.detect.multilabel.detect_multilabel`; the ``flag`` stage on tables
(:mod:`cleanpipe.flag`) runs both for either kind of label.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._version import __version__
from .detect import check_pred_probs
from .detect.multilabel import MultilabelDetection, detect_multilabel
from .errors import InputError
from .features import decode_label_lists, is_list_type
from .flagsfile import jsonable, run_fields
from .settings import (DEFAULT_MIXTURE, DEFAULT_MULTILABEL_METHOD, MIXTURES, MULTILABEL_METHODS,
                       MULTILABEL_NOISY_THRESHOLD)

#: How a message about a probability outside [0, 1] ends for multi-label data.
SIGMOID_HINT = "apply a sigmoid to each logit first"


# --- arrays ----------------------------------------------------------------------------------------


def check_label_matrix(labels, n_rows: int, n_classes: int) -> np.ndarray:
    """Return the given tags as a ``(n_rows, n_classes)`` uint8 0/1 matrix.

    ``labels`` is either a 2-D array-like (anything with a ``shape``: ndarray, DataFrame) of 0/1 or
    bool, or a list of lists of class indices in ``[0, n_classes)`` (cleanlab's format).

    Raises
    ------
    InputError
        A shape that does not match ``pred_probs``, a value other than 0/1, a class index out of
        range, a row that is not a list.
    """
    if hasattr(labels, "shape"):
        arr = np.asarray(labels)
        if arr.ndim != 2:
            raise InputError(f"labels must be a 2-D 0/1 matrix (rows x classes), got shape {arr.shape}; "
                             "or pass a list of lists of class indices")
        if arr.shape != (n_rows, n_classes):
            raise InputError(f"labels has shape {arr.shape} but pred_probs has shape "
                             f"{(n_rows, n_classes)}; pass one 0/1 column per class, in the same order")
        if arr.dtype.kind not in "biuf":
            raise InputError(f"labels has dtype {arr.dtype}; pass a 0/1 (or bool) matrix")
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputError(f"labels holds {arr[r, c].item()!r} at row {r}, class {c}; a label matrix holds "
                             "only 0 and 1 (1 = tag present)")
        return arr.astype(np.uint8)
    try:
        arr = pa.array(list(labels))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InputError(f"labels is neither a 0/1 matrix nor a list of lists of class indices ({exc}); "
                         "pass e.g. [[0, 2], [], [1]]") from None
    if len(arr) != n_rows:
        raise InputError(f"labels has {len(arr)} rows but pred_probs has {n_rows}; pass one list of "
                         "class indices per row of pred_probs")
    if pa.types.is_null(arr.type):  # every row an empty list or None
        arr = arr.cast(pa.list_(pa.int64())) if len(arr) else arr
    if not is_list_type(arr.type) or not (pa.types.is_integer(arr.type.value_type)
                                          or pa.types.is_null(arr.type.value_type)):
        raise InputError(f"labels holds {arr.type}, not lists of integer class indices; pass e.g. "
                         "[[0, 2], [], [1]] or a 0/1 matrix")
    if arr.null_count:
        r = int(np.argmax(~arr.is_valid().to_numpy(zero_copy_only=False)))
        raise InputError(f"labels row {r} is None; pass [] for a row without tags and drop "
                         "unlabelled rows")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n_rows), lengths)
    flat = pc.list_flatten(arr)
    if flat.null_count:
        raise InputError(f"labels row {int(rows[np.argmax(~flat.is_valid().to_numpy(zero_copy_only=False))])} "
                         "holds None; pass integer class indices only")
    codes = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    out = (codes < 0) | (codes >= n_classes)
    if out.any():
        i = int(np.argmax(out))
        raise InputError(f"labels row {int(rows[i])} holds class index {codes[i]}, outside "
                         f"[0, {n_classes}); class indices must index the columns of pred_probs")
    Y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    Y[rows, codes] = 1
    return Y


def validate_multilabel(labels, pred_probs, *, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = DEFAULT_MIXTURE,
                        noisy_threshold: float = MULTILABEL_NOISY_THRESHOLD):
    """Check inputs once at the boundary; return the 0/1 label matrix and ``pred_probs`` unchanged."""
    check_threshold(noisy_threshold)
    if method not in MULTILABEL_METHODS:
        raise InputError(f"method '{method}' is not known for multi-label data; choose one of: "
                         f"{', '.join(MULTILABEL_METHODS)}")
    if mixture not in MIXTURES:
        raise InputError(f"mixture '{mixture}' is not known; choose one of: {', '.join(MIXTURES)}")
    if getattr(pred_probs, "shape", None) is None:
        pred_probs = np.asarray(pred_probs)
    shape = tuple(pred_probs.shape)
    if len(shape) != 2:
        raise InputError(f"pred_probs must be 2-D (rows x classes), got shape {shape}")
    if shape[0] == 0:
        raise InputError("pred_probs has no rows; there is nothing to check")
    check_pred_probs(pred_probs, shape[0], require_sum_one=False, range_hint=SIGMOID_HINT)
    return check_label_matrix(labels, shape[0], shape[1]), pred_probs


def check_threshold(noisy_threshold) -> None:
    """Raise unless ``noisy_threshold`` is a number in [0, 1)."""
    if not isinstance(noisy_threshold, (int, float)) or not 0 <= noisy_threshold < 1:
        raise InputError(f"noisy_threshold must be a number in [0, 1), got {noisy_threshold!r}")


def _int_lists(offsets: np.ndarray, codes: np.ndarray) -> list:
    """Python lists of class indices per row (through Arrow: no Python loop over rows here)."""
    return decode_label_lists(offsets, codes, pa.array(np.arange(int(codes.max(initial=-1)) + 1)),
                              pa.int64()).to_pylist()


def matrix_lists(M: np.ndarray):
    """A 0/1 matrix as ``(offsets, codes)`` of the columns set in each row."""
    offsets = np.concatenate([[0], np.cumsum(M.sum(axis=1, dtype=np.int64))])
    return offsets, np.nonzero(M)[1]


def find_multilabel_issues(labels, pred_probs, *, method: str = DEFAULT_MULTILABEL_METHOD, mixture: str = DEFAULT_MIXTURE,
                           noisy_threshold: float = MULTILABEL_NOISY_THRESHOLD) -> pd.DataFrame:
    """Score every row of multi-label data and flag the likely mislabeled ones.

    Parameters
    ----------
    labels : array-like of shape (n_samples, n_classes), or list of lists of int
        The given tags: a 0/1 (or bool) matrix (anything with a ``shape``), or, as in cleanlab,
        one list of class indices per row (``[[0, 2], [], [1]]``).
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold probability of each tag, e.g. one-vs-rest sigmoid outputs; rows need not sum to
        1. A ``np.memmap`` works: it is walked in row blocks.
    method : {"posterior", "noise_rate", "mixture", "both"}, default="posterior"
        Which rule sets ``is_label_issue`` (see Notes). The scores do not depend on it.
    mixture : {"beta", "gaussian"}, default="beta"
        Family of the two-component mixture fitted to the per-row losses.
    noisy_threshold : float in [0, 1), default=0.5
        ``p_noisy`` from which the ``mixture`` and ``both`` rules count a row as noisy.

    Returns
    -------
    pandas.DataFrame
        One row per input row, in order: ``given_label`` and ``predicted_label`` (lists of class
        indices; predicted = ``p > 0.5``), ``label_score`` (in [0, 1], higher = more likely
        correct: one minus the posterior that the row holds a wrong tag), ``p_noisy`` (posterior of the high-loss mixture component), ``is_label_issue``
        (bool), ``suspect_missing`` and ``suspect_spurious`` (lists of class indices likely missing
        from / wrongly present in the row's tags; empty unless the row is flagged).

    Raises
    ------
    InputError
        Shapes that disagree, labels that are not 0/1 (or class indices out of range), NaN/inf or
        probabilities outside [0, 1], an unknown method.

    Notes
    -----
    Each class ``k`` is a binary problem with probabilities ``(1 - p_k, p_k)``. The posterior rule
    first recalibrates them with one Platt map per number of *other* given tags of the row, fitted
    to the given tags (:func:`cleanpipe.detect.tag_calibration.fit_tag_count_calibration`: a model
    is often too sure of a tag in rows with many tags and too unsure in rows with few). The noise
    rates, ``rho0 = P(given 1 | true 0)`` (spurious) and ``rho1 = P(given 0 | true 1)`` (missing),
    one of each for all classes, are read off anchor cells: the given tags of the 5% of cells the
    model is surest lack (or have) their tag, among the rows with few other given tags
    (:func:`cleanpipe.detect.anchors.anchor_noise_rates`). Bayes' rule under
    class-conditional noise turns each cell's ``p`` into the posterior that its given tag is wrong,
    and a row's cells combine into ``p_error = 1 - prod_k (1 - post_k)``; ``label_score =
    1 - p_error``. ``posterior`` (default) flags the ``round(sum(p_error))`` rows of highest
    ``p_error``, as many as are expected wrong; a flagged row's suspects are its cells with a flip
    posterior >= 0.5 (or its likeliest flip). ``noise_rate`` is cleanlab's one-vs-rest rule:
    confident learning per class (thresholds ``t[k, 1] = mean(p_k | tag given)``,
    ``t[k, 0] = mean(1 - p_k | tag not given)``, the calibrated confident joint), that many cells
    per class and given side whose ``p > 0.5`` disagrees with the tag, and every row holding one.
    ``p_noisy`` comes from the two-component mixture fitted to the per-row binary cross-entropy
    ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]``; ``mixture`` flags rows with
    ``p_noisy >= noisy_threshold`` holding a disagreeing cell and ``both`` requires that and the
    ``noise_rate`` rule.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.tile([[1, 0], [0, 1]], (10, 1))
    >>> pred_probs = np.tile([[.9, .1], [.1, .9]], (10, 1))
    >>> labels[0] = [0, 1]  # row 0's tags were swapped
    >>> out = find_multilabel_issues(labels, pred_probs)
    >>> np.flatnonzero(out["is_label_issue"]).tolist()
    [0]
    >>> out.loc[0, ["suspect_missing", "suspect_spurious"]].tolist()
    [[0], [1]]
    """
    Y, pred_probs = validate_multilabel(labels, pred_probs, method=method, mixture=mixture,
                                        noisy_threshold=noisy_threshold)
    det = detect_multilabel(Y, pred_probs, method=method, mixture=mixture,
                            noisy_threshold=noisy_threshold)
    return pd.DataFrame({
        "given_label": _int_lists(*matrix_lists(Y)),
        "predicted_label": _int_lists(*matrix_lists(det.predicted)),
        "label_score": det.label_score,
        "p_noisy": det.p_noisy,
        "is_label_issue": det.is_label_issue,
        "suspect_missing": _int_lists(*det.suspects(spurious=False)),
        "suspect_spurious": _int_lists(*det.suspects(spurious=True)),
    })


# --- the summary of a flag run ------------------------------------------------------------------


def build_multilabel_summary(det: MultilabelDetection, labels: np.ndarray, classes: list, *,
                             n_rows: int, source=None, settings=None, timings=None,
                             notes=()) -> dict:
    """The JSON-ready summary of a multi-label detection (what ``<out>.summary.json`` holds).

    Keys shared with the single-label summary keep their meaning per row: ``estimated_noise_rate``
    is the estimated share of rows with at least one wrong tag; ``noise_rate_per_class`` the share
    of rows whose tag of that class is wrong (missing or spurious); ``rows_per_class`` the rows
    given each tag; ``flagged_per_class`` the flagged rows with a suspect tag of that class.
    """
    cl = det.confident
    names = [str(jsonable(c)) for c in classes]
    n_rows_lab = max(len(labels), 1)
    n_lab = len(labels)
    suspect_classes = np.zeros(len(classes), dtype=np.int64)
    pairs = np.unique(det.issue_rows * len(classes) + det.issue_classes)
    np.add.at(suspect_classes, pairs % len(classes), 1)
    # The estimates come from the flip posteriors (the calibrated confident joint over-counts
    # when the model is weak; its joint stays in the summary as a diagnostic).
    missing, spurious = det.expected_wrong[:, 0], det.expected_wrong[:, 1]
    return {
        "cleanpipe_version": __version__,
        "source": None if source is None else os.fspath(source),
        "multi_label": True,
        "rows": int(n_rows),
        "labelled_rows": int(n_lab),
        "unlabelled_rows": int(n_rows - n_lab),
        "classes": [jsonable(c) for c in classes],
        "n_classes": len(classes),
        "estimated_noise_rate": det.expected_issues / n_rows_lab,
        "estimated_issues": round(det.expected_issues),
        "estimated_wrong_tags": round(float(missing.sum() + spurious.sum())),
        "noise_rate_per_class": dict(zip(names, map(float, (missing + spurious) / n_rows_lab))),
        "missing_per_class": dict(zip(names, map(round, missing))),
        "spurious_per_class": dict(zip(names, map(round, spurious))),
        "missing_rate_per_class": dict(zip(names, map(float, np.round(det.noise_matrix[:, 0, 1], 6)))),
        "spurious_rate_per_class": dict(zip(names, map(float, np.round(det.noise_matrix[:, 1, 0], 6)))),
        "rows_per_class": dict(zip(names, map(int, cl.label_counts[:, 1]))),
        "flagged": int(det.is_label_issue.sum()),
        "flagged_per_class": dict(zip(names, map(int, suspect_classes))),
        "flagged_tags": {"missing": int((~det.issue_given).sum()),
                         "spurious": int(det.issue_given.sum())},
        "noise_matrix": np.round(det.noise_matrix, 6).tolist(),
        "noise_matrix_axes": "[class][given][true]: P(given | true) with 0 = tag absent, 1 = present",
        "class_prior": np.round(cl.prior[:, 1], 6).tolist(),
        "thresholds": np.round(cl.thresholds, 6).tolist(),
        "confident_joint": cl.confident_joint.tolist(),
        **run_fields(det, settings, timings, notes),
    }
