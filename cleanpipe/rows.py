"""Row-sliceable views of probability matrices that need not fit in memory.

The detectors walk ``pred_probs`` in row blocks through ``x[a:b]`` alone (see
:func:`cleanpipe.detect.iter_blocks`). These views give that interface to a Parquet file read one
row group at a time and to a subset of the rows of any other view, so ``flag --pred-probs`` works
on matrices larger than RAM.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError


class ParquetMatrix:
    """An (N, K) float matrix stored as K numeric columns (or one list column) of a Parquet file.

    Slicing ``m[a:b]`` reads only the row groups that cover rows ``a..b`` (the last one is cached,
    so walking the rows in order reads every row group once).
    """

    def __init__(self, path, columns: list | None = None):
        self._file = pq.ParquetFile(path)
        schema = self._file.schema_arrow
        self.columns = list(columns) if columns is not None else schema.names
        types = [schema.field(c).type for c in self.columns]
        if len(types) == 1 and (pa.types.is_list(types[0]) or pa.types.is_large_list(types[0])
                                or pa.types.is_fixed_size_list(types[0])):
            self._list = True
            first = self._file.read_row_group(0, columns=self.columns).column(0) if self._file.num_row_groups else None
            width = len(first[0].as_py()) if first is not None and len(first) else 0
            value = types[0].value_type
        else:
            self._list = False
            width, value = len(types), None
            for name, t in zip(self.columns, types):
                if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                    raise InputError(f"--pred-probs '{path}' column '{name}' has type {t}; every "
                                     "column must hold a class probability")
        vals = [value] if self._list else types
        self.dtype = np.dtype(np.float32) if all(t == pa.float32() for t in vals) else np.dtype(np.float64)
        meta = self._file.metadata
        self.shape = (meta.num_rows, width)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cache = (-1, None)
        self.ndim = 2

    def _group(self, i: int) -> np.ndarray:
        if self._cache[0] != i:
            t = self._file.read_row_group(i, columns=self.columns)
            if self._list:
                col = t.column(0).combine_chunks()
                arr = pa.compute.list_flatten(col).to_numpy(zero_copy_only=False)
                arr = arr.astype(self.dtype, copy=False).reshape(len(col), self.shape[1])
            else:
                arr = np.column_stack([c.to_numpy(zero_copy_only=False).astype(self.dtype, copy=False)
                                       for c in t.columns])
            self._cache = (i, arr)
        return self._cache[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ParquetMatrix supports contiguous row slices only")
        a, b, _ = key.indices(self.shape[0])
        if b <= a:
            return np.empty((0, self.shape[1]), self.dtype)
        first = int(np.searchsorted(self._starts, a, side="right") - 1)
        last = int(np.searchsorted(self._starts, b, side="left") - 1)
        parts = []
        for g in range(first, last + 1):
            lo, hi = self._starts[g], self._starts[g + 1]
            parts.append(self._group(g)[max(a, lo) - lo:min(b, hi) - lo])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class TakeRows:
    """The rows ``rows`` (sorted) of a row-sliceable matrix, itself row-sliceable."""

    def __init__(self, source, rows: np.ndarray):
        self._source = source
        self._rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self._rows), source.shape[1])
        self.dtype = np.dtype(getattr(source, "dtype", np.float64))
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        a, b, _ = key.indices(self.shape[0])
        if b <= a:
            return np.empty((0, self.shape[1]), self.dtype)
        rows = self._rows[a:b]
        block = np.asarray(self._source[int(rows[0]):int(rows[-1]) + 1])
        return block[rows - rows[0]]
