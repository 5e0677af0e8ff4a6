"""Noise-robust classification losses for retraining on labels that may be wrong.

Each loss takes ``logits`` ``(n_samples, n_classes)`` and integer ``targets`` ``(n_samples,)`` (a 0/1
matrix for ``sigmoid_bce``), keyword-only hyper-parameters, optional per-row ``weight`` (finite, >= 0) and
``reduction``: ``"mean"`` gives ``sum_i w_i l_i / sum_i w_i`` (0, graph intact, when all weights are 0),
``"none"`` the vector ``w_i l_i``. The maths runs in float32 on ``log_softmax`` whatever the logits' dtype.
Bad arguments raise :class:`~cleanpipe.errors.InputError`; checking ``targets`` reads back one scalar.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from cleanpipe.errors import InputError

__all__ = [
    "ELR_CLAMP", "LOSSES", "clipped_cross_entropy", "cross_entropy", "dynamic_bootstrap", "early_learning_regularized",
    "elr_target_update", "forward_corrected",
    "generalized_cross_entropy", "get_loss", "hard_bootstrap", "label_smoothing", "sigmoid_bce",
    "soft_bootstrap", "symmetric_cross_entropy", "uniform_mixture",
]

Tensor = torch.Tensor


def _param(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    """Return ``value`` as a float after checking it lies in the interval ``lo..hi``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}.") from None
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi):  # also catches NaN, which fails every comparison
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise InputError(f"{name} must be in {interval}; got {value!r}. Pass a value in {interval}.")
    return v


def _row_vector(name: str, value, n: int, device: torch.device, hi: float = math.inf) -> Tensor:
    """Check a per-row float vector (weights, posteriors): shape ``(n,)``, finite, within ``[0, hi]``."""
    v = torch.as_tensor(value, dtype=torch.float32, device=device)
    if v.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), one value per row of logits; got {tuple(v.shape)}.")
    if n and not bool(torch.isfinite(v).all() & (v >= 0).all() & (v <= hi).all()):
        rng = "[0, 1]" if hi == 1 else ">= 0"
        raise InputError(f"{name} must be finite and {rng}; got values from {v.min().item():g} to "
                         f"{v.max().item():g}. Fix or drop the offending rows.")
    return v


def _validate(logits, targets, weight, reduction: str, *, multilabel: bool = False):
    """Check the arguments every loss shares; return float32 logits, targets and weight (or None)."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"logits must be a floating-point torch.Tensor; got {got}. "
                         "Pass the model's raw output.")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise InputError(f"logits must have shape (n_samples, n_classes); got {tuple(logits.shape)}. "
                         "Reshape to 2-D (use logits[None] for a single row).")
    if reduction not in ("mean", "none"):
        raise InputError(f"reduction must be 'mean' or 'none'; got {reduction!r}.")
    n, k = logits.shape
    targets = torch.as_tensor(targets, device=logits.device)
    if multilabel:
        if targets.shape != logits.shape:
            raise InputError(f"targets must be a 0/1 matrix shaped like logits {(n, k)}; got "
                             f"{tuple(targets.shape)}.")
        targets = targets.float()
        if n and not bool(((targets >= 0) & (targets <= 1)).all()):  # NaN fails both comparisons
            raise InputError("targets must hold values in [0, 1] (0/1 labels per class); found values "
                             "outside [0, 1] or NaN. Binarise the label matrix first.")
    else:
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise InputError(f"targets must be integer class indices; got dtype {targets.dtype}. "
                             "Pass targets.long().")
        if targets.shape != (n,):
            raise InputError(f"targets must have shape ({n},), one class index per row of logits; got "
                             f"{tuple(targets.shape)}.")
        targets = targets.long()
        if n:
            lo, hi = targets.min().item(), targets.max().item()
            if lo < 0 or hi >= k:
                raise InputError(f"targets must lie in [0, {k}) (one index per logit column); got values "
                                 f"from {lo} to {hi}. Encode labels as 0..{k - 1}.")
    if weight is not None:
        weight = _row_vector("weight", weight, n, logits.device)
    # float32 maths even for bf16/fp16 logits: log_softmax of low-precision inputs loses small losses
    return logits.float(), targets, weight


def _reduce(per_row: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    if weight is not None:
        per_row = per_row * weight
    if reduction == "none":
        return per_row
    if weight is None:
        # sum / max(n, 1) so an empty batch gives 0 rather than NaN
        return per_row.sum() / max(per_row.shape[0], 1)
    total = weight.sum()
    # every weight 0: the numerator is an exact 0 (with its graph), so divide by 1 instead of 0
    return per_row.sum() / torch.where(total > 0, total, torch.ones_like(total))


def _log_probs(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``log softmax(x)`` ``(N, K)`` and its entry at each row's target ``(N,)``."""
    logp = torch.log_softmax(x, dim=1)
    return logp, logp.gather(1, y[:, None]).squeeze(1)


def _self_term(logp: Tensor, mode: str, predictions: Tensor | None = None) -> Tensor:
    """``sum_k z_k log q_k`` for the model's own target ``z``: onehot(argmax q) or detached ``q``.

    ``predictions`` replaces ``q`` as the source of ``z`` (the un-mixed rows' probabilities under mixup).
    """
    source = logp.detach().exp() if predictions is None else predictions.detach()
    if mode == "hard":
        return logp.gather(1, source.argmax(dim=1, keepdim=True)).squeeze(1)
    # detached: the target is a constant, so there is no entropy-minimising gradient through it
    return (source * logp).sum(dim=1)


def cross_entropy(logits: Tensor, targets: Tensor, *, weight: Tensor | None = None,
                  reduction: str = "mean") -> Tensor:
    """Weighted cross-entropy, the baseline every other loss reduces to at its limit.

    Parameters
    ----------
    logits : Tensor of shape (n_samples, n_classes)
        Raw scores, any float dtype (computed in float32).
    targets : Tensor of shape (n_samples,)
        Integer class indices in ``[0, n_classes)``.
    weight : Tensor of shape (n_samples,), default=None
        Per-row weights, finite and >= 0; ``None`` weighs every row 1.
    reduction : {"mean", "none"}, default="mean"
        ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when all weights are 0); ``"none"``: ``w_i l_i``.

    Returns
    -------
    Tensor
        float32 scalar, or vector of shape (n_samples,) with ``reduction="none"``.

    Raises
    ------
    InputError
        On a bad shape, dtype, target index, weight or option.

    Notes
    -----
    ``l_i = -log p_{i, y_i}`` with ``p_i = softmax(logits_i)``.

    Examples
    --------
    >>> cross_entropy(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
    tensor(0.1698)
    """
    x, y, w = _validate(logits, targets, weight, reduction)
    return _reduce(-_log_probs(x, y)[1], w, reduction)


def label_smoothing(logits: Tensor, targets: Tensor, *, smoothing: float = 0.1,
                    weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy against a smoothed one-hot target.

    Parameters are those of :func:`cross_entropy`, plus ``smoothing : float in [0, 1), default=0.1``.

    Notes
    -----
    ``t = (1 - eps) onehot(y) + eps / K``, ``l = -sum_k t_k log p_k``; ``eps = 0`` is cross-entropy.
    Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016.

    Examples
    --------
    >>> label_smoothing(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]), smoothing=0.1)
    tensor(0.3365)
    """
    eps = _param("smoothing", smoothing, 0.0, 1.0, hi_open=True)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp, logp_y = _log_probs(x, y)
    return _reduce(-(1 - eps) * logp_y - eps * logp.mean(dim=1), w, reduction)


def soft_bootstrap(logits: Tensor, targets: Tensor, *, beta: float = 0.95, weight: Tensor | None = None,
                   reduction: str = "mean") -> Tensor:
    """Soft bootstrapping: mix the given label with the model's own (detached) prediction.

    Parameters are those of :func:`cross_entropy`, plus ``beta : float in [0, 1], default=0.95``, the
    weight on the given label.

    Notes
    -----
    ``t = beta onehot(y) + (1 - beta) stopgrad(q)``, ``q = softmax(logits)``, ``l = -sum_k t_k log q_k``;
    ``beta = 1`` is cross-entropy. Reed et al., "Training Deep Neural Networks on Noisy Labels with
    Bootstrapping", ICLR 2015 workshop. Reed et al. let the gradient flow through ``q``, which adds an
    entropy-minimisation term that drives the model to over-confidence; we detach ``q`` so the target is a
    constant, as in most re-implementations and in :func:`dynamic_bootstrap`.

    Examples
    --------
    >>> soft_bootstrap(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]), beta=0.95)
    tensor(0.1876)
    """
    b = _param("beta", beta, 0.0, 1.0)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp, logp_y = _log_probs(x, y)
    return _reduce(-b * logp_y - (1 - b) * _self_term(logp, "soft"), w, reduction)


def hard_bootstrap(logits: Tensor, targets: Tensor, *, beta: float = 0.8, weight: Tensor | None = None,
                   reduction: str = "mean") -> Tensor:
    """Hard bootstrapping: mix the given label with the model's predicted class.

    Parameters are those of :func:`cross_entropy`, plus ``beta : float in [0, 1], default=0.8``, the weight
    on the given label.

    Notes
    -----
    ``t = beta onehot(y) + (1 - beta) onehot(argmax_k q_k)``, ``l = -sum_k t_k log q_k``; ``beta = 1`` is
    cross-entropy. Reed et al., ICLR 2015 workshop (see :func:`soft_bootstrap`).

    Examples
    --------
    >>> hard_bootstrap(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1]), beta=0.8)
    tensor(1.7698)
    """
    b = _param("beta", beta, 0.0, 1.0)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp, logp_y = _log_probs(x, y)
    return _reduce(-b * logp_y - (1 - b) * _self_term(logp, "hard"), w, reduction)


def dynamic_bootstrap(logits: Tensor, targets: Tensor, *, noisy_weight: Tensor, mode: str = "hard",
                      predictions: Tensor | None = None, weight: Tensor | None = None,
                      reduction: str = "mean") -> Tensor:
    """Dynamic bootstrapping: per-row mixing weight from a posterior that the label is noisy.

    Parameters
    ----------
    logits, targets, weight, reduction
        As in :func:`cross_entropy`.
    noisy_weight : Tensor of shape (n_samples,)
        ``w_i`` in ``[0, 1]``, the posterior that row i belongs to the noisy mixture component (e.g. the
        beta mixture over per-row losses); required.
    mode : {"hard", "soft"}, default="hard"
        Replace the label by the predicted class (``"hard"``) or by the detached prediction (``"soft"``).
    predictions : Tensor of shape (n_samples, n_classes), optional
        Probabilities the bootstrapped target ``z`` is taken from (detached); default: the softmax of
        ``logits``. Under mixup the logits are those of mixed rows while ``z`` must come from each
        row's un-mixed self, so the training loop passes the un-mixed prediction here.

    Notes
    -----
    ``t_i = (1 - w_i) onehot(y_i) + w_i z_i`` with ``z_i = onehot(argmax q_i)`` (hard) or
    ``stopgrad(q_i)`` (soft); ``l_i = -sum_k t_ik log q_ik``. ``w = 0`` everywhere is exactly
    cross-entropy. Arazo et al., "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019.

    Examples
    --------
    >>> dynamic_bootstrap(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1]),
    ...                   noisy_weight=torch.tensor([0.5]), mode="hard")
    tensor(1.1698)
    """
    if mode not in ("hard", "soft"):
        raise InputError(f"mode must be 'hard' or 'soft'; got {mode!r}.")
    x, y, w = _validate(logits, targets, weight, reduction)
    nw = _row_vector("noisy_weight", noisy_weight, x.shape[0], x.device, hi=1.0)
    if predictions is not None and tuple(predictions.shape) != tuple(x.shape):
        raise InputError(f"predictions must have the logits' shape {tuple(x.shape)}; got "
                         f"{tuple(predictions.shape)}.")
    logp, logp_y = _log_probs(x, y)
    return _reduce(-(1 - nw) * logp_y - nw * _self_term(logp, mode, predictions), w, reduction)


def forward_corrected(logits: Tensor, targets: Tensor, *, noise_matrix, weight: Tensor | None = None,
                      reduction: str = "mean") -> Tensor:
    """Forward loss correction: score the given label under the model's prediction passed through T.

    Parameters
    ----------
    logits, targets, weight, reduction
        As in :func:`cross_entropy`; ``targets`` are the given (possibly noisy) labels.
    noise_matrix : array-like of shape (n_classes, n_classes)
        ``P(given | true)`` as produced by ``flag``, indexed ``noise_matrix[given, true]``: finite, >= 0,
        each column summing to 1 within 1e-3 (columns are renormalised exactly after the check).

    Notes
    -----
    ``p~_ig = sum_t T[g, t] p_it`` and ``l_i = -log p~_{i, y_i}``; the identity matrix gives
    cross-entropy. The sum runs in log space (``logsumexp`` over ``log p + log T[y]``) with T's entries
    floored at 1e-12, so ``p~ >= 1e-12``, the loss is at most ``-log 1e-12 ~ 27.6`` and, unlike a hard
    clamp of ``p~``, the gradient never vanishes. Patrini et al., "Making Deep Neural Networks Robust to
    Label Noise: a Loss Correction Approach", CVPR 2017.

    Examples
    --------
    >>> T = torch.tensor([[0.9, 0.2], [0.1, 0.8]])  # column t is P(given | true = t)
    >>> forward_corrected(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), noise_matrix=T)
    tensor(0.5978)
    """
    x, y, w = _validate(logits, targets, weight, reduction)
    k = x.shape[1]
    t = torch.as_tensor(noise_matrix, dtype=torch.float32, device=x.device)
    if t.shape != (k, k):
        raise InputError(f"noise_matrix must have shape ({k}, {k}) to match logits; got {tuple(t.shape)}.")
    if not bool((torch.isfinite(t) & (t >= 0)).all()):
        raise InputError("noise_matrix must be finite and >= 0; it holds a negative, NaN or inf entry.")
    col = t.sum(dim=0)
    if not bool(((col - 1).abs() <= 1e-3).all()):
        j = int((col - 1).abs().argmax())
        hint = (" Its rows sum to 1: pass noise_matrix.T." if bool(((t.sum(dim=1) - 1).abs() <= 1e-3).all())
                else " Normalise each column.")
        raise InputError(f"noise_matrix columns must each sum to 1 (P(given | true), indexed [given, true]);"
                         f" column {j} sums to {col[j].item():.4g}.{hint}")
    log_t = torch.log((t / col).clamp_min(1e-12))
    logp = torch.log_softmax(x, dim=1)
    return _reduce(-torch.logsumexp(logp + log_t[y], dim=1), w, reduction)


def generalized_cross_entropy(logits: Tensor, targets: Tensor, *, q: float = 0.7,
                              weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Generalized cross-entropy (L_q): between cross-entropy (q -> 0) and MAE (q = 1).

    Parameters are those of :func:`cross_entropy`, plus ``q : float in (0, 1], default=0.7``.

    Notes
    -----
    ``l = (1 - p_y^q) / q``, computed as ``-expm1(q log p_y) / q`` so small ``q`` keeps full precision;
    ``l -> -log p_y`` as ``q -> 0``. Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
    Neural Networks with Noisy Labels", NeurIPS 2018.

    Examples
    --------
    >>> generalized_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), q=1.0)
    tensor(0.5000)
    """
    qq = _param("q", q, 0.0, 1.0, lo_open=True)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp_y = _log_probs(x, y)[1]
    return _reduce(-torch.expm1(qq * logp_y) / qq, w, reduction)


def symmetric_cross_entropy(logits: Tensor, targets: Tensor, *, alpha: float = 0.1, beta: float = 1.0,
                            log_zero: float = -4.0, weight: Tensor | None = None,
                            reduction: str = "mean") -> Tensor:
    """Symmetric cross-entropy: cross-entropy plus reverse cross-entropy.

    Parameters are those of :func:`cross_entropy`, plus ``alpha : float >= 0, default=0.1`` (weight of
    CE), ``beta : float >= 0, default=1.0`` (weight of RCE) and ``log_zero : float < 0, default=-4.0``
    (``A``, the value standing in for ``log 0`` in the one-hot target).

    Notes
    -----
    ``l = alpha CE + beta RCE`` with ``RCE = -sum_k p_k log onehot_k = -A (1 - p_y)``; ``alpha = 1,
    beta = 0`` is cross-entropy. Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy
    Labels", ICCV 2019.

    Examples
    --------
    >>> symmetric_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), alpha=0.1, beta=1.0)
    tensor(2.0693)
    """
    a = _param("alpha", alpha, 0.0, math.inf, hi_open=True)
    b = _param("beta", beta, 0.0, math.inf, hi_open=True)
    big_a = _param("log_zero", log_zero, -math.inf, 0.0, lo_open=True, hi_open=True)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp_y = _log_probs(x, y)[1]
    # 1 - p_y as -expm1(log p_y): exact when p_y is close to 1
    return _reduce(-a * logp_y + b * big_a * torch.expm1(logp_y), w, reduction)


def clipped_cross_entropy(logits: Tensor, targets: Tensor, *, max_loss: float | None = None,
                          weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy capped at ``max_loss``: rows the model contradicts strongly stop pulling on it.

    Parameters are those of :func:`cross_entropy`, plus ``max_loss : float > 0 or None, default=None``.
    ``None`` means ``max(-log 0.05, log 2K)``: rows whose label gets under 5% probability are ignored, with
    the cap raised for K > 10 classes so an untrained model (loss ~ log K) is never clipped everywhere.

    Notes
    -----
    ``l = min(-log p_y, max_loss)``; the gradient of a clipped row is 0. ``max_loss = inf`` is
    cross-entropy. Loss truncation in the spirit of Kang & Hashimoto, ACL 2020, and of the trimmed
    losses of Shen & Sanghavi, ICML 2019.

    Examples
    --------
    >>> clipped_cross_entropy(torch.tensor([[4.0, 0.0]]), torch.tensor([1]), max_loss=2.0)
    tensor(2.)
    """
    x, y, w = _validate(logits, targets, weight, reduction)
    if max_loss is None:
        cap = max(-math.log(0.05), math.log(2 * x.shape[1]))
    else:
        cap = _param("max_loss", max_loss, 0.0, math.inf, lo_open=True)
    return _reduce((-_log_probs(x, y)[1]).clamp(max=cap), w, reduction)


def uniform_mixture(logits: Tensor, targets: Tensor, *, rho: float = 0.2, weight: Tensor | None = None,
                    reduction: str = "mean") -> Tensor:
    """Likelihood of the label under a prediction mixed with uniform label noise.

    Parameters are those of :func:`cross_entropy`, plus ``rho : float in [0, 1), default=0.2``, the
    assumed rate of uniformly random labels.

    Notes
    -----
    ``p'_k = (1 - rho) p_k + rho / K``, ``l = -log p'_y``, computed as ``-logaddexp(log(1 - rho) +
    log p_y, log(rho / K))``; bounded by ``log(K / rho)``. ``rho = 0`` is cross-entropy. Forward
    correction (Patrini et al., CVPR 2017) with ``T = (1 - rho) I + rho / K``.

    Examples
    --------
    >>> uniform_mixture(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), rho=0.2)
    tensor(0.6931)
    """
    r = _param("rho", rho, 0.0, 1.0, hi_open=True)
    x, y, w = _validate(logits, targets, weight, reduction)
    logp_y = _log_probs(x, y)[1]
    if r == 0.0:  # log(0) would be -inf; skip the mixture so rho = 0 is cross-entropy bit for bit
        return _reduce(-logp_y, w, reduction)
    mixed = torch.logaddexp(math.log1p(-r) + logp_y, torch.full_like(logp_y, math.log(r / x.shape[1])))
    return _reduce(-mixed, w, reduction)


def sigmoid_bce(logits: Tensor, targets: Tensor, *, weight: Tensor | None = None, smoothing: float = 0.0,
                bootstrap: float = 0.0, reduction: str = "mean") -> Tensor:
    """Multi-label binary cross-entropy with optional per-class label smoothing and bootstrapping.

    ``logits`` has one independent logit per class and ``targets`` is a 0/1 (or soft, in [0, 1]) matrix of
    the same shape; ``weight`` and ``reduction`` are as in :func:`cross_entropy`. ``smoothing : float in
    [0, 1), default=0.0`` pulls each target towards 1/2; ``bootstrap : float in [0, 1), default=0.0`` is
    the weight of the model's own detached probability in the target.

    Notes
    -----
    ``t' = (1 - eps) t + eps / 2``, ``t'' = (1 - b) t' + b stopgrad(sigmoid(logits))``,
    ``l_i = (1/K) sum_k BCE(logits_ik, t''_ik)`` via ``binary_cross_entropy_with_logits`` (stable for
    large logits). With ``eps = b = 0`` the mean equals torch's ``binary_cross_entropy_with_logits``.

    Examples
    --------
    >>> sigmoid_bce(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(0.6931)
    """
    eps = _param("smoothing", smoothing, 0.0, 1.0, hi_open=True)
    b = _param("bootstrap", bootstrap, 0.0, 1.0, hi_open=True)
    x, t, w = _validate(logits, targets, weight, reduction, multilabel=True)
    t = (1 - eps) * t + eps / 2
    if b:
        t = (1 - b) * t + b * torch.sigmoid(x.detach())
    per_row = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(dim=1)
    return _reduce(per_row, w, reduction)


#: Probabilities enter ELR's regulariser clamped to ``[ELR_CLAMP, 1 - ELR_CLAMP]`` (Liu et al.'s code),
#: so ``log(1 - <p, t>) >= log(ELR_CLAMP)``: the loss is bounded below and never ``log 0``.
ELR_CLAMP = 1e-4


def _elr_probs(x: Tensor) -> Tensor:
    return torch.softmax(x, dim=1).clamp(ELR_CLAMP, 1 - ELR_CLAMP)


def elr_target_update(target_average: Tensor, logits: Tensor, *, beta: float) -> Tensor:
    """One step of ELR's per-row target: a moving average of the model's (detached) predictions.

    Parameters
    ----------
    target_average : Tensor of shape (n_samples, n_classes)
        ``t`` before the step (zeros before the first).
    logits : Tensor of shape (n_samples, n_classes)
        The model's raw scores for the same rows (detached here).
    beta : float in [0, 1)
        Momentum: the weight of the previous average.

    Returns
    -------
    Tensor of shape (n_samples, n_classes)
        ``beta t + (1 - beta) p / sum_k p_k`` with ``p = clamp(softmax(logits), ELR_CLAMP,
        1 - ELR_CLAMP)``; a new tensor, ``target_average`` is not modified. A row that summed to at
        most 1 still does: after ``n`` steps from zeros it sums to ``1 - beta^n``.

    Examples
    --------
    >>> elr_target_update(torch.zeros(1, 2), torch.tensor([[0.0, 0.0]]), beta=0.7)
    tensor([[0.1500, 0.1500]])
    """
    b = _param("beta", beta, 0.0, 1.0, hi_open=True)
    p = _elr_probs(logits.detach().float())
    return b * target_average + (1 - b) * p / p.sum(dim=1, keepdim=True)


def early_learning_regularized(logits: Tensor, targets: Tensor, *, target_average: Tensor, lam: float = 3.0,
                               weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy plus early-learning regularisation (ELR): keep each row's prediction close to the
    running average of the model's own earlier predictions on it.

    Parameters
    ----------
    logits, targets, weight, reduction
        As in :func:`cross_entropy`.
    target_average : Tensor of shape (n_samples, n_classes)
        Each row's ``t_i``, the moving average of the model's detached predictions
        (:func:`elr_target_update`; the training loop keeps it per row): finite, >= 0, rows summing
        to at most 1 (+1e-3). Zeros make the regulariser vanish.
    lam : float >= 0, default=3.0
        ``lambda``, the regulariser's weight (Liu et al.'s value for CIFAR-10, 10 classes).

    Notes
    -----
    ``l_i = -log p_{i, y_i} + lambda log(1 - <clamp(p_i), t_i>)``, ``p_i = softmax(logits_i)``, the
    clamp to ``[ELR_CLAMP, 1 - ELR_CLAMP]`` as in the authors' code. The second term is at most 0 and
    at least ``lambda log(ELR_CLAMP)``, so the loss can be negative. Its gradient with respect to
    ``p_i`` is ``-lambda t_i / (1 - <p_i, t_i>)``: it pushes the prediction towards the early, mostly
    clean targets, and the push grows as the cross-entropy term of a wrongly labelled row pulls
    ``p_i`` away from them, which cancels the memorisation gradient. ``lambda = 0`` or ``t = 0`` is
    cross-entropy. The running average (momentum ``beta``; 0.7 on CIFAR-10) lives in the training
    loop. Liu et al., "Early-Learning Regularization Prevents Memorization of Noisy Labels",
    NeurIPS 2020.

    Examples
    --------
    >>> early_learning_regularized(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1]),
    ...                            target_average=torch.tensor([[1.0, 0.0, 0.0]]), lam=1.0)
    tensor(0.3133)
    """
    lam_ = _param("lam", lam, 0.0, math.inf, hi_open=True)
    x, y, w = _validate(logits, targets, weight, reduction)
    t = torch.as_tensor(target_average, dtype=torch.float32, device=x.device)
    if t.shape != x.shape:
        raise InputError(f"target_average must have the logits' shape {tuple(x.shape)}; got {tuple(t.shape)}.")
    if t.numel() and not bool((torch.isfinite(t) & (t >= 0)).all() & (t.sum(dim=1) <= 1 + 1e-3).all()):
        raise InputError("target_average must be finite, >= 0, with rows summing to at most 1 (a moving "
                         "average of predicted probabilities); build it with elr_target_update.")
    inner = (_elr_probs(x) * t).sum(dim=1)
    return _reduce(-_log_probs(x, y)[1] + lam_ * torch.log1p(-inner), w, reduction)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "ce": cross_entropy,
    "label-smoothing": label_smoothing,
    "soft-bootstrap": soft_bootstrap,
    "hard-bootstrap": hard_bootstrap,
    "dynamic-hard": functools.partial(dynamic_bootstrap, mode="hard"),
    "dynamic-soft": functools.partial(dynamic_bootstrap, mode="soft"),
    "forward": forward_corrected,
    "gce": generalized_cross_entropy,
    "sce": symmetric_cross_entropy,
    "clipped-ce": clipped_cross_entropy,
    "uniform-mixture": uniform_mixture,
    "elr": early_learning_regularized,
    "bce": sigmoid_bce,
}


def get_loss(name: str) -> Callable[..., Tensor]:
    """Return the loss registered under CLI name ``name`` (see ``LOSSES``).

    ``"dynamic-*"`` need ``noisy_weight=``, ``"forward"`` needs ``noise_matrix=``, and ``"bce"`` takes a
    0/1 target matrix; the rest take integer targets and have usable defaults.

    Examples
    --------
    >>> get_loss("gce") is generalized_cross_entropy
    True
    """
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}.") from None


# --- multi-label losses over a softmax -------------------------------------------------------------


def _label_distribution(t: Tensor) -> tuple[Tensor, Tensor]:
    """``t / sum_k t_k`` per row (0 on rows without tags) and the mask of rows with a tag."""
    total = t.sum(dim=1, keepdim=True)
    has = total.squeeze(1) > 0
    return t / torch.where(total > 0, total, torch.ones_like(total)), has


def _tagged_weight(weight: Tensor | None, has: Tensor) -> Tensor:
    """Rows without a tag have no target distribution: they get weight 0 (out of the mean)."""
    has = has.to(torch.float32)
    return has if weight is None else weight * has


def softmax_labels(logits: Tensor, targets: Tensor, *, weight: Tensor | None = None,
                   reduction: str = "mean") -> Tensor:
    """Multi-label cross-entropy over a softmax, the target spread uniformly over the row's tags.

    Parameters
    ----------
    logits : Tensor of shape (n_samples, n_classes)
        Raw scores, one per class (computed in float32).
    targets : Tensor of shape (n_samples, n_classes)
        0/1 tag matrix (soft values in [0, 1] are normalised the same way).
    weight : Tensor of shape (n_samples,), default=None
        Per-row weights, finite and >= 0.
    reduction : {"mean", "none"}, default="mean"
        ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` over the rows with at least one tag; ``"none"``:
        ``w_i l_i`` (0 on rows without a tag).

    Notes
    -----
    ``t_ik = y_ik / sum_j y_ij``, ``q_i = softmax(logits_i)``, ``l_i = -sum_k t_ik log q_ik``
    (= ``KL(t_i || q_i) + H(t_i)``). A row with one tag gives the ordinary cross-entropy. A row
    without any tag has no target distribution: its loss is 0 and it is left out of the mean, as
    if its weight were 0. Mahajan et al., "Exploring the Limits of Weakly Supervised Pretraining",
    ECCV 2018 (softmax with a ``1/k`` target over a row's ``k`` hashtags, which they found better
    than per-class sigmoids).

    Examples
    --------
    >>> softmax_labels(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    tensor(0.6931)
    """
    x, t, w = _validate(logits, targets, weight, reduction, multilabel=True)
    t, has = _label_distribution(t)
    per_row = -(t * torch.log_softmax(x, dim=1)).sum(dim=1)
    return _reduce(per_row, _tagged_weight(w, has), reduction)


def softmax_abs(logits: Tensor, targets: Tensor, *, weight: Tensor | None = None,
                reduction: str = "mean") -> Tensor:
    """The "absolute" form of :func:`softmax_labels`: L1 distance between softmax and tag distribution.

    Parameters and reduction are those of :func:`softmax_labels`.

    Notes
    -----
    ``l_i = sum_k |q_ik - t_ik|`` with ``q_i = softmax(logits_i)`` and ``t_ik = y_ik / sum_j y_ij``;
    ``l_i = 2 TV(q_i, t_i)`` lies in ``[0, 2]``. It replaces the KL term of
    :func:`softmax_labels`, ``KL(t || q)``, by the distance that Pinsker's inequality bounds with it,
    ``||q - t||_1 <= sqrt(2 KL(t || q))``; hence its registry name ``"abs-kl"``. Being bounded, a row
    the model contradicts strongly cannot dominate the gradient. With one tag ``y`` it is
    ``2 (1 - q_y)``, twice the mean absolute error that Ghosh, Kumar & Sastry ("Robust Loss
    Functions under Label Noise for Deep Neural Networks", AAAI 2017) prove tolerant to symmetric
    label noise. Rows without a tag are left out as in :func:`softmax_labels`. The gradient of
    ``|.|`` at 0 is taken as 0.

    Examples
    --------
    >>> softmax_abs(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(1.)
    """
    x, t, w = _validate(logits, targets, weight, reduction, multilabel=True)
    t, has = _label_distribution(t)
    per_row = (torch.softmax(x, dim=1) - t).abs().sum(dim=1)
    return _reduce(per_row, _tagged_weight(w, has), reduction)


LOSSES.update({"softmax-labels": softmax_labels, "abs-kl": softmax_abs})
__all__ += ["softmax_abs", "softmax_labels"]
