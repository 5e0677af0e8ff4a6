"""Pipelines and the CLI over Delta Lake and Iceberg tables: the same flags as from Parquet, the
output-safety rule on table folders and catalog tables, one-line exit-2 errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, only_run_dir, run_cli

from cleanpipe.flagsfile import FLAG_COLUMNS

deltalake = pytest.importorskip("deltalake", reason="Delta Lake tests need deltalake (cleanpipe[lakehouse])")


def _plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary column as strings, as both table formats store it."""
    return table.set_column(table.schema.get_field_index("colour"), "colour",
                            table["colour"].cast(pa.string()))


@pytest.fixture
def delta_table(tmp_path, tiny_table):
    path = tmp_path / "train_delta"
    deltalake.write_deltalake(str(path), _plain(tiny_table))
    return path


@pytest.fixture
def iceberg(tmp_path):
    pytest.importorskip("pyiceberg.catalog.sql", reason="Iceberg tests need pyiceberg[sql-sqlite]")
    (tmp_path / "warehouse").mkdir()
    return 'catalog = "lab"\ncatalog_uri = "sqlite:///catalog.db"\nwarehouse = "warehouse"\n'


def _pipeline(tmp_path, source: str, sink: str, name: str = "lake") -> str:
    pipe = tmp_path / f"{name}.toml"
    pipe.write_text(f"""
stages = ["oof", "flag", "clean"]
[source]
{source}
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
[sink]
{sink}
""")
    return pipe


def test_delta_source_to_iceberg_sink_matches_the_parquet_run(tmp_path, tiny_table, delta_table, iceberg):
    from cleanpipe.sources import IcebergSource
    pq.write_table(_plain(tiny_table), tmp_path / "train.parquet")
    ref = run_cli("run", _pipeline(tmp_path, 'type = "parquet"\npath = "train.parquet"', 'type = "parquet"\n'
                                   'flags = "ref_flags.parquet"', name="ref"),
                  "--runs-dir", tmp_path / "runs")
    assert ref.exit_code == 0, ref.output
    pipe = _pipeline(tmp_path, 'type = "delta"\npath = "train_delta"',
                     f'type = "iceberg"\n{iceberg}flags = "lab.flags"\ncleaned = "lab.cleaned"')
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    m = manifest(only_run_dir(tmp_path / "runs", "lake"))
    assert m["input"]["kind"] == "delta" and m["input"]["rows"] == 60
    cat = {"catalog": "lab", "catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
           "warehouse": f"file://{tmp_path}/warehouse"}
    flags = IcebergSource("lab.flags", **cat).reader().read_all().sort_by("row_id")
    want = pq.read_table(tmp_path / "ref_flags.parquet").sort_by("row_id")
    for col in FLAG_COLUMNS:
        assert flags[col].to_pylist() == want[col].to_pylist(), col
    cleaned = IcebergSource("lab.cleaned", **cat).reader().read_all()
    assert cleaned.num_rows == m["stages"]["clean"]["rows_out"]
    # The Delta version pins the input: a rerun reuses every stage.
    again = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--json")
    assert again.exit_code == 0, again.output
    assert '"reused"' in again.stdout and '"ran"' not in again.stdout


def test_iceberg_source_to_delta_sink(tmp_path, tiny_table, iceberg):
    from cleanpipe.sources import DeltaSource, IcebergSink
    IcebergSink("lab", catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
                warehouse=f"file://{tmp_path}/warehouse").write("lab.train", tiny_table.to_reader())
    pipe = _pipeline(tmp_path, f'type = "iceberg"\ntable = "lab.train"\n{iceberg}',
                     'type = "delta"\nflags = "out/flags_delta"')
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    flags = DeltaSource(str(tmp_path / "out" / "flags_delta")).reader().read_all()
    assert flags.num_rows == 60 and "is_label_issue" in flags.column_names
    # cleanpipe wrote it, so a second run may replace it without --overwrite.
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs2")
    assert res.exit_code == 0, res.output
    assert DeltaSource(str(tmp_path / "out" / "flags_delta")).table().version() == 1


def test_lakehouse_user_mistakes_are_one_line_exit_2(tmp_path, delta_table, iceberg, tiny_table):
    cases = [
        ('type = "delta"\npath = "nowhere"', 'type = "parquet"\nflags = "f.parquet"',
         "does not exist; pass the folder of a Delta table"),
        ('type = "delta"\npath = "plain"', 'type = "parquet"\nflags = "f.parquet"',
         "is not a Delta table (no _delta_log/ folder in it)"),
        (f'type = "iceberg"\ntable = "lab.nope"\n{iceberg}', 'type = "parquet"\nflags = "f.parquet"',
         "Iceberg table 'lab.nope' not found"),
        (f'type = "iceberg"\ntable = "flat"\n{iceberg}', 'type = "parquet"\nflags = "f.parquet"',
         "needs a namespace"),
        # Outputs never touch inputs: a flags table inside the source table's folder.
        ('type = "delta"\npath = "train_delta"', 'type = "delta"\nflags = "train_delta/flags"',
         "would overwrite the source"),
        ('type = "delta"\npath = "train_delta"', 'type = "delta"\nflags = "train_delta"',
         "would overwrite the source"),
    ]
    (tmp_path / "plain").mkdir()
    pq.write_table(tiny_table, tmp_path / "plain" / "p.parquet")
    for i, (source, sink, msg) in enumerate(cases):
        res = run_cli("run", _pipeline(tmp_path, source, sink, name=f"bad{i}"), "--runs-dir", tmp_path / "runs")
        assert res.exit_code == 2, (msg, res.output)
        assert msg in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    # A missing column names the table's columns, as for Parquet.
    pipe = _pipeline(tmp_path, 'type = "delta"\npath = "train_delta"', 'type = "parquet"\nflags = "f.parquet"',
                     name="col")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs", "--set", "columns.label=target")
    assert res.exit_code == 2 and "[columns] label names 'target'" in res.output, res.output


def test_iceberg_sink_refuses_the_source_table_and_a_foreign_table(tmp_path, tiny_table, iceberg):
    from cleanpipe.sources import IcebergSink
    sink = IcebergSink("lab", catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
                       warehouse=f"file://{tmp_path}/warehouse")
    sink.write("lab.train", tiny_table.to_reader())
    pipe = _pipeline(tmp_path, f'type = "iceberg"\ntable = "lab.train"\n{iceberg}',
                     f'type = "iceberg"\n{iceberg}flags = "lab.train"')
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2 and "would overwrite the source" in res.output, res.output
    # A table someone else made is replaced only with --overwrite.
    catalog = sink._cat.catalog()
    catalog.create_table("lab.theirs", schema=pa.schema([("a", pa.int64())]))
    pipe = _pipeline(tmp_path, f'type = "iceberg"\ntable = "lab.train"\n{iceberg}',
                     f'type = "iceberg"\n{iceberg}flags = "lab.theirs"', name="foreign")
    res = run_cli("run", pipe, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2 and "cleanpipe did not write" in res.output, res.output


def test_cli_flag_reads_a_delta_folder_by_its_log_not_its_files(tmp_path, tiny_table, delta_table):
    """Files of an older version stay in the folder until a vacuum; the CLI reads the latest."""
    deltalake.write_deltalake(str(delta_table), _plain(tiny_table).slice(0, 45), mode="overwrite")
    out = tmp_path / "flags.parquet"
    res = run_cli("flag", delta_table, "--label", "label", "--model", "logreg", "--folds", "3",
                  "--out", out)
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).num_rows == 45
    res = run_cli("flag", delta_table, "--label", "target", "--model", "logreg", "--out", out)
    assert res.exit_code == 2 and "target" in res.output and "Traceback" not in res.output
