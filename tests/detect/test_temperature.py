"""Tests for cleanpipe.detect.temperature: the temperature fit and the count's error probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect import detect
from cleanpipe.detect.combine import expected_f1_count
from cleanpipe.detect.temperature import count_error_prob, fit_sample, fit_temperature


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_problem(n, k, seed, sharpen=1.0, spread=2.0):
    """Labels drawn from softmax(logits); the probabilities returned are softmax(sharpen * logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, spread, (n, k))
    true_p = _softmax(logits)
    labels = (rng.random(n)[:, None] > np.cumsum(true_p, axis=1)).sum(axis=1)
    return np.minimum(labels, k - 1), _softmax(sharpen * logits)


@pytest.mark.parametrize("sharpen", [1.0, 3.0, 0.5])
def test_fit_temperature_recovers_the_planted_miscalibration(sharpen):
    # probabilities sharpened by s are fixed by T = s: softmax(log p / s) = the labels' own law
    labels, probs = _calibrated_problem(20000, 4, seed=0, sharpen=sharpen)
    assert fit_temperature(labels, probs) == pytest.approx(sharpen, rel=0.08)


def test_fit_temperature_on_a_subset_of_rows_is_close():
    labels, probs = _calibrated_problem(20000, 4, seed=1, sharpen=2.0)
    whole = fit_temperature(labels, probs)
    part = fit_temperature(labels, probs, max_cells=8000)  # about one row in ten
    assert part == pytest.approx(whole, rel=0.15)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), cut=st.integers(0, 5000), max_cells=st.sampled_from([100, 2000, 8000]))
def test_fit_sample_depends_on_a_rows_values_not_its_position(seed, cut, max_cells):
    # a partition picks its sample rows without knowing where it starts (issue 21)
    labels, probs = _calibrated_problem(5000, 4, seed)
    p_given = probs[np.arange(len(labels)), labels]
    whole = fit_sample(labels, p_given, len(labels), 4, max_cells)
    parts = [fit_sample(labels[a:b], p_given[a:b], len(labels), 4, max_cells)
             for a, b in ((0, cut), (cut, len(labels)))]
    assert np.array_equal(whole, np.concatenate(parts))
    # about max_cells / k rows (binomial: 5 sd)
    expected = max_cells / 4
    assert abs(whole.sum() - expected) <= 5 * np.sqrt(expected) + 1


def test_fit_sample_takes_every_row_of_a_small_table():
    labels, probs = _calibrated_problem(100, 3, seed=0)
    assert fit_sample(labels, probs[np.arange(100), labels], 100, 3, 300).all()


def test_fit_temperature_degenerate_inputs():
    probs = np.array([[0.7, 0.3], [0.6, 0.4]])
    assert fit_temperature(np.array([0, 0]), probs) == 1.0          # one class given
    assert fit_temperature(np.zeros(0, dtype=int), np.zeros((0, 2))) == 1.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), block_rows=st.sampled_from([1, 5, 64]), k=st.integers(2, 5))
def test_fit_temperature_blocks_and_row_order(seed, block_rows, k):
    labels, probs = _calibrated_problem(60, k, seed, sharpen=1.5)
    got = fit_temperature(labels, probs)
    assert fit_temperature(labels, probs, block_rows=block_rows) == pytest.approx(got, rel=1e-9)
    perm = np.random.default_rng(seed).permutation(len(labels))
    assert fit_temperature(labels[perm], probs[perm]) == pytest.approx(got, rel=1e-6)
    assert np.exp(-3) - 1e-9 <= got <= np.exp(3) + 1e-9


def test_count_error_prob_binary_known_answer():
    """Symmetric binary noise r: pi_g = (p_g - r) / (1 - 2r) clipped to [0, 1],
    q = 1 - (1 - r) pi_g / p(given).

    ``p(given) = (1 - r) pi_g + r (1 - pi_g)``: ``p_g`` itself wherever ``pi_g`` needs no clipping.
    """
    r = 0.2
    t = np.array([[1 - r, r], [r, 1 - r]])
    p_given = np.array([0.9, 0.5, 0.3, 0.1])
    probs = np.stack([p_given, 1 - p_given], axis=1)
    q = count_error_prob(np.zeros(4, dtype=int), probs, t, 1.0)
    pi = np.clip((p_given - r) / (1 - 2 * r), 0, 1)
    expected = 1 - (1 - r) * pi / ((1 - r) * pi + r * (1 - pi))
    np.testing.assert_allclose(q, expected, atol=1e-12)
    np.testing.assert_allclose(q[1:3], 1 - (1 - r) * pi[1:3] / p_given[1:3], atol=1e-12)
    assert q[-1] == 1.0  # p_given below the noise floor r: the label has no support left


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(2, 6), rate=st.floats(0.0, 0.5),
       temperature=st.floats(0.2, 5.0), block_rows=st.sampled_from([1, 3, 64]))
def test_count_error_prob_range_blocks_and_permutation(seed, k, rate, temperature, block_rows):
    labels, probs = _calibrated_problem(40, k, seed)
    t = np.where(np.eye(k, dtype=bool), 1 - rate * (k - 1) / k, rate / k)  # invertible for rate < 1
    q = count_error_prob(labels, probs, t, temperature)
    assert q.shape == labels.shape and np.all((q >= 0) & (q <= 1))
    np.testing.assert_allclose(count_error_prob(labels, probs, t, temperature, block_rows=block_rows), q)
    perm = np.random.default_rng(seed).permutation(len(labels))
    np.testing.assert_allclose(count_error_prob(labels[perm], probs[perm], t, temperature), q[perm])
    # float32 probabilities give the same answer to float32 precision
    np.testing.assert_allclose(count_error_prob(labels, probs.astype(np.float32), t, temperature), q,
                               atol=1e-4)


def test_count_error_prob_without_noise_is_zero_where_the_label_has_support():
    labels, probs = _calibrated_problem(100, 3, seed=3)
    q = count_error_prob(labels, probs, np.eye(3), 1.0)
    np.testing.assert_allclose(q, 0.0, atol=1e-12)


def test_overconfident_model_does_not_inflate_the_count():
    """A model sure of its own mistakes: the combined count tracks the planted errors, not them.

    Clean labels drawn from the model's law (mostly its arg-max), 1% planted flips, probabilities
    sharpened 4x: every row the model gets wrong then looks like a certain label error to the
    raw posterior.
    """
    n, k = 20000, 5
    labels, probs = _calibrated_problem(n, k, seed=4, sharpen=4.0, spread=8.0)
    rng = np.random.default_rng(4)
    flip = rng.random(n) < 0.01
    noisy = labels.copy()
    noisy[flip] = (labels[flip] + rng.integers(1, k, flip.sum())) % k
    found = detect(noisy, probs)
    assert found.is_label_issue.sum() <= 2 * flip.sum()
    assert (found.is_label_issue & flip).sum() >= 0.75 * flip.sum()
    # the count read off the raw posterior (before the temperature): several times the planted flips
    disagrees = found.predicted != noisy
    assert expected_f1_count(1 - found.label_score, disagrees) > 4 * flip.sum()
