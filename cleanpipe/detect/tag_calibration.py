"""Tag probabilities recalibrated within strata of the row's other given tags.

Out-of-fold tag probabilities are often calibrated on average but not across rows with few and
many tags: a row's evidence is shared among its tags, so a model that is linear in its inputs
(logistic regression given the row's other tags) is too unsure of a tag in rows with one or two
tags and too sure of it in rows with many. The posterior rule reads its noise rates off the
cells the model is surest of and turns every cell's probability into a flip posterior, so both
suffer. :func:`fit_tag_count_calibration` fits one Platt map ``sigmoid(a_s + b_s logit p)`` per
stratum ``s`` = the number of *other* given tags of the cell's row (the cell's own tag is not
used, so the map cannot learn the cell's label), pooled over the classes, to the given tags;
:class:`TagCountCalibrated` applies it block by block to an array of any size.

On the development tables of ``benchmarks/multilabel.py`` (logistic-regression probabilities)
it lifted the AUPRC of the rows with a wrong tag by 0.01-0.04 and moved the anchor rates
towards the planted ones (see benchmarks/RESULTS.md, "Multi-label").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import iter_blocks

#: Strata (numbers of other given tags) are merged from the top until each holds this many cells.
MIN_STRATUM_CELLS = 2000
#: Logits are clipped to +-this and binned at this resolution for the fit (one pass over the data).
_Z_MAX, _BINS = 15.0, 1200
#: Ridge towards the identity map (a = 0, b = 1), in units of cells: a stratum of a few cells keeps
#: the probabilities it was given.
_RIDGE = 20.0
_BLOCK_CELLS = 1 << 22


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.clip(np.log(p) - np.log1p(-p), -_Z_MAX, _Z_MAX)


@dataclass(frozen=True)
class TagCountCalibration:
    """One Platt map per stratum of other given tags.

    Attributes
    ----------
    cap : int
        Rows with ``cap`` or more other given tags share the last stratum.
    a, b : ndarray of shape (cap + 1,)
        The map of stratum ``s`` is ``sigmoid(a[s] + b[s] * logit(p))``.
    cells : ndarray of shape (cap + 1,)
        Cells behind each stratum's fit.
    """

    cap: int
    a: np.ndarray
    b: np.ndarray
    cells: np.ndarray

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """Stratum of every cell: its row's other given tags, capped at :attr:`cap`."""
        y = np.asarray(labels).astype(np.int64)
        return np.minimum(y.sum(axis=1, keepdims=True) - y, self.cap)

    def apply(self, labels: np.ndarray, p: np.ndarray) -> np.ndarray:
        """The recalibrated probabilities of the cells of ``labels`` (rows aligned with ``p``)."""
        s = self.strata(labels)
        return _sigmoid(self.a[s] + self.b[s] * _logit(p))


def _platt(z: np.ndarray, n: np.ndarray, pos: np.ndarray, ridge: float = _RIDGE) -> tuple[float, float]:
    """Weighted logistic fit of ``pos`` of ``n`` on ``z`` (binned), shrunk towards ``(0, 1)``.

    Newton's method on the penalised log-likelihood; the penalty ``ridge / 2 * (a^2 + (b - 1)^2)``
    makes it strictly concave, so it converges from the identity start.
    """
    keep = n > 0
    z, n, pos = z[keep], n[keep], pos[keep]
    a, b = 0.0, 1.0
    for _ in range(50):
        q = _sigmoid(a + b * z)
        r = pos - n * q
        w = n * q * (1.0 - q)
        g = np.array([r.sum() - ridge * a, (r * z).sum() - ridge * (b - 1.0)])
        h = np.array([[w.sum() + ridge, (w * z).sum()], [(w * z).sum(), (w * z * z).sum() + ridge]])
        step = np.linalg.solve(h, g)
        a, b = a + step[0], b + step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def fit_tag_count_calibration(labels: np.ndarray, pred_probs, *, min_cells: int = MIN_STRATUM_CELLS,
                              block_rows: int | None = None) -> TagCountCalibration:
    """Fit the Platt map of every stratum of other given tags in one pass over ``pred_probs``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples, n_classes), 0/1 or bool
    pred_probs : array-like of shape (n_samples, n_classes)
        Tag probabilities; an ndarray, memmap or any row-sliceable array.
    min_cells : int, default=MIN_STRATUM_CELLS
        Strata are merged from the top (most other tags) until each holds this many cells.
    block_rows : int, optional

    Returns
    -------
    TagCountCalibration

    Notes
    -----
    The logits are binned (:data:`_BINS` bins over ``[-15, 15]``) with the count of cells and of
    given tags per (stratum, bin); each stratum's map maximises the binomial likelihood of the
    given tags, penalised by ``_RIDGE / 2 * (a^2 + (b - 1)^2)`` so that a small stratum stays near
    the identity. A map is monotone increasing whenever ``b > 0``, so within a stratum the order
    of the cells is kept.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y = (rng.random((4000, 3)) < 0.3).astype(np.uint8)
    >>> cal = fit_tag_count_calibration(Y, np.full(Y.shape, 0.3))
    >>> bool(np.allclose(cal.apply(Y, np.full(Y.shape, 0.3)), 0.3, atol=0.02))
    True
    """
    y_all = np.asarray(labels).astype(bool)
    n, k = y_all.shape
    cap = calibration_cap(_per_value(y_all), min_cells)
    cnt = np.zeros((cap + 1, _BINS))
    pos = np.zeros((cap + 1, _BINS))
    block_rows = block_rows or max(1024, _BLOCK_CELLS // max(k, 1))
    for start, stop, block in iter_blocks(pred_probs, block_rows):
        c, h = calibration_histogram(y_all[start:stop], block, cap)
        cnt += c
        pos += h
    return calibration_from_histogram(cap, cnt, pos)


def _per_value(y: np.ndarray) -> np.ndarray:
    """Cells per number of other given tags, ``[0, k)``: given-1 cells of a row see ``t - 1``, given-0 cells ``t``."""
    n, k = y.shape
    t = y.sum(axis=1, dtype=np.int64)
    return (np.bincount(np.maximum(t - 1, 0), weights=t, minlength=k + 1)
            + np.bincount(t, weights=k - t, minlength=k + 1))[:k]


def calibration_cap(per_value: np.ndarray, min_cells: int = MIN_STRATUM_CELLS) -> int:
    """The last stratum: strata are merged from the top until each holds ``min_cells`` cells.

    ``per_value[c]``: cells whose row has ``c`` other given tags, ``c < n_classes`` (over
    partitions, the two rows of :func:`~cleanpipe.detect.anchors.few_tags_counts` added, their
    last column dropped).
    """
    per_value = np.asarray(per_value, dtype=np.float64)
    cap = len(per_value) - 1
    while cap > 0 and per_value[cap:].sum() < min_cells:
        cap -= 1
    return cap


def calibration_histogram(labels: np.ndarray, p: np.ndarray, cap: int):
    """Some rows' ``(cells, given tags)`` per (stratum, logit bin), each of shape ``(cap + 1, _BINS)``.

    Counts: they add over blocks and partitions (float64 in memory, int64 in a partial; exact
    either way).
    """
    y = np.asarray(labels).astype(bool)
    t = y.sum(axis=1, dtype=np.int64)
    edges = np.linspace(-_Z_MAX, _Z_MAX, _BINS + 1)
    s = np.minimum(t[:, None] - y, cap)
    b = np.clip(np.searchsorted(edges, _logit(p), side="right") - 1, 0, _BINS - 1)
    flat = (s * _BINS + b).ravel()
    cnt = np.bincount(flat, minlength=(cap + 1) * _BINS).reshape(cap + 1, _BINS)
    pos = np.bincount(flat, weights=y.ravel(), minlength=(cap + 1) * _BINS).reshape(cap + 1, _BINS)
    return cnt, pos


def calibration_from_histogram(cap: int, cnt: np.ndarray, pos: np.ndarray) -> TagCountCalibration:
    """Fit every stratum's Platt map to the merged :func:`calibration_histogram`."""
    cnt = np.asarray(cnt, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    edges = np.linspace(-_Z_MAX, _Z_MAX, _BINS + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fits = [_platt(centres, cnt[s], pos[s]) for s in range(cap + 1)]
    return TagCountCalibration(cap=cap, a=np.array([f[0] for f in fits]), b=np.array([f[1] for f in fits]),
                               cells=cnt.sum(axis=1))


class TagCountCalibrated:
    """A row-sliceable view of ``pred_probs`` with the map of :class:`TagCountCalibration` applied.

    ``view[a:b]`` computes the recalibrated rows ``a:b`` (float64) from ``pred_probs[a:b]`` and
    ``labels[a:b]``, so the detectors' block passes run on it unchanged, without a copy of the
    whole array.
    """

    def __init__(self, labels: np.ndarray, pred_probs, calibration: TagCountCalibration):
        self.labels = labels
        self.pred_probs = pred_probs
        self.calibration = calibration
        self.shape = tuple(pred_probs.shape)
        self.dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
        return self.calibration.apply(self.labels[rows], np.asarray(self.pred_probs[rows]))
