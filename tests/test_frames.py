"""The API takes what Python users hold: pandas and polars frames, string and category labels."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cleanpipe import find_label_issues
from cleanpipe.errors import InputError
from cleanpipe.frames import as_table, label_codes


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(size=n),
        "city": rng.choice(["oslo", "lima", "pune"], n),
        "when": pd.date_range("2024-01-01", periods=n, freq="D"),
        "tier": pd.Categorical(rng.choice(["gold", "basic"], n)),
    }, index=pd.Index(rng.permutation(n) + 1000, name="customer_id"))


def test_a_pandas_frame_keeps_its_columns_and_drops_its_index():
    df = _frame()
    t = as_table(df)
    assert t.column_names == ["x", "city", "when", "tier"]  # the index is not a column
    assert pa.types.is_dictionary(t.schema.field("tier").type)
    assert t.column("city").to_pylist() == df["city"].tolist()


def test_a_polars_frame_is_the_same_table():
    pl = pytest.importorskip("polars")
    df = _frame().reset_index(drop=True)
    got = as_table(pl.from_pandas(df))
    want = as_table(df)
    assert got.column_names == want.column_names
    for name in ("x", "city"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist()


@pytest.mark.parametrize("bad,expect", [
    (pd.DataFrame({"a": [1, "two", 3.0]}), "one type"),
    (pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicate column"),
    ([[1, 2], [3, 4]], "pass a pandas or polars DataFrame"),
])
def test_what_cannot_be_a_table_is_one_input_error(bad, expect):
    with pytest.raises(InputError, match=expect):
        as_table(bad)


def test_string_and_category_labels_become_codes_in_sorted_class_order():
    codes, classes = label_codes(pd.Series(["dog", "cat", "dog", None]))
    assert classes.to_pylist() == ["cat", "dog"] and codes.tolist() == [1, 0, 1, -1]
    # A category no row carries keeps its column.
    cat = pd.Series(pd.Categorical(["b", "b", "c"], categories=["c", "a", "b"]))
    codes, classes = label_codes(cat)
    assert classes.to_pylist() == ["a", "b", "c"] and codes.tolist() == [1, 1, 2]
    codes, classes = label_codes(np.array([2, 0, 1]))
    assert classes is None and codes.tolist() == [2, 0, 1]


def test_find_label_issues_takes_string_labels_and_answers_in_them():
    rng = np.random.default_rng(0)
    n = 200
    truth = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), truth] = 0.9
    names = np.array(["bird", "cat", "dog"])
    given = truth.copy()
    given[:10] = (given[:10] + 1) % 3
    by_code = find_label_issues(given, probs)
    by_name = find_label_issues(pd.Series(names[given]), probs)
    assert by_name["is_label_issue"].tolist() == by_code["is_label_issue"].tolist()
    assert by_name["given_label"].tolist() == names[given].tolist()
    assert by_name["predicted_label"].tolist() == names[by_code["predicted_label"]].tolist()
    assert set(np.flatnonzero(by_name["is_label_issue"])) == set(range(10))
    with pytest.raises(InputError, match="2 distinct classes but pred_probs has 3"):
        find_label_issues(pd.Series(np.where(given == 0, "cat", "dog")), probs)


def _customers(n=240, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    city = rng.choice(["oslo", "lima", "pune"], n)
    tier = np.where(x + (city == "oslo") > 0.3, "gold", "basic")
    flip = rng.random(n) < 0.1
    tier = np.where(flip, np.where(tier == "gold", "basic", "gold"), tier)
    return pd.DataFrame({"x": x, "city": pd.Categorical(city), "visits": rng.integers(0, 9, n),
                         "tier": tier}, index=pd.Index(np.arange(n) * 7 + 3, name="customer_id"))


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_the_api_takes_dataframes_with_mixed_types_and_string_labels(kind):
    import cleanpipe
    from cleanpipe.clean import clean_table
    df = _customers()
    frame = df if kind == "pandas" else pytest.importorskip("polars").from_pandas(df.reset_index(drop=True))
    arrow = as_table(df)
    res = cleanpipe.flag_table(frame, label="tier", model="logreg", folds=3)
    want = cleanpipe.flag_table(arrow, label="tier", model="logreg", folds=3)
    assert res.table.column("is_label_issue").equals(want.table.column("is_label_issue"))
    assert "customer_id" not in res.summary["settings"]["features"]  # the index is no feature
    assert set(res.table.column("given_label").to_pylist()) == {"basic", "gold"}
    X = df.drop(columns="tier") if kind == "pandas" else frame.drop("tier")
    probs = cleanpipe.out_of_fold_probs(X, df["tier"] if kind == "pandas" else frame["tier"],
                                        model="logreg", folds=3)
    assert probs.shape == (len(df), 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    cleaned = clean_table(res.table.to_pandas() if kind == "pandas" else res.table, mode="drop")
    assert cleaned.table.num_rows == len(df) - int(res.table.column("is_label_issue").to_numpy().sum())


def test_retrain_table_takes_a_pandas_frame():
    torch = pytest.importorskip("torch")  # noqa: F841
    from cleanpipe.settings import TrainConfig
    from cleanpipe.train import retrain_table
    res = retrain_table(_customers(), label="tier", config=TrainConfig(epochs=2, threads=1))
    # auto's light-noise choice (elr) trains on every row without a validation split
    assert res.metrics["epochs"] == 2 and np.isfinite(res.metrics["curve"]["train_loss"]).all()
    res = retrain_table(_customers(), label="tier", loss="sce", config=TrainConfig(epochs=2, threads=1))
    assert res.metrics["val_accuracy"] is not None
