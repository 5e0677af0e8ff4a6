"""cleanpipe.train.retrain and .store: losses wired to flag output, save/load, predictions."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_tables import make_table

from cleanpipe import flag_table
from cleanpipe.errors import InputError
from cleanpipe.settings import ELR_MOMENTUM
from cleanpipe.train import (PAIR_SHARE, TrainConfig, align_noise_matrix, choose_loss, flip_concentration,
                             load_model_dir, predict_table, retrain_table, save_model_dir)

FAST = TrainConfig(epochs=4, batch_size=32, lr=1e-2, hidden=(16,), seed=0, device="cpu", threads=1)


@pytest.fixture(scope="module")
def flagged():
    """A flags table (given probabilities, no cross-validation) and its summary."""
    table = make_table(n=90)
    y = np.arange(90) % 3
    probs = np.full((90, 3), 0.1)
    probs[np.arange(90), y] = 0.8
    probs[:6] = np.roll(probs[:6], 1, axis=1)  # six rows the "model" disagrees with
    res = flag_table(table, label="label", pred_probs=probs)
    return res.table, res.summary


@pytest.fixture(scope="module")
def trained(flagged, tmp_path_factory):
    table, _ = flagged
    res = retrain_table(table, label="label", ids=["row_id"], config=FAST)
    path = save_model_dir(tmp_path_factory.mktemp("m") / "model", res.state_dict, res.spec, res.metrics)
    return res, path


def test_flag_columns_are_never_features(trained):
    res, _ = trained
    assert res.spec["preprocessing"]["columns"] == ["x", "x2", "colour"]
    assert res.spec["classes"] == ["cat", "dog", "eel"] and res.spec["label_type"] == "string"
    m = res.metrics
    assert m["epochs"] == len(m["curve"]["train_loss"]) and 1 <= m["best_epoch"] <= m["epochs"]
    assert m["device"] == "cpu" and m["samples_per_second"] > 0
    # the default loss is auto, which without flag's estimates makes a quick one and says so
    choice = m["settings"]["loss_choice"]
    assert choice["source"] == "quick estimate" and m["settings"]["loss"] == choice["chosen"]
    assert res.spec["loss"]["auto"] == choice


def test_reloaded_model_reproduces_predictions_exactly(trained, flagged):
    res, path = trained
    table, _ = flagged
    table = table.drop_columns(["given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"])
    loaded = load_model_dir(path)
    a = predict_table(loaded, table, probs=True)
    b = predict_table(load_model_dir(path), table, probs=True)
    new = ["predicted_label", "confidence", "pred_probs"]
    assert a.select(new).equals(b.select(new))  # (the input's NaN would make whole tables unequal)
    assert a.column_names == table.column_names + ["predicted_label", "confidence", "pred_probs"]
    assert a.schema.field("predicted_label").type == pa.string()
    assert a.schema.field("pred_probs").type == pa.list_(pa.float32())
    # the in-memory model of the training run gives the same probabilities bit for bit
    from cleanpipe.train.loop import predict_logits
    x_num, x_cat = loaded.preprocessor.transform(table)
    p = torch.softmax(predict_logits(res.model, torch.from_numpy(x_num), torch.from_numpy(x_cat)), 1)
    np.testing.assert_array_equal(np.stack(a.column("pred_probs").to_numpy(zero_copy_only=False)), p.numpy())
    conf = a.column("confidence").to_numpy()
    assert np.all((conf > 0) & (conf <= 1))


def test_predict_on_a_flags_table_needs_a_prefix(trained, flagged):
    table, _ = flagged
    loaded = load_model_dir(trained[1])
    with pytest.raises(InputError, match="already has a column 'predicted_label'.*--prefix"):
        predict_table(loaded, table)
    out = predict_table(loaded, table, prefix="model_")
    assert out.column_names[-2:] == ["model_predicted_label", "model_confidence"]


def test_forward_needs_and_aligns_the_noise_matrix(flagged):
    table, summary = flagged
    with pytest.raises(InputError, match="--loss forward needs the noise matrix"):
        retrain_table(table, label="label", loss="forward", config=FAST)
    res = retrain_table(table, label="label", loss="forward", noise_matrix=summary["noise_matrix"],
                        noise_matrix_classes=summary["classes"], config=FAST)
    assert res.metrics["settings"]["noise_matrix"] is not None
    t = np.array([[0.8, 0.1, 0.0], [0.1, 0.8, 0.5], [0.1, 0.1, 0.5]])
    np.testing.assert_allclose(align_noise_matrix(t, ["a", "b", "c"], ["c", "a"]),
                               [[1.0, 0.1 / 0.9], [0.0, 0.8 / 0.9]], rtol=1e-6)
    with pytest.raises(InputError, match="no class 'z'"):
        align_noise_matrix(t, ["a", "b", "c"], ["a", "z"])


def _noise(kind: str, k: int, rate: float) -> np.ndarray:
    """``[given][true]`` matrix of symmetric (to a uniform other class) or pair (c -> c + 1) noise."""
    if kind == "pair":
        return (1 - rate) * np.eye(k) + rate * np.roll(np.eye(k), 1, axis=0)
    return (1 - rate) * np.eye(k) + rate / (k - 1) * (1 - np.eye(k))


@pytest.mark.parametrize("k", [3, 6, 10])
def test_flip_concentration_separates_pair_from_spread_noise(k):
    assert flip_concentration(_noise("pair", k, 0.3)) == pytest.approx(1.0)
    assert flip_concentration(_noise("symmetric", k, 0.4)) == pytest.approx(0.0)
    assert flip_concentration(np.eye(k)) == 0.0
    # half the flips to the next class, half spread evenly: in between, on the same side for every K
    mixed = 0.5 * _noise("pair", k, 0.3) + 0.5 * _noise("symmetric", k, 0.3)
    assert 0.3 < flip_concentration(mixed) < 0.7


def test_auto_loss_follows_the_noise_matrix(flagged):
    table, summary = flagged
    assert choose_loss(_noise("pair", 3, 0.3))[0] == "forward"
    assert choose_loss(_noise("symmetric", 3, 0.3))[0] == "elr"
    loss, why = choose_loss(_noise("pair", 2, 0.3))
    assert loss == "elr" and "two classes" in why["reason"]
    assert choose_loss(None)[0] == "sce"
    with pytest.raises(InputError, match="not K x K"):
        choose_loss(np.ones((3, 2)))
    runs = {kind: retrain_table(table, label="label", noise_matrix=_noise(kind, 3, 0.3).tolist(),
                                noise_matrix_classes=summary["classes"], config=FAST)
            for kind in ("pair", "symmetric")}
    pair, sym = (runs[k].metrics["settings"] for k in ("pair", "symmetric"))
    assert pair["loss"] == "forward" and pair["noise_matrix"] is not None
    assert pair["loss_choice"]["flip_concentration"] >= PAIR_SHARE
    assert sym["loss"] == "elr" and sym["noise_matrix"] is None and sym["target_momentum"] == ELR_MOMENTUM
    assert sym["loss_choice"]["flip_concentration"] < PAIR_SHARE
    # auto forward trains with the noise matrix: the same network as an explicit --loss forward
    explicit = retrain_table(table, label="label", loss="forward",
                             noise_matrix=_noise("pair", 3, 0.3).tolist(),
                             noise_matrix_classes=summary["classes"], config=FAST)
    for name, value in explicit.state_dict.items():
        assert torch.equal(value, runs["pair"].state_dict[name])


def test_forward_trains_on_the_labels_flag_scored(flagged):
    from cleanpipe.clean import clean_table
    table, summary = flagged
    # evidence thresholds off: every flagged row whose predicted label differs is relabelled
    cleaned = clean_table(table, mode="relabel", label="label", relabel_p_noisy=0.0, relabel_score=1.0)
    assert cleaned.counts["relabelled"] > 0
    nm = dict(noise_matrix=summary["noise_matrix"], noise_matrix_classes=summary["classes"])
    on_flags = retrain_table(table, label="label", loss="forward", config=FAST, **nm)
    on_cleaned = retrain_table(cleaned.table, label="label", loss="forward", config=FAST, **nm)
    assert on_cleaned.metrics["settings"]["labels_from"] == "original_label"
    assert on_flags.metrics["settings"]["labels_from"] == "label"
    for name, value in on_flags.state_dict.items():
        assert torch.equal(value, on_cleaned.state_dict[name])
    # without original_label the relabelled labels are used: another network
    relabelled = retrain_table(cleaned.table.drop_columns(["original_label"]), label="label",
                               loss="forward", config=FAST, **nm)
    assert any(not torch.equal(v, relabelled.state_dict[k]) for k, v in on_flags.state_dict.items())


def test_dynamic_losses_use_p_noisy_or_explain(flagged):
    table, _ = flagged
    res = retrain_table(table, label="label", loss="dynamic-hard", noisy_weight="column", config=FAST)
    assert res.metrics["settings"]["loss"] == "dynamic-hard" and res.metrics["noise_model"] == []
    with pytest.raises(InputError, match="p_noisy column"):
        retrain_table(table.drop_columns(["p_noisy"]), label="label", loss="dynamic-soft",
                      noisy_weight="column", config=FAST)


def test_elr_tracks_its_running_target_in_the_loop(flagged):
    """lambda 0 trains exactly as cross-entropy; lambda 3 differs, which it could only do if fit()
    fills the target average (it starts at zeros, where the regulariser vanishes)."""
    table, _ = flagged
    ce = retrain_table(table, label="label", loss="ce", config=FAST)
    off = retrain_table(table, label="label", loss="elr", loss_params={"lam": 0.0}, config=FAST)
    assert all(torch.equal(v, ce.state_dict[k]) for k, v in off.state_dict.items())
    on = retrain_table(table, label="label", loss="elr", config=FAST)
    again = retrain_table(table, label="label", loss="elr", config=FAST)
    assert any(not torch.equal(v, ce.state_dict[k]) for k, v in on.state_dict.items())
    assert all(torch.equal(v, again.state_dict[k]) for k, v in on.state_dict.items())  # seeded
    assert on.metrics["settings"]["target_momentum"] == ELR_MOMENTUM
    assert ce.metrics["settings"]["target_momentum"] is None
    mixed = retrain_table(table, label="label", loss="elr", config=dataclasses.replace(FAST, mixup=1.0))
    assert np.isfinite(mixed.metrics["curve"]["train_loss"]).all()
    with pytest.raises(InputError, match="lam must be in"):
        retrain_table(table, label="label", loss="elr", loss_params={"lam": -1.0}, config=FAST)


def test_online_noisy_weight_needs_no_flag_columns(flagged):
    table, _ = flagged
    plain = table.drop_columns(["given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"])
    res = retrain_table(plain, label="label", loss="dynamic-hard", noisy_weight="online", warmup=2,
                        config=FAST)
    assert res.spec["loss"]["noisy_weight"] == "online" and res.metrics["settings"]["warmup"] == 2
    with pytest.raises(InputError, match="--noisy-weight must be"):
        retrain_table(plain, label="label", loss="dynamic-hard", noisy_weight="guess", config=FAST)


def test_loss_and_weight_errors(flagged):
    table, _ = flagged
    with pytest.raises(InputError, match="unknown loss 'nope'"):
        retrain_table(table, label="label", loss="nope", config=FAST)
    from cleanpipe.losses import LOSSES
    from cleanpipe.train import is_multilabel_loss
    assert is_multilabel_loss("bce") and not is_multilabel_loss("sce") and not is_multilabel_loss("forward")
    for name in (n for n in LOSSES if is_multilabel_loss(n)):
        with pytest.raises(InputError, match="multi-label"):
            retrain_table(table, label="label", loss=name, config=FAST)
    with pytest.raises(InputError, match="--loss-param does not fit"):
        retrain_table(table, label="label", loss="gce", loss_params={"nope": 1.0}, config=FAST)
    bad = table.append_column("w", pa.array(np.full(table.num_rows, -1.0)))
    with pytest.raises(InputError, match="--weight-col 'w'"):
        retrain_table(bad, label="label", weight_col="w", config=FAST)
    with pytest.raises(InputError, match="label column 'target' not found"):
        retrain_table(table, label="target", config=FAST)


def test_row_weights_change_the_model(flagged):
    table, _ = flagged
    w = np.where(np.arange(table.num_rows) % 2 == 0, 1.0, 0.0).astype(np.float32)
    a = retrain_table(table.append_column("w", pa.array(w)), label="label", weight_col="w", config=FAST)
    b = retrain_table(table, label="label", config=FAST)
    assert "w" not in a.spec["preprocessing"]["columns"]
    assert not torch.equal(a.state_dict["net.0.weight"], b.state_dict["net.0.weight"])


def test_model_dir_is_refused_when_tampered(trained, tmp_path):
    res, path = trained
    spec = json.loads((path / "model.json").read_text())
    bad = tmp_path / "bad"
    save_model_dir(bad, res.state_dict, dict(spec, architecture=dict(spec["architecture"], hidden=[17])),
                   res.metrics)
    with pytest.raises(InputError, match="does not match model.json"):
        load_model_dir(bad)
    (bad / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="model.json does not parse"):
        load_model_dir(bad)
    (bad / "model.json").unlink()
    with pytest.raises(InputError, match="model.json is missing"):
        load_model_dir(bad)


class _Planted:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_as_model_pt_is_refused(trained, tmp_path):
    res, path = trained
    bad = save_model_dir(tmp_path / "evil", res.state_dict, res.spec, res.metrics)
    marker = tmp_path / "pwned"
    (bad / "model.pt").write_bytes(pickle.dumps(_Planted(marker), protocol=2))
    with pytest.raises(InputError, match="not a weights-only state dict"):
        load_model_dir(bad)
    assert not marker.exists()


def test_save_refuses_a_non_empty_dir_unless_overwrite(trained, tmp_path):
    res, _ = trained
    target = tmp_path / "m"
    target.mkdir()
    save_model_dir(target, res.state_dict, res.spec, res.metrics)  # an empty folder is fine
    with pytest.raises(InputError, match="exists and is not empty"):
        save_model_dir(target, res.state_dict, res.spec, res.metrics)
    save_model_dir(target, res.state_dict, res.spec, res.metrics, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "model.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporaries left behind
    # A file cleanpipe did not write is never deleted, even with overwrite: the save is refused.
    (target / "old.txt").write_text("x")
    with pytest.raises(InputError, match="never deleted, even with --overwrite"):
        save_model_dir(target, res.state_dict, res.spec, res.metrics, overwrite=True)
    assert (target / "old.txt").read_text() == "x" and (target / "model.pt").is_file()


def test_auto_on_heavy_noise_trains_the_heavy_branch_on_the_labels_flag_scored(flagged):
    from cleanpipe.auto import HEAVY
    from cleanpipe.clean import clean_table
    table, summary = flagged
    cleaned = clean_table(table, mode="relabel", label="label", relabel_p_noisy=0.0, relabel_score=1.0).table
    heavy = dict(noise_matrix=_noise("symmetric", 3, 0.6).tolist(), noise_matrix_classes=summary["classes"],
                 class_prior=(summary["class_prior"], summary["classes"]))
    # the caller's epochs, batch size, learning rate and width are kept; what they left at the
    # default (mixup, prior weight, validation share, patience, warm-up) is auto's
    a = retrain_table(cleaned, label="label", config=FAST, **heavy)
    s = a.metrics["settings"]
    want = HEAVY["settings"]
    assert s["loss"] == "dynamic-hard" and s["labels_from"] == "original_label"
    assert (s["mixup"], s["prior_reg"], s["val_fraction"], s["patience"], s["warmup"]) == (
        want["mixup"], want["prior_reg"], 0.0, 0, want["warmup"])
    assert s["epochs"] == FAST.epochs and s["loss_choice"]["kept_from_caller"] == ["epochs"]
    assert "heavy noise" in s["loss_choice"]["reason"] and s["loss_choice"]["source"] == "flag"
    assert s["loss_choice"]["noise_rate"] == pytest.approx(0.6)
    m = a.metrics
    assert m["val_rows"] == 0 and m["best_epoch"] == m["epochs"] == FAST.epochs
    # the same as spelling the choice out, and deterministic
    b = retrain_table(cleaned, label="label", config=FAST, **heavy)
    explicit = retrain_table(
        cleaned.drop_columns(["label"]).rename_columns(
            [("label" if c == "original_label" else c) for c in cleaned.drop_columns(["label"]).column_names]),
        label="label", loss="dynamic-hard", warmup=want["warmup"],
        config=TrainConfig(**{**FAST.to_dict(), "hidden": FAST.hidden, "mixup": want["mixup"],
                              "prior_reg": want["prior_reg"], "val_fraction": 0.0, "patience": 0}),
        class_prior=heavy["class_prior"])
    for name, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[name]) and torch.equal(value, explicit.state_dict[name])


def test_auto_heavy_branch_takes_its_epochs_when_the_caller_left_the_default(flagged):
    table, summary = flagged
    cfg = TrainConfig(batch_size=32, hidden=(8,), seed=0, device="cpu", threads=1)
    res = retrain_table(table, label="label", config=cfg, noise_matrix=_noise("symmetric", 3, 0.7).tolist(),
                        noise_matrix_classes=summary["classes"], warmup=2)
    s = res.metrics["settings"]
    assert s["epochs"] == res.metrics["epochs"] == 60 and s["warmup"] == 2
    assert s["loss_choice"]["kept_from_caller"] == ["warmup"]


def test_quick_estimate_reads_planted_noise():
    from cleanpipe.train.estimate import quick_estimate
    from cleanpipe.auto import estimate
    t = make_table(n=600)
    y = np.arange(600) % 3
    cols = ["x", "x2", "colour"]
    clean = estimate(*quick_estimate(t, cols, y, 3, seed=0))
    rng = np.random.default_rng(1)
    noisy_y = np.where(rng.random(600) < 0.6, (y + rng.integers(1, 3, 600)) % 3, y)
    first = quick_estimate(t, cols, noisy_y, 3, seed=0)
    noisy = estimate(*first)
    assert clean.noise_rate < 0.2 < 0.45 < noisy.noise_rate
    again = quick_estimate(t, cols, noisy_y, 3, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(first, again))
    # a class with fewer rows than folds: no estimate
    assert quick_estimate(t, cols, np.where(np.arange(600) < 2, 2, np.arange(600) % 2), 3, seed=0) is None
