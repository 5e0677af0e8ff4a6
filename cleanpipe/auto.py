"""What ``retrain --loss auto`` trains with: a pure function of the noise estimates.

The estimates are ``flag``'s (its noise matrix ``P(given | true)`` and class prior, read from the
flags file's summary or a cleaned table's provenance) or, when no flag run is found, a quick one of
retrain's own (:func:`cleanpipe.train.quick_estimate`). :func:`estimate` reduces them to three
numbers (the noise rate, how concentrated the flips are, the number of classes) and
:func:`choose_training` maps those to a loss, the labels to train on and the settings that go
with it. Nothing here imports torch or reads data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

#: What ``auto`` trains with without any estimate: symmetric cross-entropy is robust to noise
#: spread over the other classes, costs no more than cross-entropy and needs nothing from flag.
FALLBACK_LOSS = "sce"
#: ``forward`` when :func:`flip_concentration` is at least this: between what flag's matrices gave
#: in ``benchmarks/retrain.py`` for symmetric noise (0.02-0.14) and pair noise (0.57-0.65).
PAIR_SHARE = 0.35
#: Estimated noise rate from which ``auto`` takes the heavy-noise branch (:data:`HEAVY`) on noise
#: that is not pair-like. Fitted on the tune tables of ``benchmarks/retrain_auto.py``.
HEAVY_NOISE = 0.45
#: The heavy-noise branch: dynamic bootstrapping with an online loss mixture (Arazo et al., ICML
#: 2019), mixup and the prior term, trained for a fixed number of epochs on every labelled row
#: (no validation split) and the last epoch kept. Fitted on the tune tables of
#: ``benchmarks/retrain_auto.py``; see :func:`choose_training`.
HEAVY = {"loss": "dynamic-hard", "labels": "flag-scored",
         "settings": {"epochs": 60, "patience": 0, "val_fraction": 0.0, "mixup": 1.0, "prior_reg": 1.0,
                      "warmup": 5}}
#: The light-noise branch (estimated rate below :data:`HEAVY_NOISE`, flips not pair-like):
#: early-learning regularisation (Liu et al., NeurIPS 2020; ``lambda`` 3, momentum 0.7, the
#: paper's CIFAR-10 values) for a fixed number of epochs on every labelled row, last epoch kept.
#: On the tune tables of ``benchmarks/retrain_auto.py`` at 10% and 30% symmetric noise it beat
#: ``sce`` with early stopping (the choice before) in every case; with early stopping itself it
#: did worse than with the fixed 60 epochs (ELR keeps the network off the noisy labels, so
#: the late epochs do not memorise them).
LIGHT = {"loss": "elr", "labels": "flag-scored",
         "settings": {"epochs": 60, "patience": 0, "val_fraction": 0.0}}


@dataclass(frozen=True)
class NoiseEstimate:
    """The numbers ``auto`` chooses from.

    Attributes
    ----------
    noise_rate : float
        Estimated share of labelled rows whose label is wrong, in [0, 1].
    flip_concentration : float
        :func:`flip_concentration` of the noise matrix, in [0, 1].
    n_classes : int
    source : str
        Where the estimate came from: ``"flag"`` or ``"quick estimate"``.
    """

    noise_rate: float
    flip_concentration: float
    n_classes: int
    source: str = "flag"

    def to_dict(self) -> dict:
        return {"noise_rate": round(float(self.noise_rate), 6),
                "flip_concentration": round(float(self.flip_concentration), 6),
                "n_classes": int(self.n_classes), "source": self.source}


@dataclass(frozen=True)
class TrainingChoice:
    """What ``auto`` resolved to.

    Attributes
    ----------
    loss : str
        A single-label loss of :data:`cleanpipe.losses.LOSSES`.
    labels : {"given", "flag-scored"}
        Train on the label column as it is, or on the labels flag scored (``original_label`` of a
        table ``clean --mode relabel`` wrote; the label column itself elsewhere).
    settings : dict
        :class:`~cleanpipe.settings.TrainConfig` fields and ``warmup`` that go with the loss; a
        setting the caller changed from its default keeps the caller's value.
    record : dict
        JSON-ready: what was chosen, the estimates, the thresholds and the reason in words.
    """

    loss: str
    labels: str = "given"
    settings: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def flip_concentration(noise_matrix) -> float:
    """How much of each class's estimated flips goes to one other class, from 0 (spread evenly over
    the other classes, as symmetric noise does) to 1 (all to one class, as pair noise does).

    Parameters
    ----------
    noise_matrix : array-like of shape (K, K), K >= 3
        ``P(given | true)``, indexed ``[given, true]``.

    Returns
    -------
    float
        ``(s - 1 / (K - 1)) / (1 - 1 / (K - 1))`` clipped to ``[0, 1]``, where
        ``s = sum_j max_{i != j} T[i, j] / sum_j sum_{i != j} T[i, j]`` is the share of the
        off-diagonal mass that lies in each true class's largest off-diagonal cell: ``s`` is
        ``1 / (K - 1)`` for evenly spread flips, so the rescaling makes the value comparable across
        numbers of classes. 0 for a matrix without flips.

    Examples
    --------
    >>> flip_concentration([[0.7, 0.0, 0.3], [0.3, 0.7, 0.0], [0.0, 0.3, 0.7]])
    1.0
    >>> flip_concentration([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    0.0
    """
    t = np.asarray(noise_matrix, dtype=np.float64)
    k = len(t)
    off = t * (1 - np.eye(k))
    total = off.sum()
    if total <= 0 or k < 3:
        return 0.0
    share = off.max(axis=0).sum() / total
    return float(np.clip((share - 1 / (k - 1)) / (1 - 1 / (k - 1)), 0.0, 1.0))


def noise_rate(noise_matrix, prior=None) -> float:
    """Share of wrong labels implied by a noise matrix and the true-class prior.

    Parameters
    ----------
    noise_matrix : array-like of shape (K, K)
        ``P(given | true)``, indexed ``[given, true]``; columns are renormalised.
    prior : array-like of shape (K,), optional
        ``P(true)``; default uniform. Renormalised.

    Returns
    -------
    float
        ``sum_j prior_j (1 - T[j, j])``.

    Examples
    --------
    >>> noise_rate([[0.4, 0.3], [0.6, 0.7]], [0.5, 0.5])
    0.45
    """
    t = np.asarray(noise_matrix, dtype=np.float64)
    col = t.sum(axis=0)
    t = t / np.where(col > 0, col, 1.0)
    p = np.full(len(t), 1.0 / len(t)) if prior is None else np.asarray(prior, dtype=np.float64)
    p = p / p.sum()
    return float(np.clip(np.sum(p * (1.0 - np.diag(t))), 0.0, 1.0))


def estimate(noise_matrix, prior=None, *, source: str = "flag") -> NoiseEstimate:
    """Reduce a noise matrix (and the class prior) to a :class:`NoiseEstimate`.

    Raises
    ------
    InputError
        The matrix is not square, or holds negative or non-finite values, or the prior does not
        match it.
    """
    t = np.asarray(noise_matrix, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or len(t) < 2:
        raise InputError(f"the noise matrix has shape {t.shape}, not K x K; pass the summary.json "
                         "cleanpipe flag wrote for this data")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError("the noise matrix holds negative or non-finite values; pass the summary.json "
                         "cleanpipe flag wrote for this data")
    if prior is not None:
        p = np.asarray(prior, dtype=np.float64)
        if p.shape != (len(t),) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise InputError(f"the class prior has shape {p.shape} or bad values for a {len(t)}-class "
                             "noise matrix; pass the summary.json cleanpipe flag wrote for this data")
    return NoiseEstimate(noise_rate(t, prior), flip_concentration(t), len(t), source)


def choose_training(est: NoiseEstimate | None) -> TrainingChoice:
    """The loss, labels and settings ``auto`` trains with, from the noise estimates.

    Parameters
    ----------
    est : NoiseEstimate or None
        None when no estimate could be made.

    Returns
    -------
    TrainingChoice

    Notes
    -----
    In order:

    1. no estimate: :data:`FALLBACK_LOSS`;
    2. three or more classes and pair-like flips (``flip_concentration >= PAIR_SHARE``):
       ``forward`` on the labels flag scored, whatever the rate. Symmetric losses tolerate flips
       spread over the other classes but not flips that send a class to one other class, where
       the flipped rows form a consistent wrong signal; ``forward`` models any class-dependent
       noise but its estimated matrix costs more than it corrects on spread-out noise
       (``benchmarks/retrain.py``);
    3. ``noise_rate >= HEAVY_NOISE``: :data:`HEAVY`. At such rates the early-stopping split is
       as noisy as the training rows, and on the tune tables its accuracy moved less than its own
       sampling error while the clean accuracy rose by several points, so the heavy branch trains
       a fixed number of epochs on every row and keeps the last;
    4. otherwise :data:`LIGHT` (ELR). On heavy noise ELR lost to :data:`HEAVY` on the tune
       tables, so it is not used there.

    With two classes every flip goes to the other class, so the concentration says nothing and
    only the rate is used.

    Examples
    --------
    >>> choose_training(NoiseEstimate(0.6, 0.05, 5)).loss
    'dynamic-hard'
    >>> choose_training(NoiseEstimate(0.3, 0.05, 5)).loss
    'elr'
    >>> choose_training(None).loss
    'sce'
    >>> choose_training(NoiseEstimate(0.3, 0.9, 5)).loss
    'forward'
    """
    thresholds = {"pair_share": PAIR_SHARE, "heavy_noise": HEAVY_NOISE}
    if est is None:
        return TrainingChoice(FALLBACK_LOSS, record={"chosen": FALLBACK_LOSS, "labels": "given",
                                                     "reason": "no noise estimate"})
    record = {**est.to_dict(), "thresholds": thresholds}
    pair = est.n_classes >= 3 and est.flip_concentration >= PAIR_SHARE
    if pair:
        reason = (f"pair-like noise: flip concentration {est.flip_concentration:.2f} >= {PAIR_SHARE:g} "
                  "(most flips of a class go to one other class)")
        return TrainingChoice("forward", "flag-scored", {},
                              {"chosen": "forward", "labels": "flag-scored", **record, "reason": reason})
    spread = ("two classes" if est.n_classes < 3 else
              f"flips spread over classes (concentration {est.flip_concentration:.2f} < {PAIR_SHARE:g})")
    if est.noise_rate >= HEAVY_NOISE:
        s = HEAVY["settings"]
        reason = (f"heavy noise: estimated noise rate {est.noise_rate:.2f} >= {HEAVY_NOISE:g}, {spread}; "
                  f"{HEAVY['loss']} with mixup {s['mixup']:g} and prior weight {s['prior_reg']:g}, "
                  f"{s['epochs']} epochs after {s['warmup']} of warm-up, last epoch kept")
        return TrainingChoice(HEAVY["loss"], HEAVY["labels"], dict(s),
                              {"chosen": HEAVY["loss"], "labels": HEAVY["labels"], **record,
                               "settings": dict(s), "reason": reason})
    s = LIGHT["settings"]
    reason = (f"estimated noise rate {est.noise_rate:.2f} < {HEAVY_NOISE:g}, {spread}; {LIGHT['loss']} "
              f"(early-learning regularisation), {s['epochs']} epochs, last epoch kept")
    return TrainingChoice(LIGHT["loss"], LIGHT["labels"], dict(s),
                          {"chosen": LIGHT["loss"], "labels": LIGHT["labels"], **record,
                           "settings": dict(s), "reason": reason})
