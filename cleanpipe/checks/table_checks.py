"""Cheap table-level checks: class balance, null-heavy rows and columns, constant and
identifier-like columns. Each returns plain numbers and names for the summary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..features import id_like_columns


def class_balance(labels: np.ndarray, n_classes: int, fraction: float) -> dict:
    """Counts per class and the classes under ``fraction`` x the mean class size.

    Returns
    -------
    dict
        ``counts`` (list, one per class), ``ratio`` (smallest / largest count, 1 when balanced),
        ``underrepresented`` (class codes).
    """
    counts = np.bincount(labels[labels >= 0], minlength=n_classes)
    mean = counts.mean() if n_classes else 0.0
    small = np.flatnonzero(counts < fraction * mean)
    ratio = float(counts.min() / counts.max()) if n_classes and counts.max() > 0 else 1.0
    return {"counts": counts.tolist(), "ratio": ratio, "underrepresented": small.tolist()}


def null_fractions(table: pa.Table, columns) -> tuple[np.ndarray, dict]:
    """Share of null cells in each row over ``columns``, and each column's share of nulls.

    A NaN in a float column counts as null (it is one to every model here).
    """
    n = table.num_rows
    per_row = np.zeros(n, dtype=np.float64)
    per_col = {}
    for name in columns:
        col = table.column(name)
        miss = col.is_null(nan_is_null=True) if _floating(col.type) else col.is_null()
        miss = miss.to_numpy(zero_copy_only=False).astype(bool)
        per_row += miss
        per_col[name] = float(miss.mean()) if n else 0.0
    return per_row / max(len(columns), 1), per_col


def _floating(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or (pa.types.is_dictionary(t) and pa.types.is_floating(t.value_type))


def constant_columns(table: pa.Table, columns) -> list:
    """Columns holding at most one distinct non-null value (nothing a model can learn from)."""
    out = []
    for name in columns:
        col = table.column(name)
        try:
            distinct = pc.count_distinct(col.drop_null()).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue  # a list column: judged by its elements elsewhere
        if distinct <= 1:
            out.append(name)
    return out


def table_findings(table: pa.Table, columns, null_heavy: float) -> tuple[np.ndarray, dict]:
    """Per-row null share and the table-level findings over the feature ``columns``."""
    per_row, per_col = null_fractions(table, columns)
    findings = {
        "null_heavy_columns": [c for c, f in per_col.items() if f > null_heavy],
        "null_fraction_by_column": per_col,
        "constant_columns": constant_columns(table, columns),
        "id_like_columns": id_like_columns(table, columns),
    }
    return per_row, findings
