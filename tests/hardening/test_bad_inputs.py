"""A corpus of broken and degenerate inputs driven through every command of the CLI.

Each ``(command, case)`` pair is its own test id. A case either is a user mistake (exit 2, one
``error:`` line on stderr naming what is wrong and what to do, no traceback, no file written) or
valid-but-degenerate data (exit 0, a complete and correct output, a ``warning:`` line where the
user should know something). Every file present before the run is hashed before and after: no
input is ever modified.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening_helpers import (CLI_CMD, FAST_FLAG, FAST_TRAIN, FIX_WORDS, ODD, base_table, error_line,
                      probs_for, run_cli, snapshot, temps, warning_lines, write_flags)

# --- the corpus -----------------------------------------------------------------------------------


class Ctx:
    """What a case builder gets: a scratch folder (the working directory) and writers into it."""

    def __init__(self, tmp: Path, model: Path | None):
        self.tmp = tmp
        self._model = model

    def p(self, name: str) -> Path:
        return self.tmp / name

    def table(self, table: pa.Table, name: str = "data.parquet") -> Path:
        pq.write_table(table, self.p(name))
        return self.p(name)

    def flags(self, table: pa.Table, name: str = "data.flags.parquet", label: str = "label", probs=None) -> Path:
        return write_flags(table, self.p(name), label=label, probs=probs)

    def npy(self, arr, name: str = "probs.npy") -> Path:
        np.save(self.p(name), arr)
        return self.p(name)

    def model(self, name: str = "model") -> Path:
        dst = self.p(name)
        shutil.copytree(self._model, dst)
        return dst

    def pipeline(self, data, body: str = "", name: str = "p.toml", stages=("oof", "flag", "clean"),
                 label: str = "label") -> Path:
        text = (f"stages = {json.dumps(list(stages))}\n"
                f"[source]\ntype = \"parquet\"\npath = {json.dumps(str(data), ensure_ascii=False)}\n"
                f"[columns]\nlabel = {json.dumps(label, ensure_ascii=False)}\nids = [\"row_id\"]\n"
                "[oof]\nmodel = \"logreg\"\nfolds = 3\n"
                "[retrain]\nepochs = 2\nhidden = [8]\npatience = 0\ndevice = \"cpu\"\nthreads = 1\n")
        # later keys of the same section would be duplicates: body sections are appended whole
        self.p(name).write_text(text + body, encoding="utf-8")
        return self.p(name)


@dataclass
class Case:
    """One bad or degenerate input for one command.

    ``build(ctx)`` writes the inputs and returns the arguments after the command name. ``names``
    must all appear in the error line (or, for ``ok`` cases, in the warnings). ``outputs`` are the
    paths an ``ok`` run creates (relative to the working directory); ``check(ctx, res)`` checks them.
    """

    id: str
    build: Callable
    ok: bool = False
    names: tuple = ()
    outputs: tuple = ()
    check: Callable | None = None
    xfail: str | None = None
    run_record: bool = False




# Tables --------------------------------------------------------------------------------------------

def with_label(t: pa.Table, values, type=None) -> pa.Table:
    i = t.schema.get_field_index("label")
    return t.set_column(i, "label", pa.array(values, type=type))


def t_zero_rows():
    return base_table().slice(0, 0)


def t_one_row():
    return base_table().slice(0, 1)


def t_all_null():
    t = base_table()
    return with_label(t, [None] * t.num_rows, pa.string())


def t_one_class():
    t = base_table()
    return with_label(t, ["c0"] * t.num_rows)


def t_class_one_row():
    t = base_table()
    values = t.column("label").to_pylist()
    values[7] = "lonely"
    return with_label(t, values)


def t_classes_eq_rows(n: int = 12):
    t = base_table(n, k=n)
    return t


def t_label(kind: str):
    t = base_table()
    n = t.num_rows
    values = {
        "struct": pa.array([{"a": i % 3} for i in range(n)]),
        "map": pa.array([[("a", i % 3)] for i in range(n)], type=pa.map_(pa.string(), pa.int64())),
        "binary": pa.array([bytes([i % 3]) for i in range(n)], type=pa.binary()),
        "list": pa.array([[i % 3] for i in range(n)]),
        "list_of_lists": pa.array([[[i % 3]] for i in range(n)]),
    }[kind]
    return t.set_column(t.schema.get_field_index("label"), "label", values)


def t_no_features():
    return base_table().select(["row_id", "label"])


def t_only_null_feature():
    t = base_table().select(["row_id", "label"])
    return t.append_column("empty", pa.nulls(t.num_rows, pa.float64()))


def t_null_feature():
    t = base_table()
    return t.append_column("empty", pa.nulls(t.num_rows, pa.float64()))


def t_nan_inf():
    t = base_table()
    x = t.column("x").to_numpy().copy()
    x[[1, 5, 9]] = [np.nan, np.inf, -np.inf]
    return t.set_column(t.schema.get_field_index("x"), "x", pa.array(x))


def t_constant():
    t = base_table()
    n = t.num_rows
    return t.set_column(1, "x", pa.array(np.ones(n))).set_column(2, "x2", pa.array(np.zeros(n)))


def t_duplicate_columns():
    t = base_table()
    return pa.Table.from_arrays([t.column("row_id"), t.column("x"), t.column("x2"), t.column("label")],
                                names=["row_id", "x", "x", "label"])


def t_odd_names():
    """Column names and label values with spaces, quotes, ';', newlines, emoji and RTL text."""
    t = base_table(60, k=len(ODD))
    codes = [int(v[1:]) for v in t.column("label").to_pylist()]
    cols = {"row_id": t.column("row_id")}
    for i, name in enumerate(ODD[:3]):
        cols[name] = pa.array(t.column("x").to_numpy() * (i + 1))
    cols[ODD[3]] = t.column("x2")
    cols[ODD[4]] = pa.array([ODD[c % 2] for c in codes])  # a categorical feature with odd values
    cols[ODD_LABEL] = pa.array([ODD[c] for c in codes])
    return pa.table(cols)


ODD_LABEL = "la bel;\"x\"\n\U0001f3f7 \u05ea\u05d5\u05d5\u05d9\u05ea"


def t_imbalance():
    t = base_table(200)
    values = ["major"] * 194 + ["minor"] * 6
    return with_label(t, values)


def t_k1000():
    n, k = 2000, 1000
    rng = np.random.default_rng(0)
    y = np.arange(n) % k
    return pa.table({"row_id": np.arange(n), "x": rng.normal(size=n),
                     "label": pa.array([f"k{v:04d}" for v in y])})


def probs_k1000(table):
    n, k = table.num_rows, 1000
    y = np.arange(n) % k
    p = np.full((n, k), 0.2 / (k - 1), dtype=np.float32)
    p[np.arange(n), y] = 0.8
    p[::97] = np.roll(p[::97], 1, axis=1)  # a few confident mistakes
    return p


# Broken files ----------------------------------------------------------------------------------------

def f_missing(ctx):
    return ctx.p("missing.parquet")


def f_zero_byte(ctx):
    ctx.p("empty.parquet").write_bytes(b"")
    return ctx.p("empty.parquet")


def f_truncated(ctx):
    ctx.table(base_table(), "whole.parquet")
    data = ctx.p("whole.parquet").read_bytes()
    ctx.p("whole.parquet").unlink()
    ctx.p("truncated.parquet").write_bytes(data[: len(data) // 2])
    return ctx.p("truncated.parquet")


def f_csv(ctx):
    ctx.p("csv.parquet").write_text("row_id,x,label\n0,1.5,a\n1,2.5,b\n")
    return ctx.p("csv.parquet")


def f_json(ctx):
    ctx.p("json.parquet").write_text('[{"x": 1.5, "label": "a"}, {"x": 2.5, "label": "b"}]\n')
    return ctx.p("json.parquet")


def f_schema_dir(ctx):
    d = ctx.p("parts")
    d.mkdir()
    t = base_table()
    pq.write_table(t.slice(0, 30), d / "part-0.parquet")
    pq.write_table(t.slice(30).set_column(1, "x", pa.array([str(v) for v in t.column("x").to_pylist()[30:]])),
                   d / "part-1.parquet")
    return d


def f_empty_dir(ctx):
    ctx.p("nothing").mkdir()
    return ctx.p("nothing")


BROKEN = [
    ("missing_path", f_missing, ("missing.parquet", "does not exist")),
    ("zero_byte_file", f_zero_byte, ("empty.parquet",)),
    ("truncated_parquet", f_truncated, ("truncated.parquet",)),
    ("csv_named_parquet", f_csv, ("csv.parquet",)),
    ("json_named_parquet", f_json, ("json.parquet",)),
    ("dir_schema_disagrees", f_schema_dir, ("part-1.parquet", "schema")),
    ("empty_directory", f_empty_dir, ("nothing",)),
]

# Checks of ok runs -------------------------------------------------------------------------------------


def check_flags(label="label"):
    def check(ctx, res, data="data.parquet", out="out.parquet"):
        src = pq.read_table(ctx.p(data))
        t = pq.read_table(ctx.p(out))
        assert t.num_rows == src.num_rows
        assert_same(t.select(src.column_names), src)  # every input column unchanged
        assert t.column("given_label").to_pylist() == src.column(label).to_pylist()
        score = t.column("label_score").to_numpy(zero_copy_only=False)
        lab = ~src.column(label).is_null().to_numpy(zero_copy_only=False)
        assert np.all((score[lab] >= 0) & (score[lab] <= 1)) and np.isnan(score[~lab]).all()
        s = json.loads(ctx.p("out.summary.json").read_text(encoding="utf-8"))
        assert s["rows"] == src.num_rows
        return t, s
    return check


def check_k1000(ctx, res):
    _, s = check_flags()(ctx, res)
    assert s["n_classes"] == 1000 and s["flagged"] > 0


def check_odd_flags(ctx, res):
    t, s = check_flags(ODD_LABEL)(ctx, res)
    assert set(t.column("predicted_label").to_pylist()) <= set(ODD)
    assert set(s["rows_per_class"]) == set(ODD)


def check_clean(ctx, res, out="out.parquet", src="data.flags.parquet"):
    a, b = pq.read_table(ctx.p(src)), pq.read_table(ctx.p(out))
    assert b.num_rows <= a.num_rows and set(a.column_names) <= set(b.column_names)
    assert b"cleanpipe.clean" in b.schema.metadata


def check_model(ctx, res, out="model_out"):
    from cleanpipe.train import load_model_dir
    assert sorted(p.name for p in ctx.p(out).iterdir()) == ["metrics.json", "model.json", "model.pt"]
    load_model_dir(ctx.p(out))


def check_preds(ctx, res, data="data.parquet", out="out.parquet"):
    src, t = pq.read_table(ctx.p(data)), pq.read_table(ctx.p(out))
    assert t.num_rows == src.num_rows
    assert_same(t.select(src.column_names), src)
    conf = t.column("confidence").to_numpy()
    assert np.all((conf >= 0) & (conf <= 1))
    assert set(t.column("predicted_label").to_pylist()) <= {"c0", "c1", "c2"}


def check_report(ctx, res, out="out.html"):
    html = ctx.p(out).read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "<script" not in html.lower()


def check_run(ctx, res):
    runs = ctx.p("runs")
    (run_dir,) = [p for p in runs.glob("*/*") if p.is_dir() and not p.is_symlink()]
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "done", m
    flags = pq.read_table(run_dir / "flag" / "flags.parquet")
    assert flags.num_rows == m["input"]["rows"]
    assert pq.read_table(run_dir / "clean" / "cleaned.parquet").num_rows <= flags.num_rows


def assert_same(a: pa.Table, b: pa.Table) -> None:
    """Equal names, types and values (NaN equal to NaN, unlike ``Table.equals``)."""
    assert a.schema.names == b.schema.names and a.schema.types == b.schema.types
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        assert [v if v == v else "NaN" for v in x] == [v if v == v else "NaN" for v in y], name


# --- the cases per command ----------------------------------------------------------------------------

FLAG_OUT = ("out.parquet", "out.summary.json")


def flag_args(data, *extra, out="out.parquet"):
    return [data, "--out", out, "--id", "row_id", *FAST_FLAG, "-q", *extra]


def flag_cases():
    cases = [Case(f"{cid}", (lambda f: lambda c: flag_args(f(c)))(f), names=names)
             for cid, f, names in BROKEN]
    d = lambda t: (lambda c: flag_args(c.table(t())))  # noqa: E731
    pp = lambda arr, *a: (lambda c: flag_args(c.table(base_table()), "--pred-probs",  # noqa: E731
                                              c.npy(arr(base_table())), *a))
    cases += [
        Case("zero_rows", d(t_zero_rows), names=("data.parquet", "no rows")),
        Case("one_row", d(t_one_row), names=("'label'", "single class")),
        Case("all_labels_null", d(t_all_null), names=("'label'", "entirely null")),
        Case("one_class", d(t_one_class), names=("'label'", "single class")),
        Case("label_struct", d(lambda: t_label("struct")), names=("'label'", "struct")),
        Case("label_map", d(lambda: t_label("map")), names=("'label'", "map")),
        Case("label_binary", d(lambda: t_label("binary")), names=("'label'", "binary")),
        Case("label_list_of_lists", d(lambda: t_label("list_of_lists")), names=("'label'", "list")),
        Case("no_feature_columns", d(t_no_features), names=("feature",)),
        Case("only_feature_all_null", d(t_only_null_feature), names=("feature",)),
        Case("duplicate_column_names", d(t_duplicate_columns), names=("'x'",)),
        Case("label_column_missing", lambda c: flag_args(c.table(base_table()), "--label", "target"),
             names=("'target'", "--label")),
        Case("unknown_model", lambda c: flag_args(c.table(base_table()), "--model", "forest"),
             names=("--model", "forest")),
        Case("features_unknown_column", lambda c: flag_args(c.table(base_table()), "--features", "nope"),
             names=("--features", "'nope'")),
        Case("pred_probs_nan", pp(lambda t: _spoil(probs_for(t), 4, np.nan)), names=("--pred-probs", "probs.npy", "row 4", "NaN")),
        Case("pred_probs_inf", pp(lambda t: _spoil(probs_for(t), 6, np.inf)), names=("--pred-probs", "probs.npy", "row 6")),
        Case("pred_probs_negative", pp(lambda t: _spoil(probs_for(t), 8, -0.2)), names=("--pred-probs", "probs.npy", "row 8")),
        Case("pred_probs_not_summing_to_1", pp(lambda t: probs_for(t) * 1.5), names=("--pred-probs", "probs.npy", "row 0", "sum")),
        Case("pred_probs_float16", pp(lambda t: probs_for(t).astype(np.float16)), names=("--pred-probs", "probs.npy", "float16")),
        Case("pred_probs_wrong_row_count", pp(lambda t: probs_for(t)[:-1]), names=("--pred-probs", "59", "60")),
        Case("pred_probs_wrong_class_count", pp(lambda t: np.full((t.num_rows, 4), 0.25)),
             names=("--pred-probs", "4 columns", "3 classes")),
        Case("pred_probs_non_numeric_column", lambda c: flag_args(
            c.table(base_table()), "--pred-probs",
            c.table(pa.table({"c0": ["a"] * 60, "c1": [0.5] * 60, "c2": [0.5] * 60}), "probs.parquet")),
            names=("--pred-probs", "c0")),
        Case("pred_probs_missing_file", lambda c: flag_args(c.table(base_table()), "--pred-probs", c.p("nope.npy")),
             names=("--pred-probs", "nope.npy")),
        Case("pred_probs_npy_of_strings", pp(lambda t: np.array([["a"] * 3] * 60)), names=("--pred-probs", "dtype")),
        Case("folds_0", lambda c: flag_args(c.table(base_table()), "--folds", "0"), names=("--folds 0",)),
        Case("folds_1", lambda c: flag_args(c.table(base_table()), "--folds", "1"), names=("--folds 1",)),
        Case("more_folds_than_rows", lambda c: flag_args(c.table(base_table()), "--folds", "61"),
             names=("--folds 61", "60")),
        Case("n_jobs_0", lambda c: flag_args(c.table(base_table()), "--n-jobs", "0"), names=("--n-jobs 0",)),
        Case("noisy_threshold_out_of_range", lambda c: flag_args(c.table(base_table()), "--noisy-threshold", "1.5"),
             names=("--noisy-threshold", "1.5")),
        Case("out_equals_input", lambda c: flag_args(c.table(base_table()), out=c.p("data.parquet")),
             names=("--out", "data.parquet", "overwrite")),
        Case("out_in_missing_directory", lambda c: flag_args(c.table(base_table()), out=c.p("no/dir/out.parquet")),
             names=("--out", "no/dir", "does not exist")),
        Case("out_is_a_directory", lambda c: (c.p("outdir").mkdir(), flag_args(c.table(base_table()), out=c.p("outdir")))[1],
             names=("--out", "outdir", "directory")),
        Case("save_pred_probs_equals_input", lambda c: flag_args(c.table(base_table()), "--save-pred-probs", c.p("data.parquet")),
             names=("--save-pred-probs", "data.parquet")),
        # valid but degenerate: complete output, a warning where the user should know something
        Case("class_with_one_row", d(t_class_one_row), ok=True, names=("'lonely'",), outputs=FLAG_OUT,
             check=check_flags()),
        Case("as_many_classes_as_rows", d(t_classes_eq_rows), ok=True, names=("fewer rows than --folds",),
             outputs=FLAG_OUT, check=check_flags()),
        Case("a_feature_entirely_null", d(t_null_feature), ok=True, names=("'empty'", "entirely null"),
             outputs=FLAG_OUT, check=check_flags()),
        Case("nan_and_inf_features", d(t_nan_inf), ok=True, names=("'x'", "inf"), outputs=FLAG_OUT,
             check=check_flags()),
        Case("constant_features", d(t_constant), ok=True, outputs=FLAG_OUT, check=check_flags()),
        Case("extreme_imbalance", d(t_imbalance), ok=True, outputs=FLAG_OUT, check=check_flags()),
        Case("odd_names", lambda c: [c.table(t_odd_names()), "--out", "out.parquet", "--label", ODD_LABEL,
                                     "--id", "row_id", *FAST_FLAG, "-q"],
             ok=True, outputs=FLAG_OUT, check=check_odd_flags),
        Case("k1000_classes_pred_probs", lambda c: [c.table(t_k1000()), "--out", "out.parquet", "--pred-probs",
                                                    c.npy(probs_k1000(t_k1000())), "-q"],
             ok=True, outputs=FLAG_OUT, check=check_k1000),
        Case("pred_probs_float32_default_out", lambda c: [c.table(base_table()), "--pred-probs",
                                                          c.npy(probs_for(base_table()).astype(np.float32)), "-q"],
             ok=True, outputs=("data.flags.parquet", "data.flags.summary.json")),
    ]
    return cases


def _spoil(p, row, value):
    p = p.copy()
    p[row, 1] = value
    return p


# clean --------------------------------------------------------------------------------------------------

def clean_args(flags, *extra, out="out.parquet"):
    return [flags, "--out", out, "-q", *extra]


def clean_cases():
    cases = [Case(cid, (lambda f: lambda c: clean_args(f(c)))(f), names=names) for cid, f, names in BROKEN]
    fl = lambda t, *a, **k: (lambda c: clean_args(c.flags(t()), *a, **k))  # noqa: E731
    cases += [
        Case("not_a_flags_table", lambda c: clean_args(c.table(base_table())), names=("data.parquet", "given_label", "cleanpipe flag")),
        Case("flag_column_wrong_type", lambda c: clean_args(c.table(_retype_score(c)), ),
             names=("label_score", "string")),
        Case("label_column_missing", fl(base_table, "--label", "target"), names=("'target'", "--label")),
        Case("label_struct", lambda c: clean_args(c.flags(base_table().append_column(
            "meta", pa.array([{"a": i} for i in range(60)]))), "--label", "meta"), names=("'meta'", "struct")),
        Case("summary_missing", fl(base_table, "--summary", "nope.json"), names=("--summary", "nope.json")),
        Case("summary_not_json", lambda c: (c.p("bad.json").write_text("{not json"),
                                            clean_args(c.flags(base_table()), "--summary", "bad.json"))[1],
             names=("--summary", "bad.json")),
        Case("summary_not_an_object", lambda c: (c.p("list.json").write_text("[1, 2]"),
                                                 clean_args(c.flags(base_table()), "--summary", "list.json"))[1],
             names=("list.json",)),
        Case("unknown_mode", fl(base_table, "--mode", "burn"), names=("--mode", "burn")),
        Case("min_weight_negative", fl(base_table, "--mode", "weight", "--min-weight", "-1"), names=("--min-weight", "-1")),
        Case("min_weight_above_1", fl(base_table, "--mode", "weight", "--min-weight", "2"), names=("--min-weight", "2")),
        Case("min_weight_nan", fl(base_table, "--mode", "weight", "--min-weight", "nan"), names=("--min-weight", "nan")),
        Case("relabel_p_noisy_out_of_range", fl(base_table, "--relabel-p-noisy", "1.5"), names=("--relabel-p-noisy", "1.5")),
        Case("relabel_score_out_of_range", fl(base_table, "--relabel-score", "-0.1"), names=("--relabel-score", "-0.1")),
        Case("out_equals_input", lambda c: clean_args(c.flags(base_table()), out=c.p("data.flags.parquet")),
             names=("--out", "data.flags.parquet", "overwrite")),
        Case("out_in_missing_directory", lambda c: clean_args(c.flags(base_table()), out=c.p("no/dir/out.parquet")),
             names=("--out", "no/dir")),
        Case("already_cleaned", lambda c: _cleaned_twice(c), names=("original_label",)),
        Case("zero_rows", lambda c: clean_args(c.table(_zero_row_flags(c))), ok=True,
             outputs=("out.parquet",), check=lambda c, r: check_clean(c, r, src="zero.flags.parquet")),
        Case("one_class_flags", fl(lambda: _flags_source(t_class_one_row)), ok=True, outputs=("out.parquet",), check=check_clean),
        Case("odd_names", lambda c: clean_args(c.flags(t_odd_names(), label=ODD_LABEL)), ok=True,
             outputs=("out.parquet",), check=check_clean),
        Case("odd_names_drop_mode", lambda c: clean_args(c.flags(t_odd_names(), label=ODD_LABEL), "--mode", "drop"),
             ok=True, outputs=("out.parquet",), check=check_clean),
        Case("all_labels_null_rows_kept", lambda c: clean_args(c.flags(_some_null(), ), "--mode", "drop"),
             ok=True, outputs=("out.parquet",), check=check_clean),
        Case("k1000_weight_mode", lambda c: clean_args(c.flags(t_k1000(), probs=probs_k1000(t_k1000())), "--mode", "weight"),
             ok=True, outputs=("out.parquet",), check=check_clean),
    ]
    return cases


def _flags_source(make):
    return make()


def _some_null():
    t = base_table()
    v = t.column("label").to_pylist()
    for i in range(0, 60, 4):
        v[i] = None
    return with_label(t, v)


def _retype_score(c):
    t = write_flags(base_table(), c.p("tmp.flags.parquet"))
    t = pq.read_table(t)
    c.p("tmp.flags.parquet").unlink()
    c.p("tmp.flags.summary.json").unlink()
    i = t.schema.get_field_index("label_score")
    return t.set_column(i, "label_score", pa.array([str(v) for v in t.column(i).to_pylist()]))


def _zero_row_flags(c):
    t = pq.read_table(write_flags(base_table(), c.p("zero.flags.parquet"))).slice(0, 0)
    pq.write_table(t, c.p("zero.flags.parquet"))
    return t


def _cleaned_twice(c):
    flags = c.flags(base_table())
    assert run_cli("clean", flags, "--out", c.p("once.parquet"), "-q").exit_code == 0
    return clean_args(c.p("once.parquet"), "--label", "label")


# retrain ------------------------------------------------------------------------------------------------

def retrain_args(data, *extra, out="model_out"):
    return [data, "--out", out, "--id", "row_id", "-q", *FAST_TRAIN, *extra]


MODEL_OUT = ("model_out", "model_out/model.pt", "model_out/model.json", "model_out/metrics.json")


def retrain_cases():
    cases = [Case(cid, (lambda f: lambda c: retrain_args(f(c)))(f), names=names) for cid, f, names in BROKEN]
    d = lambda t, *a: (lambda c: retrain_args(c.table(t()), *a))  # noqa: E731
    b = lambda *a, **k: (lambda c: retrain_args(c.table(base_table()), *a, **k))  # noqa: E731
    cases += [
        Case("zero_rows", d(t_zero_rows), names=("'label'",)),
        Case("one_row", d(t_one_row), names=("'label'", "two classes")),
        Case("all_labels_null", d(t_all_null), names=("'label'",)),
        Case("one_class", d(t_one_class), names=("'label'", "two classes")),
        Case("label_struct", d(lambda: t_label("struct")), names=("'label'", "struct")),
        Case("label_map", d(lambda: t_label("map")), names=("'label'", "map")),
        Case("label_binary", d(lambda: t_label("binary")), names=("'label'", "binary")),
        # a list label is multi-label retraining now; a list of lists is still no label
        Case("label_list_of_lists", d(lambda: t_label("list_of_lists")), names=("'label'", "list")),
        Case("no_feature_columns", d(t_no_features), names=("feature",)),
        Case("duplicate_column_names", d(t_duplicate_columns), names=("'x'",)),
        Case("label_column_missing", b("--label", "target"), names=("'target'", "--label")),
        Case("epochs_0", b("--epochs", "0"), names=("--epochs", "0")),
        Case("batch_size_0", b("--batch-size", "0"), names=("--batch-size", "0")),
        Case("lr_negative", b("--lr", "-1"), names=("--lr", "-1")),
        Case("lr_nan", b("--lr", "nan"), names=("--lr", "nan")),
        Case("val_fraction_1", b("--val-fraction", "1"), names=("--val-fraction", "1")),
        Case("dropout_1", b("--dropout", "1"), names=("--dropout", "1")),
        Case("hidden_0", b("--hidden", "0"), names=("--hidden", "0")),
        Case("threads_0", b("--threads", "0"), names=("--threads", "0")),
        Case("unknown_loss", b("--loss", "magic"), names=("magic",)),
        Case("loss_param_malformed", b("--loss", "gce", "--loss-param", "q"), names=("--loss-param", "'q'")),
        Case("weight_col_missing", b("--weight-col", "w"), names=("--weight-col", "'w'")),
        Case("out_equals_input", lambda c: retrain_args(c.table(base_table()), out=c.p("data.parquet")),
             names=("--out", "data.parquet")),
        Case("out_in_missing_directory", b(out="no/dir/model"), names=("--out", "no/dir")),
        Case("out_not_empty", lambda c: (c.p("busy").mkdir(), (c.p("busy") / "keep.txt").write_text("x"),
                                         retrain_args(c.table(base_table()), out=c.p("busy")))[2],
             names=("--out", "busy", "--overwrite")),
        Case("class_with_one_row", d(t_class_one_row), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("as_many_classes_as_rows", d(t_classes_eq_rows), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("a_feature_entirely_null", d(t_null_feature), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("nan_and_inf_features", d(t_nan_inf), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("constant_features", d(t_constant), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("extreme_imbalance", d(t_imbalance), ok=True, outputs=MODEL_OUT, check=check_model),
        Case("odd_names", lambda c: [c.table(t_odd_names()), "--out", "model_out", "--label", ODD_LABEL,
                                     "--id", "row_id", "-q", *FAST_TRAIN],
             ok=True, outputs=MODEL_OUT, check=check_model),
    ]
    return cases


# predict ------------------------------------------------------------------------------------------------

def predict_args(model, data, *extra, out="out.parquet"):
    return [model, data, "--out", out, "-q", "--device", "cpu", *extra]


def _tamper(c, how):
    m = c.model()
    if how == "no_json":
        (m / "model.json").unlink()
    elif how == "no_pt":
        (m / "model.pt").unlink()
    elif how == "bad_json":
        (m / "model.json").write_text("{\"format\": ")
    elif how == "json_shape":
        spec = json.loads((m / "model.json").read_text())
        spec["architecture"]["hidden"] = [5]
        (m / "model.json").write_text(json.dumps(spec))
    elif how == "json_version":
        spec = json.loads((m / "model.json").read_text())
        spec["format_version"] = 99
        (m / "model.json").write_text(json.dumps(spec))
    elif how == "pt_truncated":
        data = (m / "model.pt").read_bytes()
        (m / "model.pt").write_bytes(data[: len(data) // 3])
    elif how == "pt_garbage":
        (m / "model.pt").write_bytes(b"\x00garbage" * 100)
    return predict_args(m, c.table(base_table()))


def predict_cases():
    cases = [Case(cid, (lambda f: lambda c: predict_args(c.model(), f(c)))(f), names=names)
             for cid, f, names in BROKEN]
    t = lambda how, *names: Case(f"model_{how}", lambda c: _tamper(c, how), names=("model", *names))  # noqa: E731
    m = lambda tab, *a, **k: (lambda c: predict_args(c.model(), c.table(tab()), *a, **k))  # noqa: E731
    cases += [
        Case("model_dir_missing", lambda c: predict_args(c.p("nomodel"), c.table(base_table())), names=("nomodel",)),
        Case("model_dir_is_a_file", lambda c: predict_args(c.table(base_table(), "m.parquet"), c.table(base_table())),
             names=("m.parquet",)),
        t("no_json", "model.json"), t("no_pt", "model.pt"), t("bad_json", "model.json"),
        t("json_shape", "model.pt"), t("json_version", "format_version"), t("pt_truncated", "model.pt"),
        t("pt_garbage", "model.pt"),
        Case("feature_column_missing", m(lambda: base_table().drop_columns(["x2"])), names=("x2",)),
        Case("feature_type_changed", m(lambda: base_table().set_column(
            1, "x", pa.array([str(v) for v in base_table().column("x").to_pylist()]))), names=("'x'",)),
        Case("output_column_clash", m(lambda: base_table().append_column("confidence", pa.array([1.0] * 60))),
             names=("confidence", "--prefix")),
        Case("out_equals_input", lambda c: predict_args(c.model(), c.table(base_table()), out=c.p("data.parquet")),
             names=("--out", "data.parquet")),
        Case("out_inside_model_dir", lambda c: predict_args(c.model(), c.table(base_table()), out=c.p("model/x.parquet")),
             names=("--out", "model")),
        Case("out_in_missing_directory", m(base_table, out="no/dir/out.parquet"), names=("--out", "no/dir")),
        Case("zero_rows", m(t_zero_rows), ok=True, outputs=("out.parquet",), check=check_preds),
        Case("one_row", m(t_one_row), ok=True, outputs=("out.parquet",), check=check_preds),
        Case("nan_and_inf_features", m(t_nan_inf), ok=True, outputs=("out.parquet",), check=check_preds),
        Case("a_feature_entirely_null", m(lambda: base_table().set_column(
            2, "x2", pa.nulls(60, pa.float64()))), ok=True, outputs=("out.parquet",), check=check_preds),
        Case("labels_missing_or_odd", m(lambda: base_table().drop_columns(["label"]).append_column(
            ODD_LABEL, pa.array(ODD * 10))), ok=True, outputs=("out.parquet",), check=check_preds),
    ]
    return cases


# report -------------------------------------------------------------------------------------------------

def report_args(flags, *extra, out="out.html"):
    return [flags, "--out", out, "-q", *extra]


def report_cases():
    cases = [Case(cid, (lambda f: lambda c: report_args(f(c)))(f), names=names) for cid, f, names in BROKEN]
    cases += [
        Case("summary_missing", lambda c: report_args(c.flags(base_table()), "--summary", "nope.json"),
             names=("nope.json",)),
        Case("no_sidecar_summary", lambda c: (c.flags(base_table()), c.p("data.flags.summary.json").unlink(),
                                              report_args(c.p("data.flags.parquet")))[2],
             names=("data.flags.summary.json",)),
        Case("summary_not_json", lambda c: (c.p("bad.json").write_text("{nope"),
                                            report_args(c.flags(base_table()), "--summary", "bad.json"))[1],
             names=("bad.json",)),
        Case("not_a_flags_table", lambda c: (c.flags(base_table()), c.p("data.flags.summary.json").rename(
            c.p("plain.summary.json")), report_args(c.table(base_table(), "plain.parquet")))[2],
             names=("plain.parquet",)),
        Case("rows_negative", lambda c: report_args(c.flags(base_table()), "--rows", "-1"), names=("--rows", "-1")),
        Case("out_equals_input", lambda c: report_args(c.flags(base_table()), out=c.p("data.flags.parquet")),
             names=("--out", "data.flags.parquet")),
        Case("out_equals_summary", lambda c: report_args(c.flags(base_table()), out=c.p("data.flags.summary.json")),
             names=("--out", "summary.json")),
        Case("out_in_missing_directory", lambda c: report_args(c.flags(base_table()), out=c.p("no/dir/r.html")),
             names=("--out", "no/dir")),
        Case("odd_names", lambda c: report_args(c.flags(t_odd_names(), label=ODD_LABEL)), ok=True,
             outputs=("out.html",), check=check_report),
        Case("zero_rows_flags", lambda c: report_args(c.table(_zero_row_flags(c), "zero.flags.parquet")), ok=True,
             outputs=("out.html",), check=check_report),
        Case("some_labels_null", lambda c: report_args(c.flags(_some_null())), ok=True, outputs=("out.html",),
             check=check_report),
    ]
    return cases


# run ----------------------------------------------------------------------------------------------------

def run_args(pipeline, *extra):
    return [pipeline, "--runs-dir", "runs", "-q", *extra]


def run_cases():
    cases = [Case(cid, (lambda f: lambda c: run_args(c.pipeline(f(c))))(f), names=("[source]", names[0]),
                  run_record=cid == "dir_schema_disagrees")  # found when the input is pinned
             for cid, f, names in BROKEN]
    d = lambda t, *a, body="": (lambda c: run_args(c.pipeline(c.table(t()), body), *a))  # noqa: E731
    cases += [
        Case("pipeline_file_missing", lambda c: run_args(c.p("nope.toml")), names=("nope.toml",)),
        Case("pipeline_file_zero_byte", lambda c: (c.p("p.toml").write_text(""), run_args(c.p("p.toml")))[1],
             names=("p.toml", "[source]")),
        Case("pipeline_not_toml", lambda c: (c.p("p.toml").write_text("stages = [oof\n"), run_args(c.p("p.toml")))[1],
             names=("p.toml", "TOML")),
        Case("unknown_key", d(base_table, body="[flag]\nmethd = \"combined\"\n"), names=("p.toml", "methd", "method")),
        Case("unknown_section", d(base_table, body="[flags]\nmethod = \"combined\"\n"), names=("p.toml", "flags")),
        Case("wrong_type", d(base_table, body="[flag]\nnoisy_threshold = \"high\"\n"),
             names=("p.toml", "noisy_threshold", "number")),
        Case("missing_source", lambda c: (c.p("p.toml").write_text("[oof]\nmodel = \"logreg\"\n"), run_args(c.p("p.toml")))[1],
             names=("p.toml", "[source]")),
        Case("unknown_source_type", lambda c: (c.p("p.toml").write_text("[source]\ntype = \"csv\"\npath = \"x.csv\"\n"),
                                               run_args(c.p("p.toml")))[1], names=("p.toml", "csv")),
        Case("from_until_selects_nothing", d(base_table, "--from", "clean", "--until", "oof"),
             names=("--from clean", "--until oof")),
        Case("from_stage_not_done", d(base_table, "--from", "flag"), names=("--from flag", "oof")),
        # Data problems a stage finds: the run directory keeps its manifest (status "failed", for
        # the next run to resume from) but no stage output and no temporary.
        Case("zero_rows", d(t_zero_rows), names=("stage oof", "'label'", "two classes"), run_record=True),
        Case("all_labels_null", d(t_all_null), names=("stage oof", "'label'", "two classes"), run_record=True),
        Case("one_class", d(t_one_class), names=("stage oof", "'label'", "two classes"), run_record=True),
        Case("label_struct", d(lambda: t_label("struct")), names=("'label'", "struct"), run_record=True),
        Case("label_column_missing", lambda c: run_args(c.pipeline(c.table(base_table()), label="target")),
             names=("'target'",)),
        Case("folds_1", d(base_table, "--set", "oof.folds=1"), names=("folds", "1")),
        Case("more_folds_than_rows", d(base_table, "--set", "oof.folds=61"), names=("folds", "61"),
             run_record=True),
        Case("n_jobs_0", d(base_table, "--set", "oof.n_jobs=0"), names=("n_jobs", "0")),
        Case("name_escapes_runs_dir", d(base_table, "--set", 'name="../escape"'), names=("../escape",)),
        Case("run_id_absolute", d(base_table, "--run-id", "/tmp/x"), names=("--run-id", "/tmp/x")),
        Case("run_id_nul", d(base_table, "--run-id", "a\x00b"), names=("--run-id",)),
        Case("sink_in_missing_directory_is_created", d(base_table, body="[sink]\ntype = \"parquet\"\nflags = \"no/dir/f.parquet\"\n"),
             ok=True, outputs=("no", "no/dir", "no/dir/f.parquet"), check=check_run),
        Case("sink_equals_source", d(base_table, body="[sink]\ntype = \"parquet\"\nflags = \"data.parquet\"\n"),
             names=("p.toml", "data.parquet")),
        Case("odd_names", lambda c: run_args(c.pipeline(c.table(t_odd_names()), label=ODD_LABEL)), ok=True,
             outputs=("runs",), check=check_run),
        Case("class_with_one_row", d(t_class_one_row), ok=True, outputs=("runs",), check=check_run,
             names=("'lonely'",)),
        Case("nan_and_inf_features", d(t_nan_inf), ok=True, outputs=("runs",), check=check_run, names=("inf",)),
    ]
    return cases


COMMANDS = {"flag": flag_cases(), "clean": clean_cases(), "retrain": retrain_cases(),
            "predict": predict_cases(), "report": report_cases(), "run": run_cases()}

#: A few pairs also run through a real interpreter, to check the process's own exit status.
SUBPROCESS = {("flag", "truncated_parquet"), ("run", "unknown_key")}


def _params():
    out = []
    for cmd, cases in COMMANDS.items():
        for case in cases:
            marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
            out.append(pytest.param(cmd, case, id=f"{cmd}-{case.id}", marks=marks))
    return out


@pytest.mark.parametrize("command, case", _params())
def test_contract(command, case, in_tmp, trained_model):
    ctx = Ctx(in_tmp, trained_model)
    args = [command, *case.build(ctx)]
    before = snapshot(in_tmp)
    res = run_cli(*args)
    after = snapshot(in_tmp)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"inputs modified or removed: {changed}"
    assert not temps(in_tmp), temps(in_tmp)
    if not case.ok:
        line = error_line(res)
        for part in case.names:
            assert part in line, f"{part!r} not in {line!r}"
        assert any(w in line.lower() for w in FIX_WORDS + ("--help",)), f"no fix in {line!r}"
        new = sorted(set(after) - set(before))
        if case.run_record:
            # only the run directory's bookkeeping: runs/p/{latest, <id>/, <id>/.lock, <id>/manifest.json}
            kinds = {k.split("/", 3)[-1] if k.count("/") >= 3 else "" for k in new}
            assert kinds <= {"", ".lock", "manifest.json"}, new
            (manifest,) = {p.resolve() for p in in_tmp.glob("runs/*/*/manifest.json")}
            assert json.loads(manifest.read_text())["status"] == "failed"
            return
        assert not new, f"files left behind: {new}"
        return
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 0, res.output
    assert not [ln for ln in res.stderr.splitlines() if ln and not ln.startswith("warning: ")], res.stderr
    warns = " ".join(warning_lines(res))
    for part in case.names:
        assert part in warns, f"expected a warning naming {part!r}; stderr: {res.stderr!r}"
    new = set(after) - set(before)
    if command == "run":
        assert new and all(k == "runs" or k.startswith("runs/") or k in case.outputs for k in new), new
        assert set(case.outputs) <= new
    else:
        assert new == set(case.outputs), (new, case.outputs)
    if case.check:
        case.check(ctx, res)


@pytest.mark.parametrize("command, case_id", sorted(SUBPROCESS))
def test_real_process_exit_status(command, case_id, in_tmp, trained_model):
    """The installed entry point exits 2 with one line (CliRunner could mask sys.exit handling)."""
    (case,) = [c for c in COMMANDS[command] if c.id == case_id]
    args = [str(a) for a in case.build(Ctx(in_tmp, trained_model))]
    before = snapshot(in_tmp)
    proc = subprocess.run([*CLI_CMD, command, *args], capture_output=True, text=True, cwd=in_tmp, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(in_tmp) == before


def test_internal_error_is_exit_1_without_traceback(in_tmp, monkeypatch):
    """A bug (not a user mistake) is exit 1 with one line pointing at -v, and writes nothing."""
    import cleanpipe.flag
    pq.write_table(base_table(), in_tmp / "data.parquet")

    def boom(*a, **k):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(cleanpipe.flag, "detect", boom)
    before = snapshot(in_tmp)
    res = run_cli("flag", "data.parquet", "--pred-probs", np.save(in_tmp / "p.npy", probs_for(base_table())) or "p.npy",
                  "-q")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: ZeroDivisionError") and "-v" in lines[0]
    assert set(snapshot(in_tmp)) == set(before) | {"p.npy"} and not temps(in_tmp)
