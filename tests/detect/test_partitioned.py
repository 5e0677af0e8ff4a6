"""The detector over partitions: identical to the in-memory detect for any partitioning (issue 21)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect import METHODS, detect
from cleanpipe.detect.confident import posterior_noise_matrix
from cleanpipe.detect.partitioned import (LocalRunner, detect_partitions, detection_plan,
                                          merge_pair, partition_partial, partition_result, run_plan)
from cleanpipe.errors import InputError


@st.composite
def problems(draw, max_rows=400, max_classes=6):
    """(labels, pred_probs) with planted noise; one in three with heavily tied probabilities."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, max_rows))
    k = draw(st.integers(2, max_classes))
    true = rng.integers(0, k, n)
    if draw(st.booleans()) and draw(st.booleans()):
        # small integer weights: many rows share p_given, margins and scores exactly
        w = rng.integers(0, 3, (n, k)).astype(np.float64)
        w[np.arange(n), true] += 2
        pred_probs = w / w.sum(axis=1, keepdims=True)
    else:
        logits = rng.normal(0.0, draw(st.sampled_from([0.5, 1.0, 2.0])), (n, k))
        logits[np.arange(n), true] += draw(st.sampled_from([0.0, 1.0, 3.0]))
        pred_probs = np.exp(logits)
        pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    if draw(st.booleans()):
        pred_probs = pred_probs.astype(np.float32)
    flip = rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.3]))
    labels = np.where(flip, (true + rng.integers(1, k, n)) % k, true)
    return labels, pred_probs


@st.composite
def boundaries(draw, n):
    """Partition boundaries over ``n`` rows: empty and single-row partitions included."""
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    if draw(st.booleans()) and n > 1:  # a single-row partition somewhere
        i = draw(st.integers(0, n - 1))
        cuts += [i, i + 1]
    return [0, *sorted(cuts), n]


def sources(labels, pred_probs, bounds):
    return [lambda a=a, b=b: (labels[a:b], pred_probs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def assert_same_as_detect(labels, pred_probs, bounds, method, mixture="beta", cache=True):
    ref = detect(labels, pred_probs, method=method, mixture=mixture)
    est, parts = detect_partitions(sources(labels, pred_probs, bounds), pred_probs.shape[1],
                                   method=method, mixture=mixture, cache=cache)
    assert len(parts) == len(bounds) - 1
    for f in ("is_label_issue", "label_score", "p_noisy", "predicted", "loss"):
        got = np.concatenate([getattr(p, f) for p in parts])
        np.testing.assert_array_equal(got, getattr(ref, f), err_msg=f)
    for f in ("thresholds", "confident_joint", "calibrated_joint", "anchor_joint", "noise_matrix",
              "prior", "label_counts"):
        np.testing.assert_array_equal(getattr(est.confident, f), getattr(ref.confident, f), err_msg=f)
    assert est.mix.bounds == ref.mixture.bounds
    np.testing.assert_array_equal(est.mix.grid_posterior, ref.mixture.grid_posterior)
    return est, parts


@settings(max_examples=60, deadline=None)
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_any_partitioning_gives_the_in_memory_result(data, method):
    labels, pred_probs = data.draw(problems())
    bounds = data.draw(boundaries(len(labels)))
    assert_same_as_detect(labels, pred_probs, bounds, method)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_without_a_cache_every_step_recomputes_the_same(data):
    # Spark's way: nothing kept between passes, every step reads its partition again
    labels, pred_probs = data.draw(problems(max_rows=200))
    bounds = data.draw(boundaries(len(labels)))
    method = data.draw(st.sampled_from(METHODS))
    mixture = data.draw(st.sampled_from(["beta", "gaussian"]))
    assert_same_as_detect(labels, pred_probs, bounds, method, mixture=mixture, cache=False)


@pytest.mark.parametrize("method", METHODS)
def test_large_table_many_partitions(method):
    # over 2048 rows inside the clip bounds (the mixture fits its histogram), radix selection
    # over several histogram passes, hundreds of rows per class anchor
    rng = np.random.default_rng(3)
    n, k = 30000, 7
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.5, (n, k))
    logits[np.arange(n), true] += 2.0
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.25, rng.integers(0, k, n), true)
    bounds = [0, 1, 1, 5000, 5001, 17000, 29999, n]
    est, parts = assert_same_as_detect(labels, p.astype(np.float32), bounds, method)
    assert sum(p.is_label_issue.sum() for p in parts) > 1000


def test_every_row_flagged_and_none_flagged():
    # k >= N (the lowest-rank selection is skipped) and k = 0 (no row disagrees)
    labels = np.array([0, 1, 0, 1])
    assert_same_as_detect(labels, np.array([[.1, .9], [.9, .1], [.2, .8], [.8, .2]]), [0, 2, 4],
                          "combined")
    est, parts = assert_same_as_detect(labels, np.array([[.9, .1], [.1, .9], [.8, .2], [.2, .8]]),
                                       [0, 1, 1, 4], "combined")
    assert not any(p.is_label_issue.any() for p in parts)


def test_partition_order_does_not_change_a_rows_result():
    # merges are commutative: the same partitions in another order score every row the same
    rng = np.random.default_rng(1)
    n, k = 3000, 4
    p = rng.dirichlet(np.ones(k) * 0.7, n)
    labels = rng.integers(0, k, n)
    bounds = [0, 700, 701, 2000, 3000]
    src = sources(labels, p, bounds)
    for method in ("combined", "mixture"):
        _, a = detect_partitions(src, k, method=method)
        _, b = detect_partitions(src[::-1], k, method=method)
        for x, y in zip(a, b[::-1]):
            np.testing.assert_array_equal(x.is_label_issue, y.is_label_issue)
            np.testing.assert_array_equal(x.label_score, y.label_score)


def test_tree_reduction_equals_the_left_fold():
    # merge_pair is associative: an engine may reduce its partials as a tree
    rng = np.random.default_rng(2)
    n, k = 5000, 3
    p = rng.dirichlet(np.ones(k), n)
    labels = rng.integers(0, k, n)
    src = sources(labels, p, [0, 100, 1000, 1000, 2500, 4000, 4999, 5000])
    caches = [{} for _ in src]

    def tree(step):
        parts = [partition_partial(step, s, c) for s, c in zip(src, caches)]
        while len(parts) > 1:
            pairs = [merge_pair(step, parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
            parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
        return parts[0]

    for method in METHODS:
        caches = [{} for _ in src]
        est = run_plan(detection_plan(k, method=method), tree)
        runner = LocalRunner(src)
        ref = run_plan(detection_plan(k, method=method), runner.merged)
        got = [partition_result(est, s, c, i) for i, (s, c) in enumerate(zip(src, caches))]
        for x, y in zip(got, runner.results(ref)):
            np.testing.assert_array_equal(x.is_label_issue, y.is_label_issue)
        assert est.k == ref.k
        np.testing.assert_array_equal(est.confident.anchor_joint, ref.confident.anchor_joint)


def test_no_rows_at_all_is_an_input_error():
    empty = [lambda: (np.zeros(0, np.int64), np.zeros((0, 3)))] * 2
    with pytest.raises(InputError, match="no rows"):
        detect_partitions(empty, 3)


def test_a_bad_partition_is_an_input_error():
    good = (np.array([0, 1]), np.array([[.6, .4], [.3, .7]]))
    bad = (np.array([0, 2]), np.array([[.6, .4], [.3, .7]]))
    with pytest.raises(InputError, match="class index 2"):
        detect_partitions([lambda: good, lambda: bad], 2)
    wide = (np.array([0]), np.array([[.6, .3, .1]]))
    with pytest.raises(InputError, match="2 probability columns"):
        detect_partitions([lambda: good, lambda: wide], 2)


def test_steps_and_estimates_are_small_and_picklable():
    import pickle
    rng = np.random.default_rng(0)
    n, k = 20000, 5
    p = rng.dirichlet(np.ones(k), n)
    labels = rng.integers(0, k, n)
    src = sources(labels, p, [0, 10000, n])
    runner = LocalRunner(src)
    plan = detection_plan(k)
    step = next(plan)
    sizes = []
    try:
        while True:
            sizes.append(len(pickle.dumps(step)))
            step = plan.send(runner.merged(pickle.loads(pickle.dumps(step))))
    except StopIteration as stop:
        est = stop.value
    assert max(sizes) < 200_000  # nothing per row travels with a step
    assert len(pickle.dumps(est)) < 200_000
    assert dataclasses.is_dataclass(est)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_shrunk_pair_pattern_any_partitioning(data):
    # Pair noise that the anchors' test accepts, so label_score conditions on the class-conditional
    # matrix shrunk towards the symmetric one (detect/shrinkage.py): still the in-memory result.
    rng = np.random.default_rng(3)
    k, n = 4, 800
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 4.0
    pred_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = true.copy()
    flip = rng.random(n) < 0.3
    labels[flip] = (true[flip] + 1) % k
    ref = detect(labels, pred_probs)
    _, class_conditional = posterior_noise_matrix(ref.confident.calibrated_joint,
                                                  pattern_joint=ref.confident.anchor_joint)
    assert class_conditional
    assert_same_as_detect(labels, pred_probs, data.draw(boundaries(n)), "combined")
