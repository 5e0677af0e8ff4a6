"""A multi-label pipeline partition by partition on Dask (``[oof] backend = "dask"``, with a
``[flag] pred_probs`` column or the tag probabilities fitted on the workers): the flags of
``cleanpipe flag --engine dask``, cleaned partition by partition; relabel refused before any work
(issue 21)."""

from __future__ import annotations

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import run_cli

distributed = pytest.importorskip("distributed")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_partitioned_oof_multilabel import make_rows, write_rows  # noqa: E402
from test_partitions_multilabel import COLUMNS, read_flags, write_tag_dataset  # noqa: E402


def pipeline_file(folder, scheduler, *, extra="", stages='["flag", "clean"]', probs=True, oof=""):
    path = folder / "tags.toml"
    path.write_text(f'name = "tags"\nstages = {stages}\n[source]\ntype = "parquet"\npath = "data"\n'
                    '[columns]\nlabel = "tags"\nids = ["id"]\n'
                    f'[oof]\nbackend = "dask"\nscheduler = "{scheduler}"\n{oof}'
                    + ('[flag]\npred_probs = "probs"\n' if probs else "") + extra)
    return path


def run_as_flag(tmp_path, scheduler, flag_args, *, probs, oof=""):
    """``cleanpipe flag --engine dask --label tags FLAG_ARGS`` into ``ref/``, and the pipeline's
    flag and clean (``drop``) stages on the same dataset: both succeed and flag alike. Returns
    (the run directory, the reference flags, the flag stage's summary)."""
    ref = tmp_path / "ref"
    res = run_cli("flag", tmp_path / "data", "--engine", "dask", "--scheduler", scheduler,
                  "--label", "tags", *flag_args, "--out", ref, "--json")
    assert res.exit_code == 0, res.output
    pipe = pipeline_file(tmp_path, scheduler, probs=probs, oof=oof, extra='[clean]\nmode = "drop"\n')
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    got, want = read_flags(os.path.join(run_dir, "flag", "flags")), read_flags(ref)
    for col in ("id", *COLUMNS):
        assert got[col].to_pylist() == want[col].to_pylist(), col
    summary = json.loads(open(os.path.join(run_dir, "flag", "summary.json")).read())
    return run_dir, want, summary


def test_flag_and_clean_partition_by_partition(tmp_path, cluster):
    from cleanpipe.clean import clean_table
    write_tag_dataset(tmp_path / "data")
    run_dir, want, summary = run_as_flag(tmp_path, cluster.scheduler_address,
                                         ["--pred-probs", "probs"], probs=True)
    assert summary["multi_label"] and summary["flagged"] == sum(want["is_label_issue"].to_pylist())
    cleaned = read_flags(os.path.join(run_dir, "clean", "cleaned"))
    expected = clean_table(want, mode="drop", label="tags").table
    assert cleaned["id"].to_pylist() == expected["id"].to_pylist()


def test_without_probabilities_they_are_fitted_on_the_workers(tmp_path, cluster):
    X, given, _, unl = make_rows(n=600)
    write_rows(tmp_path / "data", X, given, unl, bounds=(0, 250, 600))
    _, _, summary = run_as_flag(tmp_path, cluster.scheduler_address,
                                ["--id", "id", "--model", "logreg", "--folds", "3"], probs=False,
                                oof='model = "logreg"\nfolds = 3\n')
    assert summary["multi_label"] and summary["oof"]["multi_label"]
    assert (tmp_path / "ref" / "_SUCCESS").exists()


def test_relabel_is_refused(tmp_path, cluster):
    write_tag_dataset(tmp_path / "data", n=300, bounds=(0, 100, 300))
    for probs in (True, False):
        pipe = pipeline_file(tmp_path, cluster.scheduler_address, probs=probs,
                             extra='[clean]\nmode = "relabel"\n')
        res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
        assert res.exit_code == 2, res.output
        assert ("[clean] mode = \"relabel\" is not available for multi-label data" in res.output
                and "Traceback" not in res.output)
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.parquet"))


def test_0_1_label_columns(tmp_path, cluster):
    write_tag_dataset(tmp_path / "data", n=600, bounds=(0, 250, 250, 600))
    labels = ", ".join(f'"is_{t}"' for t in ("cloud", "dog", "sea", "tree", "wall"))
    pipe = tmp_path / "cols.toml"
    pipe.write_text('name = "cols"\nstages = ["flag"]\n[source]\ntype = "parquet"\npath = "data"\n'
                    f'[columns]\nlabels = [{labels}]\nids = ["id"]\n'
                    f'[oof]\nbackend = "dask"\nscheduler = "{cluster.scheduler_address}"\n'
                    '[flag]\npred_probs = "probs"\n')
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    got = read_flags(os.path.join(json.loads(res.stdout)["run_dir"], "flag", "flags"))
    one = run_cli("flag", tmp_path / "data", "--label", labels.replace('"', "").replace(" ", ""),
                  "--pred-probs", "probs", "--out", tmp_path / "one.parquet", "--quiet")
    assert one.exit_code == 0, one.output
    want = pq.read_table(tmp_path / "one.parquet")
    for col in COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
    assert isinstance(got, pa.Table)
