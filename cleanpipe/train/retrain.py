"""Retrain on a (flagged or cleaned) table and predict with the result: Arrow tables in and out.

:func:`retrain_table` picks the features and the label, sets up the loss (noise matrix, per-row
noisy weights, row weights), trains a :class:`~cleanpipe.train.model.TabularMLP` and returns the
state dict with its JSON description and metrics; :func:`predict_table` scores a table with a
loaded model. Files are the CLI's business (see :mod:`cleanpipe.train.store`).
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .. import __version__
from ..clean import CLEAN_COLUMNS
from ..errors import InputError
from ..features import encode_labels, select_feature_columns
from ..flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS
from ..target import is_multilabel
from .loop import TrainConfig, fit, predict_logits, resolve_device
from .model import Preprocessor, architecture, build_model
from .store import FORMAT_NAME, FORMAT_VERSION, LoadedModel

#: Columns never used as features: what flag and clean add.
NON_FEATURE_COLUMNS = FLAG_COLUMNS + SUSPECT_COLUMNS + CLEAN_COLUMNS
#: ``loss="auto"``: pick the loss from the noise matrix ``flag`` estimated, see :func:`choose_loss`.
AUTO_LOSS = "auto"
#: Default loss of ``cleanpipe retrain``, chosen from ``benchmarks/retrain.py``: after ``clean
#: --mode relabel``, ``auto`` closed 0.69 of the noisy-to-oracle gap on average against 0.56 for
#: ``sce`` (the default before it) and 0.46 for ``dynamic-hard``.
DEFAULT_LOSS = AUTO_LOSS
#: What ``auto`` trains with unless the noise is pair-like: symmetric cross-entropy is robust to
#: noise spread over the other classes, costs no more than cross-entropy and needs nothing from flag.
FALLBACK_LOSS = "sce"
#: ``auto`` picks ``forward`` when :func:`flip_concentration` is at least this: between what flag's
#: matrices gave in ``benchmarks/retrain.py`` for symmetric noise (0.02-0.14) and pair noise
#: (0.57-0.65), on both data sets.
PAIR_SHARE = 0.35
#: Default epochs of plain cross-entropy before the first online mixture fit.
DEFAULT_WARMUP = 5


def is_multilabel_loss(name: str) -> bool:
    """Whether the registered loss ``name`` takes a 0/1 target matrix (multi-label) rather than class indices.

    Decided by calling it on a 2 x 3 target matrix: single-label losses refuse float targets (or ask
    for their ``noise_matrix`` / ``noisy_weight``), so the registry can grow without a list here.
    """
    from ..losses import get_loss
    try:
        get_loss(name)(torch.zeros((2, 3)), torch.zeros((2, 3)))
    except (InputError, TypeError):
        return False
    return True


def single_label_losses() -> list:
    """Names in :data:`cleanpipe.losses.LOSSES` that ``retrain`` can use."""
    from ..losses import LOSSES
    return [n for n in LOSSES if not is_multilabel_loss(n)]


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


def choose_loss(noise_matrix) -> tuple[str, dict]:
    """The loss ``auto`` resolves to, and the JSON-ready record of why.

    ``forward`` when the noise matrix is pair-like (:func:`flip_concentration` >= :data:`PAIR_SHARE`
    with at least three classes), else :data:`FALLBACK_LOSS`.

    Notes
    -----
    Symmetric losses such as ``sce`` tolerate noise that spreads a class's flips over the other
    classes but not noise that sends them to one other class, where the flipped rows form a
    consistent wrong signal; forward correction models any class-dependent noise but relies on the
    estimated matrix, whose error on spread-out noise costs more than it corrects (in
    ``benchmarks/retrain.py`` ``forward`` beat ``sce`` on pair noise and lost to it on symmetric
    noise, on both data sets). The concentration separates the two there (see :data:`PAIR_SHARE`).
    With two classes every flip goes to the other class, so the concentration says nothing and
    ``auto`` keeps the fallback.
    """
    if noise_matrix is None:
        return FALLBACK_LOSS, {"chosen": FALLBACK_LOSS, "reason": "no noise matrix from flag"}
    t = np.asarray(noise_matrix, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise InputError(f"the noise matrix has shape {t.shape}, not K x K; pass the summary.json "
                         "cleanpipe flag wrote for this data")
    if len(t) < 3:
        return FALLBACK_LOSS, {"chosen": FALLBACK_LOSS, "reason": "two classes"}
    share = flip_concentration(t)
    chosen = "forward" if share >= PAIR_SHARE else FALLBACK_LOSS
    return chosen, {"chosen": chosen, "flip_concentration": round(share, 6), "threshold": PAIR_SHARE,
                    "reason": "pair-like noise" if chosen == "forward" else "noise spread over classes"}


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


def retrain_table(table: pa.Table, *, label: str, features=None, exclude=(), ids=(),
                  weight_col: str | None = None, loss: str | None = None, loss_params: dict | None = None,
                  noise_matrix=None, noise_matrix_classes=None, noisy_weight: str = "online",
                  warmup: int = DEFAULT_WARMUP, class_prior=None, config: TrainConfig = TrainConfig(),
                  source: str | None = None, on_epoch: Callable | None = None) -> RetrainResult:
    """Train a tabular MLP on the labelled rows of ``table``.

    Parameters
    ----------
    table : pyarrow.Table
        Data with a label column; flag/clean columns (:data:`NON_FEATURE_COLUMNS`) are never features.
    label : str
        Label column; rows where it is null are not used.
    features, exclude, ids : sequence of str
        As in :func:`cleanpipe.flag_table`.
    weight_col : str, optional
        Column of per-row weights (>= 0), e.g. ``sample_weight`` from ``clean --mode weight``.
    loss : str, optional
        A single-label name from :data:`cleanpipe.losses.LOSSES` (see :func:`single_label_losses`)
        or ``"auto"``; default :data:`DEFAULT_LOSS` (``"auto"``), or the multi-label default for a
        multi-label label (where a single-label name is refused). ``auto`` trains with ``forward``
        when ``noise_matrix`` is pair-like and with ``sce`` otherwise or without one
        (:func:`choose_loss`; the choice is recorded in ``metrics["settings"]["loss_choice"]``).
        ``forward`` needs ``noise_matrix`` and, on a table that ``clean --mode relabel`` wrote,
        trains on ``original_label`` (the labels the matrix describes, see
        :func:`_labels_flag_scored`); ``dynamic-hard``/``dynamic-soft`` use ``noisy_weight``.
    loss_params : dict, optional
        Loss hyper-parameters (``{"q": 0.7}`` for ``gce``).
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

    Raises
    ------
    InputError
        Missing label, fewer than two classes, unknown or unusable loss, missing noise matrix or
        ``p_noisy``, bad weights, bad settings.
    """
    from ..losses import get_loss
    from .multilabel import retrain_multilabel_table

    if is_multilabel(table.schema, label):
        # a list column or "a,b,c": multi-label (the single-label default loss means its default)
        return retrain_multilabel_table(
            table, label=label, features=features, exclude=exclude, ids=ids, weight_col=weight_col,
            loss=loss, loss_params=loss_params, config=config,
            source=source, on_epoch=on_epoch)
    config.check()
    loss = loss or DEFAULT_LOSS
    loss_choice = None
    if loss == AUTO_LOSS:
        loss, loss_choice = choose_loss(noise_matrix)
    loss_fn = get_loss(loss)
    if is_multilabel_loss(loss):
        raise InputError(f"--loss {loss} is a multi-label loss (it takes a 0/1 target matrix) but "
                         f"label '{label}' holds one class per row; choose one of: "
                         f"{', '.join(single_label_losses())} (multi-label data needs a list "
                         "column or several 0/1 columns as --label a,b,c)")
    if label not in table.column_names:
        raise InputError(f"label column '{label}' not found in {source or 'DATA'} (columns: "
                         f"{', '.join(table.column_names)}); pass --label with one of them")
    labels_from = label
    if loss == "forward" and "original_label" in table.column_names:
        table, labels_from = _labels_flag_scored(table, label), "original_label"
    codes, classes_arr = encode_labels(table.column(label), label)
    rows = np.flatnonzero(codes >= 0)
    if len(classes_arr) < 2 or len(rows) < 2:
        raise InputError(f"label column '{label}' has {len(classes_arr)} class(es) on {len(rows)} "
                         "labelled row(s); training needs at least two classes")
    classes = classes_arr.to_pylist()
    auto = [c for c in NON_FEATURE_COLUMNS + ((weight_col,) if weight_col else ())
            if c in table.column_names and c not in (features or ())]
    cols = select_feature_columns(table.schema, label, features=features,
                                  exclude=list(dict.fromkeys([*exclude, *auto])), ids=ids)
    labelled = table.take(pa.array(rows)) if len(rows) < table.num_rows else table
    y = codes[rows]
    pre = Preprocessor.fit(labelled, cols)
    x_num, x_cat = pre.transform(labelled)
    weight = _weights(table, weight_col, rows) if weight_col else None

    kwargs, row_kwargs, online = _loss_setup(
        loss, loss_fn, loss_params, table, label, rows, classes, noise_matrix=noise_matrix,
        noise_matrix_classes=noise_matrix_classes, noisy_weight=noisy_weight, warmup=warmup)

    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        model = build_model(architecture(pre, config.hidden, len(classes), config.dropout))
    t0 = time.perf_counter()
    prior = _class_prior(class_prior, classes) if config.prior_reg > 0 else None
    reference = _reference_p_noisy(table, rows) if online else None
    hist = fit(model, x_num, x_cat, y, loss_fn=loss_fn, loss_kwargs=kwargs, row_kwargs=row_kwargs,
               weight=weight, config=config, online_warmup=warmup if online else None,
               prior=prior, reference=reference, on_epoch=on_epoch)
    model.cpu()
    label_type = table.schema.field(label).type
    out_type = label_type.value_type if pa.types.is_dictionary(label_type) else label_type
    spec = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "cleanpipe_version": __version__,
        "label": label, "label_type": str(out_type), "classes": classes,
        "architecture": architecture(pre, config.hidden, len(classes), config.dropout),
        "preprocessing": pre.to_dict(),
        "loss": {"name": loss, "params": {k: v for k, v in kwargs.items() if k != "noise_matrix"},
                 "noisy_weight": ("online" if online else "column") if loss.startswith("dynamic")
                 else None, "auto": loss_choice},
    }
    settings = dict(config.to_dict(), loss=loss, loss_choice=loss_choice, labels_from=labels_from,
                    loss_params=spec["loss"]["params"], label=label,
                    weight_col=weight_col, features=pre.columns, ids=list(ids),
                    noisy_weight=spec["loss"]["noisy_weight"], warmup=warmup if online else None,
                    prior=None if prior is None else np.round(prior, 6).tolist(),
                    noise_matrix=(kwargs["noise_matrix"].round(6).tolist() if "noise_matrix" in kwargs
                                  else None))
    metrics = _metrics(hist, source=source, rows=table.num_rows, labelled=len(rows), device=device,
                       total_seconds=time.perf_counter() - t0, settings=settings)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RetrainResult(state, spec, metrics, model)


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
    if noisy_weight not in ("column", "online"):
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
    try:
        loss_fn(torch.zeros((2, k)), torch.zeros(2, dtype=torch.long), **kwargs, **extra)
    except TypeError as exc:
        raise InputError(f"--loss-param does not fit --loss {name} ({exc}); see the loss's "
                         "parameters in cleanpipe.losses") from None


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
        probabilities instead (:func:`cleanpipe.train.multilabel.predict_multilabel_table`).
    """
    if loaded.spec.get("multi_label"):
        from .multilabel import predict_multilabel_table
        return predict_multilabel_table(loaded, table, prefix=prefix, device=device)
    names = [f"{prefix}predicted_label", f"{prefix}confidence"] + ([f"{prefix}pred_probs"] if probs else [])
    p = model_probabilities(loaded, table, names, lambda logits: torch.softmax(logits, dim=1), device=device)
    pred = p.argmax(axis=1)
    out = table.append_column(names[0], loaded.classes.take(pa.array(pred, type=pa.int64())))
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
