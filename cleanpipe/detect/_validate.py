"""Input checks shared by the detectors: run once at the public boundary, then trust the arrays."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError

#: Rows of ``pred_probs`` must sum to 1 within this tolerance (float32 probabilities included).
SUM_TOLERANCE = 1e-3

#: Bytes of ``pred_probs`` per block when walking it. Small enough that a block's temporaries are
#: reused from the heap rather than mapped fresh (page faults cost more than the passes over a
#: block), large enough that per-block overhead stays negligible.
BLOCK_BYTES = 8 << 20
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 1024, 65536


#: Rows per chunk of the per-row vector passes (losses, their normalisation and posterior): the
#: float64 temporaries stay a few MB whatever the number of rows (a whole-vector pass over 1e7
#: rows held ~400 MiB at once).
CHUNK_ROWS = 1 << 20


def row_chunks(n: int):
    """``(start, stop)`` over ``range(n)`` in :data:`CHUNK_ROWS` pieces."""
    return ((s, min(s + CHUNK_ROWS, n)) for s in range(0, n, CHUNK_ROWS))


def block_rows_for(pred_probs, block_rows: int | None = None) -> int:
    """``block_rows`` if given, else the rows that hold about :data:`BLOCK_BYTES` of ``pred_probs``."""
    if block_rows is not None:
        return int(block_rows)
    k = pred_probs.shape[1] if len(pred_probs.shape) > 1 else 1
    itemsize = np.dtype(getattr(pred_probs, "dtype", np.float64)).itemsize
    return int(np.clip(BLOCK_BYTES // max(k * itemsize, 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))


def iter_blocks(pred_probs, block_rows: int | None = None):
    """Yield ``(start, stop, block)`` over row ranges of an (N, K) array-like.

    ``pred_probs`` may be an ndarray, a ``np.memmap`` or any object with ``shape`` and row slicing
    (``x[a:b]`` returning an ndarray), so the detectors run unchanged on data larger than memory.
    Blocks keep their dtype: float32 stays float32.
    """
    n = pred_probs.shape[0]
    block_rows = block_rows_for(pred_probs, block_rows)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        # C order, so the passes can address cells through flat positions (a copy only for a
        # strided or Fortran-ordered source, one block at a time).
        block = np.ascontiguousarray(pred_probs[start:stop])
        if block.dtype not in (np.float32, np.float64):
            block = block.astype(np.float64)
        yield start, stop, block


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def map_blocks(fn, pred_probs, block_rows: int | None = None, *, alongside=None):
    """``[fn(start, stop, block) for each block]``, in block order.

    Blocks of an in-memory (or memory-mapped) ndarray run on a few threads: numpy releases the GIL
    inside its loops, so the passes over a large matrix use every core. Other row-sliceable
    sources are read in order on one thread. ``fn`` must not share scratch memory between calls.

    ``alongside``, a callable taking no argument, runs in the same pool while the blocks are
    walked (work that does not need this pass's results, mostly single-threaded, fills a core
    instead of waiting for the pass); then ``(results, alongside())`` is returned.
    """
    n = pred_probs.shape[0]
    block_rows = block_rows_for(pred_probs, block_rows)
    if not isinstance(pred_probs, np.ndarray) or n <= block_rows or _threads() == 1:
        side = alongside() if alongside is not None else None
        results = [fn(*b) for b in iter_blocks(pred_probs, block_rows)]
        return results if alongside is None else (results, side)
    with ThreadPoolExecutor(max_workers=_threads()) as pool:
        side = pool.submit(alongside) if alongside is not None else None
        results = list(pool.map(lambda b: fn(*b), iter_blocks(pred_probs, block_rows)))
        return results if side is None else (results, side.result())


def check_labels(labels, n_classes: int | None = None, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an int64 vector, checking shape and range ``[0, n_classes)``."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}; "
                         "pass one integer label per row")
    if arr.size == 0:
        raise InputError(f"{name} is empty; there are no rows to check")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{name} holds non-integer values; pass class indices 0..K-1")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} has dtype {arr.dtype}; pass integer class indices 0..K-1 "
                         "(map names to indices first)")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (n_classes is not None and hi >= n_classes):
        bound = f"[0, {n_classes})" if n_classes is not None else ">= 0"
        raise InputError(f"{name} holds class index {lo if lo < 0 else hi}, outside {bound}; "
                         "labels must index the columns of pred_probs")
    return arr


def check_pred_probs(pred_probs, n_rows: int, *, block_rows: int | None = None,
                     name: str = "pred_probs", require_sum_one: bool = True,
                     range_hint: str = "apply softmax to logits first"):
    """Check an (N, K) probability matrix block by block; return it unchanged.

    ``range_hint`` ends the message about a value outside [0, 1] (multi-label probabilities come
    from sigmoids, not a softmax).

    Raises
    ------
    InputError
        Wrong shape, a dtype that is not float, NaN/inf, values outside [0, 1], or (when
        ``require_sum_one``) a row whose sum is not 1 within :data:`SUM_TOLERANCE`.
    """
    shape = getattr(pred_probs, "shape", None)
    if shape is None:
        pred_probs = np.asarray(pred_probs)
        shape = pred_probs.shape
    if len(shape) != 2:
        raise InputError(f"{name} must be 2-D (rows x classes), got shape {tuple(shape)}")
    if shape[0] != n_rows:
        raise InputError(f"{name} has {shape[0]} rows but labels has {n_rows}; "
                         "pass out-of-fold probabilities for exactly the labelled rows, in order")
    if shape[1] < 2:
        raise InputError(f"{name} has {shape[1]} column(s); at least 2 classes are needed")
    dtype = np.dtype(getattr(pred_probs, "dtype", np.float64))
    if dtype.kind not in "fiu" or dtype == np.float16:
        raise InputError(f"{name} has dtype {dtype}; pass float32 or float64 probabilities")
    def check(start, _, block):
        # One sum and one min per block: a NaN or inf makes its row sum non-finite, and with every
        # value >= 0 and rows summing to 1, no value can exceed 1 either.
        sums = np.einsum("ij->i", block)  # row sums, ~2.5x faster than block.sum(axis=1)
        bad = ~np.isfinite(sums)
        if bad.any():
            return f"{name} row {start + int(np.argmax(bad))} holds NaN or inf; pass finite probabilities"
        # Whole-block min/max first (one contiguous reduction); rows only to name the bad one.
        bad_range = block.min() < 0 or (not require_sum_one and block.max() > 1 + SUM_TOLERANCE)
        if bad_range:
            low = block.min(axis=1)
            out = (low < 0) if require_sum_one else (low < 0) | (block.max(axis=1) > 1 + SUM_TOLERANCE)
            return (f"{name} row {start + int(np.argmax(out))} holds a value outside [0, 1]; "
                    f"pass probabilities ({range_hint})")
        if require_sum_one:
            off = np.abs(sums - 1.0) > SUM_TOLERANCE
            if off.any():
                r = int(np.argmax(off))
                return (f"{name} row {start + r} sums to {sums[r]:.4g}, not 1; pass normalised "
                        "probabilities (each row must sum to 1)")
        return None

    problems = [p for p in map_blocks(check, pred_probs, block_rows) if p]
    if problems:
        raise InputError(problems[0])
    return pred_probs
