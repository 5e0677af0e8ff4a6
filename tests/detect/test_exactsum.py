"""Exact sums: correctly rounded, and the same for any order or grouping of the rows (issue 21)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect.exactsum import empty_sums, exact_group_sums, exact_sum

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, max_size=60))
def test_exact_sum_is_the_correctly_rounded_sum(values):
    x = np.array(values, dtype=np.float64)
    assert exact_sum(x) == float(sum((Fraction(v) for v in values), Fraction(0)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, st.integers(0, 3)), max_size=60), st.data())
def test_merge_is_associative_and_commutative(rows, data):
    x = np.array([v for v, _ in rows], dtype=np.float64)
    g = np.array([k for _, k in rows], dtype=np.int64)
    i, j = sorted(data.draw(st.lists(st.integers(0, len(x)), min_size=2, max_size=2)))
    a, b, c = (exact_group_sums(x[s], g[s], 4) for s in (slice(0, i), slice(i, j), slice(j, None)))
    left = a.merge(b).merge(c).totals()
    right = a.merge(b.merge(c)).totals()
    swapped = c.merge(a).merge(b).totals()
    whole = exact_group_sums(x, g, 4).totals()
    np.testing.assert_array_equal(left, whole)
    np.testing.assert_array_equal(right, whole)
    np.testing.assert_array_equal(swapped, whole)
    np.testing.assert_array_equal(empty_sums(4).merge(a).totals(), a.totals())
    for k in range(4):
        assert whole[k] == float(sum((Fraction(v) for v in x[g == k].tolist()), Fraction(0)))


def test_float32_probabilities_and_subnormals():
    x = np.array([np.float32(0.1)] * 10 + [5e-324, 1e-310], dtype=np.float64)
    assert exact_sum(x) == float(sum(Fraction(v) for v in x.tolist()))
    assert exact_sum(np.zeros(0)) == 0.0
