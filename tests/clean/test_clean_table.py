"""cleanpipe.clean: the three modes on small flagged tables, their rules, and bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe import flag_table
from cleanpipe.clean import FLAG_COLUMNS, MODES, check_flags_table, clean_table, relabel_mask, sample_weights
from cleanpipe.flagsfile import summary_path_for as sidecar_summary_path
from cleanpipe.errors import InputError


def _flagged(label_values=("cat", "dog", "eel"), *, n=150, n_flipped=15, null_labels=3, dictionary=False,
             seed=0):
    """A flags table made by ``flag_table`` with given probabilities (no cross-validation)."""
    rng = np.random.default_rng(seed)
    k = len(label_values)
    y = np.arange(n) % k
    noisy = y.copy()
    idx = rng.choice(n, n_flipped, replace=False)
    noisy[idx] = (y[idx] + 1) % k
    logits = rng.normal(0, 1, (n, k)) + 4 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = pa.array(np.asarray(label_values, dtype=object)[noisy].tolist(),
                      mask=np.arange(n) < null_labels)
    if dictionary:
        labels = labels.dictionary_encode()
    table = pa.table({"row_id": np.arange(n), "x": rng.normal(y, 1.0), "label": labels})
    return flag_table(table, label="label", pred_probs=probs).table


@pytest.fixture
def flags():
    return _flagged()


def _issue(t):
    return t.column("is_label_issue").to_numpy(zero_copy_only=False)


def test_drop_removes_exactly_the_flagged_rows(flags):
    res = clean_table(flags, mode="drop")
    issue = _issue(flags)
    assert issue.sum() > 0
    assert res.table.column_names == flags.column_names
    assert res.table.equals(flags.filter(pa.array(~issue)))
    assert res.counts["dropped"] == issue.sum() and res.counts["rows_out"] == flags.num_rows - issue.sum()
    # null-label rows are never flagged and are kept
    assert res.table.column("label").null_count == flags.column("label").null_count == 3


def test_weight_keeps_every_row_and_weighs_only_flagged_ones(flags):
    res = clean_table(flags, mode="weight", min_weight=0.05)
    t = res.table
    assert t.num_rows == flags.num_rows
    assert t.column_names == flags.column_names + ["sample_weight"]
    assert t.schema.field("sample_weight").type == pa.float32()
    assert t.select(flags.column_names).equals(flags)
    w = t.column("sample_weight").to_numpy()
    issue = _issue(flags)
    assert np.all((w >= 0) & (w <= 1))
    assert np.all(w[~issue] == 1.0)
    assert np.all(w[issue] >= 0.05) and np.all(w[issue] < 1)
    assert res.counts["down_weighted"] == int((w < 1).sum())


def test_sample_weights_known_answer():
    score = np.array([0.9, 0.2, 0.01, np.nan, 0.4])
    p = np.array([0.0, 0.6, 0.7, np.nan, 0.3])
    issue = np.array([False, True, True, False, True])
    w = sample_weights(score, p, issue, min_weight=0.05)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [1.0, 0.2, 0.05, 1.0, 0.4], rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans()), min_size=1, max_size=40),
       st.floats(0, 1))
def test_sample_weights_in_floor_one_and_one_when_unflagged(rows, floor):
    score, p, issue = (np.array(c) for c in zip(*rows))
    issue = issue.astype(bool)
    w = sample_weights(score, p, issue, min_weight=floor)
    assert np.all(w[~issue] == 1)
    assert np.all((w[issue] >= np.float32(floor)) & (w[issue] <= 1))


def test_relabel_changes_only_strong_evidence_rows(flags):
    res = clean_table(flags, mode="relabel", label="label")
    t = res.table
    assert t.num_rows == flags.num_rows
    assert t.column_names == flags.column_names + ["original_label"]
    assert t.column("original_label").equals(flags.column("label"))
    changed = pc.fill_null(pc.not_equal(t.column("label"), flags.column("label")), False).to_numpy()
    score = flags.column("label_score").to_numpy(zero_copy_only=False)
    p = flags.column("p_noisy").to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        strong = _issue(flags) & (p >= 0.5) & (score <= 0.25)
    assert changed.sum() == res.counts["relabelled"] > 0
    assert np.all(strong[changed])
    # a strong row is changed unless its prediction already equals its label
    pred = flags.column("predicted_label").to_pylist()
    assert t.column("label").take(pa.array(np.flatnonzero(changed))).to_pylist() == [pred[i] for i in np.flatnonzero(changed)]
    untouched = np.flatnonzero(~changed)
    assert t.column("label").take(pa.array(untouched)).equals(flags.column("label").take(pa.array(untouched)))


def test_relabel_keeps_a_dictionary_label_type():
    flags = _flagged(dictionary=True)
    res = clean_table(flags, mode="relabel", label="label", relabel_p_noisy=0.0, relabel_score=1.0)
    assert res.table.schema.field("label").type == flags.schema.field("label").type
    assert res.table.schema.field("original_label").type == flags.schema.field("label").type
    assert res.counts["relabelled"] > 0


def test_relabel_of_int_labels_with_loose_rule_follows_predictions():
    flags = _flagged(label_values=(10, 20, 30))
    res = clean_table(flags, mode="relabel", label="label", relabel_p_noisy=0.0, relabel_score=1.0)
    issue = _issue(flags)
    got = np.asarray(res.table.column("label").to_pylist(), dtype=object)[issue]
    assert list(got) == list(np.asarray(flags.column("predicted_label").to_pylist(), dtype=object)[issue])


def test_relabel_mask_rule():
    m = relabel_mask(np.array([0.1, 0.1, 0.3, 0.1, np.nan]), np.array([0.7, 0.4, 0.7, 0.7, np.nan]),
                     np.array([True, True, True, False, False]), np.array([True, True, True, True, False]))
    assert m.tolist() == [True, False, False, False, False]


def test_drop_flag_columns(flags):
    for mode in MODES:
        t = clean_table(flags, mode=mode, label="label", drop_flag_columns=True).table
        assert not set(FLAG_COLUMNS) & set(t.column_names)
        assert {"row_id", "x", "label"} <= set(t.column_names)


def test_not_a_flags_table_names_the_missing_column(flags):
    with pytest.raises(InputError, match="column 'p_noisy' is missing.*run cleanpipe flag first"):
        check_flags_table(flags.drop_columns(["p_noisy"]))


def test_bad_mode_bad_setting_and_missing_label(flags):
    with pytest.raises(InputError, match="--mode 'nope' is not known"):
        clean_table(flags, mode="nope")
    with pytest.raises(InputError, match="--min-weight must be in"):
        clean_table(flags, mode="weight", min_weight=1.5)
    with pytest.raises(InputError, match="pass --label"):
        clean_table(flags, mode="relabel")
    with pytest.raises(InputError, match="already has a column 'sample_weight'"):
        clean_table(clean_table(flags, mode="weight").table, mode="weight")


def test_sidecar_summary_path():
    assert str(sidecar_summary_path("a/x.flags.parquet")) == "a/x.flags.summary.json"
    assert str(sidecar_summary_path("a/flags/")) == "a/flags.summary.json"
