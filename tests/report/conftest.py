"""Small flagged tables for the report tests, made by ``flag_table`` with given probabilities.

Passing ``pred_probs`` skips cross-validation, so a flagged table costs milliseconds; the
probabilities favour each row's true class, and a few planted label flips give real flags.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe import flag_table

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
#: A long value (so it also lands in a tooltip attribute) that tries to close that attribute.
QUOTES = "\" onmouseover=\"alert(1)\" data-x=\"" + "x" * 60


def make_flagged(*, class_names=("cat", "dog", "eel"), feature_names=("x", "y"), n: int = 150,
                 n_flipped: int = 12, n_extra_features: int = 0, mixture: str = "beta",
                 source: str = "synthetic.parquet", note: str | None = None, seed: int = 0):
    """A :class:`cleanpipe.FlagResult` of a synthetic table with ``n_flipped`` flipped labels.

    Columns: ``row_id`` (an id), the numeric ``feature_names``, ``note`` (a long string, or
    ``note`` on every row when given), ``n_extra_features`` more numeric columns, and ``label``.
    """
    rng = np.random.default_rng(seed)
    k = len(class_names)
    classes = sorted(class_names)  # flag_table orders the probability columns by sorted class
    true = rng.integers(0, k, n)
    given = true.copy()
    flip = rng.choice(n, n_flipped, replace=False)
    given[flip] = (true[flip] + rng.integers(1, k, n_flipped)) % k
    alpha = np.ones((n, k))
    alpha[np.arange(n), true] = 12.0
    probs = np.vstack([rng.dirichlet(a) for a in alpha])
    cols = {"row_id": np.arange(n) * 10}
    for j, name in enumerate(feature_names):
        cols[name] = rng.normal(true * 2.0 + j, 1.0)
    cols["note"] = [note if note is not None else f"row {i}: " + "a long free-text value " * 4
                    for i in range(n)]
    for j in range(n_extra_features):
        cols[f"extra_{j}"] = rng.normal(size=n)
    cols["label"] = np.array(classes, dtype=object)[given]
    table = pa.table(cols)
    return flag_table(table, label="label", ids=["row_id"], pred_probs=probs, mixture=mixture,
                      source=source)


@pytest.fixture(scope="session")
def make_flagged_result():
    """:func:`make_flagged` itself, for tests that need their own variant."""
    return make_flagged


@pytest.fixture(scope="session")
def flagged():
    """A plain flagged table (3 classes, 150 rows, 12 flipped labels)."""
    return make_flagged()


@pytest.fixture(scope="session")
def flagged_xss():
    """Class names, column names and the source path carry HTML/script payloads."""
    return make_flagged(class_names=(SCRIPT, IMG, "plain"), feature_names=(SCRIPT, IMG, "x"),
                        source=f"/data/{SCRIPT}.parquet", note=QUOTES)


@pytest.fixture(scope="session")
def report_html(flagged):
    """The report of :func:`flagged`, built once for every test that only reads it."""
    from cleanpipe.report import build_report
    return build_report(flagged.table, flagged.summary)


def make_metrics(*, epochs: int = 12, best_epoch: int = 9, warmup: int = 3, noise_model: bool = True,
                 auroc: bool = True) -> dict:
    """A ``metrics.json`` of ``cleanpipe retrain --loss dynamic-hard --noisy-weight online``, by hand.

    The validation curves have a null at epoch 2 (a gap), the mixture fit after epoch ``warmup + 2``
    did not converge, and the settings carry every key the Training section shows.
    """
    e = np.arange(1, epochs + 1)
    val_loss = (0.9 / e + 0.3 + 0.01 * np.maximum(e - best_epoch, 0)).tolist()
    val_acc = (0.95 - 0.4 / e).tolist()
    val_loss[1] = val_acc[1] = None
    metrics = {
        "epochs": epochs, "best_epoch": best_epoch, "device": "cpu", "samples_per_second": 81234.5,
        "val_accuracy": val_acc[best_epoch - 1],
        "settings": {"loss": "dynamic-hard", "noisy_weight": "online", "mixup": 1.0, "warmup": warmup,
                     "prior_reg": 0.5, "lr": 0.002},
        "curve": {"train_loss": (1.0 / e + 0.1).tolist(), "val_loss": val_loss, "val_accuracy": val_acc},
    }
    if noise_model:
        metrics["noise_model"] = [
            {"epoch": int(k), "noisy_share": 0.3 - 0.1 / k,
             "auroc_vs_flag": 0.95 - 0.2 / k if auroc else None,
             "mixture": {"family": "beta", "weights": [0.7, 0.3], "params": [[2.1, 8.0], [5.0, 1.9]],
                         "means": [0.21, 0.72], "noisy_component": 1, "iterations": 40,
                         "converged": bool(k != warmup + 2), "loss_bounds": [0.01, 3.2]}}
            for k in range(warmup, epochs + 1)]
    return metrics


@pytest.fixture(scope="session")
def make_training_metrics():
    """:func:`make_metrics` itself (each call gives a fresh dict to change)."""
    return make_metrics


def make_multilabel(*, tags=("cat", "dog", "sky"), n: int = 160, flip_rate: float = 0.06,
                    n_unlabelled: int = 3, label_columns: bool = False,
                    source: str = "tags.parquet", seed: int = 0):
    """A multi-label :class:`cleanpipe.FlagResult` and the probabilities it used.

    Each row's true tags are drawn at random, ``flip_rate`` of the (row, tag) cells are flipped in
    the given tags (so some rows have a missing and some a spurious tag), and the out-of-fold
    probabilities, in sorted tag order, favour the true tags. The first ``n_unlabelled`` rows have
    a null tag list. Columns: ``row_id`` (an id), ``x``, ``note`` and the label, a list column
    ``tags`` or, with ``label_columns``, one 0/1 column per tag.

    Returns
    -------
    (FlagResult, pyarrow.Table, numpy.ndarray)
        The result of ``flag_multilabel_table``, the input table, and the probabilities.
    """
    from cleanpipe.flag import flag_multilabel_table

    rng = np.random.default_rng(seed)
    classes = sorted(tags)
    true = rng.random((n, len(classes))) < 0.4
    given = true ^ (rng.random(true.shape) < flip_rate)
    probs = np.clip(np.where(true, 0.85, 0.12) + rng.normal(0, 0.05, true.shape), 0.01, 0.99)
    cols = {"row_id": np.arange(n) * 10, "x": rng.normal(size=n), "note": [f"row {i}" for i in range(n)]}
    if label_columns:
        cols.update({c: given[:, j].astype(np.int8) for j, c in enumerate(classes)})
        label = list(classes)
    else:
        lists = [np.array(classes, dtype=object)[row].tolist() for row in given]
        lists[:n_unlabelled] = [None] * n_unlabelled
        cols["tags"] = pa.array(lists, type=pa.list_(pa.string()))
        label = "tags"
    table = pa.table(cols)
    result = flag_multilabel_table(table, label=label, ids=["row_id"], pred_probs=probs, source=source)
    return result, table, probs


@pytest.fixture(scope="session")
def make_multilabel_result():
    """:func:`make_multilabel` itself, for tests that need their own variant."""
    return make_multilabel


@pytest.fixture(scope="session")
def flagged_multilabel_xss():
    """A multi-label flagged table whose tag names, and so suspect tags, carry HTML payloads."""
    return make_multilabel(tags=(SCRIPT, IMG, "plain"))[0]


@pytest.fixture
def flagged_checks(planted_checks):
    """A :class:`cleanpipe.FlagResult` of the planted table with every data check and leakage."""
    from cleanpipe.settings import CheckSettings

    return flag_table(planted_checks["table"], label="label", ids=["row_id"],
                      pred_probs=np.load(planted_checks["probs"]), checks=CheckSettings(),
                      against=planted_checks["other"], source="planted.parquet")
