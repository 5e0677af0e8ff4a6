"""Multi-label sums and counts merged over partitions equal the in-memory estimates (issue 21)."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect.anchors import few_tags_counts, few_tags_limits, few_tags_limits_from_counts
from cleanpipe.detect.exactsum import ExactSums
from cleanpipe.detect.multilabel import (binary_threshold_sums, binary_thresholds,
                                         multilabel_confident_counts, multilabel_confident_learning,
                                         multilabel_estimates)
from cleanpipe.detect.confident import thresholds_from_sums


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), k=st.integers(1, 6),
       cuts=st.lists(st.integers(0, 300), max_size=6), f32=st.booleans())
def test_partitions_merge_to_the_in_memory_estimates(seed, n, k, cuts, f32):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, k)) < 0.3).astype(np.int8)
    P = np.clip(Y * 0.6 + rng.normal(0.2, 0.25, (n, k)), 0.0, 1.0)
    P = P.astype(np.float32) if f32 else P
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    parts = [(Y[a:b], P[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # pass 1: class counts and exact threshold sums; the few-tags counts
    sums = functools.reduce(ExactSums.merge, [binary_threshold_sums(y, p) for y, p in parts])
    pos = sum(y.sum(axis=0, dtype=np.int64) for y, _ in parts)
    counts = np.stack([n - pos, pos], axis=1)
    thresholds = thresholds_from_sums(counts, sums.totals().reshape(k, 2))
    np.testing.assert_array_equal(thresholds, binary_thresholds(Y, P))
    tags = sum(few_tags_counts(y) for y, _ in parts)
    assert few_tags_limits_from_counts(tags) == few_tags_limits(Y)
    # pass 2: the confident joints
    cj = sum(multilabel_confident_counts(y, p, thresholds) for y, p in parts).reshape(k, 2, 2)
    ref = multilabel_confident_learning(Y, P)
    np.testing.assert_array_equal(cj, ref.confident_joint)
    calibrated, prior, noise = multilabel_estimates(counts, cj, n)
    np.testing.assert_array_equal(calibrated, ref.calibrated_joint)
    np.testing.assert_array_equal(prior, ref.prior)
    np.testing.assert_array_equal(noise, ref.noise_matrix)
