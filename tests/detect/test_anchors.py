"""Anchor noise rates of multi-label data: known answers, a slow oracle, planted structure, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect.anchors import _LowTail, anchor_noise_rates, few_tags_limits


def _reference_tail_rate(values, hits, m):
    """Slow reference: sort everything, take the ``m`` smallest, ties at the cut pro rata."""
    values, hits = np.asarray(values, float), np.asarray(hits, float)
    cut = np.sort(values)[m - 1]
    below, at = values < cut, values == cut
    s = hits[below].sum() + (m - below.sum()) * hits[at].mean()
    return (s + 0.5) / (m + 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=80),
       st.integers(1, 80), st.lists(st.integers(1, 30), min_size=1, max_size=6))
def test_streamed_tail_equals_the_sorted_reference(cells, m, cuts):
    # few distinct values, so ties at the cut are common; blocks of arbitrary sizes
    values = np.array([v for v, _ in cells], float)
    hits = np.array([h for _, h in cells])
    m = min(m, len(values))
    tail = _LowTail(m)
    edges = np.unique(np.clip(np.cumsum(cuts), 0, len(values)))
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(values)]):
        tail.add(values[a:b], hits[a:b])
    assert tail.rate() == pytest.approx(_reference_tail_rate(values, hits, m))
    assert len(tail.value) <= m + 1  # bounded memory: at most m entries and the merged cut


def test_few_tags_limits_and_pooled_anchors_known_answer():
    # 4 rows, 2 classes. Given-0 cells see t other tags, given-1 cells t - 1.
    Y = np.array([[1, 1], [1, 0], [0, 0], [0, 1]])
    # given-0 cells: (1,1) sees 1, (2,0) 0, (2,1) 0, (3,0) 1 -> lower quartile 0
    # given-1 cells: (0,0) 1, (0,1) 1, (1,0) 0, (3,1) 0 -> lower quartile 0
    assert few_tags_limits(Y, 0.25) == (0, 0)
    P = np.array([[.9, .8], [.6, .3], [.2, .1], [.4, .7]])
    # eligible for rho0 (other tags <= 0): the given-0 cells of row 2 (.2, .1) and the given-1
    # cells of rows 1 and 3 ((1,0) .6, (3,1) .7); m0 = max(1, int(.5 * 2)) = 1: the lowest is .1,
    # not given -> rho0 = (0 + .5) / 2 = .25
    # eligible for rho1: the same cells; m1 = 1: the highest is .7, given -> rho1 = .5 / 2 = .25
    noise = anchor_noise_rates(Y, P, share=0.5, few_tags=0.25)
    np.testing.assert_allclose(noise[0], [[.75, .25], [.25, .75]])
    assert np.allclose(noise, noise[0])
    # with every cell eligible the surest cells are row 0's (.9, .8), given: the missing rate falls
    # to its floor; the lowest (.1) stays the same
    every = anchor_noise_rates(Y, P, share=0.5, few_tags=1.0)
    # m1 = int(.5 * 4) = 2 cells: .9 and .8, both given -> (0 + .5) / 3
    assert every[0, 0, 1] == pytest.approx(.5 / 3)


def _many_tags_table(seed, n=20_000, k=8, rho0=0.03, rho1=0.06):
    """Sparse rows (about 1 tag in 10) and dense rows (7 in 10). The model is as sure of a tag in a
    dense row as in a sparse one (``p`` near 0 or 1 in both), but in dense rows the tag is truly
    there only 80% of the times it claims (and absent 80% of the times it denies it): its surest
    cells are pure in sparse rows only, as with a model that shares a row's evidence among its
    tags without knowing it."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n, 1)) < 0.5
    claim = rng.random((n, k)) < np.where(dense, 0.7, 0.1)
    sure = np.where(claim, rng.uniform(0.97, 1.0, (n, k)), rng.uniform(0.0, 0.03, (n, k)))
    pi = np.where(dense, 0.5 + 0.6 * (sure - 0.5), sure)  # dense rows: pi within [.2, .8]
    true = rng.random((n, k)) < pi
    flip = rng.random((n, k)) < np.where(true, rho1, rho0)
    return (true ^ flip).astype(np.uint8), rho0 + (1 - rho0 - rho1) * sure, flip.any(axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_rows_with_few_tags_give_purer_anchors(seed):
    Y, P, _ = _many_tags_table(seed)
    few = anchor_noise_rates(Y, P)
    every = anchor_noise_rates(Y, P, few_tags=1.0)
    # planted rates 0.03 and 0.06. The spurious rate's anchors (lowest p) come from sparse rows
    # once the rows with many tags are left out (~1,400 cells: standard error ~0.005); with every
    # cell a candidate the dense rows' sure-but-wrong cells join them
    assert abs(few[0, 1, 0] - 0.03) < 0.015 and every[0, 1, 0] > 0.06, (few[0], every[0])
    # the missing rate's anchors still hold some dense rows (their given-1 cells are most of the
    # side's cells), so it stays above 0.06, but well below what every cell gives
    assert 0.06 < few[0, 0, 1] < every[0, 0, 1] - 0.03, (few[0], every[0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.booleans())
def test_rates_do_not_depend_on_row_or_class_order_or_blocks(seed, k, pooled):
    rng = np.random.default_rng(seed)
    n = 200
    Y = (rng.random((n, k)) < 0.4).astype(np.uint8)
    P = np.round(rng.random((n, k)), 2)  # rounded: ties
    base = anchor_noise_rates(Y, P, pooled=pooled)
    rows = rng.permutation(n)
    np.testing.assert_allclose(anchor_noise_rates(Y[rows], P[rows], pooled=pooled), base)
    np.testing.assert_allclose(anchor_noise_rates(Y, P, pooled=pooled, block_rows=17), base)
    cols = rng.permutation(k)
    np.testing.assert_allclose(anchor_noise_rates(Y[:, cols], P[:, cols], pooled=pooled), base[cols])
    # each column of P(given | true) sums to 1; each rate is capped by its side's frequency
    np.testing.assert_allclose(base.sum(axis=1), 1.0)
    density = Y.mean() if pooled else Y.mean(axis=0)
    assert np.all(base[:, 1, 0] <= density + 1e-12) and np.all(base[:, 0, 1] <= 1 - density + 1e-12)
    assert np.all((base >= 0) & (base <= 1))
