"""Arrow table -> feature matrix and label codes, and label codes back to the label's own type.

Feature columns become float32 columns of one matrix: numbers and bools as they are, strings and
dictionaries as category codes (flagged as categorical), timestamps/dates/durations as numbers,
and list / fixed-size-list columns of numbers (embedding vectors) expanded to one column per
element. Nulls become NaN, which the default model handles natively.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import CleanpipeWarning, InputError

from .settings import MAX_CATEGORIES, MAX_VOCABULARY


@dataclass(frozen=True)
class Features:
    """A feature matrix with its provenance.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float32
    names : list of str
        One name per matrix column (``emb[3]`` for an expanded vector element).
    categorical : ndarray of shape (n_features,), bool
        Columns holding category codes.
    columns : list of str
        The table columns used.
    """

    X: np.ndarray
    names: list
    categorical: np.ndarray
    columns: list


def columns_hint(names, limit: int = 12) -> str:
    """``a, b, c`` for error messages; long lists are cut with a count of the rest."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


#: A label with more distinct values than this and than half its labelled rows is refused: its
#: classes would hold one or two rows each (a regression target or an id passed as the label).
MAX_UNIQUE_CLASSES = 20
#: Rows from which a column with a distinct value in every row is taken for an id (see
#: :func:`id_like_columns`).
ID_LIKE_MIN_ROWS = 500


def _is_label_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_label_type(t.value_type)
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_boolean(t))


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_float16(col.type):  # few Arrow kernels take half floats; float32 holds them exactly
        col = col.cast(pa.float32())
    return col


def encode_labels(col: pa.ChunkedArray, name: str):
    """Map a label column to class codes.

    Returns
    -------
    codes : ndarray of shape (n,), int64
        Index into ``classes``; -1 where the label is null.
    classes : pyarrow.Array
        The distinct non-null labels, sorted, in the label column's (decoded) type.
    """
    if not _is_label_type(col.type):
        raise InputError(f"label column '{name}' has type {col.type}; labels must be integers, "
                         "strings, bools or categories (pass another column with --label)")
    try:
        return _encode_labels(_decoded(col), name)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"label column '{name}' of type {col.type} cannot be used as a label "
                         f"({first}); cast it to integers or strings, or pass another --label") from None


def _encode_labels(values: pa.ChunkedArray, name: str):
    if pa.types.is_floating(values.type):
        finite = pc.is_finite(values)
        if pc.any(pc.invert(pc.fill_null(finite, True))).as_py():
            raise InputError(f"label column '{name}' holds NaN or inf; use null for a missing label")
    classes = pc.unique(values).drop_null()
    labelled = len(values) - values.null_count
    if len(classes) > max(MAX_UNIQUE_CLASSES, labelled // 2):
        # Every class would hold one or two rows: nothing to learn a class from, every row
        # flagged. A float column like this is a regression target; anything else an identifier.
        what = ("looks like a continuous (regression) target, not class labels; cleanpipe finds "
                "errors in class labels: bin the values into classes first, or pass the class "
                "column with --label") if pa.types.is_floating(values.type) else (
                "looks like an identifier, not class labels; pass the class column with --label")
        raise InputError(f"label column '{name}' has {len(classes):,} distinct values in "
                         f"{labelled:,} labelled rows: it {what}")
    classes = classes.take(pc.array_sort_indices(classes))
    codes = pc.index_in(values, value_set=classes)
    return pc.fill_null(codes, -1).to_numpy().astype(np.int64), classes


def decode_labels(codes: np.ndarray, classes: pa.Array, out_type: pa.DataType) -> pa.Array:
    """Class codes back to label values (``-1`` -> null), cast to ``out_type``."""
    idx = pa.array(codes, mask=codes < 0, type=pa.int64())
    return classes.take(idx).cast(out_type)


def select_feature_columns(schema: pa.Schema, label: str | list, *, features=None, exclude=(),
                           ids=()) -> list:
    """The feature columns: ``features`` if given, else every column but the label, ids and excluded."""
    names = schema.names
    labels = [label] if isinstance(label, str) else list(label)
    for opt, cols in (("--features", features or ()), ("--exclude", exclude), ("--id", ids)):
        for c in cols:
            if c not in names:
                raise InputError(f"{opt} column '{c}' not found (columns: {columns_hint(names)}); "
                                 f"fix the name passed to {opt}")
    if features:
        cols = list(dict.fromkeys(features))
        clash = [c for c in cols if c in labels]
        if clash:
            raise InputError(f"--features includes the label column '{clash[0]}'; remove it")
    else:
        skip = set(labels) | set(exclude) | set(ids)
        cols = [c for c in names if c not in skip]
    if not cols:
        raise InputError("no feature columns are left; pass --features or fewer --exclude columns")
    return cols


def id_like_columns(table: pa.Table, columns, *, min_rows: int = ID_LIKE_MIN_ROWS) -> list:
    """The ``columns`` of ``table`` that look like row identifiers, not features: text or integer
    columns with a distinct value in every row, integers evenly spaced once sorted (1, 2, 3, ...
    or 1000, 1010, ...). A model fitted on one learns the rows by heart. Tables under
    ``min_rows`` rows are not judged: there a distinct value per row is common in real features."""
    if table.num_rows < min_rows:
        return []
    out = []
    for name in columns:
        col = _decoded(table.column(name))
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_string_view(t)):
            continue
        if col.null_count or pc.count_distinct(col).as_py() != table.num_rows:
            continue
        if pa.types.is_integer(t):
            steps = np.diff(np.sort(col.to_numpy()))
            if steps.size and not np.all(steps == steps[0]):
                continue
        out.append(name)
    return out


def _numeric(col: pa.ChunkedArray) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32's range -> +/-inf, then missing (see below)
        # safe=False: integers beyond 2**53 lose precision (they become float32 anyway), not the run
        return col.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float32)


def _categorical(col: pa.ChunkedArray) -> np.ndarray:
    """A categorical column's codes: its own vocabulary (:func:`vocabulary`) over all its rows."""
    return category_codes(col, vocabulary(value_counts(col)))


# --- the vocabulary of a categorical column, partition by partition ---------------------------------


@dataclass(frozen=True)
class ValueCounts:
    """One categorical column's distinct values and their row counts (a mergeable partial).

    Attributes
    ----------
    values : pyarrow.Array
        Distinct non-null values, sorted ascending (strings as ``large_string``).
    counts : ndarray of shape (len(values),), int64
        Rows holding each value.
    """

    values: pa.Array
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def _category_values(col) -> pa.ChunkedArray:
    """A categorical column's values, decoded, strings widened (so partitions' types agree)."""
    col = _decoded(pa.chunked_array([col]) if isinstance(col, pa.Array) else col)
    t = col.type
    if pa.types.is_string(t) or pa.types.is_string_view(t):
        col = col.cast(pa.large_string())
    return col


def _sorted_counts(values: pa.Array, counts: np.ndarray) -> ValueCounts:
    order = pc.sort_indices(values).to_numpy()
    return ValueCounts(values.take(pa.array(order)), np.asarray(counts, np.int64)[order])


def value_counts(col) -> ValueCounts:
    """The rows of each distinct value of a categorical column (nulls not counted).

    Examples
    --------
    >>> vc = value_counts(pa.chunked_array([["b", "a", None, "b"]]))
    >>> vc.values.to_pylist(), vc.counts.tolist()
    (['a', 'b'], [1, 2])
    """
    values = _category_values(col)
    if pa.types.is_null(values.type):  # a partition where the column is null throughout
        return ValueCounts(pa.array([], pa.null()), np.zeros(0, np.int64))
    counts = pc.value_counts(values.drop_null())
    return _sorted_counts(counts.field("values"), counts.field("counts").to_numpy())


def merge_value_counts(a: ValueCounts, b: ValueCounts, *, name: str = "",
                       limit: int | None = MAX_VOCABULARY) -> ValueCounts:
    """Two partials' counts added value by value: associative and commutative (integer sums, the
    values sorted), so any partitioning of a column merges to its whole-column counts.

    Raises
    ------
    InputError
        Values of types that do not cast to one another (a column of text in one partition and
        numbers in another), or more than ``limit`` distinct values (feature column ``name``).
    """
    if not len(a) or not len(b):
        merged = b if not len(a) else a
    else:
        bv = b.values
        if bv.type != a.values.type:
            try:
                if _kind(bv.type) != _kind(a.values.type) or pa.types.is_string(bv.type) \
                        or pa.types.is_large_string(bv.type):
                    raise pa.ArrowTypeError("text and other values")  # never "1.5" == 1.5
                bv = bv.cast(a.values.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InputError(f"feature column '{name}' holds {a.values.type} in one partition "
                                 f"and {b.values.type} in another; give every partition the same "
                                 f"column types, or --exclude {name}") from None
        t = pa.table({"v": pa.concat_arrays([a.values, bv]),
                      "c": np.concatenate([a.counts, b.counts])})
        g = t.group_by("v").aggregate([("c", "sum")])
        merged = _sorted_counts(g.column("v").combine_chunks(), g.column("c_sum").to_numpy())
    check_vocabulary_size(merged, name=name, limit=limit)
    return merged


def check_vocabulary_size(vc: ValueCounts, *, name: str = "", limit: int | None = MAX_VOCABULARY):
    """Refuse a categorical column with more than ``limit`` distinct values (None: any)."""
    if limit is not None and len(vc) > limit:
        raise InputError(f"feature column '{name}' has more than {limit} distinct values, too many "
                         "for one vocabulary over the partitions (it looks like an identifier or "
                         f"free text); --exclude {name}, or write it as numbers")


def vocabulary(vc: ValueCounts, max_categories: int = MAX_CATEGORIES) -> pa.Array:
    """The values that get their own code: the ``max_categories`` most frequent, ties by value.

    Code ``i`` is ``vocabulary[i]``; every other value shares code ``max_categories``
    (:func:`category_codes`). A pure function of the counts, so a vocabulary merged from any
    partitioning (:func:`merge_value_counts`) is the whole column's.
    """
    order = np.argsort(-vc.counts, kind="stable")[:max_categories]  # values sorted: ties by value
    return vc.values.take(pa.array(order, type=pa.int64()))


def category_codes(col, keep: pa.Array, max_categories: int = MAX_CATEGORIES) -> np.ndarray:
    """A categorical column as float32 codes: the value's place in ``keep``, ``max_categories``
    for any other value, NaN for a null.

    Examples
    --------
    >>> col = pa.chunked_array([["b", "a", None, "c", "b"]])
    >>> category_codes(col, vocabulary(value_counts(col), 2), 2).tolist()
    [0.0, 1.0, nan, 2.0, 0.0]
    """
    values = _category_values(col)
    out = np.full(len(values), np.nan, dtype=np.float32)
    if pa.types.is_null(values.type) or not len(keep):
        out[np.asarray(values.is_valid().to_numpy(zero_copy_only=False), bool)] = max_categories
        return out
    if values.type != keep.type:
        values = values.cast(keep.type)
    codes = pc.index_in(values, value_set=keep).to_numpy(zero_copy_only=False)
    out = np.asarray(codes, dtype=np.float32)  # nulls -> NaN
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    out[np.isnan(out) & ~nulls] = max_categories  # rare categories share one code
    return out


def list_column_matrix(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """A list-of-numbers column (embeddings, probabilities) as an (n_rows, dim) matrix."""
    arr = col.combine_chunks()
    n = len(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)[valid]
        dims = np.unique(lengths)
        if len(dims) > 1:
            raise InputError(f"feature column '{name}' holds lists of different lengths "
                             f"({', '.join(map(str, dims[:5]))}); vectors must have one length "
                             "(or --exclude the column)")
        dim = int(dims[0]) if len(dims) else 0
    out = np.full((n, dim), np.nan, dtype=np.float32)
    if dim and valid.any():
        flat = pc.list_flatten(arr.filter(pa.array(valid)))
        with np.errstate(over="ignore"):  # beyond float32's range -> +/-inf, then missing
            flat = flat.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            out[valid] = flat.reshape(-1, dim)
    return out


def _kind(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        # categories of any index type; their values must be something a category can be
        return "categorical" if _kind(t.value_type) in ("numeric", "categorical", "temporal") else None
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "categorical"
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t) or pa.types.is_time(t):
        return "temporal"
    if is_list_type(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
                            or pa.types.is_boolean(t.value_type)):
        return "vector"
    if pa.types.is_null(t):
        return "null"
    return None


def categorical_columns(schemas, columns, wheres=None) -> tuple:
    """The feature ``columns`` coded as categories (text or dictionary), decided over every
    partition's schema: the one decision of the partitioned out-of-fold paths (Dask and Spark).

    A column null throughout a partition (Parquet type ``null`` there, as pyarrow writes an
    all-null column) takes its kind from the other partitions, as null promotes to any type; a
    column missing from a partition or of an unsupported type is left to the per-partition check.
    Numbers of different widths across partitions stay numbers (only categorical or not matters
    to the matrix), which ``pyarrow.unify_schemas`` would refuse.

    Parameters
    ----------
    schemas : sequence of pyarrow.Schema
        One per partition (one for a table with a single schema, such as a Spark DataFrame).
    columns : sequence of str
    wheres : sequence of str, optional
        The partitions' names, for the message.

    Returns
    -------
    tuple of str
        The categorical columns, in ``columns`` order.

    Raises
    ------
    InputError
        A column holding text or categories in one partition and other values in another.
    """
    wheres = list(wheres) if wheres is not None else [f"#{i}" for i in range(len(schemas))]
    out = []
    for name in columns:
        seen = {}  # categorical or not -> (the first partition, its type)
        for schema, where in zip(schemas, wheres):
            if name not in schema.names:
                continue
            t = schema.field(name).type
            kind = _kind(t)
            if kind not in (None, "null"):
                seen.setdefault(kind == "categorical", (where, t))
        if len(seen) > 1:
            (w1, t1), (w2, t2) = seen[True], seen[False]
            raise InputError(f"feature column '{name}' has type {t1} (text or categories) in DATA "
                             f"partition '{w1}' but {t2} in '{w2}'; give every partition the "
                             f"same column types, or --exclude {name}")
        if seen.get(True):
            out.append(name)
    return tuple(out)


def _temporal(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A date, time, timestamp or duration column as its integer count (days, units of the day,
    units since the epoch, units)."""
    t = col.type
    if pa.types.is_date(t):
        return col.cast(pa.date32()).cast(pa.int32())
    return col.cast(pa.int32() if pa.types.is_time32(t) else pa.int64())


def _column_block(col: pa.ChunkedArray, kind: str, name: str):
    """The float32 block of one feature column and which of its columns are categorical."""
    if kind == "numeric":
        return _numeric(_decoded(col))[:, None], [False]
    if kind == "temporal":
        return _numeric(_temporal(col))[:, None], [False]
    if kind == "categorical":
        return _categorical(col)[:, None], [True]
    block = list_column_matrix(col, name)
    return block, [False] * block.shape[1]


def table_to_features(table: pa.Table, columns: list) -> Features:
    """Build the float32 feature matrix from ``columns`` of ``table``.

    Raises
    ------
    InputError
        A column of an unsupported type (struct, map, binary, list of strings, ...).

    Warns
    -----
    CleanpipeWarning
        A column that is entirely null (dropped), or +/-inf values (treated as missing).
    """
    parts, names, cats, used, null_cols = [], [], [], [], []
    for name in columns:
        col = table.column(name)
        kind = _kind(col.type)
        if kind is None:
            raise InputError(f"feature column '{name}' has unsupported type {col.type}; "
                             f"drop it with --exclude {name}")
        if kind == "null" or col.null_count == len(col):
            null_cols.append(name)  # warned about below, unless nothing usable is left
            continue
        try:
            block, cat = _column_block(col, kind, name)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # A type that passed _kind but that some kernel cannot convert: the column, not a bug
            # report, is what the user can act on.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"feature column '{name}' of type {col.type} cannot be converted to "
                             f"numbers ({first}); cast it to a number or string, or --exclude "
                             f"{name}") from None
        infinite = np.isinf(block)
        if infinite.any():
            warnings.warn(f"feature column '{name}' holds {int(infinite.sum())} +/-inf value(s) (or "
                          "values beyond float32's range), treated as missing", CleanpipeWarning,
                          stacklevel=2)
            block = np.where(infinite, np.float32(np.nan), block)
        parts.append(block)
        cats.extend(cat)
        names.extend([name] if block.shape[1] == 1 and kind != "vector"
                     else [f"{name}[{i}]" for i in range(block.shape[1])])
        used.append(name)
    if not parts or sum(p.shape[1] for p in parts) == 0:
        shown = f" ({columns_hint(null_cols)} entirely null)" if null_cols else ""
        raise InputError(f"no usable feature columns (all null or empty){shown}; pass --features "
                         "with columns that hold data")
    for name in null_cols:
        warnings.warn(f"feature column '{name}' is entirely null and was ignored; "
                      f"--exclude {name} to silence this", CleanpipeWarning, stacklevel=2)
    X = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return Features(np.ascontiguousarray(X, dtype=np.float32), names, np.asarray(cats, bool), used)


# --- multi-label: a list-of-tags column, or several 0/1 columns ------------------------------------


def is_multilabel_label(schema: pa.Schema, label) -> bool:
    """Whether ``label`` names a multi-label target in ``schema``: a list column, or several columns
    (a list, or ``"a,b,c"`` that is not itself a column)."""
    if not isinstance(label, str):
        return len(list(label)) > 1
    if label in schema.names:
        return is_list_type(schema.field(label).type)
    return "," in label


def is_list_type(t: pa.DataType) -> bool:
    """A list, large list or fixed-size list type."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def encode_label_lists(col: pa.ChunkedArray, name: str):
    """Map a list-of-tags label column to a 0/1 matrix.

    Each row holds a list of tags (class names or ids); an empty list means no tag, a null list an
    unlabelled row. Repeated tags in a row count once.

    Returns
    -------
    Y : ndarray of shape (n, n_classes), uint8
        ``Y[n, k] = 1`` when row ``n`` lists ``classes[k]``; all 0 on unlabelled rows.
    labelled : ndarray of shape (n,), bool
        False where the list is null.
    classes : pyarrow.Array
        The distinct tags, sorted, in the list's (decoded) value type.

    Raises
    ------
    InputError
        Not a list column, a value type that cannot be a tag (struct, list, binary, ...), a null
        or NaN tag inside a list.
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not is_list_type(arr.type):
        raise InputError(f"label column '{name}' has type {arr.type}, not a list of tags; pass a list "
                         "column, or several 0/1 columns as --label a,b,c")
    if not _is_label_type(arr.type.value_type):
        raise InputError(f"label column '{name}' is a list of {arr.type.value_type}; tags must be "
                         "integers, strings, bools or categories (one list of tags per row)")
    n = len(arr)
    labelled = arr.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    # list_flatten skips the values under null lists; list_parent_indices would not, so the parents
    # come from the lengths.
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(n, dtype=np.int64), lengths)
    values = _decoded(pc.list_flatten(arr))
    if values.null_count:
        row = int(parents[values.is_null().to_numpy(zero_copy_only=False)][0])
        raise InputError(f"label column '{name}' holds a null tag in the list of row {row}; remove "
                         "it (an empty list means no tags, a null list an unlabelled row)")
    if pa.types.is_floating(values.type) and not pc.all(pc.is_finite(values)).as_py():
        row = int(parents[~pc.is_finite(values).to_numpy(zero_copy_only=False)][0])
        raise InputError(f"label column '{name}' holds a NaN or inf tag in row {row}; tags must be "
                         "finite class ids")
    classes = pc.unique(values)
    classes = classes.take(pc.array_sort_indices(classes))
    codes = pc.index_in(values, value_set=classes).to_numpy(zero_copy_only=False).astype(np.int64)
    Y = np.zeros((n, len(classes)), dtype=np.uint8)
    Y[parents, codes] = 1
    return Y, labelled, classes


def encode_label_columns(table: pa.Table, names: list):
    """Map several 0/1 label columns (one per class) to a 0/1 matrix.

    Columns may be bool, integer or float holding only 0 and 1; a row with a null in any of them
    is unlabelled.

    Returns
    -------
    Y : ndarray of shape (n, len(names)), uint8
        All 0 on unlabelled rows.
    labelled : ndarray of shape (n,), bool
    classes : pyarrow.Array
        ``names`` as strings, in the order given.

    Raises
    ------
    InputError
        A column of another type, or a value other than 0/1 (NaN included).
    """
    n = table.num_rows
    Y = np.zeros((n, len(names)), dtype=np.uint8)
    labelled = np.ones(n, dtype=bool)
    for k, name in enumerate(names):
        col = _decoded(table.column(name))
        t = col.type
        if not (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise InputError(f"label column '{name}' has type {t}; with several --label columns each "
                             "must hold 0/1 or true/false (or pass one list-of-tags column)")
        valid = col.is_valid().to_numpy(zero_copy_only=False).astype(bool)
        values = col.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        bad = valid & (values != 0) & (values != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"label column '{name}' holds {values[row]:g} in row {row}; 0/1 label "
                             "columns must hold only 0 and 1 (or true/false; null = unlabelled)")
        labelled &= valid
        Y[:, k] = np.where(valid, values, 0).astype(np.uint8)
    Y[~labelled] = 0
    return Y, labelled, pa.array([str(c) for c in names], type=pa.string())


def decode_label_lists(offsets: np.ndarray, codes: np.ndarray, classes: pa.Array,
                       value_type: pa.DataType, null_mask: np.ndarray | None = None) -> pa.Array:
    """Tag lists back to a list column: row ``n`` holds ``classes[codes[offsets[n]:offsets[n + 1]]]``.

    ``null_mask`` (True = null list) marks unlabelled rows. The values are cast to ``value_type``.

    Examples
    --------
    >>> Y = np.array([[1, 0, 1], [0, 0, 0]])
    >>> off = np.concatenate([[0], np.cumsum(Y.sum(axis=1))])
    >>> decode_label_lists(off, np.nonzero(Y)[1], pa.array(["a", "b", "c"]), pa.string()).to_pylist()
    [['a', 'c'], []]
    """
    values = classes.take(pa.array(np.asarray(codes, dtype=np.int64))).cast(value_type)
    mask = None if null_mask is None else pa.array(np.asarray(null_mask, dtype=bool))
    return pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), values,
                                    type=pa.list_(value_type), mask=mask)
