"""The output-safety rule (cleanpipe/safety.py) for every command and every sink.

A generator builds, for each command and each kind of place (file, folder, glob, symlink, ``..``,
DuckDB, PostgreSQL), an output that is, contains, lies inside or matches an input, or that names
another output of the same run. Every such run must exit 2 with one line and leave every file in
the folder byte-identical (nothing written, nothing deleted). Then: existing files cleanpipe did
not write need ``--overwrite``; its own are replaced; nothing but its own files is ever deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening_helpers import (FAST_FLAG, FAST_TRAIN, base_table, error_line, probs_for, run_cli,
                               snapshot, write_flags)

PIPE = ('[columns]\nlabel = "label"\nids = ["row_id"]\n[oof]\nmodel = "logreg"\nfolds = 3\n')


class World:
    """A scratch folder (the working directory) with one of every input the commands read."""

    def __init__(self, root: Path, model: Path):
        self.root = root
        pq.write_table(base_table(), root / "data.parquet")
        (root / "dir").mkdir()
        pq.write_table(base_table(), root / "dir" / "part.parquet")
        write_flags(base_table(), root / "d.flags.parquet")
        np.save(root / "probs.npy", probs_for(base_table()))
        os.symlink("data.parquet", root / "alias.parquet")
        import shutil
        shutil.copytree(model, root / "model")

    def pipeline(self, source: str, sink: str, name: str = "p.toml", stages=("oof", "flag")) -> str:
        text = f"stages = {json.dumps(list(stages))}\n[source]\n{source}\n{PIPE}[sink]\n{sink}\n"
        (self.root / name).write_text(text, encoding="utf-8")
        return name

    def duckdb(self) -> str:
        import duckdb
        con = duckdb.connect(str(self.root / "w.duckdb"))
        t = base_table()  # noqa: F841 - read by DuckDB's replacement scan
        con.execute("CREATE TABLE src AS SELECT * FROM t")
        con.close()
        return "w.duckdb"


def _pq(path):
    return f'type = "parquet"\npath = "{path}"'


def _dd(table="src", schema=None, query=None):
    extra = f'\nschema = "{schema}"' if schema else ""
    what = f'query = "{query}"' if query else f'table = "{table}"'
    return f'type = "duckdb"\ndatabase = "w.duckdb"\n{what}{extra}'


def _dd_sink(flags, schema=None, database="w.duckdb"):
    extra = f'\nschema = "{schema}"' if schema else ""
    return f'type = "duckdb"\ndatabase = "{database}"\nflags = "{flags}"{extra}'


#: (id, builder(world) -> CLI arguments, words the error line must hold)
CASES = [
    # flag: DATA file / folder / symlink / '..', --pred-probs, and its own outputs among themselves
    ("flag-out_is_data", lambda w: ["flag", "data.parquet", "--out", "data.parquet"], ("data.parquet",)),
    ("flag-out_is_data_via_symlink", lambda w: ["flag", "data.parquet", "--out", "alias.parquet"], ("alias",)),
    ("flag-out_is_data_via_dotdot", lambda w: ["flag", "data.parquet", "--out", "dir/../data.parquet"], ("data",)),
    ("flag-out_inside_data_folder", lambda w: ["flag", "dir", "--out", "dir/f.parquet"], ("dir",)),
    ("flag-save_pred_probs_is_pred_probs",
     lambda w: ["flag", "data.parquet", "--pred-probs", "probs.npy", "--save-pred-probs", "probs.npy"],
     ("--save-pred-probs", "--pred-probs")),
    ("flag-save_pred_probs_is_out",
     lambda w: ["flag", "data.parquet", "--out", "o.parquet", "--save-pred-probs", "o.parquet"], ("--save-pred-probs",)),
    ("flag-save_pred_probs_is_summary",
     lambda w: ["flag", "data.parquet", "--out", "o.parquet", "--save-pred-probs", "o.summary.json"], ("summary",)),
    ("flag-summary_is_data",  # --out x.parquet writes x.summary.json; DATA is that file
     lambda w: ["flag", "d.flags.summary.json", "--out", "d.flags.parquet"], ("summary",)),
    # clean: FLAGS, its summary, --pred-probs
    ("clean-out_is_flags", lambda w: ["clean", "d.flags.parquet", "--out", "d.flags.parquet"], ("FLAGS",)),
    ("clean-out_is_summary", lambda w: ["clean", "d.flags.parquet", "--out", "d.flags.summary.json"], ("--summary",)),
    ("clean-out_is_pred_probs", lambda w: ["clean", "d.flags.parquet", "--pred-probs", "probs.npy", "--out", "probs.npy"],
     ("--pred-probs",)),
    # retrain: --out is, contains or lies inside DATA; --overwrite changes nothing of that
    ("retrain-out_is_data_folder", lambda w: ["retrain", "dir", "--out", "dir", "--overwrite", *FAST_TRAIN], ("dir",)),
    ("retrain-out_contains_data", lambda w: ["retrain", "dir/part.parquet", "--out", "dir", "--overwrite", *FAST_TRAIN],
     ("part.parquet",)),
    ("retrain-out_is_cwd", lambda w: ["retrain", "data.parquet", "--out", ".", "--overwrite", *FAST_TRAIN], ("data.parquet",)),
    ("retrain-out_inside_data_folder", lambda w: ["retrain", "dir", "--out", "dir/m", *FAST_TRAIN], ("dir",)),
    # predict: DATA, MODEL_DIR
    ("predict-out_is_data", lambda w: ["predict", "model", "data.parquet", "--out", "alias.parquet"], ("DATA",)),
    ("predict-out_inside_model", lambda w: ["predict", "model", "data.parquet", "--out", "model/p.parquet"], ("MODEL_DIR",)),
    ("predict-out_contains_model", lambda w: ["predict", "model/", "data.parquet", "--out", "model"], ("model",)),
    # report: FLAGS, summary, training metrics
    ("report-out_is_flags", lambda w: ["report", "d.flags.parquet", "--out", "d.flags.parquet"], ("FLAGS",)),
    ("report-out_is_summary", lambda w: ["report", "d.flags.parquet", "--out", "d.flags.summary.json"], ("--summary",)),
    ("report-out_is_training", lambda w: ["report", "d.flags.parquet", "--training", "model", "--out", "model/metrics.json"],
     ("--training",)),
    # run, Parquet: file, folder, glob, pipeline file, run directory, the two targets
    ("run-parquet_sink_is_source", lambda w: ["run", w.pipeline(_pq("data.parquet"), 'type = "parquet"\nflags = "alias.parquet"')],
     ("[sink] flags", "source")),
    ("run-parquet_sink_inside_source_folder",
     lambda w: ["run", w.pipeline(_pq("dir"), 'type = "parquet"\nflags = "dir/sub/f.parquet"')], ("source",)),
    ("run-parquet_sink_matches_source_glob",
     lambda w: ["run", w.pipeline(_pq("da*.parquet"), 'type = "parquet"\nflags = "da2.parquet"')], ("pattern",)),
    ("run-parquet_sink_is_pipeline_file",
     lambda w: ["run", w.pipeline(_pq("data.parquet"), 'type = "parquet"\nflags = "p.toml"')], ("pipeline file",)),
    ("run-runs_dir_inside_source_folder",
     lambda w: ["run", w.pipeline(_pq("dir"), 'type = "parquet"\nflags = "f.parquet"'), "--runs-dir", "dir"], ("--runs-dir",)),
    ("run-parquet_targets_are_one_file",
     lambda w: (os.symlink("o.parquet", w.root / "o2.parquet"),
                ["run", w.pipeline(_pq("data.parquet"), 'type = "parquet"\nflags = "o.parquet"\ncleaned = "o2.parquet"',
                                   stages=("oof", "flag", "clean"))])[1], ("o.parquet",)),
    # run, DuckDB: case, default schema, query sources
    ("run-duckdb_sink_differs_in_case",
     lambda w: (w.duckdb(), ["run", w.pipeline(_dd(), _dd_sink("SRC"))])[1], ("source",)),
    ("run-duckdb_sink_spells_default_schema",
     lambda w: (w.duckdb(), ["run", w.pipeline(_dd(), _dd_sink("src", schema="MAIN", database="./w.duckdb"))])[1],
     ("source",)),
    ("run-duckdb_sink_database_inside_source_folder",
     lambda w: ["run", w.pipeline(_pq("dir"), _dd_sink("f", database="dir/w.duckdb"))], ("[sink] database",)),
    ("run-duckdb_sink_read_by_source_query",
     lambda w: (w.duckdb(), ["run", w.pipeline(_dd(query="SELECT * FROM Src"), _dd_sink("src"))])[1], ("query",)),
]


@pytest.mark.parametrize("build, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_colliding_output_is_refused_and_inputs_stay_byte_identical(build, words, tmp_path, monkeypatch,
                                                                    trained_model):
    monkeypatch.chdir(tmp_path)
    world = World(tmp_path, trained_model)
    args = build(world)
    before = snapshot(tmp_path)
    extra = list(FAST_FLAG) if args[0] == "flag" else []
    line = error_line(run_cli(*args, *extra))
    for word in words:
        assert word in line, line
    assert snapshot(tmp_path) == before  # nothing written, nothing deleted, no input changed


def _pg_pipeline(w, source_schema, sink_schema, sink_table):
    src = 'type = "postgres"\ntable = "src"' + (f'\nschema = "{source_schema}"' if source_schema else "")
    sink = f'type = "postgres"\nflags = "{sink_table}"' + (f'\nschema = "{sink_schema}"' if sink_schema else "")
    return w.pipeline(src, sink)


@pytest.mark.postgres
@pytest.mark.parametrize("source_schema, sink_schema, sink_table, refused", [
    (None, "public", "src", True),     # the default schema spelled out
    ("public", None, "src", True),
    (None, None, "SRC", False),        # cleanpipe quotes names: "SRC" is another PostgreSQL table
])
def test_postgres_sink_collisions_use_the_canonical_table(pg_env, tmp_path, monkeypatch, trained_model,
                                                          source_schema, sink_schema, sink_table, refused):
    import adbc_driver_postgresql.dbapi as dbapi
    with dbapi.connect("postgresql://") as con, con.cursor() as cur:
        cur.adbc_ingest("src", base_table(), mode="create")
        con.commit()
    monkeypatch.chdir(tmp_path)
    world = World(tmp_path, trained_model)
    res = run_cli("run", _pg_pipeline(world, source_schema, sink_schema, sink_table), "--check")
    if refused:
        assert "would overwrite the source" in error_line(res)
    else:
        assert res.exit_code == 0, res.output
    with dbapi.connect("postgresql://") as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM src")
        assert cur.fetchone()[0] == base_table().num_rows  # the source table is untouched


# --- files cleanpipe did not write -----------------------------------------------------------------


def _foreign(path: Path) -> bytes:
    pq.write_table(pa.table({"mine": [1, 2, 3]}), path)
    return path.read_bytes()


@pytest.mark.parametrize("command", ["flag", "clean", "predict", "report"])
def test_existing_foreign_file_needs_overwrite(command, tmp_path, monkeypatch, trained_model):
    monkeypatch.chdir(tmp_path)
    World(tmp_path, trained_model)
    out = tmp_path / ("mine.html" if command == "report" else "mine.parquet")
    if command == "report":
        out.write_text("<html>my own page</html>")
    else:
        _foreign(out)
    before = out.read_bytes()
    args = {"flag": ["flag", "data.parquet", "--pred-probs", "probs.npy"],
            "clean": ["clean", "d.flags.parquet"], "predict": ["predict", "model", "data.parquet"],
            "report": ["report", "d.flags.parquet"]}[command]
    line = error_line(run_cli(*args, "--out", out))
    assert "not written by cleanpipe" in line and "--overwrite" in line
    assert out.read_bytes() == before
    res = run_cli(*args, "--out", out, "--overwrite", "-q")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != before
    res = run_cli(*args, "--out", out, "-q")  # its own output: replaced without --overwrite
    assert res.exit_code == 0, res.output


def test_retrain_overwrite_never_deletes_foreign_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pq.write_table(base_table(), tmp_path / "data.parquet")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    line = error_line(run_cli("retrain", "data.parquet", "--out", "m", "--overwrite", *FAST_TRAIN))
    assert "never deleted" in line and "notes.txt" in line
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    # a folder of cleanpipe's own files is replaced with --overwrite
    assert run_cli("retrain", "data.parquet", "--out", "model", "-q", *FAST_TRAIN).exit_code == 0
    assert "not empty" in error_line(run_cli("retrain", "data.parquet", "--out", "model", *FAST_TRAIN))
    res = run_cli("retrain", "data.parquet", "--out", "model", "--overwrite", "-q", *FAST_TRAIN)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["metrics.json", "model.json", "model.pt"]


def test_run_sink_replaces_only_its_own_targets(tmp_path, monkeypatch, trained_model):
    monkeypatch.chdir(tmp_path)
    world = World(tmp_path, trained_model)
    before = _foreign(tmp_path / "mine.parquet")
    name = world.pipeline(_pq("data.parquet"), 'type = "parquet"\nflags = "mine.parquet"')
    assert "--overwrite" in error_line(run_cli("run", name, "-q"))
    assert (tmp_path / "mine.parquet").read_bytes() == before
    assert run_cli("run", name, "-q", "--overwrite").exit_code == 0
    assert run_cli("run", name, "-q", "--force").exit_code == 0  # now its own: no --overwrite needed

    import duckdb
    world.duckdb()
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE theirs AS SELECT 42 AS answer")
    con.close()
    name = world.pipeline(_pq("data.parquet"), _dd_sink("THEIRS"), name="d.toml")
    assert "--overwrite" in error_line(run_cli("run", name, "-q"))
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT * FROM theirs").fetchall() == [(42,)]
    con.close()
    assert run_cli("run", name, "-q", "--overwrite").exit_code == 0
    assert run_cli("run", name, "-q", "--force").exit_code == 0


# --- dataset discovery -----------------------------------------------------------------------------


def test_discovery_never_leaves_the_root_nor_reads_a_file_twice(tmp_path, monkeypatch):
    from cleanpipe.io import read_table
    from cleanpipe.sources import ParquetSource
    root = tmp_path / "ds"
    root.mkdir()
    pq.write_table(base_table(), root / "a.parquet")
    pq.write_table(base_table(), tmp_path / "outside.parquet")
    os.symlink("..", root / "up")                 # the parent: outside the root
    os.symlink(".", root / "me")                  # the root itself: a loop
    os.symlink("a.parquet", root / "b.parquet")   # a second name for one file
    os.symlink(tmp_path / "outside.parquet", root / "out.parquet")
    with pytest.warns(Warning, match="links outside"):
        assert read_table(root).num_rows == base_table().num_rows
    with pytest.warns(Warning, match="links outside"):
        assert ParquetSource(str(root)).count_rows() == base_table().num_rows
    with pytest.warns(Warning, match="links outside"):
        assert ParquetSource(str(root / "*.parquet")).count_rows() == base_table().num_rows
    monkeypatch.chdir(tmp_path)
    os.symlink("self.parquet", tmp_path / "self.parquet")
    line = error_line(run_cli("flag", "self.parquet", *FAST_FLAG))
    assert "self.parquet" in line and "symlink" in line


def test_partition_key_repeating_a_column_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds" / "label=c0").mkdir(parents=True)
    pq.write_table(base_table(), tmp_path / "ds" / "label=c0" / "a.parquet")
    line = error_line(run_cli("flag", "ds", *FAST_FLAG))
    assert "label=c0" in line and "partition" in line and "'label'" in line
