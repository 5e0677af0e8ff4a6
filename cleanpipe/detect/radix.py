"""Exact order statistics over partitions: radix selection with mergeable histograms.

The detector's order statistics (each class's anchors, each cell's pruning quota, the ``k``
lowest ``rank_by``, the loss percentiles the mixture clips at) are exact in memory. Over
partitions they stay exact: every value maps to an unsigned 64-bit key in the same order
(:func:`order_keys`), and the ``r``-th smallest key of each group is found digit by digit, 16 bits
a pass. A pass counts, per group, the keys that share the digits found so far, by their next
digit; those counts add across partitions, so a pass is a partial per partition and a sum. Once
few keys are left in a group's range (:data:`GATHER_ROWS` over all groups), one last pass brings
those keys themselves to the driver, which sorts them. Four passes at most, usually two or three;
nothing but counts and a bounded number of keys leaves a partition.

A driver runs a :class:`Selection` like this (``parts`` yields ``(groups, keys)`` per partition)::

    sel = Selection(ranks, counts)
    while (req := sel.request()) is not None:
        sel.absorb(merge_select([select_partial(req, g, k) for g, k in parts]))
    sel.value, sel.below, sel.equal     # per group: the key, keys below it, keys equal to it
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bits of a key settled per histogram pass.
DIGIT_BITS = 16
#: Cap on groups x bins of one histogram pass (fewer bits a pass with many groups).
HIST_CELLS = 1 << 21
#: Keys brought to the driver in a gather pass, over all groups, at most.
GATHER_ROWS = 1 << 16
_SIGN = np.uint64(1 << 63)


def order_keys(values: np.ndarray, *, descending: bool = False) -> np.ndarray:
    """Unsigned 64-bit keys in the order of finite ``values`` (float32 or float64).

    ``-0.0`` and ``0.0`` share a key, as they compare equal. With ``descending``, the largest
    value gets the smallest key, so selecting the ``r`` smallest keys selects the ``r`` largest
    values.

    Examples
    --------
    >>> v = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    >>> k = order_keys(v)
    >>> bool(np.all(np.diff(k.astype(object)) >= 0)), bool(k[1] == k[2])
    (True, True)
    """
    v = np.asarray(values, dtype=np.float64) + 0.0  # -0.0 + 0.0 is +0.0
    bits = v.view(np.uint64)
    keys = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return ~keys if descending else keys


def key_values(keys: np.ndarray, *, descending: bool = False) -> np.ndarray:
    """The float64 values of :func:`order_keys` keys (its inverse)."""
    keys = np.asarray(keys, dtype=np.uint64)
    keys = ~keys if descending else keys
    bits = np.where(keys & _SIGN, keys & ~_SIGN, ~keys)
    return bits.view(np.float64)


@dataclass(frozen=True)
class SelectRequest:
    """What one pass of a :class:`Selection` asks each partition (small, picklable).

    Attributes
    ----------
    n_groups : int
    hist_groups : ndarray of int64
        Groups counted by their next digit this pass.
    lo : ndarray of uint64, bits : ndarray of int64
        Per group (all ``n_groups``): the smallest key of its range and the bits settled, so the
        range is ``[lo, lo + 2**(64 - bits) - 1]``.
    digit_bits : int
        Bits per digit this pass (a group with fewer left uses what it has).
    gather_groups : ndarray of int64
        Groups whose keys in range are sent whole this pass.
    """

    n_groups: int
    hist_groups: np.ndarray
    lo: np.ndarray
    bits: np.ndarray
    digit_bits: int
    gather_groups: np.ndarray


@dataclass(frozen=True)
class SelectPartial:
    """One partition's answer to a :class:`SelectRequest`; :func:`merge_select` adds them.

    The histogram is sparse: ``counts[j]`` keys of ``hist_groups[cells[j] // 2**digit_bits]`` in
    range have the next digit ``cells[j] % 2**digit_bits`` (``cells`` sorted, unique); most of a
    pass's bins are empty (probabilities share a few exponents). ``gathered``: ``(groups, keys)``
    of the gather groups' keys in range.
    """

    cells: np.ndarray
    counts: np.ndarray
    gathered_groups: np.ndarray
    gathered_keys: np.ndarray


def _range_mask(req: SelectRequest, groups: np.ndarray, keys: np.ndarray, wanted: np.ndarray):
    """Rows whose group is in ``wanted`` and whose key is in that group's current range."""
    member = np.zeros(req.n_groups, dtype=bool)
    member[wanted] = True
    rows = np.flatnonzero(member[groups])
    g = groups[rows]
    lo = req.lo[g]
    span = _span(req.bits[g])
    k = keys[rows]
    inside = (k >= lo) & (k - lo <= span)
    return rows[inside], g[inside]


def _span(bits: np.ndarray) -> np.ndarray:
    """``2**(64 - bits) - 1`` as uint64 (all ones for ``bits == 0``), without a 64-bit shift."""
    bits = np.asarray(bits, dtype=np.int64)
    shift = np.minimum(64 - bits, 63).astype(np.uint64)
    span = (np.uint64(1) << shift) - np.uint64(1)
    return np.where(bits == 0, np.uint64(0xFFFFFFFFFFFFFFFF), np.where(bits >= 64, np.uint64(0), span))


def select_partial(req: SelectRequest, groups: np.ndarray, keys: np.ndarray) -> SelectPartial:
    """Count (and gather) one partition's keys for a selection pass.

    Parameters
    ----------
    req : SelectRequest
    groups : ndarray of shape (n,), int
        Group of each row in ``[0, req.n_groups)``; rows in no selection may carry any group
        that the request does not name.
    keys : ndarray of shape (n,), uint64
        :func:`order_keys` of the rows' values.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_hist = len(req.hist_groups)
    width = 1 << req.digit_bits
    cells = counts = np.zeros(0, np.int64)
    if n_hist:
        rows, g = _range_mask(req, groups, keys, req.hist_groups)
        slot = np.full(req.n_groups, -1, dtype=np.int64)
        slot[req.hist_groups] = np.arange(n_hist)
        left = 64 - req.bits[g]
        d_bits = np.minimum(req.digit_bits, left)
        shift = (left - d_bits).astype(np.uint64)
        digit = ((keys[rows] - req.lo[g]) >> shift).astype(np.int64)
        cell = slot[g] * width + digit
        if n_hist * width <= 4 * len(cell) + (1 << 16):  # dense counts are cheaper here
            dense = np.bincount(cell, minlength=n_hist * width)
            cells = np.flatnonzero(dense)
            counts = dense[cells]
        else:
            cells, counts = np.unique(cell, return_counts=True)
    none = (np.zeros(0, np.int64), np.zeros(0, np.uint64))
    gathered = none
    if len(req.gather_groups):
        rows, g = _range_mask(req, groups, keys, req.gather_groups)
        gathered = (g, keys[rows])
    return SelectPartial(cells.astype(np.int64), counts.astype(np.int64), *gathered)


def merge_select(a: SelectPartial, b: SelectPartial | None = None) -> SelectPartial:
    """Merge two selection partials (associative, commutative up to the order of gathered keys)."""
    if b is None:
        return a
    if not len(a.cells) or not len(b.cells):
        cells, counts = (b.cells, b.counts) if not len(a.cells) else (a.cells, a.counts)
    else:
        cells, inv = np.unique(np.concatenate([a.cells, b.cells]), return_inverse=True)
        counts = np.zeros(len(cells), np.int64)
        np.add.at(counts, inv, np.concatenate([a.counts, b.counts]))
    return SelectPartial(cells, counts, np.concatenate([a.gathered_groups, b.gathered_groups]),
                         np.concatenate([a.gathered_keys, b.gathered_keys]))


class Selection:
    """The ``ranks[g]``-th smallest key of every group ``g``, found pass by pass.

    Parameters
    ----------
    ranks : ndarray of shape (n_groups,), int
        1-based rank wanted per group; groups with ``rank <= 0`` or ``rank > counts`` are not
        searched (their ``value`` stays None-like: see ``searched``).
    counts : ndarray of shape (n_groups,), int
        Keys per group over all partitions.
    gather_rows : int, default=GATHER_ROWS
        Keys sent whole to the driver in one pass, at most (fewer: more histogram passes).

    Attributes
    ----------
    value : ndarray of uint64
        The selected key per searched group.
    below, equal : ndarray of int64
        Keys of the group below ``value`` and equal to it (over all partitions).
    searched : ndarray of bool
    """

    def __init__(self, ranks, counts, *, gather_rows: int = GATHER_ROWS):
        self.gather_rows = int(gather_rows)
        ranks = np.asarray(ranks, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        self.n_groups = len(ranks)
        self.searched = (ranks >= 1) & (ranks <= counts)
        self._rank = np.where(self.searched, ranks, 0)
        self._remaining = np.where(self.searched, counts, 0)
        self.lo = np.zeros(self.n_groups, dtype=np.uint64)
        self.bits = np.zeros(self.n_groups, dtype=np.int64)
        self.below = np.zeros(self.n_groups, dtype=np.int64)
        self.equal = np.zeros(self.n_groups, dtype=np.int64)
        self.value = np.zeros(self.n_groups, dtype=np.uint64)
        self._active = self.searched.copy()

    @property
    def done(self) -> bool:
        return not self._active.any()

    def request(self) -> SelectRequest | None:
        """The next pass's request, or None when every group is settled."""
        active = np.flatnonzero(self._active)
        if not len(active):
            return None
        # Smallest ranges are gathered first, as long as the total stays within GATHER_ROWS.
        order = active[np.argsort(self._remaining[active], kind="stable")]
        fits = np.cumsum(self._remaining[order]) <= self.gather_rows
        gather = np.sort(order[fits])
        hist = np.setdiff1d(active, gather)
        bits = DIGIT_BITS
        while bits > 4 and len(hist) << bits > HIST_CELLS:
            bits -= 2
        return SelectRequest(self.n_groups, hist, self.lo.copy(), self.bits.copy(), bits, gather)

    def absorb(self, req: SelectRequest, merged: SelectPartial) -> None:
        """Narrow every group's range from a pass's merged partial."""
        if len(req.hist_groups):
            g = req.hist_groups
            width = 1 << req.digit_bits
            slots = merged.cells // width
            bounds = np.searchsorted(slots, np.arange(len(g) + 1))
            digit = np.zeros(len(g), np.int64)
            before = np.zeros(len(g), np.int64)
            remaining = np.zeros(len(g), np.int64)
            for i in range(len(g)):  # each group's few non-empty bins
                lo, hi = bounds[i], bounds[i + 1]
                cum = np.cumsum(merged.counts[lo:hi])
                j = int(np.searchsorted(cum, self._rank[g[i]], side="left"))  # first reaching it
                digit[i] = merged.cells[lo + j] % width
                before[i] = cum[j - 1] if j else 0
                remaining[i] = merged.counts[lo + j]
            self.below[g] += before
            self._rank[g] = self._rank[g] - before
            self._remaining[g] = remaining
            d_bits = np.minimum(req.digit_bits, 64 - self.bits[g])
            shift = (64 - self.bits[g] - d_bits).astype(np.uint64)
            self.lo[g] = self.lo[g] + (digit.astype(np.uint64) << shift)
            self.bits[g] += d_bits
            full = self.bits[g] >= 64
            self.value[g[full]] = self.lo[g[full]]
            self.equal[g[full]] = self._remaining[g[full]]
            self._active[g[full]] = False
        if len(req.gather_groups):
            order = np.lexsort((merged.gathered_keys, merged.gathered_groups))
            gg, kk = merged.gathered_groups[order], merged.gathered_keys[order]
            for g in req.gather_groups:  # a few groups, each settled by its sorted keys
                lo, hi = np.searchsorted(gg, [g, g + 1])
                keys = kk[lo:hi]
                value = keys[self._rank[g] - 1]
                self.value[g] = value
                self.below[g] += int(np.searchsorted(keys, value, side="left"))
                self.equal[g] = int(np.searchsorted(keys, value, side="right")
                                    - np.searchsorted(keys, value, side="left"))
            self._active[req.gather_groups] = False


def run_selection(ranks, counts, parts, *, gather_rows: int = GATHER_ROWS) -> Selection:
    """Run a :class:`Selection` to the end over ``parts``, a callable returning ``(groups, keys)`` pairs.

    ``parts()`` is called once per pass and must yield every partition's pair; the in-memory
    helper of tests and of small drivers.
    """
    sel = Selection(ranks, counts, gather_rows=gather_rows)
    while (req := sel.request()) is not None:
        merged = None
        for groups, keys in parts():
            p = select_partial(req, groups, keys)
            merged = p if merged is None else merge_select(merged, p)
        sel.absorb(req, merged)
    return sel


def percentile_from_order(n: int, q: float, order_stat) -> float:
    """``np.percentile(x, q)`` (method "linear") of ``n`` values from their order statistics.

    ``order_stat(i)`` returns the ``i``-th smallest value (0-based). The arithmetic is numpy's
    own (virtual index ``(n - 1) q``, then its two-sided linear interpolation), so the
    result is bit-identical to ``np.percentile`` on the whole vector.
    """
    quantile = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * quantile
    if virtual >= n - 1:
        return float(order_stat(n - 1))
    if virtual < 0:
        return float(order_stat(0))
    prev = int(np.floor(virtual))
    gamma = np.asanyarray(virtual - prev, dtype=np.float64)
    a = np.float64(order_stat(prev))
    b = np.float64(order_stat(prev + 1))
    diff = b - a
    out = np.add(a, diff * gamma)
    if gamma >= 0.5:
        out = np.subtract(b, diff * (1 - gamma))
    return float(out)


def percentile_ranks(n: int, q: float) -> tuple[int, int]:
    """The two 0-based order statistics :func:`percentile_from_order` reads for ``n`` values."""
    quantile = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * quantile
    if virtual >= n - 1:
        return n - 1, n - 1
    if virtual < 0:
        return 0, 0
    prev = int(np.floor(virtual))
    return prev, prev + 1
