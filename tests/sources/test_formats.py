"""CSV, JSON lines and Feather inputs read into the same typed table as Parquet."""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from cleanpipe import formats
from cleanpipe.errors import InputError
from cleanpipe.io import open_dataset, read_table


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    n = 50
    return pa.table({
        "x0": rng.normal(size=n),
        "x1": rng.integers(0, 9, n),
        "city": pa.array(rng.choice(["oslo", "lima", "pune"], n)),
        "label": pa.array(rng.choice(["cat", "dog"], n)),
    })


def _write_all(table, tmp_path):
    pq.write_table(table, tmp_path / "t.parquet")
    pcsv.write_csv(table, tmp_path / "t.csv")
    pcsv.write_csv(table, tmp_path / "t.tsv", pcsv.WriteOptions(delimiter="\t"))
    with gzip.open(tmp_path / "t.csv.gz", "wb") as f:
        pcsv.write_csv(table, f)
    (tmp_path / "t.jsonl").write_text("\n".join(
        __import__("json").dumps(r) for r in table.to_pylist()) + "\n")
    feather.write_feather(table, tmp_path / "t.feather")
    feather.write_feather(table, tmp_path / "noext")  # told by its magic bytes, not its name


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.csv.gz", "t.jsonl", "t.feather", "noext"])
def test_every_format_reads_the_same_typed_table_as_parquet(table, tmp_path, name):
    _write_all(table, tmp_path)
    want = read_table(tmp_path / "t.parquet")
    got = read_table(tmp_path / name)
    assert got.schema.names == want.schema.names
    assert got.column("x1").type == pa.int64() and pa.types.is_floating(got.column("x0").type)
    for col in want.column_names:
        a, b = want.column(col).to_pylist(), got.column(col).to_pylist()
        if col == "x0":
            np.testing.assert_allclose(a, b, rtol=1e-12)
        else:
            assert a == b


@pytest.mark.parametrize("head,name,kind", [
    (b"PAR1xxxx", "data.csv", "parquet"), (b"ARROW1\0\0", "data.bin", "feather"),
    (b"a,b\n1,2", "data.CSV", "csv"), (b"{\"a\"", "x.ndjson", "jsonl"), (b"a\tb", "x.tsv.gz", "csv"),
    (b"junk", "x.unknown", "parquet"), (b"a,b", "-", "csv")])
def test_detect_by_magic_then_name(head, name, kind):
    assert formats.detect(name, head) == kind
    assert formats.detect(name, head, given="jsonl") == "jsonl"


def test_a_ragged_csv_line_is_named_by_its_number(tmp_path):
    path = tmp_path / "rag.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8,9,10\n11,12,13\n")
    with pytest.raises(InputError) as err:
        read_table(path)
    msg = str(err.value)
    assert "line 4" in msg and "Expected 3 columns, got 4" in msg and str(path) in msg
    assert "\n" not in msg


def test_types_are_guessed_from_every_row_not_the_first_block(tmp_path):
    # 1 MiB of integers, then a word: pyarrow's first guess (int64) fails on the last row.
    n = 200_000
    path = tmp_path / "late.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(n)) + "x,1\n")
    got = read_table(path)
    assert got.num_rows == n + 1 and got.column("a").type == pa.string()
    assert got.column("b").type == pa.int64()


def test_delimiter_and_header_options(tmp_path):
    path = tmp_path / "semi.txt"
    path.write_text("1;2\n3;4\n")
    got = read_table(path, fmt=formats.TableFormat("csv", delimiter=";", header=False))
    assert got.column_names == ["f0", "f1"] and got.column("f1").to_pylist() == [2, 4]
    with pytest.raises(InputError, match="one character"):
        formats.TableFormat("csv", delimiter=";;")
    with pytest.raises(InputError, match="not known"):
        formats.TableFormat("xlsx")


def test_bad_json_lines_and_duplicate_names_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2,\n')
    with pytest.raises(InputError, match="not a readable JSON-lines file"):
        open_dataset(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a\n1,2\n")
    with pytest.raises(InputError, match="duplicate column"):
        open_dataset(dup)


def test_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a\n1\n")
    assert read_table(path).num_rows == 1
    path.write_text("a\n1\n2\n3\n")
    assert read_table(path).num_rows == 3
