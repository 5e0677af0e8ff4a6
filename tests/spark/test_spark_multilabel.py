"""cleanpipe.spark.flag on multi-label data with given probabilities: the one-machine flags (issue 21)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe.errors import InputError
from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS

pytestmark = pytest.mark.spark

TAGS = np.array(["cloud", "dog", "sea", "tree"])


def _tag_table(n: int = 400, seed: int = 0) -> pa.Table:
    """Rows with a list-of-tags label (some null), 0/1 tag columns and tag probabilities."""
    rng = np.random.default_rng(seed)
    k = len(TAGS)
    true = rng.random((n, k)) < 0.35
    p = np.round(np.clip(true * 0.55 + rng.normal(0.22, 0.2, (n, k)), 0.0, 1.0), 2)  # some ties
    given = true ^ (rng.random((n, k)) < 0.08)
    lists = [None if i % 37 == 5 else TAGS[given[i]].tolist() for i in range(n)]
    cols = {"row_id": np.arange(n), "tags": pa.array(lists, type=pa.list_(pa.string()))}
    cols.update({f"is_{t}": pa.array(given[:, j].astype(np.int64)) for j, t in enumerate(TAGS)})
    cols.update({f"p_{t}": p[:, j] for j, t in enumerate(TAGS)})
    cols["probs"] = pa.array(list(p), type=pa.list_(pa.float64()))
    return pa.table(cols)


def _collect(df) -> pa.Table:
    return pa.Table.from_pylist([r.asDict() for r in df.collect()])


def _assert_same_flags(got: pa.Table, want: pa.Table) -> None:
    assert got["row_id"].to_pylist() == want["row_id"].to_pylist()
    for col in FLAG_COLUMNS + SUSPECT_COLUMNS:
        a, b = got[col].to_pylist(), want[col].to_pylist()
        assert a == b, (col, [i for i, (u, v) in enumerate(zip(a, b)) if u != v][:5])


@pytest.mark.parametrize("method", ["posterior", "noise_rate"])
def test_a_list_label_gives_the_one_machine_flags(spark, method):
    from cleanpipe import spark as cs
    table = _tag_table()
    # partitions by range of row_id, rows filtered away: one partition ends up empty
    df = spark.createDataFrame(table).repartitionByRange(5, "row_id").where(
        "row_id < 200 OR row_id >= 290")
    result = cs.flag_with_estimates(df, label="tags", pred_probs="probs", method=method)
    got = _collect(result.frame)
    rows = table.take(pa.array(got["row_id"].to_pylist()))
    want = flag_table(rows, label="tags", pred_probs="probs", method=method)
    _assert_same_flags(got, want.table)
    assert result.frame.columns == df.columns + list(FLAG_COLUMNS + SUSPECT_COLUMNS)
    assert result.classes == TAGS.tolist()
    assert round(result.estimates.expected_issues) == want.summary["estimated_issues"]
    assert sum(got["is_label_issue"].to_pylist()) > 3
    result.unpersist()


def test_0_1_columns_and_probability_columns(spark):
    from cleanpipe import spark as cs
    table = _tag_table(n=200, seed=2)
    label = ",".join(f"is_{t}" for t in TAGS)
    probs = [f"p_{t}" for t in TAGS]
    df = spark.createDataFrame(table.drop_columns(["tags", "probs"])).repartition(3)
    got = _collect(cs.flag(df, label=label, pred_probs=probs))
    rows = table.take(pa.array(got["row_id"].to_pylist()))
    want = flag_table(rows, label=label,
                      pred_probs=np.column_stack([rows[c].to_numpy() for c in probs])).table
    _assert_same_flags(got, want)


def test_with_a_wrong_count_it_is_one_line(spark):
    """(Without probabilities the tags are fitted out of fold: test_spark_multilabel_oof.py.)"""
    from cleanpipe import spark as cs
    df = spark.createDataFrame(_tag_table(n=60))
    with pytest.raises(InputError, match="pred_probs has 3 columns but label column 'tags' has 4 tags"):
        cs.flag(df, label="tags", pred_probs=["p_cloud", "p_dog", "p_sea"])
    with pytest.raises(InputError, match="not available for multi-label"):
        cs.flag(df, label="tags", pred_probs="probs", method="combined")


def test_a_multi_label_pipeline_on_spark(spark, tmp_path):
    import json
    import os

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from cleanpipe.clean import clean_table
    from cleanpipe.cli import cli

    table = _tag_table(n=240, seed=4)
    (tmp_path / "data").mkdir()
    for i in range(3):
        pq.write_table(table.slice(80 * i, 80), tmp_path / "data" / f"part-{i}.parquet")
    body = ('stages = ["flag", "clean"]\n[source]\ntype = "parquet"\npath = "data"\n'
            '[columns]\nlabel = "tags"\n[oof]\nbackend = "spark"\n')
    pipe = tmp_path / "tags.toml"
    pipe.write_text('name = "tags"\n' + body + '[flag]\npred_probs = "probs"\n[clean]\nmode = "drop"\n')
    res = CliRunner().invoke(cli, ["run", str(pipe), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]

    def folder(*parts):
        path = os.path.join(run_dir, *parts)
        files = sorted(f for f in os.listdir(path) if f.endswith(".parquet"))
        return pa.concat_tables([pq.read_table(os.path.join(path, f)) for f in files])

    got = folder("flag", "flags")
    want = flag_table(table.take(pa.array(got["row_id"].to_pylist())), label="tags",
                      pred_probs="probs").table
    _assert_same_flags(got, want)
    cleaned = folder("clean", "cleaned")
    assert cleaned["row_id"].to_pylist() == clean_table(want, mode="drop", label="tags").table[
        "row_id"].to_pylist()

    # relabel (clean's default mode): refused before any job, in one line; without the
    # probabilities the tags are fitted (tests/spark/test_spark_pipeline_multilabel.py)
    pipe.write_text('name = "tags"\n' + body)
    res = CliRunner().invoke(cli, ["run", str(pipe), "--runs-dir", str(tmp_path / "runs2")])
    assert res.exit_code == 2 and "[clean] mode = \"relabel\" is not available" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
