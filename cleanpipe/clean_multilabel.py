"""The ``clean`` stage's ``relabel`` mode for multi-label flags tables: add or remove single tags.

A multi-label flags table (``cleanpipe flag --multi-label``) names, per flagged row, the tags that
look missing (``suspect_missing``) and wrongly present (``suspect_spurious``). :func:`relabel_cells`
keeps the suspects whose own out-of-fold probability is decisive, and :func:`relabel_multilabel`
rewrites the label column(s) of the table accordingly. ``drop`` and ``weight`` act on whole rows and
need nothing multi-label: :func:`cleanpipe.clean.clean_table` applies its single-label rules to
``is_label_issue``, ``label_score`` and ``p_noisy``, which mean the same per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .detect import iter_blocks
from .errors import InputError
from .features import decode_label_lists
from .settings import DEFAULT_RELABEL_ADD, DEFAULT_RELABEL_REMOVE
from .target import resolve_target




def relabel_cells(given: np.ndarray, p: np.ndarray, *, add_threshold: float = DEFAULT_RELABEL_ADD,
                  remove_threshold: float = DEFAULT_RELABEL_REMOVE) -> np.ndarray:
    """Which suspect (row, class) cells the ``relabel`` mode flips.

    Parameters
    ----------
    given : ndarray of shape (n_cells,), bool
        The given tag at each suspect cell: True = present (a suspect spurious tag), False = absent
        (a suspect missing tag).
    p : ndarray of shape (n_cells,)
        Out-of-fold probability that the tag is present (what ``flag --save-pred-probs`` writes).
    add_threshold, remove_threshold : float in [0, 1], default=0.9, 0.999
        Evidence needed to add a missing tag / to remove a spurious one.

    Returns
    -------
    ndarray of shape (n_cells,), bool

    Notes
    -----
    A suspect missing tag is added when ``p >= add_threshold``; a suspect spurious tag is removed
    when ``p <= 1 - remove_threshold``. NaN never flips. The cells are already the flagger's
    suspects: the model's ``p > 0.5`` disagrees with the given tag and the cell is among the
    ``calibrated off-diagonal count`` most confident disagreements of its class and side (confident
    learning's prune-by-noise-rate), so the thresholds only ask that the disagreement be decisive.

    Examples
    --------
    >>> relabel_cells(np.array([False, False, True, True]), np.array([0.95, 0.7, 0.0005, 0.2])).tolist()
    [True, False, True, False]
    """
    given = np.asarray(given, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(given, p <= 1.0 - remove_threshold, p >= add_threshold)


def _suspect_cells(table: pa.Table, column: str, classes: pa.Array, source: str):
    """(rows, class indices) of the tags listed in a suspect column."""
    arr = table.column(column).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(arr), dtype=np.int64), lengths)
    values = pc.list_flatten(arr)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    try:
        codes = pc.index_in(values.cast(classes.type), value_set=classes)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        codes = pa.nulls(len(values), pa.int32())
    if codes.null_count:
        raise InputError(f"{source} column '{column}' lists a tag that is not among the label's "
                         f"classes ({', '.join(map(str, classes.to_pylist()[:10]))}); pass the "
                         "--label that cleanpipe flag used")
    return rows, codes.to_numpy(zero_copy_only=False).astype(np.int64)


def _gather(pred_probs, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``pred_probs[rows, cols]`` for an ndarray, a memmap or any row-sliceable matrix (row blocks)."""
    if isinstance(pred_probs, np.ndarray):
        return np.asarray(pred_probs[rows, cols], dtype=np.float64)
    out = np.full(len(rows), np.nan)
    for start, stop, block in iter_blocks(pred_probs):
        sel = (rows >= start) & (rows < stop)
        out[sel] = block[rows[sel] - start, cols[sel]]
    return out


def relabel_multilabel(table: pa.Table, *, label, pred_probs, issue: np.ndarray,
                       add_threshold: float = DEFAULT_RELABEL_ADD,
                       remove_threshold: float = DEFAULT_RELABEL_REMOVE,
                       source: str = "FLAGS") -> tuple[pa.Table, dict]:
    """Rewrite the label of a multi-label flags table where :func:`relabel_cells` says so.

    Parameters
    ----------
    table : pyarrow.Table
        Output of ``cleanpipe flag`` on multi-label data.
    label : str or list of str
        The list-of-tags column, or the 0/1 columns (a list or ``"a,b,c"``), as given to flag.
    pred_probs : array-like of shape (n_rows, n_classes)
        The out-of-fold probabilities flag used, columns in class order (``--save-pred-probs``).
    issue : ndarray of shape (n_rows,), bool
        Rows eligible for relabelling (flagged, labelled).
    add_threshold, remove_threshold : float
        See :func:`relabel_cells`.
    source : str
        Name of the input in error messages.

    Returns
    -------
    table : pyarrow.Table
        The label column(s) rewritten on the changed rows (unchanged rows keep their list exactly),
        plus ``original_label``: for a list column a copy of it before cleaning; for 0/1 columns a
        ``list<string>`` of the names of the columns that were 1.
    counts : dict
        ``relabelled`` (rows changed), ``tags_added``, ``tags_removed``.

    Raises
    ------
    InputError
        A missing or non-multi-label label, probabilities of the wrong shape or outside [0, 1].
    """
    if label is None:
        raise InputError(f"--mode relabel needs the label column and none was found in the flag "
                         f"summary of {source}; pass --label")
    target = resolve_target(table.schema, label, multi_label=True, where=source)
    cols, form = list(target.columns), target.form
    enc = target.encode(table)
    Y, labelled, classes = enc.values, enc.labelled, enc.classes
    if form == "list":
        old = table.column(cols[0])
    n, k = Y.shape
    shape = tuple(getattr(pred_probs, "shape", ()))
    if shape != (n, k):
        raise InputError(f"--pred-probs has shape {shape} but {source} has {n} rows and {k} classes; "
                         "pass the --save-pred-probs file of the cleanpipe flag run that wrote it")
    rows, cls, given = [], [], []
    for column, present in (("suspect_missing", False), ("suspect_spurious", True)):
        r, c = _suspect_cells(table, column, classes, source)
        rows.append(r)
        cls.append(c)
        given.append(np.full(len(r), present))
    rows, cls, given = np.concatenate(rows), np.concatenate(cls), np.concatenate(given)
    keep = issue[rows] & labelled[rows] & (Y[rows, cls].astype(bool) == given)
    rows, cls, given = rows[keep], cls[keep], given[keep]
    p = _gather(pred_probs, rows, cls)
    with np.errstate(invalid="ignore"):
        bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        raise InputError(f"--pred-probs holds {p[bad][0]!r} at row {int(rows[bad][0])}; pass "
                         "probabilities in [0, 1] (the --save-pred-probs file of cleanpipe flag)")
    flip = relabel_cells(given, p, add_threshold=add_threshold, remove_threshold=remove_threshold)
    new = Y.copy()
    new[rows[flip], cls[flip]] = ~given[flip]
    changed = np.zeros(n, dtype=bool)
    changed[rows[flip]] = True
    counts = {"relabelled": int(changed.sum()), "tags_added": int((flip & ~given).sum()),
              "tags_removed": int((flip & given).sum())}
    offsets = lambda M: np.concatenate([[0], np.cumsum(M.sum(axis=1, dtype=np.int64))])  # noqa: E731
    if form == "list":
        value_type = old.type.value_type
        plain = value_type.value_type if pa.types.is_dictionary(value_type) else value_type
        rebuilt = decode_label_lists(offsets(new), np.nonzero(new)[1], classes, plain, ~labelled)
        rebuilt = rebuilt.cast(old.type)
        # unchanged rows keep their list as written (tag order, repeats): take from old or rebuilt
        both = pa.concat_arrays([old.combine_chunks(), rebuilt])
        idx = np.where(changed, np.arange(n) + n, np.arange(n))
        out = table.set_column(table.schema.get_field_index(cols[0]), table.schema.field(cols[0]),
                               both.take(pa.array(idx)))
        original = pa.field("original_label", old.type), old
    else:
        out = table
        for j, name in enumerate(cols):
            col = table.column(name)
            values = pa.array(new[:, j].astype(bool)).cast(
                col.type.value_type if pa.types.is_dictionary(col.type) else col.type)
            col = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
            out = out.set_column(out.schema.get_field_index(name), pa.field(name, col.type),
                                 pc.if_else(pa.array(changed), values, col))
        original = (pa.field("original_label", pa.list_(pa.string())),
                    decode_label_lists(offsets(Y), np.nonzero(Y)[1], classes, pa.string(), ~labelled))
    return out.append_column(*original), counts
