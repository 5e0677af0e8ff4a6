"""flag, retrain and predict read CSV, JSON lines, Feather and standard input as they read Parquet."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli

FLAG = ["--label", "label", "--id", "row_id", "--model", "logreg", "--folds", "3", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 3, n)
    t = pa.table({"row_id": np.arange(n), "a": rng.normal(y, 1.0), "b": rng.normal(-y, 1.0),
                  "colour": pa.array(np.array(["red", "green", "blue"])[rng.integers(0, 3, n)]),
                  "label": pa.array(np.array(["x", "y", "z"])[np.where(rng.random(n) < 0.1, (y + 1) % 3, y)])})
    pq.write_table(t, d / "t.parquet")
    pcsv.write_csv(t, d / "t.csv")
    pcsv.write_csv(t, d / "t.semi", pcsv.WriteOptions(delimiter=";"))
    (d / "t.jsonl").write_text("\n".join(json.dumps(r) for r in t.to_pylist()) + "\n")
    feather.write_feather(t, d / "t.feather")
    return d


def _flags(args, tmp_path, name, **kw):
    out = tmp_path / f"{name}.flags.parquet"
    res = CliRunner().invoke(cli, ["flag", *map(str, args), *FLAG, "--out", str(out)], **kw)
    assert res.exit_code == 0, res.output
    return pq.read_table(out)


@pytest.mark.parametrize("args", [["t.csv"], ["t.jsonl"], ["t.feather"],
                                  ["t.semi", "--format", "csv", "--delimiter", ";"]])
def test_flag_gives_the_parquet_flags_on_every_format(files, tmp_path, args):
    want = _flags([files / "t.parquet"], tmp_path, "pq")
    got = _flags([files / args[0], *args[1:]], tmp_path, "other")
    for col in ("row_id", "given_label", "is_label_issue"):
        assert got.column(col).to_pylist() == want.column(col).to_pylist()
    np.testing.assert_allclose(got.column("label_score").to_numpy(), want.column("label_score").to_numpy(),
                               rtol=1e-9)


def test_flag_reads_standard_input(files, tmp_path):
    want = _flags([files / "t.parquet"], tmp_path, "pq")
    got = _flags(["-"], tmp_path, "stdin", input=(files / "t.csv").read_bytes())
    assert got.column("is_label_issue").to_pylist() == want.column("is_label_issue").to_pylist()


def test_a_ragged_csv_is_one_line_naming_the_line(files, tmp_path):
    bad = tmp_path / "bad.csv"
    lines = (files / "t.csv").read_text().splitlines()
    lines[7] += ",extra"
    bad.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(cli, ["flag", str(bad), *FLAG, "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and "line 8" in err and str(bad) in err
    assert not (tmp_path / "o.parquet").exists()


def test_retrain_and_predict_read_csv(files, tmp_path):
    model = tmp_path / "m"
    res = CliRunner().invoke(cli, ["retrain", str(files / "t.csv"), "--id", "row_id", "--out", str(model),
                                   "--epochs", "2", "--threads", "1", "-q"])
    assert res.exit_code == 0, res.output
    preds = tmp_path / "p.parquet"
    res = CliRunner().invoke(cli, ["predict", str(model), str(files / "t.jsonl"), "--out", str(preds), "-q"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(preds).num_rows == 240
