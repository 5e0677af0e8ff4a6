"""Tests for cleanpipe.detect.confident: known answers, oracles, planted noise and properties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cleanpipe.detect.confident import (
    calibrate_confident_joint,
    MAX_COMPETITORS,
    class_thresholds,
    competitors,
    confident_learning,
    flags_by_cell_margin,
    flags_by_class,
    flags_by_noise_rate,
    joint_prior_noise,
    prune_counts,
    round_preserving_row_totals,
    top_per_group,
)

SETTINGS = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------------------------
# Known answers on a tiny hand-checked example
# --------------------------------------------------------------------------------------------

@pytest.fixture
def hand_example():
    """11 rows, 3 classes; every number below is checked by hand in the comments of the tests.

    Thresholds t_j = mean(p_j | given = j):
      t0 = (0.90 + 0.80 + 0.20 + 0.60 + 0.50) / 5 = 3.0 / 5 = 0.6
      t1 = (0.80 + 0.70 + 0.00) / 3                 = 1.5 / 3 = 0.5
      t2 = (0.42 + 0.60 + 0.18) / 3                 = 1.2 / 3 = 0.4

    Confident classes per row ({k : p_k >= t_k}) and the cell of C[given, true] it counts in:
      r0  given 0 [0.90 0.10 0.00]  {0}    -> C[0, 0]
      r1  given 0 [0.80 0.10 0.10]  {0}    -> C[0, 0]
      r2  given 0 [0.20 0.70 0.10]  {1}    -> C[0, 1]
      r3  given 0 [0.60 0.00 0.40]  {0, 2} (both exactly at threshold), larger p is 0 -> C[0, 0]
      r4  given 0 [0.50 0.30 0.20]  {}     -> not counted
      r5  given 1 [0.10 0.80 0.10]  {1}    -> C[1, 1]
      r6  given 1 [0.10 0.70 0.20]  {1}    -> C[1, 1]
      r7  given 1 [0.58 0.00 0.42]  {2}    (arg-max 0 is below t0) -> C[1, 2]
      r8  given 2 [0.58 0.00 0.42]  {2}    -> C[2, 2]
      r9  given 2 [0.10 0.30 0.60]  {2}    -> C[2, 2]
      r10 given 2 [0.02 0.80 0.18]  {1}    -> C[2, 1]
    """
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred_probs = np.array([
        [0.90, 0.10, 0.00],
        [0.80, 0.10, 0.10],
        [0.20, 0.70, 0.10],
        [0.60, 0.00, 0.40],
        [0.50, 0.30, 0.20],
        [0.10, 0.80, 0.10],
        [0.10, 0.70, 0.20],
        [0.58, 0.00, 0.42],
        [0.58, 0.00, 0.42],
        [0.10, 0.30, 0.60],
        [0.02, 0.80, 0.18],
    ])
    return labels, pred_probs


def test_thresholds_known_answer(hand_example):
    labels, pred_probs = hand_example
    expected = np.array([0.6, 0.5, 0.4])
    p_given = pred_probs[np.arange(len(labels)), labels]
    np.testing.assert_allclose(class_thresholds(labels, p_given, 3), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(confident_learning(labels, pred_probs).thresholds, expected,
                               rtol=0, atol=1e-12)


def test_threshold_of_class_without_rows_is_one():
    # Class 2 has no row: nothing can be confidently of it unless p_2 == 1.
    labels = np.array([0, 1, 1])
    p_given = np.array([0.7, 0.4, 0.6])
    np.testing.assert_allclose(class_thresholds(labels, p_given, 3), [0.7, 0.5, 1.0])


def test_confident_joint_known_answer(hand_example):
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(cl.confident_joint, [[3, 1, 0],
                                                       [0, 2, 1],
                                                       [0, 1, 2]])
    np.testing.assert_array_equal(cl.label_counts, [5, 3, 3])


def test_calibrated_joint_known_answer(hand_example):
    # Row 0 of C sums to 4 but 5 rows are given 0: 5/4 * [3, 1, 0] = [3.75, 1.25, 0]; floor
    # [3, 1, 0] is one short and the largest fractional part (0.75) gets it: [4, 1, 0].
    # Rows 1 and 2 already sum to their counts (3 and 3) and stay as they are.
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(cl.calibrated_joint, [[4, 1, 0],
                                                        [0, 2, 1],
                                                        [0, 1, 2]])
    # Estimated issues per given class = count - calibrated diagonal = [5-4, 3-2, 3-2].
    np.testing.assert_array_equal(cl.issues_per_class, [1, 1, 1])
    np.testing.assert_allclose(cl.noise_rate_per_class, [1 / 5, 1 / 3, 1 / 3])


def test_joint_prior_noise_known_answer(hand_example):
    # joint = calibrated / 11; prior = column sums = [4, 4, 3] / 11;
    # noise[:, j] = joint[:, j] / prior[j]: column 0 = [4, 0, 0] / 4, column 1 = [1, 2, 1] / 4,
    # column 2 = [0, 1, 2] / 3.
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_allclose(cl.joint, np.array([[4, 1, 0], [0, 2, 1], [0, 1, 2]]) / 11)
    np.testing.assert_allclose(cl.prior, np.array([4, 4, 3]) / 11)
    np.testing.assert_allclose(cl.noise_matrix, [[1.0, 0.25, 0.0],
                                                 [0.0, 0.50, 1 / 3],
                                                 [0.0, 0.25, 2 / 3]])


def test_pruning_candidates_known_answer(hand_example):
    # Rows whose arg-max is not the given label: r2 (arg-max 1, margin 0.7 - 0.2), r7 (0,
    # 0.58 - 0), r8 (0, 0.58 - 0.42), r10 (1, 0.8 - 0.18). r3's arg-max 0 is its label.
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(cl.predicted, [0, 0, 1, 0, 0, 1, 1, 0, 0, 2, 1])
    np.testing.assert_array_equal(cl.pair_rows, [2, 7, 8, 10])
    np.testing.assert_array_equal(cl.pair_true, [1, 0, 0, 1])
    np.testing.assert_allclose(cl.pair_margin, [0.5, 0.58, 0.16, 0.62], atol=1e-12)


def test_prune_flags_known_answer(hand_example):
    # Off-diagonal of the calibrated joint: n(0,1) = 1, n(1,2) = 1, n(2,1) = 1.
    # By noise rate a row competes in (given, arg-max) only: r2 in (0,1) -> flagged; r7 in (1,0)
    # and r8 in (2,0) have quota 0; r10 in (2,1) -> flagged.
    # By class: one issue per class, lowest p_given: r2 (0.2), r7 (0.0), r10 (0.18).
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(prune_counts(cl), [[0, 1, 0], [0, 0, 1], [0, 1, 0]])
    assert np.flatnonzero(flags_by_noise_rate(cl, labels)).tolist() == [2, 10]
    assert np.flatnonzero(flags_by_class(cl, labels)).tolist() == [2, 7, 10]


def test_threshold_slack():
    # t0 = (0.8 + 0.6) / 2 = 0.7. Row 2 (given 1) has p0 = 0.7 - delta and p1 = 0.3 + delta, far
    # below t1 = (0.3 + delta + 0.9) / 2: it counts in C[1, 0] only when delta <= 1e-6.
    # Row 0 counts in C[0, 0], row 1 ([0.6, 0.4]) nowhere, row 3 in C[1, 1].
    def joint(delta, dtype):
        labels = np.array([0, 0, 1, 1])
        pred_probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.7 - delta, 0.3 + delta], [0.1, 0.9]],
                              dtype=dtype)
        return confident_learning(labels, pred_probs).confident_joint

    for dtype in (np.float64, np.float32):
        np.testing.assert_array_equal(joint(5e-7, dtype), [[1, 0], [1, 1]])
        np.testing.assert_array_equal(joint(5e-6, dtype), [[1, 0], [0, 1]])


def test_calibration_docstring_and_empty_row():
    np.testing.assert_array_equal(
        calibrate_confident_joint(np.array([[3, 1], [0, 2]]), np.array([8, 2])), [[6, 2], [0, 2]])
    # A given class with no confident row is taken as clean: its count goes on the diagonal.
    np.testing.assert_array_equal(
        calibrate_confident_joint(np.array([[2, 1, 0], [0, 0, 0], [0, 1, 2]]), np.array([6, 4, 4])),
        [[4, 2, 0], [0, 4, 0], [0, 1, 3]])  # row 2: 4/3 * [0, 1, 2] = [0, 1.33, 2.67] -> [0, 1, 3]


def test_joint_prior_noise_zero_mass_class():
    # True class 1 gets no mass: identity column; other columns sum to 1.
    joint, prior, noise = joint_prior_noise(np.array([[3, 0, 1], [1, 0, 0], [0, 0, 5]]))
    np.testing.assert_allclose(joint.sum(), 1.0)
    np.testing.assert_allclose(prior, np.array([4, 0, 6]) / 10)
    np.testing.assert_allclose(noise[:, 1], [0, 1, 0])
    np.testing.assert_allclose(noise.sum(axis=0), 1.0)
    np.testing.assert_allclose(noise[:, 0], [0.75, 0.25, 0.0])


def test_prune_keeps_min_rows_per_class():
    # t = [0.8, 0.1, 1.0 (no rows)]. Rows given 0 are confident in {0} only; both rows given 1
    # ([0.9, 0.1, 0]) are confident in {0, 1} and count in C[1, 0]: 2 issues in a class of 2 rows,
    # but min_keep=1 keeps one. They tie on p_given and on the margin: position decides.
    labels = np.array([0, 0, 0, 1, 1])
    pred_probs = np.array([[0.8, 0.0, 0.2]] * 3 + [[0.9, 0.1, 0.0]] * 2)
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(cl.confident_joint, [[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cl.calibrated_joint, [[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(prune_counts(cl), [[0, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(prune_counts(cl, min_keep=0), [[0, 0, 0], [2, 0, 0], [0, 0, 0]])
    assert np.flatnonzero(flags_by_class(cl, labels)).tolist() == [3]
    assert np.flatnonzero(flags_by_noise_rate(cl, labels)).tolist() == [3]


def test_zero_probability_class_gets_no_confident_counts():
    # t = [2/3, 0.85, 0]. A threshold of 0 must not make every row "confident" in class 2 (with
    # the 1e-6 slack, p = 0 >= 0 - 1e-6): the model never gives class 2 any probability.
    # r2 (given 0, [0.3, 0.7, 0]), r4 (given 1, [0.2, 0.8, 0]), r5 and r6 are confident in no
    # class, so C = [[2, 0, 0], [0, 1, 0], [0, 0, 0]]; class 2, with no confident row, is taken as
    # clean when calibrating.
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    pred_probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.1, 0.9, 0.0],
                           [0.2, 0.8, 0.0], [0.5, 0.5, 0.0], [0.4, 0.6, 0.0]])
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(cl.confident_joint, [[2, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cl.calibrated_joint, [[3, 0, 0], [0, 2, 0], [0, 0, 2]])


# --------------------------------------------------------------------------------------------
# Oracles: vectorised code vs slow reference loops
# --------------------------------------------------------------------------------------------

def reference_confident_learning(labels, pred_probs):
    """Thresholds, confident joint and arg-max, one row and one class at a time.

    Row i counts in C[given, j] for the largest p_j among the classes with p_j >= t_j - 1e-6
    (lowest index on ties), where a class is never confident below p = 1e-12 (a threshold of 0
    must not make every row confident).
    """
    p = np.asarray(pred_probs, dtype=np.float64)
    n, k = p.shape
    t = np.ones(k)
    for j in range(k):
        rows = [p[i, j] for i in range(n) if labels[i] == j]
        if rows:
            t[j] = sum(rows) / len(rows)
    cj = np.zeros((k, k), dtype=np.int64)
    predicted = np.empty(n, dtype=np.int64)
    for i in range(n):
        above = [j for j in range(k) if p[i, j] >= max(t[j] - 1e-6, 1e-12)]
        if above:
            best = above[0]
            for j in above[1:]:
                if p[i, j] > p[i, best]:
                    best = j
            cj[labels[i], best] += 1
        predicted[i] = max(range(k), key=lambda j: (p[i, j], -j))
    return t, cj, predicted


@st.composite
def labelled_probs(draw, max_rows=60, max_classes=6, dtypes=(np.float32, np.float64)):
    """(labels, pred_probs): integer weights (many exact ties and zeros) or Dirichlet rows."""
    n = draw(st.integers(1, max_rows))
    k = draw(st.integers(2, max_classes))
    if draw(st.booleans()):
        w = draw(hnp.arrays(np.int64, (n, k), elements=st.integers(0, 9))).astype(np.float64)
        w[w.sum(axis=1) == 0] = 1.0
        p = w / w.sum(axis=1, keepdims=True)
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        alpha = draw(st.sampled_from([0.2, 1.0, 5.0]))
        p = rng.dirichlet(np.full(k, alpha), n)
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    return labels, p.astype(draw(st.sampled_from(dtypes)))


@SETTINGS
@given(data=labelled_probs(), block_rows=st.integers(1, 70))
def test_confident_joint_matches_reference_loop(data, block_rows):
    labels, pred_probs = data
    t, cj, predicted = reference_confident_learning(labels, pred_probs)
    cl = confident_learning(labels, pred_probs, block_rows=block_rows)
    np.testing.assert_allclose(cl.thresholds, t, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cl.confident_joint, cj)
    np.testing.assert_array_equal(cl.predicted, predicted)
    np.testing.assert_array_equal(cl.label_counts, np.bincount(labels, minlength=pred_probs.shape[1]))
    np.testing.assert_allclose(cl.p_given, pred_probs[np.arange(len(labels)), labels])


@SETTINGS
@given(data=labelled_probs(), block_rows=st.integers(1, 70))
def test_pruning_candidates_match_reference(data, block_rows):
    labels, pred_probs = data
    cl = confident_learning(labels, pred_probs, block_rows=block_rows)
    p = pred_probs.astype(np.float64)
    rows, true, margin = [], [], []
    for i in range(len(labels)):
        j = int(np.argmax(pred_probs[i]))
        if j != labels[i]:
            rows.append(i)
            true.append(j)
            margin.append(p[i, j] - p[i, labels[i]])
    np.testing.assert_array_equal(cl.pair_rows, rows)
    np.testing.assert_array_equal(cl.pair_true, true)
    np.testing.assert_allclose(cl.pair_margin, margin, rtol=0, atol=1e-12)


@SETTINGS
@given(data=labelled_probs())
def test_estimates_are_consistent(data):
    labels, pred_probs = data
    cl = confident_learning(labels, pred_probs)
    k = pred_probs.shape[1]
    # Calibration: row i sums to the count of label i, each entry within 1 of the rescaled joint.
    np.testing.assert_array_equal(cl.calibrated_joint.sum(axis=1), cl.label_counts)
    cj = cl.confident_joint.astype(np.float64)
    sums = cj.sum(axis=1)
    for i in range(k):
        if sums[i] > 0:
            scaled = cj[i] / sums[i] * cl.label_counts[i]
            assert np.all(np.abs(cl.calibrated_joint[i] - scaled) < 1)
        else:
            expected = np.zeros(k)
            expected[i] = cl.label_counts[i]
            np.testing.assert_array_equal(cl.calibrated_joint[i], expected)
    np.testing.assert_allclose(cl.joint.sum(), 1.0)
    np.testing.assert_allclose(cl.prior, cl.joint.sum(axis=0))
    np.testing.assert_allclose(cl.noise_matrix.sum(axis=0), 1.0)
    assert np.all(cl.noise_matrix >= 0) and np.all(cl.joint >= 0)
    quota = prune_counts(cl)
    assert np.all(quota >= 0) and np.all(np.diag(quota) == 0)
    assert np.all(quota.sum(axis=1) <= np.maximum(cl.label_counts - 1, 0))


# --------------------------------------------------------------------------------------------
# round_preserving_row_totals and top_per_group
# --------------------------------------------------------------------------------------------

_matrices = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
    elements=st.one_of(st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
                       st.integers(0, 20).map(float), st.sampled_from([0.5, 1.5, 2.25, 1 / 3])))


@SETTINGS
@given(matrix=_matrices)
def test_round_preserving_row_totals_properties(matrix):
    out = round_preserving_row_totals(matrix)
    assert out.shape == matrix.shape and out.dtype.kind == "i"
    assert np.all(np.abs(out - matrix) < 1)
    assert np.all(out >= 0)
    assert np.all(np.abs(out.sum(axis=1) - matrix.sum(axis=1)) <= 0.5 + 1e-6)


@SETTINGS
@given(weights=hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
                          elements=st.integers(0, 50)),
       totals=st.lists(st.integers(0, 10_000), min_size=8, max_size=8))
def test_round_preserving_row_totals_keeps_integer_totals(weights, totals):
    # What calibration does: rescale rows to integer totals, then round.
    w = weights.astype(np.float64)
    w[w.sum(axis=1) == 0, 0] = 1.0
    target = np.array(totals[: len(w)], dtype=np.int64)
    scaled = w / w.sum(axis=1, keepdims=True) * target[:, None]
    out = round_preserving_row_totals(scaled)
    np.testing.assert_array_equal(out.sum(axis=1), target)
    assert np.all(np.abs(out - scaled) < 1)


def reference_top_per_group(groups, scores, quota):
    picked = np.zeros(len(groups), dtype=bool)
    for g in set(groups.tolist()):
        members = [i for i in range(len(groups)) if groups[i] == g]
        members.sort(key=lambda i: (-scores[i], i))
        for i in members[: quota[g]]:
            picked[i] = True
    return picked


@SETTINGS
@given(data=st.data())
def test_top_per_group_matches_reference(data):
    n_groups = data.draw(st.integers(1, 6))
    m = data.draw(st.integers(0, 60))
    groups = data.draw(hnp.arrays(np.int64, m, elements=st.integers(0, n_groups - 1)))
    scores = data.draw(hnp.arrays(np.float64, m, elements=st.one_of(
        st.sampled_from([0.0, 0.5, 1.0, -1.0]), st.floats(-10, 10, allow_nan=False))))
    quota = data.draw(hnp.arrays(np.int64, n_groups, elements=st.integers(0, 8)))
    np.testing.assert_array_equal(top_per_group(groups, scores, quota),
                                  reference_top_per_group(groups, scores, quota))


def test_top_per_group_ties_by_position():
    groups = np.array([1, 0, 1, 1, 0, 1])
    scores = np.array([0.5, 0.2, 0.9, 0.5, 0.2, 0.5])
    # Group 1: 0.9 (pos 2) first, then the 0.5s by position: 0, 3, 5. Group 0: positions 1, 4.
    picked = top_per_group(groups, scores, np.array([1, 3]))
    assert np.flatnonzero(picked).tolist() == [0, 1, 2, 3]


def reference_top_all_or_none(groups, scores, quota):
    """Slow oracle: a tie run at a group's boundary is taken whole if it fits, else not at all."""
    picked = np.zeros(len(groups), dtype=bool)
    for g in set(groups.tolist()):
        members = [i for i in range(len(groups)) if groups[i] == g]
        taken = 0
        for value in sorted({scores[i] for i in members}, reverse=True):
            run = [i for i in members if scores[i] == value]
            if taken + len(run) > quota[g]:
                break
            picked[run] = True
            taken += len(run)
    return picked


@SETTINGS
@given(data=st.data())
def test_top_per_group_all_or_none_matches_reference_and_ignores_order(data):
    n_groups = data.draw(st.integers(1, 6))
    m = data.draw(st.integers(0, 60))
    groups = data.draw(hnp.arrays(np.int64, m, elements=st.integers(0, n_groups - 1)))
    scores = data.draw(hnp.arrays(np.float64, m, elements=st.one_of(
        st.sampled_from([0.0, 0.5, 1.0, -1.0]), st.floats(-10, 10, allow_nan=False))))
    quota = data.draw(hnp.arrays(np.int64, n_groups, elements=st.integers(0, 8)))
    picked = top_per_group(groups, scores, quota, ties="all_or_none")
    np.testing.assert_array_equal(picked, reference_top_all_or_none(groups, scores, quota))
    perm = np.random.default_rng(m).permutation(m)
    np.testing.assert_array_equal(
        top_per_group(groups[perm], scores[perm], quota, ties="all_or_none"), picked[perm])


def test_top_per_group_all_or_none_known_answer():
    groups = np.array([1, 0, 1, 1, 0, 1])
    scores = np.array([0.5, 0.2, 0.9, 0.5, 0.2, 0.5])
    # Group 1 quota 3: 0.9 fits, the three 0.5s do not (1 + 3 > 3). Group 0 quota 1: the two
    # tied 0.2s do not fit either.
    picked = top_per_group(groups, scores, np.array([1, 3]), ties="all_or_none")
    assert np.flatnonzero(picked).tolist() == [2]
    with pytest.raises(ValueError, match="ties"):
        top_per_group(groups, scores, np.array([1, 3]), ties="random")


# --------------------------------------------------------------------------------------------
# Competitors and cleanlab's per-cell pruning
# --------------------------------------------------------------------------------------------

def test_competitors_known_answer():
    block = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25]])
    given = np.array([0, 0, 0, 1])
    p_given = block[np.arange(4), given].astype(np.float64)
    disagree = block.argmax(axis=1) != given
    rows, classes, margins = competitors(block, given, p_given, disagree)
    # Row 1 (p0 = 0.1): classes 1 and 2 beat it; row 2 (p0 = 0.2): 1 and 2; row 3 (p1 = 0.35): 0.
    assert rows.tolist() == [1, 1, 2, 2, 3]
    assert classes.tolist() == [1, 2, 1, 2, 0]
    np.testing.assert_allclose(margins, [0.2, 0.5, 0.3, 0.1, 0.05])
    # Capped at one competitor per row: the largest margin.
    rows, classes, _ = competitors(block, given, p_given, disagree, max_per_row=1)
    assert rows.tolist() == [1, 2, 3] and classes.tolist() == [2, 1, 0]


@SETTINGS
@given(data=st.data())
def test_competitors_match_reference(data):
    n = data.draw(st.integers(1, 40))
    k = data.draw(st.integers(2, 14))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    block = rng.dirichlet(np.full(k, 0.5), n)
    given = rng.integers(0, k, n)
    p_given = block[np.arange(n), given]
    cap = data.draw(st.integers(1, 10))
    rows, classes, margins = competitors(block, given, p_given, block.argmax(axis=1) != given,
                                         max_per_row=cap)
    expected = []
    for r in range(n):
        beat = sorted((j for j in range(k) if block[r, j] > p_given[r]),
                      key=lambda j: -block[r, j])
        kept = {j for j in beat if block[r, j] >= block[r, beat[min(cap, len(beat)) - 1]]}
        expected += [(r, j) for j in sorted(kept)]
    assert list(zip(rows.tolist(), classes.tolist())) == expected
    np.testing.assert_allclose(margins, block[rows, classes] - p_given[rows], atol=0)


def reference_cell_margin(labels, pred_probs, quota):
    """cleanlab's prune_by_noise_rate as a slow loop (all competitors, ties all-or-none)."""
    n, k = pred_probs.shape
    flags = np.zeros(n, dtype=bool)
    for i in range(k):
        for j in range(k):
            if i == j or quota[i, j] == 0:
                continue
            rows = [r for r in range(n)
                    if labels[r] == i and pred_probs[r, j] > pred_probs[r, i]]
            margin = {r: pred_probs[r, j] - pred_probs[r, i] for r in rows}
            taken = 0
            for value in sorted(set(margin.values()), reverse=True):
                run = [r for r in rows if margin[r] == value]
                if taken + len(run) > quota[i, j]:
                    break
                flags[run] = True
                taken += len(run)
    return flags & (pred_probs.argmax(axis=1) != labels)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 80), k=st.integers(2, 6))
def test_flags_by_cell_margin_matches_reference(seed, n, k):
    rng = np.random.default_rng(seed)
    pred_probs = rng.dirichlet(np.full(k, 0.7), n)
    labels = rng.integers(0, k, n)
    cl = confident_learning(labels, pred_probs)
    np.testing.assert_array_equal(flags_by_cell_margin(cl, labels),
                                  reference_cell_margin(labels, pred_probs, prune_counts(cl)))


def test_flags_by_cell_margin_uses_every_competing_cell(hand_example):
    labels, pred_probs = hand_example
    cl = confident_learning(labels, pred_probs)
    flags = flags_by_cell_margin(cl, labels)
    np.testing.assert_array_equal(flags, reference_cell_margin(labels, pred_probs, prune_counts(cl)))
    assert not np.any(flags & (cl.predicted == labels))
    assert MAX_COMPETITORS >= 2


# --------------------------------------------------------------------------------------------
# Planted noise: flip labels with a known noise matrix
# --------------------------------------------------------------------------------------------

#: P(given | true), indexed [given, true]; columns sum to 1 (15% of labels wrong overall).
TRUE_NOISE = np.array([[0.80, 0.10, 0.00, 0.05],
                       [0.10, 0.85, 0.10, 0.05],
                       [0.05, 0.05, 0.90, 0.00],
                       [0.05, 0.00, 0.00, 0.90]])
TRUE_PRIOR = np.array([0.4, 0.3, 0.2, 0.1])


@pytest.fixture(scope="module")
def planted():
    """6000 rows, 4 classes: a model that is right ~96% of the time, labels flipped by TRUE_NOISE."""
    rng = np.random.default_rng(12345)
    n, k = 6000, 4
    true = rng.choice(k, n, p=TRUE_PRIOR)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 3.0
    pred_probs = np.exp(logits)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    cum = TRUE_NOISE.cumsum(axis=0)[:, true].T
    given = (rng.random(n)[:, None] > cum).sum(axis=1)
    return true, given, pred_probs


def test_planted_noise_matrix_and_prior(planted):
    assert np.allclose(TRUE_NOISE.sum(axis=0), 1.0)
    true, given, pred_probs = planted
    cl = confident_learning(given, pred_probs)
    # Measured: max error 0.03 (noise matrix) and 0.013 (prior) over several seeds.
    assert np.abs(cl.noise_matrix - TRUE_NOISE).max() < 0.06
    assert np.abs(cl.prior - TRUE_PRIOR).max() < 0.03
    assert abs(cl.issues_per_class.sum() / len(given) - np.mean(given != true)) < 0.03


@pytest.mark.parametrize("rule", ["noise_rate", "by_class"])
def test_planted_noise_recall_precision(planted, rule):
    true, given, pred_probs = planted
    cl = confident_learning(given, pred_probs)
    flags = flags_by_noise_rate(cl, given) if rule == "noise_rate" else flags_by_class(cl, given)
    wrong = given != true
    recall = (flags & wrong).sum() / wrong.sum()
    precision = (flags & wrong).sum() / flags.sum()
    # Measured over several seeds: recall >= 0.92, precision >= 0.91.
    assert recall >= 0.85, recall
    assert precision >= 0.85, precision


def test_planted_noise_streaming_identical(planted):
    # Two passes over blocks of 97 rows give the same estimates as one big block.
    _, given, pred_probs = planted
    a = confident_learning(given, pred_probs)
    b = confident_learning(given, pred_probs, block_rows=97)
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


@SETTINGS
@given(data=st.data())
def test_top_per_group_prefilter_never_changes_the_pick(data):
    # The bucket pre-selection (forced on here with prefilter_min=0) against the plain sort, on
    # members with many ties and groups that straddle, fill or miss their quota.
    n_groups = data.draw(st.integers(1, 40))
    m = data.draw(st.integers(1, 400))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, m)
    levels = data.draw(st.sampled_from([3, 50, 10**9]))
    scores = rng.integers(0, levels, m) / levels * data.draw(st.sampled_from([1.0, -7.5, 1e-300]))
    quota = rng.integers(0, 12, n_groups)
    for ties in ("position", "all_or_none"):
        fast = top_per_group(groups, scores, quota, ties=ties, prefilter_min=0)
        slow = top_per_group(groups, scores, quota, ties=ties, prefilter_min=m + 1)
        np.testing.assert_array_equal(fast, slow)
    assert top_per_group(groups, scores, quota, ties="all_or_none", prefilter_min=0).sum() <= quota.sum()


def test_top_per_group_prefilter_on_a_large_skewed_input():
    # Default threshold path (over PREFILTER_MIN_MEMBERS members), skewed scores as margins are.
    rng = np.random.default_rng(3)
    m = 50_000
    groups = rng.integers(0, 300, m)
    scores = np.round(rng.beta(0.3, 3.0, m), 4)  # heavy near 0, many exact ties
    quota = rng.integers(0, 400, 300)
    for ties in ("position", "all_or_none"):
        np.testing.assert_array_equal(top_per_group(groups, scores, quota, ties=ties),
                                      top_per_group(groups, scores, quota, ties=ties,
                                                    prefilter_min=m + 1))
