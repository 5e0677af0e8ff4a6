"""What cleanpipe.spark.flag persists (issue 21): on disk, not in the heap; with fitted
probabilities the input rows and only the passes' two columns, released by
SparkFlags.unpersist; the flags equal the unpersisted run's and the in-memory ones."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS

pytestmark = pytest.mark.spark


def _table(n: int = 240, k: int = 3, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(0, 1, (n, 3))
    X[np.arange(n), y] += 2.0
    noisy = np.where(rng.random(n) < 0.12, (y + 1) % k, y)
    return pa.table({"row_id": np.arange(n), "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2],
                     "label": noisy})


def _flags(frame) -> pa.Table:
    return pa.Table.from_pylist([r.asDict() for r in frame.collect()]).sort_by("row_id")


def test_fitted_probabilities_persist_the_rows_and_the_passes_columns_on_disk(spark):
    from pyspark import StorageLevel

    from cleanpipe import spark as cs
    from cleanpipe.spark_oof import OOF_COLUMN
    df = spark.createDataFrame(_table()).repartition(3)  # a shuffle: no stable order of its own
    result = cs.flag_with_estimates(df, label="label", id_column="row_id", model="logreg", folds=3,
                                    sample_rows=100)
    got = _flags(result.frame)
    rows, passes = result.persisted
    assert rows.columns == df.columns
    assert passes.columns == ["label", OOF_COLUMN]  # not every column beside the probabilities
    for frame in result.persisted:
        assert frame.is_cached and frame.storageLevel == StorageLevel.DISK_ONLY
    result.unpersist()
    assert not any(frame.is_cached for frame in result.persisted)

    # The same flags without persisting, on rows whose order is the table's (no shuffle).
    plain = spark.createDataFrame(_table())
    again = cs.flag_with_estimates(plain, label="label", id_column="row_id", model="logreg",
                                   folds=3, sample_rows=100, persist=False)
    assert again.persisted == ()
    want = _flags(again.frame)
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
    assert 5 < np.asarray(got["is_label_issue"]).sum() < 100


def test_given_probabilities_persist_the_rows_only_and_a_cached_frame_is_left_alone(spark):
    from pyspark import StorageLevel

    from cleanpipe import spark as cs
    table = _table(n=200, seed=5)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), len(table))
    p[np.arange(len(table)), np.asarray(table["label"])] += 0.5
    p /= p.sum(1, keepdims=True)
    table = table.append_column("probs", pa.array(list(p), type=pa.list_(pa.float64())))
    df = spark.createDataFrame(table).repartition(2)
    result = cs.flag_with_estimates(df, label="label", pred_probs="probs")
    got = _flags(result.frame)
    (rows,) = result.persisted
    assert rows.columns == df.columns and rows.storageLevel == StorageLevel.DISK_ONLY
    result.unpersist()
    want = flag_table(table.take(pa.array(np.asarray(got["row_id"]))), label="label",
                      pred_probs="probs").table
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col

    mine = df.persist()  # the caller's cache: used as it is, not persisted again nor released
    kept = cs.flag_with_estimates(mine, label="label", pred_probs="probs")
    assert kept.persisted == ()
    kept.unpersist()
    assert mine.is_cached
    mine.unpersist()
