"""``build_report`` / ``write_report`` and ``cleanpipe report``: content, self-containment, escaping."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.errors import CleanpipeWarning, InputError
from cleanpipe.io import TMP_PREFIX
from cleanpipe.report import build_report, read_summary, summary_path_for, write_report
from cleanpipe.report.charts import axis_label, loss_mixture_chart, noise_matrix_chart, per_class_chart

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
CHART_IDS = ("chart-loss-mixture", "chart-noise-matrix", "chart-per-class", "chart-scores")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_flags(result, directory: Path, name: str = "data.flags.parquet", **kwargs) -> Path:
    """Write a flags table and its summary sidecar the way ``cleanpipe flag`` names them."""
    path = directory / name
    pq.write_table(result.table, path, **kwargs)
    summary_path_for(path).write_text(json.dumps(result.summary))
    return path


def suspicious_rows(page: str) -> list[str]:
    body = page.split('id="suspicious-rows"', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body)[1:]  # [0] is the header row


def test_every_section_and_chart_is_present(report_html, flagged):
    for chart in CHART_IDS:
        assert re.search(rf'<img id="{chart}"[^>]* src="data:image/svg\+xml;base64,', report_html), chart
    for section in ("loss-mixture", "noise-matrix", "per-class", "scores", "suspicious", "run"):
        assert f'<section id="{section}">' in report_html
    for table in ("suspicious-rows", "per-class-table", "settings", "versions", "timings"):
        assert f'<table id="{table}"' in report_html
    s = flagged.summary
    headline = report_html.split('id="headline"', 1)[1].split("</header>", 1)[0]
    assert f">{s['rows']}<" in headline and f">{len(s['classes'])}<" in headline
    assert f"{s['estimated_noise_rate']:.1%}" in headline and f">{s['flagged']} (" in headline
    assert s["versions"]["pyarrow"] in report_html and s["settings"]["method"] in report_html


def test_the_50_lowest_scores_are_listed_lowest_first(report_html, flagged):
    rows = suspicious_rows(report_html)
    assert len(rows) == 50
    score = flagged.table.column("label_score").to_numpy()
    expected = np.argsort(score, kind="stable")[:50]
    listed = [int(re.search(r">(\d+)</td>", r).group(1)) for r in rows]
    assert listed == expected.tolist()
    # The id column comes first among the data columns; the label column is not repeated.
    head = report_html.split('id="suspicious-rows"', 1)[1].split("</thead>", 1)[0]
    names = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", head)
    assert names[:7] == ["row", "given_label", "predicted_label", "label_score", "p_noisy",
                         "is_label_issue", "row_id"]
    assert "label" not in names
    assert "\u2026" in rows[0]  # the long `note` value is cut, its full text is in the tooltip


def test_page_is_self_contained(report_html):
    assert "<script" not in report_html.lower()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", report_html, flags=re.I)
    links += re.findall(r"url\(\s*['\"]?([^)'\"]+)", report_html, flags=re.I)
    assert links, "expected the chart images at least"
    for link in links:
        assert link.startswith(("data:image/svg+xml;base64,", "#")), link[:80]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", report_html, flags=re.I)
    assert "@import" not in report_html and "@font-face" not in report_html
    # Inside each SVG: well-formed XML, no script, only in-document references.
    for b64 in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", report_html):
        svg = base64.b64decode(b64).decode("utf-8")
        root = ET.fromstring(svg)
        for el in root.iter():
            assert not el.tag.endswith("script")
            for key, value in el.attrib.items():
                if key.endswith("href"):  # glyph references, and imshow's raster as a PNG
                    assert value.startswith(("#", "data:image/png;base64,")), value[:80]


def test_class_names_column_names_and_source_are_escaped(flagged_xss):
    page = build_report(flagged_xss.table, flagged_xss.summary)
    assert SCRIPT not in page and IMG not in page
    assert "<img src=x" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    esc_script, esc_img = "&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;"
    classes = page.split('id="per-class-table"', 1)[1].split("</table>", 1)[0]
    assert esc_script in classes and esc_img in classes
    head = page.split('id="suspicious-rows"', 1)[1].split("</thead>", 1)[0]
    assert f"<th>{esc_script}</th>" in head and f"<th>{esc_img}</th>" in head
    body = page.split('id="suspicious-rows"', 1)[1].split("</tbody>", 1)[0]
    assert f'class="given">{esc_script}</td>' in body or f'class="pred">{esc_script}</td>' in body
    assert f"/data/{esc_script}.parquet" in page.split("</header>", 1)[0]
    assert f"<title>cleanpipe report: /data/{esc_script}.parquet</title>" in page
    # The only tags in the page are the template's own.
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "header", "div", "h1", "h2", "h3",
                    "main", "nav", "a", "section", "p", "figure", "img", "table", "thead", "tbody", "tr",
                    "th", "td", "span", "em", "ul", "li", "footer"}, tags
    assert page.count("<img ") == len(CHART_IDS)
    # A long value goes in a tooltip attribute too; its quotes cannot close that attribute.
    assert 'onmouseover="alert(1)"' not in page
    assert 'title="&quot; onmouseover=&quot;alert(1)&quot;' in page


def test_parquet_path_is_read_in_batches_and_matches_the_table(flagged, report_html, tmp_path,
                                                               monkeypatch):
    # Several row groups and batches: the running top-50 must match a sort of the whole column.
    monkeypatch.setattr("cleanpipe.report._BATCH_ROWS", 16)
    path = write_flags(flagged, tmp_path, row_group_size=17)
    assert pq.ParquetFile(path).num_row_groups > 5
    from_table = report_html
    from_file = build_report(path, flagged.summary)
    assert suspicious_rows(from_file) == suspicious_rows(from_table)
    assert re.findall(r'id="chart-scores"[^>]*src="([^"]+)"', from_file) == \
        re.findall(r'id="chart-scores"[^>]*src="([^"]+)"', from_table)


def test_a_directory_of_parquet_files_reads_like_one_table(flagged, tmp_path):
    from cleanpipe.report import _open, _scan
    table = flagged.table
    (tmp_path / "flags").mkdir()
    pq.write_table(table.slice(0, 70), tmp_path / "flags" / "part-0.parquet")
    pq.write_table(table.slice(70), tmp_path / "flags" / "part-1.parquet")
    expected = _scan(table.to_batches(max_chunksize=16), 20)
    schema, batches, take = _open(tmp_path / "flags")
    got = _scan(batches(["label_score", "is_label_issue"]), 20)
    assert got.top.tolist() == expected.top.tolist() and got.n_rows == table.num_rows
    assert (got.kept == expected.kept).all() and (got.flagged == expected.flagged).all()
    pos = np.sort(got.top)
    assert take(pos, ["row_id", "note"]).equals(table.select(["row_id", "note"]).take(pos))


def test_columns_and_rows_are_capped(make_flagged_result):
    result = make_flagged_result(n_extra_features=30)
    page = build_report(result.table, result.summary, max_rows=7, max_columns=5)
    rows = suspicious_rows(page)
    assert len(rows) == 7
    head = page.split('id="suspicious-rows"', 1)[1].split("</thead>", 1)[0]
    assert len(re.findall(r"<th[ >]", head)) == 6 + 5
    n_data = result.table.num_columns - 5 - 1  # minus flag's columns and the label
    assert f"{n_data - 5} more data column(s) are not shown" in page


def test_unfitted_mixture_gaussian_family_and_dollar_class_names_render(make_flagged_result):
    result = make_flagged_result(class_names=("$x$", "a$b", "$\\frac"), mixture="gaussian")
    assert result.summary["mixture"]["family"] == "gaussian"
    assert ET.fromstring(loss_mixture_chart(result.summary["mixture"])).tag.endswith("svg")
    mixture = {k: v for k, v in result.summary["mixture"].items()
               if k in ("loss_bounds", "histogram")}
    mixture["reason"] = "fewer than 8 labelled rows"
    page = build_report(result.table, dict(result.summary, mixture=mixture))
    assert "No mixture was fitted: fewer than 8 labelled rows" in page
    assert axis_label("$\\frac") == "\\$\\frac" and len(axis_label("x" * 100)) == 18


def test_charts_with_many_classes(tmp_path):
    k = 45
    names = [f"class {i}" for i in range(k)]
    matrix = np.full((k, k), 0.2 / (k - 1)) + np.eye(k) * (0.8 - 0.2 / (k - 1))
    for svg in (noise_matrix_chart(matrix, names), per_class_chart(names, range(k), np.linspace(0, 0.5, k)),
                loss_mixture_chart({"histogram": {"edges": [0, 0.5, 1], "counts": [3, 1]}})):
        assert ET.fromstring(svg).tag.endswith("svg")


def test_report_from_a_dataframe_and_a_row_count_mismatch_warns(flagged):
    page = build_report(flagged.table.to_pandas(), flagged.summary)
    assert len(suspicious_rows(page)) == 50
    # The project's pytest settings turn CleanpipeWarning into an error, which stops the build early.
    with pytest.raises(CleanpipeWarning, match="--summary"):
        build_report(flagged.table.slice(0, 100), flagged.summary)


def test_bad_inputs_raise_input_errors(flagged, tmp_path):
    with pytest.raises(InputError, match="lacks the column"):
        build_report(flagged.table.drop_columns(["label_score"]), flagged.summary)
    with pytest.raises(InputError, match="lacks mixture"):
        build_report(flagged.table, {k: v for k, v in flagged.summary.items() if k != "mixture"})
    with pytest.raises(InputError, match="needs summary="):
        write_report(flagged.table, tmp_path / "r.html")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_summary(tmp_path / "bad.json")


def test_cli_writes_the_default_path_atomically(flagged, tmp_path, monkeypatch):
    path = write_flags(flagged, tmp_path)
    monkeypatch.chdir(tmp_path)
    replaced = []
    import os
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b)))
    res = run("report", path)
    assert res.exit_code == 0, res.output
    out = tmp_path / "data.flags.report.html"
    assert res.stdout.strip() == f"wrote {out}"
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # Written to a temporary beside the target, then renamed over it; nothing left behind.
    (tmp, final), = replaced
    assert final == out and tmp.parent == out.parent and tmp.name.startswith(TMP_PREFIX)
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_cli_failed_write_keeps_the_old_report(flagged, tmp_path, monkeypatch):
    path = write_flags(flagged, tmp_path)
    out = tmp_path / "r.html"
    out.write_text("old report")

    def half_write(self, text, encoding=None):
        with open(self, "w", encoding=encoding) as fh:
            fh.write(text[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", half_write)
    monkeypatch.setattr("cleanpipe.report.build_report", lambda *a, **k: "<!DOCTYPE html>" + "x" * 500)
    res = run("report", path, "--out", out)  # not a report cleanpipe wrote: kept without --overwrite
    assert res.exit_code == 2 and "--overwrite" in res.stderr and out.read_text() == "old report"
    res = run("report", path, "--out", out, "--overwrite")
    # A full disk is an environment fault: exit 2, one line naming the file
    assert res.exit_code == 2 and "no space left" in res.stderr and str(out) in res.stderr
    assert out.read_text() == "old report"
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_cli_summary_option_and_quiet(flagged, tmp_path):
    path = tmp_path / "flags.parquet"
    pq.write_table(flagged.table, path)
    summary = tmp_path / "elsewhere.json"
    summary.write_text(json.dumps(flagged.summary))
    res = run("report", path, "--summary", summary, "--out", tmp_path / "r.html", "-q")
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and (tmp_path / "r.html").stat().st_size > 10_000


@pytest.mark.parametrize("case", ["missing summary", "missing flags", "bad summary", "not parquet",
                                  "out is the input"])
def test_cli_user_errors_exit_2_with_one_line(case, flagged, tmp_path):
    path = tmp_path / "data.flags.parquet"
    pq.write_table(flagged.table, path)
    args = ["report", path, "--out", tmp_path / "r.html"]
    expected = {"missing summary": "summary", "missing flags": "does not exist",
                "bad summary": "not valid JSON", "not parquet": "not a readable Parquet",
                "out is the input": "would overwrite the input"}[case]
    if case != "missing summary":
        summary_path_for(path).write_text(json.dumps(flagged.summary))
    if case == "missing flags":
        args[1] = tmp_path / "nope.parquet"
        args += ["--summary", summary_path_for(path)]
    elif case == "bad summary":
        summary_path_for(path).write_text("[1, 2")
    elif case == "not parquet":
        path.write_text("not parquet at all")
    elif case == "out is the input":
        args[-1] = path
    res = run(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    if case == "missing summary":
        assert "--summary" in lines[0] and str(summary_path_for(path)) in lines[0]
    assert not (tmp_path / "r.html").exists()
