"""What a partition keeps between the detector's passes: narrow, bounded, and never a different answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cleanpipe.detect import METHODS, detect
from cleanpipe.detect.confident import confident_learning
from cleanpipe.detect.multilabel import MULTILABEL_METHODS, candidate_cells, detect_multilabel
from cleanpipe.detect.partitioned import (LocalRunner, detection_plan, narrowest, run_plan,
                                          widened)
from cleanpipe.detect.partitioned_multilabel import multilabel_detection_plan

from test_partitioned import problems, sources


def test_narrowest_known_answers():
    cases = [
        (np.array([0, 9, 3]), np.int8),
        (np.array([-129, 5]), np.int16),
        (np.array([-1, 40000]), np.int32),
        (np.array([2**40]), np.int64),
        (np.array([0, 255], np.uint8), np.uint8),
        (np.array([0, 40000], np.uint32), np.uint16),
        (np.array([-5], np.int8), np.int8),
        (np.array([], np.int64), np.int8),
        (np.array([0.5, 0.25, -0.0, np.float32(0.1)]), np.float32),
        (np.array([0.1]), np.float64),          # 0.1 is not a float32 value
        (np.array([1e-50]), np.float64),        # below float32's range: would become 0
        (np.array([1e300]), np.float64),        # above it: would become inf
        (np.array([1.5], np.float32), np.float32),
        (np.array([True, False]), np.bool_),
    ]
    for values, dtype in cases:
        got = narrowest(values)
        assert got.dtype == dtype, (values, got.dtype)
        back = widened((got, values.dtype))
        assert back.dtype == values.dtype
        assert back.tobytes() == values.tobytes()
    assert np.signbit(narrowest(np.array([-0.0]))[0])


@settings(max_examples=200, deadline=None)
@given(values=st.one_of(
    hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(allow_nan=False)),
    hnp.arrays(np.float64, st.integers(0, 20),
               elements=st.floats(width=32, allow_nan=False).map(float)),
    hnp.arrays(st.sampled_from([np.int64, np.int32, np.uint16]), st.integers(0, 20))))
def test_narrowest_round_trips_bit_for_bit_and_never_widens(values):
    got = narrowest(values)
    assert got.dtype.itemsize <= values.dtype.itemsize
    assert widened((got, values.dtype)).tobytes() == values.tobytes()


def cache_bytes(caches) -> int:
    """Bytes of every array the caches hold (each kept entry is ``(array, dtype)``)."""
    total = 0
    for cache in caches:
        for value in (cache or {}).values():
            assert isinstance(value, tuple) and isinstance(value[0], np.ndarray)
            total += value[0].nbytes
    return total


def peak_cache(plan, runner) -> int:
    peak = [0]

    def merged(step):
        out = runner.merged(step)
        peak[0] = max(peak[0], cache_bytes(runner.caches))
        return out

    est = run_plan(plan, merged)
    runner.results(est)
    return max(peak[0], cache_bytes(runner.caches))


def table(n, k, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 2.0
    p = np.exp(logits)
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = np.where(rng.random(n) < 0.1, (true + rng.integers(1, k, n)) % k, true)
    return labels, p


@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("method", METHODS)
def test_single_label_cache_per_row_is_bounded(k, method):
    """Float32 probabilities, 4 partitions: the cache's bytes (nbytes of what it holds, at its
    largest over the passes) stay within what the kept arrays need in their narrow dtypes."""
    n = 40_000
    labels, p = table(n, k)
    cl = confident_learning(labels, p, k)
    n_cells = len(cl.cell_rows)
    n_pairs = len(cl.pair_rows)
    bounds = [0, 5_000, 20_000, 20_000, n]
    peak = peak_cache(detection_plan(k, method=method), LocalRunner(sources(labels, p, bounds)))
    # always: labels 1, loss 4 (float32), arg-max 1, its probability 4 (float32)
    base = 10 * n
    bound = {
        # cells: row 2-4 (int16 in these partitions), key 1-2, margin 8; then pruned 1, rank_by 8
        # and the disagreeing rows' error probability 8
        "combined": max(base + 14 * n_cells, 15 * n + 8 * n_pairs),
        # pairs: row 2-4, class 1, margin 8
        "noise_rate": base + 13 * n_pairs,
        "both": base + 13 * n_pairs + 8 * n,  # and p_given, for the per-class selection
        "per_class": base + 8 * n,
        "mixture": base,
    }[method]
    assert peak <= bound, (peak / n, bound / n)
    # the cache of the commit before this one: ~71-91 bytes a row at these K (combined)
    assert peak / n < {"combined": 25, "noise_rate": 20, "both": 28, "per_class": 18,
                       "mixture": 10.5}[method]


@pytest.mark.parametrize("method", MULTILABEL_METHODS)
def test_multilabel_cache_per_row_is_bounded(method):
    n, k = 20_000, 8
    rng = np.random.default_rng(1)
    true = rng.random((n, k)) < 0.2
    p = np.clip(true * 0.55 + rng.normal(0.2, 0.2, (n, k)), 0.0, 1.0).astype(np.float32)
    y = (true ^ (rng.random((n, k)) < 0.02)).astype(np.uint8)
    n_cells = len(candidate_cells(y, p)[0])
    bounds = [0, 3_000, 3_000, 12_000, n]
    runner = LocalRunner([lambda a=a, b=b: (y[a:b], p[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    peak = peak_cache(multilabel_detection_plan(k, method=method), runner)
    # loss 8 and p_error 8 a row; the candidate cells (row 2-4, class 1, given 1, and for the
    # noise-rate selection the cell's probability 4) where a later pass reads them
    per_cell = {"posterior": 0, "mixture": 6, "noise_rate": 10, "both": 10}[method]
    assert peak <= 16 * n + per_cell * n_cells, (peak / n, n_cells / n)


class ForgetfulRunner(LocalRunner):
    """A LocalRunner whose caches lose random entries between steps (a worker restarted, a
    partial reused from disk without its cache): every entry must be recomputable."""

    def __init__(self, sources, rng):
        super().__init__(sources)
        self.rng = rng

    def merged(self, step):
        for cache in self.caches:
            for name in list(cache):
                if self.rng.random() < 0.3:
                    del cache[name]
        return super().merged(step)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_a_cache_that_forgets_gives_the_in_memory_result(data, method):
    labels, p = data.draw(problems())
    n = len(labels)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=5)))
    bounds = [0, *cuts, n]
    runner = ForgetfulRunner(sources(labels, p, bounds),
                             np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))
    est = run_plan(detection_plan(p.shape[1], method=method), runner.merged)
    parts = runner.results(est)
    ref = detect(labels, p, method=method)
    for f in ("is_label_issue", "label_score", "p_noisy", "predicted", "loss"):
        np.testing.assert_array_equal(np.concatenate([getattr(r, f) for r in parts]),
                                      getattr(ref, f), err_msg=f)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(MULTILABEL_METHODS),
       f32=st.booleans())
def test_a_multilabel_cache_that_forgets_gives_the_in_memory_result(seed, method, f32):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 200)), int(rng.integers(2, 5))
    true = rng.random((n, k)) < 0.3
    p = np.clip(true * 0.5 + rng.normal(0.25, 0.25, (n, k)), 0.0, 1.0)
    p = p.astype(np.float32) if f32 else p
    y = (true ^ (rng.random((n, k)) < 0.1)).astype(np.uint8)
    bounds = [0, *sorted(rng.integers(0, n + 1, 3)), n]
    runner = ForgetfulRunner([lambda a=a, b=b: (y[a:b], p[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                             np.random.default_rng(seed + 1))
    est = run_plan(multilabel_detection_plan(k, method=method), runner.merged)
    parts = runner.results(est)
    ref = detect_multilabel(y, p, method=method)
    for f in ("is_label_issue", "label_score", "p_noisy"):
        np.testing.assert_array_equal(np.concatenate([getattr(r, f) for r in parts]),
                                      getattr(ref, f), err_msg=f)
