"""Multi-label tag probabilities fitted out of fold on the workers, then flagged partition by
partition (``cleanpipe flag DATA --engine dask`` on a tag label without --pred-probs, issue 21)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from cleanpipe import hashed_folds as hf
from cleanpipe.cli import cli
from cleanpipe.detect.multilabel import detect_multilabel
from cleanpipe.hashed_folds_multilabel import fit_tag_fold_model, predict_tags_out_of_fold
from cleanpipe.partitioned_oof import OofSettings
from cleanpipe.partitions import SUCCESS, DaskEngine, LocalEngine
from cleanpipe.settings import SCALE_SAMPLE_ROWS
from partition_probs import flag_keeping_probs

TAGS = np.array(["cloud", "dog", "sea", "tree"])
FEATURES = [f"x{j}" for j in range(5)]
BOUNDS = (0, 500, 501, 501, 1100, 1600)  # an empty and a single-row partition among them
SETTINGS = OofSettings("logreg", 3, 7, 700, ids=("id",))
FLAG_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue",
                "suspect_missing", "suspect_spurious")


def make_rows(n=1600, seed=0, flip=0.05, unlabelled=0.02):
    """Features, learnable true tags, given tags with planted flips (missing and spurious), some
    rows without tags."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    W = rng.normal(size=(len(FEATURES), len(TAGS)))
    true = (X @ W + rng.normal(0, 0.4, (n, len(TAGS)))) > 0.7
    flipped = rng.random(true.shape) < flip
    return X, true ^ flipped, flipped, rng.random(n) < unlabelled


def write_rows(root, X, given, unl, *, bounds=BOUNDS, order=None, ids=None, columns=False):
    """Parquet files of id, the features and a list-of-tags column (null: no tags), or
    (``columns``) 0/1 tag columns; ``order`` (a permutation) places the rows in another order
    before cutting at ``bounds``."""
    n = len(X)
    order = np.arange(n) if order is None else np.asarray(order)
    ids = np.arange(n) * 5 + 1 if ids is None else ids
    os.makedirs(root, exist_ok=True)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = order[a:b]
        lists = [None if unl[r] else TAGS[given[r]].tolist() for r in rows]
        cols = {"id": ids[rows], **{c: X[rows, j] for j, c in enumerate(FEATURES)}}
        if columns:
            cols.update({f"is_{t}": pa.array(given[rows, j].astype(np.int8))
                         for j, t in enumerate(TAGS)})
        else:
            cols["tags"] = pa.array(lists, type=pa.list_(pa.string()))
        pq.write_table(pa.table(cols), os.path.join(root, f"part-{i:03d}.parquet"))


def read_flags(out):
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


def by_id(table):
    return table.take(pa.compute.sort_indices(table["id"]))


def run(tmp_path, name, *, engine=None, settings=SETTINGS, label="tags", data="data"):
    """flag_partitions without probabilities; returns (summary, probabilities by partition file)."""
    return flag_keeping_probs(str(tmp_path / data), str(tmp_path / name), label=label,
                              engine=engine, oof=settings)


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client
    with Client(cluster) as c:
        yield c


def reference(X, given, unl, settings, *, ids):
    """The whole table through the pure functions, in one process: probabilities in row order."""
    h = hf.id_hashes(ids, seed=settings.seed)
    lab = ~unl
    rate = hf.training_rate(int(lab.sum()), settings.folds, settings.sample_rows)
    Y = (given & lab[:, None]).astype(np.int8)
    s = hf.sample_partial(X.astype(np.float32), Y, h, n_folds=settings.folds, rate=rate, labelled=lab)
    models = [fit_tag_fold_model(s.X, s.y, s.folds, f, model=settings.model, seed=settings.seed,
                                 untagged_rows=bool(unl.any()))
              for f in range(settings.folds)]
    return predict_tags_out_of_fold(models, X.astype(np.float32), Y, lab,
                                    hf.hashed_folds(h, settings.folds), len(TAGS))


def test_flags_are_the_pure_functions_and_the_in_memory_detector(tmp_path, rows):
    X, given, _, unl = rows
    write_rows(tmp_path / "data", X, given, unl)
    summary, probs = run(tmp_path, "out")
    P = np.concatenate([probs[f] for f in sorted(probs)])
    want = reference(X, given, unl, SETTINGS, ids=np.arange(len(X)) * 5 + 1)
    np.testing.assert_array_equal(P, want.astype(np.float32).astype(np.float64))
    assert summary["multi_label"] and summary["oof"]["multi_label"]
    assert summary["labelled_rows"] == int((~unl).sum())
    assert summary["classes"] == sorted(TAGS.tolist())  # one probability per tag, class order
    flags = read_flags(tmp_path / "out")
    assert flags["id"].to_pylist() == (np.arange(len(X)) * 5 + 1).tolist()
    lab = ~unl
    det = detect_multilabel(given[lab].astype(np.int8), P[lab], method="posterior")
    got = flags["is_label_issue"].to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(got[lab], det.is_label_issue)
    assert not got[unl].any() and flags["given_label"].null_count == int(unl.sum())
    assert summary["flagged"] == int(det.is_label_issue.sum()) > 0
    assert os.path.exists(tmp_path / "out" / SUCCESS) and not os.path.exists(tmp_path / "out" / "_work")


def test_any_partitioning_and_row_order_gives_the_same_flags(tmp_path, rows):
    X, given, _, unl = rows
    write_rows(tmp_path / "a", X, given, unl)
    order = np.random.default_rng(3).permutation(len(X))
    write_rows(tmp_path / "b", X, given, unl, bounds=(0, 90, 1000, 1600), order=order)
    _, pa_ = run(tmp_path, "out_a", data="a")
    _, pb_ = run(tmp_path, "out_b", data="b")
    a, b = by_id(read_flags(tmp_path / "out_a")), by_id(read_flags(tmp_path / "out_b"))
    for col in ("id", *FLAG_COLUMNS):
        assert a[col].to_pylist() == b[col].to_pylist(), col
    Pa = np.concatenate([pa_[f] for f in sorted(pa_)])
    Pb = np.concatenate([pb_[f] for f in sorted(pb_)])
    np.testing.assert_array_equal(Pa, Pb[np.argsort(order)])


def test_deterministic_given_the_seed(tmp_path, rows):
    X, given, _, unl = rows
    write_rows(tmp_path / "data", X, given, unl, bounds=(0, 800, 1600))
    _, p1 = run(tmp_path, "one")
    _, p2 = run(tmp_path, "two")
    other = OofSettings("logreg", 3, 8, 700, ids=("id",))
    _, p3 = run(tmp_path, "three", settings=other)
    for f in p1:
        np.testing.assert_array_equal(p1[f], p2[f])
    assert not all(np.array_equal(p1[f], p3[f]) for f in p1)
    assert read_flags(tmp_path / "one").equals(read_flags(tmp_path / "two"))


def test_flags_catch_planted_tag_flips(tmp_path):
    X, given, flipped, unl = make_rows(n=3000, seed=11, flip=0.04, unlabelled=0.0)
    write_rows(tmp_path / "data", X, given, unl, bounds=(0, 1000, 2000, 3000))
    run(tmp_path, "out", settings=OofSettings("gbm,logreg", 3, 0, 1500, ids=("id",)))
    flags = read_flags(tmp_path / "out")["is_label_issue"].to_numpy(zero_copy_only=False)
    wrong = flipped.any(axis=1)
    caught = (flags & wrong).sum()
    precision, recall = caught / flags.sum(), caught / wrong.sum()
    # chance: a random flag set is wrong at the base rate
    assert precision > 2.5 * wrong.mean(), (precision, wrong.mean())
    assert recall > 0.4, recall


def test_0_1_columns_match_the_list_label(tmp_path, rows):
    X, given, _, unl = rows
    unl = np.zeros_like(unl)  # 0/1 columns have no "no tags" row
    write_rows(tmp_path / "cols", X, given, unl, bounds=(0, 700, 1600), columns=True)
    write_rows(tmp_path / "list", X, given, unl, bounds=(0, 700, 1600))
    _, pc = run(tmp_path, "out_cols", label=",".join(f"is_{t}" for t in TAGS), data="cols")
    _, pl = run(tmp_path, "out_list", data="list")
    # the 0/1 columns' classes are their names, in the order given; the list's are sorted tags
    order = np.argsort(TAGS)
    for f in pc:
        np.testing.assert_allclose(pc[f][:, order], pl[f], rtol=1e-6, atol=1e-7)


def test_the_joint_network_family(tmp_path, rows):
    X, given, _, unl = rows
    write_rows(tmp_path / "data", X[:600], given[:600], unl[:600], bounds=(0, 250, 600))
    settings = OofSettings("mlp", 2, 1, 400, ids=("id",))
    _, probs = run(tmp_path, "out", settings=settings)
    P = np.concatenate([probs[f] for f in sorted(probs)])
    want = reference(X[:600], given[:600], unl[:600], settings, ids=np.arange(600) * 5 + 1)
    np.testing.assert_array_equal(P, want.astype(np.float32).astype(np.float64))
    assert ((P >= 0) & (P <= 1)).all()


def test_dask_equals_local_and_the_cli(tmp_path, rows, client, cluster):
    X, given, _, unl = rows
    write_rows(tmp_path / "data", X, given, unl)
    _, local = run(tmp_path, "local", engine=LocalEngine())
    _, dask = run(tmp_path, "dask", engine=DaskEngine(client))
    for f in local:
        np.testing.assert_array_equal(dask[f], local[f])
    assert read_flags(tmp_path / "dask").equals(read_flags(tmp_path / "local"))
    r = CliRunner().invoke(cli, ["flag", str(tmp_path / "data"), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "tags", "--id", "id",
                                 "--model", "logreg", "--folds", "3", "--seed", "7",
                                 "--out", str(tmp_path / "cli"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["multi_label"] and summary["oof"]["model"] == "logreg"
    # the CLI's sample is the default size: the same run in process
    run(tmp_path, "same", settings=OofSettings("logreg", 3, 7, SCALE_SAMPLE_ROWS, ids=("id",)))
    assert read_flags(tmp_path / "cli").equals(read_flags(tmp_path / "same"))


def test_0_1_columns_on_the_cluster_cli(tmp_path, rows, cluster):
    X, given, _, unl = rows
    write_rows(tmp_path / "data", X[:600], given[:600], np.zeros(600, bool), bounds=(0, 300, 600),
               columns=True)
    label = ",".join(f"is_{t}" for t in TAGS)
    r = CliRunner().invoke(cli, ["flag", str(tmp_path / "data"), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", label, "--id", "id",
                                 "--model", "logreg", "--out", str(tmp_path / "flags"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["multi_label"] and (tmp_path / "flags" / SUCCESS).exists()
    assert read_flags(tmp_path / "flags").num_rows == 600


@pytest.mark.parametrize("model", ["logreg", "hgb"])
def test_each_tag_model_is_a_fresh_fit_on_its_own_design(model):
    """Known answer: tag ``c``'s model is the one-machine ``fit_tag`` on the features and the
    other tags (no design or binning shared between tags, whose matrices differ)."""
    from cleanpipe.oof import fit_tag, make_model
    X, given, _, _ = make_rows(n=400, seed=5)
    X, Y = X.astype(np.float32), given.astype(np.int8)
    folds = hf.hashed_folds(hf.id_hashes(np.arange(400)), 2)
    m = fit_tag_fold_model(X, Y, folds, 1, model=model, untagged_rows=False)
    train, test = np.flatnonzero(folds != 1), np.flatnonzero(folds == 1)
    got = m.predict_tags(X[test], Y[test], np.ones(len(test), bool))
    for c in range(len(TAGS)):
        F = np.hstack([X, np.delete(Y, c, axis=1).astype(np.float32)])
        est = make_model(model, categorical=np.zeros(F.shape[1], bool))
        np.testing.assert_allclose(got[:, c], fit_tag(est, F, Y[:, c], train)(F[test]), rtol=1e-5,
                                   atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.lists(st.integers(0, 200), max_size=5), st.floats(0.0, 1.0),
       st.integers(0, 2**32 - 1))
def test_any_partitioning_merges_to_the_same_tag_sample(n, cuts, rate, seed):
    """The multi-label training sample (0/1 tags, rows without tags left out) is the same for
    any partitioning: the property the fold models' partition invariance rests on."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    Y = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    lab = rng.random(n) > 0.1
    h = hf.id_hashes(rng.permutation(n) * 3 + 1)
    whole = hf.sample_partial(X, Y, h, n_folds=3, rate=rate, labelled=lab)
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    parts = [hf.sample_partial(X[a:b], Y[a:b], h[a:b], n_folds=3, rate=rate, labelled=lab[a:b])
             for a, b in zip(bounds[:-1], bounds[1:])]
    merged = parts[0]
    for p in parts[1:]:
        merged = hf.merge_samples(merged, p)
    for field in ("X", "y", "folds", "hashes"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
    assert whole.y.shape[1:] == (3,) and whole.y.dtype == np.int8
    assert len(whole) <= int(lab.sum())


def test_a_rare_tag_is_warned_about_as_on_one_machine(tmp_path, rows):
    from cleanpipe.errors import CleanpipeWarning
    X, given, _, unl = rows
    given = given.copy()
    given[:, 3] = False
    given[[3, 900], 3] = True  # two rows with "tree": fewer than the 3 folds
    write_rows(tmp_path / "data", X, given, unl, bounds=(0, 800, 1600))
    with pytest.warns(CleanpipeWarning, match=r"'tree' \(2 rows\) have fewer positive"):
        summary, _ = run(tmp_path, "out")
    assert any("'tree'" in n for n in summary["oof"]["notes"])
