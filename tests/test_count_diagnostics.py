"""benchmarks/count_diagnostics.py: its ``base`` count is the shipped rule's, and its calibration test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import count_diagnostics as cd  # noqa: E402

from cleanpipe.detect.combine import detect  # noqa: E402


def _planted(n=1500, k=4, rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = true.copy()
    flip = rng.random(n) < rate
    labels[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    return labels, probs


def test_base_count_is_the_rules():
    labels, probs = _planted()
    inner = cd.internals(labels, probs)
    det = detect(labels, probs)
    counts = cd.variant_counts(inner, probs)
    # the rule flags its k lowest-ranked rows among the disagreeing ones (ties aside: none here)
    assert counts["base"] >= int(det.is_label_issue.sum()) > 0
    assert counts["alldis"] == int((probs.argmax(axis=1) != labels).sum())


def test_calibration_test_known_answer():
    # temperature 1: E0 = (1 - 0.8) + (1 - 0.6) = 0.6; sum m (1 - m) = 0.16 + 0.24 < 1, so sd = 1
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    inner = {"temperature": 1.0, "disagrees": np.array([True, True])}
    d, e0, z = cd.calibration_test(inner, probs)
    assert d == 2
    np.testing.assert_allclose([e0, z], [0.6, 1.4])
