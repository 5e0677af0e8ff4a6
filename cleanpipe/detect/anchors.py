"""Missing- and spurious-tag rates of multi-label data, read off anchor cells.

A *cell* is one (row, class) pair of a 0/1 tag matrix. Under class-conditional noise the
probability of the given tag is ``P(given = 1 | x) = rho0 + (1 - rho0 - rho1) pi(x)``, with
``pi(x) = P(true = 1 | x)``, ``rho0 = P(given 1 | true 0)`` (spurious) and
``rho1 = P(given 0 | true 1)`` (missing). Where the model is surest a tag is absent
(``pi`` near 0) the given tags occur at rate ``rho0``; where it is surest the tag is present,
they are absent at rate ``rho1``: those cells are the *anchors* (Scott, Blanchard & Handy, COLT
2013; Patrini et al., CVPR 2017). :func:`anchor_noise_rates` reads both rates off the given tags
of the anchor cells, in one pass over the probabilities.

Two choices make the anchors purer than "the top share of each class":

- **Pooled over classes.** The errors are taken to come from one tagging process (one rate of
  dropped and one of added tags), so the anchors are the surest cells over *all* classes: a class
  the model never predicts with confidence contributes no anchors, instead of a rate read off
  cells it is unsure of.
- **Rows with few other tags.** A row's evidence is shared among its tags, so in rows with many
  given tags the model is rarely sure of any one of them, and even its surest cells there are
  often wrong: on a 12-tag development table of ``benchmarks/multilabel.py`` (4 tags per row) the
  5% of cells with the highest probability were 20% truly absent, against 0-5% among rows with at
  most two other tags, and the rates read off them were 3-8x the planted ones. Anchors are
  therefore drawn only from cells whose row carries at most the lower quartile
  (:data:`ANCHOR_FEW_TAGS`) of the other-tag counts of that side's cells. Under class-conditional
  noise a cell's error does not depend on the row's other tags, so this selects purer anchors
  without biasing the rate.
"""

from __future__ import annotations

import numpy as np

from ._validate import iter_blocks

#: Share of the eligible cells given (or not given) a tag that anchor the rates: the cells the
#: model is surest truly have (or lack) the tag.
ANCHOR_SHARE = 0.05
#: Eligible cells: those whose row has at most this quantile of the other-tag counts of the cells
#: on that side (given absent / given present). 1 keeps every cell.
ANCHOR_FEW_TAGS = 0.25

#: Target number of (row, class) cells per block.
_BLOCK_CELLS = 1 << 22


class _LowTail:
    """The given-tag rate over the ``m`` smallest values seen, streamed block by block.

    Keeps at most ``m + 1`` weighted entries ``(value, count, hits)``: values above the current
    ``m``-th smallest can never enter the tail and are dropped, and every entry tied at that value
    is merged into one, so ties count pro rata (the result does not depend on the row order) and
    memory stays bounded whatever the number of ties.
    """

    def __init__(self, m: int):
        self.m = int(m)
        self.value = np.zeros(0)
        self.count = np.zeros(0)
        self.hits = np.zeros(0)

    def add(self, value: np.ndarray, hit: np.ndarray) -> None:
        if not len(value) or self.m <= 0:
            return
        v = np.concatenate([self.value, value])
        c = np.concatenate([self.count, np.ones(len(value))])
        h = np.concatenate([self.hits, hit.astype(np.float64)])
        if c.sum() > self.m:
            order = np.argsort(v, kind="stable")
            v, c, h = v[order], c[order], h[order]
            cut = v[np.searchsorted(np.cumsum(c), self.m)]
            below, at = v < cut, v == cut
            v = np.append(v[below], cut)
            c = np.append(c[below], c[at].sum())
            h = np.append(h[below], h[at].sum())
        self.value, self.count, self.hits = v, c, h

    def rate(self) -> float:
        """``(s + 1/2) / (m + 1)``: ``s`` hits among the ``m`` smallest, Jeffreys-smoothed.

        Entries tied at the cut count pro rata. The smoothing keeps a rate seen 0 times in a
        small anchor set above 0 (a zero rate would make every flip of that kind impossible).
        """
        if self.m <= 0 or not len(self.value):
            return 0.0
        order = np.argsort(self.value, kind="stable")
        count, hits = self.count[order], self.hits[order]
        m = min(self.m, count.sum())
        inside = np.cumsum(count) <= m
        j = int(np.argmin(inside))  # the entry tied at the cut, when some are left out
        at = (count[j], hits[j]) if not inside.all() else (0, 0)
        return tail_rate(m, count[inside].sum(), hits[inside].sum(), *at)


def tail_rate(m, n_below, hits_below, n_at=0, hits_at=0) -> float:
    """The Jeffreys-smoothed given-tag rate of an anchor tail, ``(s + 1/2) / (m + 1)``.

    The tail is the ``m`` smallest values: ``n_below`` values (``hits_below`` of them hits) lie
    inside it, and ``m - n_below`` more are taken from the ``n_at`` values tied at its edge, which
    count pro rata (``hits_at`` hits among them). ``m`` is at most the number of values. The
    streamed tail of :func:`anchor_noise_rates` and the radix-selected one of
    :mod:`~cleanpipe.detect.partitioned_multilabel` both end here, with the same arithmetic.

    Examples
    --------
    >>> tail_rate(3, 2, 1, 2, 1)  # 1 hit below, half of 1 hit among the two tied: (1.5 + .5) / 4
    0.5
    """
    s = hits_below
    rest = m - n_below
    if rest > 0:  # part of the entries tied at the cut
        s += rest * hits_at / n_at
    return float((s + 0.5) / (m + 1))


def noise_from_rates(rates: np.ndarray, density, n_classes: int) -> np.ndarray:
    """The ``(n_classes, 2, 2)`` noise matrix ``P(given | true)`` from the anchor tails' rates.

    ``rates[:, 0]`` is the given-tag rate of the low tails (``rho0``), ``rates[:, 1]`` the
    missing-tag rate of the high ones (``rho1``), one row (pooled) or one per class; each is capped
    by the frequency of its given side, ``density`` (the share of cells given a tag).
    """
    rates = np.asarray(rates, dtype=np.float64).reshape(-1, 2)
    rho0 = np.minimum(rates[:, 0], density)
    rho1 = np.minimum(rates[:, 1], 1.0 - density)
    noise = np.empty((len(rates), 2, 2))
    noise[:, 0, 0], noise[:, 1, 0] = 1.0 - rho0, rho0
    noise[:, 0, 1], noise[:, 1, 1] = rho1, 1.0 - rho1
    return np.broadcast_to(noise, (n_classes, 2, 2)).copy()


def anchor_size(cells: int, share: float = ANCHOR_SHARE) -> int:
    """Anchors for a side of ``cells`` eligible cells: ``share`` of them, at least 1 (0 if none)."""
    return max(1, int(share * cells)) if cells else 0


def few_tags_limits(labels: np.ndarray, quantile: float = ANCHOR_FEW_TAGS) -> tuple[int, int]:
    """Largest number of other given tags an anchor cell's row may carry, per given side.

    Returns ``(limit0, limit1)``: the ``quantile`` (lower order statistic) of the other-tag count
    ``t - g`` over the cells given ``g`` (``t`` = the row's given tags), for ``g = 0, 1``.

    Examples
    --------
    >>> Y = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    >>> # given-0 cells see 1, 1, 2, 0, 0, 0 other tags; given-1 cells 0, 1, 1, 2, 2, 2
    >>> few_tags_limits(Y, 0.25), few_tags_limits(Y, 1.0)
    ((0, 1), (2, 2))
    """
    return few_tags_limits_from_counts(few_tags_counts(labels), quantile)


def few_tags_counts(labels: np.ndarray) -> np.ndarray:
    """Cells given ``g`` whose row has ``c`` other tags, ``[g, c]``: a count that adds over partitions."""
    y = np.asarray(labels)
    n, k = y.shape
    t = y.sum(axis=1, dtype=np.int64)
    return np.stack([np.bincount(np.maximum(t - g, 0), weights=weight, minlength=k + 1)
                     for g, weight in ((0, k - t), (1, t))]).astype(np.int64)


def few_tags_limits_from_counts(counts_by_side: np.ndarray, quantile: float = ANCHOR_FEW_TAGS):
    """:func:`few_tags_limits` from merged :func:`few_tags_counts`."""
    k = counts_by_side.shape[1] - 1
    limits = []
    for counts in np.asarray(counts_by_side, dtype=np.float64):
        total = counts.sum()
        if total == 0:
            limits.append(k)
            continue
        rank = np.floor(quantile * (total - 1)) + 1  # the lower order statistic, 1-based
        limits.append(int(np.searchsorted(np.cumsum(counts), rank - 1e-9)))
    return limits[0], limits[1]


def anchor_noise_rates(labels: np.ndarray, pred_probs, *, share: float = ANCHOR_SHARE,
                       few_tags: float = ANCHOR_FEW_TAGS, pooled: bool = True,
                       block_rows: int | None = None) -> np.ndarray:
    """Spurious and missing rates from anchor cells: how often the given tag disagrees where the model is surest.

    Parameters
    ----------
    labels : ndarray of shape (n_samples, n_classes), 0/1 or bool
    pred_probs : array-like of shape (n_samples, n_classes)
        Out-of-fold tag probabilities (fitted to the given, noisy tags); an ndarray, memmap or
        any row-sliceable array, read once in row blocks.
    share : float, default=ANCHOR_SHARE
        Size of each anchor set as a share of the eligible cells on that side (given absent /
        present).
    few_tags : float in (0, 1], default=ANCHOR_FEW_TAGS
        Eligible cells: those whose row has at most this quantile of the other-tag counts of the
        cells on that side (:func:`few_tags_limits`); 1 keeps every cell.
    pooled : bool, default=True
        One spurious and one missing rate for every class, from anchors pooled over the classes;
        else each class's rates from its own anchors.
    block_rows : int, optional

    Returns
    -------
    ndarray of shape (n_classes, 2, 2)
        ``P(given = g | true = j)`` indexed ``[k, g, j]``; ``[k, 1, 0]`` is the spurious rate,
        ``[k, 0, 1]`` the missing rate.

    Notes
    -----
    ``rho0`` is the frequency of the given tag among the ``m0 = share * n0`` eligible cells of
    lowest ``p`` (``n0`` eligible cells lack the tag) and ``rho1`` the frequency of its absence
    among the ``m1 = share * n1`` eligible cells of highest ``p``, each smoothed as
    ``(count + 1/2) / (m + 1)`` (the posterior mean under a Jeffreys prior): the given tags of the
    anchor cells, not the model's own extreme probabilities, whose sigmoid tails undershoot a floor
    of ``rho0``. Each rate is capped by the frequency of that given side (``rho0 <= P(given 1)``,
    ``rho1 <= P(given 0)``), which holds whenever ``rho0 + rho1 < 1``. See the module docstring
    for why the anchors are pooled over classes and drawn from rows with few other tags.

    Examples
    --------
    >>> Y = np.array([[1], [1], [0], [0], [1], [0], [0], [1]])
    >>> P = np.array([[.9], [.8], [.1], [.2], [.05], [.3], [.7], [.6]])
    >>> # anchors of one cell: the lowest p (.05) is given the tag, rho0 = (1 + 1/2) / 2, capped at
    >>> # P(given 1) = 0.5; the highest (.9) is given it too, rho1 = (0 + 1/2) / 2
    >>> anchor_noise_rates(Y, P, share=0.25)[0]
    array([[0.5 , 0.25],
           [0.5 , 0.75]])
    """
    y_all = np.asarray(labels).astype(bool)
    n, k = y_all.shape
    t = y_all.sum(axis=1, dtype=np.int64)
    lim0, lim1 = few_tags_limits(y_all, few_tags)
    rows0, rows1 = t <= lim0, t - 1 <= lim1  # rows whose given-0 / given-1 cells are eligible
    # eligible cells per class and side: given 0 in a row of rows0, given 1 in a row of rows1
    n0 = (~y_all & rows0[:, None]).sum(axis=0)
    n1 = (y_all & rows1[:, None]).sum(axis=0)
    # one (lowest p, highest p) pair of tails for all classes, or one per class; a side without
    # eligible cells gets an empty tail (m = 0) and a rate of 0
    sides = [(n0.sum(), n1.sum())] if pooled else list(zip(n0, n1))
    tails = [(_LowTail(anchor_size(a, share)), _LowTail(anchor_size(b, share))) for a, b in sides]
    block_rows = block_rows or max(1024, _BLOCK_CELLS // max(k, 1))
    for start, stop, block in iter_blocks(pred_probs, block_rows):
        y = y_all[start:stop]
        tb = t[start:stop]
        p = block.astype(np.float64, copy=False)
        # a cell is eligible for a side's anchors by its own row's other tags, t - given
        ok0 = (tb[:, None] - y) <= lim0
        ok1 = (tb[:, None] - y) <= lim1
        if pooled:
            tails[0][0].add(p[ok0], y[ok0])
            tails[0][1].add(-p[ok1], ~y[ok1])
            continue
        for c, (low, high) in enumerate(tails):
            low.add(p[ok0[:, c], c], y[ok0[:, c], c])
            high.add(-p[ok1[:, c], c], ~y[ok1[:, c], c])
    density = y_all.mean() if pooled else y_all.mean(axis=0)
    rates = np.array([[low.rate(), high.rate()] for low, high in tails])
    return noise_from_rates(rates, density, k)
