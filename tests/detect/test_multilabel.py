"""Multi-label detection: known answers, a slow reference oracle, planted noise, properties, input errors.

Also the one-vs-rest out-of-fold helper that feeds it (:func:`cleanpipe.oof.cross_val_probs_multilabel`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from joblib import parallel_config
from hypothesis import strategies as st

from cleanpipe import InputError, find_multilabel_issues
from cleanpipe.detect.confident import calibrate_confident_joint
from cleanpipe.detect.multilabel import (anchor_noise_rates, binary_cross_entropy, binary_thresholds,
                                         detect_multilabel, flip_posteriors, row_error_posterior,
                                         multilabel_confident_learning, pair_scores)
from cleanpipe.errors import CleanpipeWarning
from cleanpipe.oof import cross_val_probs_multilabel, multilabel_folds

# --- a tiny example checked by hand ------------------------------------------------------------------
#
# class 0: given rows 0, 1 (p .9, .8) -> t1 = .85; not given rows 2, 3, 4 (1 - p = .8, .1, .9) -> t0 = .6.
#   confident: row 0 -> 1, row 3 (p .9 >= .85) -> 1, rows 2 and 4 -> 0, row 1 neither.
#   C[0] = [[2, 1], [0, 1]], calibrated to the counts (3, 2): [[2, 1], [0, 2]] -> one missing tag.
#   The only disagreeing cell of class 0 is row 3 (p = .9 > .5, not given): flagged, missing.
# class 1: given rows 2, 4 (p .7, .9) -> t1 = .8; not given rows 0, 1, 3 (.9, .7, .8) -> t0 = .8.
#   C[1] = [[2, 0], [0, 1]], calibrated [[3, 0], [0, 2]]; no cell disagrees with p > .5.

TINY_Y = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 1]])
TINY_P = np.array([[.9, .1], [.8, .3], [.2, .7], [.9, .2], [.1, .9]])


def test_tiny_example_known_answer():
    cl = multilabel_confident_learning(TINY_Y, TINY_P)
    np.testing.assert_allclose(cl.thresholds, [[.6, .85], [.8, .8]])
    np.testing.assert_array_equal(cl.confident_joint, [[[2, 1], [0, 1]], [[2, 0], [0, 1]]])
    np.testing.assert_array_equal(cl.calibrated_joint, [[[2, 1], [0, 2]], [[3, 0], [0, 2]]])
    np.testing.assert_array_equal(cl.missing_per_class, [1, 0])
    np.testing.assert_array_equal(cl.spurious_per_class, [0, 0])
    # joint = calibrated / 5; prior(true = 1) = 3/5 for class 0; P(given 0 | true 1) = (1/5) / (3/5)
    np.testing.assert_allclose(cl.noise_matrix[0], [[1, 1 / 3], [0, 2 / 3]])
    np.testing.assert_allclose(cl.noise_rate_per_class, [0.2, 0.0])
    np.testing.assert_allclose(cl.row_noise_rate, 0.2)
    # row 3, class 0: q_given = .1; a_1 = .9 / .85, a_0 = .1 / .6, (1 + (a_0 - a_1) / a_1) / 2
    a1, a0 = .9 / .85, .1 / .6
    assert cl.label_score[3] == pytest.approx(min(.1, 0.5 * (1 + (a0 - a1) / a1)))
    np.testing.assert_allclose(cl.loss[0], -np.log(.9) - np.log(.9))

    out = find_multilabel_issues(TINY_Y, TINY_P)
    assert out["is_label_issue"].tolist() == [False, False, False, True, False]
    assert out["suspect_missing"].tolist() == [[], [], [], [0], []]
    assert out["suspect_spurious"].tolist() == [[]] * 5
    assert out["given_label"].tolist() == [[0], [0], [1], [], [1]]
    assert out["predicted_label"].tolist() == [[0], [0], [1], [0], [1]]
    assert out["label_score"].idxmin() == 3


def test_list_of_lists_input_equals_matrix_input():
    lists = [[0], [0], [1], [], [1]]
    a = find_multilabel_issues(TINY_Y, TINY_P)
    b = find_multilabel_issues(lists, TINY_P)
    assert a.equals(b)


def test_pair_scores_and_bce_known_values():
    s = pair_scores(np.array([[1, 0]]), np.array([[0.9, 0.2]]), np.array([[0.8, 0.9], [0.7, 0.5]]))
    np.testing.assert_allclose(s, [[0.9, 0.8]])
    np.testing.assert_allclose(binary_cross_entropy(np.array([[1, 0]]), np.array([[0.5, 0.5]])),
                               [2 * np.log(2)])
    # p exactly 0 or 1 against the tag: capped, finite
    assert np.isfinite(binary_cross_entropy(np.array([[1, 0]]), np.array([[0.0, 1.0]]))).all()


# --- a slow reference loop as oracle -------------------------------------------------------------------


def _reference(Y, P, min_keep=1):
    """Per class, per row: thresholds, confident joint, calibration and pruning, as plainly as possible."""
    n, k = Y.shape
    flagged = np.zeros((n, k), dtype=bool)
    cjs = []
    for c in range(k):
        y, p = Y[:, c], P[:, c]
        probs = np.stack([1 - p, p], axis=1)
        t = [probs[y == j, j].mean() if (y == j).any() else 1.0 for j in (0, 1)]
        cj = np.zeros((2, 2), dtype=np.int64)
        for i in range(n):
            conf = [j for j in (0, 1) if probs[i, j] >= t[j] - 1e-6]
            if conf:
                cj[y[i], max(conf, key=lambda j: (probs[i, j], -j))] += 1
        cjs.append(cj)
        counts = np.bincount(y, minlength=2)
        fixed = cj.copy()
        for g in (0, 1):
            if fixed[g].sum() == 0:
                fixed[g, g] = 1
        cal = calibrate_confident_joint(fixed, counts)
        for g in (0, 1):
            quota = min(cal[g, 1 - g], max(counts[g] - min_keep, 0))
            cand = [i for i in range(n) if y[i] == g and (p[i] > 0.5) != g]
            cand.sort(key=lambda i: (-abs(2 * p[i] - 1), i))
            for i in cand[:quota]:
                flagged[i, c] = True
    return np.array(cjs), flagged


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_reference_loop(seed):
    rng = np.random.default_rng(seed)
    n, k = 60, 4
    Y = (rng.random((n, k)) < rng.uniform(0.1, 0.6, k)).astype(np.int64)
    P = np.clip(0.7 * Y + rng.normal(0.15, 0.25, (n, k)), 0, 1)
    cj, flagged = _reference(Y, P)
    det = detect_multilabel(Y, P, method="noise_rate", block_rows=7)  # several blocks, as for a memmap
    np.testing.assert_array_equal(det.confident.confident_joint, cj)
    got = np.zeros((n, k), dtype=bool)
    got[det.issue_rows, det.issue_classes] = True
    np.testing.assert_array_equal(got, flagged)
    np.testing.assert_array_equal(det.is_label_issue, flagged.any(axis=1))
    np.testing.assert_array_equal(det.issue_given, Y[det.issue_rows, det.issue_classes] == 1)


def test_blocks_and_memmap_give_the_same_result(tmp_path):
    rng = np.random.default_rng(3)
    Y = (rng.random((500, 6)) < 0.3).astype(np.uint8)
    P = np.clip(0.6 * Y + rng.random((500, 6)) * 0.5, 0, 1)
    path = tmp_path / "p.npy"
    np.save(path, P)
    a = find_multilabel_issues(Y, P)
    b = find_multilabel_issues(Y, np.load(path, mmap_mode="r"))
    assert a.equals(b)
    c = detect_multilabel(Y, P, block_rows=64)
    np.testing.assert_array_equal(c.is_label_issue, a["is_label_issue"].to_numpy())
    np.testing.assert_allclose(c.label_score, a["label_score"].to_numpy())


# --- planted noise -----------------------------------------------------------------------------------


def _planted(seed, n=2000, k=8, rate=0.1):
    """A model that is right about the true tags, and labels with tags dropped / added at ``rate``."""
    rng = np.random.default_rng(seed)
    true = rng.random((n, k)) < rng.uniform(0.15, 0.4, k)
    p = np.where(true, rng.beta(8, 2, (n, k)), rng.beta(2, 8, (n, k)))
    flip = rng.random((n, k)) < np.where(true, rate, rate * 0.3)
    return (true ^ flip).astype(np.uint8), p, flip


def test_planted_missing_and_spurious_tags_are_found():
    # P here is a model of the *true* tags (sharper than one fitted to the noisy tags): the
    # setting confident learning's rule is built for; the posterior rule has its own tests below.
    Y, P, flip = _planted(0)
    out = find_multilabel_issues(Y, P, method="noise_rate")
    err = flip.any(axis=1)
    flags = out["is_label_issue"].to_numpy()
    precision = (flags & err).sum() / flags.sum()
    recall = (flags & err).sum() / err.sum()
    assert precision > 0.8 and recall > 0.7, (precision, recall)
    # the suspects name the flipped cells: dropped tags as missing, added ones as spurious
    rows = np.repeat(np.arange(len(Y)), out["suspect_missing"].str.len())
    cols = np.concatenate(out["suspect_missing"].to_numpy()).astype(int)
    assert (Y[rows, cols] == 0).all() and flip[rows, cols].mean() > 0.8
    rows = np.repeat(np.arange(len(Y)), out["suspect_spurious"].str.len())
    cols = np.concatenate(out["suspect_spurious"].to_numpy()).astype(int)
    assert (Y[rows, cols] == 1).all() and flip[rows, cols].mean() > 0.8
    # the estimated noise is of the right size
    det = detect_multilabel(Y, P, method="noise_rate")
    assert abs(det.confident.row_noise_rate - err.mean()) < 0.1
    # a higher label score means fewer errors
    score = out["label_score"].to_numpy()
    assert err[score < np.median(score)].mean() > 3 * err[score >= np.median(score)].mean()


def test_methods_mixture_and_both():
    Y, P, _ = _planted(1)
    nr = find_multilabel_issues(Y, P, method="noise_rate")
    both = find_multilabel_issues(Y, P, method="both")
    mix = find_multilabel_issues(Y, P, method="mixture")
    assert not (both["is_label_issue"] & ~nr["is_label_issue"]).any()
    assert (mix["is_label_issue"] <= (mix["p_noisy"] >= 0.5)).all()
    for out in (nr, both, mix):
        flagged = out["is_label_issue"]
        has_suspect = (out["suspect_missing"].str.len() + out["suspect_spurious"].str.len()) > 0
        assert (flagged == has_suspect).all()
        assert out["label_score"].equals(nr["label_score"])


# --- properties ---------------------------------------------------------------------------------------

cases = st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 80), st.integers(2, 6))


def _random(seed, n, k):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, k)) < rng.uniform(0.05, 0.7, k)).astype(np.uint8)
    P = np.clip(rng.uniform(0.3, 0.9) * Y + rng.random((n, k)) * 0.6, 0, 1)
    return Y, P, rng


@settings(max_examples=15, deadline=None)
@given(cases)
def test_permuting_rows_permutes_the_output(case):
    Y, P, rng = _random(*case)
    perm = rng.permutation(len(Y))
    a = find_multilabel_issues(Y, P)
    b = find_multilabel_issues(Y[perm], P[perm])
    assert b["is_label_issue"].tolist() == a["is_label_issue"].to_numpy()[perm].tolist()
    np.testing.assert_allclose(b["label_score"], a["label_score"].to_numpy()[perm])
    np.testing.assert_allclose(b["p_noisy"], a["p_noisy"].to_numpy()[perm], atol=1e-9)
    assert b["suspect_missing"].tolist() == a["suspect_missing"].to_numpy()[perm].tolist()


@settings(max_examples=15, deadline=None)
@given(cases)
def test_permuting_classes_permutes_the_suspects(case):
    Y, P, rng = _random(*case)
    perm = rng.permutation(Y.shape[1])
    a = find_multilabel_issues(Y, P)
    b = find_multilabel_issues(Y[:, perm], P[:, perm])
    assert b["is_label_issue"].tolist() == a["is_label_issue"].tolist()
    np.testing.assert_allclose(b["label_score"], a["label_score"])
    np.testing.assert_allclose(b["p_noisy"], a["p_noisy"], atol=1e-9)
    inverse = np.argsort(perm)  # old class c is new class inverse[c]
    for col in ("suspect_missing", "suspect_spurious", "given_label", "predicted_label"):
        assert b[col].tolist() == [sorted(inverse[c] for c in row) for row in a[col]]


@settings(max_examples=15, deadline=None)
@given(cases, st.floats(0.51, 1.0))
def test_no_flags_when_the_probabilities_match_the_labels(case, confidence):
    Y, _, _ = _random(*case)
    P = np.where(Y == 1, confidence, 1 - confidence)
    # confident learning's rule: only cells whose p > 0.5 disagrees with the tag can be flagged
    out = find_multilabel_issues(Y, P, method="noise_rate")
    assert not out["is_label_issue"].any()
    assert out["suspect_missing"].str.len().sum() == out["suspect_spurious"].str.len().sum() == 0
    assert out["predicted_label"].tolist() == out["given_label"].tolist()


@settings(max_examples=20, deadline=None)
@given(cases, st.sampled_from(["noise_rate", "mixture", "both"]))
def test_scores_in_unit_interval_without_nan(case, method):
    Y, P, rng = _random(*case)
    P[rng.random(P.shape) < 0.1] = 0.0  # exact 0 and 1 are legal probabilities
    P[rng.random(P.shape) < 0.1] = 1.0
    out = find_multilabel_issues(Y, P, method=method)
    for col in ("label_score", "p_noisy"):
        v = out[col].to_numpy()
        assert np.isfinite(v).all() and (v >= 0).all() and (v <= 1).all()


def test_degenerate_inputs_do_not_crash():
    # a class nobody has, a class everybody has, rows without tags, all probabilities equal
    Y = np.zeros((20, 3), dtype=int)
    Y[:, 1] = 1
    P = np.full((20, 3), 0.5)
    out = find_multilabel_issues(Y, P)
    assert len(out) == 20 and np.isfinite(out["label_score"]).all()
    out = find_multilabel_issues(Y[:2], P[:2])  # fewer rows than the mixture needs
    assert (out["p_noisy"] == 0).all()


# --- input errors -------------------------------------------------------------------------------------

BAD = {
    "labels 2": (np.array([[1, 2], [0, 1]]), np.full((2, 2), .5), "holds 2 at row 0, class 1"),
    "labels nan": (np.array([[1, np.nan], [0, 1]]), np.full((2, 2), .5), "only 0 and 1"),
    "shape": (np.ones((3, 2)), np.full((2, 2), .5), "shape"),
    "1-D labels": (np.ones(2), np.full((2, 2), .5), "2-D"),
    "probs nan": (np.ones((2, 2)), np.array([[.5, np.nan], [.5, .5]]), "NaN"),
    "probs > 1": (np.ones((2, 2)), np.array([[.5, 1.5], [.5, .5]]), r"outside \[0, 1\].*sigmoid"),
    "index out of range": ([[0, 2], []], np.full((2, 2), .5), "class index 2"),
    "negative index": ([[0], [-1]], np.full((2, 2), .5), "class index -1"),
    "None row": ([[0], None], np.full((2, 2), .5), "row 1 is None"),
    "strings": ([["a"], ["b"]], np.full((2, 2), .5), "class indices"),
    "lists length": ([[0]], np.full((2, 2), .5), "1 rows"),
    "structs": ([[{"a": 1}], []], np.full((2, 2), .5), "class indices"),
}


@pytest.mark.parametrize("labels, probs, match", list(BAD.values()), ids=list(BAD))
def test_bad_input_raises_one_line_input_error(labels, probs, match):
    with pytest.raises(InputError, match=match) as info:
        find_multilabel_issues(labels, probs)
    assert "\n" not in str(info.value)


def test_bad_options():
    with pytest.raises(InputError, match="choose one of: posterior, noise_rate, mixture, both"):
        find_multilabel_issues(TINY_Y, TINY_P, method="combined")
    with pytest.raises(InputError, match="mixture 'poisson'"):
        find_multilabel_issues(TINY_Y, TINY_P, mixture="poisson")
    with pytest.raises(InputError, match="noisy_threshold"):
        find_multilabel_issues(TINY_Y, TINY_P, noisy_threshold=1.0)


def test_thresholds_of_an_unseen_side_are_one():
    t = binary_thresholds(np.array([[1, 0], [1, 0]]), np.array([[.7, .2], [.9, .4]]))
    np.testing.assert_allclose(t, [[1.0, 0.8], [0.7, 1.0]])


# --- one-vs-rest out-of-fold probabilities -------------------------------------------------------------


def test_folds_stratify_on_tag_counts_and_keep_rare_counts_together():
    Y = np.zeros((50, 3), dtype=int)
    Y[:30, 0] = 1
    Y[:10, 1] = 1
    Y[:2, 2] = 1  # two rows with 3 tags: fewer than the folds, merged with the 2-tag rows
    splits = multilabel_folds(Y, 5, seed=0)
    assert sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(50))
    for _, test in splits:
        assert (Y[test].sum(axis=1) >= 2).sum() == 2  # 10 rows with >= 2 tags, 2 per fold


def test_one_vs_rest_probabilities_constant_class_and_n_jobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0.5, np.zeros(120, bool)], axis=1).astype(int)
    with pytest.warns(CleanpipeWarning, match="constant"):
        oof = cross_val_probs_multilabel(X, Y, model="logreg", folds=3, X_extra=X[:5])
    assert oof.pred_probs.shape == (120, 3) and oof.extra_probs.shape == (5, 3)
    assert (oof.pred_probs[:, 2] == 0).all() and (oof.extra_probs[:, 2] == 0).all()
    assert ((oof.pred_probs[:, 0] > 0.5) == (Y[:, 0] == 1)).mean() > 0.9
    # two workers (threads: no process start-up in a unit test) assemble the same matrix
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore", CleanpipeWarning)
        two = cross_val_probs_multilabel(X, Y, model="logreg", folds=3, X_extra=X[:5], n_jobs=2)
    np.testing.assert_array_equal(oof.pred_probs, two.pred_probs)
    np.testing.assert_array_equal(oof.extra_probs, two.extra_probs)


# --- the posterior rule: anchor noise rates, flip posteriors, the expected count -----------------------


def test_flip_posteriors_known_values():
    # rho0 = 0.1 (spurious), rho1 = 0.2 (missing); p = 0.5 -> pi = (0.5 - 0.1) / 0.7 = 4/7
    noise = np.array([[[0.9, 0.2], [0.1, 0.8]]])
    post = flip_posteriors(np.array([[1], [0], [1], [0]]), np.array([[.5], [.5], [.05], [.99]]), noise)
    pi = 0.4 / 0.7
    np.testing.assert_allclose(post[:2, 0], [0.1 * (1 - pi) / 0.5, 0.2 * pi / 0.5])
    # below the floor rho0 / above the ceiling 1 - rho1 the given tag is surely wrong
    np.testing.assert_allclose(post[2:, 0], [1.0, 1.0])
    np.testing.assert_allclose(row_error_posterior(np.array([[.5, .5, 0.], [.2, 1., .3]])), [.75, 1.])


def test_anchor_noise_rates_known_answer_and_recovery():
    Y = np.array([[1], [1], [0], [0], [1], [0], [0], [1]])
    P = np.array([[.9], [.8], [.1], [.2], [.05], [.3], [.7], [.6]])
    # one-row anchors: p .05 is given the tag (rate (1 + .5) / 2, capped at P(given 1) = .5);
    # p .9 is given it too (missing rate (0 + .5) / 2)
    np.testing.assert_allclose(anchor_noise_rates(Y, P, share=0.25, pooled=False)[0],
                               [[.5, .25], [.5, .75]])
    # tied probabilities count pro rata: the result does not depend on row order
    Yt, Pt = np.array([[0], [1], [1], [0]]), np.array([[.1], [.1], [.9], [.9]])
    a = anchor_noise_rates(Yt, Pt, share=0.5, pooled=False)
    assert a[0, 1, 0] == pytest.approx((.5 + .5) / 2)
    np.testing.assert_array_equal(anchor_noise_rates(Yt[::-1], Pt[::-1], share=0.5, pooled=False), a)
    # probabilities fitted to noisy tags: rho0 + (1 - rho0 - rho1) pi(x), pi(x) reaching 0 and 1
    rng = np.random.default_rng(0)
    n, rho0, rho1 = 40_000, 0.04, 0.15
    pi = rng.beta(0.3, 0.3, (n, 3))
    p = rho0 + (1 - rho0 - rho1) * pi
    Y = (rng.random((n, 3)) < p).astype(np.uint8)
    noise = anchor_noise_rates(Y, p)
    assert abs(noise[0, 1, 0] - rho0) < 0.015 and abs(noise[0, 0, 1] - rho1) < 0.03, noise[0]
    assert np.allclose(noise, noise[0])  # pooled over classes


def _noisy_calibrated(seed, n=3000, k=5, rho0=0.03, rho1=0.15):
    """Tags drawn from pi(x), then dropped / added; p is P(given tag | x) as a model fitted to the
    noisy tags estimates it. Returns (given tags, p, rows with a changed tag)."""
    rng = np.random.default_rng(seed)
    pi = rng.beta(0.4, 0.6, (n, k))
    true = rng.random((n, k)) < pi
    flip = rng.random((n, k)) < np.where(true, rho1, rho0)
    p = rho0 + (1 - rho0 - rho1) * pi
    return (true ^ flip).astype(np.uint8), p, flip.any(axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_posterior_count_tracks_the_wrong_rows_and_beats_the_union(seed):
    Y, P, err = _noisy_calibrated(seed)
    det = detect_multilabel(Y, P)
    flags = det.is_label_issue
    assert 1 / 1.5 <= flags.sum() / err.sum() <= 1.5, (flags.sum(), err.sum())
    # the expected count from the posteriors is near the truth (the model is exact here; the anchor
    # rows' pi is near, not at, 0 and 1, which biases the rates up a little)
    assert abs(det.expected_issues - err.sum()) < 0.3 * err.sum()
    f1 = 2 * (flags & err).sum() / (flags.sum() + err.sum())
    union = detect_multilabel(Y, P, method="noise_rate").is_label_issue
    f1_union = 2 * (union & err).sum() / (union.sum() + err.sum())
    assert f1 > f1_union, (f1, f1_union)
    # every flagged row names a suspect tag, and only flagged rows do
    assert set(det.issue_rows.tolist()) == set(np.flatnonzero(flags).tolist())


@settings(max_examples=25, deadline=None)
@given(cases, st.floats(0.9, 0.999))
def test_posterior_flags_at_most_a_handful_on_clean_well_separated_tags(case, confidence):
    Y, _, _ = _random(*case)
    P = np.where(Y == 1, confidence, 1 - confidence)
    det = detect_multilabel(Y, P)
    assert det.is_label_issue.sum() <= max(2, 0.01 * len(Y))
    assert ((det.label_score >= 0) & (det.label_score <= 1)).all()


@settings(max_examples=25, deadline=None)
@given(cases)
def test_posterior_outputs_are_in_range_and_permute_with_rows(case):
    Y, P, _ = _random(*case)
    perm = np.random.default_rng(case[0]).permutation(len(Y))
    a, b = detect_multilabel(Y, P), detect_multilabel(Y[perm], P[perm])
    for det in (a, b):
        assert np.isfinite(det.p_error).all() and ((det.p_error >= 0) & (det.p_error <= 1)).all()
    np.testing.assert_allclose(b.p_error, a.p_error[perm], atol=1e-12)
    np.testing.assert_array_equal(b.is_label_issue, a.is_label_issue[perm])
    np.testing.assert_allclose(b.noise_matrix, a.noise_matrix, atol=1e-12)
