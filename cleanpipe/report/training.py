"""The training run behind a report: reading and checking the ``metrics.json`` of ``cleanpipe retrain``.

:func:`read_training` takes a model directory (or its ``metrics.json``) and :func:`check_training`
a metrics dict; both give a :class:`Training`, the plain numbers the report's Training section
draws. Every key of ``metrics.json`` may be absent (older files have no ``noise_model``, a run
without a validation split has null validation values); a key that is present with the wrong type
is an :class:`~cleanpipe.errors.InputError` naming the key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import read_json

__all__ = ["Training", "NoiseEpoch", "read_training", "check_training", "METRICS_FILE"]

#: The file ``cleanpipe retrain`` writes into its model directory.
METRICS_FILE = "metrics.json"
#: Keys of which a metrics dict needs at least one to be taken for one.
_TRAINING_KEYS = ("epochs", "curve", "noise_model")
#: Run settings shown in the section's table, in this order, when the run recorded them.
SETTING_KEYS = ("loss", "noisy_weight", "mixup", "warmup", "prior_reg")
_FIX = "pass the model directory cleanpipe retrain wrote (its --out) or the metrics.json inside it"


@dataclass(frozen=True)
class NoiseEpoch:
    """One epoch of the online loss-mixture fit.

    Attributes
    ----------
    epoch : int
        1-based epoch after which the mixture was fitted.
    noisy_share : float or None
        Mean posterior ``w`` of the noisy component over the training rows.
    auroc_vs_flag : float or None
        AUROC of ``w`` against the flagger's ``p_noisy`` (None without a ``p_noisy`` column).
    converged : bool or None
        Whether the epoch's EM converged (None when no mixture was fitted or not recorded).
    """

    epoch: int
    noisy_share: float | None
    auroc_vs_flag: float | None
    converged: bool | None


@dataclass(frozen=True)
class Training:
    """What the report shows about a ``cleanpipe retrain`` run.

    Attributes
    ----------
    source : str or None
        Where the metrics came from (the ``metrics.json`` path), or None for a dict.
    train_loss, val_loss, val_accuracy : list of float or None
        Per-epoch curves, epoch ``i + 1`` at index ``i``; None where not recorded (no validation
        split, or a non-finite value).
    best_epoch : int or None
        1-based epoch whose weights were kept.
    noise_model : list of NoiseEpoch
        Empty when the run fitted no online mixture.
    facts : dict
        The run's settings and figures for the section's table, display name to value.
    """

    source: str | None
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    best_epoch: int | None = None
    noise_model: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def read_training(path: str | os.PathLike) -> Training:
    """Read the ``metrics.json`` of a ``cleanpipe retrain`` run.

    Parameters
    ----------
    path : path-like
        The model directory (``--out`` of ``cleanpipe retrain``) or its ``metrics.json``.

    Returns
    -------
    Training

    Raises
    ------
    InputError
        The path does not exist, the directory has no ``metrics.json``, the file cannot be read,
        is not JSON, or does not hold the metrics of a retrain run.
    """
    path = Path(path)
    if path.is_dir():
        file = path / METRICS_FILE
        if not file.is_file():
            raise InputError(f"--training '{path}' has no {METRICS_FILE}; {_FIX}")
    elif path.exists():
        file = path
    else:
        raise InputError(f"--training '{path}' does not exist; {_FIX}")
    return check_training(read_json(file, what="--training", fix=_FIX), source=str(file))


def check_training(metrics, *, source: str | None = None) -> Training:
    """Check a metrics dict (as ``cleanpipe retrain`` writes to ``metrics.json``) and extract the numbers.

    Parameters
    ----------
    metrics : dict
        :attr:`cleanpipe.train.RetrainResult.metrics`, or ``metrics.json`` loaded.
    source : str, optional
        The file it came from, named in error messages and on the page.

    Returns
    -------
    Training

    Raises
    ------
    InputError
        ``metrics`` is not a dict, has none of ``epochs``, ``curve`` and ``noise_model``, or has
        one of the keys the report reads with the wrong type.
    """
    where = f"--training '{source}'" if source else "training metrics"
    if not isinstance(metrics, dict):
        raise InputError(f"{where} is a JSON {type(metrics).__name__}, not an object; {_FIX}")
    if not any(k in metrics for k in _TRAINING_KEYS):
        shown = ", ".join(list(metrics)[:12]) or "none"
        raise InputError(f"{where} has none of the keys {', '.join(_TRAINING_KEYS)} (keys: {shown}), so "
                         f"it is not the metrics of a retrain run; {_FIX}")

    def bad(key: str, expected: str):
        return InputError(f"{where}: '{key}' should be {expected}; {_FIX}")

    curve = _get(metrics, "curve", dict, bad, "an object of per-epoch lists") or {}
    curves = {}
    for key in ("train_loss", "val_loss", "val_accuracy"):
        values = _get(curve, key, list, bad, "a list of numbers or nulls", prefix="curve.") or []
        if not all(v is None or _is_number(v) for v in values):
            raise bad(f"curve.{key}", "a list of numbers or nulls")
        curves[key] = [_finite(v) for v in values]

    settings = _get(metrics, "settings", dict, bad, "an object") or {}
    noise = []
    for i, entry in enumerate(_get(metrics, "noise_model", list, bad, "a list of per-epoch objects") or []):
        key = f"noise_model[{i}]"
        if not isinstance(entry, dict) or not _is_int(entry.get("epoch")):
            raise bad(key, 'an object with an integer "epoch"')
        for name in ("noisy_share", "auroc_vs_flag"):
            if entry.get(name) is not None and not _is_number(entry[name]):
                raise bad(f"{key}.{name}", "a number or null")
        mixture = entry.get("mixture")
        if mixture is not None and not isinstance(mixture, dict):
            raise bad(f"{key}.mixture", "an object or null")
        converged = (mixture or {}).get("converged")
        noise.append(NoiseEpoch(int(entry["epoch"]), _finite(entry.get("noisy_share")),
                                _finite(entry.get("auroc_vs_flag")),
                                converged if isinstance(converged, bool) else None))
    noise.sort(key=lambda e: e.epoch)

    best = metrics.get("best_epoch")
    if best is not None and not _is_int(best):
        raise bad("best_epoch", "an integer")
    facts = {k: settings[k] for k in SETTING_KEYS if settings.get(k) is not None}
    choice = settings.get("loss_choice")
    if isinstance(choice, dict) and isinstance(choice.get("reason"), str):
        # --loss auto: what it chose and why, beside the loss (older files have no reason)
        facts = {k: v for k, v in [*list(facts.items())[:1], ("why this loss (auto)", choice["reason"]),
                                   *list(facts.items())[1:]]}
    figures = {"device": metrics.get("device"), "samples/s": metrics.get("samples_per_second"),
               "epochs run": metrics.get("epochs"), "best epoch": best,
               "val accuracy (best epoch)": metrics.get("val_accuracy")}
    facts.update({k: v for k, v in figures.items() if v is not None})
    return Training(source, curves["train_loss"], curves["val_loss"], curves["val_accuracy"],
                    best, noise, facts)


def _get(d: dict, key: str, kind: type, bad, expected: str, *, prefix: str = ""):
    value = d.get(key)
    if value is not None and not isinstance(value, kind):
        raise bad(prefix + key, expected)
    return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> float | None:
    """A float, or None for null, NaN and inf (Python's json reads ``NaN``/``Infinity``)."""
    return float(v) if _is_number(v) and math.isfinite(v) else None
