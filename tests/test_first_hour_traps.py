"""Small traps a new user met: a report of a raw table, a category label, predict's multi-label cut."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from cleanpipe.cli import cli


def _run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def test_report_on_a_table_flag_did_not_write_says_so(tmp_path):
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "label": [0, 1]}), raw)
    res = _run("report", raw, "--out", tmp_path / "r.html")
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert "not a flags table" in line and "cleanpipe flag" in line and "summary" not in line


def test_a_category_label_comes_back_as_a_category(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    tier = pa.array(np.array(["basic", "gold"])[y]).dictionary_encode()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": rng.normal(y * 2.0, 1.0), "tier": tier}), path)
    assert _run("retrain", path, "--label", "tier", "--out", tmp_path / "m", "--epochs", "2",
                "--threads", "1", "-q").exit_code == 0
    assert _run("predict", tmp_path / "m", path, "--out", tmp_path / "p.parquet", "-q").exit_code == 0
    got = pq.read_table(tmp_path / "p.parquet").schema.field("predicted_label").type
    assert pa.types.is_dictionary(got) and got.value_type == pa.string()


def test_predict_help_names_the_tuned_cut():
    text = " ".join(_run("predict", "--help").output.split())
    assert "tuned on its validation rows" in text
