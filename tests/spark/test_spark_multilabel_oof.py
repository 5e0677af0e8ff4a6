"""Multi-label out-of-fold on Spark (issue 21): ``cleanpipe.spark.flag`` on a tag label without
probabilities fits the tag probabilities from hashed folds, with the fold models of the
partitioned path, and flags what ``flag_partitions`` flags on the same rows written as Parquet."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpipe.errors import InputError
from cleanpipe.flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS

pytestmark = pytest.mark.spark

TAGS = np.array(["cloud", "dog", "sea", "tree"])
FEATURES = ["x0", "x1", "x2", "x3"]


def _tag_table(n: int = 600, seed: int = 0) -> pa.Table:
    """Learnable tags with planted flips, a few rows without tags, 0/1 columns of the same tags."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    W = rng.normal(size=(len(FEATURES), len(TAGS)))
    true = (X @ W + rng.normal(0, 0.4, (n, len(TAGS)))) > 0.7
    given = true ^ (rng.random(true.shape) < 0.06)
    unl = rng.random(n) < 0.03
    cols = {"row_id": np.arange(n) * 7 + 3, **{c: X[:, j] for j, c in enumerate(FEATURES)},
            "tags": pa.array([None if unl[i] else TAGS[given[i]].tolist() for i in range(n)],
                             type=pa.list_(pa.string()))}
    cols.update({f"is_{t}": pa.array(given[:, j].astype(np.int64)) for j, t in enumerate(TAGS)})
    return pa.table(cols)


def _collect(df) -> pa.Table:
    return pa.Table.from_pylist([r.asDict() for r in df.collect()])


def _partitioned(tmp_path, table: pa.Table, *, label: str, model: str, folds: int, seed: int,
                 sample_rows: int) -> pa.Table:
    """flag_partitions (LocalEngine) on ``table`` written as three Parquet files, by row id."""
    from cleanpipe.partitioned_oof import OofSettings
    from cleanpipe.partitions import LocalEngine, flag_partitions
    data, out = tmp_path / "data", tmp_path / "flags"
    data.mkdir()
    for i, (a, b) in enumerate([(0, 250), (250, 251), (251, table.num_rows)]):
        pq.write_table(table.slice(a, b - a), data / f"part-{i}.parquet")
    flag_partitions(str(data), str(out), label=label, engine=LocalEngine(),
                    oof=OofSettings(model, folds, seed, sample_rows, ids=("row_id",),
                                    features=tuple(FEATURES)))
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    flags = pa.concat_tables([pq.read_table(out / f) for f in files])
    return flags.take(pa.compute.sort_indices(flags["row_id"]))


@pytest.mark.parametrize("label", ["tags", ",".join(f"is_{t}" for t in TAGS)])
def test_spark_tag_oof_flags_equal_the_partitioned_flags(spark, tmp_path, label):
    from cleanpipe import spark as cs
    table = _tag_table()
    settings = dict(model="logreg", folds=3, seed=5, sample_rows=300)
    df = spark.createDataFrame(table).repartition(4)
    result = cs.flag_with_estimates(df, label=label, features=FEATURES, id_column="row_id",
                                    **settings)
    got = _collect(result.frame)
    got = got.take(pa.compute.sort_indices(got["row_id"]))
    assert result.frame.columns == df.columns + list(FLAG_COLUMNS + SUSPECT_COLUMNS)
    assert result.oof["multi_label"] and 0 < result.oof["sample_rows"] < table.num_rows
    want = _partitioned(tmp_path, table, label=label, **settings)
    assert got["row_id"].to_pylist() == want["row_id"].to_pylist()
    for col in FLAG_COLUMNS + SUSPECT_COLUMNS:
        a, b = got[col].to_pylist(), want[col].to_pylist()
        assert a == b, (col, [i for i, (u, v) in enumerate(zip(a, b)) if u != v][:5])
    assert 5 < sum(got["is_label_issue"].to_pylist()) < 300
    result.unpersist()


def test_tag_probabilities_equal_the_partitioned_fold_models(spark):
    """The probability column itself: the shared functions run in this process on all rows."""
    from cleanpipe import hashed_folds as hf
    from cleanpipe import spark as cs
    from cleanpipe import spark_oof
    from cleanpipe.hashed_folds_multilabel import fit_tag_fold_model, predict_tags_out_of_fold
    from cleanpipe.target import encode_tags, resolve_target
    table = _tag_table(n=300, seed=1)
    df = spark.createDataFrame(table).repartition(3)
    target = resolve_target(table.schema, "tags", where="the DataFrame")
    classes = cs._tags(df, target)
    assert classes.to_pylist() == TAGS.tolist()
    frame, info = spark_oof.out_of_fold(df, label="tags", classes=classes, features=tuple(FEATURES),
                                        id_column="row_id", model="logreg", folds=3, seed=2,
                                        sample_rows=150, target=target)
    got = _collect(frame)
    rows = table.take(pa.array((got["row_id"].to_numpy() - 3) // 7))
    X = np.column_stack([rows[c].to_numpy() for c in FEATURES])
    Y, labelled, _ = encode_tags(target, rows.select(["tags"]), classes)
    labelled = np.asarray(labelled, bool)
    h = hf.id_hashes(rows["row_id"].to_numpy(), seed=2)
    sample = hf.sample_partial(X, Y, h, n_folds=3, rate=hf.training_rate(int(labelled.sum()), 3, 150),
                               labelled=labelled)
    models = [fit_tag_fold_model(sample.X, sample.y, sample.folds, f, model="logreg", seed=2,
                                 untagged_rows=not labelled.all()) for f in range(3)]
    want = predict_tags_out_of_fold(models, X, Y, labelled, hf.hashed_folds(h, 3), len(TAGS))
    np.testing.assert_array_equal(np.stack(got[spark_oof.OOF_COLUMN].to_numpy(zero_copy_only=False)),
                                  want)


def test_relabel_of_spark_tag_flags_is_still_refused(spark):
    from cleanpipe import spark as cs
    df = spark.createDataFrame(_tag_table(n=120)).repartition(2)
    flags = cs.flag(df, label="tags", features=FEATURES, id_column="row_id", model="logreg",
                    folds=3, sample_rows=100)
    with pytest.raises(InputError) as exc:
        cs.clean(flags, mode="relabel", label="tags")
    assert "\n" not in str(exc.value)
