"""The training loop: seeded split, mini-batches sliced on the device, early stopping.

The whole data set is moved to the device once; every epoch draws one permutation *on the device*
and batches are index-slices of the resident tensors, so no batch is copied from the host. On CUDA
the forward pass runs under bf16 autocast (the losses compute in float32 whatever the logits'
dtype). On CPU the run is deterministic for a given seed: the RNG is forked and seeded,
deterministic algorithms are switched on for the duration, and shuffling uses its own generator.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from ..settings import TrainConfig
from ..losses import elr_target_update
from .model import predict_logits
from .noise import refit

log = logging.getLogger(__name__)

#: The per-row state :func:`fit` keeps for ELR (the loss's keyword argument).
TARGET_AVERAGE = "target_average"



@dataclass
class TrainHistory:
    """Per-epoch curves and the summary of a run (what ``metrics.json`` holds)."""

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    train_rows: int = 0
    val_rows: int = 0
    noise_model: list = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA device; pass --device "
                         "cpu or auto")
    return torch.device(name)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of row indices into (train, validation).

    Each class gives ``round(fraction * n_c)`` rows to validation but keeps at least one for
    training; vectorised: shuffle, stable-sort by class, rank within class.
    """
    n = len(y)
    if fraction <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(y[order], kind="stable")]
    counts = np.bincount(y, minlength=int(y.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[y[order]]
    n_val = np.minimum(np.floor(fraction * counts + 0.5), np.maximum(counts - 1, 0))
    is_val = rank < n_val[y[order]]
    return np.sort(order[~is_val]), np.sort(order[is_val])


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)`` into (train, validation): ``round(fraction * n)`` rows to
    validation, at least one left for training. For multi-label targets, which have no class to
    stratify on."""
    if fraction <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(int(np.floor(fraction * n + 0.5)), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device, threads: int | None = None):
    """Fork torch's RNG (the caller's stream is untouched), make CPU kernels deterministic and set
    the thread count; every global setting is restored on exit."""
    devices = [device] if device.type == "cuda" else []
    was = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        # CUDA would also need CUBLAS_WORKSPACE_CONFIG; determinism is promised on CPU only
        torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
        if threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)
            torch.set_num_threads(was_threads)


def fit(model: torch.nn.Module, x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray, *,
        loss_fn: Callable, loss_kwargs: dict | None = None, row_kwargs: dict | None = None,
        weight: np.ndarray | None = None, config: TrainConfig = TrainConfig(),
        online_warmup: int | None = None, prior: np.ndarray | None = None,
        reference: np.ndarray | None = None, target_momentum: float | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        score_fn: Callable | None = None) -> TrainHistory:
    """Train ``model`` in place with early stopping; restore its best-validation weights.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(x_num, x_cat)``; freshly built by the caller under the same seed.
    x_num : ndarray of shape (n_samples, n_numeric), float32
    x_cat : ndarray of shape (n_samples, n_categorical), int64
    y : ndarray of shape (n_samples,), int64, or (n_samples, n_classes), float
        Class codes in ``[0, n_classes)``; or a 0/1 tag matrix (multi-label), for which the
        validation rows are a seeded random split (:func:`random_split`) instead of a stratified one.
    loss_fn : callable
        ``loss_fn(logits, targets, weight=..., **loss_kwargs, **row_kwargs[batch])`` (see
        :mod:`cleanpipe.losses`).
    loss_kwargs : dict, optional
        Constant keyword arguments (hyper-parameters, ``noise_matrix``).
    row_kwargs : dict of str -> ndarray of shape (n_samples,), optional
        Per-row keyword arguments sliced with each batch (``noisy_weight``).
    weight : ndarray of shape (n_samples,), optional
        Row weights (>= 0); they also weigh the validation score.
    config : TrainConfig
    online_warmup : int, optional
        Estimate ``noisy_weight`` online instead of taking it from ``row_kwargs``: it is 0 (plain
        cross-entropy) for the first ``online_warmup`` epochs, then after every epoch a Beta
        mixture is fitted to the network's own per-row cross-entropy on the training rows and
        ``noisy_weight`` becomes each row's posterior of the high-loss component (Arazo et al.,
        ICML 2019; see :mod:`cleanpipe.train.noise`). Each fit is recorded in
        ``TrainHistory.noise_model``.
    prior : ndarray of shape (n_classes,), optional
        Class prior of ``config.prior_reg`` (default: the training rows' label frequencies).
    reference : ndarray of shape (n_samples,), optional
        The flagger's ``p_noisy`` per row: each online fit records the AUROC of its posterior
        against ``p_noisy >= 0.5``.
    target_momentum : float in [0, 1), optional
        Keep ELR's per-row ``target_average`` (:func:`cleanpipe.losses.early_learning_regularized`):
        zeros at the start, and before each step the batch's rows move to
        ``beta t + (1 - beta) p`` with this ``beta`` and ``p`` their current (un-mixed, detached)
        prediction (:func:`cleanpipe.losses.elr_target_update`).
    on_epoch : callable, optional
        ``on_epoch(epoch, metrics)`` after every epoch (progress bars); ``metrics["model"]`` is the
        network being trained, to score a held-out set per epoch (switch it back with
        ``model.train()`` if you change its mode).
    score_fn : callable, optional
        ``score_fn(logits, targets, weight) -> float``, the validation score early stopping
        maximises (default: weighted accuracy; multi-label retraining passes micro-F1).

    Returns
    -------
    TrainHistory

    Notes
    -----
    Early stopping watches the weighted accuracy on the held-out rows (ties: lower loss). Those
    labels are as noisy as the training ones, but agreement with them still peaks about when the
    clean accuracy does, and down-weighted rows count less, as in training. Without validation
    rows (``val_fraction=0``) the run trains every epoch and keeps the last.
    """
    device = resolve_device(config.device)
    train_idx, val_idx = (random_split(len(y), config.val_fraction, config.seed) if np.ndim(y) == 2
                          else stratified_split(y, config.val_fraction, config.seed))
    hist = TrainHistory(device=str(device), train_rows=len(train_idx), val_rows=len(val_idx))
    loss_kwargs = dict(loss_kwargs or {})
    with _seeded(config.seed, device, config.threads):
        # One host -> device copy of everything; batches below are device-side index slices.
        t_num = torch.from_numpy(np.ascontiguousarray(x_num, np.float32)).to(device)
        t_cat = torch.from_numpy(np.ascontiguousarray(x_cat, np.int64)).to(device)
        t_y = torch.from_numpy(np.asarray(y, np.float32 if np.ndim(y) == 2 else np.int64)).to(device)
        t_w = None if weight is None else torch.from_numpy(np.asarray(weight, np.float32)).to(device)
        t_rows = {k: torch.from_numpy(np.asarray(v, np.float32)).to(device)
                  for k, v in (row_kwargs or {}).items()}
        tr = torch.from_numpy(train_idx).to(device)
        va = torch.from_numpy(val_idx).to(device)
        if online_warmup is not None:
            t_rows["noisy_weight"] = torch.zeros(len(y), device=device)
        step = _StepSettings.build(config, y, train_idx, prior, device, target_momentum)
        if step.target_momentum is not None:
            k = int(np.max(y)) + 1 if len(y) else 1
            t_rows[TARGET_AVERAGE] = torch.zeros((len(y), k), device=device)
        ref_tr = None if reference is None else np.asarray(reference, np.float64)[train_idx]
        for k, v in loss_kwargs.items():
            if isinstance(v, np.ndarray):
                loss_kwargs[k] = torch.from_numpy(v.astype(np.float32)).to(device)
        model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator(device=device)
        gen.manual_seed(config.seed)
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        best, best_state, since_best = None, None, 0
        bs = config.batch_size
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            batches = tr[torch.randperm(len(tr), generator=gen, device=device)].split(bs)
            total = _train_epoch(model, opt, batches, (t_num, t_cat, t_y, t_w, t_rows), loss_fn,
                                 loss_kwargs, autocast, step, gen)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_seconds = time.perf_counter() - t0
            hist.train_seconds += epoch_seconds
            hist.train_loss.append(float(total) / max(len(tr), 1))
            if online_warmup is not None and epoch >= online_warmup:
                t_rows["noisy_weight"][tr], record = refit(model, t_num, t_cat, t_y, tr, epoch=epoch,
                                                           reference=ref_tr)
                record["epoch_seconds"] = round(epoch_seconds, 4)  # the refit's cost is seconds / this
                hist.noise_model.append(record)
            score = _validate(model, t_num, t_cat, t_y, t_w, t_rows, va, loss_fn, loss_kwargs,
                              score_fn)
            hist.val_loss.append(score[1])
            hist.val_accuracy.append(score[0])
            hist.epochs_run = epoch
            # without validation rows there is nothing to choose with: the last epoch is kept
            key = (score[0], -score[1]) if len(va) else (epoch,)
            if best is None or key > best:
                best, since_best, hist.best_epoch = key, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
            if on_epoch is not None:
                on_epoch(epoch, {"train_loss": hist.train_loss[-1], "val_loss": score[1],
                                 "val_accuracy": score[0], "best_epoch": hist.best_epoch,
                                 "model": model})
            if config.patience and since_best >= config.patience:
                hist.stopped_early = epoch < config.epochs
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    hist.samples_per_second = len(train_idx) * hist.epochs_run / max(hist.train_seconds, 1e-9)
    log.info("trained %d epochs on %s (best %d), %.0f samples/s", hist.epochs_run, device,
             hist.best_epoch, hist.samples_per_second)
    return hist


@dataclass(frozen=True)
class _StepSettings:
    """What a training step adds to the plain loss: mixup and the prior regulariser."""

    mixup: float
    prior_reg: float
    log_prior: torch.Tensor | None
    prior: torch.Tensor | None
    rng: np.random.Generator
    target_momentum: float | None = None

    @classmethod
    def build(cls, config: TrainConfig, y: np.ndarray, train_idx: np.ndarray, prior, device,
              target_momentum: float | None = None):
        p = None
        if config.prior_reg > 0:
            if prior is None:
                k = int(np.max(y)) + 1 if len(y) else 1
                prior = np.bincount(y[train_idx], minlength=k)
            p = np.asarray(prior, np.float64)
            p = torch.from_numpy((p / p.sum()).astype(np.float32)).to(device)
        # mixup's lambdas come from their own seeded stream: one host draw per batch, no device sync
        return cls(float(config.mixup), float(config.prior_reg),
                   None if p is None else torch.xlogy(p, p).sum(), p,
                   np.random.default_rng([config.seed, 0x6D6978]), target_momentum)


def _train_epoch(model, opt, batches, tensors, loss_fn, loss_kwargs, autocast,
                 step: _StepSettings, gen: torch.Generator) -> torch.Tensor:
    """One pass over ``batches`` (index tensors on the device); the summed loss, still on the device."""
    t_num, t_cat, t_y, t_w, t_rows = tensors
    model.train()
    total = torch.zeros((), device=t_y.device)  # summed on the device: no host sync per batch
    track = step.target_momentum is not None
    for idx in batches:
        extra = {k: v[idx] for k, v in t_rows.items()}
        y, w = t_y[idx], None if t_w is None else t_w[idx]
        if step.mixup > 0:
            if track:  # ELR's target follows each row's un-mixed prediction
                with torch.no_grad(), autocast:
                    plain = model(t_num[idx], t_cat[idx])
                _track_target(t_rows, idx, extra, plain, step.target_momentum)
            logits, loss = _mixup_loss(model, t_num[idx], t_cat[idx], y, w, extra, loss_fn, loss_kwargs,
                                       autocast, step, gen)
        else:
            with autocast:
                logits = model(t_num[idx], t_cat[idx])
            if track:
                _track_target(t_rows, idx, extra, logits, step.target_momentum)
            loss = loss_fn(logits, y, weight=w, **loss_kwargs, **extra)
        if step.prior is not None:
            # KL(prior || mean prediction of the batch) = sum p log p - sum p log mean_q
            mean_q = torch.softmax(logits.float(), dim=1).mean(dim=0)
            loss = loss + step.prior_reg * (step.log_prior - (step.prior * mean_q.clamp_min(1e-12).log()).sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(idx)
    return total


def _track_target(t_rows: dict, idx, extra: dict, logits, beta: float) -> None:
    """Move the batch rows' ELR target one step towards their prediction, before the loss uses it
    (Liu et al. update first, then score against the updated target)."""
    new = elr_target_update(t_rows[TARGET_AVERAGE][idx], logits, beta=beta)
    t_rows[TARGET_AVERAGE][idx] = new
    extra[TARGET_AVERAGE] = new


def _mixup_loss(model, x_num, x_cat, y, w, extra, loss_fn, loss_kwargs, autocast, step, gen):
    """Logits of the mixed batch and ``lambda L(target_p) + (1 - lambda) L(target_q)``.

    Row q is row p's partner in a permutation of the batch; each row keeps its own label, weight and
    per-row loss arguments. A dynamic-bootstrapping loss (it takes ``noisy_weight``) also gets each
    row's prediction on its *un-mixed* self, from which its bootstrapped target is built.
    """
    lam = float(step.rng.beta(step.mixup, step.mixup))
    perm = torch.randperm(len(y), generator=gen, device=y.device)
    if "noisy_weight" in extra:
        with torch.no_grad(), autocast:
            extra["predictions"] = torch.softmax(model(x_num, x_cat).float(), dim=1)
    with autocast:
        h = model.embed(x_num, x_cat)
        logits = model.head(lam * h + (1 - lam) * h[perm])
    loss_p = loss_fn(logits, y, weight=w, **loss_kwargs, **extra)
    loss_q = loss_fn(logits, y[perm], weight=None if w is None else w[perm], **loss_kwargs,
                     **{k: v[perm] for k, v in extra.items()})
    return logits, lam * loss_p + (1 - lam) * loss_q


def _validate(model, t_num, t_cat, t_y, t_w, t_rows, va, loss_fn, loss_kwargs,
              score_fn=None) -> tuple[float, float]:
    """Weighted accuracy (or ``score_fn``) and loss on the validation rows (NaN, NaN without any)."""
    if len(va) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, t_num, t_cat, va)
    w = torch.ones(len(va), device=va.device) if t_w is None else t_w[va]
    extra = {k: v[va] for k, v in t_rows.items()}
    with torch.no_grad():
        loss = loss_fn(logits, t_y[va], weight=w, **loss_kwargs, **extra)
        if score_fn is not None:
            return float(score_fn(logits, t_y[va], w)), float(loss)
        hit = (logits.argmax(dim=1) == t_y[va]).float()
        acc = (hit * w).sum() / w.sum().clamp_min(1e-12)
    return float(acc), float(loss)
