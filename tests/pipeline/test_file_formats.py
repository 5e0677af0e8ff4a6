"""Pipelines read CSV, JSON-lines and Feather sources and flag them as they flag Parquet."""

from __future__ import annotations

import json

import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import run_cli

PIPE = """
stages = ["oof", "flag"]
[source]
type = "{kind}"
path = "{path}"
{extra}
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
"""


def _flags(tmp_path, name, kind, path, extra=""):
    pipe = tmp_path / f"{name}.toml"
    pipe.write_text(PIPE.format(kind=kind, path=path, extra=extra))
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--run-id", "r1", "--json")
    assert res.exit_code == 0, res.output
    return pq.read_table(tmp_path / "runs" / name / "r1" / "flag" / "flags.parquet")


@pytest.mark.parametrize("kind", ["csv", "jsonl", "feather", "tsv"])
def test_a_file_source_in_any_format_gives_the_parquet_flags(tmp_path, tiny_table, kind):
    pq.write_table(tiny_table, tmp_path / "data.parquet")
    want = _flags(tmp_path, "pq", "parquet", "data.parquet")
    extra = ""
    if kind == "csv":
        pcsv.write_csv(tiny_table, tmp_path / "data.csv")
    elif kind == "tsv":  # a semicolon file with another name: the delimiter is given
        pcsv.write_csv(tiny_table, tmp_path / "data.tsv", pcsv.WriteOptions(delimiter=";"))
        kind, extra = "csv", 'delimiter = ";"'
    elif kind == "jsonl":
        (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in tiny_table.to_pylist()))
    else:
        feather.write_feather(tiny_table, tmp_path / "data.feather")
    name = {"csv": "data.csv", "jsonl": "data.jsonl", "feather": "data.feather"}[kind]
    name = "data.tsv" if extra else name
    got = _flags(tmp_path, "other", kind, name, extra)
    for col in ("row_id", "is_label_issue"):
        assert got.column(col).to_pylist() == want.column(col).to_pylist()
    assert got.column("label_score").to_pylist() == pytest.approx(
        want.column("label_score").to_pylist(), rel=1e-9)


@pytest.mark.parametrize("extra,expect", [
    ('delimiter = ";"', "apply to type = \"csv\" only"),
    ('header = false', "apply to type = \"csv\" only"),
])
def test_csv_options_on_another_type_are_refused(tmp_path, tiny_table, extra, expect):
    feather.write_feather(tiny_table, tmp_path / "data.feather")
    pipe = tmp_path / "p.toml"
    pipe.write_text(PIPE.format(kind="feather", path="data.feather", extra=extra))
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2 and expect in res.stderr, res.output


def test_a_ragged_csv_source_fails_in_one_line(tmp_path):
    (tmp_path / "data.csv").write_text("row_id,x,label\n1,0.5,a\n2,0.1,b,9\n")
    pipe = tmp_path / "p.toml"
    pipe.write_text(PIPE.format(kind="csv", path="data.csv", extra=""))
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Expected 3 columns, got 4" in lines[0], res.stderr
