"""clean --drop-duplicates / --drop-outliers on the columns of flag --checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanpipe import clean_table, flag_table
from cleanpipe.clean import first_of_each_set
from cleanpipe.flagsfile import CHECK_COLUMNS
from cleanpipe.cli import cli
from cleanpipe.settings import CheckSettings
from click.testing import CliRunner


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def flagged(planted_checks):
    probs = np.load(planted_checks["probs"])
    return flag_table(planted_checks["table"], ids=["row_id"], pred_probs=probs,
                      checks=CheckSettings()).table


def test_first_of_each_set_known_answer():
    sets = np.array([3, -1, 3, 7, 3, 7, -1])
    drop, seen = first_of_each_set(sets, np.ones(7, bool))
    assert drop.tolist() == [False, False, True, False, True, True, False]
    assert seen.tolist() == [3, 7]
    # the first row of set 3 is gone already: its next one keeps the set
    drop, _ = first_of_each_set(sets, np.array([False, True, True, True, True, True, True]))
    assert drop.tolist() == [False, False, False, False, True, True, False]


@given(st.lists(st.integers(-1, 5), min_size=1, max_size=60), st.integers(1, 60))
def test_one_row_per_set_whether_cleaned_whole_or_in_batches(sets, batch):
    sets = np.array(sets)
    whole, _ = first_of_each_set(sets, np.ones(len(sets), bool))
    kept = sets[~whole]
    assert sorted(kept[kept >= 0].tolist()) == sorted(set(sets[sets >= 0].tolist()))  # one of each
    assert not whole[sets < 0].any()  # rows in no set are never dropped
    parts, seen = [], None
    for a in range(0, len(sets), batch):
        drop, seen = first_of_each_set(sets[a:a + batch], np.ones(len(sets[a:a + batch]), bool), seen)
        parts.append(drop)
    assert np.concatenate(parts).tolist() == whole.tolist()


def test_drop_duplicates_keeps_the_first_row_of_each_set(flagged, planted_checks):
    at = planted_checks["planted"]
    res = clean_table(flagged, mode="weight", drop_duplicates=True)
    ids = res.table.column("row_id").to_pylist()
    first, *rest = at["exact_set"]
    assert first * 10 in ids and not {r * 10 for r in rest} & set(ids)
    assert (at["conflict"][0] * 10 in ids) and (at["conflict"][1] * 10 not in ids)
    assert at["near"][0] * 10 in ids and at["near"][1] * 10 not in ids
    sets = pc_sets(res.table)
    assert len(sets[sets >= 0]) == len(set(sets[sets >= 0].tolist()))  # one row per set is left
    assert res.counts["duplicates_dropped"] == flagged.num_rows - res.table.num_rows
    assert res.table.column_names == flagged.column_names + ["sample_weight"]


def pc_sets(table):
    return table.column("duplicate_set").to_numpy(zero_copy_only=False)


def test_drop_outliers_and_duplicates_with_drop_mode(flagged, planted_checks):
    at = planted_checks["planted"]
    res = clean_table(flagged, mode="drop", drop_duplicates=True, drop_outliers=True)
    issue = flagged.column("is_label_issue").to_numpy(zero_copy_only=False)
    outlier = flagged.column("is_outlier").to_numpy(zero_copy_only=False)
    ids = set(res.table.column("row_id").to_pylist())
    assert at["outlier"] * 10 not in ids
    assert not res.table.column("is_outlier").to_numpy(zero_copy_only=False).any()
    c = res.counts
    assert c["dropped"] == issue.sum() and c["outliers_dropped"] == (outlier & ~issue).sum()
    assert c["rows_out"] == flagged.num_rows - c["dropped"] - c["outliers_dropped"] - c["duplicates_dropped"]
    sets = pc_sets(res.table)
    assert len(sets[sets >= 0]) == len(set(sets[sets >= 0].tolist()))


def test_clean_cli_drops_duplicates_and_outliers_and_never_touches_the_input(planted_checks, tmp_path):
    flags = tmp_path / "d.flags.parquet"
    res = _run("flag", planted_checks["data"], "--id", "row_id", "--pred-probs", planted_checks["probs"],
               "--checks", "--out", flags, "-q")
    assert res.exit_code == 0, res.output
    before = flags.read_bytes()
    out = tmp_path / "d.cleaned.parquet"
    res = _run("clean", flags, "--mode", "weight", "--drop-duplicates", "--drop-outliers", "--out", out,
               "--json")
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout)
    assert counts["duplicates_dropped"] >= 5 and counts["outliers_dropped"] >= 1
    cleaned = pq.read_table(out)
    assert cleaned.num_rows == counts["rows_out"] == 300 - counts["duplicates_dropped"] - counts["outliers_dropped"]
    assert set(pq.read_table(flags).column_names) <= set(cleaned.column_names)
    assert flags.read_bytes() == before
    meta = json.loads(cleaned.schema.metadata[b"cleanpipe.clean"])
    assert meta["settings"]["drop_outliers"] is True and "duplicates_dropped" in meta["counts"]


def test_drop_duplicates_without_the_check_columns_is_one_line(planted_checks, tmp_path):
    flags = tmp_path / "plain.flags.parquet"
    assert _run("flag", planted_checks["data"], "--pred-probs", planted_checks["probs"], "--out", flags,
                "-q").exit_code == 0
    res = _run("clean", flags, "--drop-duplicates", "--out", tmp_path / "c.parquet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "duplicate_set" in lines[0] and "--checks" in lines[0]


def test_drop_flag_columns_removes_the_check_columns_too(flagged, planted_checks):
    res = clean_table(flagged, mode="drop", drop_duplicates=True, drop_flag_columns=True)
    assert res.table.column_names == planted_checks["table"].column_names


def test_retrain_never_trains_on_a_check_column(flagged, tmp_path):
    from cleanpipe.train import NON_FEATURE_COLUMNS, retrain_table
    from cleanpipe.settings import TrainConfig

    assert set(CHECK_COLUMNS) <= set(NON_FEATURE_COLUMNS)
    cleaned = clean_table(flagged, mode="weight", drop_duplicates=True).table
    result = retrain_table(cleaned, label="label", ids=["row_id"],
                           config=TrainConfig(epochs=1, hidden=(8,), device="cpu", threads=1))
    assert sorted(result.spec["preprocessing"]["columns"]) == ["f0", "f1", "f2"]
