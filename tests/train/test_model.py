"""cleanpipe.train.model: preprocessing (standardise, NaN, categories) and the MLP."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from cleanpipe.errors import InputError
from cleanpipe.train.model import (Preprocessor, TabularMLP, architecture, build_model, build_vocabulary,
                                   category_codes)


def test_numeric_features_are_standardised_with_nan_zero_and_indicator(table):
    pre = Preprocessor.fit(table, ["x", "x2"])
    assert pre.numeric == ["x", "x2"] and pre.missing == ["x"]
    x_num, x_cat = pre.transform(table)
    assert x_num.dtype == np.float32 and x_num.shape == (table.num_rows, 3) and x_cat.shape == (table.num_rows, 0)
    nan = np.isnan(table.column("x").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(x_num[:, 2], nan.astype(np.float32))
    assert np.all(x_num[nan, 0] == 0)
    np.testing.assert_allclose(x_num[~nan, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(x_num[~nan, 0].std(), 1, atol=1e-4)


def test_categories_known_unknown_and_null():
    vocab = build_vocabulary(pa.chunked_array([["b", "a", "b", None, "c", "b", "a"]]))
    assert vocab == ["b", "a", "c"]  # by frequency, ties by value
    codes = category_codes(pa.chunked_array([["a", "zzz", None, "c"]]), vocab)
    assert codes.tolist() == [1, 3, 4, 2]  # unknown -> V, null -> V + 1
    # integer dictionaries are matched by value too
    assert category_codes(pa.chunked_array([pa.array([2, 1]).dictionary_encode()]),
                          build_vocabulary(pa.chunked_array([pa.array([1, 1, 2]).dictionary_encode()]))).tolist() == [1, 0]


def test_json_round_trip_gives_the_same_inputs(table):
    pre = Preprocessor.fit(table, ["x", "x2", "colour"])
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    for a, b in zip(pre.transform(table), again.transform(table)):
        np.testing.assert_array_equal(a, b)
    assert pre.categorical == ["colour"] and pre.cardinalities == [6]


def test_transform_names_missing_columns_and_changed_types(table):
    pre = Preprocessor.fit(table, ["x", "x2", "colour"])
    with pytest.raises(InputError, match="lacks the feature column.*x2, colour"):
        pre.transform(table.drop_columns(["x2", "colour"]))
    changed = table.set_column(table.column_names.index("x2"), "x2", pa.array(["a"] * table.num_rows))
    with pytest.raises(InputError, match="feature column 'x2'"):
        pre.transform(changed)


def test_all_null_column_at_predict_time_is_missing_not_dropped(table):
    pre = Preprocessor.fit(table, ["x", "x2", "colour"])
    nulls = table.set_column(table.column_names.index("x"), "x", pa.nulls(table.num_rows, pa.float32()))
    x_num, x_cat = pre.transform(nulls)
    assert x_num.shape == (table.num_rows, 3)
    assert np.all(x_num[:, 0] == 0) and np.all(x_num[:, 2] == 1)


def test_mlp_shapes_and_rebuild_from_architecture(table):
    pre = Preprocessor.fit(table, ["x", "x2", "colour"])
    arch = architecture(pre, (8, 4), 3, 0.1)
    torch.manual_seed(0)
    model = build_model(json.loads(json.dumps(arch)))
    assert isinstance(model, TabularMLP)
    x_num, x_cat = pre.transform(table)
    out = model(torch.from_numpy(x_num), torch.from_numpy(x_cat))
    assert out.shape == (table.num_rows, 3) and out.dtype == torch.float32
    with pytest.raises(ValueError):
        build_model(dict(arch, kind="Other"))
