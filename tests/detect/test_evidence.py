"""The labels of a row's duplicates as evidence for the label detector."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import cleanpipe
from cleanpipe.detect.evidence import with_duplicate_labels


def test_known_answer_two_votes_against():
    # rows 0-2 are one set labelled (1, 1, 0); row 3 is alone. Row 2's others report class 1
    # twice: odds x ((1 - 0.2) * 1 / 0.2)^2 = 16, so (0.6, 0.4 * 16) / 7. Rows 0 and 1 see one
    # report of each class: unchanged. Row 3 is in no set: unchanged.
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.5, 0.5]])
    out = with_duplicate_labels(p, np.array([1, 1, 0, 0]), np.array([0, 0, 0, -1]), noise=0.2)
    np.testing.assert_allclose(out[2], [0.6 / 7, 6.4 / 7])
    np.testing.assert_allclose(out[[0, 1, 3]], p[[0, 1, 3]])


def test_nothing_to_use_returns_the_input_itself():
    p = np.full((3, 2), 0.5)
    assert with_duplicate_labels(p, np.array([0, 1, 0]), np.array([-1, -1, -1]), noise=0.3) is p
    assert with_duplicate_labels(p, np.array([0, 1, 0]), np.array([0, 0, -1]), noise=0.0) is p
    # an unlabelled member reports nothing, but learns from its labelled copy
    out = with_duplicate_labels(p, np.array([0, -1, 0]), np.array([0, 0, -1]), noise=0.3)
    np.testing.assert_allclose(out[[0, 2]], p[[0, 2]])
    np.testing.assert_allclose(out[1], [0.7, 0.3])  # odds (1 - 0.3) / 0.3 for class 0


@st.composite
def problems(draw):
    n = draw(st.integers(2, 40))
    k = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    p = rng.dirichlet(np.ones(k), n)
    labels = rng.integers(-1, k, n)
    sets = rng.integers(-1, max(1, n // 3), n)
    return p, labels, sets, draw(st.floats(0.01, 0.49))


@given(problems())
@settings(max_examples=60, deadline=None)
def test_properties(problem):
    p, labels, sets, noise = problem
    out = with_duplicate_labels(p, labels, sets, noise=noise)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    alone = sets < 0
    np.testing.assert_allclose(out[alone], p[alone])
    # the order of the rows does not matter
    perm = np.random.default_rng(0).permutation(len(p))
    np.testing.assert_allclose(with_duplicate_labels(p[perm], labels[perm], sets[perm], noise=noise),
                               out[perm], atol=1e-12)
    # a set whose other members all carry a row's own label never lowers that label's probability
    for s in np.unique(sets[sets >= 0]):
        members = np.flatnonzero(sets == s)
        for r in members:
            others = labels[members[members != r]]
            if labels[r] >= 0 and len(others) and np.all(others == labels[r]):
                assert out[r, labels[r]] >= p[r, labels[r]] - 1e-12


def _table_with_a_conflicting_copy():
    """400 rows, two features; rows 1-3 copy row 0 and its label, row 4 copies it with the other."""
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = (df.a + 0.3 * rng.normal(size=n) > 0).astype(int)
    for i in range(1, 5):
        df.loc[i, ["a", "b"]] = df.loc[0, ["a", "b"]]
        df.loc[i, "y"] = df.loc[0, "y"] if i < 4 else 1 - df.loc[0, "y"]
    return df


def test_flag_uses_the_duplicates_labels():
    df = _table_with_a_conflicting_copy()
    with_evidence = cleanpipe.flag_table(df, label="y", model="logreg",
                                         checks=cleanpipe.CheckSettings()).table.to_pandas()
    without = cleanpipe.flag_table(df, label="y", model="logreg",
                                   checks=cleanpipe.CheckSettings(duplicate_noise=0.0)).table.to_pandas()
    # the copy whose label four equal rows contradict is flagged only with the evidence
    assert with_evidence.is_label_issue[4] and not without.is_label_issue[4]
    assert not with_evidence.is_label_issue[:4].any()
    assert with_evidence.label_score[4] < without.label_score[4]


def test_flag_reads_a_parquet_file_of_probabilities_as_it_reads_an_array(tmp_path):
    # The duplicates' evidence takes rows in any order; a Parquet file of probabilities (read
    # lazily, by row slices) must give the flags a .npy file gives.
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from cleanpipe.cli import cli

    df = _table_with_a_conflicting_copy()
    p1 = 1.0 / (1.0 + np.exp(-3.0 * df.a.to_numpy()))
    probs = np.c_[1.0 - p1, p1]
    pq.write_table(pa.table({"0": probs[:, 0], "1": probs[:, 1]}), tmp_path / "probs.parquet")
    np.save(tmp_path / "probs.npy", probs)
    df.to_parquet(tmp_path / "data.parquet")
    out = {}
    for kind in ("parquet", "npy"):
        res = CliRunner().invoke(cli, ["flag", str(tmp_path / "data.parquet"), "--label", "y", "--checks",
                                       "--pred-probs", str(tmp_path / f"probs.{kind}"),
                                       "--out", str(tmp_path / f"flags_{kind}.parquet"), "-q"])
        assert res.exit_code == 0, res.output
        out[kind] = pd.read_parquet(tmp_path / f"flags_{kind}.parquet")
    for name in ("is_label_issue", "label_score", "label_conflict"):
        np.testing.assert_array_equal(out["parquet"][name], out["npy"][name])
    assert out["npy"].is_label_issue[4]
