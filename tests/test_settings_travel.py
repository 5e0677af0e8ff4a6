"""What flag was told (label, ids, excluded columns, features) travels with its output: clean and
retrain use it, and retrain never trains on an id-like column by accident."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.features import id_like_columns


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def customers(tmp_path):
    # The table: an id, the planted answer columns, and the features.
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=(n, 3))
    tier = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    flip = rng.random(n) < 0.15
    table = pa.table({"customer_id": 5000 + np.arange(n), "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2],
                      "true_tier": tier, "is_flipped": flip, "tier": np.where(flip, 1 - tier, tier)})
    path = tmp_path / "customers.parquet"
    pq.write_table(table, path)
    return path


def test_retrain_on_a_cleaned_table_uses_what_flag_was_told(customers, tmp_path):
    flags = tmp_path / "c.flags.parquet"
    res = _run("flag", customers, "--label", "tier", "--id", "customer_id", "--exclude", "true_tier,is_flipped",
               "--model", "logreg", "--folds", "3", "--out", flags, "-q")
    assert res.exit_code == 0, res.output
    cleaned = tmp_path / "c.cleaned.parquet"
    assert _run("clean", flags, "--out", cleaned, "-q").exit_code == 0
    model = tmp_path / "model"
    res = _run("retrain", cleaned, "--out", model, "--epochs", "2", "--threads", "1", "-q")
    assert res.exit_code == 0, res.output
    spec = json.loads((model / "model.json").read_text())
    features = spec["preprocessing"]["columns"]
    assert sorted(features) == ["f0", "f1", "f2"], features
    assert spec["label"] == "tier"


def test_retrain_refuses_an_id_like_feature_unless_told(customers, tmp_path):
    res = _run("retrain", customers, "--label", "tier", "--exclude", "true_tier,is_flipped",
               "--out", tmp_path / "m", "--epochs", "1", "-q")
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert "'customer_id'" in line and "--id customer_id" in line and "\n" not in line
    ok = _run("retrain", customers, "--label", "tier", "--exclude", "true_tier,is_flipped", "--id",
              "customer_id", "--out", tmp_path / "m2", "--epochs", "1", "--threads", "1", "-q")
    assert ok.exit_code == 0, ok.output


def test_id_like_columns_known_answers():
    n = 500
    t = pa.table({"seq": np.arange(n) * 10 + 7, "uuid": [f"u{i:04d}" for i in range(n)],
                  "income": np.random.default_rng(0).integers(0, 10**9, n),  # distinct, not evenly spaced
                  "x": np.random.default_rng(1).normal(size=n),               # floats are features
                  "cat": ["a", "b"] * (n // 2)})
    assert id_like_columns(t, t.column_names) == ["seq", "uuid"]
    assert id_like_columns(t.slice(0, 100), t.column_names) == []  # too few rows to tell
