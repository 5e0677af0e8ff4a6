"""What each loss of :data:`cleanpipe.losses.LOSSES` is, without importing torch.

A config (``cleanpipe retrain --loss``, ``[retrain] loss`` of a pipeline) is checked against this
registry: whether a loss takes class indices or a 0/1 tag matrix, which arguments the caller must
supply (``forward`` needs flag's noise matrix, ``dynamic-*`` a per-row noise posterior), its
hyper-parameters (``--loss-param``) and, for multi-label losses, whether the network's outputs are K
sigmoids or a softmax over the tags. The losses themselves (torch) are in :mod:`cleanpipe.losses`;
a test keeps the two registries' names and kinds equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .settings import AUTO_LOSS


@dataclass(frozen=True)
class LossKind:
    """One registered loss.

    Attributes
    ----------
    multi_label : bool
        Takes a 0/1 target matrix (one column per tag) rather than class indices.
    needs : tuple of str
        Keyword arguments the caller must pass (``noise_matrix``, ``noisy_weight``).
    params : tuple of str
        Hyper-parameters a user may set (``--loss-param q=0.7``).
    output : {"softmax", "sigmoid"}
        How the network's outputs become probabilities.
    """

    multi_label: bool = False
    needs: tuple = ()
    params: tuple = ()
    output: str = "softmax"


LOSS_KINDS = {
    "ce": LossKind(),
    "label-smoothing": LossKind(params=("smoothing",)),
    "soft-bootstrap": LossKind(params=("beta",)),
    "hard-bootstrap": LossKind(params=("beta",)),
    "dynamic-hard": LossKind(needs=("noisy_weight",)),
    "dynamic-soft": LossKind(needs=("noisy_weight",)),
    "forward": LossKind(needs=("noise_matrix",)),
    "gce": LossKind(params=("q",)),
    "sce": LossKind(params=("alpha", "beta", "log_zero")),
    "clipped-ce": LossKind(params=("max_loss",)),
    "uniform-mixture": LossKind(params=("rho",)),
    "elr": LossKind(needs=("target_average",), params=("lam",)),
    "bce": LossKind(multi_label=True, params=("smoothing", "bootstrap"), output="sigmoid"),
    "softmax-labels": LossKind(multi_label=True),
    "abs-kl": LossKind(multi_label=True),
}


def loss_kind(name: str) -> LossKind:
    """The registry entry of ``name``; an unknown name is one line listing the known ones."""
    try:
        return LOSS_KINDS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_KINDS)}.") from None


def is_multilabel_loss(name: str) -> bool:
    """Whether the registered loss ``name`` takes a 0/1 target matrix (multi-label)."""
    return loss_kind(name).multi_label


def single_label_losses() -> list:
    """Names of the losses for one class per row, in registry order."""
    return [n for n, k in LOSS_KINDS.items() if not k.multi_label]


def multilabel_losses() -> list:
    """Names of the losses for sets of tags, in registry order."""
    return [n for n, k in LOSS_KINDS.items() if k.multi_label]


def loss_choices(multi_label: bool) -> list:
    """What ``--loss`` / ``[retrain] loss`` accept for the kind of label (``auto`` is single-label)."""
    return multilabel_losses() if multi_label else [*single_label_losses(), AUTO_LOSS]
