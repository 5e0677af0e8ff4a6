"""Leakage between two tables: rows of one that are exact or near duplicates of rows of the other
(a test row that is a copy of a training row makes the test score a memory test)."""

from __future__ import annotations

import numpy as np


def cross_matches(hashes_a: np.ndarray, X_a: np.ndarray, hashes_b: np.ndarray,
                  X_b: np.ndarray) -> np.ndarray:
    """Whether each row of ``a`` equals some row of ``b`` (values, a null equal to a null).

    Returns
    -------
    ndarray of shape (len(a),), bool
    """
    from .duplicates import _canonical_bits

    cand = np.flatnonzero(np.isin(hashes_a, hashes_b))
    out = np.zeros(len(hashes_a), dtype=bool)
    if cand.size == 0:
        return out
    # Confirm on the values: a candidate equals a row of b with the same hash.
    other = np.flatnonzero(np.isin(hashes_b, hashes_a[cand]))
    bits_a, bits_b = _canonical_bits(X_a[cand]), _canonical_bits(X_b[other])
    both = np.concatenate([bits_b, bits_a])
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    out[cand] = np.isin(inv[len(other):], inv[:len(other)])
    return out


def leak_columns(dist: np.ndarray, idx: np.ndarray, exact: np.ndarray, radius: float) -> dict:
    """Columns for the rows of one table given their nearest row in the other.

    Parameters
    ----------
    dist, idx : ndarray of shape (n, 1)
        Nearest row of the other table and its distance.
    exact : ndarray of shape (n,), bool
        :func:`cross_matches`.
    radius : float
        The near-duplicate radius.
    """
    d = dist[:, 0].astype(np.float64)
    near = exact | (d <= radius)
    return {
        "leak_exact": exact,
        "leak_near": near,
        "leak_row": np.where(near, idx[:, 0], -1).astype(np.int64),
        "leak_distance": d,
    }
