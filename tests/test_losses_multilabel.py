"""The multi-label losses over a softmax: known answers, limits, weights, gradients and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.errors import InputError
from cleanpipe.losses import LOSSES, cross_entropy, get_loss, softmax_abs, softmax_labels

MULTI = {"softmax-labels": softmax_labels, "abs-kl": softmax_abs}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=g) * 3
    targets = (torch.rand(12, 5, generator=g) < 0.4).float()
    targets[0] = 0.0  # a row without tags
    targets[1] = torch.tensor([1.0, 0, 0, 0, 0])  # a single tag
    return logits, targets


def test_registered_under_their_names():
    assert get_loss("softmax-labels") is softmax_labels
    assert get_loss("abs-kl") is softmax_abs
    assert {"softmax-labels", "abs-kl"} <= set(LOSSES)


def test_known_answers_by_hand():
    # q = softmax(2, 0, -1) = (e^2, 1, e^-1) / (e^2 + 1 + e^-1); tags {0, 2} -> t = (1/2, 0, 1/2)
    z = math.exp(2) + 1 + math.exp(-1)
    q = [math.exp(2) / z, 1 / z, math.exp(-1) / z]
    logits, targets = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 0.0, 1.0]])
    ce = -(0.5 * math.log(q[0]) + 0.5 * math.log(q[2]))
    l1 = abs(q[0] - 0.5) + q[1] + abs(q[2] - 0.5)
    assert softmax_labels(logits, targets).item() == pytest.approx(ce, rel=1e-6)  # 1.6698
    assert softmax_abs(logits, targets).item() == pytest.approx(l1, rel=1e-6)  # 0.9160
    assert ce == pytest.approx(1.6698, abs=1e-4) and l1 == pytest.approx(0.9160, abs=1e-4)
    # equal logits, both tags: the softmax is the target
    assert softmax_labels(torch.zeros(1, 2), torch.ones(1, 2)).item() == pytest.approx(math.log(2))
    assert softmax_abs(torch.zeros(1, 2), torch.ones(1, 2)).item() == 0.0


def test_one_tag_reduces_to_single_label_losses(batch):
    logits, _ = batch
    y = torch.arange(12) % 5
    onehot = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(softmax_labels(logits, onehot), cross_entropy(logits, y), atol=1e-6)
    q_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(softmax_abs(logits, onehot, reduction="none"), 2 * (1 - q_y), atol=1e-6)


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_finite_loss_and_gradient(name, scale, batch):
    logits, targets = batch
    x = (logits * scale).requires_grad_(True)
    loss = MULTI[name](x, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert (x.grad[0] == 0).all()  # the row without tags pulls on nothing


@pytest.mark.parametrize("name", MULTI)
def test_zero_weight_removes_row(name, batch):
    logits, targets = batch
    w = torch.ones(12)
    w[5] = 0.0
    keep = torch.arange(12) != 5
    assert torch.allclose(MULTI[name](logits, targets, weight=w), MULTI[name](logits[keep], targets[keep]))


@pytest.mark.parametrize("name", MULTI)
def test_rows_without_tags_are_left_out_of_the_mean(name, batch):
    logits, targets = batch
    tagged = targets.sum(dim=1) > 0
    per_row = MULTI[name](logits, targets, reduction="none")
    assert per_row[0] == 0
    assert torch.allclose(MULTI[name](logits, targets), per_row[tagged].mean())
    # a batch of untagged rows gives 0 with its graph intact
    x = logits.clone().requires_grad_(True)
    loss = MULTI[name](x, torch.zeros_like(targets))
    loss.backward()
    assert loss.item() == 0 and (x.grad == 0).all()


@pytest.mark.parametrize("name", MULTI)
def test_weights_and_reduction_none(name, batch):
    logits, targets = batch
    w = torch.linspace(0, 2, 12)
    per_row = MULTI[name](logits, targets, reduction="none")
    assert torch.allclose(MULTI[name](logits, targets, weight=w, reduction="none"), per_row * w)
    tagged = (targets.sum(dim=1) > 0).float()
    expected = (per_row * w).sum() / (w * tagged).sum()
    assert torch.allclose(MULTI[name](logits, targets, weight=w), expected)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 6), st.integers(0, 2**31 - 1), st.floats(0.01, 50))
def test_bounds_and_row_permutation(n, k, seed, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    targets = (torch.rand(n, k, generator=g) < 0.5).float()
    perm = torch.randperm(n, generator=g)
    for fn in MULTI.values():
        per_row = fn(logits, targets, reduction="none")
        assert torch.isfinite(per_row).all() and (per_row >= -1e-6).all()
        assert torch.allclose(fn(logits[perm], targets[perm]), fn(logits, targets), atol=1e-5)
    assert (softmax_abs(logits, targets, reduction="none") <= 2 + 1e-6).all()


BAD = {
    "targets shape": lambda f: f(torch.zeros(3, 4), torch.zeros(3)),
    "targets > 1": lambda f: f(torch.zeros(3, 4), torch.full((3, 4), 2.0)),
    "targets nan": lambda f: f(torch.zeros(3, 4), torch.full((3, 4), math.nan)),
    "weight negative": lambda f: f(torch.zeros(3, 4), torch.ones(3, 4), weight=torch.tensor([1.0, -1, 1])),
    "logits int": lambda f: f(torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 4)),
    "reduction": lambda f: f(torch.zeros(3, 4), torch.ones(3, 4), reduction="sum"),
}


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("call", list(BAD.values()), ids=list(BAD))
def test_bad_arguments_raise_one_line_input_error(name, call):
    with pytest.raises(InputError) as info:
        call(MULTI[name])
    assert "\n" not in str(info.value)
