"""Partials stored without pickle (cleanpipe.detect.partial_codec): round trips, and refusals."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect import METHODS, detect
from cleanpipe.detect import partial_codec
from cleanpipe.detect.partitioned import (LocalRunner, detection_plan, merge_pair, partition_partial,
                                          run_plan)


def _problem(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.5, (n, k))
    logits[np.arange(n), true] += 2.0
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), true)
    return labels, p


@pytest.mark.parametrize("method", METHODS)
def test_every_steps_partials_survive_the_round_trip(method):
    # each partition's partial goes through bytes before it is merged, as a resumed run reads it
    labels, p = _problem()
    bounds = [0, 0, 700, 701, 2000, len(labels)]
    runner = LocalRunner([lambda a=a, b=b: (labels[a:b], p[a:b]) for a, b in zip(bounds, bounds[1:])])
    kinds = set()

    def merged(step):
        kinds.add(step.kind)
        out = None
        for src, cache in zip(runner.sources, runner.caches):
            part = partial_codec.loads(partial_codec.dumps(partition_partial(step, src, cache)))
            out = part if out is None else merge_pair(step, out, part)
        return out

    est = run_plan(detection_plan(p.shape[1], method=method), merged)
    got = np.concatenate([r.is_label_issue for r in runner.results(est)])
    ref = detect(labels, p, method=method)
    assert np.array_equal(got, ref.is_label_issue)
    assert {"totals", "select", "hist", "confident", "anchors", "quality"} <= kinds


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**62, 2**62),
                    st.floats(allow_nan=False), st.text(max_size=5))
arrays = st.sampled_from([np.int64, np.float32, np.float64, np.uint64, np.bool_]).flatmap(
    lambda dt: st.lists(st.integers(0, 2**31), max_size=6).map(lambda v: np.array(v).astype(dt)))
nests = st.recursive(st.one_of(scalars, arrays),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.lists(inner, max_size=3).map(tuple),
                                             st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                     max_leaves=12)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(obj=nests)
def test_nests_of_arrays_and_scalars_round_trip(obj):
    assert _same(partial_codec.loads(partial_codec.dumps(obj)), obj)


class _Sneaky:
    ran = False

    def __reduce__(self):
        return (setattr, (_Sneaky, "ran", True))


def test_a_pickle_is_refused_and_never_run():
    with pytest.raises(ValueError):
        partial_codec.loads(pickle.dumps(_Sneaky()))
    buf = io.BytesIO()
    np.save(buf, np.array([_Sneaky()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        partial_codec.loads(buf.getvalue())
    assert not _Sneaky.ran


def test_only_the_detectors_own_classes_are_built():
    tree = {"t": "dc", "c": "Popen", "f": {}}
    buf = io.BytesIO()
    np.savez(buf, __tree__=np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match="Popen"):
        partial_codec.loads(buf.getvalue())
    with pytest.raises(TypeError):
        partial_codec.dumps({"x": object()})
    with pytest.raises(ValueError):
        partial_codec.loads(b"truncated")
