"""Exact sums of float64 values: the same answer whatever the order and the grouping of the rows.

A floating-point sum depends on the order of its additions, so a sum taken partition by partition
and then merged differs, in its last bits, from the same sum over the whole vector. The detector's
thresholds, the expected-F1 count and the mixture's null test compare such sums with other
numbers, so one ulp can move a flag. Here every value is split exactly into integers and summed
in integer arithmetic, which is associative: a sum is the correctly rounded value of the true sum,
identical for any partitioning of the rows.

Every finite float64 is ``M * 2**(e - 53)`` with ``M`` an integer, ``|M| < 2**53`` (``frexp``).
``M = hi * 2**26 + lo`` with ``0 <= lo < 2**26``; per (group, exponent), the ``hi`` and the ``lo``
parts are summed in float64, which is exact while fewer than ``2**26`` values are added (each
part is below ``2**27`` in magnitude), so rows are taken :data:`_CHUNK` at a time. A partial
holds, per (group, exponent) present, two int64 sums; merging adds them. The final value,
``sum (hi * 2**26 + lo) * 2**(e - 53)``, is formed in Python integers and divided once by a power
of two (Python's integer true division rounds correctly).

Examples
--------
>>> x = np.array([1e16, 1.0, -1e16, 0.1, 0.2])
>>> float(x.sum()) == 1.3, exact_sum(x) == 1.3
(False, True)
>>> a, b = exact_group_sums(x[:2]), exact_group_sums(x[2:])
>>> bool(a.merge(b).totals()[0] == exact_sum(x))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Values summed in float64 per bin at a time: 2**25 parts below 2**27 stay below 2**52, exact.
_CHUNK = 1 << 25
#: frexp exponents of finite float64 lie in [-1073, 1024]: an offset makes them bin indices.
_EXP_OFFSET = 1074
_N_EXP = 2100
#: Up to this many (group, exponent) bins, a partial is counted in one dense bincount.
_DENSE_BINS = 1 << 22


@dataclass(frozen=True)
class ExactSums:
    """Exact per-group sums as a mergeable partial.

    Attributes
    ----------
    n_groups : int
    keys : ndarray of int64
        ``group * 2100 + exponent + 1074`` of every (group, exponent) with a non-zero part, sorted.
    hi, lo : ndarray of int64
        The sums of the ``hi`` and ``lo`` integer parts of the values in each key.
    """

    n_groups: int
    keys: np.ndarray
    hi: np.ndarray
    lo: np.ndarray

    def merge(self, other: "ExactSums") -> "ExactSums":
        """The partial of both sets of rows (associative and commutative, exactly)."""
        if other.n_groups != self.n_groups:
            raise ValueError("cannot merge sums over different numbers of groups")
        keys = np.concatenate([self.keys, other.keys])
        if not len(keys):
            return self
        uniq, inv = np.unique(keys, return_inverse=True)
        hi = np.zeros(len(uniq), np.int64)
        lo = np.zeros(len(uniq), np.int64)
        np.add.at(hi, inv, np.concatenate([self.hi, other.hi]))
        np.add.at(lo, inv, np.concatenate([self.lo, other.lo]))
        return ExactSums(self.n_groups, uniq, hi, lo)

    def totals(self) -> np.ndarray:
        """The correctly rounded float64 sum of each group."""
        out = np.zeros(self.n_groups)
        if not len(self.keys):
            return out
        groups = self.keys // _N_EXP
        exps = self.keys % _N_EXP - _EXP_OFFSET - 53  # value = (hi 2**26 + lo) 2**exp
        for g in np.unique(groups):
            sel = groups == g
            e = exps[sel]
            base = int(e.min())
            total = 0
            for h, l, x in zip(self.hi[sel].tolist(), self.lo[sel].tolist(), e.tolist()):
                total += ((h << 26) + l) << (x - base)
            out[g] = total * 2.0 ** base if base >= 0 else total / (1 << -base)
        return out


def empty_sums(n_groups: int = 1) -> ExactSums:
    """The partial of no rows."""
    z = np.zeros(0, np.int64)
    return ExactSums(int(n_groups), z, z, z)


def exact_group_sums(values: np.ndarray, groups: np.ndarray | None = None,
                     n_groups: int = 1) -> ExactSums:
    """The exact-sum partial of ``values`` per group (one group if ``groups`` is None).

    Parameters
    ----------
    values : ndarray of shape (n,)
        Finite; converted to float64 (float32 values exactly).
    groups : ndarray of shape (n,), int, optional
        Group of each value, in ``[0, n_groups)``.
    n_groups : int, default=1
    """
    values = np.asarray(values, dtype=np.float64)
    out = empty_sums(n_groups)
    for s in range(0, len(values), _CHUNK):
        v = values[s:s + _CHUNK]
        mant, exp = np.frexp(v)
        m = np.ldexp(mant, 53).astype(np.int64)  # exact: |m| < 2**53
        hi = m >> 26
        lo = m - (hi << 26)
        key = exp.astype(np.int64) + _EXP_OFFSET
        if groups is not None:
            key += np.asarray(groups[s:s + _CHUNK], dtype=np.int64) * _N_EXP
        nz = m != 0
        key, hi, lo = key[nz], hi[nz], lo[nz]
        # float64 bin sums of < 2**25 parts below 2**27 in magnitude: exact, then integers
        if n_groups * _N_EXP <= _DENSE_BINS:
            h = np.bincount(key, weights=hi.astype(np.float64), minlength=n_groups * _N_EXP)
            lsum = np.bincount(key, weights=lo.astype(np.float64), minlength=n_groups * _N_EXP)
            uniq = np.flatnonzero((h != 0) | (lsum != 0))
            h, lsum = h[uniq], lsum[uniq]
        else:
            uniq, inv = np.unique(key, return_inverse=True)
            h = np.bincount(inv, weights=hi.astype(np.float64), minlength=len(uniq))
            lsum = np.bincount(inv, weights=lo.astype(np.float64), minlength=len(uniq))
        part = ExactSums(out.n_groups, uniq.astype(np.int64), h.astype(np.int64), lsum.astype(np.int64))
        out = part if not len(out.keys) else out.merge(part)
    return out


def exact_sum(values: np.ndarray) -> float:
    """The correctly rounded sum of ``values``, whatever their order."""
    return float(exact_group_sums(values).totals()[0])
