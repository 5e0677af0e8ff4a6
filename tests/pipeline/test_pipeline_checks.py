"""A pipeline that runs the data checks in its flag stage and drops duplicates and outliers in clean."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli

from cleanpipe.pipeline.config import load_pipeline
from cleanpipe.settings import CheckSettings

PIPE = """
stages = ["oof", "flag", "clean"]
[source]
type = "parquet"
path = "data.parquet"
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
[flag]
checks = true
against = "other.parquet"
[checks]
outlier_z = 4.0
[clean]
mode = "weight"
drop_duplicates = true
drop_outliers = true
"""


def _write(tmp_path, text=PIPE):
    pipe = tmp_path / "checks.toml"
    pipe.write_text(text)
    return pipe


def test_pipeline_runs_the_checks_and_clean_drops_what_they_found(planted_checks, tmp_path):
    at = planted_checks["planted"]
    pipe = _write(tmp_path)
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--run-id", "r1")
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "checks" / "r1"
    flags = pq.read_table(run_dir / "flag" / "flags.parquet")
    assert flags.column("label_conflict").to_pylist()[4:6] == [True, True]
    assert flags.column("is_outlier").to_pylist()[at["outlier"]] is True
    summary = json.loads((run_dir / "flag" / "summary.json").read_text())
    assert summary["settings"]["checks"] == dict(CheckSettings(outlier_z=4.0).to_dict())
    assert summary["issues"]["leakage"]["rows"] == 2
    other = pq.read_table(run_dir / "flag" / "against.parquet")
    assert other.column("leaks_into_main").to_pylist() == [True, True, False]
    m = manifest(run_dir)
    assert m["stages"]["flag"]["summary"]["issues"]["label_conflicts"] == {"rows": 2, "sets": 1}
    cleaned = pq.read_table(run_dir / "clean" / "cleaned.parquet")
    ids = set(cleaned.column("row_id").to_pylist())
    assert at["outlier"] * 10 not in ids and at["exact_set"][0] * 10 in ids
    assert not {r * 10 for r in at["exact_set"][1:]} & ids
    counts = json.loads((run_dir / "clean" / "summary.json").read_text())
    assert counts["duplicates_dropped"] >= 5 and counts["outliers_dropped"] >= 1
    # resumed: nothing runs again; a changed check setting re-runs flag and clean, not oof
    again = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--run-id", "r1", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["actions"] == {"oof": "reused", "flag": "reused", "clean": "reused"}
    changed = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--run-id", "r1", "--json",
                      "--set", "checks.outlier_z=5.0")
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["actions"] == {"oof": "reused", "flag": "ran", "clean": "ran"}


@pytest.mark.parametrize("edit,expect", [
    (("against = \"other.parquet\"", "against = \"missing.parquet\""), "[flag] against"),
    (("outlier_z = 4.0", "outlier_z = 0"), "[checks] outlier_z"),
    (("outlier_z = 4.0", "k = 0"), "[checks] k"),
    (("outlier_z = 4.0", "radius = 1"), "[checks] has an unknown key 'radius'"),
    (("checks = true\nagainst = \"other.parquet\"", "checks = false"), "[clean] drop_duplicates"),
])
def test_bad_check_settings_are_one_line(planted_checks, tmp_path, edit, expect):
    pipe = _write(tmp_path, PIPE.replace(*edit))
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and expect in lines[0], res.output


def test_against_is_relative_to_the_pipeline_file(planted_checks, tmp_path):
    p = load_pipeline(_write(tmp_path))
    assert p.flag.against == str(planted_checks["other"].resolve())
    assert p.flag.runs_checks and p.checks.outlier_z == 4.0


def test_the_run_directory_never_lands_on_the_second_table(planted_checks, tmp_path):
    inside = tmp_path / "runs" / "checks" / "r1" / "flag" / "against.parquet"
    pipe = _write(tmp_path, PIPE.replace('against = "other.parquet"', f'against = "{inside}"'))
    inside.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(planted_checks["other"]), inside)
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--run-id", "r1")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "[flag] against" in lines[0], res.output
