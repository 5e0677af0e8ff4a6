"""The multi-label detector over partitions: identical to detect_multilabel for any partitioning (issue 21)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect import partial_codec
from cleanpipe.detect.multilabel import MULTILABEL_METHODS, detect_multilabel
from cleanpipe.detect.partitioned import (LocalRunner, merge_pair, partition_partial,
                                          partition_result, run_plan)
from cleanpipe.detect.partitioned_multilabel import (detect_multilabel_partitions,
                                                     multilabel_detection_plan)
from cleanpipe.errors import InputError


@st.composite
def tag_problems(draw, max_rows=300, max_classes=6):
    """(tags, probabilities) with planted missing and spurious tags; some heavily tied."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, max_rows))
    k = draw(st.integers(2, max_classes))
    true = rng.random((n, k)) < draw(st.sampled_from([0.1, 0.3, 0.6]))
    signal = draw(st.sampled_from([0.2, 0.5, 0.8]))
    P = np.clip(true * signal + rng.normal(0.5 - signal / 2, 0.25, (n, k)), 0.0, 1.0)
    if draw(st.booleans()):  # a few distinct values: many tied cells, tails and p_error
        P = np.round(P * 4) / 4
    if draw(st.booleans()):
        P = P.astype(np.float32)
    flip = rng.random((n, k)) < draw(st.sampled_from([0.0, 0.05, 0.2]))
    Y = (true ^ flip).astype(np.uint8)
    return Y, P


@st.composite
def boundaries(draw, n):
    """Partition boundaries over ``n`` rows: empty and single-row partitions included."""
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    if draw(st.booleans()) and n > 1:
        i = draw(st.integers(0, n - 1))
        cuts += [i, i + 1]
    return [0, *sorted(cuts), n]


def sources(Y, P, bounds):
    return [lambda a=a, b=b: (Y[a:b], P[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def assert_same_as_in_memory(Y, P, bounds, method, mixture="beta", cache=True):
    ref = detect_multilabel(Y, P, method=method, mixture=mixture)
    est, parts = detect_multilabel_partitions(sources(Y, P, bounds), Y.shape[1], method=method,
                                              mixture=mixture, cache=cache)
    for name in ("is_label_issue", "label_score", "p_error", "p_noisy", "loss", "predicted"):
        got = np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(got, getattr(ref, name), err_msg=name)
    offsets = np.array(bounds[:-1])
    rows = np.concatenate([p.issue_rows + o for p, o in zip(parts, offsets)])
    np.testing.assert_array_equal(rows, ref.issue_rows)
    np.testing.assert_array_equal(np.concatenate([p.issue_classes for p in parts]), ref.issue_classes)
    np.testing.assert_array_equal(np.concatenate([p.issue_given for p in parts]), ref.issue_given)
    for spurious in (False, True):  # the suspect lists, partition by partition
        _, ref_codes = ref.suspects(spurious=spurious)
        codes = np.concatenate([p.suspects(spurious=spurious)[1] for p in parts])
        np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(est.noise_matrix, ref.noise_matrix)
    np.testing.assert_array_equal(est.expected_wrong, ref.expected_wrong)
    assert est.expected_issues == ref.expected_issues
    cl = ref.confident
    for name in ("thresholds", "confident_joint", "calibrated_joint", "prior", "noise_matrix",
                 "label_counts"):
        np.testing.assert_array_equal(getattr(est.confident, name), getattr(cl, name), err_msg=name)
    np.testing.assert_array_equal(est.calibration.a, ref.calibration.a)
    np.testing.assert_array_equal(est.calibration.b, ref.calibration.b)
    assert est.mix.bounds == ref.mixture.bounds
    return est, parts, ref


@settings(max_examples=60, deadline=None)
@given(data=st.data(), method=st.sampled_from(MULTILABEL_METHODS))
def test_any_partitioning_gives_the_in_memory_result(data, method):
    Y, P = data.draw(tag_problems())
    bounds = data.draw(boundaries(len(Y)))
    mixture = data.draw(st.sampled_from(["beta", "gaussian"]))
    assert_same_as_in_memory(Y, P, bounds, method, mixture, cache=data.draw(st.booleans()))


@pytest.mark.parametrize("method", MULTILABEL_METHODS)
def test_a_larger_table_in_uneven_partitions(method):
    # enough cells for several calibration strata, radix passes beyond the gather and real tails
    rng = np.random.default_rng(7)
    n, k = 6000, 8
    true = rng.random((n, k)) < 0.25
    P = np.clip(true * 0.6 + rng.normal(0.2, 0.2, (n, k)), 0.0, 1.0)
    Y = (true ^ (rng.random((n, k)) < 0.05)).astype(np.uint8)
    est, _, ref = assert_same_as_in_memory(Y, P, [0, 1, 1, 2500, 2501, 4000, 6000], method)
    assert ref.is_label_issue.any()


def test_a_known_answer():
    # row 0's two tags were swapped: it alone is flagged, tag 0 missing and tag 1 spurious
    Y = np.tile([[1, 0], [0, 1]], (10, 1))
    P = np.tile([[.9, .1], [.1, .9]], (10, 1))
    Y[0] = [0, 1]
    _, parts = detect_multilabel_partitions(sources(Y, P, [0, 3, 3, 20]), 2)
    flags = np.concatenate([p.is_label_issue for p in parts])
    assert np.flatnonzero(flags).tolist() == [0]
    assert parts[0].suspects(spurious=False)[1].tolist() == [0]
    assert parts[0].suspects(spurious=True)[1].tolist() == [1]
    assert parts[1].is_label_issue.shape == (0,)


def _equal(a, b) -> bool:
    """Deep equality of two partials, bit for bit (arrays: dtype and values; NaN-free)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if dataclasses.is_dataclass(a):
        return all(_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=25, deadline=None)
@given(problem=tag_problems(max_rows=120), method=st.sampled_from(MULTILABEL_METHODS),
       cuts=st.lists(st.integers(0, 120), min_size=2, max_size=2))
def test_merges_are_associative_and_partials_survive_the_codec(problem, method, cuts):
    Y, P = problem
    a, b = sorted(min(c, len(Y)) for c in cuts)
    srcs = sources(Y, P, [0, a, b, len(Y)])
    runner = LocalRunner(srcs)

    def merged(step):
        parts = [partial_codec.loads(partial_codec.dumps(partition_partial(step, s, c)))
                 for s, c in zip(runner.sources, runner.caches)]
        left = merge_pair(step, merge_pair(step, parts[0], parts[1]), parts[2])
        right = merge_pair(step, parts[0], merge_pair(step, parts[1], parts[2]))
        assert _equal(left, right), step.kind
        return functools.reduce(functools.partial(merge_pair, step), parts)

    est = run_plan(multilabel_detection_plan(Y.shape[1], method=method), merged)
    ref = detect_multilabel(Y, P, method=method)
    flags = np.concatenate([partition_result(est, s, c, i).is_label_issue
                            for i, (s, c) in enumerate(zip(runner.sources, runner.caches))])
    np.testing.assert_array_equal(flags, ref.is_label_issue)


def test_no_rows_and_bad_partitions_are_one_line_errors():
    empty = [lambda: (np.zeros((0, 3), np.uint8), np.zeros((0, 3)))]
    with pytest.raises(InputError, match="no rows"):
        detect_multilabel_partitions(empty, 3)
    bad = [lambda: (np.array([[2, 0, 1]]), np.full((1, 3), 0.5))]
    with pytest.raises(InputError, match="other than 0 and 1"):
        detect_multilabel_partitions(bad, 3)
    wide = [lambda: (np.array([[1, 0]]), np.full((1, 3), 0.5))]
    with pytest.raises(InputError, match="shape"):
        detect_multilabel_partitions(wide, 3)


@pytest.mark.parametrize("method", MULTILABEL_METHODS)
def test_selections_by_histogram_passes(monkeypatch, method):
    # few keys gathered a pass: every selection (loss percentiles, anchor tails, quotas, the
    # top-m cut) narrows by 16-bit digits over several passes, as on tables of millions of rows
    from cleanpipe.detect import partitioned
    from cleanpipe.detect.radix import Selection
    monkeypatch.setattr(partitioned, "Selection", functools.partial(Selection, gather_rows=40))
    rng = np.random.default_rng(11)
    n, k = 1500, 5
    true = rng.random((n, k)) < 0.3
    P = np.clip(true * 0.6 + rng.normal(0.2, 0.2, (n, k)), 0.0, 1.0)
    P[rng.random((n, k)) < 0.3] = 0.5  # a block of tied cells at every edge
    Y = (true ^ (rng.random((n, k)) < 0.05)).astype(np.uint8)
    assert_same_as_in_memory(Y, P, [0, 300, 300, 301, 1100, 1500], method)
