"""``clean_table`` on multi-label flags tables: which tags relabel adds and removes, drop, weight."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.clean import clean_table
from cleanpipe.clean_multilabel import relabel_cells
from cleanpipe.target import is_multilabel_flags
from cleanpipe.errors import InputError

TAGS = pa.list_(pa.string())


def _flags(label_form: str = "list") -> tuple[pa.Table, np.ndarray]:
    """Five rows over classes a, b, c as ``flag --multi-label`` writes them, and the probabilities.

    row 0 [a]     flagged: missing b (p 0.95 -> added), spurious a (p 0.2 -> kept)
    row 1 [a, c]  flagged: spurious c (p 0.0005 -> removed), missing b (p 0.6 -> not added)
    row 2 [b]     not flagged, though p(a) = 0.99 (not a suspect -> untouched)
    row 3 null    unlabelled
    row 4 [c, a]  flagged: missing b (p 0.89 -> just under 0.9, not added)
    """
    given = [["a"], ["a", "c"], ["b"], None, ["c", "a"]]
    probs = np.array([[0.2, 0.95, 0.1], [0.9, 0.6, 0.0005], [0.99, 0.9, 0.0],
                      [0.5, 0.5, 0.5], [0.8, 0.89, 0.7]])
    cols = {"x": [1.0, 2.0, 3.0, 4.0, 5.0]}
    if label_form == "list":
        cols["tags"] = pa.array(given, type=TAGS)
    else:
        for k in "abc":
            cols[k] = pa.array([None if g is None else int(k in g) for g in given], type=pa.int8())
    cols.update({
        "given_label": pa.array([None if g is None else sorted(g) for g in given], type=TAGS),
        "predicted_label": pa.array([["b"], ["a", "b"], ["a", "b"], ["b"], ["a", "b", "c"]], type=TAGS),
        "label_score": pa.array([0.1, 0.05, 0.9, None, 0.3]),
        "p_noisy": pa.array([0.7, 0.8, 0.1, None, 0.4]),
        "is_label_issue": [True, True, False, False, True],
        "suspect_missing": pa.array([["b"], ["b"], [], None, ["b"]], type=TAGS),
        "suspect_spurious": pa.array([["a"], ["c"], [], None, []], type=TAGS),
    })
    return pa.table(cols), probs


def test_relabel_adds_and_removes_exactly_the_strong_tags():
    table, probs = _flags()
    assert is_multilabel_flags(table)
    res = clean_table(table, mode="relabel", label="tags", pred_probs=probs)
    out = res.table
    assert out.column("tags").to_pylist() == [["a", "b"], ["a"], ["b"], None, ["c", "a"]]
    assert out.column("original_label").to_pylist() == table.column("tags").to_pylist()
    assert out.column_names == table.column_names + ["original_label"]
    assert out.drop_columns(["tags", "original_label"]).equals(table.drop_columns(["tags"]))
    assert res.counts["relabelled"] == 2 and res.counts["tags_added"] == 1
    assert res.counts["tags_removed"] == 1 and res.counts["rows_out"] == 5
    assert res.settings["multi_label"] is True and res.settings["relabel_add"] == 0.9


def test_relabel_thresholds_are_settings():
    table, probs = _flags()
    res = clean_table(table, mode="relabel", label="tags", pred_probs=probs, relabel_add=0.85,
                      relabel_remove=0.7)
    # row 0: spurious a at p 0.2 <= 0.3 now goes; row 4: missing b at 0.89 >= 0.85 now comes
    assert res.table.column("tags").to_pylist() == [["b"], ["a"], ["b"], None, ["a", "b", "c"]]


def test_relabel_01_columns():
    table, probs = _flags("columns")
    res = clean_table(table, mode="relabel", label="a,b,c", pred_probs=probs)
    out = res.table
    assert out.column("a").to_pylist() == [1, 1, 0, None, 1]
    assert out.column("b").to_pylist() == [1, 0, 1, None, 0]
    assert out.column("c").to_pylist() == [0, 0, 0, None, 1]
    assert out.schema.field("a").type == pa.int8()
    assert out.column("original_label").to_pylist() == [["a"], ["a", "c"], ["b"], None, ["a", "c"]]


@pytest.mark.parametrize("mode,rows_out", [("drop", 2), ("weight", 5), ("relabel", 5)])
def test_modes_keep_every_column_and_count_rows(mode, rows_out):
    table, probs = _flags()
    res = clean_table(table, mode=mode, label="tags", pred_probs=probs)
    assert res.table.num_rows == res.counts["rows_out"] == rows_out
    assert set(table.column_names) <= set(res.table.column_names)
    if mode == "drop":  # the three flagged rows go, the unlabelled row stays
        assert res.table.column("x").to_pylist() == [3.0, 4.0]
    if mode == "weight":
        w = res.table.column("sample_weight").to_numpy()
        assert w[2] == w[3] == 1.0 and (w[[0, 1, 4]] < 1).all()


def test_drop_flag_columns_drops_the_suspects_too():
    table, probs = _flags()
    out = clean_table(table, mode="relabel", label="tags", pred_probs=probs, drop_flag_columns=True).table
    assert out.column_names == ["x", "tags", "original_label"]


def test_relabel_without_probabilities_is_a_clear_error():
    table, _ = _flags()
    with pytest.raises(InputError, match="--save-pred-probs"):
        clean_table(table, mode="relabel", label="tags")
    with pytest.raises(InputError, match="shape"):
        clean_table(table, mode="relabel", label="tags", pred_probs=np.zeros((5, 2)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), max_size=30),
       st.floats(0, 1), st.floats(0, 1))
def test_relabel_cells_rule(cells, add, remove):
    given_ = np.array([c[0] for c in cells], dtype=bool)
    p = np.array([c[1] for c in cells], dtype=float)
    flip = relabel_cells(given_, p, add_threshold=add, remove_threshold=remove)
    assert flip.tolist() == [(pi <= 1 - remove) if g else (pi >= add) for g, pi in zip(given_, p)]
    # more evidence asked, fewer flips
    assert not (relabel_cells(given_, p, add_threshold=min(add + 0.1, 1), remove_threshold=min(remove + 0.1, 1))
                & ~flip).any()
