"""Multi-label retraining and prediction: K independent tag outputs on the same tabular MLP.

:func:`retrain_multilabel_table` is :func:`cleanpipe.train.retrain_table` for a label that is a set of
tags (a list column, or several 0/1 columns): the network has one output per class, trained with a
multi-label loss from :mod:`cleanpipe.losses` (``bce`` by default), early stopping on validation
micro-F1. :func:`predict_multilabel_table` writes each row's tag probabilities and predicted tags.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from .. import __version__
from ..errors import InputError
from ..target import resolve_target
from .loop import TrainConfig, fit, predict_logits, random_split, resolve_device
from .model import Preprocessor, architecture, build_model
from .store import FORMAT_NAME, FORMAT_VERSION, LoadedModel

#: Default multi-label loss, chosen with ``benchmarks/multilabel_retrain.py`` (synth10, mixed tag
#: noise at 10% / 30%): plain sigmoid binary cross-entropy. Label smoothing 0.1 lost 0.006 / 0.027
#: test micro-F1 against it; bootstrapping 0.2 gained 0.002 / 0.003 (within one seed's spread).
DEFAULT_MULTILABEL_LOSS = "bce"
#: Default hyper-parameters of the default loss: none (no smoothing, no bootstrapping).
DEFAULT_MULTILABEL_LOSS_PARAMS: dict = {}
#: Multi-label losses whose outputs are a softmax over the classes rather than K sigmoids.
SOFTMAX_LOSSES = ("softmax-labels", "abs-kl")
#: Probability above which a sigmoid output predicts its tag.
SIGMOID_THRESHOLD = 0.5


def multilabel_losses() -> list:
    """Names in :data:`cleanpipe.losses.LOSSES` that take a 0/1 target matrix."""
    from ..losses import LOSSES
    from .retrain import is_multilabel_loss
    return [n for n in LOSSES if is_multilabel_loss(n)]


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
    from sklearn.metrics import average_precision_score, f1_score
    if len(targets) == 0:
        return {"micro_f1": None, "macro_f1": None, "map": None, "map_classes": 0}
    pred = probs > threshold
    has = targets.sum(axis=0) > 0
    ap = (float(average_precision_score(targets[:, has], probs[:, has], average="macro"))
          if has.any() else None)
    return {"micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
            "map": ap, "map_classes": int(has.sum())}


def _probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    return torch.softmax(logits, dim=1) if output == "softmax" else torch.sigmoid(logits)


def _encode(table: pa.Table, label, source: str):
    target = resolve_target(table.schema, label, multi_label=True, where=source)
    enc = target.encode(table)
    return list(target.columns), target.form, enc.values, enc.labelled, enc.classes


def retrain_multilabel_table(table: pa.Table, *, label, features=None, exclude=(), ids=(),
                             weight_col: str | None = None, loss: str | None = None,
                             loss_params: dict | None = None, config: TrainConfig = TrainConfig(),
                             source: str | None = None, on_epoch: Callable | None = None):
    """Train a tabular MLP with one output per tag on the labelled rows of ``table``.

    Parameters
    ----------
    table : pyarrow.Table
        Data whose label is a set of tags; flag/clean columns are never features.
    label : str or list of str
        A list-of-tags column (a null list = unlabelled row, not used), or several 0/1 columns
        (a list or ``"a,b,c"``; a null in any of them = unlabelled).
    features, exclude, ids, weight_col, config, on_epoch
        As in :func:`cleanpipe.train.retrain_table`.
    loss : str, optional
        A multi-label loss (:func:`multilabel_losses`); default :data:`DEFAULT_MULTILABEL_LOSS`
        with :data:`DEFAULT_MULTILABEL_LOSS_PARAMS`. ``bce`` trains K sigmoids;
        ``softmax-labels`` and ``abs-kl`` a softmax over the tags.
    loss_params : dict, optional
        Loss hyper-parameters, e.g. ``{"smoothing": 0.1}`` or ``{"bootstrap": 0.2}`` for ``bce``.
    source : str, optional
        Recorded in the metrics.

    Returns
    -------
    RetrainResult
        ``spec`` records ``multi_label: true``, ``label_format`` (``list`` or ``columns``), the
        classes, ``output`` (``sigmoid`` or ``softmax``) and the tag ``threshold``; ``metrics`` holds
        ``val_micro_f1``, ``val_macro_f1`` and ``val_map`` on the validation split.

    Raises
    ------
    InputError
        A missing or malformed label, fewer than two tags, a single-label loss, bad settings.

    Notes
    -----
    The validation rows are a seeded random ``config.val_fraction`` of the labelled rows (no
    stratification). Early stopping keeps the epoch with the best validation micro-F1 (ties: lower
    loss) of the tags the model predicts: those whose probability (sigmoid, or softmax over the
    tags) is above the cut that maximises validation micro-F1, recomputed every epoch and stored as
    ``threshold`` for ``predict``. On ``benchmarks/multilabel_retrain.py`` the tuned cut lifted test
    micro-F1 of sigmoid models from 0.49-0.56 (a fixed 0.5) to 0.60-0.61, with noisy and with clean
    training tags.
    """
    from ..clean import CLEAN_COLUMNS
    from ..flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS
    from ..features import select_feature_columns
    from ..losses import get_loss
    from .retrain import RetrainResult, _metrics, _weights, is_multilabel_loss, single_label_losses

    config.check()
    where = source or "DATA"
    if loss is None:
        loss, loss_params = DEFAULT_MULTILABEL_LOSS, dict(DEFAULT_MULTILABEL_LOSS_PARAMS, **(loss_params or {}))
    loss_fn = get_loss(loss)
    if not is_multilabel_loss(loss):
        raise InputError(f"--loss {loss} is a single-label loss and {where} has a multi-label label; "
                         f"choose one of: {', '.join(multilabel_losses())} (or pass a single-label "
                         f"column as --label to use {', '.join(single_label_losses()[:3])}, ...)")
    cols, form, Y, labelled, classes_arr = _encode(table, label, where)
    rows = np.flatnonzero(labelled)
    k = Y.shape[1]
    if k < 2 or len(rows) < 2:
        raise InputError(f"label {','.join(cols)} has {k} tag(s) on {len(rows)} labelled row(s); "
                         "multi-label training needs at least two tags and two rows")
    kwargs = {key: float(v) for key, v in (loss_params or {}).items()}
    try:
        loss_fn(torch.zeros((2, k)), torch.zeros((2, k)), **kwargs)
    except TypeError as exc:
        raise InputError(f"--loss-param does not fit --loss {loss} ({exc}); see the loss's "
                         "parameters in cleanpipe.losses") from None
    output = "softmax" if loss in SOFTMAX_LOSSES else "sigmoid"
    auto = [c for c in FLAG_COLUMNS + SUSPECT_COLUMNS + CLEAN_COLUMNS + ((weight_col,) if weight_col else ())
            if c in table.column_names and c not in (features or ())]
    feat_cols = select_feature_columns(table.schema, cols, features=features,
                                       exclude=list(dict.fromkeys([*exclude, *auto])), ids=ids)
    labelled_table = table.take(pa.array(rows)) if len(rows) < table.num_rows else table
    target = Y[rows].astype(np.float32)
    pre = Preprocessor.fit(labelled_table, feat_cols)
    x_num, x_cat = pre.transform(labelled_table)
    weight = _weights(table, weight_col, rows) if weight_col else None

    def score(logits, t, w):
        return best_cut(_probabilities(logits, output), t, w)[0]

    device = resolve_device(config.device)
    arch = architecture(pre, config.hidden, k, config.dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        model = build_model(arch)
    t0 = time.perf_counter()
    hist = fit(model, x_num, x_cat, target, loss_fn=loss_fn, loss_kwargs=kwargs, weight=weight,
               config=config, on_epoch=on_epoch, score_fn=score)
    model.cpu()
    train_idx, val_idx = random_split(len(rows), config.val_fraction, config.seed)
    held = val_idx if len(val_idx) else train_idx
    probs = _probabilities(predict_logits(model, torch.from_numpy(x_num[held]),
                                          torch.from_numpy(x_cat[held])), output)
    w = None if weight is None else torch.from_numpy(weight[held])
    threshold = best_cut(probs, torch.from_numpy(target[held]), w)[1]
    val = multilabel_metrics(target[val_idx].astype(np.int64), probs.numpy()[:len(val_idx)], threshold)
    label_name = cols[0] if form == "list" else ",".join(cols)
    value_type = classes_arr.type
    spec = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "cleanpipe_version": __version__,
        "label": label_name, "label_type": str(value_type), "classes": classes_arr.to_pylist(),
        "multi_label": True, "label_format": form, "label_columns": cols,
        "output": output, "threshold": threshold,
        "architecture": arch, "preprocessing": pre.to_dict(),
        "loss": {"name": loss, "params": kwargs, "noisy_weight": None},
    }
    settings = dict(config.to_dict(), loss=loss, loss_params=kwargs, label=label_name,
                    multi_label=True, weight_col=weight_col, features=pre.columns, ids=list(ids),
                    early_stopping=f"validation micro-F1 at its best cut of the {output}")
    metrics = _metrics(hist, source=source, rows=table.num_rows, labelled=len(rows), device=device,
                       total_seconds=time.perf_counter() - t0, settings=settings)
    metrics.pop("val_accuracy", None)
    curve = metrics.get("curve", {})
    if "val_accuracy" in curve:
        curve["val_micro_f1"] = curve.pop("val_accuracy")
    metrics.update({"val_micro_f1": val["micro_f1"], "val_macro_f1": val["macro_f1"],
                    "val_map": val["map"], "val_map_classes": val["map_classes"],
                    "multi_label": True, "threshold": threshold})
    state = {key: v.detach().clone() for key, v in model.state_dict().items()}
    return RetrainResult(state, spec, metrics, model)


def predict_multilabel_table(loaded: LoadedModel, table: pa.Table, *, prefix: str = "",
                             device: str = "cpu") -> pa.Table:
    """Score ``table`` with a multi-label model: every input column plus the predictions.

    Returns
    -------
    pyarrow.Table
        ``table`` plus ``predicted_label`` (a list of the tags whose probability exceeds the model's
        ``threshold``, tuned on validation; 0.5 for models saved without one; in class order, in
        the tags' type) and
        ``pred_probs`` (list<float32>, one probability per class in the order of the model's
        ``classes``).
    """
    from ..features import decode_label_lists
    from .retrain import model_probabilities, probability_lists
    names = [f"{prefix}predicted_label", f"{prefix}pred_probs"]
    output = loaded.spec.get("output", "sigmoid")
    p = model_probabilities(loaded, table, names, lambda logits: _probabilities(logits, output), device=device)
    tags = p > float(loaded.spec.get("threshold", SIGMOID_THRESHOLD))
    offsets = np.concatenate([[0], np.cumsum(tags.sum(axis=1, dtype=np.int64))])
    out = table.append_column(names[0], decode_label_lists(offsets, np.nonzero(tags)[1], loaded.classes,
                                                           loaded.classes.type))
    return out.append_column(names[1], probability_lists(p))
