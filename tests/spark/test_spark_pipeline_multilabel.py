"""Multi-label pipelines on Spark without ``[flag] pred_probs`` (issue 21): the tag probabilities
are fitted out of fold (in the oof stage, or in the flag stage when there is none) with the fold
models of the partitioned path, and the flags equal ``flag_partitions``' (this process) on the
same Parquet files, default features (the tag columns never among them) and settings."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cleanpipe.flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS
from cleanpipe.settings import SCALE_SAMPLE_ROWS
from spark_folders import read_folder, write_parts

pytestmark = pytest.mark.spark

TAGS = np.array(["cloud", "dog", "sea", "tree"])
ZERO_ONE = [f"is_{t}" for t in TAGS]


def _run(*args):
    from cleanpipe.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def _tag_table(form: str, n: int = 300, seed: int = 0) -> pa.Table:
    """Learnable tags with planted flips and a few untagged rows, as one list column
    (``form="list"``) or 0/1 columns (``"columns"``; an untagged row has nulls)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    W = rng.normal(size=(3, len(TAGS)))
    given = ((X @ W + rng.normal(0, 0.4, (n, len(TAGS)))) > 0.7) ^ (rng.random((n, len(TAGS))) < 0.06)
    untagged = rng.random(n) < 0.03
    cols = {"row_id": np.arange(n) * 7 + 3, "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2]}
    if form == "list":
        cols["tags"] = pa.array([None if untagged[i] else TAGS[given[i]].tolist() for i in range(n)],
                                type=pa.list_(pa.string()))
    else:
        cols.update({c: pa.array(given[:, j].astype(np.int64), mask=untagged)
                     for j, c in enumerate(ZERO_ONE)})
    return pa.table(cols)


@pytest.mark.parametrize("form, stages", [("list", '["oof", "flag", "clean"]'),
                                          ("columns", '["flag", "clean"]')])
def test_tag_pipeline_without_pred_probs_flags_as_flag_partitions(spark, tmp_path, form, stages):
    from cleanpipe.partitioned_oof import OofSettings
    from cleanpipe.partitions import LocalEngine, flag_partitions
    table = _tag_table(form)
    write_parts(table, tmp_path / "data")
    label = 'label = "tags"' if form == "list" else f"labels = {json.dumps(ZERO_ONE)}"
    pipe = tmp_path / "ml.toml"
    pipe.write_text(f'name = "ml"\nstages = {stages}\n[source]\ntype = "parquet"\npath = "data"\n'
                    f'[columns]\n{label}\nids = ["row_id"]\n'
                    '[oof]\nengine = "spark"\nmodel = "logreg"\nfolds = 3\nseed = 5\n'
                    '[clean]\nmode = "drop"\n')
    res = _run("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    got = read_folder(os.path.join(run_dir, "flag", "flags"), "row_id")
    assert got.column_names == table.column_names + list(FLAG_COLUMNS + SUSPECT_COLUMNS)

    flag_partitions(str(tmp_path / "data"), str(tmp_path / "want"), engine=LocalEngine(),
                    label="tags" if form == "list" else ",".join(ZERO_ONE),
                    oof=OofSettings("logreg", 3, 5, SCALE_SAMPLE_ROWS, ids=("row_id",)))
    want = read_folder(tmp_path / "want", "row_id")
    assert got["row_id"].to_pylist() == want["row_id"].to_pylist()
    for col in FLAG_COLUMNS + SUSPECT_COLUMNS:
        a, b = got[col].to_pylist(), want[col].to_pylist()
        assert a == b, (col, [i for i, (u, v) in enumerate(zip(a, b)) if u != v][:5])
    flagged = sum(got["is_label_issue"].to_pylist())
    assert 3 < flagged < 150

    summary = json.loads(open(os.path.join(run_dir, "flag", "summary.json")).read())
    assert summary["classes"] == (TAGS.tolist() if form == "list" else ZERO_ONE)
    if "oof" in stages:
        info = json.loads(open(os.path.join(run_dir, "oof", "oof.json")).read())
        assert info["features"] == ["x0", "x1", "x2"] and info["multi_label"]  # no id, no tag
    cleaned = read_folder(os.path.join(run_dir, "clean", "cleaned"), "row_id")
    assert cleaned.num_rows == table.num_rows - flagged


@pytest.mark.parametrize("form", ["list", "columns"])
def test_default_features_leave_out_every_label_column_and_the_id(form):
    """``cleanpipe.spark.flag``'s out-of-fold checks on the schema alone (no job): the 0/1 tag
    columns are the label, never features, as in ``flag_partitions``."""
    from cleanpipe.spark import _check_label, _check_oof
    schema = _tag_table(form, n=10).schema
    label = "tags" if form == "list" else ",".join(ZERO_ONE)
    fit = _check_oof(schema, _check_label(schema, label).columns, features=None, id_column="row_id",
                     model="logreg", folds=3, seed=0, sample_rows=100)
    assert fit == {"features": ("x0", "x1", "x2"), "id_column": "row_id"}
