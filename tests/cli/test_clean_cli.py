"""``cleanpipe clean`` end to end through click's CliRunner."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpipe import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS as OUTPUT_COLUMNS

from cli_helpers import one_error_line, run


@pytest.fixture
def flags_file(tmp_path):
    """A flags file and its sidecar summary, as cleanpipe flag writes them (probabilities given)."""
    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 3
    noisy = np.where(rng.random(n) < 0.15, (y + 1) % 3, y)
    probs = np.exp(rng.normal(0, 1, (n, 3)) + 4 * np.eye(3)[y])
    probs /= probs.sum(axis=1, keepdims=True)
    table = pa.table({"row_id": np.arange(n), "x": rng.normal(y, 1.0),
                      "target": pa.array(np.array(["a", "b", "c"])[noisy].tolist(), mask=np.arange(n) < 2)})
    res = flag_table(table, label="target", pred_probs=probs, source="t.parquet")
    path = tmp_path / "t.flags.parquet"
    pq.write_table(res.table.replace_schema_metadata(
        {b"cleanpipe.flag": json.dumps({"settings": res.summary["settings"]}).encode()}), path)
    (tmp_path / "t.flags.summary.json").write_text(json.dumps(res.summary))
    return path, res.table


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["drop", "weight", "relabel"])
def test_each_mode_keeps_columns_records_provenance_and_leaves_the_input(flags_file, tmp_path, mode):
    path, flags = flags_file
    before = _digest(path)
    out = tmp_path / f"{mode}.parquet"
    res = run("clean", path, "--mode", mode, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    assert _digest(path) == before
    report = json.loads(res.stdout)
    t = pq.read_table(out)
    issue = flags.column("is_label_issue").to_numpy()
    extra = {"drop": [], "weight": ["sample_weight"], "relabel": ["original_label"]}[mode]
    assert t.column_names == flags.column_names + extra
    assert t.num_rows == (flags.num_rows - issue.sum() if mode == "drop" else flags.num_rows)
    assert report["rows_out"] == t.num_rows and report["flagged"] == issue.sum()
    meta = json.loads(t.schema.metadata[b"cleanpipe.clean"])
    assert meta["source"] == str(path) and meta["settings"]["mode"] == mode
    assert meta["counts"]["rows_in"] == flags.num_rows and meta["cleanpipe_version"]
    assert meta["flag_summary"].endswith("t.flags.summary.json") and len(meta["noise_matrix"]) == 3
    assert b"cleanpipe.flag" in t.schema.metadata  # the flag provenance travels along
    if mode == "relabel":
        # the label column came from the sidecar summary (no --label given)
        assert meta["settings"]["label"] == "target"
        assert t.column("original_label").equals(flags.column("target"))
    if mode == "weight":
        w = t.column("sample_weight").to_numpy()
        assert np.all(w[~issue] == 1) and np.all((w >= 0) & (w <= 1))


def test_drop_flag_columns_and_default_out(flags_file, tmp_path, monkeypatch):
    path, flags = flags_file
    monkeypatch.chdir(tmp_path)
    res = run("clean", path, "--drop-flag-columns", "-q")
    assert res.exit_code == 0 and res.output == ""
    t = pq.read_table(tmp_path / "t.cleaned.parquet")
    assert t.column_names == ["row_id", "x", "target", "original_label"]  # the default mode: relabel


def test_out_equal_to_input_is_refused(flags_file):
    path, _ = flags_file
    before = _digest(path)
    assert "would overwrite the input" in one_error_line(run("clean", path, "--out", path))
    assert _digest(path) == before


def test_user_errors_are_one_line(flags_file, tmp_path):
    path, flags = flags_file
    assert "does not exist" in one_error_line(run("clean", tmp_path / "nope.parquet", "--out", tmp_path / "o.parquet"))
    assert "--mode 'shred' is not known" in one_error_line(run("clean", path, "--mode", "shred", "--out", tmp_path / "o.parquet"))
    plain = tmp_path / "plain.parquet"
    pq.write_table(flags.drop_columns(list(OUTPUT_COLUMNS)), plain)
    line = one_error_line(run("clean", plain, "--out", tmp_path / "o.parquet"))
    assert "column 'given_label' is missing" in line and "run cleanpipe flag first" in line
    assert not (tmp_path / "o.parquet").exists()
