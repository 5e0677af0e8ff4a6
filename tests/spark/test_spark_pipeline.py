"""Pipelines on Spark (``[oof] backend = "spark"``): oof -> flag -> clean on a local session into
Parquet folders of the run directory (and a Delta sink), the flags equal to the in-memory flags on
the same probabilities, and the same one-line errors as on one machine."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cleanpipe import hashed_folds as hf
from cleanpipe.clean import clean_table
from cleanpipe.flag import flag_table
from cleanpipe.flagsfile import FLAG_COLUMNS
from cleanpipe.settings import SCALE_SAMPLE_ROWS
from spark_folders import read_folder, write_parts

pytestmark = pytest.mark.spark


def _run(*args):
    from cleanpipe.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def _rows(n: int = 240, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(0, 1, (n, 3))
    X[np.arange(n), y] += 2.0
    noisy = np.where(rng.random(n) < 0.15, (y + 1) % 3, y)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 2.5
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return pa.table({"id": np.arange(n), "a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": noisy,
                     "probs": pa.array(list(p), type=pa.list_(pa.float64()))})


def _pipeline(folder, body: str, name: str = "sp") -> str:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + body)
    return path


def test_oof_flag_clean_on_spark_equal_the_in_memory_path(spark, tmp_path):
    table = _rows().drop_columns(["probs"])
    write_parts(table, tmp_path / "data")
    pipe = _pipeline(tmp_path, 'stages = ["oof", "flag", "clean"]\n'
                     '[source]\ntype = "parquet"\npath = "data"\n'
                     '[columns]\nlabel = "label"\nids = ["id"]\n'
                     '[oof]\nengine = "spark"\nmodel = "logreg"\nfolds = 3\nseed = 2\n'
                     '[clean]\nmode = "drop"\n'
                     '[sink]\ntype = "delta"\nflags = "flags_delta"\n')
    res = _run("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    man = json.loads(open(os.path.join(run_dir, "manifest.json")).read())
    assert man["status"] == "done" and man["stages"]["flag"]["settings"]["engine"] == "spark"
    got = read_folder(os.path.join(run_dir, "flag", "flags"))
    assert got.column_names == table.column_names + list(FLAG_COLUMNS)

    # The oracle: the hashed-fold functions on the whole table in this process, then flag_table.
    rows = table.take(pa.array(got["id"].to_numpy()))
    X = np.column_stack([rows[c].to_numpy() for c in "abc"])
    codes = rows["label"].to_numpy()
    hashes = hf.id_hashes(rows["id"].to_numpy(), seed=2)
    rate = hf.training_rate(len(codes), 3, SCALE_SAMPLE_ROWS)
    sample = hf.sample_partial(X, codes, hashes, n_folds=3, rate=rate)
    models = hf.fit_fold_models(sample.X, sample.y, sample.folds, n_folds=3, n_classes=3,
                                model="logreg", seed=2)
    probs = hf.predict_out_of_fold(models, X, hf.hashed_folds(hashes, 3), 3)
    want = flag_table(rows, label="label", pred_probs=probs).table
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
    cleaned = read_folder(os.path.join(run_dir, "clean", "cleaned"))
    expected = clean_table(want, mode="drop", label="label").table
    assert cleaned.column_names == expected.column_names
    assert cleaned["id"].to_pylist() == expected["id"].to_pylist()
    assert man["stages"]["clean"]["rows_out"] == expected.num_rows

    # The Delta sink holds the flags, in one commit; a rerun reuses every stage.
    import deltalake
    delta = deltalake.DeltaTable(str(tmp_path / "flags_delta"))
    assert delta.version() == 0 and delta.to_pyarrow_dataset().count_rows() == table.num_rows
    again = _run("run", pipe, "--runs-dir", tmp_path / "runs", "--json", "--run-id",
                 os.path.basename(run_dir))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["actions"] == {"oof": "reused", "flag": "reused", "clean": "reused"}
    assert deltalake.DeltaTable(str(tmp_path / "flags_delta")).version() == 0


def test_given_probabilities_from_a_delta_source(spark, tmp_path):
    deltalake = pytest.importorskip("deltalake")
    table = _rows(n=150, seed=3)
    deltalake.write_deltalake(str(tmp_path / "train"), table.slice(0, 70))
    deltalake.write_deltalake(str(tmp_path / "train"), table.slice(70), mode="append")
    pipe = _pipeline(tmp_path, 'stages = ["flag", "clean"]\n'
                     '[source]\ntype = "delta"\npath = "train"\n'
                     '[oof]\nbackend = "spark"\n[flag]\npred_probs = "probs"\n'
                     '[clean]\nmode = "weight"\ndrop_flag_columns = true\n')
    res = _run("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    run_dir = json.loads(res.stdout)["run_dir"]
    got = read_folder(os.path.join(run_dir, "flag", "flags"))
    want = flag_table(table.take(pa.array(got["id"].to_numpy())), label="label", pred_probs="probs").table
    for col in FLAG_COLUMNS:
        assert got[col].to_pylist() == want[col].to_pylist(), col
    cleaned = read_folder(os.path.join(run_dir, "clean", "cleaned"))
    assert cleaned.column_names[:len(table.column_names)] == table.column_names  # every original column


def test_bad_input_gives_the_one_machine_errors(spark, tmp_path):
    table = _rows(n=60)
    write_parts(table.drop_columns(["probs"]), tmp_path / "data", parts=2)
    floats = table.drop_columns(["probs"]).set_column(4, "label", pa.array(np.linspace(0, 1, 60)))
    write_parts(floats, tmp_path / "floats", parts=2)
    for data, label in (("data", "target"), ("floats", "label")):
        lines = []
        for engine in ("loky", "spark"):
            pipe = _pipeline(tmp_path, f'stages = ["oof", "flag"]\n[source]\ntype = "parquet"\n'
                             f'path = "{data}"\n[columns]\nlabel = "{label}"\n'
                             f'[oof]\nbackend = "{engine}"\nmodel = "logreg"\nfolds = 3\n', name=engine)
            res = _run("run", pipe, "--runs-dir", tmp_path / "runs")
            assert res.exit_code == 2, res.output
            lines.append(res.output.strip().splitlines()[-1].replace(str(pipe), "PIPE"))
        assert lines[0] == lines[1] and lines[0].startswith("error: "), lines


def test_a_stage_write_the_system_refuses_is_one_line_exit_2(spark, tmp_path, monkeypatch):
    """Spark's own writer failing on the environment (here a file where the stage's folder goes:
    Hadoop's ParentNotDirectoryException, no errno) is one line naming the folder and the fix,
    exit 2, as on one machine; not the CLI's internal-error fallback with Spark's trace."""
    from cleanpipe.errors import InputError
    from cleanpipe.pipeline import spark_stages
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, where a folder should be")
    with pytest.raises(InputError) as err:
        spark_stages._write(spark.range(3), blocker / "flags")
    assert str(err.value) == f"cannot write '{blocker / 'flags'}' (not a directory); fix the path"
    assert blocker.read_text() == "a file, where a folder should be"

    # Through `cleanpipe run`: the flags stage's folder blocked the same way.
    table = _rows(n=60)
    write_parts(table, tmp_path / "data", parts=2)
    pipe = _pipeline(tmp_path, 'stages = ["flag"]\n[source]\ntype = "parquet"\npath = "data"\n'
                     '[columns]\nlabel = "label"\n[flag]\npred_probs = "probs"\n'
                     '[oof]\nengine = "spark"\n')
    real = spark_stages._write

    def write_into_a_file(frame, folder):
        folder.parent.joinpath("in-the-way").write_text("x")
        return real(frame, folder.parent / "in-the-way" / folder.name)

    monkeypatch.setattr(spark_stages, "_write", write_into_a_file)
    res = _run("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: stage flag: cannot write '") and line.endswith(
        "/in-the-way/flags' (not a directory); fix the path"), res.output
    assert "Traceback" not in res.output and "internal error" not in res.output


def test_a_python_task_refused_by_the_system_during_a_write_names_its_file(spark, tmp_path):
    """A task before Spark's writer (one that reads or writes its own file) failing on the
    environment: the one line names the task's file, from the text Spark sends back."""
    from cleanpipe.errors import InputError
    from cleanpipe.pipeline import spark_stages
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    inside = str(blocker / "part.bin")

    def task(batches):
        for b in batches:
            open(inside, "wb").close()
            yield b

    df = spark.range(3)
    with pytest.raises(InputError) as err:
        spark_stages._write(df.mapInArrow(task, df.schema), tmp_path / "out")
    assert str(err.value) == f"not a directory at '{inside}'; fix the path"
