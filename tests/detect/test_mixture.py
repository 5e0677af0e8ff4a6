"""Tests for cleanpipe.detect.mixture: parameter recovery, EM monotonicity, monotone posterior, degenerate inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cleanpipe.detect.mixture import EPS, fit_loss_mixture, fit_mixture, normalise_losses

SETTINGS = settings(max_examples=50, deadline=None)


def _beta_sample(n, seed):
    """Beta(2, 8) with weight 0.7 (mean 0.2) then Beta(8, 2) with weight 0.3 (mean 0.8)."""
    rng = np.random.default_rng(seed)
    n_clean = int(0.7 * n)
    return np.concatenate([rng.beta(2, 8, n_clean), rng.beta(8, 2, n - n_clean)])


@pytest.fixture(scope="module")
def beta_fit():
    """One EM fit on 20000 draws (a fit of this size takes about a second of CPU)."""
    return fit_mixture(_beta_sample(20_000, seed=2024))


def test_beta_em_recovers_parameters(beta_fit):
    fit = beta_fit
    assert fit.family == "beta" and fit.converged
    noisy, clean = fit.noisy, 1 - fit.noisy
    assert fit.means[noisy] == fit.means.max()
    assert abs(fit.weights[noisy] - 0.3) <= 0.03 and abs(fit.weights[clean] - 0.7) <= 0.03
    assert abs(fit.means[noisy] - 0.8) <= 0.03 and abs(fit.means[clean] - 0.2) <= 0.03
    np.testing.assert_allclose(fit.weights.sum(), 1.0)
    # Method of moments: no monotonicity claim for the Beta, but the trace must stay finite.
    assert np.all(np.isfinite(fit.log_likelihood))


@pytest.mark.parametrize("order", ["reversed", "shuffled", "sorted", "noisy_first"])
def test_noisy_component_whatever_the_order(order):
    x = _beta_sample(3000, seed=99)
    reordered = {"reversed": x[::-1], "sorted": np.sort(x), "noisy_first": np.roll(x, 900),
                 "shuffled": np.random.default_rng(7).permutation(x)}[order]
    a, b = fit_mixture(x), fit_mixture(reordered)
    for fit in (a, b):
        assert fit.means[fit.noisy] == fit.means.max()
        assert abs(fit.means[fit.noisy] - 0.8) <= 0.05
        assert abs(fit.weights[fit.noisy] - 0.3) <= 0.05
    # The order only changes round-off.
    assert a.noisy == b.noisy
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-6)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-6)


def test_noisy_component_is_the_high_mean_one_when_it_is_the_majority():
    # Mirror the sample: now the high-loss component Beta(8, 2) has weight 0.7.
    fit = fit_mixture(1.0 - _beta_sample(3000, seed=99))
    assert fit.means[fit.noisy] == fit.means.max()
    assert abs(fit.means[fit.noisy] - 0.8) <= 0.05
    assert abs(fit.weights[fit.noisy] - 0.7) <= 0.05


def test_gaussian_em_recovers_parameters():
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0.25, 0.05, 12_000), rng.normal(0.70, 0.08, 8_000)])
    fit = fit_mixture(np.clip(x, EPS, 1 - EPS), family="gaussian")
    noisy, clean = fit.noisy, 1 - fit.noisy
    assert abs(fit.weights[noisy] - 0.4) <= 0.03
    np.testing.assert_allclose(fit.params[clean], [0.25, 0.05], atol=0.02)
    np.testing.assert_allclose(fit.params[noisy], [0.70, 0.08], atol=0.02)
    assert np.all(np.diff(fit.log_likelihood) >= -1e-10)


def test_sample_weight_is_a_repeat_count():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.beta(2, 6, 40), rng.beta(6, 2, 15)])
    counts = rng.integers(1, 6, len(values))
    for family in ("beta", "gaussian"):
        a = fit_mixture(values, family=family, sample_weight=counts)
        b = fit_mixture(np.repeat(values, counts), family=family)
        np.testing.assert_allclose(a.params, b.params, rtol=1e-6)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-6)


def test_unknown_family():
    with pytest.raises(ValueError, match="family"):
        fit_mixture(np.array([0.2, 0.8]), family="poisson")


@st.composite
def unit_samples(draw):
    """Values in (0, 1): a seeded two-Gaussian mixture (clipped), or raw hypothesis floats."""
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        n = draw(st.integers(2, 3000))
        w = draw(st.floats(0.05, 0.95))
        mu = sorted(draw(st.lists(st.floats(0.05, 0.95), min_size=2, max_size=2)))
        sd = draw(st.lists(st.floats(0.01, 0.3), min_size=2, max_size=2))
        comp = rng.random(n) < w
        x = np.where(comp, rng.normal(mu[0], sd[0], n), rng.normal(mu[1], sd[1], n))
        return np.clip(x, EPS, 1 - EPS)
    return draw(hnp.arrays(np.float64, st.integers(2, 200),
                           elements=st.floats(EPS, 1 - EPS, allow_nan=False)))


@SETTINGS
@given(x=unit_samples(), weighted=st.booleans())
def test_gaussian_em_log_likelihood_never_decreases(x, weighted):
    weight = np.random.default_rng(len(x)).integers(1, 10, len(x)) if weighted else None
    fit = fit_mixture(x, family="gaussian", sample_weight=weight)
    ll = fit.log_likelihood
    assert np.all(np.isfinite(ll))
    assert np.all(np.diff(ll) >= -1e-9 * np.maximum(1.0, np.abs(ll[:-1]))), np.diff(ll).min()


@SETTINGS
@given(x=unit_samples(), family=st.sampled_from(["beta", "gaussian"]))
def test_fit_mixture_output_is_finite(x, family):
    fit = fit_mixture(x, family=family)
    assert np.all(np.isfinite(fit.params)) and np.all(np.isfinite(fit.weights))
    np.testing.assert_allclose(fit.weights.sum(), 1.0)
    assert fit.means[fit.noisy] == fit.means.max()
    post = fit.posterior(np.linspace(EPS, 1 - EPS, 101))
    assert np.all(np.isfinite(post)) and np.all((post >= 0) & (post <= 1))


# --------------------------------------------------------------------------------------------
# normalise_losses and fit_loss_mixture
# --------------------------------------------------------------------------------------------

def test_normalise_losses_known_answer():
    # Percentiles (5, 95) of 0..100 are 5 and 95: 50 -> 45 / 90 = 0.5; below 5 / above 95 clip.
    x, bounds = normalise_losses(np.arange(101.0))
    assert bounds == (5.0, 95.0)
    np.testing.assert_allclose(x[[0, 5, 50, 95, 100]], [EPS, EPS, 0.5, 1 - EPS, 1 - EPS])
    y, same = normalise_losses(np.array([14.0, 200.0]), bounds=bounds)
    assert same == bounds
    np.testing.assert_allclose(y, [0.1, 1 - EPS])


_losses = st.one_of(
    hnp.arrays(np.float64, st.integers(1, 400),
               elements=st.floats(0, 50, allow_nan=False, allow_infinity=False)),
    hnp.arrays(np.float64, st.integers(1, 400), elements=st.sampled_from([0.0, 0.1, 2.0, 27.6])),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 5000)).map(
        lambda a: np.random.default_rng(a[0]).exponential(0.3, a[1])
        * np.random.default_rng(a[0]).choice([1.0, 10.0], a[1], p=[0.8, 0.2])),
)


@SETTINGS
@given(losses=_losses, family=st.sampled_from(["beta", "gaussian"]))
def test_p_noisy_is_monotone_in_the_loss(losses, family):
    mix = fit_loss_mixture(losses, family=family)
    order = np.argsort(losses, kind="stable")
    p = mix.p_noisy(losses)
    assert p.shape == losses.shape
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p[order]) >= 0)
    # Also on new losses, beyond both ends of the fitted range.
    fresh = np.linspace(-1.0, losses.max() * 2 + 1, 500)
    assert np.all(np.diff(mix.p_noisy(fresh)) >= 0)
    json.dumps(mix.to_dict())


@pytest.mark.parametrize("family", ["beta", "gaussian"])
@pytest.mark.parametrize("case", [
    "all_equal", "all_zero", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8",
    "huge_outlier", "mostly_zero", "two_values", "tiny_spread",
])
def test_degenerate_losses_give_finite_output(case, family):
    rng = np.random.default_rng(0)
    if case.startswith("n"):
        losses = rng.exponential(1.0, int(case[1:]))
    else:
        losses = {
            "all_equal": np.full(500, 0.7),
            "all_zero": np.zeros(300),
            "huge_outlier": np.concatenate([rng.normal(1.0, 0.1, 999), [1e6]]),
            "mostly_zero": np.concatenate([np.zeros(150), rng.exponential(1.0, 50)]),
            "two_values": np.array([0.1] * 60 + [3.0] * 40),
            "tiny_spread": 1.0 + rng.normal(0, 1e-8, 200),
        }[case]
    mix = fit_loss_mixture(losses, family=family)
    p = mix.p_noisy(losses)
    assert p.shape == losses.shape
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    json.dumps(mix.to_dict())
    if case in ("all_equal", "all_zero") or (case.startswith("n") and int(case[1:]) < 8):
        assert mix.fit is None and mix.reason
        np.testing.assert_array_equal(p, 0.0)
    if case == "huge_outlier":
        assert p[-1] == p.max()
    if case == "two_values":
        # Two separated point masses: the high one is the noisy population.
        assert p[-1] > 0.5 > p[0]


def test_few_high_losses_among_zeros_are_noisy():
    losses = np.concatenate([np.zeros(97), np.full(3, 27.6)])
    mix = fit_loss_mixture(losses)
    assert mix.reason != "all losses are equal"
    assert mix.p_noisy(np.array([27.6]))[0] >= 0.5


@SETTINGS
@given(data=st.data())
def test_interp_uniform_matches_numpy_interp(data):
    from cleanpipe.detect.mixture import interp_uniform
    lo = data.draw(st.floats(-5, 5))
    hi = lo + data.draw(st.floats(1e-3, 10))
    n = data.draw(st.integers(2, 300))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    grid = np.linspace(lo, hi, n)
    values = np.cumsum(rng.random(n))
    x = np.concatenate([rng.uniform(lo - 1, hi + 1, 200), grid, [lo, hi]])
    np.testing.assert_allclose(interp_uniform(x, grid, values), np.interp(x, grid, values),
                               rtol=1e-12, atol=1e-12 * values.max())


@SETTINGS
@given(x=hnp.arrays(np.float64, st.integers(0, 300), elements=st.floats(0.0, 1.0)),
       log_bins=st.integers(0, 11))
def test_dyadic_histogram_matches_numpy(x, log_bins):
    from cleanpipe.detect.mixture import _dyadic_histogram
    bins = 2 ** log_bins
    np.testing.assert_array_equal(_dyadic_histogram(x, bins),
                                  np.histogram(x, bins=bins, range=(0.0, 1.0))[0])
