"""The noise model refitted while training: a loss mixture over the network's own per-row losses.

After each epoch from the end of warm-up, :func:`refit` scores every training row's cross-entropy
against its given label (evaluation mode, large batches, on the training device), fits the
two-component Beta mixture of :mod:`cleanpipe.detect.mixture` to those losses (the same code that
``flag`` uses: percentile clipping, EM with weighted moments on a histogram, noisy component = higher
mean, posterior made monotone in the loss) and returns each row's posterior ``w_i`` of the noisy
component. Only the loss vector crosses from the device to the host, once per epoch; the posterior
is interpolated from the mixture's small monotone grid on the device. The loss pass is nearly all
of the refit's cost, so it runs under bf16 autocast where the hardware does bf16 natively.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..detect.mixture import EPS, LossMixture, fit_loss_mixture
from .model import predict_logits


def bf16_helps(device: torch.device) -> bool:
    """Whether bf16 autocast speeds up the loss pass on ``device``: CUDA, or a CPU with native bf16
    (AVX512-BF16 / AMX). Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    except Exception:  # private probes: a torch without them just keeps float32
        return False


def per_row_losses(model: torch.nn.Module, t_num: torch.Tensor, t_cat: torch.Tensor, t_y: torch.Tensor,
                   rows: torch.Tensor, *, bf16: bool | None = None) -> torch.Tensor:
    """Cross-entropy of each of ``rows`` against its label, in evaluation mode, on the device.

    The forward pass runs under bf16 autocast when ``bf16`` (default: :func:`bf16_helps`): it is
    most of the refit's cost (3x faster on a CPU with AVX512-BF16 at 1M rows), and the mixture,
    fitted to a 2048-bin histogram of clipped losses, does not need float32 logits. The loss
    itself is computed in float32.
    """
    device = t_num.device
    use = bf16_helps(device) if bf16 is None else bf16
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use):
        logits = predict_logits(model, t_num, t_cat, rows)
    return torch.nn.functional.cross_entropy(logits.float(), t_y[rows], reduction="none")


def posterior_on_device(mixture: LossMixture, losses: torch.Tensor) -> torch.Tensor:
    """``mixture.p_noisy(losses)`` computed on ``losses``' device (float32): only the grid moves."""
    if mixture.fit is None:
        return torch.zeros_like(losses, dtype=torch.float32)
    lo, hi = mixture.bounds
    x = ((losses.float() - lo) / (hi - lo)).clamp(EPS, 1 - EPS)
    grid = torch.as_tensor(mixture.grid, dtype=torch.float32, device=losses.device)
    post = torch.as_tensor(mixture.grid_posterior, dtype=torch.float32, device=losses.device)
    right = torch.searchsorted(grid, x).clamp(1, len(grid) - 1)
    g0, g1 = grid[right - 1], grid[right]
    t = ((x - g0) / (g1 - g0)).clamp(0.0, 1.0)
    return post[right - 1] + t * (post[right] - post[right - 1])


def refit(model: torch.nn.Module, t_num: torch.Tensor, t_cat: torch.Tensor, t_y: torch.Tensor,
          rows: torch.Tensor, *, epoch: int, reference: np.ndarray | None = None
          ) -> tuple[torch.Tensor, dict]:
    """Fit the loss mixture to the model's current per-row losses on ``rows``.

    Parameters
    ----------
    model : torch.nn.Module
    t_num, t_cat, t_y : Tensor
        The resident training tensors (all rows).
    rows : Tensor of shape (n_rows,), int64
        Row indices to score (the training rows).
    epoch : int
        Recorded in the returned dict.
    reference : ndarray of shape (n_rows,), optional
        The flagger's ``p_noisy`` for the same rows; when given (and both ``p_noisy >= 0.5`` and
        ``< 0.5`` occur) the record holds the AUROC of ``w`` against ``p_noisy >= 0.5``.

    Returns
    -------
    w : Tensor of shape (n_rows,), float32, on the rows' device
        Posterior of the noisy (high-loss) component, non-decreasing in the loss.
    record : dict
        JSON-ready: ``epoch``, ``noisy_share`` (mean ``w``), ``auroc_vs_flag`` (or None),
        ``mixture`` (parameters, or None when the losses were degenerate) and ``seconds``.
    """
    t0 = time.perf_counter()
    losses = per_row_losses(model, t_num, t_cat, t_y, rows)
    host = losses.cpu().numpy().astype(np.float64)  # the one device -> host copy per epoch
    mixture = fit_loss_mixture(host)
    w = posterior_on_device(mixture, losses)
    # the AUROC needs w on the host: recompute it from the host copy rather than copying w back
    auroc = None if reference is None else _auroc(reference, mixture.p_noisy(host))
    record = {"epoch": int(epoch), "noisy_share": round(float(w.mean()) if len(w) else 0.0, 6),
              "auroc_vs_flag": auroc, "mixture": _mixture_record(mixture)}
    if rows.device.type == "cuda":
        torch.cuda.synchronize(rows.device)
    record["seconds"] = round(time.perf_counter() - t0, 4)
    return w, record


def _mixture_record(mixture: LossMixture) -> dict | None:
    if mixture.fit is None:
        return None
    d = mixture.fit.to_dict()
    d["loss_bounds"] = [float(b) for b in mixture.bounds]
    return {k: (np.round(v, 6).tolist() if isinstance(v, list) else v) for k, v in d.items()}


def _auroc(reference: np.ndarray, w: np.ndarray) -> float | None:
    positive = np.asarray(reference) >= 0.5
    if positive.all() or not positive.any():
        return None
    return round(float(roc_auc_score(positive, w)), 6)
