"""The examples in examples/ run as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_walkthrough_flags_cleans_and_retrains(tmp_path):
    results = _load("walkthrough").main(["--workdir", str(tmp_path), "--epochs", "8"])
    assert results["precision"] >= 0.7 and results["recall"] >= 0.7
    assert results["accuracy_noisy"] > 0.85 and results["accuracy_cleaned"] > 0.85
    # Measured on held-out rows only: the predictions cover the test split, not the training rows.
    import pyarrow.parquet as pq
    preds = pq.read_table(tmp_path / "preds-cleaned.parquet")
    train_ids = set(pq.read_table(tmp_path / "digits.parquet").column("row_id").to_pylist())
    assert preds.num_rows == results["test_rows"] > 400
    assert not train_ids & set(preds.column("row_id").to_pylist())
    # Cleaning does not cost accuracy (on digits it buys little: early stopping already resists
    # 20% noise; the printed line says how much).
    assert results["accuracy_cleaned"] >= results["accuracy_noisy"] - 0.01
    for name in ("digits.flags.parquet", "digits.flags.summary.json", "digits.flags.report.html",
                 "digits.cleaned.parquet", "model-cleaned/model.pt", "preds-cleaned.parquet"):
        assert (tmp_path / name).exists(), name


def test_make_noisy_digits_flips_the_requested_share():
    table = _load("make_noisy_digits").noisy_digits(0.3, seed=0)
    flipped = table.column("is_flipped").to_numpy()
    assert abs(flipped.mean() - 0.3) < 0.05
    labels, truth = table.column("label").to_numpy(), table.column("true_label").to_numpy()
    assert ((labels != truth) == flipped).all()
