"""Scoring a table with a loaded model: Arrow table in, the same table plus predictions out."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from ..errors import InputError
from ..features import decode_label_lists
from .loop import resolve_device
from .model import predict_logits
from .multilabel import SIGMOID_THRESHOLD, tag_probabilities
from .store import LoadedModel


def predict_table(loaded: LoadedModel, table: pa.Table, *, probs: bool = False, prefix: str = "",
                  device: str = "cpu") -> pa.Table:
    """Score ``table`` with a loaded model: every input column plus the predictions.

    Parameters
    ----------
    loaded : LoadedModel
    table : pyarrow.Table
        Must hold the model's feature columns (other columns are kept, not used).
    probs : bool, default=False
        Also add ``pred_probs``, a list<float32> column of class probabilities in class order.
    prefix : str, default=""
        Prepended to the added column names.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        CPU predictions are bit-for-bit reproducible.

    Returns
    -------
    pyarrow.Table
        ``table`` plus ``predicted_label`` (the label's type), ``confidence`` (float32 max
        probability) and optionally ``pred_probs``. A multi-label model writes its tags and
        probabilities instead (:func:`predict_multilabel_table`).
    """
    if loaded.spec.get("multi_label"):
        return predict_multilabel_table(loaded, table, prefix=prefix, device=device)
    names = [f"{prefix}predicted_label", f"{prefix}confidence"] + ([f"{prefix}pred_probs"] if probs else [])
    p = model_probabilities(loaded, table, names, lambda logits: torch.softmax(logits, dim=1), device=device)
    pred = p.argmax(axis=1)
    predicted = loaded.classes.take(pa.array(pred, type=pa.int64()))
    if loaded.spec.get("label_categorical"):
        predicted = predicted.dictionary_encode()
    out = table.append_column(names[0], predicted)
    out = out.append_column(names[1], pa.array(p.max(axis=1, initial=0.0), type=pa.float32()))
    if probs:
        out = out.append_column(names[2], probability_lists(p))
    return out


def model_probabilities(loaded: LoadedModel, table: pa.Table, names: list, to_probs: Callable, *,
                        device: str = "cpu") -> np.ndarray:
    """float32 ``to_probs(logits)`` of every row of ``table``, shape ``(n_rows, n_classes)``.

    Refuses first, with the fix, when ``table`` already has one of the output column ``names``.
    """
    clash = [n for n in names if n in table.column_names]
    if clash:
        raise InputError(f"DATA already has a column '{clash[0]}', which predict writes; pass --prefix "
                         "(e.g. --prefix model_) to name the new columns differently")
    x_num, x_cat = loaded.preprocessor.transform(table)
    dev = resolve_device(device)
    if not len(x_num):
        return np.zeros((0, len(loaded.classes)), np.float32)
    model = loaded.model.to(dev)
    logits = predict_logits(model, torch.from_numpy(x_num).to(dev), torch.from_numpy(x_cat).to(dev))
    model.cpu()
    return to_probs(logits).cpu().numpy().astype(np.float32)


def probability_lists(p: np.ndarray) -> pa.ListArray:
    """One list<float32> per row of ``p`` (the ``pred_probs`` column predict writes)."""
    k = p.shape[1]
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (len(p) + 1) * k, k, dtype=np.int32)),
                                    pa.array(p.reshape(-1)))


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
    names = [f"{prefix}predicted_label", f"{prefix}pred_probs"]
    output = loaded.spec.get("output", "sigmoid")
    p = model_probabilities(loaded, table, names, lambda logits: tag_probabilities(logits, output), device=device)
    tags = p > float(loaded.spec.get("threshold", SIGMOID_THRESHOLD))
    offsets = np.concatenate([[0], np.cumsum(tags.sum(axis=1, dtype=np.int64))])
    out = table.append_column(names[0], decode_label_lists(offsets, np.nonzero(tags)[1], loaded.classes,
                                                           loaded.classes.type))
    return out.append_column(names[1], probability_lists(p))
