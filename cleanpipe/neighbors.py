"""A neighbour index over a standardised float32 feature matrix, shared by every data check.

Small tables get exact neighbours (blocked brute force in numpy: a block of rows against every
row, never an n x n matrix). Large ones get approximate neighbours from faiss (an inverted-file
index, chosen by ``benchmarks/neighbor_index.py``; see ``benchmarks/RESULTS.md``, "Beyond wrong
labels") when it is installed (``pip install cleanpipe[issues]``), else exact ones with a one-line
note. Either way the distances handed back are recomputed from the rows themselves (``||x - y||``,
not the expanded ``|x|^2 - 2x.y + |y|^2``, whose cancellation turns two equal rows into a small
non-zero distance), so a near-duplicate radius means the same thing for both methods.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .settings import (NEIGHBOR_APPROX_MIN_ROWS, NEIGHBOR_BLOCK_BYTES, NEIGHBOR_METHODS,
                       NEIGHBOR_NLIST_PER_ROOT, NEIGHBOR_NPROBE)

log = logging.getLogger(__name__)


def approx_available() -> bool:
    """Whether the approximate backend (faiss) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class NeighborIndex:
    """Nearest neighbours of the rows of one matrix (Euclidean distance).

    Build with :meth:`build`; the index keeps a reference to ``X`` (float32, C-ordered), so the
    caller must not change it afterwards.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float32
    method : {"exact", "approx"}
        What was built (``"auto"`` resolved).
    note : str
        Empty, or one line saying why a large table got exact neighbours.
    """

    X: np.ndarray
    method: str
    note: str = ""
    seed: int = 0
    _faiss: object = field(default=None, repr=False)
    _sq: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, X, *, method: str = "auto", seed: int = 0) -> "NeighborIndex":
        """Index the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite numbers (standardised, NaN already imputed: see
            :func:`cleanpipe.checks.feature_matrix`).
        method : {"auto", "exact", "approx"}, default="auto"
            ``auto`` is exact below ``NEIGHBOR_APPROX_MIN_ROWS`` rows, approximate above when faiss
            is installed. ``approx`` without faiss raises.
        seed : int, default=0
            Seed of the approximate index's k-means (its clustering, hence its answers).

        Raises
        ------
        InputError
            ``X`` not 2-D, empty, holding NaN/inf, or an unknown ``method``; ``approx`` without
            faiss.
        """
        if method not in NEIGHBOR_METHODS:
            raise InputError(f"neighbour method {method!r} is not one of: {', '.join(NEIGHBOR_METHODS)}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InputError(f"the feature matrix must be 2-D with rows and columns; got shape {X.shape}")
        if not np.isfinite(X).all():
            raise InputError("the feature matrix holds NaN or inf; impute missing values first "
                             "(cleanpipe.checks.feature_matrix does)")
        n = X.shape[0]
        note = ""
        if method == "auto":
            large = n >= NEIGHBOR_APPROX_MIN_ROWS
            if large and not approx_available():
                note = (f"{n:,} rows: exact neighbours (slow); pip install 'cleanpipe[issues]' "
                        "(faiss-cpu) for an approximate index")
                log.warning(note)
            method = "approx" if large and not note else "exact"
        if method == "approx":
            if not approx_available():
                raise InputError("approximate neighbours need faiss; pip install 'cleanpipe[issues]' "
                                 "or pass method='exact'")
            return cls(X, "approx", note, seed, _faiss=_build_ivf(X, seed))
        return cls(X, "exact", note, seed, _sq=np.einsum("ij,ij->i", X, X))

    def kneighbors(self, k: int):
        """The ``k`` nearest other rows of every row (the row itself excluded, its exact
        duplicates not).

        Returns
        -------
        dist : ndarray of shape (n_samples, k), float32
            Ascending. Where fewer than ``k`` other rows exist (or the approximate index found
            fewer), the missing places hold ``inf`` and index -1.
        idx : ndarray of shape (n_samples, k), int64
        """
        k = self._check_k(k)
        n = self.X.shape[0]
        dist, idx = self._search(self.X, k + 1)
        # Drop the row itself; with exact duplicates at distance 0 it may not come first, and an
        # approximate search may miss it: then the farthest candidate goes instead.
        own = idx == np.arange(n)[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(n), drop] = False
        return dist[keep].reshape(n, k), idx[keep].reshape(n, k)

    def query(self, Y, k: int):
        """The ``k`` nearest rows of the index to each row of ``Y`` (another table, same encoding).

        Returns
        -------
        dist : ndarray of shape (len(Y), k), float32
        idx : ndarray of shape (len(Y), k), int64
        """
        k = self._check_k(k)
        Y = np.ascontiguousarray(Y, dtype=np.float32)
        if Y.ndim != 2 or Y.shape[1] != self.X.shape[1]:
            raise InputError(f"the second table has {Y.shape[-1] if Y.ndim else 0} feature columns "
                             f"after encoding, the first {self.X.shape[1]}; both need the same "
                             "feature columns")
        if not np.isfinite(Y).all():
            raise InputError("the second feature matrix holds NaN or inf; impute missing values first")
        return self._search(Y, k)

    # --- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _check_k(k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer; got {k!r}")
        return int(k)

    def _search(self, Q: np.ndarray, k: int):
        n = self.X.shape[0]
        kk = min(k, n)
        if self.method == "approx":
            idx = self._faiss_search(Q, kk)
        else:
            idx = self._exact_candidates(Q, kk)
        dist = _row_distances(Q, self.X, idx)
        order = np.argsort(dist, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        if kk < k:
            pad = k - kk
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        return dist.astype(np.float32), idx.astype(np.int64)

    def _exact_candidates(self, Q: np.ndarray, k: int) -> np.ndarray:
        X, sq = self.X, self._sq
        n = X.shape[0]
        block = max(1, NEIGHBOR_BLOCK_BYTES // (4 * n))
        out = np.empty((Q.shape[0], k), dtype=np.int64)
        for start in range(0, Q.shape[0], block):
            q = Q[start:start + block]
            # |q - x|^2 up to the per-query constant |q|^2, which does not change the order
            d2 = sq[None, :] - 2.0 * (q @ X.T)
            if k < n:
                part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            else:
                part = np.broadcast_to(np.arange(n), (len(q), n)).copy()
            out[start:start + block] = part
        return out

    def _faiss_search(self, Q: np.ndarray, k: int) -> np.ndarray:
        with _faiss_threads():
            _, idx = self._faiss.search(Q, k)
        return idx.astype(np.int64)


@contextmanager
def _faiss_threads():
    """faiss's OpenMP threads limited to the cores other processes leave idle (the fold fits'
    budget, :func:`cleanpipe.oof.fold_threads`): on a busy machine its threads spin-wait at each
    barrier for cores others hold."""
    import faiss

    from .oof import fold_threads

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(fold_threads(1))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _build_ivf(X: np.ndarray, seed: int):
    """A faiss inverted-file index (flat lists) of ``X``: ``NEIGHBOR_NLIST_PER_ROOT * sqrt(n)``
    k-means cells, each query scanning the ``NEIGHBOR_NPROBE`` nearest cells."""
    import faiss

    n, d = X.shape
    nlist = max(1, int(NEIGHBOR_NLIST_PER_ROOT * np.sqrt(n)))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    # k-means on a seeded sample: faiss's own sampling is seeded too, but only through its
    # ClusteringParameters; sampling here keeps the seed in one place.
    rng = np.random.default_rng(seed)
    train_rows = min(n, nlist * 64)
    sample = X[np.sort(rng.choice(n, train_rows, replace=False))] if train_rows < n else X
    index.cp.seed = int(seed) % (2**31)
    with _faiss_threads():
        index.train(sample)
        index.add(X)
    index.nprobe = min(nlist, NEIGHBOR_NPROBE)
    return index


def _row_distances(Q: np.ndarray, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``||Q[i] - X[idx[i, j]]||`` computed from the difference (exact for equal rows); -1 -> inf."""
    out = np.empty(idx.shape, dtype=np.float32)
    block = max(1, NEIGHBOR_BLOCK_BYTES // (4 * max(1, idx.shape[1]) * X.shape[1]))
    for start in range(0, len(idx), block):
        ii = idx[start:start + block]
        diff = X[np.maximum(ii, 0)] - Q[start:start + block, None, :]
        d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        d[ii < 0] = np.inf
        out[start:start + block] = d
    return out
