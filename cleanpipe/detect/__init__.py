"""Label-error detectors: pure numpy over ``labels`` and ``pred_probs``.

``confident`` holds confident learning (thresholds, confident joint, noise estimates, pruning),
``mixture`` the loss-mixture EM, ``combine`` the rule that joins them (``temperature``: the
error probabilities its count reads), ``multilabel`` the
one-vs-rest version of both for multi-label data.
"""

from ._validate import check_labels, check_pred_probs, iter_blocks
from .combine import METHODS, Detection, detect
from .confident import ConfidentLearning, confident_learning
from .mixture import LossMixture, MixtureFit, fit_loss_mixture, fit_mixture, normalise_losses
from .multilabel import (MULTILABEL_METHODS, MultilabelConfident, MultilabelDetection,
                         anchor_noise_rates, detect_multilabel, flip_posteriors,
                         multilabel_confident_learning, pair_scores, row_error_posterior)

__all__ = [
    "METHODS", "Detection", "detect", "ConfidentLearning", "confident_learning", "LossMixture",
    "MixtureFit", "fit_loss_mixture", "fit_mixture", "normalise_losses", "check_labels",
    "check_pred_probs", "iter_blocks", "MULTILABEL_METHODS", "MultilabelConfident",
    "MultilabelDetection", "detect_multilabel", "multilabel_confident_learning", "pair_scores",
    "anchor_noise_rates", "flip_posteriors", "row_error_posterior",
]
