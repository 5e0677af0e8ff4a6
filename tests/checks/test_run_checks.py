"""run_checks end to end: known answers on tiny tables, planted issues found, properties, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.checks import CheckSettings, feature_matrices, feature_matrix, run_checks
from cleanpipe.errors import InputError


def _gauss(n, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_two_identical_rows_and_one_far_point():
    X = _gauss(200)
    X[10] = X[3]
    X[50] = 40.0
    r = run_checks(X).columns
    assert np.flatnonzero(r["is_exact_duplicate"]).tolist() == [3, 10]
    assert np.flatnonzero(r["is_near_duplicate"]).tolist() == [3, 10]
    assert r["duplicate_set"][3] == r["duplicate_set"][10] == 0
    assert np.flatnonzero(r["is_outlier"]).tolist() == [50]
    assert r["outlier_score"][50] == r["outlier_score"].max()


def test_conflicting_labels_on_duplicates():
    X = _gauss(100)
    X[7] = X[2]
    y = np.zeros(100, np.int64)
    y[50:] = 1
    y[7] = 1
    r = run_checks(X, y)
    assert np.flatnonzero(r.columns["label_conflict"]).tolist() == [2, 7]
    assert r.columns["duplicate_label_agreement"][[2, 7]].tolist() == [0.0, 0.0]
    assert r.summary["label_conflicts"] == {"rows": 2, "sets": 1}


@pytest.fixture
def planted():
    """3,000 rows in 12 clusters with 60 exact copies, 60 near copies and 15 far rows planted."""
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 4, (12, 10))
    X = centers[rng.integers(0, 12, 3000)] + rng.normal(0, 1, (3000, 10))
    src = rng.choice(2000, 120, replace=False)
    exact_rows, near_rows = np.arange(2000, 2060), np.arange(2060, 2120)
    X[exact_rows] = X[src[:60]]
    X[near_rows] = X[src[60:]] + rng.normal(0, 0.01, (60, 10))
    far = np.arange(2120, 2135)
    X[far] = rng.normal(0, 4, (15, 10)) + 30 * rng.choice([-1, 1], (15, 10))
    truth_exact = np.zeros(3000, bool)
    truth_exact[np.r_[exact_rows, src[:60]]] = True
    truth_near = truth_exact.copy()
    truth_near[np.r_[near_rows, src[60:]]] = True
    truth_out = np.zeros(3000, bool)
    truth_out[far] = True
    return X.astype(np.float32), truth_exact, truth_near, truth_out


def _pr(found, truth):
    tp = (found & truth).sum()
    return tp / max(found.sum(), 1), tp / truth.sum()


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_planted_issues_found(planted, method):
    if method == "approx":
        pytest.importorskip("faiss")
    X, truth_exact, truth_near, truth_out = planted
    c = run_checks(X, settings=CheckSettings(neighbors=method)).columns
    assert (c["is_exact_duplicate"] == truth_exact).all()
    p, r = _pr(c["is_near_duplicate"], truth_near)
    assert p >= 0.95 and r >= 0.95
    p, r = _pr(c["is_outlier"], truth_out)
    assert r == 1.0 and p >= 0.5


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.integers(20, 80))
def test_row_order_does_not_change_flags(seed, n):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, (n, 3)).astype(np.float32) + rng.normal(0, 0.3, (n, 3)).astype(np.float32)
    X[: n // 5] = X[n // 5: 2 * (n // 5)]  # some exact copies
    X[-1] = 50
    y = rng.integers(0, 2, n)
    perm = rng.permutation(n)
    a = run_checks(X, y, settings=CheckSettings(k=3)).columns
    b = run_checks(X[perm], y[perm], settings=CheckSettings(k=3)).columns
    for name in ("is_exact_duplicate", "is_near_duplicate", "is_outlier", "label_conflict"):
        assert (a[name][perm] == b[name]).all(), name
    np.testing.assert_allclose(a["outlier_score"][perm], b["outlier_score"], rtol=1e-5)


def test_leakage_both_ways():
    X = _gauss(300)
    other = _gauss(50, seed=9)
    other[0] = X[3]
    other[1] = X[7] + 1e-4
    r = run_checks(X, against=other)
    assert np.flatnonzero(r.columns["leaks_into_against"]).tolist() == [3, 7]
    assert r.columns["against_row"][[3, 7]].tolist() == [0, 1]
    assert np.flatnonzero(r.against_columns["leaks_into_main"]).tolist() == [0, 1]
    assert r.against_columns["main_row"][:2].tolist() == [3, 7]
    assert r.summary["leakage"]["exact_rows"] == 1


def test_table_findings():
    n = 600
    rng = np.random.default_rng(0)
    a = rng.normal(size=n)
    b = np.where(rng.random(n) < 0.7, np.nan, rng.normal(size=n))
    table = pa.table({"a": a, "b": b, "const": np.ones(n), "row_id": np.arange(n) * 10,
                      "name": [f"r{i}" for i in range(n)]})
    table = table.set_column(1, "b", pa.array(b, from_pandas=True))
    cols = ["a", "b", "const", "row_id", "name"]
    X = feature_matrix(table, cols)
    y = np.r_[np.zeros(n - 20, np.int64), np.ones(20, np.int64)]
    r = run_checks(X, y, table=table, columns=cols)
    t = r.summary["table"]
    assert t["null_heavy_columns"] == ["b"]
    assert t["constant_columns"] == ["const"]
    assert t["id_like_columns"] == ["row_id", "name"]
    assert r.summary["class_balance"]["underrepresented"] == [1]
    np.testing.assert_allclose(r.columns["null_fraction"], np.isnan(b) / 5)
    assert not r.columns["is_null_heavy"].any()


def test_feature_matrices_share_category_codes():
    a = pa.table({"c": ["x", "y", "y"], "v": [1.0, 2.0, 3.0]})
    b = pa.table({"v": [2.0, 9.0], "c": ["y", "z"]})
    Xa, Xb = feature_matrices(a, ["c", "v"], b)
    assert (Xb[0] == Xa[1]).all()
    assert Xb[1, 0] not in Xa[:, 0]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(labels=np.zeros(3, np.int64)), "labels must be 10"),
    (dict(labels=np.full(10, -2)), "-1 for unlabelled"),
    (dict(pred_probs=np.full((10, 2), 0.7) + np.nan), r"\[0, 1\]"),
    (dict(against=np.zeros((4, 3))), "same feature columns"),
    (dict(settings=CheckSettings(k=0)), "--k must be"),
    (dict(table=pa.table({"a": [1]})), "table has 1 rows"),
])
def test_bad_input_one_line(kwargs, msg):
    with pytest.raises(InputError, match=msg) as err:
        run_checks(np.zeros((10, 2)), **kwargs)
    assert "\n" not in str(err.value)


def test_bad_tables_one_line():
    a = pa.table({"c": ["x"], "v": [1.0]})
    with pytest.raises(InputError, match="lacks feature column") as err:
        feature_matrices(a, ["c", "v"], pa.table({"c": ["y"], "w": [1.0]}))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="no usable feature columns"):
        feature_matrix(a, [])
    with pytest.raises(InputError, match="holds \\+/-inf"):
        run_checks(np.array([[np.inf], [0.0]]))


def test_clip_off_finds_a_single_column_outlier():
    X = _gauss(300, d=8)
    X[5, 2] = 200.0  # a typo in one column
    assert run_checks(X, settings=CheckSettings(clip=None)).columns["is_outlier"][5]


def test_knn_assisted_rule_is_opt_in(digits_noisy):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, flip, table = digits_noisy
    X = feature_matrix(table, [c for c in table.column_names if c != "label"])
    y = table.column("label").to_numpy()
    probs = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, y, cv=3, method="predict_proba")
    assert "knn_is_label_issue" not in run_checks(X, y, pred_probs=probs).columns
    c = run_checks(X, y, pred_probs=probs, settings=CheckSettings(knn_weight=0.2)).columns
    found = c["knn_is_label_issue"]
    assert (found & flip).sum() / found.sum() > 0.8 and (found & flip).sum() / flip.sum() > 0.6
    # the neighbours alone already point at the flipped rows
    assert np.nanmean(c["knn_label_score"][flip]) < np.nanmean(c["knn_label_score"][~flip]) - 0.3


def test_check_table_end_to_end(small_table):
    from cleanpipe.checks import check_table

    table, _ = small_table
    doubled = pa.concat_tables([table, table.slice(0, 3)])
    res = check_table(doubled, label="label", against=table.slice(10, 5))
    n = table.num_rows
    dup = res.columns["is_exact_duplicate"]
    assert dup[[0, 1, 2, n, n + 1, n + 2]].all()
    assert res.columns["leaks_into_against"][10:15].all()
    assert res.against_columns["leaks_into_main"].all()
    with pytest.raises(InputError, match="lacks feature column"):
        check_table(doubled, label="label", against=table.drop_columns(["x"]))
    assert "label_conflict" in res.columns and "null_fraction" in res.columns


def test_summary_is_json_and_columns_have_n_rows():
    import json

    X = _gauss(120)
    X[3] = X[4]
    y = np.r_[np.zeros(60, np.int64), np.ones(60, np.int64)]
    probs = np.full((120, 2), 0.5)
    table = pa.table({f"f{i}": X[:, i] for i in range(5)})
    r = run_checks(X, y, pred_probs=probs, table=table, against=X[:10] + 5)
    json.dumps(r.summary, allow_nan=False)
    assert all(len(v) == 120 for v in r.columns.values())
    assert all(len(v) == 10 for v in r.against_columns.values())
    np.testing.assert_allclose(r.columns["probs_ood_score"], 1.0)
