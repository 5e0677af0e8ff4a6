"""cleanpipe.spark on a local Spark session: the same flags and cleaned rows as on one machine,
the same one-line errors; given probabilities, so no model is fitted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe.clean import clean_table
from cleanpipe.errors import InputError
from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS

pytestmark = pytest.mark.spark


def _table(n: int = 240, k: int = 3, seed: int = 0, strings: bool = False) -> pa.Table:
    """Rows with planted noise and model-like probabilities (a few ties: rounded to 2 places)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.5
    p = np.exp(logits)
    p = np.round(p / p.sum(1, keepdims=True), 2)
    p[:, -1] = 1 - p[:, :-1].sum(1)
    p = np.clip(p, 0, 1)
    p /= p.sum(1, keepdims=True)
    noisy = y.copy()
    flip = rng.random(n) < 0.15
    noisy[flip] = (y[flip] + 1) % k
    cols = {"row_id": np.arange(n), "x": rng.normal(size=n)}
    cols["label"] = np.array(["ant", "bee", "cow", "doe"][:k])[noisy] if strings else noisy
    for j in range(k):
        cols[f"p{j}"] = p[:, j]
    cols["probs"] = pa.array(list(p), type=pa.list_(pa.float64()))
    return pa.table(cols)


def _collect(df) -> pa.Table:
    return pa.Table.from_pylist([r.asDict() for r in df.collect()])


def _in_order(got: pa.Table, table: pa.Table) -> pa.Table:
    """``table``'s rows in the order Spark holds them (partition by partition): the order the
    passes saw, which the position tie-breaks of some methods depend on."""
    return table.take(pa.array(got["row_id"].to_pylist()))


def _assert_same_flags(got: pa.Table, want: pa.Table) -> None:
    assert got.num_rows == want.num_rows
    assert got["row_id"].to_pylist() == want["row_id"].to_pylist()
    for col in FLAG_COLUMNS:
        a, b = got[col].to_pylist(), want[col].to_pylist()
        assert a == b, (col, [i for i, (u, v) in enumerate(zip(a, b)) if u != v][:5])


# "both" breaks ties by row position (per cell and per class); the core's own tests cover every
# method over any partitioning, these check the Spark plumbing.
@pytest.mark.parametrize("method", ["combined", "both"])
def test_flags_equal_the_in_memory_flags(spark, method):
    from cleanpipe import spark as cs
    table = _table()
    df = spark.createDataFrame(table.drop_columns(["probs"])).repartition(4)
    flags = cs.flag(df, label="label", pred_probs=["p0", "p1", "p2"], method=method)
    got = _collect(flags)
    rows = _in_order(got, table)
    want = flag_table(rows.drop_columns(["probs"]), label="label", method=method,
                      pred_probs=np.column_stack([rows[f"p{j}"] for j in range(3)])).table
    _assert_same_flags(got, want)
    assert flags.columns == df.columns + list(FLAG_COLUMNS)
    assert got["is_label_issue"].to_numpy().sum() > 5


def test_string_labels_array_probabilities_and_an_empty_partition(spark):
    from cleanpipe import spark as cs
    table = _table(n=150, k=4, seed=3, strings=True)
    # Partitions by range of row_id, plus rows filtered away: one partition ends up empty.
    df = spark.createDataFrame(table).repartitionByRange(5, "row_id").where("row_id < 90 OR row_id >= 120")
    got = _collect(cs.flag(df, label="label", pred_probs="probs"))
    want = flag_table(_in_order(got, table), label="label", pred_probs="probs").table
    _assert_same_flags(got, want)


def test_null_labels_are_kept_and_not_flagged(spark):
    from cleanpipe import spark as cs
    table = _table(n=120, seed=5)
    label = pa.array([None if i % 17 == 0 else v for i, v in enumerate(table["label"].to_pylist())],
                     type=pa.int64())
    table = table.set_column(table.schema.get_field_index("label"), "label", label)
    df = spark.createDataFrame(table).repartition(3)
    got = _collect(cs.flag(df, label="label", pred_probs="probs"))
    want = flag_table(_in_order(got, table), label="label", pred_probs="probs").table
    _assert_same_flags(got, want)
    assert got["label_score"].null_count == 8


def test_bad_input_gives_the_in_memory_one_line_errors(spark):
    from cleanpipe import spark as cs
    table = _table(n=60)
    df = spark.createDataFrame(table).repartition(2)
    with pytest.raises(InputError, match="label column 'target' not found in the DataFrame"):
        cs.flag(df, label="target", pred_probs="probs")
    with pytest.raises(InputError, match="label column 'target' not found in DATA"):
        flag_table(table, label="target", pred_probs="probs")
    with pytest.raises(InputError, match="pred_probs column 'q1' not found"):
        cs.flag(df, label="label", pred_probs=["p0", "q1", "p2"])
    with pytest.raises(InputError, match="method 'best' is not known"):
        cs.flag(df, label="label", pred_probs="probs", method="best")
    # A label outside the classes in one partition: the in-memory check's words, from that task.
    bad = table.set_column(table.schema.get_field_index("label"), "label",
                           pa.array([7 if i == 41 else v for i, v in enumerate(table["label"].to_pylist())]))
    with pytest.raises(InputError) as remote:
        cs.flag(spark.createDataFrame(bad).repartition(3), label="label", pred_probs="probs")
    with pytest.raises(InputError) as local:
        from cleanpipe import find_label_issues
        find_label_issues(bad["label"].to_numpy(), np.stack(bad["probs"].to_numpy(zero_copy_only=False)))
    assert str(remote.value) == str(local.value) and "\n" not in str(remote.value)
    # Probabilities that do not sum to one.
    off = table.set_column(table.schema.get_field_index("p0"), "p0", pa.array(table["p0"].to_numpy() + 0.5))
    with pytest.raises(InputError, match="sum"):
        cs.flag(spark.createDataFrame(off).repartition(2), label="label", pred_probs=["p0", "p1", "p2"])
    # String labels with more classes than probability columns.
    strings = _table(n=60, k=4, strings=True)
    with pytest.raises(InputError, match="pred_probs has 3 columns but label 'label' has 4 classes"):
        cs.flag(spark.createDataFrame(strings), label="label", pred_probs=["p0", "p1", "p2"])
    # A float label is not a class.
    floats = table.set_column(table.schema.get_field_index("label"), "label", pa.array(table["x"]))
    with pytest.raises(InputError, match="label"):
        cs.flag(spark.createDataFrame(floats), label="label", pred_probs="probs")


@pytest.fixture(scope="module")
def flagged(spark):
    """A DataFrame of 3 partitions, its flags DataFrame, and those flags collected."""
    from cleanpipe import spark as cs
    df = spark.createDataFrame(_table(n=120, seed=9)).repartition(3)
    flags = cs.flag(df, label="label", pred_probs="probs").persist()
    return df, flags, _collect(flags)


@pytest.mark.parametrize("mode", ["drop", "weight", "relabel"])
def test_clean_equals_clean_table(flagged, mode):
    from cleanpipe import spark as cs
    df, flags, local = flagged
    cleaned = cs.clean(flags, mode=mode, label="label")
    got = _collect(cleaned)
    want = clean_table(local, mode=mode, label="label").table
    assert got.column_names == want.column_names
    # Every original column kept, in its place, with or without the flag columns.
    assert cleaned.columns[:len(df.columns)] == df.columns
    bare = cs.clean(flags, mode=mode, label="label", drop_flag_columns=True).columns
    assert bare[:len(df.columns)] == df.columns and not set(bare) & set(FLAG_COLUMNS)
    for col in want.column_names:
        a, b = got[col].to_pylist(), want[col].to_pylist()
        if col == "sample_weight":
            np.testing.assert_array_equal(np.float32(a), np.float32(b))
        else:
            assert a == b, col
    with pytest.raises(InputError, match="--mode 'erase' is not known"):
        cs.clean(flags, mode="erase")
    with pytest.raises(InputError, match="is_label_issue"):
        cs.clean(df, mode="drop")  # not a flags table
