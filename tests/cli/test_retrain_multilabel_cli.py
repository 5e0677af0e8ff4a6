"""``cleanpipe retrain`` / ``predict`` on multi-label tables through click's CliRunner (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.datasets import make_multilabel_classification

from cleanpipe.errors import InputError
from cleanpipe.train import TrainConfig, load_model_dir, retrain_table
from cleanpipe.train.multilabel import best_cut, micro_f1

from cli_helpers import FAST_TRAIN as FAST, one_error_line, run

TAGS = np.array(["sky", "dog", "tree", "car"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(dir, table path): 240 rows, 6 features, a list<string> tag column, the same tags as 0/1
    columns, a single-label column, and 3 unlabelled rows (null list)."""
    d = tmp_path_factory.mktemp("retrain_ml")
    X, Y = make_multilabel_classification(n_samples=240, n_features=6, n_classes=4, n_labels=2,
                                          random_state=0)
    lists = [TAGS[r.astype(bool)].tolist() for r in Y]
    lists[:3] = [None] * 3
    table = pa.table({"row_id": np.arange(len(Y)), **{f"x{i}": X[:, i] for i in range(6)},
                      "tags": pa.array(lists, type=pa.list_(pa.string())),
                      **{f"is_{t}": Y[:, k].astype(np.int8) for k, t in enumerate(TAGS)},
                      "single": pa.array(TAGS[Y.argmax(axis=1)].tolist())})
    pq.write_table(table, d / "t.parquet")
    return d, d / "t.parquet"


def _features(path):
    return ["--exclude", "single," + ",".join(f"is_{t}" for t in TAGS), "--id", "row_id"]


def test_retrain_predict_round_trip(data):
    d, path = data
    res = run("retrain", path, "--label", "tags", "--out", d / "m", *_features(path), *FAST)
    assert res.exit_code == 0, res.output
    spec = json.loads((d / "m" / "model.json").read_text())
    assert spec["multi_label"] is True and spec["classes"] == sorted(TAGS.tolist())
    assert spec["output"] == "sigmoid" and 0 < spec["threshold"] < 1 and spec["loss"]["name"] == "bce"
    assert spec["label_format"] == "list" and spec["architecture"]["n_classes"] == 4
    metrics = json.loads((d / "m" / "metrics.json").read_text())
    for key in ("val_micro_f1", "val_macro_f1", "val_map"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["labelled_rows"] == 237 and metrics["val_rows"] == 24
    assert "val_accuracy" not in metrics and len(metrics["curve"]["val_micro_f1"]) == metrics["epochs"]

    res = run("predict", d / "m", path, "--out", d / "p.parquet", "-q")
    assert res.exit_code == 0, res.output
    out = pq.read_table(d / "p.parquet")
    assert out.column_names[:-2] == pq.read_table(path).column_names
    probs = np.array(out.column("pred_probs").to_pylist())
    assert probs.shape == (240, 4) and ((probs >= 0) & (probs <= 1)).all()
    want = [[c for c, p in zip(spec["classes"], row) if p > spec["threshold"]] for row in probs]
    assert out.column("predicted_label").to_pylist() == want
    assert out.schema.field("predicted_label").type == pa.list_(pa.string())
    meta = json.loads(out.schema.metadata[b"cleanpipe.predict"])
    assert meta["multi_label"] is True and meta["classes"] == spec["classes"]

    # same seed, same settings: identical weights; the reloaded model reproduces the predictions
    res = run("retrain", path, "--label", "tags", "--out", d / "m2", *_features(path), *FAST)
    assert res.exit_code == 0, res.output
    a = torch.load(d / "m" / "model.pt", weights_only=True)
    b = torch.load(d / "m2" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = load_model_dir(d / "m2")
    assert loaded.multi_label and loaded.classes.to_pylist() == spec["classes"]
    config = TrainConfig(epochs=4, batch_size=32, lr=0.01, hidden=(16,), device="cpu", threads=1)
    api = retrain_table(pq.read_table(path), label="tags", exclude=["single"] + [f"is_{t}" for t in TAGS],
                        ids=["row_id"], config=config)
    x_num, x_cat = loaded.preprocessor.transform(pq.read_table(path))
    with torch.no_grad():
        p_api = torch.sigmoid(api.model(torch.from_numpy(x_num), torch.from_numpy(x_cat))).numpy()
    np.testing.assert_array_equal(p_api.astype(np.float32), probs.astype(np.float32))


def test_01_columns_and_softmax_loss(data):
    d, path = data
    label = ",".join(f"is_{t}" for t in TAGS)
    res = run("retrain", "--id", "row_id", path, "--label", label, "--loss", "abs-kl", "--exclude", "single,tags",
              "--out", d / "cols", *FAST)
    assert res.exit_code == 0, res.output
    spec = json.loads((d / "cols" / "model.json").read_text())
    assert spec["label_format"] == "columns" and spec["classes"] == [f"is_{t}" for t in TAGS]
    assert spec["output"] == "softmax" and 0 < spec["threshold"] < 1
    res = run("predict", d / "cols", path, "--out", d / "pc.parquet", "-q")
    assert res.exit_code == 0, res.output
    probs = np.array(pq.read_table(d / "pc.parquet").column("pred_probs").to_pylist())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_loss_and_label_errors(data):
    d, path = data
    line = one_error_line(run("retrain", "--id", "row_id", path, "--label", "tags", "--loss", "sce", "--out", d / "e1", *FAST))
    assert "single-label loss" in line and "bce" in line
    line = one_error_line(run("retrain", "--id", "row_id", path, "--label", "single", "--loss", "bce", "--out", d / "e2", *FAST))
    assert "multi-label loss" in line
    line = one_error_line(run("retrain", "--id", "row_id", path, "--label", "single", "--multi-label", "--out", d / "e3", *FAST))
    assert "not a list of tags" in line
    line = one_error_line(run("retrain", "--id", "row_id", path, "--label", "tags", "--loss", "bce", "--loss-param", "q=1",
                               "--out", d / "e4", *FAST))
    assert "--loss-param does not fit" in line
    with pytest.raises(InputError, match="single-label loss"):
        from cleanpipe.train import retrain_multilabel_table
        retrain_multilabel_table(pq.read_table(path), label="tags", loss="gce")


def test_micro_f1_and_best_cut_known_answers():
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pred = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert micro_f1(pred, t) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert micro_f1(pred, t, torch.tensor([0.0, 1.0])) == 1.0
    f1, thr = best_cut(torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]]), t)
    assert f1 == 1.0 and 0.3 < thr < 0.7


def test_python_api_refuses_a_single_label_loss_on_multilabel_data():
    rng = np.random.default_rng(0)
    tags = [["a"], ["b"], ["a", "b"], []] * 10
    table = pa.table({"x": rng.normal(size=40), "tags": pa.array(tags, type=pa.list_(pa.string()))})
    with pytest.raises(InputError, match="single-label loss"):
        retrain_table(table, label="tags", loss="sce")
