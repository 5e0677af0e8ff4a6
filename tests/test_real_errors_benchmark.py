"""benchmarks/real_errors.py without its data: it says how to get them and exits 0."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import real_errors  # noqa: E402


def test_skips_cleanly_without_data(tmp_path, capsys):
    assert real_errors.main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "git clone https://github.com/cleanlab/label-errors" in out and "skipping" in out


def test_scores_inside_the_reviewed_rows():
    # 6 rows, rows 0-3 reviewed, rows 0 and 1 confirmed errors; a flag outside the reviewed rows
    # counts as a flag but not against precision.
    data = {"reviewed": np.array([1, 1, 1, 1, 0, 0], bool), "is_error": np.array([1, 1, 0, 0, 0, 0], bool)}
    row = real_errors.flag_row(data, np.array([1, 0, 1, 0, 1, 0], bool))
    assert row["flags"] == 3 and row["flags_rev"] == 2
    assert row["prec_rev"] == 0.5 and row["rec"] == 0.5 and row["f1_rev"] == 0.5
    ranks = real_errors.rank_row(data, np.array([0.9, 0.8, 0.1, 0.2, 0.95, 0.0]))
    assert ranks["auroc_rev"] == 1.0 and ranks["auprc_rev"] == 1.0
    assert ranks["auroc_all"] < 1.0  # the unreviewed row 4 ranks first and counts as correct
