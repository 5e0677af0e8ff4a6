"""Label-error detectors: pure numpy over ``labels`` and ``pred_probs``.

``confident`` holds confident learning (thresholds, confident joint, noise estimates, pruning),
``mixture`` the loss-mixture EM, ``combine`` the rule that joins them (``temperature``: the
error probabilities its count reads), ``multilabel`` the one-vs-rest version of both for
multi-label data; ``partitioned`` runs the single-label detector as passes over partitions
(mergeable partials), with the same answer as ``detect``, and ``partitioned_multilabel`` the
multi-label one in the same protocol, with the same answer as ``detect_multilabel``.
"""

from ._validate import check_labels, check_pred_probs, iter_blocks
from .combine import METHODS, Detection, detect
from .confident import ConfidentLearning, confident_learning
from .partitioned import (Estimates, PartitionDetection, Step, detect_partitions, detection_plan,
                          merge_pair, merge_partials, partition_partial, partition_result)
from .partitioned_multilabel import (MultilabelEstimates, PartitionMultilabelDetection,
                                     detect_multilabel_partitions, multilabel_detection_plan)
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
    "detection_plan", "partition_partial", "merge_pair", "merge_partials", "partition_result",
    "detect_partitions", "Step", "Estimates", "PartitionDetection", "multilabel_detection_plan",
    "detect_multilabel_partitions", "MultilabelEstimates", "PartitionMultilabelDetection",
]
