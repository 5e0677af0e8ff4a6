"""Training that models the noise while it trains: online mixture, dynamic bootstrapping, mixup, prior.

The mixture EM itself (parameter recovery from two Betas, noisy = higher mean whatever the order,
monotone posterior) is tested where it lives, in tests/detect/test_mixture.py: the training loop
reuses that code. Here: what the loop adds around it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.detect.mixture import fit_loss_mixture
from cleanpipe.losses import cross_entropy, dynamic_bootstrap, get_loss
from cleanpipe.train import TabularMLP, TrainConfig, fit
from cleanpipe.train.loop import _mixup_loss, _StepSettings
from cleanpipe.train.noise import posterior_on_device


def _blobs(n=600, k=3, seed=0, noise=0.0):
    """Well-separated Gaussian blobs; ``noise`` of the labels flipped to another class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = (rng.normal(0, 1, (n, 6)) + 3 * np.eye(k, 6)[y]).astype(np.float32)
    flip = rng.random(n) < noise
    noisy = np.where(flip, (y + rng.integers(1, k, n)) % k, y)
    return x, np.zeros((n, 0), np.int64), y, noisy


def _model(k=3, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TabularMLP(6, [], (32,), k)


def _cfg(**kw):
    return TrainConfig(**{"epochs": 6, "batch_size": 64, "lr": 5e-3, "patience": 0, "device": "cpu",
                          "threads": 1, **kw})


def _same_weights(a, b) -> bool:
    return all(torch.equal(va, vb) for va, vb in zip(a.state_dict().values(), b.state_dict().values()))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 20, allow_nan=False), min_size=30, max_size=300), st.integers(0, 3))
def test_posterior_on_the_device_matches_the_host_and_is_monotone(losses, seed):
    rng = np.random.default_rng(seed)
    losses = np.asarray(losses) + rng.exponential(1.0, len(losses)) * (rng.random(len(losses)) < 0.3)
    mix = fit_loss_mixture(losses)
    w = posterior_on_device(mix, torch.as_tensor(losses, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(w, mix.p_noisy(losses), atol=1e-4)
    order = np.argsort(losses, kind="stable")
    assert np.all(np.diff(w[order]) >= -1e-6)  # a larger loss is never less suspect
    assert np.all((w >= 0) & (w <= 1))


def test_dynamic_bootstrapping_with_zero_weights_trains_exactly_like_cross_entropy():
    x, c, _, noisy = _blobs(noise=0.3)
    a, b = _model(), _model()
    fit(a, x, c, noisy, loss_fn=cross_entropy, config=_cfg())
    fit(b, x, c, noisy, loss_fn=get_loss("dynamic-hard"), row_kwargs={"noisy_weight": np.zeros(len(noisy))},
        config=_cfg())
    assert _same_weights(a, b)


def test_mixup_alpha_zero_is_no_mixup_and_alpha_one_changes_training():
    x, c, _, noisy = _blobs(noise=0.3)
    a, b, m = _model(), _model(), _model()
    fit(a, x, c, noisy, loss_fn=cross_entropy, config=_cfg())
    fit(b, x, c, noisy, loss_fn=cross_entropy, config=_cfg(mixup=0.0))
    fit(m, x, c, noisy, loss_fn=cross_entropy, config=_cfg(mixup=1.0))
    assert _same_weights(a, b) and not _same_weights(a, m)


def test_mixup_loss_mixes_inputs_and_targets_with_the_same_lambda():
    x, c, _, y = _blobs(n=40, noise=0.3)
    model = _model()
    t_num, t_cat, t_y = torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(y)
    w = torch.rand(40, generator=torch.Generator().manual_seed(1))
    extra = {"noisy_weight": torch.rand(40, generator=torch.Generator().manual_seed(2))}
    step = _StepSettings.build(_cfg(mixup=0.4), y, np.arange(40), None, torch.device("cpu"))
    model.eval()  # no dropout: the by-hand computation below must see the same network
    logits, loss = _mixup_loss(model, t_num, t_cat, t_y, w, dict(extra), get_loss("dynamic-hard"), {},
                               torch.autocast("cpu", enabled=False), step, torch.Generator().manual_seed(3))
    lam = float(np.random.default_rng([0, 0x6D6978]).beta(0.4, 0.4))
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h = model.embed(t_num, t_cat)
        mixed = model.head(lam * h + (1 - lam) * h[perm])
        own = torch.softmax(model(t_num, t_cat), dim=1)  # bootstrapped targets: the un-mixed rows
        want = lam * dynamic_bootstrap(mixed, t_y, noisy_weight=extra["noisy_weight"], predictions=own,
                                       weight=w) \
            + (1 - lam) * dynamic_bootstrap(mixed, t_y[perm], noisy_weight=extra["noisy_weight"][perm],
                                            predictions=own[perm], weight=w[perm])
    torch.testing.assert_close(logits, mixed)
    torch.testing.assert_close(loss, want)


def test_prior_regulariser_pulls_the_mean_prediction_to_the_prior():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 6)).astype(np.float32)
    c = np.zeros((400, 0), np.int64)
    y = rng.integers(0, 2, 400)  # labels carry no signal and are balanced
    prior = np.array([0.85, 0.15])

    def mean_pred(reg):
        m = _model(k=2)
        fit(m, x, c, y, loss_fn=cross_entropy, prior=prior,
            config=_cfg(epochs=15, prior_reg=reg, val_fraction=0.0))
        with torch.no_grad():
            return torch.softmax(m(torch.from_numpy(x), torch.from_numpy(c)), 1).mean(0).numpy()

    free, pulled = mean_pred(0.0), mean_pred(20.0)
    assert abs(free[0] - 0.5) < 0.1
    assert abs(pulled[0] - 0.85) < 0.06


def test_online_posterior_separates_planted_noise():
    x, c, y, noisy = _blobs(n=1500, noise=0.4, seed=1)
    truth = (noisy != y).astype(float)
    hist = fit(_model(), x, c, noisy, loss_fn=get_loss("dynamic-hard"), online_warmup=3, reference=truth,
               config=_cfg(epochs=10, val_fraction=0.0, mixup=1.0))
    records = hist.noise_model
    assert [r["epoch"] for r in records] == list(range(3, 11))
    last = records[-1]
    # reference is the truth here, so auroc_vs_flag is the AUROC of w against the planted flips
    assert last["auroc_vs_flag"] >= 0.9
    assert 0.2 < last["noisy_share"] < 0.6
    mix = last["mixture"]
    assert mix["means"][mix["noisy_component"]] == max(mix["means"])
    assert last["seconds"] > 0 and last["epoch_seconds"] > 0
    json.dumps(records)  # JSON-ready


def test_auroc_is_null_without_a_reference_and_the_refit_keeps_w_on_the_training_rows():
    x, c, _, noisy = _blobs(n=300, noise=0.3)
    seen = []

    def loss_fn(logits, targets, *, noisy_weight, weight=None, predictions=None):
        seen.append(noisy_weight.detach().clone())
        return dynamic_bootstrap(logits, targets, noisy_weight=noisy_weight, weight=weight,
                                 predictions=predictions)

    hist = fit(_model(), x, c, noisy, loss_fn=loss_fn, online_warmup=1, config=_cfg(epochs=3))
    assert all(r["auroc_vs_flag"] is None for r in hist.noise_model)
    assert len(hist.noise_model) == 3
    # the validation call of each epoch sees the held-out rows, which are never refitted: w = 0
    assert float(seen[-1].max()) == 0.0


@pytest.mark.parametrize("bad", [{"mixup": -1.0}, {"prior_reg": -0.5}, {"mixup": float("inf")}])
def test_bad_mixup_and_prior_settings_are_user_errors(bad):
    from cleanpipe.errors import InputError
    with pytest.raises(InputError, match="--mixup|--prior-reg"):
        TrainConfig(**bad).check()


def test_bf16_loss_pass_agrees_with_float32():
    from scipy.stats import spearmanr

    from cleanpipe.train.noise import per_row_losses
    x, c, _, noisy = _blobs(n=2000, noise=0.3)
    model = _model()
    fit(model, x, c, noisy, loss_fn=cross_entropy, config=_cfg(epochs=3))
    args = (model, torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(noisy), torch.arange(2000))
    full, low = per_row_losses(*args, bf16=False), per_row_losses(*args, bf16=True)
    assert full.dtype == low.dtype == torch.float32
    np.testing.assert_allclose(low.numpy(), full.numpy(), rtol=0.02, atol=0.05)
    assert spearmanr(low.numpy(), full.numpy())[0] > 0.99
    share = [fit_loss_mixture(v.numpy().astype(np.float64)).p_noisy(v.numpy()).mean() for v in (full, low)]
    assert abs(share[0] - share[1]) < 0.02
