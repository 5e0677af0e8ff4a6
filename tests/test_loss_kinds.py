"""The torch-free loss registry agrees with the losses themselves."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

from cleanpipe.errors import InputError
from cleanpipe.loss_kinds import (LOSS_KINDS, is_multilabel_loss, loss_choices, loss_kind, multilabel_losses,
                                  single_label_losses)
from cleanpipe.losses import LOSSES, get_loss
from cleanpipe.settings import AUTO_LOSS, DEFAULT_MULTILABEL_LOSS


def _takes_a_tag_matrix(name: str) -> bool:
    """The old discovery, kept as the oracle: single-label losses refuse a float target matrix."""
    try:
        get_loss(name)(torch.zeros((2, 3)), torch.zeros((2, 3)))
    except (InputError, TypeError):
        return False
    return True


def test_the_registry_lists_every_loss_in_order_with_its_kind():
    assert list(LOSS_KINDS) == list(LOSSES)
    for name in LOSSES:
        assert is_multilabel_loss(name) == _takes_a_tag_matrix(name), name


@pytest.mark.parametrize("name", list(LOSSES))
def test_needs_and_params_match_the_signatures(name):
    fn = get_loss(name)
    fixed = getattr(fn, "keywords", {})  # dynamic-hard / -soft are partials fixing mode
    sig = inspect.signature(fn)
    kwonly = {p.name: p for p in sig.parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.name not in fixed}
    required = {n for n, p in kwonly.items() if p.default is p.empty}
    kind = loss_kind(name)
    assert set(kind.needs) == required
    hyper = set(kwonly) - required - {"weight", "reduction", "predictions", "mode"}
    assert set(kind.params) == hyper


def test_choices_per_kind_and_unknown_names():
    assert DEFAULT_MULTILABEL_LOSS in multilabel_losses() == loss_choices(True)
    assert loss_choices(False) == [*single_label_losses(), AUTO_LOSS]
    assert not set(single_label_losses()) & set(multilabel_losses())
    with pytest.raises(InputError, match="unknown loss 'nope'"):
        loss_kind("nope")


def test_checking_a_loss_or_the_settings_needs_no_torch():
    code = ("import sys; from cleanpipe.loss_kinds import loss_choices; from cleanpipe.settings import "
            "TrainConfig; TrainConfig().check(); loss_choices(True); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
