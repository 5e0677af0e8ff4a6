"""Retrain on a (flagged or cleaned) table: Arrow table in, weights, description and metrics out.

:func:`retrain_table` picks the features and the label, sets up the loss (noise matrix, per-row
noisy weights, row weights), trains a :class:`~cleanpipe.train.model.TabularMLP` and returns the
state dict with its JSON description and metrics. One path serves both kinds of label: the kind
(one class per row, or a set of tags) is decided once and changes only the targets, the loss's
set-up, the early-stopping score and the tag cut (:mod:`cleanpipe.train.multilabel`). Scoring is in
:mod:`cleanpipe.train.predict`; files are the CLI's business (see :mod:`cleanpipe.train.store`).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .._version import __version__
from ..auto import FALLBACK_LOSS, PAIR_SHARE, TrainingChoice, choose_training, estimate, flip_concentration
from ..clean import CLEAN_COLUMNS
from ..errors import InputError
from ..features import encode_labels, id_like_columns, select_feature_columns
from ..frames import as_table
from ..flagsfile import CHECK_COLUMNS, FLAG_COLUMNS, SUSPECT_COLUMNS
from ..loss_kinds import loss_kind, multilabel_losses, single_label_losses
from ..losses import get_loss
from ..settings import (AUTO_LOSS, DEFAULT_LOSS, DEFAULT_MULTILABEL_LOSS, DEFAULT_WARMUP, ELR_MOMENTUM, NOISY_WEIGHTS,
                        TrainConfig)
from .estimate import quick_estimate
from ..target import is_multilabel, resolve_label_columns, resolve_target
from .loop import fit, random_split, resolve_device
from .model import Preprocessor, architecture, build_model, predict_logits
from .multilabel import best_cut, multilabel_metrics, tag_probabilities
from .store import FORMAT_NAME, FORMAT_VERSION

#: Columns never used as features: what flag (its checks too) and clean add. Some check columns
#: are computed from the labels (label_conflict, knn_label_score): as features they would leak them.
NON_FEATURE_COLUMNS = FLAG_COLUMNS + SUSPECT_COLUMNS + CHECK_COLUMNS + CLEAN_COLUMNS


@dataclass
class RetrainResult:
    """Output of :func:`retrain_table`.

    Attributes
    ----------
    state_dict : dict of str -> Tensor
        The trained weights (CPU tensors).
    spec : dict
        JSON description (``model.json``): architecture, preprocessing, classes, label.
    metrics : dict
        JSON-ready metrics (``metrics.json``).
    model : torch.nn.Module
        The trained network, in evaluation mode.
    """

    state_dict: dict
    spec: dict
    metrics: dict
    model: torch.nn.Module


def _finite(x):
    """NaN/inf -> None so the metrics stay strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def align_noise_matrix(noise_matrix, matrix_classes, classes: list) -> np.ndarray:
    """Restrict a ``[given][true]`` noise matrix to ``classes`` (in that order), columns renormalised.

    Raises
    ------
    InputError
        The matrix is not square over ``matrix_classes`` or lacks one of ``classes``.
    """
    t = np.asarray(noise_matrix, dtype=np.float64)
    names = [str(c) for c in (matrix_classes if matrix_classes is not None else classes)]
    if t.ndim != 2 or t.shape != (len(names), len(names)):
        raise InputError(f"the noise matrix has shape {t.shape} but lists {len(names)} classes; pass "
                         "the summary.json cleanpipe flag wrote for this data")
    pos = {c: i for i, c in enumerate(names)}
    missing = [str(c) for c in classes if str(c) not in pos]
    if missing:
        raise InputError(f"the noise matrix has no class {missing[0]!r} (it has: {', '.join(names)}); "
                         "pass the summary.json cleanpipe flag wrote for this data")
    idx = [pos[str(c)] for c in classes]
    sub = t[np.ix_(idx, idx)]
    col = sub.sum(axis=0)
    if not np.all(np.isfinite(sub)) or np.any(sub < 0) or np.any(col <= 0):
        raise InputError("the noise matrix holds negative, NaN or all-zero columns; pass the "
                         "summary.json cleanpipe flag wrote for this data")
    return (sub / col).astype(np.float32)


def choose_loss(noise_matrix, class_prior=None) -> tuple[str, dict]:
    """The loss ``auto`` resolves to from flag's noise matrix (and class prior), and the JSON-ready
    record of why: :func:`cleanpipe.auto.choose_training` of :func:`cleanpipe.auto.estimate`
    (the record says which labels and settings go with the loss)."""
    choice = choose_training(None if noise_matrix is None else estimate(noise_matrix, class_prior))
    return choice.loss, choice.record


def _labels_flag_scored(table: pa.Table, label: str) -> pa.Table:
    """``table`` with the ``label`` column replaced by ``original_label`` (what ``clean --mode
    relabel`` keeps), for ``forward``.

    ``forward``'s noise matrix is flag's estimate of ``P(given | true)`` for the labels flag scored.
    After relabelling, some labels are flag's own predictions, whose noise the matrix over-states;
    adjusting the matrix for the relabelled rows or re-estimating it on the new labels did not
    make up for that: on pair noise ``forward`` on the original labels closed more of the gap in
    ``benchmarks/retrain.py`` (digits 0.80, the 20k-row table 0.77) than on the relabelled ones
    (0.78 / 0.70 with flag's matrix, 0.50 / 0.73 adjusted, 0.45 / 0.76 re-estimated).
    """
    original = table.column("original_label")
    return table.set_column(table.schema.get_field_index(label), pa.field(label, original.type), original)


def _weights(table: pa.Table, name: str, rows: np.ndarray) -> np.ndarray:
    if name not in table.column_names:
        raise InputError(f"--weight-col '{name}' not found (columns: {', '.join(table.column_names)}); "
                         "run cleanpipe clean --mode weight or pass another column")
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise InputError(f"--weight-col '{name}' has type {col.type}; weights must be numbers")
    w = col.cast(pa.float64()).to_numpy(zero_copy_only=False)[rows]
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise InputError(f"--weight-col '{name}' holds null, NaN, inf or negative values on labelled "
                         "rows; weights must be finite and >= 0")
    if w.sum() <= 0:
        raise InputError(f"--weight-col '{name}' is 0 on every labelled row; nothing would be learned")
    return w.astype(np.float32)


def _class_prior(class_prior, classes: list) -> np.ndarray | None:
    """The prior as a vector over ``classes`` (None: use the label frequencies)."""
    if class_prior is None:
        return None
    if isinstance(class_prior, dict):
        named = {str(k): v for k, v in class_prior.items()}
    else:
        values, names = class_prior
        named = {str(c): v for c, v in zip(names if names is not None else classes, values)}
    p = np.array([float(named.get(str(c), 0.0)) for c in classes], dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise InputError("the class prior holds negative, NaN or all-zero values; pass the "
                         "summary.json cleanpipe flag wrote for this data")
    return p / p.sum()


def _reference_p_noisy(table: pa.Table, rows: np.ndarray) -> np.ndarray | None:
    """The flagger's ``p_noisy`` of the labelled rows, when the table came from ``flag``."""
    if "p_noisy" not in table.column_names:
        return None
    p = table.column("p_noisy").cast(pa.float64()).to_numpy(zero_copy_only=False)[rows]
    return np.nan_to_num(p, nan=0.0)


def _noisy_weight(table: pa.Table, label: str, rows: np.ndarray) -> np.ndarray:
    if "p_noisy" not in table.column_names:
        raise InputError("--loss dynamic-hard/dynamic-soft need per-row noise posteriors from the "
                         "p_noisy column, which DATA lacks; retrain on the output of cleanpipe flag "
                         "or clean (without --drop-flag-columns), or pick another --loss")
    p = np.clip(_reference_p_noisy(table, rows), 0.0, 1.0).astype(np.float32)
    if "original_label" in table.column_names:
        # A relabelled row's p_noisy scored its old label; its new label is the model's own guess
        changed = pc.fill_null(pc.not_equal(table.column("original_label"), table.column(label)), False)
        p = np.where(changed.to_numpy(zero_copy_only=False)[rows], np.float32(0), p)
    return p


def retrain_table(table: pa.Table, *, label, features=None, exclude=(), ids=(), refuse_ids: bool = False,
                  weight_col: str | None = None, loss: str | None = None, loss_params: dict | None = None,
                  noise_matrix=None, noise_matrix_classes=None, noisy_weight: str = NOISY_WEIGHTS[0],
                  warmup: int = DEFAULT_WARMUP, class_prior=None, config: TrainConfig = TrainConfig(),
                  source: str | None = None, on_epoch: Callable | None = None) -> RetrainResult:
    """Train a tabular MLP on the labelled rows of ``table``.

    Parameters
    ----------
    table : pyarrow.Table
        Data with a label column; flag/clean columns (:data:`NON_FEATURE_COLUMNS`) are never features.
    label : str or list of str
        Label column; rows where it is null are not used. A list-of-tags column, or several 0/1
        columns (a list or ``"a,b,c"``; a null in any of them = unlabelled), is multi-label: the
        network gets one output per tag (see Notes).
    features, exclude, ids : sequence of str
        As in :func:`cleanpipe.flag_table`.
    refuse_ids : bool, default=False
        Refuse a feature column that looks like a row id (see
        :func:`cleanpipe.features.id_like_columns`) when ``features`` is not given; the CLI sets it.
    weight_col : str, optional
        Column of per-row weights (>= 0), e.g. ``sample_weight`` from ``clean --mode weight``.
    loss : str, optional
        A single-label name from :data:`cleanpipe.losses.LOSSES` (see :func:`single_label_losses`)
        or ``"auto"``; default :data:`~cleanpipe.settings.DEFAULT_LOSS` (``"auto"``). A multi-label
        label takes a multi-label loss (:func:`~cleanpipe.loss_kinds.multilabel_losses`; default
        :data:`~cleanpipe.settings.DEFAULT_MULTILABEL_LOSS`, ``bce``: K sigmoids; ``softmax-labels``
        and ``abs-kl`` a softmax over the tags) and a single-label name is refused. ``auto``
        chooses from flag's estimates (``noise_matrix`` and ``class_prior``) or, without a noise
        matrix, from a quick estimate of its own (:func:`cleanpipe.train.estimate.quick_estimate`),
        by :func:`cleanpipe.auto.choose_training`: ``forward`` on pair-like noise, ``dynamic-hard``
        with mixup, the prior term, more epochs and no validation split on heavy noise, ``sce``
        otherwise. The settings it picks replace only those of ``config`` (and ``warmup``) left at
        their defaults; the choice, its reason and the settings it could not take are recorded
        in ``metrics["settings"]["loss_choice"]``.
        ``forward`` needs ``noise_matrix`` and, on a table that ``clean --mode relabel`` wrote,
        trains on ``original_label`` (the labels the matrix describes, see
        :func:`_labels_flag_scored`), as does ``auto``'s heavy-noise choice;
        ``dynamic-hard``/``dynamic-soft`` use ``noisy_weight``.
    loss_params : dict, optional
        Loss hyper-parameters (``{"q": 0.7}`` for ``gce``, ``{"smoothing": 0.1}`` for ``bce``).
    noise_matrix : array-like of shape (n_classes, n_classes), optional
        ``P(given | true)``, indexed ``[given, true]`` over ``noise_matrix_classes``.
    noise_matrix_classes : list, optional
        Class values of the noise matrix's rows/columns (default: this table's sorted classes).
    noisy_weight : {"online", "column"}, default="online"
        Where ``dynamic-*`` losses get each row's posterior of being mislabelled: ``online``, a
        Beta mixture refitted after every epoch to the network's own per-row losses (Arazo et al.,
        ICML 2019; recorded per epoch in ``metrics["noise_model"]``), or the ``p_noisy`` column
        (the flagger's out-of-fold opinion, fixed for the run).
    warmup : int, default=DEFAULT_WARMUP
        ``online``: epochs of plain cross-entropy before the first mixture fit.
    class_prior : dict or sequence, optional
        Prior of ``config.prior_reg``: ``{class: probability}`` or ``(probabilities, classes)`` as
        ``flag`` estimates it (``class_prior`` and ``classes`` of its summary); default: the label
        frequencies of the training rows.
    config : TrainConfig
    source : str, optional
        Recorded in the metrics.
    on_epoch : callable, optional
        Progress callback, see :func:`cleanpipe.train.loop.fit`.

    Returns
    -------
    RetrainResult
        For a multi-label label, ``spec`` records ``multi_label: true``, ``label_format`` (``list`` or
        ``columns``), ``output`` (``sigmoid`` or ``softmax``) and the tag ``threshold``; ``metrics``
        holds ``val_micro_f1``, ``val_macro_f1`` and ``val_map`` on the validation split.

    Raises
    ------
    InputError
        Missing label, fewer than two classes, unknown or unusable loss, missing noise matrix or
        ``p_noisy``, bad weights, bad settings.

    Notes
    -----
    Multi-label: the validation rows are a seeded random ``config.val_fraction`` of the labelled
    rows (no stratification). Early stopping keeps the epoch with the best validation micro-F1
    (ties: lower loss) of the tags the model predicts: those whose probability (sigmoid, or softmax
    over the tags) is above the cut that maximises validation micro-F1, recomputed every epoch and
    stored as ``threshold`` for ``predict``. On ``benchmarks/multilabel_retrain.py`` the tuned cut
    lifted test micro-F1 of sigmoid models from 0.49-0.56 (a fixed 0.5) to 0.60-0.61, with noisy
    and with clean training tags.
    """
    table = as_table(table)
    multi = is_multilabel(table.schema, label)
    config.check()
    where = source or "DATA"
    loss = loss or (DEFAULT_MULTILABEL_LOSS if multi else DEFAULT_LOSS)
    choice = None
    if multi:
        _check_loss_fits(loss, multi=True, label=label, where=where)
        target = _tag_target(table, label, source)
    else:
        target = _class_target(table, label, source)
    cols = _feature_columns(target, features=features, exclude=exclude, ids=ids, weight_col=weight_col,
                            refuse_ids=refuse_ids)
    if not multi:
        if loss == AUTO_LOSS:
            choice, noise_matrix, noise_matrix_classes = _auto_choice(
                target, cols, noise_matrix, noise_matrix_classes, class_prior, config.seed)
            config, warmup, choice = _apply_choice(choice, config, warmup)
            loss = choice.loss
        _check_loss_fits(loss, multi=False, label=label, where=where)
        flag_scored = choice.labels == "flag-scored" if choice is not None else loss == "forward"
        if flag_scored and "original_label" in table.column_names:
            target = _class_target(_labels_flag_scored(table, label), label, source,
                                   labels_from="original_label")
    loss_choice = None if choice is None else choice.record
    loss_fn = get_loss(loss)
    table, rows = target.table, target.rows
    labelled = table.take(pa.array(rows)) if len(rows) < table.num_rows else table
    pre = Preprocessor.fit(labelled, cols)
    x_num, x_cat = pre.transform(labelled)
    weight = _weights(table, weight_col, rows) if weight_col else None
    if multi:
        kwargs, row_kwargs, online = _multilabel_loss_setup(loss, loss_fn, loss_params, len(target.classes))
    else:
        kwargs, row_kwargs, online = _loss_setup(
            loss, loss_fn, loss_params, table, target.name, rows, target.classes,
            noise_matrix=noise_matrix, noise_matrix_classes=noise_matrix_classes,
            noisy_weight=noisy_weight, warmup=warmup)
    output = loss_kind(loss).output

    device = resolve_device(config.device)
    arch = architecture(pre, config.hidden, len(target.classes), config.dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        model = build_model(arch)
    t0 = time.perf_counter()
    prior = _class_prior(class_prior, target.classes) if config.prior_reg > 0 and not multi else None
    reference = _reference_p_noisy(table, rows) if online else None
    momentum = ELR_MOMENTUM if "target_average" in loss_kind(loss).needs else None
    hist = fit(model, x_num, x_cat, target.y, loss_fn=loss_fn, loss_kwargs=kwargs, row_kwargs=row_kwargs,
               weight=weight, config=config, online_warmup=warmup if online else None,
               prior=prior, reference=reference, target_momentum=momentum, on_epoch=on_epoch,
               score_fn=_micro_f1_score(output) if multi else None)
    model.cpu()
    head = _tag_head(model, x_num, x_cat, target.y, weight, config, output) if multi else {}
    spec = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "cleanpipe_version": __version__,
        "label": target.name, "label_type": target.label_type, "classes": target.classes,
        **target.spec, **{k: head[k] for k in ("output", "threshold") if multi},
        "architecture": arch, "preprocessing": pre.to_dict(),
        "loss": {"name": loss, "params": {k: v for k, v in kwargs.items() if k != "noise_matrix"},
                 "noisy_weight": ("online" if online else "column") if loss.startswith("dynamic")
                 else None, **({} if multi else {"auto": loss_choice})},
    }
    if multi:
        settings = dict(config.to_dict(), loss=loss, loss_params=kwargs, label=target.name,
                        multi_label=True, weight_col=weight_col, features=pre.columns, ids=list(ids),
                        early_stopping=f"validation micro-F1 at its best cut of the {output}")
    else:
        settings = dict(config.to_dict(), loss=loss, loss_choice=loss_choice, labels_from=target.labels_from,
                        loss_params=spec["loss"]["params"], label=target.name,
                        weight_col=weight_col, features=pre.columns, ids=list(ids),
                        noisy_weight=spec["loss"]["noisy_weight"], warmup=warmup if online else None,
                        target_momentum=momentum,
                        prior=None if prior is None else np.round(prior, 6).tolist(),
                        noise_matrix=(kwargs["noise_matrix"].round(6).tolist() if "noise_matrix" in kwargs
                                      else None))
    metrics = _metrics(hist, source=source, rows=table.num_rows, labelled=len(rows), device=device,
                       total_seconds=time.perf_counter() - t0, settings=settings)
    if multi:
        _tag_metrics(metrics, head)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RetrainResult(state, spec, metrics, model)


def retrain_multilabel_table(table: pa.Table, *, label, **kwargs) -> RetrainResult:
    """:func:`retrain_table` for a label that must be a set of tags (a list column, or several 0/1
    columns): anything else is refused with the reason."""
    if not is_multilabel(table.schema, label):
        resolve_label_columns(table.schema, label, where=kwargs.get("source") or "DATA")
    return retrain_table(table, label=label, **kwargs)


def _check_loss_fits(loss: str, *, multi: bool, label, where: str) -> None:
    """Refuse a loss of the other kind of label, naming the ones that fit (and an unknown name)."""
    kind = loss_kind(loss)
    if multi and not kind.multi_label:
        raise InputError(f"--loss {loss} is a single-label loss and {where} has a multi-label label; "
                         f"choose one of: {', '.join(multilabel_losses())} (or pass a single-label "
                         f"column as --label to use {', '.join(single_label_losses()[:3])}, ...)")
    if not multi and kind.multi_label:
        raise InputError(f"--loss {loss} is a multi-label loss (it takes a 0/1 target matrix) but "
                         f"label '{label}' holds one class per row; choose one of: "
                         f"{', '.join(single_label_losses())} (multi-label data needs a list "
                         "column or several 0/1 columns as --label a,b,c)")


def _feature_columns(target: "_Target", *, features, exclude, ids, weight_col, refuse_ids: bool) -> list:
    """The feature columns: never the label, flag/clean columns or the weight column."""
    table = target.table
    auto = [c for c in NON_FEATURE_COLUMNS + ((weight_col,) if weight_col else ())
            if c in table.column_names and c not in (features or ())]
    cols = select_feature_columns(table.schema, target.label_columns, features=features,
                                  exclude=list(dict.fromkeys([*exclude, *auto])), ids=ids)
    if refuse_ids and not features:
        ids_like = id_like_columns(table, cols)
        if ids_like:
            raise InputError(f"column '{ids_like[0]}' holds a different value in every row, like an id: "
                             f"a model would learn the rows by heart; pass --id {ids_like[0]} (or "
                             "--exclude it), or name the features with --features")
    return cols


def _auto_choice(target: "_Target", cols: list, noise_matrix, matrix_classes, class_prior, seed: int):
    """``auto``'s choice from flag's noise matrix and prior, else from retrain's quick estimate;
    and the noise matrix (with its classes) the choice was made from, for ``forward``."""
    k = len(target.classes)
    if noise_matrix is not None:
        t = align_noise_matrix(noise_matrix, matrix_classes, target.classes)
        prior = _class_prior(class_prior, target.classes)
        if prior is None:  # the given labels' frequencies stand in for the true classes'
            prior = np.bincount(target.y, minlength=k).astype(np.float64)
        return choose_training(estimate(t, prior, source="flag")), noise_matrix, matrix_classes
    codes = np.full(target.table.num_rows, -1, dtype=np.int64)
    codes[target.rows] = target.y
    found = quick_estimate(target.table, cols, codes, k, seed=seed)
    if found is None:
        return choose_training(None), None, None
    return (choose_training(estimate(*found, source="quick estimate")), found[0].tolist(),
            list(target.classes))


def _apply_choice(choice: TrainingChoice, config: TrainConfig, warmup: int):
    """``config`` and ``warmup`` with ``auto``'s settings where the caller left the default; the
    choice's record lists the settings the caller's values overrode."""
    defaults = TrainConfig()
    wanted = {k: v for k, v in choice.settings.items() if k != "warmup"}
    taken = {k: v for k, v in wanted.items() if getattr(config, k) == getattr(defaults, k)}
    kept = sorted(set(wanted) - set(taken))
    if "warmup" in choice.settings:
        if warmup == DEFAULT_WARMUP:
            warmup = choice.settings["warmup"]
        elif warmup != choice.settings["warmup"]:
            kept.append("warmup")
    record = dict(choice.record, **({"kept_from_caller": kept} if kept else {}))
    return (dataclasses.replace(config, **taken), warmup,
            dataclasses.replace(choice, record=record))


@dataclass
class _Target:
    """What the kind of label decides: the rows and their targets, the classes, what to record."""

    table: pa.Table  # the table to train on (``forward``: its labels are those flag scored)
    y: np.ndarray  # per labelled row: class codes (int), or a 0/1 float32 matrix of tags
    rows: np.ndarray  # the labelled rows of ``table``
    classes: list
    label_columns: object  # what select_feature_columns keeps out of the features
    name: str  # the label as recorded in model.json
    label_type: str
    labels_from: str | None = None
    spec: dict | None = None


def _class_target(table: pa.Table, label: str, source, labels_from: str | None = None) -> _Target:
    """The single-label target; ``labels_from`` records where the label column's values came from."""
    if label not in table.column_names:
        raise InputError(f"label column '{label}' not found in {source or 'DATA'} (columns: "
                         f"{', '.join(table.column_names)}); pass --label with one of them")
    labels_from = labels_from or label
    codes, classes_arr = encode_labels(table.column(label), label)
    rows = np.flatnonzero(codes >= 0)
    if len(classes_arr) < 2 or len(rows) < 2:
        raise InputError(f"label column '{label}' has {len(classes_arr)} class(es) on {len(rows)} "
                         "labelled row(s); training needs at least two classes")
    label_type = table.schema.field(label).type
    out_type = label_type.value_type if pa.types.is_dictionary(label_type) else label_type
    # A category label comes back from predict as a category, not as its values' type.
    return _Target(table, codes[rows], rows, classes_arr.to_pylist(), label, label, str(out_type),
                   labels_from=labels_from,
                   spec={"label_categorical": True} if pa.types.is_dictionary(label_type) else {})


def _tag_target(table: pa.Table, label, source) -> _Target:
    target = resolve_target(table.schema, label, multi_label=True, where=source or "DATA")
    cols, form = list(target.columns), target.form
    enc = target.encode(table)
    Y, labelled, classes_arr = enc.values, enc.labelled, enc.classes
    rows = np.flatnonzero(labelled)
    k = Y.shape[1]
    if k < 2 or len(rows) < 2:
        raise InputError(f"label {','.join(cols)} has {k} tag(s) on {len(rows)} labelled row(s); "
                         "multi-label training needs at least two tags and two rows")
    name = cols[0] if form == "list" else ",".join(cols)
    return _Target(table, Y[rows].astype(np.float32), rows, classes_arr.to_pylist(), cols, name,
                   str(classes_arr.type),
                   spec={"multi_label": True, "label_format": form, "label_columns": cols})


def _micro_f1_score(output: str) -> Callable:
    """Early stopping's validation score of a multi-label network: micro-F1 at its best cut."""
    def score(logits, t, w):
        return best_cut(tag_probabilities(logits, output), t, w)[0]
    return score


def _tag_head(model, x_num, x_cat, target, weight, config: TrainConfig, output: str) -> dict:
    """The tag cut of a trained multi-label network, tuned on the validation rows (the training
    rows without any), and the validation metrics at that cut."""
    train_idx, val_idx = random_split(len(target), config.val_fraction, config.seed)
    held = val_idx if len(val_idx) else train_idx
    probs = tag_probabilities(predict_logits(model, torch.from_numpy(x_num[held]),
                                             torch.from_numpy(x_cat[held])), output)
    w = None if weight is None else torch.from_numpy(weight[held])
    threshold = best_cut(probs, torch.from_numpy(target[held]), w)[1]
    val = multilabel_metrics(target[val_idx].astype(np.int64), probs.numpy()[:len(val_idx)], threshold)
    return {"output": output, "threshold": threshold, "val": val}


def _tag_metrics(metrics: dict, head: dict) -> None:
    """Turn the single-label ``metrics`` of a multi-label run into its own: micro-F1 for accuracy."""
    val = head["val"]
    metrics.pop("val_accuracy", None)
    curve = metrics.get("curve", {})
    if "val_accuracy" in curve:
        curve["val_micro_f1"] = curve.pop("val_accuracy")
    metrics.update({"val_micro_f1": val["micro_f1"], "val_macro_f1": val["macro_f1"],
                    "val_map": val["map"], "val_map_classes": val["map_classes"],
                    "multi_label": True, "threshold": head["threshold"]})


def _multilabel_loss_setup(loss, loss_fn, loss_params, k: int):
    """The loss's keyword arguments; a hyper-parameter it does not take fails before training."""
    kwargs = {key: float(v) for key, v in (loss_params or {}).items()}
    try:
        loss_fn(torch.zeros((2, k)), torch.zeros((2, k)), **kwargs)
    except TypeError as exc:
        raise InputError(f"--loss-param does not fit --loss {loss} ({exc}); see the loss's "
                         "parameters in cleanpipe.losses") from None
    return kwargs, None, False


def _loss_setup(loss, loss_fn, loss_params, table, label, rows, classes, *, noise_matrix,
                noise_matrix_classes, noisy_weight, warmup):
    """Constant and per-row keyword arguments of the loss; whether ``noisy_weight`` is online."""
    kwargs = {k: float(v) for k, v in (loss_params or {}).items()}
    row_kwargs = {}
    if loss == "forward":
        if noise_matrix is None:
            raise InputError("--loss forward needs the noise matrix: pass --noise-matrix "
                             "<flags>.summary.json or retrain on a flags file with its summary beside it")
        kwargs["noise_matrix"] = align_noise_matrix(noise_matrix, noise_matrix_classes, classes)
    if noisy_weight not in NOISY_WEIGHTS:
        raise InputError(f"--noisy-weight must be 'column' or 'online'; got {noisy_weight!r}")
    dynamic = loss.startswith("dynamic")
    online = dynamic and noisy_weight == "online"
    if online and warmup < 1:
        raise InputError(f"--warmup must be a positive number of epochs; got {warmup!r}")
    if dynamic:
        row_kwargs["noisy_weight"] = (np.zeros(len(rows), np.float32) if online
                                      else _noisy_weight(table, label, rows))
    _probe_loss(loss, loss_fn, len(classes), kwargs, row_kwargs)
    # online: fit() owns noisy_weight (the zeros above were only for the probe)
    return kwargs, ({} if online else row_kwargs), online


def _metrics(hist, *, source, rows, labelled, device, total_seconds, settings) -> dict:
    """The JSON-ready ``metrics.json`` of a run (NaN -> null)."""
    best = hist.best_epoch - 1
    return {
        "source": source, "rows": rows, "labelled_rows": int(labelled),
        "train_rows": hist.train_rows, "val_rows": hist.val_rows,
        "val_accuracy": _finite(hist.val_accuracy[best]) if hist.val_accuracy else None,
        "noise_model": hist.noise_model,
        "val_loss": _finite(hist.val_loss[best]) if hist.val_loss else None,
        "epochs": hist.epochs_run, "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early,
        "curve": {"train_loss": hist.train_loss, "val_loss": _finite(hist.val_loss),
                  "val_accuracy": _finite(hist.val_accuracy)},
        "device": hist.device, "device_name": _device_name(device),
        "samples_per_second": round(hist.samples_per_second, 1),
        "train_seconds": round(hist.train_seconds, 3), "total_seconds": round(total_seconds, 3),
        "settings": settings,
        "versions": {"cleanpipe": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _probe_loss(name, loss_fn, k, kwargs, row_kwargs) -> None:
    """Call the loss once on two dummy rows so a bad hyper-parameter fails before training."""
    extra = {key: torch.zeros(2) for key in row_kwargs}
    if "target_average" in loss_kind(name).needs:  # fit() keeps it; zeros of the right shape here
        extra["target_average"] = torch.zeros((2, k))
    try:
        loss_fn(torch.zeros((2, k)), torch.zeros(2, dtype=torch.long), **kwargs, **extra)
    except TypeError as exc:
        raise InputError(f"--loss-param does not fit --loss {name} ({exc}); see the loss's "
                         "parameters in cleanpipe.losses") from None
