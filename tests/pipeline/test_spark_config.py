"""``[oof] backend = "spark"`` (or ``engine``): what a Spark pipeline cannot take is refused before
any work, in one line naming the key and the fix (exit 2); no Spark session is started for that."""

from __future__ import annotations

import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import run_cli

from cleanpipe.errors import ConfigError
from cleanpipe.pipeline import load_pipeline

BASE = """
stages = ["oof", "flag", "clean"]
[source]
type = "parquet"
path = "data.parquet"
[columns]
label = "label"
[oof]
engine = "spark"
model = "logreg"
folds = 3
"""


@pytest.fixture
def folder(tmp_path, tiny_table):
    pq.write_table(tiny_table, tmp_path / "data.parquet")
    return tmp_path


def _write(folder, text: str):
    path = folder / "s.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_engine_is_backend_under_its_command_line_name(folder):
    p = load_pipeline(_write(folder, BASE))
    assert p.spark and p.oof.backend == "spark" and not p.partitioned
    assert load_pipeline(_write(folder, BASE.replace('engine = "spark"', 'backend = "spark"'))).spark
    assert not load_pipeline(_write(folder, BASE.replace('engine = "spark"', 'engine = "loky"'))).spark


@pytest.mark.parametrize("edit, expect", [
    (('engine = "spark"', 'engine = "spark"\nbackend = "spark"'), "sets both engine and backend"),
    (('engine = "spark"', 'engine = "sprak"'), "did you mean 'spark'?"),
    (('type = "parquet"', 'type = "csv"'), "reads Parquet, Delta or Iceberg tables; [source] type = 'csv'"),
    (('path = "data.parquet"', 'path = "s3a://bucket/data/"'), "must be a local Parquet file or directory"),
    (('stages = ["oof", "flag", "clean"]', 'stages = ["oof", "flag", "clean", "retrain"]'),
     "retrain trains one model on one machine; write stages = ['oof', 'flag', 'clean']"),
    (('folds = 3', 'folds = 3\n[flag]\nchecks = true'), "[flag] checks is not available"),
    (('label = "label"', 'label = "label"\nids = ["row_id", "x"]'), "keep one, e.g. ids = [\"row_id\"]"),
    (('folds = 3', 'folds = 3\n[sink]\ntype = "parquet"\nflags = "f.parquet"'),
     "published only to a Delta table"),
    (('label = "label"', 'label = "label"\nfeatures = ["x", "colour"]'),
     "[columns] features: feature column 'colour' has type dictionary"),
])
def test_refused_before_any_work_in_one_line(folder, edit, expect):
    path = _write(folder, BASE.replace(*edit))
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--check")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr
    assert not (folder / "runs").exists()
    if "features" not in expect:  # the schema-level check runs in the preflight, not the loader
        with pytest.raises(ConfigError):
            load_pipeline(path)


def test_the_command_line_engine_overrides_the_file(folder):
    path = _write(folder, BASE.replace('engine = "spark"', 'engine = "loky"').replace(
        'type = "parquet"', 'type = "csv"'))
    assert run_cli("run", path, "--runs-dir", folder / "runs", "--check").exit_code == 2  # csv file: no data.csv
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--check", "--engine", "spark")
    assert res.exit_code == 2 and "[oof] backend = \"spark\" runs the stages on Spark" in res.stderr, res.output
    parquet = _write(folder, BASE.replace('engine = "spark"', 'engine = "loky"'))
    assert load_pipeline(parquet, overrides=['oof.engine="spark"']).spark


@pytest.mark.parametrize("edit, expect", [
    ("n_jobs = 4", "[oof] n_jobs 4 does not apply when the fold models are fitted in Spark "
                   "tasks: each fold model is its own task on the executors, so the folds already "
                   "fit in parallel there (as many as the executors have task slots); drop "
                   "[oof] n_jobs"),
    ('device = "cuda"', "[oof] device cuda is not available when the fold models are fitted in "
                        "Spark tasks: the fold models fit on the executors' CPUs; drop [oof] "
                        "device, or run on one machine"),
])
def test_fit_options_the_spark_fit_tasks_cannot_honour_are_refused(folder, edit, expect):
    """``[oof] n_jobs`` / ``device`` are refused, as on Dask, rather than silently ignored."""
    path = _write(folder, BASE.replace("folds = 3", f"folds = 3\n{edit}"))
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--check")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {path}: {expect}", res.stderr
    assert not (folder / "runs").exists()
    # stages that fit nothing take them as the other engines do: no fold model, nothing to refuse
    path = _write(folder, BASE.replace("folds = 3", f"folds = 3\n{edit}").replace(
        'stages = ["oof", "flag", "clean"]', 'stages = ["clean"]'))
    assert "n_jobs" not in run_cli("run", path, "--runs-dir", folder / "runs", "--check").stderr


@pytest.mark.parametrize("extra", ['device = "cpu"', "n_jobs = 1"])
def test_the_default_fit_options_pass_on_spark(folder, extra):
    path = _write(folder, BASE.replace("folds = 3", f"folds = 3\n{extra}"))
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--check")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("kind, path", [("parquet", "s3a://bucket/data/"), ("parquet", "gs://bucket/data/"),
                                        ("delta", "s3://bucket/table")])
def test_an_object_store_source_is_refused_with_what_reads_it(folder, kind, path):
    """A pipeline does not set up Spark's object-store connector (hadoop-aws): a path only that
    connector reads (another scheme than s3://, a Delta log on a store) is refused before any
    work, naming the key and the ways that do read it, never taken for a local folder
    (``s3a://`` was joined to the pipeline's folder). An s3:// Parquet folder is read by the
    executors with pyarrow (tests/spark/test_spark_object_store.py)."""
    text = BASE.replace('type = "parquet"', f'type = "{kind}"').replace('"data.parquet"', f'"{path}"')
    pipe = _write(folder, text)
    res = run_cli("run", pipe, "--runs-dir", folder / "runs", "--check")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == (
        f"error: {pipe}: [oof] backend = \"spark\" runs the stages on Spark; [source] path = "
        f"'{path}' must be a local Parquet file or directory, or an s3:// folder of Parquet files "
        "(read by the executors with pyarrow), as a pipeline does not set up Spark's object-store "
        "connector: read it in Python with " + (
            "spark.read.format('delta').load('s3a://...') (delta-spark and hadoop-aws on the "
            "cluster's classpath)" if kind == "delta" else
            "spark.read.parquet('s3a://...') (hadoop-aws on the cluster's classpath)")
        + " and cleanpipe.spark.flag, use backend = \"dask\", or remove "
        "backend = \"spark\" to run on one machine"), res.stderr
    assert load_pipeline(_write(folder, text.replace('engine = "spark"', 'engine = "loky"'))
                         ).source.path == path  # a URI is kept as given


@pytest.mark.parametrize("label", ['label = "tags"', 'labels = ["is_a", "is_b"]'])
def test_multi_label_fits_its_tag_probabilities_and_refuses_only_relabel(folder, label):
    """A multi-label Spark pipeline needs no ``[flag] pred_probs`` (its oof or flag stage fits the
    tag probabilities out of fold); relabelling stays refused, in one line, before any work."""
    tags = pa.array([["a"], ["b"], ["a", "b"], [], None, ["a"]], type=pa.list_(pa.string()))
    pq.write_table(pa.table({"row_id": range(6), "x": [0.1, 0.5, 0.2, 0.9, 0.3, 0.4], "tags": tags,
                             "is_a": [1, 0, 1, 0, None, 1], "is_b": [0, 1, 1, 0, None, 0]}),
                   folder / "data.parquet")
    text = BASE.replace('label = "label"', f'{label}\nids = ["row_id"]')
    res = run_cli("run", _write(folder, text + '[clean]\nmode = "drop"\n'), "--runs-dir",
                  folder / "runs", "--check")
    assert res.exit_code == 0, res.output
    path = _write(folder, text + '[clean]\nmode = "relabel"\n')
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--check")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == (
        f"error: {path}: [oof] backend = \"spark\" runs the stages on Spark, where [clean] mode = "
        "\"relabel\" is not available for multi-label data; use mode = \"drop\" or \"weight\", or "
        "remove backend = \"spark\" to run on one machine"), res.stderr
    assert not (folder / "runs").exists()
