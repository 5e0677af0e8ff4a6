"""Probabilities recalibrated per number of other given tags: known answers and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect._validate import iter_blocks
from cleanpipe.detect.anchors import anchor_noise_rates
from cleanpipe.detect.multilabel import _posterior_pass, detect_multilabel, flag_top_expected
from cleanpipe.detect.tag_calibration import (TagCountCalibrated, _platt, _sigmoid,
                                              fit_tag_count_calibration)


def test_platt_recovers_a_known_map():
    # binned logits with the exact expected counts of sigmoid(-0.5 + 2 z)
    z = np.linspace(-4, 4, 81)
    n = np.full_like(z, 1000.0)
    a, b = _platt(z, n, n * _sigmoid(-0.5 + 2.0 * z), ridge=0.0)
    assert a == pytest.approx(-0.5, abs=1e-6) and b == pytest.approx(2.0, abs=1e-6)
    # a bin-less stratum keeps the identity
    assert _platt(z, np.zeros_like(z), np.zeros_like(z)) == (0.0, 1.0)


def _two_strata(seed, n=40_000, slopes=(2.0, 0.5)):
    """Two classes. Class 1 is a coin (p = .5) whose given value sets the stratum of class 0's cell:
    stratum 0 (class 1 absent) where class 0's tag follows sigmoid(2 z), stratum 1 where it follows
    sigmoid(z / 2); the given probability is sigmoid(z) in both."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y1 = rng.random(n) < 0.5
    y0 = rng.random(n) < _sigmoid(np.where(y1, slopes[1], slopes[0]) * z)
    Y = np.stack([y0, y1], axis=1).astype(np.uint8)
    P = np.stack([_sigmoid(z), np.full(n, 0.5)], axis=1)
    return Y, P


def test_each_stratum_gets_its_own_slope():
    Y, P = _two_strata(0)
    cal = fit_tag_count_calibration(Y, P)
    assert cal.cap == 1
    # class 1's cells (z = 0, calibrated) only pin the intercepts near 0
    assert cal.b[0] == pytest.approx(2.0, abs=0.15) and cal.b[1] == pytest.approx(0.5, abs=0.1)
    np.testing.assert_allclose(cal.a, 0.0, atol=0.1)
    # a stratum's map never uses the cell's own tag: class 0's stratum is class 1's given tag only
    np.testing.assert_array_equal(cal.strata(Y)[:, 0], Y[:, 1])


def test_calibrated_probabilities_are_left_almost_as_they_are():
    rng = np.random.default_rng(1)
    P = rng.uniform(0.02, 0.98, (20_000, 4))
    Y = (rng.random(P.shape) < P).astype(np.uint8)
    cal = fit_tag_count_calibration(Y, P)
    np.testing.assert_allclose(cal.apply(Y, P), P, atol=0.03)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_view_equals_the_whole_array_and_keeps_the_order_within_a_stratum(seed, k):
    rng = np.random.default_rng(seed)
    n = 300
    P = rng.random((n, k))
    Y = (rng.random((n, k)) < P).astype(np.uint8)
    cal = fit_tag_count_calibration(Y, P, min_cells=50)
    view = TagCountCalibrated(Y, P, cal)
    whole = cal.apply(Y, P)
    assert view.shape == P.shape and np.all((whole >= 0) & (whole <= 1))
    np.testing.assert_allclose(np.vstack([b for _, _, b in iter_blocks(view, 37)]), whole)
    # permuting the rows permutes the result (the fit sees the same cells)
    rows = rng.permutation(n)
    np.testing.assert_allclose(fit_tag_count_calibration(Y[rows], P[rows], min_cells=50).apply(Y[rows], P[rows]),
                               whole[rows])
    # within a stratum a map with b > 0 keeps the order of the cells
    s = cal.strata(Y)
    for v in range(cal.cap + 1):
        m = s == v
        if cal.b[v] > 0 and m.sum() > 1:
            order = np.argsort(P[m], kind="stable")
            assert np.all(np.diff(whole[m][order]) >= -1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_recalibration_brings_the_count_to_the_wrong_rows(seed):
    from test_anchors import _many_tags_table

    # a model as sure of tags in dense rows as in sparse ones, where it is right only 80% of the
    # time: the raw probabilities over-count the flips; recalibrated per number of other tags
    # (the dense rows' maps flatten them) the count follows the wrong rows
    Y, P, wrong = _many_tags_table(seed, n=8000)
    det = detect_multilabel(Y, P)
    assert det.calibration.b[-1] < 0.6 < 0.9 < det.calibration.b[0]
    assert 1 / 1.5 <= det.is_label_issue.sum() / wrong.sum() <= 1.5, (det.is_label_issue.sum(), wrong.sum())
    raw, _ = _posterior_pass(Y, P, anchor_noise_rates(Y, P), 4096)
    assert flag_top_expected(raw).sum() > 1.5 * wrong.sum()
