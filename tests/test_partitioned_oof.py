"""Out-of-fold probabilities computed partition by partition on the workers (issue 21)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe import hashed_folds as hf
from cleanpipe.cli import cli
from cleanpipe.detect import detect
from cleanpipe.errors import InputError
from cleanpipe.partitioned_oof import OofSettings
from cleanpipe.partitions import MANIFEST, SUCCESS, DaskEngine, LocalEngine, flag_partitions
from cleanpipe.settings import MAX_CATEGORIES
from partition_probs import flag_keeping_probs

BOUNDS = (0, 700, 701, 701, 1500, 2400)  # an empty and a single-row partition among them
FEATURES = [f"x{j}" for j in range(4)]


def write_dataset(root, *, n=2400, bounds=BOUNDS, seed=0):
    """id, four numeric features (one with NaN), label y (strings, 3 classes, 15% flipped)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[rng.random(n) < 0.05, 3] = np.nan
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    y = np.where(rng.random(n) < 0.15, rng.integers(0, 3, n), y)
    names = np.array(["ant", "bee", "cat"])
    os.makedirs(root, exist_ok=True)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        cols = {"id": np.arange(a, b) * 7 + 3, **{c: X[a:b, j] for j, c in enumerate(FEATURES)},
                "y": names[y[a:b]]}
        pq.write_table(pa.table(cols), os.path.join(root, f"part-{i:03d}.parquet"))
    return X.astype(np.float32), y


def read_flags(out):
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


SETTINGS = OofSettings("logreg", 3, 5, 900, ids=("id",))


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client
    with Client(cluster) as c:
        yield c


def reference_probs(X, y, ids, settings, n_classes=3):
    """The whole table through the pure functions of hashed_folds, in one process."""
    h = hf.id_hashes(ids, seed=settings.seed)
    rate = hf.training_rate(len(y), settings.folds, settings.sample_rows)
    s = hf.sample_partial(X, y, h, n_folds=settings.folds, rate=rate)
    models = hf.fit_fold_models(s.X, s.y, s.folds, n_folds=settings.folds, n_classes=n_classes,
                                model=settings.model, seed=settings.seed)
    return hf.predict_out_of_fold(models, X, hf.hashed_folds(h, settings.folds), n_classes), len(s)


def run_oof(tmp_path, name, engine, settings=SETTINGS):
    """flag_partitions with the probabilities kept: returns (summary, probs in row order)."""
    summary, probs = flag_keeping_probs(str(tmp_path / "data"), str(tmp_path / name), label="y",
                                        engine=engine, oof=settings)
    P = np.concatenate([probs[f] for f in sorted(probs)])
    return summary, P


def test_local_and_dask_give_the_hashed_fold_reference(tmp_path, client):
    X, y = write_dataset(tmp_path / "data")
    ids = np.arange(len(y)) * 7 + 3
    local, P_local = run_oof(tmp_path, "local", LocalEngine())
    dask, P_dask = run_oof(tmp_path, "dask", DaskEngine(client))
    want, sample_rows = reference_probs(X, y, ids, SETTINGS)
    np.testing.assert_array_equal(P_local, want.astype(np.float32))
    np.testing.assert_array_equal(P_dask, P_local)
    assert local["oof"]["training_rows"] == dask["oof"]["training_rows"] == sample_rows
    assert 900 * 1.5 - 150 < sample_rows < 900 * 1.5 + 150  # K/(K-1) x 900, sampled
    a, b = read_flags(tmp_path / "local"), read_flags(tmp_path / "dask")
    for col in ("predicted_label", "label_score", "p_noisy", "is_label_issue"):
        assert a.column(col).equals(b.column(col)), col
    # the flags are the in-memory detector's on those probabilities
    res = detect(y, P_local, method="combined")
    np.testing.assert_array_equal(a.column("is_label_issue").to_numpy(), res.is_label_issue)
    assert a.column("id").to_pylist() == ids.tolist()
    assert local["flagged"] == int(res.is_label_issue.sum()) > 0
    assert os.path.exists(tmp_path / "dask" / SUCCESS)
    assert not os.path.exists(tmp_path / "dask" / "_work")


def test_default_model_on_dask_equals_local(tmp_path, client):
    write_dataset(tmp_path / "data", n=1200, bounds=(0, 500, 1200))
    settings = OofSettings("gbm,logreg", 3, 0, 500)  # position ids (no id column)
    _, P_local = run_oof(tmp_path, "local", LocalEngine(), settings)
    _, P_dask = run_oof(tmp_path, "dask", DaskEngine(client), settings)
    np.testing.assert_array_equal(P_dask, P_local)
    np.testing.assert_allclose(P_local.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("where", ["local", "dask"])
def test_a_failed_partition_is_resumed_without_redoing_finished_ones(tmp_path, monkeypatch, where,
                                                                     request):
    engine = (LocalEngine() if where == "local"
              else DaskEngine(request.getfixturevalue("client")))
    write_dataset(tmp_path / "data")
    from cleanpipe import partitioned_oof

    real = partitioned_oof._predict_task
    log, fail = tmp_path / "calls.txt", tmp_path / "fail"  # files: a Dask task runs a copy

    def flaky(out, key, src, models, n_classes):
        with open(log, "a") as fh:
            fh.write(os.path.basename(src.part.path) + "\n")
        if src.part.path.endswith("part-003.parquet") and fail.exists():
            raise OSError("worker lost")
        return real(out, key, src, models, n_classes)

    def calls():
        return log.read_text().split() if log.exists() else []

    fail.touch()
    monkeypatch.setattr(partitioned_oof, "_predict_task", flaky)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="worker lost"):
        flag_partitions(str(tmp_path / "data"), str(out), label="y", oof=SETTINGS, engine=engine)
    assert len(calls()) == 5 and not (out / SUCCESS).exists()
    samples = sorted(p.name for p in out.glob("_work/oof-*/sample/*"))
    assert len(samples) == 5
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("_work/oof-*/*/*")}
    fail.unlink()
    log.unlink()
    summary = flag_partitions(str(tmp_path / "data"), str(out), label="y", oof=SETTINGS,
                              engine=engine)
    assert calls() == ["part-003.parquet"]  # only the partition that had not finished
    assert summary["oof"]["predicted"] == 1 and summary["oof"]["reused"] == 4
    for p, t in mtimes.items():
        if p.exists():
            assert p.stat().st_mtime_ns == t  # nothing finished was rewritten
    fresh = flag_partitions(str(tmp_path / "data"), str(tmp_path / "fresh"), label="y", oof=SETTINGS)
    a, b = read_flags(out), read_flags(tmp_path / "fresh")
    assert a.column("label_score").equals(b.column("label_score"))
    assert summary["flagged"] == fresh["flagged"]
    json.loads((out / MANIFEST).read_text())


def cli_flag(data, out, addr, *extra):
    return CliRunner().invoke(cli, ["flag", str(data), "--engine", "dask", "--scheduler", addr,
                                    "--label", "y", "--id", "id", "--model", "logreg",
                                    "--folds", "3", "--seed", "5", "--out", str(out), "--json",
                                    *extra])


def test_cli_without_pred_probs_runs_the_stage_on_the_cluster(tmp_path, cluster, monkeypatch):
    # cli.flag first: resolving it imports the module, which would bind a patched settings value
    # for good (monkeypatch would then "restore" 900)
    monkeypatch.setattr("cleanpipe.cli.flag.SCALE_SAMPLE_ROWS", 900)
    monkeypatch.setattr("cleanpipe.settings.SCALE_SAMPLE_ROWS", 900)
    write_dataset(tmp_path / "data")
    r = cli_flag(tmp_path / "data", tmp_path / "flags", cluster.scheduler_address)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["oof"]["features"] == FEATURES and summary["oof"]["predicted"] == 5
    local = flag_partitions(str(tmp_path / "data"), str(tmp_path / "local"), label="y", oof=SETTINGS)
    assert summary["flagged"] == local["flagged"]
    assert read_flags(tmp_path / "flags").column("label_score").equals(
        read_flags(tmp_path / "local").column("label_score"))


def _rewrite(path, fn):
    pq.write_table(fn(pq.read_table(path)), path)


def _null_ids(t):
    ids = pa.array([None if i == 1 else v for i, v in enumerate(t.column("id").to_pylist())],
                   type=pa.int64())
    return t.set_column(t.schema.get_field_index("id"), "id", ids)


@pytest.mark.parametrize("case, fix, message", [
    ("missing", lambda t: t.drop_columns(["x2"]),
     "feature column 'x2' not found in DATA partition '{p}'"),
    ("label_type", lambda t: t.set_column(t.schema.get_field_index("y"), "y",
                                          pa.array(np.arange(t.num_rows))),
     "label column 'y' has type string in DATA partition"),
    ("null_id", _null_ids, "id column 'id' has 1 null value(s) in DATA partition '{p}'"),
    ("text_in_one_partition", lambda t: t.set_column(1, "x0", pa.array(["a"] * t.num_rows)),
     "feature column 'x0' has type string (text or categories) in DATA partition '{p}' but "
     "double in '{first}'; give every partition the same column types, or --exclude x0"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, cluster, case, fix, message):
    write_dataset(tmp_path / "data")
    bad = tmp_path / "data" / "part-003.parquet"
    _rewrite(bad, fix)
    r = cli_flag(tmp_path / "data", tmp_path / "flags", cluster.scheduler_address)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.output
    assert message.format(p=bad, first=tmp_path / "data" / "part-000.parquet") in err, err
    with pytest.raises(InputError):
        flag_partitions(str(tmp_path / "data"), str(tmp_path / "local"), label="y", oof=SETTINGS)


def test_unknown_model_is_refused_before_any_partition_is_read(tmp_path):
    write_dataset(tmp_path / "data")
    with pytest.raises(InputError, match="--model 'nope' is not known"):
        flag_partitions(str(tmp_path / "data"), str(tmp_path / "out"), label="y",
                        oof=OofSettings("nope", 3, 0, 100))


def test_a_single_file_keeps_the_in_memory_path(tmp_path, cluster):
    write_dataset(tmp_path / "data", n=300, bounds=(0, 300))
    out = tmp_path / "flags.parquet"
    r = CliRunner().invoke(cli, ["flag", str(tmp_path / "data" / "part-000.parquet"), "--engine",
                                 "dask", "--scheduler", cluster.scheduler_address, "--label", "y",
                                 "--id", "id", "--model", "logreg", "--folds", "3", "--out",
                                 str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).num_rows == 300


class _Marker:
    """Unpickling this creates a file: proof that a pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_planted_as_a_sample_partial_is_recomputed_never_run(tmp_path):
    from pyarrow import fs as pafs

    from cleanpipe.partitioned_oof import _load
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.npz"
    np.savez(planted, X=np.array([_Marker(str(marker))], dtype=object), y=np.zeros(1),
             folds=np.zeros(1), hashes=np.zeros(1))
    assert _load(pafs.LocalFileSystem(), str(planted)) is None
    assert not marker.exists()


@pytest.mark.parametrize("where", ["local", "dask"])
def test_too_few_labelled_rows_for_the_folds_is_refused_up_front(tmp_path, where, request):
    """The check of hashed_folds.check_fold_counts on the count pass, before any sample or fit
    (it used to surface at the fold fit as "fold k's training sample is empty")."""
    engine = LocalEngine() if where == "local" else DaskEngine(request.getfixturevalue("client"))
    write_dataset(tmp_path / "data", n=9, bounds=(0, 4, 9))
    with pytest.raises(InputError, match=r"^9 labelled rows cannot fill 5 folds \(rows per fold: "
                                         r"\[\d+, \d+, \d+, \d+, \d+\]\); pass fewer folds or more rows$"):
        flag_partitions(str(tmp_path / "data"), str(tmp_path / "out"), label="y", engine=engine,
                        oof=OofSettings("logreg", 5, 0, 100, ids=("id",)))
    assert not list((tmp_path / "out").glob("_work/*/sample/*"))  # refused before the sample


@pytest.mark.parametrize("where", ["local", "dask"])
def test_a_null_id_is_one_line_naming_the_column(tmp_path, where, request):
    engine = LocalEngine() if where == "local" else DaskEngine(request.getfixturevalue("client"))
    write_dataset(tmp_path / "data")
    bad = tmp_path / "data" / "part-004.parquet"
    _rewrite(bad, _null_ids)
    with pytest.raises(InputError) as exc:
        flag_partitions(str(tmp_path / "data"), str(tmp_path / "out"), label="y", engine=engine,
                        oof=SETTINGS)
    assert str(exc.value).startswith(f"id column 'id' has 1 null value(s) in DATA partition '{bad}'")
    assert "fill the nulls" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("extra, message", [
    (("--n-jobs", "4"), "--n-jobs 4 does not apply when the fold models are fitted partition by "
                        "partition on Dask"),
    (("--n-jobs", "-1"), "--n-jobs -1 does not apply"),
    (("--device", "cuda"), "--device cuda is not available when the fold models are fitted "
                           "partition by partition on Dask: the fold models fit on the workers' CPUs"),
])
def test_one_machine_fit_options_are_refused_not_ignored(tmp_path, extra, message):
    """Refused before the cluster is reached (the scheduler address is never dialled)."""
    write_dataset(tmp_path / "data", n=60, bounds=(0, 30, 60))
    r = cli_flag(tmp_path / "data", tmp_path / "flags", "tcp://127.0.0.1:9", *extra)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "flags").exists()


def test_the_default_and_cpu_device_pass(tmp_path):
    from cleanpipe.partitioned_oof import check_fit_options
    check_fit_options(1, "auto")
    check_fit_options(1, "cpu")


def _with_colour(root, seed=1):
    """Add a text feature to every partition: informative, with nulls, a tail of ~480 values seen
    once (beyond MAX_CATEGORIES: ties by value, then "other"), and a different mix of values in
    each partition (so per-partition codes would differ)."""
    rng = np.random.default_rng(seed)
    files = sorted(os.listdir(root))
    for i, f in enumerate(files):
        t = pq.read_table(os.path.join(root, f))
        y = np.searchsorted(["ant", "bee", "cat"], t.column("y").to_numpy(zero_copy_only=False))
        common = np.array(["red", "green", "blue", "grey"])[(y + (rng.random(t.num_rows) < 0.3)) % 4]
        rare = np.array([f"rare{i}-{j}" for j in range(t.num_rows)])
        vals = np.where(rng.random(t.num_rows) < 0.2, rare, common).astype(object)
        vals[rng.random(t.num_rows) < 0.05] = None
        pq.write_table(t.append_column("colour", pa.array(vals.tolist(), pa.string())),
                       os.path.join(root, f))
    return pa.concat_tables([pq.read_table(os.path.join(root, f)) for f in files])


@pytest.mark.parametrize("model", ["logreg", "hgb"])
def test_a_text_feature_gets_the_one_process_codes_on_local_and_dask(tmp_path, client, model):
    from cleanpipe.features import table_to_features
    write_dataset(tmp_path / "data")
    whole = _with_colour(tmp_path / "data")
    settings = OofSettings(model, 3, 5, 900, ids=("id",))
    local, P_local = run_oof(tmp_path, "local", LocalEngine(), settings)
    assert local["oof"]["features"] == [*FEATURES, "colour"]
    assert local["oof"]["categorical"] == ["colour"]
    feats = table_to_features(whole, [*FEATURES, "colour"])
    assert feats.categorical.tolist() == [False] * 4 + [True]
    assert np.nanmax(feats.X[:, 4]) == MAX_CATEGORIES  # the "other" code is used
    y = np.searchsorted(["ant", "bee", "cat"], whole.column("y").to_numpy(zero_copy_only=False))
    h = hf.id_hashes(whole.column("id"), seed=5)
    rate = hf.training_rate(len(y), 3, 900)
    s = hf.sample_partial(feats.X, y, h, n_folds=3, rate=rate)
    models = hf.fit_fold_models(s.X, s.y, s.folds, n_folds=3, n_classes=3, model=model, seed=5,
                                categorical=feats.categorical)
    want = hf.predict_out_of_fold(models, feats.X, hf.hashed_folds(h, 3), 3)
    np.testing.assert_array_equal(P_local, want.astype(np.float32))
    if model == "logreg":  # the cluster too (a task there runs the same code on a copy)
        _, P_dask = run_oof(tmp_path, "dask", DaskEngine(client), settings)
        np.testing.assert_array_equal(P_dask, P_local)


def test_a_text_feature_on_dask_equals_local_with_the_real_limit(tmp_path, client):
    write_dataset(tmp_path / "data")
    _with_colour(tmp_path / "data")
    settings = OofSettings("hgb", 3, 5, 900, ids=("id",))
    _, P_local = run_oof(tmp_path, "local", LocalEngine(), settings)
    _, P_dask = run_oof(tmp_path, "dask", DaskEngine(client), settings)
    np.testing.assert_array_equal(P_dask, P_local)


@pytest.mark.parametrize("first", ["part-000.parquet", "part-003.parquet"])
def test_a_text_feature_null_throughout_one_partition_is_text(tmp_path, client, first):
    """pyarrow writes a column null throughout a partition with type null: its kind comes from
    the other partitions (null promotes), so the flags equal those of the same dataset with the
    nulls typed as text, and no partition is refused for it (the first one included)."""
    write_dataset(tmp_path / "typed")
    _with_colour(tmp_path / "typed")
    (tmp_path / "nulls").mkdir()
    for f in sorted(os.listdir(tmp_path / "typed")):
        t = pq.read_table(tmp_path / "typed" / f)
        if f == first:
            t = t.set_column(t.schema.get_field_index("colour"), "colour", pa.nulls(t.num_rows))
            typed = t.set_column(t.schema.get_field_index("colour"), "colour",
                                 pa.nulls(t.num_rows, pa.string()))
            pq.write_table(typed, tmp_path / "typed" / f)
        pq.write_table(t, tmp_path / "nulls" / f)
    assert pq.read_schema(tmp_path / "nulls" / first).field("colour").type == pa.null()
    settings = OofSettings("logreg", 3, 5, 900, ids=("id",))
    want = flag_partitions(str(tmp_path / "typed"), str(tmp_path / "want"), label="y",
                           oof=settings)
    got = flag_partitions(str(tmp_path / "nulls"), str(tmp_path / "got"), label="y",
                          oof=settings, engine=DaskEngine(client))
    assert got["oof"]["categorical"] == want["oof"]["categorical"] == ["colour"]
    for f in sorted(os.listdir(tmp_path / "typed")):
        cols = ["label_score", "is_label_issue"]
        assert pq.read_table(tmp_path / "got" / f, columns=cols).equals(
            pq.read_table(tmp_path / "want" / f, columns=cols))
