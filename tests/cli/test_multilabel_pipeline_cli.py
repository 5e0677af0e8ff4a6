"""Multi-label end to end through the CLI: flag -> clean relabel -> retrain, against noisy training."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import f1_score

TRAIN = ["--epochs", "30", "--batch-size", "64", "--hidden", "64", "--device", "cpu", "--threads", "1",
         "--seed", "0", "-q"]


def run(*args):
    from cleanpipe.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def _table(X, Y):
    return pa.table({**{f"f{i}": X[:, i] for i in range(X.shape[1])},
                     "tags": pa.array([np.flatnonzero(r).tolist() for r in Y], type=pa.list_(pa.int64()))})


def _test_micro_f1(model_dir, test_path, Y_test, out):
    res = run("predict", model_dir, test_path, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    probs = np.array(pq.read_table(out).column("pred_probs").to_pylist())
    classes = json.loads((model_dir / "model.json").read_text())["classes"]
    assert classes == list(range(Y_test.shape[1]))
    return f1_score(Y_test, probs > 0.5, average="micro")


def test_flag_clean_relabel_retrain_not_worse_than_noisy(tmp_path):
    X, Y = make_multilabel_classification(n_samples=2000, n_features=12, n_classes=5, n_labels=2,
                                          length=150, random_state=3)
    rng = np.random.default_rng(0)
    test = rng.random(len(Y)) < 0.25
    Y_tr = Y[~test]
    # mixed 30% tag noise (benchmarks/multilabel.py): 15% of present tags dropped, as many added
    d, u = Y_tr.mean(), rng.random(Y_tr.shape)
    noisy = np.where(Y_tr == 1, u >= 0.15, u < 0.15 * d / (1 - d)).astype(np.int64)
    pq.write_table(_table(X[~test], noisy), tmp_path / "train.parquet")
    pq.write_table(_table(X[test], Y[test]), tmp_path / "test.parquet")

    res = run("flag", tmp_path / "train.parquet", "--label", "tags", "--model", "logreg", "--folds", "3",
              "--out", tmp_path / "train.flags.parquet", "--save-pred-probs", tmp_path / "oof.npy", "-q")
    assert res.exit_code == 0, res.output
    res = run("clean", tmp_path / "train.flags.parquet", "--out", tmp_path / "clean.parquet", "--json")
    assert res.exit_code == 0, res.output
    counts = json.loads(res.output)
    cleaned = pq.read_table(tmp_path / "clean.parquet")
    assert cleaned.num_rows == len(Y_tr) and counts["tags_added"] > 0
    fixed = np.zeros_like(noisy)
    for i, tags in enumerate(cleaned.column("tags").to_pylist()):  # 1500 rows: a test-side loop
        fixed[i, tags] = 1
    assert (fixed != Y_tr).sum() < (noisy != Y_tr).sum()  # relabel fixed more tags than it broke
    assert cleaned.column("original_label").to_pylist() == [np.flatnonzero(r).tolist() for r in noisy]

    # the cleaned file knows its label from flag's provenance; the plain one is told
    for name, args in (("noisy", [tmp_path / "train.parquet", "--label", "tags"]),
                       ("cleaned", [tmp_path / "clean.parquet"])):
        res = run("retrain", *args, "--out", tmp_path / name, *TRAIN)
        assert res.exit_code == 0, res.output
    f1_noisy = _test_micro_f1(tmp_path / "noisy", tmp_path / "test.parquet", Y[test], tmp_path / "pn.parquet")
    f1_clean = _test_micro_f1(tmp_path / "cleaned", tmp_path / "test.parquet", Y[test], tmp_path / "pc.parquet")
    # Not worse, within the spread of training seeds: relabel only adds tags the flagger is sure of
    # (p >= 0.9), which the network learns anyway, so the gain is small (+0.007 / +0.009 micro-F1 in
    # benchmarks/multilabel_retrain.py) and on 1,500 rows one seed moves micro-F1 by about 0.01.
    assert f1_clean >= f1_noisy - 0.02, (f1_clean, f1_noisy)
    assert f1_noisy > 0.7  # both models learned the task
