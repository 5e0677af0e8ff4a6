"""Multi-label tables through ``cleanpipe run``: list columns, 0/1 columns, and their config errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli
from sklearn.metrics import f1_score

#: Tag names, out of sorted order on purpose (the classes are the sorted tags).
TAGS = ["sky", "dog", "tree", "car"]
CLASSES = sorted(TAGS)
N_NULL = 4

ALL_FOUR = """
stages = ["oof", "flag", "clean", "retrain"]
[source]
type = "parquet"
path = "tags.parquet"
[columns]
label = "tags"
ids = ["row_id"]
exclude = ["n_flipped", "is_sky", "is_dog", "is_tree", "is_car"]   # the tags again: not features
[oof]
model = "logreg"
folds = 3
[retrain]
epochs = 3
patience = 0
hidden = [32]
device = "cpu"
threads = 1
[sink]
type = "parquet"
flags = "out/tags.flags.parquet"
cleaned = "out/tags.cleaned.parquet"
"""


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """800 rows whose tag k is present when ``x_k + 0.3 x_4`` passes a threshold (an easy task for
    logistic regression), with 4% of the (row, tag) cells flipped: present tags dropped (missing)
    and absent ones added (spurious). Returns (folder, table, noisy matrix, flipped cells), the
    matrices in sorted class order."""
    rng = np.random.default_rng(1)
    n = 800
    x = rng.normal(size=(n, 5))
    true = 2.0 * x[:, :4] + 0.3 * x[:, 4:5] > np.array([0.0, 0.4, -0.3, 0.8])
    flip = rng.random(true.shape) < 0.04
    flip[:N_NULL] = False
    noisy = true ^ flip
    names = np.array(TAGS)
    lists = [names[row].tolist() for row in noisy]
    lists[:N_NULL] = [None] * N_NULL  # unlabelled rows: kept, not checked
    table = pa.table({"row_id": np.arange(n), **{f"x{i}": x[:, i] for i in range(5)},
                      "tags": pa.array(lists, type=pa.list_(pa.string())),
                      "n_flipped": flip.sum(axis=1),
                      **{f"is_{t}": noisy[:, i].astype(np.int8) for i, t in enumerate(TAGS)}})
    folder = tmp_path_factory.mktemp("tags")
    pq.write_table(table, folder / "tags.parquet")
    order = [TAGS.index(c) for c in CLASSES]
    return folder, table, noisy[:, order], flip[:, order]


def _write(folder, text: str, name: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _matrix(table: pa.Table, column: str) -> np.ndarray:
    """A list-of-tags column as a bool matrix in sorted class order (a null list: no tag)."""
    out = np.zeros((table.num_rows, len(CLASSES)), dtype=bool)
    for i, tags in enumerate(table.column(column).to_pylist()):  # 800 rows: a test-side loop
        for t in tags or ():
            out[i, CLASSES.index(t)] = True
    return out


@pytest.mark.slow  # four stages, one-vs-rest logreg and a tiny MLP: about 15 s on a busy 2-core box
def test_list_column_runs_all_four_stages_and_resumes(tagged):
    from cleanpipe.train import load_model_dir

    folder, table, noisy, flip = tagged
    path = _write(folder, ALL_FOUR, "tags.toml")
    runs = folder / "runs"
    res = run_cli("run", path, "--runs-dir", runs, "--run-id", "r1")
    assert res.exit_code == 0, res.output
    run_dir = runs / "tags" / "r1"
    m = manifest(run_dir)
    assert m["status"] == "done"
    assert [m["stages"][s]["status"] for s in ("oof", "flag", "clean", "retrain")] == ["done"] * 4
    assert m["stages"]["oof"]["settings"]["multi_label"] is True

    # oof: one-vs-rest probabilities, one column per tag, rows need not sum to 1
    probs = np.load(run_dir / "oof" / "pred_probs.npy")
    assert probs.shape == (table.num_rows, 4) and not np.allclose(probs.sum(axis=1), 1)
    assert json.loads((run_dir / "oof" / "oof.json").read_text())["classes"] == CLASSES

    # flag: finds the injected rows and, per tag, which ones are missing / spurious
    flags = pq.read_table(folder / "out" / "tags.flags.parquet")
    assert flags.column_names[:table.num_columns] == table.column_names
    assert {"suspect_missing", "suspect_spurious"} <= set(flags.column_names)
    truth = flip.any(axis=1)
    found = flags.column("is_label_issue").to_numpy(zero_copy_only=False)
    assert f1_score(truth, found) >= 0.6, f1_score(truth, found)
    missing, spurious = _matrix(flags, "suspect_missing"), _matrix(flags, "suspect_spurious")
    assert (missing & flip & ~noisy).sum() >= 0.6 * missing.sum()  # a suspect missing tag was dropped
    assert (spurious & flip & noisy).sum() >= 0.6 * spurious.sum()  # a suspect spurious tag was added
    summary = m["stages"]["flag"]["summary"]
    assert summary["multi_label"] is True and summary["n_classes"] == 4
    assert set(summary["noise_rate_per_class"]) == set(CLASSES)
    assert set(summary["missing_per_class"]) == set(summary["spurious_per_class"]) == set(CLASSES)
    assert np.array_equal(np.load(run_dir / "flag" / "pred_probs.npy"), probs)  # passed on to clean

    # clean (relabel): every input column kept, tags added/removed, the old tags in original_label
    cleaned = pq.read_table(folder / "out" / "tags.cleaned.parquet")
    assert cleaned.num_rows == table.num_rows
    assert cleaned.column_names[:table.num_columns] == table.column_names
    assert cleaned.column("original_label").to_pylist() == table.column("tags").to_pylist()
    counts = m["stages"]["clean"]["summary"]
    assert counts["relabelled"] > 0 and counts["tags_added"] + counts["tags_removed"] > 0
    wrong = _matrix(cleaned, "tags") != (noisy ^ flip)  # null rows: no tag on either side
    assert wrong.sum() < flip.sum()  # relabel fixed more tags than it broke
    meta = pq.ParquetFile(run_dir / "clean" / "cleaned.parquet").metadata.metadata  # written last
    meta = json.loads(meta[b"cleanpipe.clean"])
    assert meta["pred_probs"].endswith("pred_probs.npy") and meta["settings"]["multi_label"] is True

    # retrain: the multi-label default loss, a loadable model, micro-F1 in metrics.json
    model_dir = run_dir / "retrain" / "model"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["val_micro_f1"] is not None and 0 <= metrics["val_micro_f1"] <= 1
    assert m["stages"]["retrain"]["summary"]["val_micro_f1"] == metrics["val_micro_f1"]
    loaded = load_model_dir(model_dir)
    assert loaded.multi_label and loaded.spec["loss"]["name"] == "bce" and loaded.spec["classes"] == CLASSES

    again = run_cli("run", path, "--runs-dir", runs, "--run-id", "r1", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["actions"] == {s: "reused" for s in ("oof", "flag", "clean", "retrain")}
    changed = run_cli("run", path, "--runs-dir", runs, "--run-id", "r1", "--json",
                      "--set", "clean.relabel_add=0.95")
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["actions"] == {"oof": "reused", "flag": "reused", "clean": "ran",
                                                     "retrain": "ran"}


def test_zero_one_columns_flag_and_clean_without_an_oof_stage(tagged):
    folder, table, noisy, flip = tagged
    text = """
    stages = ["flag", "clean"]
    [source]
    type = "parquet"
    path = "tags.parquet"
    [columns]
    labels = ["is_sky", "is_dog", "is_tree", "is_car"]
    features = ["x0", "x1", "x2", "x3", "x4"]
    [oof]
    model = "logreg"
    folds = 3
    [clean]
    mode = "relabel"
    relabel_remove = 0.99
    """
    path = _write(folder, text, "cols.toml")
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--run-id", "c1")
    assert res.exit_code == 0, res.output
    run_dir = folder / "runs" / "cols" / "c1"
    m = manifest(run_dir)
    assert m["status"] == "done" and m["stages"]["flag"]["summary"]["n_classes"] == 4
    flags = pq.read_table(run_dir / "flag" / "flags.parquet")
    found = flags.column("is_label_issue").to_numpy(zero_copy_only=False)
    assert f1_score(flip.any(axis=1), found) >= 0.6  # the 0/1 columns hold every row's tags
    assert np.load(run_dir / "flag" / "pred_probs.npy").shape == (table.num_rows, 4)
    cleaned = pq.read_table(run_dir / "clean" / "cleaned.parquet")
    assert cleaned.column_names[:table.num_columns] == table.column_names
    assert m["stages"]["clean"]["summary"]["relabelled"] > 0
    after = np.stack([cleaned.column(f"is_{t}").to_numpy() for t in TAGS], axis=1)
    before = np.stack([table.column(f"is_{t}").to_numpy() for t in TAGS], axis=1)
    assert (after != before).any() and cleaned.column("original_label").type == pa.list_(pa.string())


BAD = """
stages = ["oof", "flag", "clean", "retrain"]
[source]
type = "parquet"
path = "tags.parquet"
[columns]
label = "tags"
[oof]
model = "logreg"
"""


@pytest.mark.parametrize("old, new, expect", [
    ('label = "tags"', 'labels = ["is_sky"]', ["[columns] labels = ['is_sky']", "at least two",
                                              'label = "cat"']),
    ('label = "tags"', 'label = "tags"\nlabels = ["is_sky", "is_dog"]', ["sets both label", "keep"]),
    ('label = "tags"', 'labels = ["is_sky", "is_sky"]', ["names 'is_sky' twice"]),
    ('label = "tags"', 'labels = "is_sky,is_dog"', ["[columns] labels must be a list of strings",
                                                    'labels = ["cat", "dog", "sky"]']),
    ('label = "tags"', 'label = "x0"\nmulti_label = true', ["multi_label = true", "type double",
                                                            "not a list of tags"]),
    ('label = "tags"', 'labels = ["is_sky", "row_id_text"]', ["[columns] labels names 'row_id_text'"]),
    ('label = "tags"', 'labels = ["is_sky", "tags"]', ["labels names 'tags' of type list<",
                                                      "0/1"]),
    ('model = "logreg"', 'model = "logreg"\n[flag]\nmethod = "per_class"',
     ["[flag] method = 'per_class' is single-label only", "noise_rate, mixture, both"]),
    ('model = "logreg"', 'model = "logreg"\n[retrain]\nloss = "gce"',
     ["[retrain] loss = 'gce' is a single-label loss", "bce"]),
    ('model = "logreg"', 'model = "logreg"\n[retrain]\nloss = "auto"', ["loss = 'auto' is a single-label"]),
    ('stages = ["oof", "flag", "clean", "retrain"]', 'stages = ["clean", "retrain"]',
     ["[clean] mode = \"relabel\" on multi-label data", "add \"flag\" to stages"]),
    ('model = "logreg"', 'model = "logreg"\n[clean]\nrelabel_add = 1.5', ["[clean] relabel_add = 1.5",
                                                                          "in [0, 1]"]),
])
def test_bad_multilabel_settings_fail_in_one_line(tagged, old, new, expect):
    folder, table, *_ = tagged
    if "row_id_text" in new:
        pq.write_table(table.append_column("row_id_text", pa.array([str(i) for i in range(table.num_rows)])),
                       folder / "tags_text.parquet")
        text = BAD.replace('"tags.parquet"', '"tags_text.parquet"')
    else:
        text = BAD
    if new.startswith("stages"):
        # a flags table as the source, so only the multi-label relabel rule can fail
        text = text.replace('"tags.parquet"', '"fake.flags.parquet"')
        flags = {c: pa.array([None] * 4, type=pa.float64()) for c in ("label_score", "p_noisy")}
        pq.write_table(pa.table({"x": [1.0] * 4, "tags": pa.array([["a"], ["b"], [], ["a"]]),
                                 "given_label": pa.array([["a"], ["b"], [], ["a"]]),
                                 "predicted_label": pa.array([["a"], ["b"], [], ["a"]]), **flags,
                                 "is_label_issue": [False] * 4}), folder / "fake.flags.parquet")
    assert old in text
    path = _write(folder, text.replace(old, new), "bad.toml")
    res = run_cli("run", path, "--runs-dir", folder / "bad_runs")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for part in expect:
        assert part in lines[0], lines[0]
    assert not (folder / "bad_runs").exists()


def test_multilabel_settings_enter_the_stage_keys_only_for_multilabel_data(tagged):
    """Single-label stage keys stay as they were, so existing runs are still reused."""
    from cleanpipe.pipeline import load_pipeline
    from cleanpipe.pipeline.runner import stage_settings

    folder, *_ = tagged
    p = load_pipeline(_write(folder, BAD, "keys.toml"))
    single, multi = stage_settings(p, "clean"), stage_settings(p, "clean", multi_label=True)
    assert "relabel_add" not in single and "multi_label" not in single
    assert multi["relabel_add"] == 0.9 and multi["multi_label"] is True
    assert "multi_label" not in stage_settings(p, "oof")
    assert stage_settings(p, "oof", multi_label=True)["label"] == "tags"
