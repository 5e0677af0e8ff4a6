"""``cleanpipe flag`` end to end through click's CliRunner."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import f1_score

from cleanpipe.flagsfile import FLAG_COLUMNS as OUTPUT_COLUMNS

from cli_helpers import run


def test_digits_20pct_flipped_found_with_f1_above_075(digits_noisy, tmp_path):
    path, flip, table = digits_noisy
    out = tmp_path / "flags.parquet"
    res = run("flag", path, "--out", out, "--n-jobs", "2")
    assert res.exit_code == 0, res.output
    flags = pq.read_table(out)
    assert flags.column_names == table.column_names + list(OUTPUT_COLUMNS)
    assert flags.select(table.column_names).equals(table)
    f1 = f1_score(flip, flags.column("is_label_issue").to_numpy())
    assert f1 >= 0.75
    summary = json.loads((tmp_path / "flags.summary.json").read_text())
    assert summary["rows"] == table.num_rows and summary["n_classes"] == 10
    assert summary["flagged"] == int(flags.column("is_label_issue").to_numpy().sum())
    assert 0.1 < summary["estimated_noise_rate"] < 0.35
    assert np.allclose(np.asarray(summary["noise_matrix"]).sum(axis=0), 1.0, atol=1e-4)
    assert "estimated noise rate" in res.stdout and "most suspicious rows" in res.stdout
    assert len(summary["top_suspicious"]) == 10


def test_flag_report_option_writes_the_html_beside_the_flags(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    out = tmp_path / "t.flags.parquet"
    res = run("flag", src, "--out", out, "--model", "logreg", "--report", "--json")
    assert res.exit_code == 0, res.output
    report = tmp_path / "t.flags.report.html"
    assert json.loads(res.stdout)["outputs"]["report"] == str(report)
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Noise matrix" in html


def test_json_output_is_the_summary_file_and_quiet_prints_nothing(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    res = run("flag", src, "--out", tmp_path / "a.parquet", "--model", "logreg", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads((tmp_path / "a.summary.json").read_text())
    res = run("flag", src, "--out", tmp_path / "b.parquet", "--model", "logreg", "--quiet")
    assert res.exit_code == 0 and res.stdout == "" and res.stderr == ""


def test_labels_of_any_type_are_mapped_back(small_table, tmp_path):
    table, flip = small_table
    variants = {
        "string": table.column("label"),
        "category": table.column("label").dictionary_encode(),
        "int": pa.chunked_array([pa.array(np.unique(table.column("label").to_numpy(), return_inverse=True)[1] * 10)]),
        "bool": pa.chunked_array([pa.array(table.column("label").to_numpy() != "cat")]),
    }
    for kind, col in variants.items():
        t = table.set_column(table.column_names.index("label"), "label", col)
        src = tmp_path / f"{kind}.parquet"
        pq.write_table(t, src)
        out = tmp_path / f"{kind}.flags.parquet"
        res = run("flag", src, "--out", out, "--model", "logreg", "--folds", "3", "-q")
        assert res.exit_code == 0, (kind, res.output)
        assert res.stdout == ""
        flags = pq.read_table(out)
        decoded = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
        assert flags.column("given_label").to_pylist() == decoded.to_pylist()
        assert set(flags.column("predicted_label").to_pylist()) <= set(decoded.to_pylist())


def test_null_labels_are_kept_counted_and_not_flagged(small_table, tmp_path):
    table, _ = small_table
    labels = table.column("label").to_pylist()
    labels[:7] = [None] * 7
    t = table.set_column(table.column_names.index("label"), "label", pa.array(labels))
    src = tmp_path / "nulls.parquet"
    pq.write_table(t, src)
    out = tmp_path / "nulls.flags.parquet"
    res = run("flag", src, "--out", out, "--model", "logreg", "--folds", "3")
    assert res.exit_code == 0, res.output
    flags = pq.read_table(out)
    assert flags.num_rows == t.num_rows
    assert flags.column("given_label").to_pylist()[:7] == [None] * 7
    assert flags.column("label_score").to_pylist()[:7] == [None] * 7
    assert not any(flags.column("is_label_issue").to_pylist()[:7])
    assert all(v is not None for v in flags.column("predicted_label").to_pylist())
    summary = json.loads((tmp_path / "nulls.flags.summary.json").read_text())
    assert summary["unlabelled_rows"] == 7 and summary["labelled_rows"] == t.num_rows - 7
    assert "7 with a null label" in res.stdout


def test_every_feature_type_is_used(tmp_path):
    rng = np.random.default_rng(3)
    n = 90
    y = np.repeat([0, 1, 2], 30)
    emb = rng.normal(y[:, None], 0.3, (n, 4))
    table = pa.table({
        "num": pa.array(np.where(rng.random(n) < 0.1, np.nan, y + rng.normal(0, .3, n))),
        "int_nulls": pa.array([None if i % 9 == 0 else int(v) for i, v in enumerate(y)]),
        "flag": pa.array(y == 1),
        "word": pa.array(np.array(["a", "b", "c"])[y]),
        "when": pa.array((y * 86400 * 365).astype("datetime64[s]")),
        "emb": pa.array(list(emb)),
        "fixed": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 4),
        "label": y,
    })
    src = tmp_path / "types.parquet"
    pq.write_table(table, src)
    out = tmp_path / "types.flags.parquet"
    res = run("flag", src, "--out", out, "--folds", "3", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["settings"]["features"] == [
        "num", "int_nulls", "flag", "word", "when", *[f"emb[{i}]" for i in range(4)],
        *[f"fixed[{i}]" for i in range(4)]]
    assert summary["flagged"] <= 3  # clean, well separated labels


def test_pred_probs_from_npy_parquet_and_column_agree(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    saved = tmp_path / "oof.npy"
    res = run("flag", src, "--out", tmp_path / "a.parquet", "--model", "logreg", "--folds", "3",
              "--save-pred-probs", saved)
    assert res.exit_code == 0, res.output
    probs = np.load(saved)
    assert probs.shape == (table.num_rows, 3)
    pq.write_table(pa.table({c: probs[:, i] for i, c in enumerate(["cat", "dog", "eel"])}),
                   tmp_path / "oof.parquet")
    with_col = table.append_column("oof", pa.array(list(probs.astype(np.float64))))
    pq.write_table(with_col, tmp_path / "withcol.parquet")
    expected = pq.read_table(tmp_path / "a.parquet").column("is_label_issue")
    for i, (data, spec) in enumerate([(src, saved), (src, tmp_path / "oof.parquet"),
                                      (tmp_path / "withcol.parquet", "oof")]):
        out = tmp_path / f"b{i}.parquet"
        res = run("flag", data, "--pred-probs", spec, "--out", out, "-q")
        assert res.exit_code == 0, res.output
        assert pq.read_table(out).column("is_label_issue").equals(expected)


def test_same_seed_gives_identical_bytes_across_n_jobs(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    outs = []
    for i, jobs in enumerate([1, 2, 1]):
        out = tmp_path / f"o{i}.parquet"
        assert run("flag", src, "--out", out, "--n-jobs", jobs, "--seed", 7, "-q").exit_code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_rare_and_single_row_classes_do_not_crash(small_table, tmp_path):
    table, _ = small_table
    labels = table.column("label").to_pylist()
    labels[0], labels[1], labels[2] = "rare", "rare", "single"
    t = table.set_column(table.column_names.index("label"), "label", pa.array(labels))
    src = tmp_path / "rare.parquet"
    pq.write_table(t, src)
    res = run("flag", src, "--out", tmp_path / "rare.flags.parquet", "--model", "logreg")
    assert res.exit_code == 0, res.output
    assert "'rare' (2 rows)" in res.stderr and "'single'" in res.stderr
    assert pq.read_table(tmp_path / "rare.flags.parquet").num_rows == t.num_rows


def test_partitioned_directory_input(small_table, tmp_path):
    table, _ = small_table
    part = table.append_column("split", pa.array(["a", "b"] * (table.num_rows // 2)))
    pq.write_to_dataset(part, tmp_path / "ds", partition_cols=["split"])
    res = run("flag", tmp_path / "ds", "--out", tmp_path / "ds.flags.parquet", "--model", "logreg", "-q")
    assert res.exit_code == 0, res.output
    flags = pq.read_table(tmp_path / "ds.flags.parquet")
    read_back = pq.read_table(tmp_path / "ds")  # the dataset in its own row order
    assert flags.num_rows == table.num_rows
    assert flags.select(["x", "x2", "label"]).equals(read_back.select(["x", "x2", "label"]))
    assert flags.column("given_label").equals(read_back.column("label"))


def test_pred_probs_parquet_streamed_by_row_group_equals_in_memory(small_table, tmp_path):
    table, _ = small_table
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), table.num_rows)
    np.save(tmp_path / "p.npy", probs)
    # Tiny row groups: the detector reads the Parquet matrix in many pieces.
    pq.write_table(pa.table({"eel": probs[:, 2], "cat": probs[:, 0], "dog": probs[:, 1]}),
                   tmp_path / "p.parquet", row_group_size=7)
    outs = []
    for spec in ("p.npy", "p.parquet"):
        out = tmp_path / f"{spec}.flags.parquet"
        assert run("flag", src, "--pred-probs", tmp_path / spec, "--out", out, "-q").exit_code == 0
        outs.append(pq.read_table(out).select(["label_score", "p_noisy", "is_label_issue"]))
    assert outs[0].equals(outs[1])


# --- user mistakes: exit 2, one line naming the problem, nothing written -------------------------

def _bad_inputs(tmp_path, small_table):
    table, _ = small_table
    good = tmp_path / "good.parquet"
    pq.write_table(table, good)
    csv = tmp_path / "fake.parquet"
    csv.write_text("a,b\n1,2\n")
    one = tmp_path / "one.parquet"
    pq.write_table(table.set_column(3, "label", pa.array(["cat"] * table.num_rows)), one)
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    struct = tmp_path / "struct.parquet"
    pq.write_table(table.append_column("s", pa.array([{"a": 1}] * table.num_rows)), struct)
    nan = np.full((table.num_rows, 3), 1 / 3)
    nan[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "shape.npy", np.full((table.num_rows - 1, 3), 1 / 3))
    neg = np.full((table.num_rows, 3), 1 / 3)
    neg[2] = [-0.1, 0.6, 0.5]
    np.save(tmp_path / "neg.npy", neg)
    np.save(tmp_path / "sum.npy", np.full((table.num_rows, 3), 0.5))
    return [
        ([tmp_path / "missing.parquet"], "does not exist"),
        ([good, "--label", "target"], "label column 'target' not found"),
        ([one], "single class"),
        ([empty], "no rows"),
        ([csv], "not a readable Parquet file"),
        ([struct], "feature column 's' has unsupported type"),
        ([good, "--pred-probs", tmp_path / "nan.npy"], "row 5 holds NaN"),
        ([good, "--pred-probs", tmp_path / "shape.npy"], "rows"),
        ([good, "--pred-probs", tmp_path / "neg.npy"], "outside [0, 1]"),
        ([good, "--pred-probs", tmp_path / "sum.npy"], "sums to 1.5"),
        ([good, "--folds", "1"], "--folds 1"),
        ([good, "--folds", "1000"], "--folds 1000"),
        ([good, "--n-jobs", "0"], "--n-jobs 0"),
        ([good, "--out", good], "would overwrite the input"),
        ([good, "--out", tmp_path / "nodir" / "x.parquet"], "does not exist"),
    ]


def test_user_mistakes_exit_2_with_one_line_and_no_output(small_table, tmp_path):
    cases = _bad_inputs(tmp_path, small_table)
    os.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    for args, expected in cases:
        has_out = "--out" in args
        res = run("flag", *args, *([] if has_out else ["--out", tmp_path / "out.parquet"]), "--model", "logreg")
        assert res.exit_code == 2, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in res.output
        assert set(os.listdir(tmp_path)) == before, args
