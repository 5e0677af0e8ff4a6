"""What Python users hold, as what the library computes on: DataFrames as Arrow tables, label
columns as class codes.

pandas DataFrames (their index left out: it is row bookkeeping, not a feature), polars
DataFrames and anything else that speaks the Arrow C stream interface become one
:class:`pyarrow.Table`, so the API encodes mixed column types exactly as the CLI does.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import InputError, first_line
from .features import encode_labels


def _is_pandas(obj, kind: str) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas" and type(obj).__name__ == kind


def is_table(data) -> bool:
    """Whether ``data`` is a table :func:`as_table` takes (not a plain array)."""
    return (isinstance(data, (pa.Table, pa.RecordBatch)) or _is_pandas(data, "DataFrame")
            or (hasattr(data, "__arrow_c_stream__") and hasattr(data, "columns")))


def as_table(data, *, what: str = "data") -> pa.Table:
    """``data`` as a :class:`pyarrow.Table`.

    Parameters
    ----------
    data : pandas.DataFrame, polars.DataFrame, pyarrow.Table or RecordBatch, or any object with
        ``__arrow_c_stream__``
        A pandas index is dropped; its columns must have unique names.

    Raises
    ------
    InputError
        Another kind of object, duplicate column names, or a column Arrow cannot type (an object
        column mixing strings and numbers), named.
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if _is_pandas(data, "DataFrame"):
        names = [str(c) for c in data.columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"{what} has duplicate column name(s) {', '.join(map(repr, dup))}; "
                             "rename them so every column name is unique")
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"{what}: {first_line(exc)}; give the column one type (e.g. "
                             "df[col].astype(str) or pd.to_numeric)") from None
    if hasattr(data, "__arrow_c_stream__"):
        try:
            return _plain_strings(pa.table(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"{what} could not be read as a table ({first_line(exc)})") from None
    raise InputError(f"{what} is a {type(data).__name__}; pass a pandas or polars DataFrame or a "
                     "pyarrow Table")


def _plain_strings(table: pa.Table) -> pa.Table:
    # polars hands over string_view columns, which few Arrow kernels take yet; the same text as
    # plain strings.
    for i, f in enumerate(table.schema):
        if pa.types.is_string_view(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.large_string()))
        elif pa.types.is_dictionary(f.type) and pa.types.is_string_view(f.type.value_type):
            chunks = [pa.DictionaryArray.from_arrays(c.indices, c.dictionary.cast(pa.large_string()))
                      for c in table.column(i).chunks]
            table = table.set_column(i, f.name, pa.chunked_array(
                chunks, type=pa.dictionary(f.type.index_type, pa.large_string())))
    return table


def label_codes(labels, *, what: str = "labels") -> tuple[np.ndarray, pa.Array | None]:
    """Class codes of a label column, and the classes they index (None: given as codes).

    Numbers are taken as class indices already (the classic array API). Strings and
    categories are encoded as the CLI encodes a label column: classes are
    the distinct values sorted, which is the column order of a scikit-learn classifier's
    ``predict_proba`` (``classes_``); a pandas categorical uses its categories, sorted, so a
    class no row carries still has its column.

    Raises
    ------
    InputError
        A label column cleanpipe cannot use (see :func:`cleanpipe.features.encode_labels`).
    """
    if _is_pandas(labels, "Series") and str(labels.dtype) == "category":
        cats = np.sort(np.asarray(labels.cat.categories))
        col = pa.chunked_array([pa.array(np.asarray(labels.astype(object)), from_pandas=True)])
        classes = pa.array(cats)
        codes = np.asarray(pa.compute.fill_null(pa.compute.index_in(col.cast(classes.type),
                                                                      value_set=classes), -1))
        return codes.astype(np.int64), classes
    if _is_pandas(labels, "Series"):
        labels = labels.to_numpy()
    elif hasattr(labels, "__arrow_c_stream__") or hasattr(labels, "__arrow_c_array__"):
        labels = _plain_strings(pa.table({"y": labels})).column(0) if not isinstance(
            labels, (pa.Array, pa.ChunkedArray)) else labels
    if isinstance(labels, (pa.Array, pa.ChunkedArray)):
        col = labels if isinstance(labels, pa.ChunkedArray) else pa.chunked_array([labels])
        if pa.types.is_integer(col.type):
            return col.to_numpy(), None
        return encode_labels(col, what)
    try:
        arr = np.asarray(labels)
    except ValueError:  # ragged: the array API's own checks say so
        return labels, None
    if arr.dtype.kind in "iu":
        return arr, None
    if arr.dtype.kind in "OUS" and arr.ndim == 1:
        try:
            col = pa.chunked_array([pa.array(arr, from_pandas=True)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"{what} mix types ({first_line(exc)}); give every label one type") from None
        return encode_labels(col, what)
    return arr, None
