"""cleanpipe.auto: the estimates ``--loss auto`` reads and the rule that maps them to a training run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanpipe.auto import (FALLBACK_LOSS, HEAVY, HEAVY_NOISE, LIGHT, PAIR_SHARE, NoiseEstimate, choose_training,
                            estimate, flip_concentration, noise_rate)
from cleanpipe.errors import InputError


def _noise(kind: str, k: int, rate: float) -> np.ndarray:
    """``P(given | true)`` ``[given, true]`` of symmetric or pair (c -> c + 1) noise."""
    if kind == "pair":
        return (1 - rate) * np.eye(k) + rate * np.roll(np.eye(k), 1, axis=0)
    return (1 - rate) * np.eye(k) + rate / (k - 1) * (1 - np.eye(k))


def test_noise_rate_known_answers():
    # 0.75 * 0.1 + 0.25 * 0.2
    assert noise_rate([[0.9, 0.2], [0.1, 0.8]], [0.75, 0.25]) == pytest.approx(0.125)
    assert noise_rate([[0.9, 0.2], [0.1, 0.8]]) == pytest.approx(0.15)  # uniform prior
    # columns are renormalised: a count matrix gives the same rate
    assert noise_rate([[9, 2], [1, 8]], [3, 1]) == pytest.approx(0.125)
    assert noise_rate(_noise("symmetric", 5, 0.6)) == pytest.approx(0.6)
    assert noise_rate(np.eye(4)) == 0.0


@pytest.mark.parametrize("k", [3, 5, 20])
def test_estimate_reads_rate_and_concentration(k):
    sym, pair = estimate(_noise("symmetric", k, 0.6)), estimate(_noise("pair", k, 0.3))
    assert (sym.noise_rate, sym.flip_concentration, sym.n_classes) == (pytest.approx(0.6), pytest.approx(0.0), k)
    assert (pair.noise_rate, pair.flip_concentration) == (pytest.approx(0.3), pytest.approx(1.0))
    assert sym.source == "flag" and estimate(np.eye(k), source="quick estimate").source == "quick estimate"


@pytest.mark.parametrize("bad, match", [
    (np.ones((3, 2)), "not K x K"), ([[1.0]], "not K x K"), ([[0.5, -0.1], [0.5, 1.1]], "negative"),
    ([[np.nan, 0.0], [1.0, 1.0]], "non-finite")])
def test_estimate_refuses_a_bad_matrix(bad, match):
    with pytest.raises(InputError, match=match):
        estimate(bad)


def test_estimate_refuses_a_prior_that_does_not_fit():
    with pytest.raises(InputError, match="class prior"):
        estimate(np.eye(3), [0.5, 0.5])
    with pytest.raises(InputError, match="class prior"):
        estimate(np.eye(2), [0.0, 0.0])


def test_choice_known_answers():
    heavy = choose_training(estimate(_noise("symmetric", 5, 0.6)))
    assert (heavy.loss, heavy.labels, heavy.settings) == (HEAVY["loss"], "flag-scored", HEAVY["settings"])
    assert heavy.settings["val_fraction"] == 0.0 and heavy.settings["epochs"] > 40
    assert heavy.record["chosen"] == "dynamic-hard" and "heavy noise" in heavy.record["reason"]
    assert heavy.record["noise_rate"] == pytest.approx(0.6) and heavy.record["settings"] == HEAVY["settings"]

    light = choose_training(estimate(_noise("symmetric", 5, 0.3)))
    assert (light.loss, light.labels, light.settings) == ("elr", "flag-scored", LIGHT["settings"])
    assert light.settings == {"epochs": 60, "patience": 0, "val_fraction": 0.0}
    assert "< 0.45" in light.record["reason"] and light.record["chosen"] == "elr"
    assert light.record["settings"] == LIGHT["settings"]
    # clean data estimates a rate near 0: still the light branch
    assert choose_training(estimate(np.eye(4))).loss == LIGHT["loss"]

    for rate in (0.3, 0.6):  # pair-like noise goes to forward at any rate
        pair = choose_training(estimate(_noise("pair", 5, rate)))
        assert (pair.loss, pair.labels, pair.settings) == ("forward", "flag-scored", {})
        assert "pair-like" in pair.record["reason"]

    # two classes: the concentration says nothing, the rate decides
    assert choose_training(estimate(_noise("pair", 2, 0.3))).loss == LIGHT["loss"]
    assert choose_training(estimate(_noise("pair", 2, 0.5))).loss == HEAVY["loss"]

    none = choose_training(None)
    assert (none.loss, none.labels, none.settings) == (FALLBACK_LOSS, "given", {})
    assert none.record == {"chosen": FALLBACK_LOSS, "labels": "given", "reason": "no noise estimate"}


def test_choice_boundaries():
    assert choose_training(NoiseEstimate(HEAVY_NOISE, 0.0, 5)).loss == HEAVY["loss"]
    assert choose_training(NoiseEstimate(np.nextafter(HEAVY_NOISE, 0), 0.0, 5)).loss == LIGHT["loss"]
    assert choose_training(NoiseEstimate(0.6, PAIR_SHARE, 5)).loss == "forward"
    assert choose_training(NoiseEstimate(0.6, np.nextafter(PAIR_SHARE, 0), 5)).loss == HEAVY["loss"]


def test_choice_settings_are_a_copy():
    choose_training(NoiseEstimate(0.1, 0.0, 4)).settings["epochs"] = 1
    assert choose_training(NoiseEstimate(0.1, 0.0, 4)).settings == LIGHT["settings"]
    choose_training(NoiseEstimate(0.9, 0.0, 4)).settings["epochs"] = 1
    assert choose_training(NoiseEstimate(0.9, 0.0, 4)).settings == HEAVY["settings"]
    assert HEAVY["settings"]["epochs"] != 1


_matrices = st.integers(3, 7).flatmap(lambda k: st.tuples(
    st.lists(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k), min_size=k, max_size=k),
    st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k), st.randoms(use_true_random=False)))


@given(_matrices)
def test_estimate_is_invariant_to_the_order_of_classes(args):
    t, prior, rnd = args
    t, prior = np.asarray(t) + np.eye(len(t)), np.asarray(prior)  # no all-zero column
    perm = list(range(len(t)))
    rnd.shuffle(perm)
    a, b = estimate(t, prior), estimate(t[np.ix_(perm, perm)], prior[perm])
    assert 0.0 <= a.noise_rate <= 1.0 and 0.0 <= a.flip_concentration <= 1.0
    assert a.noise_rate == pytest.approx(b.noise_rate) and a.flip_concentration == pytest.approx(b.flip_concentration)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(2, 30))
def test_more_noise_never_leaves_the_heavy_branch(r1, r2, conc, k):
    lo, hi = sorted((r1, r2))
    if choose_training(NoiseEstimate(lo, conc, k)).loss == HEAVY["loss"]:
        assert choose_training(NoiseEstimate(hi, conc, k)).loss == HEAVY["loss"]


def test_flip_concentration_examples():
    assert flip_concentration(_noise("pair", 4, 0.5)) == pytest.approx(1.0)
    assert flip_concentration(_noise("symmetric", 4, 0.5)) == pytest.approx(0.0)
    assert flip_concentration(_noise("symmetric", 2, 0.5)) == 0.0
