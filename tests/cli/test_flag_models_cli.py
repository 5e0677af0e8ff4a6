"""``cleanpipe flag --model hgb,logreg`` and ``[oof] model = [...]``: ensembles end to end."""

from __future__ import annotations

import json
import textwrap
import warnings

import numpy as np
import pyarrow.parquet as pq

from cleanpipe.errors import CleanpipeWarning

from cli_helpers import one_error_line, run


def test_cli_flag_with_two_model_families(small_table, tmp_path):
    table, flip = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    out = tmp_path / "t.flags.parquet"
    res = run("flag", src, "--out", out, "--model", "hgb,logreg", "--folds", "3", "--json",
              "--save-pred-probs", tmp_path / "p.npy")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["settings"]["model"] == "hgb,logreg"
    flags = pq.read_table(out).column("is_label_issue").to_numpy()
    assert flags[flip].mean() >= 0.7 and flags.sum() <= 2 * flip.sum()
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (table.num_rows, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_cli_unknown_model_in_a_list_is_exit_2_in_one_line(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    line = one_error_line(run("flag", src, "--out", tmp_path / "o.parquet", "--model", "hgb,catboost"))
    assert "'catboost'" in line and "hgb, logreg" in line
    assert not (tmp_path / "o.parquet").exists()



def test_cli_multi_label_only_model_on_single_labels_is_exit_2_in_one_line(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    line = one_error_line(run("flag", src, "--out", tmp_path / "o.parquet", "--model", "mlp",
                              "--folds", "3"))
    assert "--model mlp is for multi-label labels only" in line and "--multi-label" in line
    assert not (tmp_path / "o.parquet").exists()

def test_pipeline_model_list(tmp_path, small_table):
    from cleanpipe.pipeline import load_pipeline

    table, _ = small_table
    pq.write_table(table, tmp_path / "data.parquet")
    text = textwrap.dedent("""
        stages = ["oof", "flag"]
        [source]
        type = "parquet"
        path = "data.parquet"
        [oof]
        model = ["logreg", "hgb"]
        folds = 3
    """)
    (tmp_path / "p.toml").write_text(text)
    assert load_pipeline(tmp_path / "p.toml").oof.model == "logreg,hgb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CleanpipeWarning)
        res = run("run", tmp_path / "p.toml", "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 0, res.output
    run_dir = (tmp_path / "runs" / "p" / "latest").resolve()
    info = json.loads(next(run_dir.rglob("oof.json")).read_text())
    assert info["model"] == "logreg,hgb"
    (tmp_path / "bad.toml").write_text(text.replace('"hgb"]', '"catboost"]'))
    line = one_error_line(run("run", tmp_path / "bad.toml", "--runs-dir", tmp_path / "runs2"))
    assert "[oof] model = 'catboost' is not known" in line and "hgb, logreg" in line
