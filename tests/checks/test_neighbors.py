"""The neighbour index: exact answers, the row itself excluded, approximate agreeing with exact."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from cleanpipe.errors import InputError
from cleanpipe.neighbors import NeighborIndex


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 5, (20, 8))
    return (centers[rng.integers(0, 20, 3000)] + rng.normal(0, 1, (3000, 8))).astype(np.float32)


def test_exact_matches_scikit_learn(blobs):
    dist, idx = NeighborIndex.build(blobs, method="exact").kneighbors(5)
    ref_d, ref_i = NearestNeighbors(n_neighbors=6).fit(blobs).kneighbors(blobs)
    np.testing.assert_allclose(dist, ref_d[:, 1:], rtol=1e-4, atol=1e-4)
    assert (idx != np.arange(len(blobs))[:, None]).all()
    assert np.mean(idx == ref_i[:, 1:]) > 0.99  # ties aside, the same rows


def test_self_excluded_but_copies_kept():
    X = np.array([[0, 0], [0, 0], [0, 0], [5, 5]], dtype=np.float32)
    dist, idx = NeighborIndex.build(X, method="exact").kneighbors(2)
    for i in range(3):
        assert i not in idx[i]
        assert sorted(idx[i]) == sorted(set(range(3)) - {i})
        assert (dist[i] == 0).all()  # recomputed from the difference: exactly 0


def test_fewer_rows_than_k_padded():
    X = np.array([[0.0], [1.0]], dtype=np.float32)
    dist, idx = NeighborIndex.build(X, method="exact").kneighbors(3)
    assert idx.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert np.isinf(dist[:, 1:]).all()


def test_query_other_table(blobs):
    index = NeighborIndex.build(blobs, method="exact")
    dist, idx = index.query(blobs[[7, 42]] + 1e-3, 1)
    assert idx[:, 0].tolist() == [7, 42]
    assert (dist[:, 0] < 0.01).all()


def test_approx_agrees_with_exact(blobs):
    pytest.importorskip("faiss")
    _, exact = NeighborIndex.build(blobs, method="exact").kneighbors(10)
    approx_index = NeighborIndex.build(blobs, method="approx", seed=0)
    assert approx_index.method == "approx"
    dist, approx = approx_index.kneighbors(10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall > 0.9
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.mark.parametrize("X, method, msg", [
    (np.zeros((3, 2)) + np.array([np.nan, 0]), "exact", "NaN"),
    (np.zeros((0, 2)), "exact", "shape"),
    (np.zeros((3, 2)), "ball_tree", "not one of"),
])
def test_bad_input_one_line(X, method, msg):
    with pytest.raises(InputError, match=msg) as err:
        NeighborIndex.build(X, method=method)
    assert "\n" not in str(err.value)


def test_query_width_mismatch():
    index = NeighborIndex.build(np.zeros((4, 3)), method="exact")
    with pytest.raises(InputError, match="same feature columns"):
        index.query(np.zeros((2, 4)), 1)
