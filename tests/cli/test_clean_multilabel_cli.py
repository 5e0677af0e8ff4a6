"""``cleanpipe clean`` on multi-label flags files: probabilities found through the summary, errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cleanpipe.flag import flag_multilabel_table

from cli_helpers import run

TAGS = np.array(["a", "b", "c"])


def _write(tmp_path, *, save_probs: bool):
    """A flags file + summary for 60 rows whose out-of-fold probabilities are the given tags
    except row 0, where tag c (not given) has p = 0.97: flag suspects it and relabel adds it."""
    rng = np.random.default_rng(0)
    Y = (rng.random((60, 3)) < 0.4).astype(int)
    Y[0] = [1, 0, 0]
    probs = np.where(Y == 1, 0.96, 0.03)
    probs[0, 2] = 0.97
    table = pa.table({"x": rng.normal(size=60),
                      "tags": pa.array([TAGS[r.astype(bool)].tolist() for r in Y], type=pa.list_(pa.string()))})
    res = flag_multilabel_table(table, label="tags", pred_probs=probs)
    meta = {b"cleanpipe.flag": json.dumps({"settings": res.summary["settings"]}).encode()}
    pq.write_table(res.table.replace_schema_metadata(meta), tmp_path / "t.flags.parquet")
    summary = dict(res.summary)
    if save_probs:
        np.save(tmp_path / "oof.npy", probs)
        summary["outputs"] = {"pred_probs": "oof.npy"}  # relative: found beside the summary
    (tmp_path / "t.flags.summary.json").write_text(json.dumps(summary))
    return res.table


def test_relabel_finds_the_probabilities_through_the_summary(tmp_path):
    flags = _write(tmp_path, save_probs=True)
    before = (tmp_path / "t.flags.parquet").read_bytes()
    res = run("clean", tmp_path / "t.flags.parquet", "--out", tmp_path / "c.parquet", "--json")
    assert res.exit_code == 0, res.output
    counts = json.loads(res.output)
    assert counts["tags_added"] == 1 and counts["tags_removed"] == 0 and counts["rows_out"] == 60
    out = pq.read_table(tmp_path / "c.parquet")
    assert out.column("tags")[0].as_py() == ["a", "c"]
    assert out.column("original_label").to_pylist() == flags.column("tags").to_pylist()
    assert out.column_names == flags.column_names + ["original_label"]
    meta = json.loads(out.schema.metadata[b"cleanpipe.clean"])
    assert meta["settings"]["multi_label"] is True and meta["pred_probs"].endswith("oof.npy")
    assert (tmp_path / "t.flags.parquet").read_bytes() == before

    res = run("clean", tmp_path / "t.flags.parquet", "--mode", "drop", "--out", tmp_path / "d.parquet", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows_out"] == 60 - int(flags.column("is_label_issue").to_numpy().sum())


def test_relabel_without_probabilities_says_how_to_get_them(tmp_path):
    _write(tmp_path, save_probs=False)
    res = run("clean", tmp_path / "t.flags.parquet", "--out", tmp_path / "c.parquet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "--save-pred-probs" in lines[0], res.output
    res = run("clean", tmp_path / "t.flags.parquet", "--mode", "weight", "--out", tmp_path / "w.parquet", "-q")
    assert res.exit_code == 0, res.output
