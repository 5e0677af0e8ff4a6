"""The ``clean`` stage: drop, down-weight or relabel the rows that ``flag`` marked.

Pure logic over Arrow tables: :func:`clean_table` takes a flags table (the output of
:func:`cleanpipe.flag_table`) and returns a new table plus counts; reading, writing and provenance
metadata belong to the CLI. Every input column is kept (the flag columns too, unless asked
otherwise) and rows whose label is null are never touched. Multi-label flags tables take the same
path; only their ``relabel`` differs (per tag, see :mod:`cleanpipe.clean_multilabel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .clean_multilabel import DEFAULT_RELABEL_ADD, DEFAULT_RELABEL_REMOVE, relabel_multilabel
from .errors import InputError
from .flagsfile import (CHECK_COLUMNS, CLEAN_METADATA, DUPLICATE_SET_COLUMN, FLAG_COLUMNS,
                        OUTLIER_COLUMN, SUSPECT_COLUMNS, table_metadata)
from .frames import as_table
from .settings import DEFAULT_MIN_WEIGHT, DEFAULT_RELABEL_P_NOISY, DEFAULT_RELABEL_SCORE, MODES
from .target import is_multilabel_flags
#: Columns ``clean`` may add.
CLEAN_COLUMNS = ("sample_weight", "original_label")


@dataclass(frozen=True)
class CleanResult:
    """Output of :func:`clean_table`.

    Attributes
    ----------
    table : pyarrow.Table
        The cleaned table.
    counts : dict
        ``rows_in``, ``rows_out``, ``flagged``, ``null_label``, ``dropped``, ``down_weighted``,
        ``relabelled``; multi-label ``relabel`` adds ``tags_added`` and ``tags_removed``.
    settings : dict
        The settings used (JSON-ready).
    """

    table: pa.Table
    counts: dict
    settings: dict
    #: Duplicate sets that kept a row (``drop_duplicates``): pass them to the next batch's call.
    seen_sets: np.ndarray | None = None


def check_flags_table(table: pa.Table, source: str = "FLAGS") -> None:
    """Raise unless ``table`` holds every column of :data:`FLAG_COLUMNS` with a usable type."""
    missing = [c for c in FLAG_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{source} is not a flags file: column '{missing[0]}' is missing "
                         f"(needs {', '.join(FLAG_COLUMNS)}); run cleanpipe flag first and clean "
                         "its output")
    for name, ok in (("label_score", pa.types.is_floating), ("p_noisy", pa.types.is_floating),
                     ("is_label_issue", pa.types.is_boolean)):
        if not ok(table.schema.field(name).type):
            raise InputError(f"{source} column '{name}' has type {table.schema.field(name).type}, not "
                             "what cleanpipe flag writes; run cleanpipe flag first and clean its output")


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A float column as float32 with nulls as NaN (no copy of the table)."""
    return table.column(name).cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


def _bools(table: pa.Table, name: str) -> np.ndarray:
    return pc.fill_null(table.column(name), False).to_numpy(zero_copy_only=False).astype(bool)


def sample_weights(label_score: np.ndarray, p_noisy: np.ndarray, is_label_issue: np.ndarray, *,
                   min_weight: float = DEFAULT_MIN_WEIGHT) -> np.ndarray:
    """Per-row training weights for the ``weight`` mode.

    Parameters
    ----------
    label_score, p_noisy : ndarray of shape (n_samples,)
        The flag columns; NaN where the label is null.
    is_label_issue : ndarray of shape (n_samples,), bool
    min_weight : float in [0, 1], default=0.05
        Floor of a flagged row's weight.

    Returns
    -------
    ndarray of shape (n_samples,), float32
        In ``[min_weight, 1]`` for flagged rows, exactly 1 elsewhere (null labels included).

    Notes
    -----
    ``w_i = clip(min(label_score_i, 1 - p_noisy_i), min_weight, 1)`` for flagged rows, 1 otherwise.
    ``label_score`` is the flagger's blended "label is right" score and ``1 - p_noisy`` the
    loss-mixture's clean posterior; taking the smaller one trusts whichever signal is more
    sceptical (the mixture posterior alone saturates, e.g. ``p_noisy`` tops out near 0.7 on noisy
    digits, which would leave a likely-wrong row at weight 0.3). Unflagged rows keep weight 1 so
    that the weighted loss equals plain cross-entropy on them. The floor keeps a flagged row's
    gradient alive: the flagger is wrong on some rows, and a tiny weight lets those still count.

    Examples
    --------
    >>> sample_weights(np.array([0.9, 0.2, 0.01]), np.array([0.0, 0.6, 0.7]),
    ...                np.array([False, True, True])).tolist()
    [1.0, 0.20000000298023224, 0.05000000074505806]
    """
    w = np.minimum(np.asarray(label_score, np.float32), np.float32(1) - np.asarray(p_noisy, np.float32))
    w = np.clip(np.nan_to_num(w, nan=1.0), np.float32(min_weight), np.float32(1))
    return np.where(is_label_issue, w, np.float32(1)).astype(np.float32)


def relabel_mask(label_score: np.ndarray, p_noisy: np.ndarray, is_label_issue: np.ndarray,
                 given_differs: np.ndarray, *, min_p_noisy: float = DEFAULT_RELABEL_P_NOISY,
                 max_score: float = DEFAULT_RELABEL_SCORE) -> np.ndarray:
    """Rows whose label the ``relabel`` mode replaces by ``predicted_label``.

    Notes
    -----
    ``is_label_issue & predicted != given & p_noisy >= min_p_noisy & label_score <= max_score``.
    Because ``label_score = (1 + margin) / 4 + (1 - p_noisy) / 2`` (see
    :func:`cleanpipe.detect.combine.label_quality`), ``label_score <= 0.25`` with ``p_noisy >= 0.5``
    means the threshold-adjusted margin of the given class is at most ``-2 (1 - p_noisy)``: another
    class clearly beats it. On noisy digits (30% flipped) the predicted class is the true one for
    93% of such rows against 82% of all flagged rows.
    """
    with np.errstate(invalid="ignore"):  # NaN (null labels) compares False: never relabelled
        return (is_label_issue & given_differs & (p_noisy >= min_p_noisy) & (label_score <= max_score))


def first_of_each_set(set_ids: np.ndarray, candidate: np.ndarray, seen=None) -> tuple:
    """Which rows of duplicate sets to drop so that one row of each set is kept.

    Parameters
    ----------
    set_ids : ndarray of shape (n_samples,), int
        The duplicate set of each row (``flag --checks duplicates``); negative: in no set.
    candidate : ndarray of shape (n_samples,), bool
        Rows still kept by the other rules; only these can be a set's keeper.
    seen : ndarray of int, optional
        Sets that already kept a row (in an earlier batch of the same table): all their rows here
        are dropped.

    Returns
    -------
    drop : ndarray of shape (n_samples,), bool
        Candidate rows of a set that are not its keeper.
    seen : ndarray of int
        ``seen`` with the sets of these rows added (sorted, unique).

    Notes
    -----
    The keeper of a set is its first candidate row by position, so the result depends only on
    the row order (deterministic), and a set whose first row was dropped as a label issue or an
    outlier keeps its next row rather than none.

    Examples
    --------
    >>> drop, seen = first_of_each_set(np.array([-1, 0, 1, 0, 1, 0]), np.ones(6, bool))
    >>> drop.tolist(), seen.tolist()
    ([False, False, False, True, True, True], [0, 1])
    >>> first_of_each_set(np.array([0, 2]), np.ones(2, bool), seen)[0].tolist()
    [True, False]
    """
    seen = np.empty(0, np.int64) if seen is None else np.asarray(seen, np.int64)
    in_set = candidate & (set_ids >= 0)
    rows = np.flatnonzero(in_set)
    sets, first = np.unique(set_ids[rows], return_index=True)
    keepers = rows[first[~np.isin(sets, seen)]]
    drop = in_set.copy()
    drop[keepers] = False
    return drop, np.union1d(seen, sets)


def _check_column(table: pa.Table, name: str, option: str, ok, source: str) -> None:
    if name not in table.column_names:
        raise InputError(f"{option} needs the column '{name}', which {source} lacks; run cleanpipe "
                         "flag with --checks all (or --checks duplicates,outliers) and clean its output")
    if not ok(table.schema.field(name).type):
        raise InputError(f"{source} column '{name}' has type {table.schema.field(name).type}, not "
                         "what cleanpipe flag --checks writes; clean the output of cleanpipe flag")


def _check_drops(table: pa.Table, issue_dropped: np.ndarray, *, drop_duplicates: bool,
                 drop_outliers: bool, seen_sets, source: str) -> tuple:
    """Rows dropped as outliers and as duplicates (beyond ``issue_dropped``), and the seen sets."""
    n = table.num_rows
    outliers = np.zeros(n, bool)
    if drop_outliers:
        _check_column(table, OUTLIER_COLUMN, "--drop-outliers", pa.types.is_boolean, source)
        outliers = _bools(table, OUTLIER_COLUMN) & ~issue_dropped
    duplicates = np.zeros(n, bool)
    if drop_duplicates:
        _check_column(table, DUPLICATE_SET_COLUMN, "--drop-duplicates", pa.types.is_integer, source)
        sets = pc.fill_null(table.column(DUPLICATE_SET_COLUMN), -1).to_numpy(zero_copy_only=False)
        duplicates, seen_sets = first_of_each_set(sets.astype(np.int64), ~(issue_dropped | outliers),
                                                  seen_sets)
    return outliers, duplicates, seen_sets


def _check_fraction(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:  # NaN fails too
        raise InputError(f"{name} must be in [0, 1]; got {value!r}")
    return v


def clean_table(table: pa.Table, *, mode: str = MODES[0], label: str | None = None,
                min_weight: float = DEFAULT_MIN_WEIGHT, relabel_p_noisy: float = DEFAULT_RELABEL_P_NOISY,
                relabel_score: float = DEFAULT_RELABEL_SCORE, drop_flag_columns: bool = False,
                source: str = "FLAGS", pred_probs=None, relabel_add: float = DEFAULT_RELABEL_ADD,
                relabel_remove: float = DEFAULT_RELABEL_REMOVE, drop_duplicates: bool = False,
                drop_outliers: bool = False, seen_sets=None) -> CleanResult:
    """Clean a flags table.

    Parameters
    ----------
    table : pyarrow.Table
        Output of ``cleanpipe flag`` (every :data:`FLAG_COLUMNS` present), single- or multi-label
        (detected by :func:`~cleanpipe.target.is_multilabel_flags`).
    mode : {"relabel", "drop", "weight"}, default="relabel"
        ``drop`` removes the flagged rows; ``weight`` keeps every row and appends ``sample_weight``
        (see :func:`sample_weights`); ``relabel`` replaces the label of the rows selected by
        :func:`relabel_mask` by ``predicted_label`` and appends ``original_label`` (the label before
        cleaning, for every row). On multi-label flags ``drop`` and ``weight`` act on whole rows
        with the same rules; ``relabel`` adds or removes single tags, see
        :func:`~cleanpipe.clean_multilabel.relabel_cells` (by default a suspect missing tag is
        added when its out-of-fold probability is >= 0.9, a suspect spurious tag removed when it is
        <= 0.001).
    label : str, optional
        The label column (multi-label: the list column, or ``"a,b,c"`` for 0/1 columns); needed
        by ``relabel`` only.
    min_weight : float in [0, 1], default=0.05
        Floor of a flagged row's weight (``weight``).
    relabel_p_noisy, relabel_score : float in [0, 1], default=0.5, 0.25
        Evidence a row needs to be relabelled (``relabel``).
    drop_flag_columns : bool, default=False
        Remove the :data:`FLAG_COLUMNS` (and the columns of ``flag --checks``) from the output.
        They are kept by default so the output can be audited and ``retrain --loss dynamic-*``
        can use ``p_noisy``; ``retrain`` never uses them as features.
    source : str, default="FLAGS"
        Name of the input in error messages.
    pred_probs : array-like of shape (n_rows, n_classes), optional
        Multi-label ``relabel`` only, and required there: the out-of-fold probabilities flag used
        (``flag --save-pred-probs``), columns in class order.
    relabel_add, relabel_remove : float in [0, 1], default=0.9, 0.999
        Multi-label ``relabel``: evidence to add a missing tag / remove a spurious one.
    drop_duplicates : bool, default=False
        Keep one row of each duplicate set (the ``duplicate_set`` column of ``flag --checks``):
        its first row by position that no other rule drops (see :func:`first_of_each_set`).
    drop_outliers : bool, default=False
        Drop the rows whose ``is_outlier`` (``flag --checks``) is true.
    seen_sets : ndarray of int, optional
        With ``drop_duplicates`` on a table cleaned in batches: the previous batch's
        :attr:`CleanResult.seen_sets`, so each set keeps one row in the whole table.

    Returns
    -------
    CleanResult

    Raises
    ------
    InputError
        Not a flags table, an unknown mode, a bad setting, a missing label column.

    Examples
    --------
    >>> t = pa.table({"x": [1, 2], "label": [0, 1], "given_label": [0, 1], "predicted_label": [0, 0],
    ...               "label_score": [0.9, 0.1], "p_noisy": [0.0, 0.7], "is_label_issue": [False, True]})
    >>> clean_table(t, mode="drop").table.column("x").to_pylist()
    [1]
    """
    table = as_table(table)
    if mode not in MODES:
        raise InputError(f"--mode '{mode}' is not known; choose one of: {', '.join(MODES)}")
    check_flags_table(table, source)
    min_weight = _check_fraction("--min-weight", min_weight)
    relabel_p_noisy = _check_fraction("--relabel-p-noisy", relabel_p_noisy)
    relabel_score = _check_fraction("--relabel-score", relabel_score)
    relabel_add = _check_fraction("--relabel-add", relabel_add)
    relabel_remove = _check_fraction("--relabel-remove", relabel_remove)
    multilabel = is_multilabel_flags(table)
    added = CLEAN_COLUMNS[0] if mode == "weight" else CLEAN_COLUMNS[1] if mode == "relabel" else None
    if added and added in table.column_names:
        if table_metadata(table, CLEAN_METADATA):
            raise InputError(f"{source} already has a column '{added}'; clean the output of "
                             "cleanpipe flag, not an already cleaned table")
        raise InputError(f"{source} already has a column '{added}', which --mode {mode} writes; "
                         "if it is a column of the data's own, rename or drop it before flag (or "
                         "choose another --mode); if the table was cleaned before, clean the output "
                         "of cleanpipe flag instead")

    issue = _bools(table, "is_label_issue")
    score, p_noisy = _floats(table, "label_score"), _floats(table, "p_noisy")
    null_label = table.column("given_label").is_null().to_numpy(zero_copy_only=False)
    issue &= ~null_label  # a row without a label is kept as it is, whatever the flag column says
    counts = {"rows_in": table.num_rows, "flagged": int(issue.sum()), "null_label": int(null_label.sum()),
              "dropped": 0, "down_weighted": 0, "relabelled": 0}
    settings = {"mode": mode, "label": label, "drop_flag_columns": bool(drop_flag_columns)}
    if multilabel:
        settings["multi_label"] = True

    outliers, duplicates, seen_sets = _check_drops(
        table, issue if mode == "drop" else np.zeros(table.num_rows, bool),
        drop_duplicates=drop_duplicates, drop_outliers=drop_outliers, seen_sets=seen_sets, source=source)
    if drop_outliers:
        counts["outliers_dropped"] = int(outliers.sum())
        settings["drop_outliers"] = True
    if drop_duplicates:
        counts["duplicates_dropped"] = int(duplicates.sum())
        settings["drop_duplicates"] = "the first row of each duplicate_set that no other rule drops"
    if mode == "drop":
        out = table.filter(pa.array(~issue))
        counts["dropped"] = counts["flagged"]
    elif mode == "weight":
        w = sample_weights(score, p_noisy, issue, min_weight=min_weight)
        out = table.append_column("sample_weight", pa.array(w, type=pa.float32()))
        counts["down_weighted"] = int((w < 1).sum())
        settings.update(min_weight=min_weight, weight_formula="flagged: clip(min(label_score, "
                        "1 - p_noisy), min_weight, 1); otherwise 1")
    elif multilabel:
        if pred_probs is None:
            raise InputError(f"--mode relabel on multi-label {source} needs the per-tag out-of-fold "
                             "probabilities: rerun cleanpipe flag with --save-pred-probs FILE.npy "
                             "(clean finds it through the summary) or pass --pred-probs FILE.npy")
        out, ml_counts = relabel_multilabel(table, label=label, pred_probs=pred_probs, issue=issue,
                                            add_threshold=relabel_add,
                                            remove_threshold=relabel_remove, source=source)
        counts.update(ml_counts)
        settings.update(relabel_add=relabel_add, relabel_remove=relabel_remove,
                        relabel_rule="per tag of a flagged row: add a suspect_missing tag when its "
                        "out-of-fold probability p >= relabel_add; remove a suspect_spurious tag "
                        "when p <= 1 - relabel_remove")
    else:
        out, n = _relabel(table, label, source, score, p_noisy, issue, relabel_p_noisy, relabel_score)
        counts["relabelled"] = n
        settings.update(relabel_p_noisy=relabel_p_noisy, relabel_score=relabel_score,
                        relabel_rule="is_label_issue and predicted_label != label and "
                        "p_noisy >= relabel_p_noisy and label_score <= relabel_score")
    if drop_outliers or drop_duplicates:
        # The mode kept every row (or, for drop, the unflagged ones): remove the others among those.
        extra = (outliers | duplicates)[~issue] if mode == "drop" else outliers | duplicates
        out = out.filter(pa.array(~extra))
    if drop_flag_columns:
        out = out.drop_columns(list(FLAG_COLUMNS) + [c for c in SUSPECT_COLUMNS
                                                     if multilabel and c in out.column_names]
                               + [c for c in CHECK_COLUMNS if c in out.column_names])
    counts["rows_out"] = out.num_rows
    return CleanResult(out, counts, settings, seen_sets if drop_duplicates else None)


def _relabel(table, label, source, score, p_noisy, issue, min_p_noisy, max_score):
    if label is None:
        raise InputError(f"--mode relabel needs the label column and none was found in the flag "
                         f"summary of {source}; pass --label")
    if label not in table.column_names:
        raise InputError(f"label column '{label}' not found in {source} (columns: "
                         f"{', '.join(table.column_names)}); pass --label with one of them")
    old = table.column(label)
    decoded = old.cast(old.type.value_type) if pa.types.is_dictionary(old.type) else old
    if pa.types.is_float16(decoded.type):  # no comparison kernel for half floats; float32 is exact
        decoded = decoded.cast(pa.float32())
    try:
        predicted = table.column("predicted_label").cast(decoded.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"predicted_label of {source} cannot be cast to the type of label "
                         f"'{label}' ({decoded.type}): {exc}; pass the --label that flag used") from None
    differs = pc.fill_null(pc.not_equal(predicted, decoded), False).to_numpy(zero_copy_only=False)
    mask = relabel_mask(score, p_noisy, issue, differs, min_p_noisy=min_p_noisy, max_score=max_score)
    new = pc.if_else(pa.array(mask), predicted, decoded)
    if pa.types.is_float16(old.type):
        new = new.cast(pa.float16())
    if pa.types.is_dictionary(old.type):
        new = new.dictionary_encode().cast(old.type)
    out = table.set_column(table.schema.get_field_index(label), table.schema.field(label), new)
    return out.append_column(pa.field("original_label", old.type), old), int(mask.sum())
