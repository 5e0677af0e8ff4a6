"""``cleanpipe flag`` on multi-label data end to end through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from cleanpipe.flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS

MULTILABEL_OUTPUT_COLUMNS = FLAG_COLUMNS + SUSPECT_COLUMNS

from cli_helpers import run

#: Tag names, listed here (and in each row) out of sorted order on purpose.
TAGS = ["sky", "dog", "tree", "car"]
CLASSES = sorted(TAGS)
N_NULL = 5


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """1200 rows, tag k present when ``x_k + 0.4 x_4`` passes a threshold, a list<string> tag column
    with 5% of the (row, tag) cells flipped, 5 null lists, and a categorical feature.

    Returns (path, noisy 0/1 matrix in sorted class order, rows with a flipped tag, table).
    """
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=(n, 6))
    true = x[:, :4] + 0.4 * x[:, 4:5] > np.array([0.0, 0.5, -0.3, 1.0])
    flip = rng.random(true.shape) < 0.05
    noisy = true ^ flip
    names = np.array(TAGS)
    lists = [names[row].tolist() for row in noisy]
    lists[:N_NULL] = [None] * N_NULL
    flip[:N_NULL] = False
    table = pa.table({"row_id": np.arange(n), **{f"x{i}": x[:, i] for i in range(6)},
                      "colour": rng.choice(["red", "blue"], n),
                      "tags": pa.array(lists, type=pa.list_(pa.string()))})
    path = tmp_path_factory.mktemp("tags") / "tags.parquet"
    pq.write_table(table, path)
    order = [TAGS.index(c) for c in CLASSES]
    return path, noisy[:, order].astype(np.int64), flip.any(axis=1), table


@pytest.fixture(scope="module")
def flagged(tagged, tmp_path_factory):
    """One run of ``flag`` on the list column (auto-detected): (result, flags table, summary, probs path)."""
    path, *_ = tagged
    out_dir = tmp_path_factory.mktemp("out")
    res = run("flag", path, "--label", "tags", "--id", "row_id", "--model", "logreg", "--folds", "3",
              "--out", out_dir / "f.parquet", "--save-pred-probs", out_dir / "p.npy")
    assert res.exit_code == 0, res.output
    return res, pq.read_table(out_dir / "f.parquet"), json.loads(
        (out_dir / "f.summary.json").read_text()), out_dir / "p.npy"


def test_injected_tag_errors_found_with_f1_above_07(tagged, flagged):
    _, _, err, table = tagged
    res, flags, summary, _ = flagged
    issue = flags.column("is_label_issue").to_numpy()
    assert f1_score(err[N_NULL:], issue[N_NULL:]) >= 0.7
    assert flags.column_names == table.column_names + list(MULTILABEL_OUTPUT_COLUMNS)
    assert flags.select(table.column_names).equals(table)
    assert summary["multi_label"] is True and summary["classes"] == CLASSES
    assert summary["flagged"] == int(issue.sum())
    assert set(summary["noise_rate_per_class"]) == set(CLASSES)
    assert set(summary["missing_per_class"]) == set(summary["spurious_per_class"]) == set(CLASSES)
    assert 0.05 < summary["estimated_noise_rate"] < 0.4
    assert np.allclose(np.asarray(summary["noise_matrix"]).sum(axis=1), 1.0)
    assert "estimated noise rate" in res.stdout and "most suspicious rows" in res.stdout
    assert {"row_id", "suspect_missing", "suspect_spurious"} <= set(summary["top_suspicious"][0])


def test_top_suspicious_rows_are_the_lowest_scores_with_their_own_values(flagged):
    _, flags, summary, _ = flagged
    score = flags.column("label_score").to_numpy(zero_copy_only=False)
    order = np.argsort(np.where(np.isnan(score), np.inf, score), kind="stable")[:10]
    top = summary["top_suspicious"]
    assert [r["row"] for r in top] == order.tolist()
    for r in top:  # each row's tags are its own, not the column's
        for c in ("given_label", "predicted_label", "suspect_missing", "suspect_spurious"):
            assert r[c] == flags.column(c)[r["row"]].as_py(), (r["row"], c)


def test_flags_within_one_and_a_half_times_the_wrong_rows(tagged, flagged):
    _, _, err, _ = tagged
    _, flags, summary, _ = flagged
    issue = flags.column("is_label_issue").to_numpy()[N_NULL:]
    wrong = int(err[N_NULL:].sum())
    assert wrong / 1.5 <= issue.sum() <= 1.5 * wrong, (int(issue.sum()), wrong)
    # the summary's estimate is the count the default rule flags
    assert abs(summary["estimated_issues"] - issue.sum()) <= 1
    assert summary["settings"]["method"] == "posterior"


def test_many_tags_per_row_flags_within_one_and_a_half_times_the_wrong_rows(tmp_path):
    # 8 tags, about 4 per row, 4% of the cells flipped: the table on which the anchor rates used
    # to over-count (a row's evidence is shared among its tags), end to end through the CLI
    rng = np.random.default_rng(0)
    n, k = 1500, 8
    x = rng.normal(size=(n, k + 2))
    true = x[:, :k] + 0.5 * x[:, k:k + 1] > np.linspace(-0.6, 0.8, k)
    flip = rng.random(true.shape) < 0.04
    names = np.array([f"t{j}" for j in range(k)])
    table = pa.table({**{f"x{i}": x[:, i] for i in range(k + 2)},
                      "tags": pa.array([names[r].tolist() for r in true ^ flip], type=pa.list_(pa.string()))})
    pq.write_table(table, tmp_path / "dense.parquet")
    res = run("flag", tmp_path / "dense.parquet", "--label", "tags", "--model", "logreg", "--folds", "3",
              "--out", tmp_path / "f.parquet")
    assert res.exit_code == 0, res.output
    issue = pq.read_table(tmp_path / "f.parquet").column("is_label_issue").to_numpy()
    wrong = flip.any(axis=1)
    assert (true ^ flip).sum(axis=1).mean() > 3.5
    assert wrong.sum() / 1.5 <= issue.sum() <= 1.5 * wrong.sum(), (int(issue.sum()), int(wrong.sum()))
    assert f1_score(wrong, issue) >= 0.7


def test_joint_network_flags_within_one_and_a_half_times_the_wrong_rows(tagged, tmp_path):
    # --model mlp: one network for every tag (cleanpipe.multilabel_mlp), end to end
    path, _, err, _ = tagged
    res = run("flag", path, "--label", "tags", "--id", "row_id", "--model", "mlp", "--folds", "3",
              "--out", tmp_path / "f.parquet")
    assert res.exit_code == 0, res.output
    issue = pq.read_table(tmp_path / "f.parquet").column("is_label_issue").to_numpy()[N_NULL:]
    wrong = int(err[N_NULL:].sum())
    assert wrong / 1.5 <= issue.sum() <= 1.5 * wrong, (int(issue.sum()), wrong)
    assert f1_score(err[N_NULL:], issue) >= 0.7

def test_output_lists_nulls_and_suspects(tagged, flagged):
    *_, table = tagged
    _, flags, summary, _ = flagged
    assert flags.schema.field("given_label").type.value_type == pa.string()
    given = flags.column("given_label").to_pylist()
    source = table.column("tags").to_pylist()
    assert given[:N_NULL] == [None] * N_NULL
    assert given[N_NULL:] == [sorted(tags) for tags in source[N_NULL:]]  # sorted class order
    assert [] in given  # rows without a tag: an empty list, kept as such
    for col in ("label_score", "p_noisy", "suspect_missing", "suspect_spurious"):
        assert flags.column(col).to_pylist()[:N_NULL] == [None] * N_NULL
    assert not any(flags.column("is_label_issue").to_pylist()[:N_NULL])
    assert all(v is not None for v in flags.column("predicted_label").to_pylist())
    assert summary["unlabelled_rows"] == N_NULL
    issue = flags.column("is_label_issue").to_numpy()
    missing = flags.column("suspect_missing").to_pylist()
    spurious = flags.column("suspect_spurious").to_pylist()
    for i in np.flatnonzero(issue):  # suspects: missing tags are absent, spurious ones present
        assert missing[i] or spurious[i]
        assert not set(missing[i]) & set(given[i]) and set(spurious[i]) <= set(given[i])
    assert not any(m or s for m, s, f in zip(missing, spurious, issue) if not f)


def test_zero_one_columns_and_explicit_flag_agree_with_the_list_column(tagged, flagged, tmp_path):
    path, noisy, _, table = tagged
    _, flags, _, probs = flagged
    cols = {c: noisy[:, j].astype(np.int8) for j, c in enumerate(CLASSES)}
    cols["dog"] = noisy[:, CLASSES.index("dog")].astype(bool)  # bools are 0/1 too
    masks = {c: np.arange(len(noisy)) < N_NULL if c == "sky" else None for c in CLASSES}
    wide = table.drop_columns(["tags"])
    for c in CLASSES:
        wide = wide.append_column(c, pa.array(cols[c], mask=masks[c]))
    src = tmp_path / "wide.parquet"
    pq.write_table(wide, src)
    res = run("flag", src, "--label", ",".join(CLASSES), "--pred-probs", probs, "--out",
              tmp_path / "wide.flags.parquet", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["settings"]["label_format"] == "columns" and summary["classes"] == CLASSES
    wide_flags = pq.read_table(tmp_path / "wide.flags.parquet")
    for col in ("given_label", "predicted_label", "is_label_issue", "suspect_missing", "label_score"):
        assert wide_flags.column(col).equals(flags.column(col)), col
    # --multi-label on the list column changes nothing
    res = run("flag", path, "--label", "tags", "--multi-label", "--pred-probs", probs, "-q",
              "--out", tmp_path / "again.parquet")
    assert res.exit_code == 0 and res.stdout == ""
    again = pq.read_table(tmp_path / "again.parquet")
    assert again.column("is_label_issue").equals(flags.column("is_label_issue"))


def test_integer_tags_keep_their_type_and_methods(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    lists = [[int(k) for k in (10, 20, 30) if x[i, (k // 10) - 1] > 0] for i in range(200)]
    table = pa.table({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": lists})
    probs = np.clip(np.where(x > 0, 0.9, 0.1) + rng.normal(0, 0.05, x.shape), 0, 1)
    probs[:20] = 1 - probs[:20]  # rows 0-19 contradict every tag
    src = tmp_path / "int.parquet"
    pq.write_table(table, src)
    np.save(tmp_path / "p.npy", probs)
    for method in ("noise_rate", "both", "mixture"):
        out = tmp_path / f"{method}.parquet"
        res = run("flag", src, "--label", "y", "--pred-probs", tmp_path / "p.npy", "--method", method,
                  "--out", out, "-q")
        assert res.exit_code == 0, res.output
        flags = pq.read_table(out)
        assert flags.schema.field("given_label").type == pa.list_(pa.int64())
        assert flags.column("is_label_issue").to_numpy()[:20].mean() > 0.8, method
        suspects = flags.column("suspect_spurious")[3].as_py() + flags.column("suspect_missing")[3].as_py()
        assert suspects and set(suspects) <= {10, 20, 30}


def _bad_inputs(tmp_path):
    n = 30
    base = {"x": np.arange(n, dtype=float)}

    def write(name, **cols):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({**base, **cols}), path)
        return path

    tags = pa.array([["a", "b"] if i % 2 else ["b"] for i in range(n)])
    good = write("good", tags=tags, a=np.arange(n) % 2, b=np.ones(n, int))
    structs = write("structs", tags=pa.array([[{"k": 1}]] * n))
    two = write("two", a=np.where(np.arange(n) == 17, 2, np.arange(n) % 2), b=np.arange(n) % 3 == 0)
    text = write("text", a=np.arange(n) % 2, b=pa.array(["yes"] * n))
    null_tag = write("nulltag", tags=pa.array([["a", None]] + [["a"]] * (n - 1)))
    empty = write("empty", tags=pa.array([[]] * n, type=pa.list_(pa.string())))
    single = write("single", tags=pa.array([["a"]] * n))
    np.save(tmp_path / "cols.npy", np.full((n, 3), 0.5))
    return [
        ([structs, "--label", "tags"], "is a list of struct"),
        ([two, "--label", "a,b"], "label column 'a' holds 2 in row 17"),
        ([text, "--label", "a,b"], "label column 'b' has type string"),
        ([good, "--label", "a", "--multi-label"], "not a list of tags"),
        ([good, "--label", "a,nope"], "label column 'nope' not found"),
        ([good, "--label", "tags,a"], "is a list column"),
        ([good, "--label", "tags", "--method", "combined"], "--method combined is not available"),
        ([good, "--label", "tags", "--pred-probs", tmp_path / "cols.npy"], "3 columns"),
        ([null_tag, "--label", "tags"], "null tag in the list of row 0"),
        ([empty, "--label", "tags"], "holds no tags"),
        ([single, "--label", "tags"], "single tag"),
    ]


def test_user_mistakes_exit_2_with_one_line_and_no_output(tmp_path):
    for args, message in _bad_inputs(tmp_path):
        out = tmp_path / "out.parquet"
        res = run("flag", *args, "--out", out, "--model", "logreg", "--folds", "2")
        assert res.exit_code == 2, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
        assert message in lines[0], (message, lines[0])
        assert not out.exists()


def test_help_mentions_multi_label():
    res = run("flag", "--help")
    assert res.exit_code == 0 and "--multi-label" in res.stdout and "suspect_missing" in res.stdout


def test_flag_multilabel_table_in_python(tagged, flagged):
    from cleanpipe.flag import flag_multilabel_table

    _, _, _, table = tagged
    _, flags, _, probs = flagged
    result = flag_multilabel_table(table, label="tags", pred_probs=np.load(probs), ids=["row_id"])
    assert result.table.column_names == flags.column_names
    for col in MULTILABEL_OUTPUT_COLUMNS:
        assert result.table.column(col).to_pylist() == flags.column(col).to_pylist(), col
    assert result.summary["settings"]["pred_probs"] == "array"
    assert result.detection.is_label_issue.sum() == result.summary["flagged"]
