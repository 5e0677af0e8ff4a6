"""Multi-label maths of retraining: tag probabilities, micro-F1, the best tag cut, validation metrics.

:func:`cleanpipe.train.retrain_table` trains a network with one output per tag when the label is a
set of tags (a list column, or several 0/1 columns), with a multi-label loss from
:mod:`cleanpipe.losses` (``bce`` by default) and early stopping on validation micro-F1 at the cut
:func:`best_cut` finds; :func:`cleanpipe.train.predict_table` writes each row's tags.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score

#: Probability above which a sigmoid output predicts its tag (models saved without a tuned cut).
SIGMOID_THRESHOLD = 0.5


def micro_f1(pred: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """Row-weighted micro-F1 of a 0/1 prediction matrix: ``2 TP / (2 TP + FP + FN)`` over all cells.

    Examples
    --------
    >>> round(micro_f1(torch.tensor([[1., 0.], [1., 1.]]), torch.tensor([[1., 0.], [0., 1.]])), 4)
    0.8
    """
    w = torch.ones(len(targets), device=targets.device) if weight is None else weight
    w = w[:, None]
    tp = (pred * targets * w).sum()
    wrong = ((pred - targets).abs() * w).sum()
    den = 2 * tp + wrong
    return float(2 * tp / den) if float(den) > 0 else 0.0


def best_cut(scores: torch.Tensor, targets: torch.Tensor,
             weight: torch.Tensor | None = None) -> tuple[float, float]:
    """The threshold on ``scores`` that maximises micro-F1 over all cells, and that F1.

    One sort of the flattened scores: predicting the top ``j`` cells gives
    ``F1_j = 2 TP_j / (j + P)`` (weighted); only cuts between distinct scores count. The threshold
    is the midpoint between the last cell kept and the next one, so ``scores > threshold`` predicts
    exactly the kept cells.

    Examples
    --------
    >>> best_cut(torch.tensor([[0.6, 0.3], [0.2, 0.05]]), torch.tensor([[1., 1.], [0., 0.]]))
    (1.0, 0.25)
    """
    k = scores.shape[1]
    w = torch.ones(len(scores), device=scores.device) if weight is None else weight
    s = scores.reshape(-1).double()
    y = targets.reshape(-1).double()
    ww = w.double().repeat_interleave(k)
    order = torch.argsort(s, descending=True, stable=True)
    s, y, ww = s[order], y[order], ww[order]
    tp = torch.cumsum(y * ww, 0)
    f1 = 2 * tp / (torch.cumsum(ww, 0) + (y * ww).sum()).clamp_min(1e-12)
    cut = torch.ones_like(f1, dtype=torch.bool)
    cut[:-1] = s[:-1] > s[1:]
    f1 = torch.where(cut, f1, torch.zeros_like(f1))
    j = int(torch.argmax(f1))
    thr = float((s[j] + s[j + 1]) / 2) if j + 1 < len(s) else float(s[j]) - 1e-6
    return round(float(f1[j]), 6), round(thr, 6)


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Micro-F1, macro-F1 (tags ``probs > threshold``) and mAP of probabilities against 0/1 targets.

    mAP is scikit-learn's ``average_precision_score(average="macro")`` over the classes with at
    least one positive row (AP is undefined without one); ``map_classes`` says how many.
    """
    if len(targets) == 0:
        return {"micro_f1": None, "macro_f1": None, "map": None, "map_classes": 0}
    pred = probs > threshold
    has = targets.sum(axis=0) > 0
    ap = (float(average_precision_score(targets[:, has], probs[:, has], average="macro"))
          if has.any() else None)
    return {"micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
            "map": ap, "map_classes": int(has.sum())}


def tag_probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Per-tag probabilities: K sigmoids, or a softmax over the tags for ``output == "softmax"``."""
    return torch.softmax(logits, dim=1) if output == "softmax" else torch.sigmoid(logits)
