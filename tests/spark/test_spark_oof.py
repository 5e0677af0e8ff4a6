"""Out-of-fold on Spark (cleanpipe.spark_oof): the probabilities equal an in-process run of the
hashed-fold functions on the same rows, bit for bit, and the flags equal the in-memory flags on
those probabilities; bad settings give one-line errors before any job."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe import hashed_folds as hf
from cleanpipe.errors import InputError
from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS

pytestmark = pytest.mark.spark

FEATURES = ["x0", "x1", "x2", "n"]


def _table(n: int = 300, k: int = 3, seed: int = 0) -> pa.Table:
    """Separable classes in x0..x2, an integer feature with nulls, 12% of the labels flipped."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(0, 1, (n, 3))
    X[np.arange(n), y % 3] += 2.0
    noisy = y.copy()
    flip = rng.random(n) < 0.12
    noisy[flip] = (y[flip] + 1) % k
    ints = pa.array([None if i % 23 == 0 else int(v) for i, v in enumerate(rng.integers(0, 5, n))],
                    type=pa.int64())
    return pa.table({"row_id": np.arange(n) * 7 + 3, "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2],
                     "n": ints, "label": noisy, "note": [f"r{i}" for i in range(n)]})


def _oracle(table: pa.Table, ids: np.ndarray, *, folds: int, seed: int, sample_rows: int,
            model: str) -> np.ndarray:
    """The hashed-fold functions run in this process on the whole table at once."""
    X = np.column_stack([np.asarray(table[c].cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
                         for c in FEATURES])
    codes = np.asarray(table["label"], dtype=np.int64)
    hashes = hf.id_hashes(ids, seed=seed)
    rate = hf.training_rate(len(codes), folds, sample_rows)
    sample = hf.sample_partial(X, codes, hashes, n_folds=folds, rate=rate)
    assert 0 < len(sample) < len(codes)  # the sample is a real subset here
    models = hf.fit_fold_models(sample.X, sample.y, sample.folds, n_folds=folds, n_classes=3,
                                model=model, seed=seed)
    return hf.predict_out_of_fold(models, X, hf.hashed_folds(hashes, folds), 3)


def _collect(df) -> pa.Table:
    return pa.Table.from_pylist([r.asDict() for r in df.collect()])


@pytest.mark.parametrize("by", ["id", "position"])
def test_probabilities_equal_the_in_process_hashed_folds(spark, by):
    from pyspark.sql import functions as F

    from cleanpipe import spark_oof
    table = _table()
    df = spark.createDataFrame(table).repartition(3).persist()
    classes = spark_oof.distinct_labels(df, "label", pa.int64())
    frame, info = spark_oof.out_of_fold(
        df, label="label", classes=classes, features=tuple(FEATURES),
        id_column="row_id" if by == "id" else None, model="logreg", folds=3, seed=4, sample_rows=120)
    got = _collect(frame.withColumn("part", F.spark_partition_id()))
    rows = table.take(pa.array((got["row_id"].to_numpy() - 3) // 7))
    if by == "id":
        ids = rows["row_id"].to_numpy()
    else:  # each row's position in its partition, partitions in order
        part = got["part"].to_numpy()
        starts = np.searchsorted(part, part, side="left")
        ids = np.concatenate([hf.position_ids(p, 0, int((part == p).sum())) for p in np.unique(part)])
        assert np.array_equal(ids & ((1 << 40) - 1), np.arange(len(part)) - starts)
    want = _oracle(rows, ids, folds=3, seed=4, sample_rows=120, model="logreg")
    np.testing.assert_array_equal(np.stack(got[spark_oof.OOF_COLUMN].to_numpy(zero_copy_only=False)), want)
    assert info["sample_rows"] < 200 and sum(info["fold_rows"]) == 300
    df.unpersist()


def test_flags_equal_the_in_memory_flags_on_the_oof_probabilities(spark):
    from cleanpipe import spark as cs
    table = _table(n=360, seed=1)
    df = spark.createDataFrame(table).repartition(4)
    flags = cs.flag(df, label="label", id_column="row_id", model="logreg", folds=3, seed=0,
                    sample_rows=150)
    got = _collect(flags)
    assert flags.columns == df.columns + list(FLAG_COLUMNS)  # no probability column left behind
    rows = table.take(pa.array((got["row_id"].to_numpy() - 3) // 7))
    probs = _oracle(rows, rows["row_id"].to_numpy(), folds=3, seed=0, sample_rows=150, model="logreg")
    want = flag_table(rows, label="label", pred_probs=probs).table
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
    assert 10 < got["is_label_issue"].to_numpy().sum() < 120


def test_oof_settings_give_one_line_errors_before_any_job(spark):
    from cleanpipe import spark as cs
    df = spark.createDataFrame(_table(n=40))
    cases = [
        (dict(label="target"), "label column 'target' not found in the DataFrame"),
        (dict(features=["x0", "nope"]), "feature column 'nope' not found in the DataFrame"),
        (dict(id_column="id"), "id column 'id' not found in the DataFrame"),
        (dict(folds=1), "folds 1 is out of range"),
        (dict(sample_rows=0), "sample_rows 0 is out of range"),
        (dict(model="forest"), "forest"),
    ]
    for kwargs, message in cases:
        kwargs = {"label": "label", **kwargs}
        with pytest.raises(InputError) as exc:
            cs.flag(df, **kwargs)
        assert message in str(exc.value) and "\n" not in str(exc.value), (kwargs, str(exc.value))
    blob = spark.createDataFrame(_table(n=40).append_column("blob", pa.array([b"x"] * 40)))
    with pytest.raises(InputError, match="feature column 'blob' has type binary; out-of-fold on "
                                         "Spark fits numbers and text"):
        cs.flag(blob, label="label", features=["x0", "blob"])
    # A float label is refused with the in-memory words.
    floats = _table(n=40).set_column(5, "label", pa.array(np.linspace(0, 1, 40)))
    with pytest.raises(InputError, match="label"):
        cs.flag(spark.createDataFrame(floats), label="label")


def test_too_few_labelled_rows_and_null_ids_give_the_dask_paths_words(spark):
    """The same hashed_folds checks as on Dask (tests/test_partitioned_oof.py)."""
    from cleanpipe import spark as cs
    small = spark.createDataFrame(_table(n=9)).repartition(2)
    with pytest.raises(InputError, match=r"^9 labelled rows cannot fill 5 folds \(rows per fold: "
                                         r"\[\d+, \d+, \d+, \d+, \d+\]\); pass fewer folds or more rows$"):
        cs.flag(small, label="label", id_column="row_id", model="logreg", folds=5)
    table = _table(n=60)
    table = table.set_column(0, "row_id", pa.array([None if i in (3, 4) else i for i in range(60)],
                                                   type=pa.int64()))
    with pytest.raises(InputError) as exc:
        cs.flag(spark.createDataFrame(table).coalesce(1), label="label", id_column="row_id",
                model="logreg", folds=3)
    assert str(exc.value).startswith("id column 'row_id' has 2 null value(s) in partition 0 of "
                                     "the DataFrame; ")
    assert "\n" not in str(exc.value)


def _with_colour(table: pa.Table, seed: int = 3) -> pa.Table:
    """A text feature: informative, with nulls and a tail of values seen once (beyond
    MAX_CATEGORIES when the table is long enough: ties by value, then "other")."""
    rng = np.random.default_rng(seed)
    y = np.asarray(table["label"], dtype=np.int64)
    common = np.array(["red", "green", "blue", "grey"])[(y + (rng.random(len(y)) < 0.3)) % 4]
    vals = np.where(rng.random(len(y)) < 0.7, np.array([f"t{i}" for i in range(len(y))]),
                    common).astype(object)
    vals[rng.random(len(y)) < 0.05] = None
    return table.append_column("colour", pa.array(vals.tolist(), pa.string()))


def test_a_text_feature_gets_the_one_machine_codes(spark):
    from cleanpipe import spark_oof
    from cleanpipe.features import _categorical
    from cleanpipe.settings import MAX_CATEGORIES
    table = _with_colour(_table(n=400, seed=2))
    df = spark.createDataFrame(table).repartition(3).persist()
    classes = spark_oof.distinct_labels(df, "label", pa.int64())
    features = (*FEATURES, "colour")
    frame, _ = spark_oof.out_of_fold(df, label="label", classes=classes, features=features,
                                     id_column="row_id", model="hgb", folds=3, seed=4,
                                     sample_rows=200)
    got = _collect(frame)
    rows = table.take(pa.array((got["row_id"].to_numpy() - 3) // 7))
    codes = _categorical(rows["colour"])  # the whole column, coded as on one machine
    assert np.nanmax(codes) == MAX_CATEGORIES  # the "other" code is used
    X = np.column_stack([np.asarray(rows[c].cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
                         for c in FEATURES] + [codes.astype(np.float64)])
    y = np.asarray(rows["label"], dtype=np.int64)
    h = hf.id_hashes(rows["row_id"].to_numpy(), seed=4)
    sample = hf.sample_partial(X, y, h, n_folds=3, rate=hf.training_rate(len(y), 3, 200))
    models = hf.fit_fold_models(sample.X, sample.y, sample.folds, n_folds=3, n_classes=3,
                                model="hgb", seed=4, categorical=[False] * 4 + [True])
    want = hf.predict_out_of_fold(models, X, hf.hashed_folds(h, 3), 3)
    np.testing.assert_array_equal(np.stack(got[spark_oof.OOF_COLUMN].to_numpy(zero_copy_only=False)),
                                  want)
    df.unpersist()


def test_the_fold_models_fit_in_one_spark_job_of_one_task_per_fold(spark):
    """The fits are a Spark job of ``folds`` tasks, not work on the driver: with 2 partitions and
    5 folds, only the fit job has a stage of 5 tasks (the count and sample jobs have 2)."""
    from cleanpipe import spark_oof
    sc = spark.sparkContext
    df = spark.createDataFrame(_table()).repartition(2).persist()
    assert df.rdd.getNumPartitions() == 2
    classes = spark_oof.distinct_labels(df, "label", pa.int64())
    sc.setJobGroup("cleanpipe-test-oof-fit", "out_of_fold's jobs")
    try:
        frame, _ = spark_oof.out_of_fold(df, label="label", classes=classes, features=tuple(FEATURES),
                                         id_column="row_id", model="logreg", folds=5, seed=1,
                                         sample_rows=120)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup("cleanpipe-test-oof-fit")]
    stages = [[tracker.getStageInfo(s) for s in job.stageIds] for job in jobs]
    tasks = sorted(sorted(s.numTasks for s in job if s is not None) for job in stages)
    assert [t for t in tasks if 5 in t] == [[5]], tasks  # one job: the fits, one task per fold
    assert len(jobs) == 3, tasks  # counts, sample, fit; the prediction is lazy
    assert frame.count() == 300
    df.unpersist()


def test_a_fold_that_cannot_be_fitted_gives_the_drivers_one_line_error(spark):
    """A fit task's InputError reaches the driver as the same one-line InputError that fitting
    the folds in this process raises (here fold 1's training rows are empty: every sample row is
    in fold 1)."""
    from cleanpipe import spark_oof
    rng = np.random.default_rng(0)
    sample = hf.TrainingSample(rng.normal(size=(40, 2)).astype(np.float32),
                               rng.integers(0, 2, 40).astype(np.int64), np.full(40, 1, np.int16),
                               np.arange(40, dtype=np.uint64))
    with pytest.raises(InputError) as here:
        hf.fit_fold_models(sample.X, sample.y, sample.folds, n_folds=3, n_classes=2,
                           model="logreg", seed=0)
    plan = spark_oof.OofPlan("label", pa.array([0, 1]), ("a", "b"), None, 3, 0)
    with pytest.raises(InputError) as there:
        spark_oof.fit_in_tasks(spark.sparkContext, sample, plan, model="logreg", seed=0,
                               untagged_rows=False)
    assert str(there.value) == str(here.value)
    assert str(there.value).startswith("fold 1's training sample is empty") and "\n" not in str(there.value)
