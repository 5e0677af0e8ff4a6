"""cleanpipe.flag_checks: the edge between the data checks and the flag stage."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe.checks import run_checks
from cleanpipe.errors import InputError
from cleanpipe.flag_checks import Appended, CheckColumns, read_against
from cleanpipe.flagsfile import CHECK_COLUMNS
from cleanpipe.settings import CheckSettings


def test_every_column_the_checks_can_write_is_a_known_check_column():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    labels = rng.integers(0, 2, 60)
    probs = np.where(np.eye(2, dtype=bool)[labels], 0.8, 0.2)
    table = pa.table({f"f{i}": X[:, i] for i in range(3)})
    r = run_checks(X, labels, pred_probs=probs, table=table, against=X[:5] + 1e-6,
                   settings=CheckSettings(knn_weight=0.2))
    assert set(r.columns) <= set(CHECK_COLUMNS)
    assert {"knn_is_label_issue", "leaks_into_against", "is_null_heavy"} <= set(r.columns)


def test_check_columns_slice_like_the_flag_columns_and_nan_becomes_null():
    cols = CheckColumns({"outlier_score": np.array([1.0, np.nan, 3.0]), "is_outlier": np.array([0, 0, 1], bool)})
    both = Appended(CheckColumns({"a": np.arange(3)}), cols)
    assert [f.name for f in both.fields()] == ["a", "outlier_score", "is_outlier"]
    got = both.arrays(1, 3)
    assert got["outlier_score"].to_pylist() == [None, 3.0] and got["a"].to_pylist() == [1, 2]
    assert both.arrays(rows=[2, 0])["is_outlier"].to_pylist() == [True, False]


def test_read_against_casts_a_compatible_type_and_refuses_another_kind(tmp_path):
    import pyarrow.parquet as pq

    schema = pa.schema([("x", pa.float64()), ("c", pa.string())])
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int32()), "c": ["a", "b"], "extra": [0, 1]}),
                   tmp_path / "ok.parquet")
    t = read_against(tmp_path / "ok.parquet", ["x", "c"], schema)
    assert t.schema == schema and t.column("x").to_pylist() == [1.0, 2.0]
    pq.write_table(pa.table({"x": [1.0], "c": [3.0]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"column 'c' has type double but DATA's has string"):
        read_against(tmp_path / "bad.parquet", ["x", "c"], schema)
