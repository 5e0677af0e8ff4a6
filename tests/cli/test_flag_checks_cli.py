"""``cleanpipe flag --checks / --against`` end to end on a table with planted data issues."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import one_error_line, run

from cleanpipe.flagsfile import CHECK_COLUMNS, FLAG_COLUMNS
from cleanpipe.settings import CheckSettings


def _flag(p, tmp_path, *extra, name="d"):
    out = tmp_path / f"{name}.flags.parquet"
    res = run("flag", p["data"], "--id", "row_id", "--pred-probs", p["probs"], "--out", out, "--json",
              *extra)
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_checks_find_every_planted_issue_and_leakage(planted_checks, tmp_path):
    p, at = planted_checks, planted_checks["planted"]
    out, summary = _flag(p, tmp_path, "--against", p["other"])
    flags = pq.read_table(out)
    # every input column, then the flag columns, then the check columns
    assert flags.column_names[:5] == p["table"].column_names
    assert flags.column_names[5:10] == list(FLAG_COLUMNS)
    added = flags.column_names[10:]
    assert set(added) <= set(CHECK_COLUMNS)
    col = {c: flags.column(c).to_numpy(zero_copy_only=False) for c in added}

    dup = col["duplicate_set"]
    assert len({int(dup[i]) for i in at["exact_set"]}) == 1 and dup[at["exact_set"][0]] >= 0
    assert col["is_exact_duplicate"][at["exact_set"]].all()
    assert col["is_exact_duplicate"][at["conflict"]].all()
    assert col["label_conflict"][at["conflict"]].all()
    assert not col["label_conflict"][at["exact_set"]].any()  # same label: no conflict
    assert col["is_near_duplicate"][at["near"]].all() and not col["is_exact_duplicate"][at["near"]].any()
    assert dup[at["near"][0]] == dup[at["near"][1]]
    assert col["is_outlier"][at["outlier"]]
    assert int(np.argmax(col["outlier_score"])) == at["outlier"]
    assert col["leaks_into_against"][at["leaked"]].all()
    assert col["leaks_into_against"].sum() == 2
    assert col["against_row"][at["leaked"]].tolist() == at["other_leaks"]
    assert np.isfinite(col["knn_label_score"]).all()

    issues = summary["issues"]
    assert issues["duplicates"]["exact_sets"] == 2 and issues["duplicates"]["exact_rows"] == 6
    assert issues["label_conflicts"] == {"rows": 2, "sets": 1}
    assert issues["outliers"]["rows"] >= 1
    assert issues["leakage"]["rows"] == 2 and issues["leakage"]["against_rows"] == 2
    assert issues["leakage"]["exact_rows"] == 1
    assert summary["settings"]["checks"] == CheckSettings().to_dict()
    assert summary["settings"]["against"] == str(p["other"])
    # the summary file holds the same issues, and names the second table's rows file
    side = json.loads((tmp_path / "d.flags.summary.json").read_text())
    assert side["issues"]["leakage"] == issues["leakage"]
    other = pq.read_table(summary["outputs"]["against"])
    assert other.column("row").to_pylist() == [0, 1, 2]
    assert other.column("leaks_into_main").to_pylist() == [True, True, False]
    assert other.column("main_row").to_pylist()[:2] == at["leaked"]


def test_flag_without_checks_adds_no_check_column(planted_checks, tmp_path):
    out, summary = _flag(planted_checks, tmp_path)
    assert pq.read_table(out).column_names == planted_checks["table"].column_names + list(FLAG_COLUMNS)
    assert "issues" not in summary and "checks" not in summary["settings"]


def test_checks_with_cross_validation_share_the_feature_matrix(planted_checks, tmp_path):
    out = tmp_path / "cv.flags.parquet"
    res = run("flag", planted_checks["data"], "--id", "row_id", "--model", "logreg", "--folds", "3",
              "--checks", "--outlier-z", "5", "--out", out)
    assert res.exit_code == 0, res.output
    assert "data checks:" in res.output and "label conflicts: 2 rows in 1 duplicate set disagree" in res.output
    summary = json.loads((tmp_path / "cv.flags.summary.json").read_text())
    assert summary["settings"]["features"] == ["f0", "f1", "f2"]
    assert summary["issues"]["outliers"]["z"] == 5.0
    assert "leakage" not in summary["issues"]
    assert not (tmp_path / "cv.flags.against.parquet").exists()


def test_checks_are_deterministic(planted_checks, tmp_path):
    a, _ = _flag(planted_checks, tmp_path, "--checks", name="a")
    b, _ = _flag(planted_checks, tmp_path, "--checks", name="b")
    assert pq.read_table(a).equals(pq.read_table(b))


def test_near_radius_zero_leaves_only_exact_duplicates(planted_checks, tmp_path):
    out, summary = _flag(planted_checks, tmp_path, "--checks", "--near-radius", "0")
    near = pq.read_table(out).column("is_near_duplicate").to_numpy(zero_copy_only=False)
    exact = pq.read_table(out).column("is_exact_duplicate").to_numpy(zero_copy_only=False)
    assert (near == exact).all()
    assert summary["issues"]["duplicates"]["radius_calibrated"] is False


# --- one line and exit 2 for each user mistake -------------------------------------------------------


def _error(p, tmp_path, *args):
    return one_error_line(run("flag", p["data"], "--id", "row_id", "--pred-probs", p["probs"],
                              "--out", tmp_path / "e.parquet", *args))


def test_against_with_other_columns(planted_checks, tmp_path):
    pq.write_table(pa.table({"f0": [1.0], "g": [2.0]}), tmp_path / "odd.parquet")
    line = _error(planted_checks, tmp_path, "--against", tmp_path / "odd.parquet")
    assert "--against" in line and "odd.parquet" in line and "f1, f2" in line and "--features" in line
    assert not (tmp_path / "e.parquet").exists()


def test_against_with_a_column_of_another_kind(planted_checks, tmp_path):
    pq.write_table(pa.table({"f0": ["a"], "f1": [1.0], "f2": [2.0]}), tmp_path / "str.parquet")
    line = _error(planted_checks, tmp_path, "--against", tmp_path / "str.parquet")
    assert "'f0'" in line and "string" in line and "--exclude f0" in line


def test_against_that_does_not_exist(planted_checks, tmp_path):
    line = _error(planted_checks, tmp_path, "--against", tmp_path / "nope.parquet")
    assert "--against" in line and "nope.parquet" in line


def test_no_feature_columns_left(planted_checks, tmp_path):
    line = _error(planted_checks, tmp_path, "--checks", "--exclude", "f0,f1,f2")
    assert "no feature columns" in line


@pytest.mark.parametrize("option,value,name", [("--near-radius", "-1", "--near-radius"),
                                               ("--k-neighbors", "0", "--k-neighbors"),
                                               ("--outlier-z", "0", "--outlier-z"),
                                               ("--null-heavy", "1.5", "--null-heavy"),
                                               ("--neighbor-index", "fast", "--neighbor-index")])
def test_bad_check_settings(planted_checks, tmp_path, option, value, name):
    line = _error(planted_checks, tmp_path, "--checks", option, value)
    assert name in line


def test_a_check_setting_without_checks(planted_checks, tmp_path):
    line = _error(planted_checks, tmp_path, "--outlier-z", "4")
    assert "--outlier-z" in line and "--checks" in line


def test_the_output_never_overwrites_the_second_table(planted_checks, tmp_path):
    other = planted_checks["other"]
    before = other.read_bytes()
    line = one_error_line(run("flag", planted_checks["data"], "--pred-probs", planted_checks["probs"],
                              "--against", other, "--out", other))
    assert "--against" in line and "never modified" in line
    # nor does the second table's rows file
    target = tmp_path / "x.flags.against.parquet"
    pq.write_table(pa.table({"a": [1]}), target)
    line = one_error_line(run("flag", planted_checks["data"], "--pred-probs", planted_checks["probs"],
                              "--against", target, "--out", tmp_path / "x.flags.parquet"))
    assert "x.flags.against.parquet" in line
    assert other.read_bytes() == before


def test_a_table_that_already_has_a_check_column(planted_checks, tmp_path):
    t = planted_checks["table"].append_column("is_outlier", pa.array([False] * 300))
    pq.write_table(t, tmp_path / "has.parquet")
    line = one_error_line(run("flag", tmp_path / "has.parquet", "--pred-probs", planted_checks["probs"],
                              "--checks", "--out", tmp_path / "o.parquet"))
    assert "'is_outlier'" in line


def test_flag_checks_never_load_matplotlib(planted_checks, tmp_path):
    # matplotlib wants a writable config folder under HOME: flag (checks and all) must not load it.
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o555)
    code = ("import sys; from cleanpipe.cli import cli\n"
            "try:\n    cli.main(sys.argv[1:], prog_name='cleanpipe')\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print('matplotlib' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(sys.path))
    p = planted_checks
    res = subprocess.run([sys.executable, "-c", code, "flag", str(p["data"]), "--pred-probs", str(p["probs"]),
                          "--against", str(p["other"]), "--out", str(tmp_path / "f.parquet"), "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_multilabel_data_gets_every_check_but_the_label_ones(planted_checks, tmp_path):
    t = planted_checks["table"]
    tags = pa.array([["a"] if y else ["b", "a"] for y in t.column("label").to_pylist()])
    pq.write_table(t.drop_columns(["label"]).append_column("tags", tags), tmp_path / "ml.parquet")
    probs = np.clip(np.stack([np.full(300, 0.9), t.column("label").to_numpy() * -0.8 + 0.9], 1), 0.05, 0.95)
    np.save(tmp_path / "ml.npy", probs)
    res = run("flag", tmp_path / "ml.parquet", "--label", "tags", "--id", "row_id", "--pred-probs",
              tmp_path / "ml.npy", "--checks", "--out", tmp_path / "ml.flags.parquet", "--json")
    assert res.exit_code == 0, res.output
    issues = json.loads(res.stdout)["issues"]
    assert issues["duplicates"]["exact_sets"] == 2 and "label_conflicts" not in issues
    flags = pq.read_table(tmp_path / "ml.flags.parquet")
    assert "is_outlier" in flags.column_names and "knn_label_score" not in flags.column_names


def test_knn_weight_adds_the_knn_assisted_rule_beside_the_flags(planted_checks, tmp_path):
    out, summary = _flag(planted_checks, tmp_path, "--checks", "--knn-weight", "0.2")
    flags = pq.read_table(out)
    assert {"knn_is_label_issue", "knn_label_quality"} <= set(flags.column_names)
    k = summary["issues"]["knn_labels"]
    assert k["weight"] == 0.2 and k["label_issues"] == sum(flags.column("knn_is_label_issue").to_pylist())
    plain, _ = _flag(planted_checks, tmp_path, "--checks", name="plain")
    # the detector's own flags do not change
    assert flags.column("is_label_issue").equals(pq.read_table(plain).column("is_label_issue"))
    assert "knn_is_label_issue" not in pq.read_table(plain).column_names
