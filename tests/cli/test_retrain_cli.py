"""``cleanpipe retrain`` and ``cleanpipe predict`` end to end through click's CliRunner (CPU)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cleanpipe import flag_table

from cli_helpers import FAST_TRAIN as FAST, one_error_line, run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(dir, plain table path, flags path with its sidecar summary) for a tiny 3-class table."""
    d = tmp_path_factory.mktemp("retrain")
    rng = np.random.default_rng(0)
    n = 90
    y = np.arange(n) % 3
    table = pa.table({"row_id": np.arange(n), "x": rng.normal(2.0 * y, 1.0), "x2": rng.normal(-y, 1.0),
                      "shade": pa.array(np.array(["lo", "mid", "hi"])[y].tolist()),
                      "kind": pa.array([10, 20, 30])
                      .take(pa.array(np.where(rng.random(n) < 0.1, (y + 1) % 3, y)))})
    pq.write_table(table, d / "plain.parquet")
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), y] = 0.8
    res = flag_table(table, label="kind", pred_probs=probs)
    pq.write_table(res.table.replace_schema_metadata(
        {b"cleanpipe.flag": json.dumps({"settings": res.summary["settings"]}).encode()}), d / "t.flags.parquet")
    (d / "t.flags.summary.json").write_text(json.dumps(res.summary))
    return d, d / "plain.parquet", d / "t.flags.parquet"


@pytest.fixture(scope="module")
def model(data):
    d, _, flags = data
    out = d / "model"
    res = run("retrain", flags, "--out", out, "--id", "row_id", "--json", *FAST[:-1])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_retrain_writes_model_dir_and_predict_round_trips(data, model, tmp_path):
    d, plain, _ = data
    out, metrics = model
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.json", "model.pt"]
    spec = json.loads((out / "model.json").read_text())
    assert spec["label"] == "kind" and spec["classes"] == [10, 20, 30] and spec["label_type"] == "int64"
    assert spec["preprocessing"]["columns"] == ["x", "x2", "shade"]  # flag columns and the id left out
    assert metrics["device"] == "cpu" and metrics["epochs"] == 4 and metrics["val_accuracy"] is not None
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    preds = tmp_path / "p.parquet"
    res = run("predict", out, plain, "--out", preds, "--probs", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    t = pq.read_table(preds)
    src = pq.read_table(plain)
    assert t.select(src.column_names).equals(src)
    assert t.schema.field("predicted_label").type == pa.int64()
    assert set(t.column("predicted_label").to_pylist()) <= {10, 20, 30}
    probs = np.stack(t.column("pred_probs").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(t.column("confidence").to_numpy(), probs.max(axis=1))
    assert json.loads(t.schema.metadata[b"cleanpipe.predict"])["model_dir"] == str(out)
    # predicting again with the reloaded model gives the same bytes of predictions
    again = tmp_path / "p2.parquet"
    assert run("predict", out, plain, "--out", again, "--probs", "--device", "cpu", "-q").exit_code == 0
    cols = ["predicted_label", "confidence", "pred_probs"]
    assert pq.read_table(again).select(cols).equals(t.select(cols))


def test_same_seed_gives_an_identical_model(data, tmp_path):
    _, _, flags = data
    states = []
    for name in ("a", "b"):
        assert run("retrain", "--id", "row_id", flags, "--out", tmp_path / name, "--seed", "3", *FAST).exit_code == 0
        states.append(torch.load(tmp_path / name / "model.pt", weights_only=True))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_dynamic_mixup_prior_round_trip_is_deterministic_and_records_the_noise_model(data, tmp_path):
    _, _, flags = data
    args = ["--loss", "dynamic-hard", "--mixup", "1", "--prior-reg", "0.5", "--warmup", "2", "--seed", "5",
            "--json", *FAST[:-1]]
    outs = []
    for name in ("a", "b"):
        res = run("retrain", "--id", "row_id", flags, "--out", tmp_path / name, *args)
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout))
    states = [torch.load(tmp_path / n / "model.pt", weights_only=True) for n in ("a", "b")]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    m = outs[0]
    assert [r["epoch"] for r in m["noise_model"]] == [2, 3, 4]
    assert [r["noisy_share"] for r in m["noise_model"]] == [r["noisy_share"] for r in outs[1]["noise_model"]]
    s = m["settings"]
    assert s["mixup"] == 1.0 and s["prior_reg"] == 0.5 and s["noisy_weight"] == "online"
    # the class prior came from the flag summary beside the flags file
    summary = json.loads((flags.parent / "t.flags.summary.json").read_text())
    np.testing.assert_allclose(s["prior"], np.asarray(summary["class_prior"]) / sum(summary["class_prior"]),
                               atol=1e-5)
    # flags input: each epoch's posterior is compared with the flagger's p_noisy
    assert all(r["auroc_vs_flag"] is None or 0 <= r["auroc_vs_flag"] <= 1 for r in m["noise_model"])
    pred = run("predict", tmp_path / "a", flags, "--out", tmp_path / "p.parquet", "--prefix", "m_", "-q")
    assert pred.exit_code == 0, pred.output


def test_forward_finds_the_sidecar_summary_and_weights_are_used(data, tmp_path):
    _, plain, flags = data
    res = run("retrain", "--id", "row_id", flags, "--out", tmp_path / "f", "--loss", "forward", "--json", *FAST[:-1])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["settings"]["noise_matrix"] is not None
    # the default loss (auto) reads the same sidecar summary to choose, and does without one
    chosen = json.loads(run("retrain", "--id", "row_id", flags, "--out", tmp_path / "a", "--json", *FAST[:-1]).stdout)
    assert "flip_concentration" in chosen["settings"]["loss_choice"]
    plain_run = run("retrain", "--id", "row_id", plain, "--label", "kind", "--out", tmp_path / "p", "--json", *FAST[:-1])
    assert json.loads(plain_run.stdout)["settings"]["loss_choice"]["source"] == "quick estimate"
    line = one_error_line(run("retrain", "--id", "row_id", plain, "--label", "kind", "--out", tmp_path / "g", "--loss", "forward", *FAST))
    assert "--loss forward needs the noise matrix" in line
    cleaned = tmp_path / "w.parquet"
    assert run("clean", flags, "--mode", "weight", "--out", cleaned, "-q").exit_code == 0
    res = run("retrain", "--id", "row_id", cleaned, "--out", tmp_path / "w", "--json", *FAST[:-1])
    assert res.exit_code == 0 and json.loads(res.stdout)["settings"]["weight_col"] == "sample_weight"


def test_user_errors_are_one_line(data, model, tmp_path):
    d, plain, flags = data
    out, _ = model
    assert "unknown loss 'nope'" in one_error_line(run("retrain", "--id", "row_id", flags, "--out", tmp_path / "x", "--loss", "nope"))
    assert "exists and is not empty" in one_error_line(run("retrain", "--id", "row_id", flags, "--out", out, *FAST))
    assert "p_noisy column" in one_error_line(
        run("retrain", "--id", "row_id", plain, "--label", "kind", "--loss", "dynamic-hard", "--noisy-weight", "column",
            "--out", tmp_path / "y", *FAST))
    assert "--mixup" in one_error_line(run("retrain", "--id", "row_id", flags, "--out", tmp_path / "m", "--mixup", "-1"))
    assert "--prior-reg" in one_error_line(run("retrain", "--id", "row_id", flags, "--out", tmp_path / "p", "--prior-reg", "-1"))
    assert "--hidden" in one_error_line(run("retrain", "--id", "row_id", flags, "--out", tmp_path / "z", "--hidden", "a,b"))
    missing = tmp_path / "missing.parquet"
    pq.write_table(pq.read_table(plain).drop_columns(["x2", "shade"]), missing)
    line = one_error_line(run("predict", out, missing, "--out", tmp_path / "p.parquet"))
    assert "x2, shade" in line
    assert "--prefix" in one_error_line(run("predict", out, flags, "--out", tmp_path / "p.parquet"))


def _copy_model(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_tampered_or_incomplete_model_dirs_are_refused(data, model, tmp_path):
    _, plain, _ = data
    out, _ = model
    args = (plain, "--out", tmp_path / "p.parquet")
    bad = _copy_model(out, tmp_path / "bad_json")
    (bad / "model.json").write_text('{"format": ')
    assert "model.json does not parse" in one_error_line(run("predict", bad, *args))
    shape = _copy_model(out, tmp_path / "bad_shape")
    spec = json.loads((shape / "model.json").read_text())
    spec["architecture"]["hidden"] = [32]
    (shape / "model.json").write_text(json.dumps(spec))
    assert "does not match model.json" in one_error_line(run("predict", shape, *args))
    gone = _copy_model(out, tmp_path / "no_pt")
    (gone / "model.pt").unlink()
    assert "model.pt is missing" in one_error_line(run("predict", gone, *args))
    assert "does not exist" in one_error_line(run("predict", tmp_path / "nowhere", *args))


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_as_model_pt_is_refused(data, model, tmp_path):
    _, plain, _ = data
    out, _ = model
    evil = _copy_model(out, tmp_path / "evil")
    marker = tmp_path / "pwned"
    (evil / "model.pt").write_bytes(pickle.dumps(_Planted(marker), protocol=2))
    line = one_error_line(run("predict", evil, plain, "--out", tmp_path / "p.parquet"))
    assert "not a weights-only state dict" in line
    assert not marker.exists() and not (tmp_path / "p.parquet").exists()
