"""Tables -> the matrices the data checks work on: flag's encoding, then standardised.

The checks measure distances, so every column is put on one scale (mean 0, standard deviation 1,
missing values at the mean, clipped at a few standard deviations) before the neighbour index sees
it; exact duplicates are found on the
matrix before that step, where a null equals a null. A second table (leakage) is encoded together
with the first, so that a category has one code in both, and standardised with the first table's
means and deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..features import columns_hint, table_to_features


@dataclass(frozen=True)
class Scaler:
    """Column means and deviations of one matrix (NaN ignored); a constant column keeps scale 1."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, block: int = 65536) -> "Scaler":
        n, d = X.shape
        count = np.zeros(d)
        total = np.zeros(d)
        for s in range(0, n, block):
            b = X[s:s + block]
            ok = ~np.isnan(b)
            count += ok.sum(axis=0)
            total += np.where(ok, b, 0).sum(axis=0, dtype=np.float64)
        mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
        sq = np.zeros(d)
        for s in range(0, n, block):
            b = X[s:s + block] - mean
            sq += np.where(np.isnan(b), 0, b * b).sum(axis=0, dtype=np.float64)
        std = np.sqrt(np.divide(sq, count, out=np.zeros(d), where=count > 0))
        return cls(mean, np.where(std > 0, std, 1.0))

    def transform(self, X: np.ndarray, *, clip: float | None = None,
                  block: int = 65536) -> np.ndarray:
        """``(X - mean) / scale`` as float32, NaN -> 0 (the mean), clipped to ``[-clip, clip]``
        when ``clip`` is given, in row blocks."""
        out = np.empty(X.shape, dtype=np.float32)
        mean, scale = self.mean.astype(np.float32), self.scale.astype(np.float32)
        for s in range(0, X.shape[0], block):
            b = np.nan_to_num((X[s:s + block] - mean) / scale, nan=0.0, posinf=0.0, neginf=0.0)
            out[s:s + block] = b if clip is None else np.clip(b, -clip, clip)
        return out


def feature_matrices(table: pa.Table, columns, against: pa.Table | None = None):
    """Encode ``columns`` of ``table`` (and of ``against``, with the same codes) as ``flag`` does.

    Parameters
    ----------
    table : pyarrow.Table
    columns : list of str
        Feature columns (see :func:`cleanpipe.features.select_feature_columns`).
    against : pyarrow.Table, optional
        A second table holding the same columns.

    Returns
    -------
    X : ndarray of shape (len(table), n_features), float32
        NaN where a value is missing.
    X_against : ndarray of shape (len(against), n_features), float32, or None

    Raises
    ------
    InputError
        ``against`` lacks a feature column, or holds it with another type.
    """
    columns = list(columns)
    if against is None:
        return table_to_features(table.select(columns), columns).X, None
    missing = [c for c in columns if c not in against.schema.names]
    if missing:
        raise InputError(f"the second table lacks feature column(s) {columns_hint(missing)} "
                         f"(its columns: {columns_hint(against.schema.names)}); both tables need "
                         "the same feature columns")
    a = table.select(columns)
    b = against.select(columns)
    for name in columns:
        ta, tb = a.schema.field(name).type, b.schema.field(name).type
        if ta != tb:
            try:
                b = b.set_column(b.schema.get_field_index(name), name, b.column(name).cast(ta))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InputError(f"feature column '{name}' is {ta} in the first table and {tb} in "
                                 "the second; cast one so both have the same type") from None
    both = pa.concat_tables([a, b.cast(a.schema)])
    X = table_to_features(both, columns).X
    return X[:table.num_rows], X[table.num_rows:]
