"""Exact and near duplicate rows, and duplicates whose labels disagree.

Exact duplicates are rows whose feature values are equal (a null equals a null), found by hashing
rows and grouping equal hashes exactly. Near duplicates are the connected components of the graph
linking each row to its neighbours within a radius; exact duplicates are near duplicates too, so a
near-duplicate set holds every exact group it touches.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

_MULT = np.uint64(0x9E3779B97F4A7C15)


def _canonical_bits(X: np.ndarray) -> np.ndarray:
    """Row bits that equal exactly when the values do: one NaN, and -0.0 as 0.0."""
    X = np.where(np.isnan(X), np.float32(np.nan), X.astype(np.float32, copy=False)) + np.float32(0.0)
    return np.ascontiguousarray(X).view(np.uint32)


def row_hashes(X: np.ndarray, block: int = 65536) -> np.ndarray:
    """A 64-bit hash of every row's values (equal rows, equal hashes), computed in row blocks."""
    n, d = X.shape
    out = np.empty(n, dtype=np.uint64)
    salt = (np.arange(1, d + 1, dtype=np.uint64) * _MULT)
    with np.errstate(over="ignore"):
        for s in range(0, n, block):
            bits = _canonical_bits(X[s:s + block]).astype(np.uint64)
            h = np.zeros(len(bits), dtype=np.uint64)
            for j in range(d):  # over columns, not rows
                h = (h ^ (bits[:, j] + salt[j])) * _MULT
                h ^= h >> np.uint64(29)
            out[s:s + block] = h
    return out


def _first_order_ids(group: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Renumber groups 0, 1, ... in the order of their first row; -1 where not ``member``."""
    out = np.full(len(group), -1, dtype=np.int64)
    rows = np.flatnonzero(member)
    if rows.size == 0:
        return out
    g = group[rows]
    _, first = np.unique(g, return_index=True)
    order = np.argsort(rows[first], kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    _, inv = np.unique(g, return_inverse=True)
    out[rows] = rank[inv]
    return out


def exact_duplicate_sets(X: np.ndarray, hashes: np.ndarray | None = None) -> np.ndarray:
    """Groups of rows with equal values.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Values as encoded (NaN for missing; two NaN are equal here).
    hashes : ndarray of shape (n_samples,), uint64, optional
        :func:`row_hashes` of ``X``, if already computed.

    Returns
    -------
    ndarray of shape (n_samples,), int64
        The group of each row, numbered 0, 1, ... in the order of each group's first row; -1 for a
        row equal to no other.

    Examples
    --------
    >>> exact_duplicate_sets(np.array([[1., 2.], [0., 0.], [1., 2.]], dtype=np.float32)).tolist()
    [0, -1, 0]
    """
    n = X.shape[0]
    hashes = row_hashes(X) if hashes is None else hashes
    _, inv, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    cand = np.flatnonzero(counts[inv] > 1)
    out = np.full(n, -1, dtype=np.int64)
    if cand.size == 0:
        return out
    # Equal hashes are grouped again on the values themselves: a collision cannot merge rows.
    bits = _canonical_bits(X[cand])
    _, vinv, vcounts = np.unique(bits, axis=0, return_inverse=True, return_counts=True)
    vinv = vinv.reshape(-1)
    group = np.full(n, -1, dtype=np.int64)
    group[cand] = vinv
    member = np.zeros(n, dtype=bool)
    member[cand] = vcounts[vinv] > 1
    return _first_order_ids(group, member)


def default_radius(dist: np.ndarray, fraction: float) -> float:
    """``fraction`` x the median distance from a row to its nearest other, non-identical row.

    ``dist`` is the (n, k) ascending neighbour distances; rows whose every neighbour is an exact
    copy are left out of the median (a table of copies would otherwise get radius 0).
    """
    positive = np.where(dist > 0, dist, np.inf).min(axis=1)
    positive = positive[np.isfinite(positive)]
    if positive.size == 0:
        return 0.0
    return float(fraction * np.median(positive))


def near_duplicate_sets(dist: np.ndarray, idx: np.ndarray, radius: float,
                        exact: np.ndarray | None = None) -> np.ndarray:
    """Sets of rows linked by neighbour distances <= ``radius`` (connected components).

    Parameters
    ----------
    dist, idx : ndarray of shape (n_samples, k)
        Neighbours of every row (:meth:`cleanpipe.neighbors.NeighborIndex.kneighbors`).
    radius : float
    exact : ndarray of shape (n_samples,), int64, optional
        :func:`exact_duplicate_sets`; its groups are joined whole, even those larger than ``k``.

    Returns
    -------
    ndarray of shape (n_samples,), int64
        Set of each row, numbered in the order of each set's first row; -1 when alone.
    """
    n = dist.shape[0]
    near = (dist <= radius) & (idx >= 0)
    rows, cols = np.nonzero(near)
    src, dst = [rows], [idx[rows, cols]]
    if exact is not None and (exact >= 0).any():
        members = np.flatnonzero(exact >= 0)
        _, first = np.unique(exact[members], return_index=True)
        rep = members[first][exact[members]]  # every member to its group's first row
        src.append(members)
        dst.append(rep)
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, comp = connected_components(graph, directed=True, connection="weak")
    counts = np.bincount(comp)
    return _first_order_ids(comp, counts[comp] > 1)


def label_conflicts(sets: np.ndarray, labels: np.ndarray):
    """Duplicates whose labels disagree.

    Parameters
    ----------
    sets : ndarray of shape (n_samples,), int64
        Duplicate set of each row, -1 for none.
    labels : ndarray of shape (n_samples,), int64
        Class codes, -1 for unlabelled.

    Returns
    -------
    conflict : ndarray of shape (n_samples,), bool
        The row is labelled and its set holds another labelled row with another label.
    agreement : ndarray of shape (n_samples,), float64
        Share of the other labelled rows of its set with the same label; NaN where the row is
        unlabelled or has no labelled duplicate. Low values are evidence against the row's label:
        the label detector can take ``1 - agreement`` beside its own score.
    """
    n = len(sets)
    conflict = np.zeros(n, dtype=bool)
    agreement = np.full(n, np.nan)
    rows = np.flatnonzero((sets >= 0) & (labels >= 0))
    if rows.size == 0:
        return conflict, agreement
    s, y = sets[rows], labels[rows]
    k = int(labels.max()) + 1
    pair = s * k + y
    _, pinv, pcount = np.unique(pair, return_inverse=True, return_counts=True)
    _, sinv, scount = np.unique(s, return_inverse=True, return_counts=True)
    same = pcount[pinv] - 1
    others = scount[sinv] - 1
    has = others > 0
    agreement[rows[has]] = same[has] / others[has]
    conflict[rows] = same < others
    return conflict, agreement
