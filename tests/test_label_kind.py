"""A label column that cannot be class labels is refused in one line, before any work."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.errors import InputError
from cleanpipe.features import MAX_UNIQUE_CLASSES, encode_labels


def test_a_continuous_float_label_is_refused_as_a_regression_target():
    income = pa.chunked_array([np.random.default_rng(0).lognormal(10, 1, 300)])
    with pytest.raises(InputError, match="regression") as err:
        encode_labels(income, "income")
    assert "'income' has 300 distinct values in 300 labelled rows" in str(err.value)


def test_an_id_like_label_is_refused_and_class_labels_are_not():
    ids = pa.chunked_array([[f"c{i}" for i in range(100)]])
    with pytest.raises(InputError, match="identifier"):
        encode_labels(ids, "customer")
    # Float classes (0.0 / 1.0 / 2.0) and many classes with several rows each are labels.
    codes, classes = encode_labels(pa.chunked_array([np.tile([0.0, 1.0, 2.0], 50)]), "y")
    assert len(classes) == 3 and codes.max() == 2
    many = np.repeat(np.arange(MAX_UNIQUE_CLASSES + 10), 3)
    assert len(encode_labels(pa.chunked_array([many]), "y")[1]) == MAX_UNIQUE_CLASSES + 10
    # A tiny table may have every value distinct and still be under the limit.
    assert len(encode_labels(pa.chunked_array([np.arange(12)]), "y")[1]) == 12


def test_flag_on_a_regression_table_exits_2_in_one_line_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3))
    path = tmp_path / "income.parquet"
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "income": np.exp(10 + x[:, 2])}), path)
    res = CliRunner().invoke(cli, ["flag", str(path), "--label", "income", "--model", "logreg"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "regression" in lines[0] and "'income'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["income.parquet"]
