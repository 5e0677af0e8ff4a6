"""The kind of label as a value (``cleanpipe.target``) and the flags-file helpers (``cleanpipe.flagsfile``)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanpipe.errors import InputError
from cleanpipe.flag import lowest
from cleanpipe.flagsfile import flag_estimate, summary_path_for
from cleanpipe.target import is_multilabel, is_multilabel_flags, resolve_target

TABLE = pa.table({"y": ["b", "a", None, "b"], "tags": pa.array([["x"], [], None, ["y", "x"]]),
                  "a": [0, 1, 0, 1], "b": [1, 1, 0, 0], "x0": [0.1, 0.2, 0.3, 0.4]})


@pytest.mark.parametrize("label, multi, want", [
    ("y", False, False), ("tags", False, True), ("a,b", False, True), (["a", "b"], False, True),
    (["tags"], False, False), ("y", True, True),
])
def test_is_multilabel_reads_the_schema_and_the_option(label, multi, want):
    assert is_multilabel(TABLE.schema, label, multi) is want


def test_resolve_target_names_form_columns_and_encodes():
    single = resolve_target(TABLE.schema, "y")
    assert (single.form, single.columns, single.multi_label) == ("class", ("y",), False)
    enc = single.encode(TABLE)
    assert enc.values.tolist() == [1, 0, -1, 1] and enc.classes.to_pylist() == ["a", "b"]
    assert enc.labelled.tolist() == [True, True, False, True]

    tags = resolve_target(TABLE.schema, "tags")
    enc = tags.encode(TABLE)
    assert tags.form == "list" and tags.setting == "tags" and enc.classes.to_pylist() == ["x", "y"]
    assert enc.values.tolist() == [[1, 0], [0, 0], [0, 0], [1, 1]]
    assert enc.labelled.tolist() == [True, True, False, True]
    assert "suspect_missing" in tags.output_columns and "suspect_missing" not in single.output_columns

    cols = resolve_target(TABLE.schema, "a,b")
    assert cols.form == "columns" and cols.setting == ["a", "b"]
    assert cols.encode(TABLE).values.tolist() == [[0, 1], [1, 1], [0, 0], [1, 0]]


@pytest.mark.parametrize("label, multi, words", [
    ("z", False, ("'z' not found", "--label")), ("y", True, ("not a list of tags", "--multi-label")),
    ("a,zz", False, ("'zz' not found",)), ("tags,a", False, ("'tags' is a list column",)),
])
def test_resolve_target_errors_name_the_column(label, multi, words):
    with pytest.raises(InputError) as err:
        resolve_target(TABLE.schema, label, multi_label=multi)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_is_multilabel_flags_takes_a_table_or_its_schema():
    flags = pa.table({"given_label": pa.array([["x"]]), "is_label_issue": [False]})
    assert is_multilabel_flags(flags) and is_multilabel_flags(flags.schema)
    assert not is_multilabel_flags(pa.table({"given_label": [1]}))


@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, np.inf]), max_size=40), st.integers(1, 12))
def test_lowest_is_the_stable_argsort_prefix(values, n):
    v = np.array(values, dtype=float)
    assert lowest(v, n).tolist() == np.argsort(v, kind="stable")[:n].tolist()


def test_flag_estimate_prefers_explicit_then_sidecar_then_provenance(tmp_path):
    table = pa.table({"x": [1]}).replace_schema_metadata(
        {b"cleanpipe.clean": json.dumps({"noise_matrix": [[1.0]], "classes": ["m"]}).encode()})
    assert flag_estimate("noise_matrix", table) == ([[1.0]], ["m"])
    assert flag_estimate("class_prior", table) is None
    side = summary_path_for(tmp_path / "d.flags.parquet")
    assert side.name == "d.flags.summary.json"
    side.write_text(json.dumps({"noise_matrix": [[2.0]], "classes": ["s"], "class_prior": [1.0]}))
    assert flag_estimate("noise_matrix", table, summaries=[side]) == ([[2.0]], ["s"])
    explicit = tmp_path / "e.json"
    explicit.write_text(json.dumps({"noise_matrix": [[3.0]], "classes": ["e"]}))
    assert flag_estimate("noise_matrix", table, explicit=explicit, summaries=[side]) == ([[3.0]], ["e"])
    with pytest.raises(InputError, match="has no 'class_prior' key"):
        flag_estimate("class_prior", table, explicit=explicit)
