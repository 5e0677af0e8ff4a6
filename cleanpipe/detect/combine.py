"""The default rule that combines confident learning and the loss mixture, and the other methods.

Each method returns the same :class:`Detection`; every signal stays visible in it whatever the method
(``p_noisy`` from the mixture, the confident-learning estimates, ``label_score``), only
``is_label_issue`` depends on the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import DEFAULT_BLOCK_ROWS
from .confident import ConfidentLearning, confident_learning, flags_by_class, flags_by_noise_rate
from .mixture import LossMixture, fit_loss_mixture

#: Method names accepted by :func:`detect`; the first is the default.
METHODS = ("combined", "noise_rate", "per_class", "both", "mixture")

_LOSS_FLOOR = 1e-12


@dataclass(frozen=True)
class Detection:
    """Per-row results and the estimates behind them.

    Attributes
    ----------
    is_label_issue : ndarray of shape (n_samples,), bool
    label_score : ndarray of shape (n_samples,)
        In [0, 1]; higher = more likely correct.
    p_noisy : ndarray of shape (n_samples,)
        Posterior of the high-loss mixture component.
    predicted : ndarray of shape (n_samples,), int
    loss : ndarray of shape (n_samples,)
        Cross-entropy ``-log p_given``.
    confident : ConfidentLearning
    mixture : LossMixture
    method : str
    """

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_noisy: np.ndarray
    predicted: np.ndarray
    loss: np.ndarray
    confident: ConfidentLearning
    mixture: LossMixture
    method: str


def label_quality(cl: ConfidentLearning, p_noisy: np.ndarray) -> np.ndarray:
    """The default ``label_score``: mean of the threshold-adjusted margin and ``1 - p_noisy``.

    Both terms are in [0, 1]: ``(1 + adjusted_margin) / 2`` ranks a row by how much more likely its
    given class is than any other once each class is measured against its own threshold (confident
    learning's calibration), ``1 - p_noisy`` by how clearly its loss belongs to the clean population.
    """
    return 0.5 * (0.5 * (1.0 + cl.adjusted_margin)) + 0.5 * (1.0 - p_noisy)


def detect(labels: np.ndarray, pred_probs, *, method: str = "combined", mixture: str = "beta",
           block_rows: int = DEFAULT_BLOCK_ROWS) -> Detection:
    """Score and flag rows of validated inputs (see :func:`cleanpipe.find_label_issues`).

    Notes
    -----
    The default ``"combined"`` rule: confident learning estimates how many rows of each given class
    are wrong (the calibrated confident joint's off-diagonal); within each given class the rows are
    ranked by ``label_score``, which blends the confident-learning margin with the loss-mixture
    posterior, and the estimated number of lowest-scoring rows is flagged. A row whose arg-max
    class equals its given label is never flagged. Other methods: ``noise_rate`` (confident learning,
    prune by noise rate), ``per_class`` (prune by class, ranked by self-confidence), ``both``
    (their intersection), ``mixture`` (``p_noisy >= 0.5`` and arg-max differs from the label).
    """
    cl = confident_learning(labels, pred_probs, block_rows=block_rows)
    loss = -np.log(np.maximum(cl.p_given, _LOSS_FLOOR))
    mix = fit_loss_mixture(loss, family=mixture)
    p_noisy = mix.p_noisy(loss)
    score = np.clip(label_quality(cl, p_noisy), 0.0, 1.0)
    disagrees = cl.predicted != labels
    if method == "combined":
        flags = flags_by_class(cl, labels, score)
    elif method == "noise_rate":
        flags = flags_by_noise_rate(cl, labels)
    elif method == "per_class":
        flags = flags_by_class(cl, labels)
    elif method == "both":
        flags = flags_by_noise_rate(cl, labels) & flags_by_class(cl, labels)
    elif method == "mixture":
        flags = (p_noisy >= 0.5) & disagrees
    else:
        raise ValueError(f"unknown method {method!r}")
    return Detection(flags, score, p_noisy, cl.predicted, loss, cl, mix, method)
