"""The vocabulary of a categorical feature column, partition by partition (issue 21): the value
counts of any partitioning merge to the whole column's, so every partition codes the column as
the one-machine features do."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.errors import InputError
from cleanpipe.features import (_categorical, category_codes, merge_value_counts, table_to_features,
                                value_counts, vocabulary)
from cleanpipe.settings import MAX_CATEGORIES


def _cut(values, cuts):
    bounds = [0, *sorted(c % (len(values) + 1) for c in cuts), len(values)]
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def test_known_answers():
    col = pa.chunked_array([["b", "a", None, "c", "b", "a", "b"]])
    vc = value_counts(col)
    assert vc.values.to_pylist() == ["a", "b", "c"] and vc.counts.tolist() == [2, 3, 1]
    keep = vocabulary(vc, 2)
    assert keep.to_pylist() == ["b", "a"]  # most frequent first
    np.testing.assert_array_equal(category_codes(col, keep, 2),
                                  [0, 1, np.nan, 2, 0, 1, 0])  # "c": the other code
    tie = value_counts(pa.chunked_array([["z", "y", "x", "y", "z"]]))
    assert vocabulary(tie).to_pylist() == ["y", "z", "x"]  # ties by value


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["ant", "bee", "cat", "é", "", "zz", "a"])),
                min_size=1, max_size=80),
       st.lists(st.integers(0, 200), max_size=5), st.integers(1, 7), st.randoms())
def test_any_partitioning_gives_the_whole_columns_codes(values, cuts, n_keep, rnd):
    parts = [pa.chunked_array([p], type=pa.string()) for p in _cut(values, cuts)]
    whole = pa.chunked_array([values], type=pa.string())
    partials = [value_counts(p) for p in parts]
    left = functools.reduce(merge_value_counts, partials)
    shuffled = partials[:]
    rnd.shuffle(shuffled)  # commutative and associative: any order, any grouping
    right = functools.reduce(lambda a, b: merge_value_counts(b, a), shuffled)
    want = value_counts(whole)
    for got in (left, right):
        assert got.values.equals(want.values) and got.counts.tolist() == want.counts.tolist()
    keep = vocabulary(left, n_keep)
    codes = np.concatenate([category_codes(p, keep, n_keep) for p in parts])
    np.testing.assert_array_equal(codes, category_codes(whole, vocabulary(want, n_keep), n_keep))
    if n_keep >= 7:  # the one-machine coding with its own limit, on a column under it
        np.testing.assert_array_equal(codes, _categorical(whole))


def test_dictionary_and_string_partitions_merge_and_code_alike():
    a = pa.chunked_array([pa.array(["x", "y", "x"]).dictionary_encode()])
    b = pa.chunked_array([pa.array(["y", None, "w"], type=pa.large_string())])
    merged = merge_value_counts(value_counts(a), value_counts(b))
    assert merged.values.to_pylist() == ["w", "x", "y"] and merged.counts.tolist() == [1, 2, 2]
    keep = vocabulary(merged)
    np.testing.assert_array_equal(category_codes(a, keep), [0, 1, 0])
    np.testing.assert_array_equal(category_codes(b, keep), [1, np.nan, 2])
    empty = value_counts(pa.chunked_array([pa.nulls(3)]))  # a partition null throughout
    assert merge_value_counts(empty, merged) is merged and merge_value_counts(merged, empty) is merged


def test_the_one_machine_features_keep_max_categories():
    n = MAX_CATEGORIES + 30
    values = [f"v{i:04d}" for i in range(n) for _ in range(1 + (i < 10))]
    t = table_to_features(pa.table({"c": values}), ["c"])
    assert t.categorical.tolist() == [True]
    assert np.unique(t.X).size == MAX_CATEGORIES + 1  # the kept codes and one "other"
    assert t.X[:20:2, 0].tolist() == list(range(10))  # the most frequent get the first codes


def test_too_many_distinct_values_or_mixed_types_are_one_line():
    a = value_counts(pa.chunked_array([[f"id{i}" for i in range(6)]]))
    b = value_counts(pa.chunked_array([[f"id{i}" for i in range(6, 12)]]))
    with pytest.raises(InputError, match=r"^feature column 'key' has more than 10 distinct values"):
        merge_value_counts(a, b, name="key", limit=10)
    nums = value_counts(pa.chunked_array([pa.array([1.5, 2.5])]).dictionary_encode())
    with pytest.raises(InputError, match="feature column 'c' holds large_string in one partition "
                                         "and double in another"):
        merge_value_counts(a, nums, name="c")
