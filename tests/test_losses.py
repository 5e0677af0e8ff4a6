"""Tests for cleanpipe.losses: limits, weights, known answers, properties and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.errors import InputError
from cleanpipe.losses import (
    ELR_CLAMP,
    LOSSES,
    clipped_cross_entropy,
    cross_entropy,
    dynamic_bootstrap,
    early_learning_regularized,
    elr_target_update,
    forward_corrected,
    generalized_cross_entropy,
    get_loss,
    hard_bootstrap,
    label_smoothing,
    sigmoid_bce,
    soft_bootstrap,
    symmetric_cross_entropy,
    uniform_mixture,
)

K = 4


def _noise_matrix(k: int) -> torch.Tensor:
    """An asymmetric P(given | true), indexed [given, true], columns summing to 1."""
    t = torch.eye(k) * 3 + torch.arange(k * k, dtype=torch.float32).reshape(k, k) % 3 / 5
    return t / t.sum(dim=0, keepdim=True)


def _noisy_weight(n: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n)


def _target_average(n: int, k: int) -> torch.Tensor:
    """An ELR target per row: distinct probability vectors scaled to sum to 0.9 (a partly warmed-up
    average)."""
    z = torch.arange(n * k, dtype=torch.float32).reshape(n, k) % 5 - 2.0
    return 0.9 * torch.softmax(z, dim=1)


# name -> (function, kwargs(n, k) at typical settings); every single-label loss in the module
SINGLE = {
    "ce": (cross_entropy, lambda n, k: {}),
    "label-smoothing": (label_smoothing, lambda n, k: {"smoothing": 0.2}),
    "soft-bootstrap": (soft_bootstrap, lambda n, k: {"beta": 0.7}),
    "hard-bootstrap": (hard_bootstrap, lambda n, k: {"beta": 0.7}),
    "dynamic-hard": (dynamic_bootstrap, lambda n, k: {"noisy_weight": _noisy_weight(n), "mode": "hard"}),
    "dynamic-soft": (dynamic_bootstrap, lambda n, k: {"noisy_weight": _noisy_weight(n), "mode": "soft"}),
    "forward": (forward_corrected, lambda n, k: {"noise_matrix": _noise_matrix(k)}),
    "gce": (generalized_cross_entropy, lambda n, k: {"q": 0.7}),
    "sce": (symmetric_cross_entropy, lambda n, k: {"alpha": 0.1, "beta": 1.0}),
    "clipped-ce": (clipped_cross_entropy, lambda n, k: {"max_loss": 2.0}),
    "uniform-mixture": (uniform_mixture, lambda n, k: {"rho": 0.3}),
    "elr": (early_learning_regularized, lambda n, k: {"target_average": _target_average(n, k), "lam": 3.0}),
}

# the same losses at the hyper-parameters where they reduce to cross-entropy
AT_CE_LIMIT = {
    "label-smoothing": (label_smoothing, lambda n, k: {"smoothing": 0.0}),
    "soft-bootstrap": (soft_bootstrap, lambda n, k: {"beta": 1.0}),
    "hard-bootstrap": (hard_bootstrap, lambda n, k: {"beta": 1.0}),
    "dynamic-hard": (dynamic_bootstrap, lambda n, k: {"noisy_weight": torch.zeros(n), "mode": "hard"}),
    "dynamic-soft": (dynamic_bootstrap, lambda n, k: {"noisy_weight": torch.zeros(n), "mode": "soft"}),
    "forward": (forward_corrected, lambda n, k: {"noise_matrix": torch.eye(k)}),
    "gce": (generalized_cross_entropy, lambda n, k: {"q": 1e-4}),
    "sce": (symmetric_cross_entropy, lambda n, k: {"alpha": 1.0, "beta": 0.0}),
    "clipped-ce": (clipped_cross_entropy, lambda n, k: {"max_loss": math.inf}),
    "uniform-mixture": (uniform_mixture, lambda n, k: {"rho": 0.0}),
    "elr": (early_learning_regularized, lambda n, k: {"target_average": _target_average(n, k), "lam": 0.0}),
}


def _call(name, logits, targets, **extra):
    """Call loss ``name`` with its typical hyper-parameters; bce gets a 0/1 matrix built from targets."""
    n, k = logits.shape
    if name == "bce":
        return sigmoid_bce(logits, F.one_hot(targets, k).float(), smoothing=0.1, bootstrap=0.2, **extra)
    fn, kwargs = SINGLE[name]
    return fn(logits, targets, **kwargs(n, k), **extra)


ALL_NAMES = [*SINGLE, "bce"]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def batch(gen):
    n = 9
    logits = torch.randn(n, K, generator=gen) * 3
    targets = torch.randint(0, K, (n,), generator=gen)
    return logits, targets


# --- finite values and gradients -----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_finite_loss_and_gradient(name, scale, gen):
    n = 16
    logits = (torch.randn(n, K, generator=gen).sign() * scale).requires_grad_()
    # half the rows labelled with their least likely class: the worst case for log(0)
    targets = torch.randint(0, K, (n,), generator=gen)
    targets[::2] = logits.detach()[::2].argmin(dim=1)
    weight = torch.rand(n, generator=gen)
    for w in (None, weight):
        loss = _call(name, logits, targets, weight=w)
        (grad,) = torch.autograd.grad(loss, logits)
        assert loss.dtype == torch.float32 and loss.dim() == 0
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


# --- reduces to cross-entropy ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(AT_CE_LIMIT))
def test_equals_cross_entropy_at_limit(name, batch):
    logits, targets = batch
    fn, kwargs = AT_CE_LIMIT[name]
    n, k = logits.shape
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    # GCE at q only approaches CE: loss and gradient differ by a factor ~ (1 + q log p_y)
    tol = {"rtol": 1e-2, "atol": 1e-4} if name == "gce" else {"rtol": 1e-5, "atol": 1e-6}
    got = fn(x1, targets, **kwargs(n, k), reduction="none")
    want = cross_entropy(x2, targets, reduction="none")
    torch.testing.assert_close(got, want, **tol)
    (g1,) = torch.autograd.grad(got.mean(), x1)
    (g2,) = torch.autograd.grad(want.mean(), x2)
    torch.testing.assert_close(g1, g2, **tol)
    # also matches torch's own cross-entropy
    torch.testing.assert_close(fn(logits, targets, **kwargs(n, k)), F.cross_entropy(logits, targets), **tol)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_dynamic_bootstrap_with_zero_posterior_is_exactly_cross_entropy(mode, gen):
    logits = torch.randn(20, K, generator=gen) * 50
    targets = torch.randint(0, K, (20,), generator=gen)
    got = dynamic_bootstrap(logits, targets, noisy_weight=torch.zeros(20), mode=mode, reduction="none")
    assert torch.equal(got, cross_entropy(logits, targets, reduction="none"))


# --- weights -----------------------------------------------------------------------------------------


def _row_kwargs(name, n, k=K):
    """Per-row hyper-parameters that must be sliced along with the rows."""
    if name == "elr":
        return {"target_average": _target_average(n, k)}
    return {"noisy_weight": _noisy_weight(n)} if name.startswith("dynamic") else {}


def _call_rows(name, logits, targets, rows, **extra):
    n, k = logits.shape
    if name == "bce":
        return sigmoid_bce(logits[rows], F.one_hot(targets[rows], k).float(), smoothing=0.1, bootstrap=0.2,
                           **extra)
    fn, kwargs = SINGLE[name]
    kw = {**kwargs(n, k), **{key: v[rows] for key, v in _row_kwargs(name, n).items()}}
    return fn(logits[rows], targets[rows], **kw, **extra)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_zero_weight_removes_row(name, batch):
    logits, targets = batch
    n = logits.shape[0]
    x = logits.clone().requires_grad_()
    w = torch.ones(n)
    w[0] = 0.0
    got = _call_rows(name, x, targets, slice(None), weight=w)
    want = _call_rows(name, logits, targets, slice(1, None))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(got, x)
    assert torch.equal(grad[0], torch.zeros(K))
    assert grad[1:].abs().sum() > 0


@pytest.mark.parametrize("name", ALL_NAMES)
def test_uniform_weights_equal_no_weights(name, batch):
    logits, targets = batch
    w = torch.full((logits.shape[0],), 2.5)
    torch.testing.assert_close(_call(name, logits, targets, weight=w), _call(name, logits, targets))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_all_zero_weights_give_zero_with_graph(name, batch):
    logits, targets = batch
    x = logits.clone().requires_grad_()
    loss = _call(name, x, targets, weight=torch.zeros(logits.shape[0]))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_reduction_none_is_weighted_per_row(name, batch, gen):
    logits, targets = batch
    n = logits.shape[0]
    w = torch.rand(n, generator=gen)
    per_row = _call(name, logits, targets, reduction="none")
    assert per_row.shape == (n,)
    torch.testing.assert_close(_call(name, logits, targets, weight=w, reduction="none"), per_row * w)
    torch.testing.assert_close(_call(name, logits, targets, weight=w), (per_row * w).sum() / w.sum())
    torch.testing.assert_close(_call(name, logits, targets), per_row.mean())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_empty_batch_gives_zero(name):
    loss = _call(name, torch.zeros(0, K), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(ALL_NAMES),
    n=st.integers(1, 12),
    k=st.integers(2, 6),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 3.0, 50.0]),
    data=st.data(),
)
def test_permuting_rows_leaves_mean_unchanged(name, n, k, seed, scale, data):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    targets = torch.randint(0, k, (n,), generator=g)
    weight = torch.rand(n, generator=g) * 5
    perm = torch.tensor(data.draw(st.permutations(range(n))))

    def loss(rows):
        extra = {key: v[rows] for key, v in _row_kwargs(name, n, k).items()}
        if name == "bce":
            return sigmoid_bce(logits[rows], F.one_hot(targets[rows], k).float(), bootstrap=0.2,
                               weight=weight[rows])
        fn, kwargs = SINGLE[name]
        return fn(logits[rows], targets[rows], **{**kwargs(n, k), **extra}, weight=weight[rows])

    torch.testing.assert_close(loss(perm), loss(torch.arange(n)), rtol=1e-5, atol=1e-5)


# --- known answers -----------------------------------------------------------------------------------


def test_cross_entropy_known_answer():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([2, 0])
    l0 = -(3 - math.log(math.e + math.e**2 + math.e**3))
    l1 = math.log(3)
    assert cross_entropy(logits, targets).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    weighted = cross_entropy(logits, targets, weight=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((l0 + 3 * l1) / 4, rel=1e-6)


def test_generalized_cross_entropy_known_answer():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert generalized_cross_entropy(logits, torch.tensor([1]), q=0.5).item() == pytest.approx(
        (1 - math.sqrt(0.75)) / 0.5, rel=1e-6)
    assert generalized_cross_entropy(logits, torch.tensor([0]), q=1.0).item() == pytest.approx(0.75, rel=1e-6)


def test_forward_corrected_known_answer_and_orientation():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    # noise_matrix[given, true]: column "true = 0" is (0.8, 0.2), column "true = 1" is (0.3, 0.7)
    t = torch.tensor([[0.8, 0.3], [0.2, 0.7]])
    # p~(given = 0) = 0.8 * 1/4 + 0.3 * 3/4 = 0.425; p~(given = 1) = 0.2 * 1/4 + 0.7 * 3/4 = 0.575
    got = forward_corrected(logits, torch.tensor([0, 1]), noise_matrix=t, reduction="none")
    assert got.tolist() == pytest.approx([-math.log(0.425), -math.log(0.575)], rel=1e-6)


def test_forward_corrected_matches_matrix_product_oracle(gen):
    k = 5
    logits = torch.randn(30, k, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, k, (30,), generator=gen)
    t = _noise_matrix(k).double()
    p_tilde = torch.softmax(logits, dim=1) @ t.T  # p~[n, g] = sum_t T[g, t] p[n, t]
    want = -torch.log(p_tilde[torch.arange(30), targets])
    got = forward_corrected(logits, targets, noise_matrix=t.numpy(), reduction="none")
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)


def test_forward_corrected_renormalises_columns(batch):
    logits, targets = batch
    t = _noise_matrix(K)
    nearly = t * torch.tensor([1.0005, 0.9995, 1.0, 1.0002])
    torch.testing.assert_close(forward_corrected(logits, targets, noise_matrix=nearly),
                               forward_corrected(logits, targets, noise_matrix=t))


# p = (1/4, 3/4), label 0: each expected value written out from the loss's formula
_LOG_A, _LOG_B = math.log(0.25), math.log(0.75)
KNOWN = [
    (label_smoothing, {"smoothing": 0.2}, -(0.9 * _LOG_A + 0.1 * _LOG_B)),
    (soft_bootstrap, {"beta": 0.6}, -(0.7 * _LOG_A + 0.3 * _LOG_B)),
    (hard_bootstrap, {"beta": 0.6}, -(0.6 * _LOG_A + 0.4 * _LOG_B)),
    (dynamic_bootstrap, {"noisy_weight": torch.tensor([0.25]), "mode": "hard"},
     -(0.75 * _LOG_A + 0.25 * _LOG_B)),
    (dynamic_bootstrap, {"noisy_weight": torch.tensor([0.5]), "mode": "soft"},
     -(0.625 * _LOG_A + 0.375 * _LOG_B)),
    (symmetric_cross_entropy, {"alpha": 0.1, "beta": 1.0, "log_zero": -4.0}, -0.1 * _LOG_A + 4 * 0.75),
    (clipped_cross_entropy, {"max_loss": 1.0}, 1.0),
    (uniform_mixture, {"rho": 0.2}, -math.log(0.8 * 0.25 + 0.2 / 2)),
]


@pytest.mark.parametrize(("fn", "kwargs", "expected"), KNOWN)
def test_other_losses_known_answer(fn, kwargs, expected):
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert fn(logits, torch.tensor([0]), **kwargs).item() == pytest.approx(expected, rel=1e-6)


def test_clipped_rows_have_zero_gradient_and_default_cap_spares_untrained_model():
    x = torch.tensor([[5.0, 0.0], [0.0, 0.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(clipped_cross_entropy(x, torch.tensor([1, 1]), max_loss=2.0), x)
    assert torch.equal(grad[0], torch.zeros(2)) and grad[1].abs().sum() > 0
    # K = 100 with all-zero logits: loss log 100 > -log 0.05, yet no row may be clipped by default
    x = torch.zeros(3, 100, requires_grad=True)
    (grad,) = torch.autograd.grad(clipped_cross_entropy(x, torch.tensor([0, 1, 2])), x)
    assert (grad.abs().sum(dim=1) > 0).all()


# --- dtypes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bf16_logits(name, batch):
    logits, targets = batch
    x = logits.bfloat16().requires_grad_()
    loss = _call(name, x, targets)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, _call(name, x.detach().float(), targets))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()


# --- multi-label -------------------------------------------------------------------------------------


def test_sigmoid_bce_matches_torch(gen):
    logits = torch.randn(7, 5, generator=gen) * 30
    targets = (torch.rand(7, 5, generator=gen) > 0.5).float()
    want = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(sigmoid_bce(logits, targets), want)
    torch.testing.assert_close(sigmoid_bce(logits, targets.long()), want)


def test_sigmoid_bce_smoothing_and_bootstrap_targets(gen):
    logits = torch.randn(6, 3, generator=gen)
    targets = (torch.rand(6, 3, generator=gen) > 0.5).float()
    smoothed = targets * 0.8 + 0.1
    torch.testing.assert_close(sigmoid_bce(logits, targets, smoothing=0.2),
                               F.binary_cross_entropy_with_logits(logits, smoothed))
    mixed = 0.7 * smoothed + 0.3 * torch.sigmoid(logits)
    torch.testing.assert_close(sigmoid_bce(logits, targets, smoothing=0.2, bootstrap=0.3),
                               F.binary_cross_entropy_with_logits(logits, mixed))


# --- registry and argument errors --------------------------------------------------------------------


def test_registry_names_and_get_loss(batch):
    logits, targets = batch
    assert set(LOSSES) == {"ce", "label-smoothing", "soft-bootstrap", "hard-bootstrap", "dynamic-hard",
                           "dynamic-soft", "forward", "gce", "sce", "clipped-ce", "uniform-mixture", "elr", "bce",
                           "softmax-labels", "abs-kl"}
    assert get_loss("gce") is generalized_cross_entropy
    n = logits.shape[0]
    hard = get_loss("dynamic-hard")(logits, targets, noisy_weight=_noisy_weight(n))
    assert hard == dynamic_bootstrap(logits, targets, noisy_weight=_noisy_weight(n), mode="hard")
    assert torch.isfinite(get_loss("forward")(logits, targets, noise_matrix=_noise_matrix(K)))
    with pytest.raises(InputError, match="unknown loss 'nope'; choose one of: ce, label-smoothing"):
        get_loss("nope")


_X = torch.zeros(3, K)
_Y = torch.tensor([0, 1, 2])
BAD = {
    "logits 1-D": lambda: cross_entropy(torch.zeros(3), _Y),
    "logits int": lambda: cross_entropy(torch.zeros(3, K, dtype=torch.long), _Y),
    "logits list": lambda: cross_entropy([[0.0, 1.0]], [0]),
    "targets float": lambda: cross_entropy(_X, _Y.float()),
    "targets length": lambda: cross_entropy(_X, torch.tensor([0, 1])),
    "targets too big": lambda: cross_entropy(_X, torch.tensor([0, 1, K])),
    "targets negative": lambda: cross_entropy(_X, torch.tensor([0, -1, 2])),
    "weight negative": lambda: cross_entropy(_X, _Y, weight=torch.tensor([1.0, -1.0, 1.0])),
    "weight nan": lambda: cross_entropy(_X, _Y, weight=torch.tensor([1.0, math.nan, 1.0])),
    "weight inf": lambda: cross_entropy(_X, _Y, weight=torch.tensor([1.0, math.inf, 1.0])),
    "weight length": lambda: cross_entropy(_X, _Y, weight=torch.ones(4)),
    "reduction": lambda: cross_entropy(_X, _Y, reduction="sum"),
    "smoothing 1": lambda: label_smoothing(_X, _Y, smoothing=1.0),
    "smoothing negative": lambda: label_smoothing(_X, _Y, smoothing=-0.1),
    "smoothing text": lambda: label_smoothing(_X, _Y, smoothing="a lot"),
    "soft beta": lambda: soft_bootstrap(_X, _Y, beta=1.5),
    "hard beta": lambda: hard_bootstrap(_X, _Y, beta=-0.1),
    "hard beta nan": lambda: hard_bootstrap(_X, _Y, beta=math.nan),
    "dynamic mode": lambda: dynamic_bootstrap(_X, _Y, noisy_weight=torch.zeros(3), mode="medium"),
    "dynamic weight > 1": lambda: dynamic_bootstrap(_X, _Y, noisy_weight=torch.tensor([0.0, 1.5, 0.0])),
    "dynamic weight length": lambda: dynamic_bootstrap(_X, _Y, noisy_weight=torch.zeros(2)),
    "forward shape": lambda: forward_corrected(_X, _Y, noise_matrix=torch.eye(K - 1)),
    "forward negative": lambda: forward_corrected(_X, _Y, noise_matrix=torch.eye(K) * 2 - 0.5),
    "forward nan": lambda: forward_corrected(_X, _Y, noise_matrix=torch.full((K, K), math.nan)),
    "forward columns": lambda: forward_corrected(_X, _Y, noise_matrix=torch.eye(K) * 0.9),
    "gce q 0": lambda: generalized_cross_entropy(_X, _Y, q=0.0),
    "gce q > 1": lambda: generalized_cross_entropy(_X, _Y, q=1.5),
    "sce alpha": lambda: symmetric_cross_entropy(_X, _Y, alpha=-1.0),
    "sce beta": lambda: symmetric_cross_entropy(_X, _Y, beta=-1.0),
    "sce log_zero": lambda: symmetric_cross_entropy(_X, _Y, log_zero=0.0),
    "clipped 0": lambda: clipped_cross_entropy(_X, _Y, max_loss=0.0),
    "clipped nan": lambda: clipped_cross_entropy(_X, _Y, max_loss=math.nan),
    "rho 1": lambda: uniform_mixture(_X, _Y, rho=1.0),
    "rho negative": lambda: uniform_mixture(_X, _Y, rho=-0.2),
    "bce shape": lambda: sigmoid_bce(_X, _Y),
    "bce values": lambda: sigmoid_bce(_X, torch.full((3, K), 2.0)),
    "bce nan target": lambda: sigmoid_bce(_X, torch.full((3, K), math.nan)),
    "bce bootstrap": lambda: sigmoid_bce(_X, torch.zeros(3, K), bootstrap=1.0),
    "bce smoothing": lambda: sigmoid_bce(_X, torch.zeros(3, K), smoothing=1.0),
}


@pytest.mark.parametrize("call", list(BAD.values()), ids=list(BAD))
def test_bad_arguments_raise_one_line_input_error(call):
    with pytest.raises(InputError) as info:
        call()
    assert "\n" not in str(info.value)


def test_transposed_noise_matrix_gets_a_hint():
    rows_sum_to_one = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    with pytest.raises(InputError, match=r"pass noise_matrix\.T"):
        forward_corrected(torch.zeros(2, 2), torch.tensor([0, 1]), noise_matrix=rows_sum_to_one)


# --- early-learning regularisation (ELR) -------------------------------------------------------------


def test_elr_known_answer():
    # p = softmax(2, 0, -1) = (0.8438, 0.1142, 0.0420); l = -log p_1 + lam log(1 - <p, t>)
    p = torch.softmax(torch.tensor([2.0, 0.0, -1.0]), dim=0)
    want = -math.log(p[1]) + 1.0 * math.log(1 - p[0])
    got = early_learning_regularized(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1]),
                                     target_average=torch.tensor([[1.0, 0.0, 0.0]]), lam=1.0)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert got.item() == pytest.approx(0.3133, abs=1e-4)
    # lam 3 and t = (0.5, 0.5, 0): <p, t> = (0.8438 + 0.1142) / 2 = 0.4790
    got = early_learning_regularized(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]),
                                     target_average=torch.tensor([[0.5, 0.5, 0.0]]), lam=3.0)
    assert got.item() == pytest.approx(-math.log(p[0]) + 3 * math.log(1 - (p[0] + p[1]) / 2), rel=1e-6)


def test_elr_is_cross_entropy_without_a_target():
    logits = torch.randn(7, K, generator=torch.Generator().manual_seed(3)) * 5
    targets = torch.arange(7) % K
    got = early_learning_regularized(logits, targets, target_average=torch.zeros(7, K), reduction="none")
    assert torch.equal(got, cross_entropy(logits, targets, reduction="none"))


def test_elr_is_bounded_below_by_the_clamp():
    # a confident prediction on its own target: <p, t> = 1 - ELR_CLAMP at most, so log(1 - <p, t>)
    # is floored at log(ELR_CLAMP) and the loss stays finite with a zero gradient from the clamp
    x = torch.tensor([[60.0, 0.0, 0.0]], requires_grad=True)
    loss = early_learning_regularized(x, torch.tensor([0]), target_average=torch.tensor([[1.0, 0.0, 0.0]]),
                                      lam=2.0)
    assert loss.item() == pytest.approx(2.0 * math.log(ELR_CLAMP), rel=1e-3)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()


def test_elr_target_update_known_answer_and_no_mutation():
    t = torch.tensor([[0.2, 0.8]])
    before = t.clone()
    logits = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # p = (0.75, 0.25)
    new = elr_target_update(t, logits, beta=0.7)
    torch.testing.assert_close(new, torch.tensor([[0.7 * 0.2 + 0.3 * 0.75, 0.7 * 0.8 + 0.3 * 0.25]]))
    assert torch.equal(t, before) and not new.requires_grad


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), k=st.integers(2, 6), steps=st.integers(1, 6), beta=st.floats(0.0, 0.95),
       seed=st.integers(0, 2**31 - 1))
def test_elr_target_average_stays_a_sub_probability(n, k, steps, beta, seed):
    """From zeros, after ``steps`` updates every row is >= 0 and sums to ``1 - beta^steps``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(n, k)
    for _ in range(steps):
        t = elr_target_update(t, torch.randn(n, k, generator=g) * 10, beta=beta)
    assert bool((t >= 0).all())
    torch.testing.assert_close(t.sum(dim=1), torch.full((n,), 1 - beta ** steps), rtol=1e-5, atol=1e-5)


def _elr_parts(x, targets, t, lam):
    """Gradients w.r.t. the logits of the regulariser alone (ELR minus CE) and of ``<clamp(p), t>``."""
    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    (g_elr,) = torch.autograd.grad(early_learning_regularized(x1, targets, target_average=t, lam=lam,
                                                              reduction="none").sum(), x1)
    (g_ce,) = torch.autograd.grad(cross_entropy(x2, targets, reduction="none").sum(), x2)
    inner = (torch.softmax(x3, dim=1).clamp(ELR_CLAMP, 1 - ELR_CLAMP) * t).sum()
    (g_inner,) = torch.autograd.grad(inner, x3)
    return g_elr - g_ce, g_inner


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 6), lam=st.floats(0.1, 10.0), seed=st.integers(0, 2**31 - 1))
def test_elr_gradient_pushes_the_prediction_towards_the_target(k, lam, seed):
    """The regulariser's gradient is ``-lam / (1 - <p, t>)`` times that of ``<p, t>``: a descent step
    on it raises every row's agreement with its running target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, k, generator=g) * 2
    t = 0.95 * torch.softmax(torch.randn(5, k, generator=g) * 3, dim=1)
    targets = torch.randint(0, k, (5,), generator=g)
    g_reg, g_inner = _elr_parts(x, targets, t, lam)
    s = (torch.softmax(x, dim=1).clamp(ELR_CLAMP, 1 - ELR_CLAMP) * t).sum(dim=1, keepdim=True)
    torch.testing.assert_close(g_reg, -lam / (1 - s) * g_inner, rtol=1e-4, atol=1e-6)
    assert bool(((g_reg * g_inner).sum(dim=1) <= 1e-9).all())


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 6), shift=st.floats(-20, 20), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_elr_invariances(k, shift, seed, data):
    """A constant added to a row's logits changes nothing, and renaming the classes (permuting the
    logits' columns, the targets and the target average alike) changes nothing."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, k, generator=g) * 3
    t = 0.9 * torch.softmax(torch.randn(6, k, generator=g), dim=1)
    y = torch.randint(0, k, (6,), generator=g)
    base = early_learning_regularized(x, y, target_average=t, reduction="none")
    torch.testing.assert_close(early_learning_regularized(x + shift, y, target_average=t, reduction="none"),
                               base, rtol=1e-4, atol=1e-4)
    perm = torch.tensor(data.draw(st.permutations(range(k))))
    inv = torch.argsort(perm)  # new column j holds old column perm[j]; old class c is new class inv[c]
    torch.testing.assert_close(early_learning_regularized(x[:, perm], inv[y], target_average=t[:, perm],
                                                          reduction="none"), base, rtol=1e-5, atol=1e-5)


ELR_BAD = {
    "target shape": (lambda: early_learning_regularized(torch.zeros(2, 3), torch.tensor([0, 1]),
                                                        target_average=torch.zeros(2, 2)),
                     "target_average must have the logits' shape"),
    "target sums over 1": (lambda: early_learning_regularized(torch.zeros(2, 3), torch.tensor([0, 1]),
                                                              target_average=torch.ones(2, 3)),
                           "rows summing to at most 1"),
    "target NaN": (lambda: early_learning_regularized(torch.zeros(1, 2), torch.tensor([0]),
                                                      target_average=torch.tensor([[float("nan"), 0.0]])),
                   "must be finite"),
    "negative lam": (lambda: early_learning_regularized(torch.zeros(1, 2), torch.tensor([0]),
                                                        target_average=torch.zeros(1, 2), lam=-1.0),
                     "lam must be in"),
    "beta 1": (lambda: elr_target_update(torch.zeros(1, 2), torch.zeros(1, 2), beta=1.0), "beta must be in"),
}


@pytest.mark.parametrize("case", list(ELR_BAD), ids=list(ELR_BAD))
def test_elr_bad_arguments_raise_one_line_input_error(case):
    call, match = ELR_BAD[case]
    with pytest.raises(InputError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
