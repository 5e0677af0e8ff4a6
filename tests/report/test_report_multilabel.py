"""The report of a multi-label flags table (``cleanpipe flag --multi-label``): CLI, content, escaping."""

from __future__ import annotations

import base64
import html
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.errors import InputError
from cleanpipe.report import build_report
from cleanpipe.report.charts import MAX_BAR_CLASSES, per_class_chart
from cleanpipe.report.html import CELL_CHARS

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
CHART_IDS = ("chart-loss-mixture", "chart-per-class", "chart-scores")
SECTIONS = ("loss-mixture", "per-class", "scores", "suspicious", "run")
TAGS = (SCRIPT, IMG, "plain")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def table_rows(page: str, table_id: str) -> list[list[str]]:
    """The text of each body cell of the table ``table_id``, row by row (markup stripped)."""
    body = page.split(f'id="{table_id}"', 1)[1].split("</tbody>", 1)[0].split("<tbody>", 1)[1]
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def header_cells(page: str, table_id: str) -> list[str]:
    head = page.split(f'id="{table_id}"', 1)[1].split("</thead>", 1)[0]
    return re.findall(r"<th(?: [^>]*)?>(.*?)</th>", head)


@pytest.fixture(scope="module")
def cli_report(make_multilabel_result, tmp_path_factory):
    """``cleanpipe flag`` (multi-label, given probabilities) then ``cleanpipe report`` on its output.

    Returns (report text, flags table, summary).
    """
    _, table, probs = make_multilabel_result(tags=TAGS)
    d = tmp_path_factory.mktemp("ml")
    pq.write_table(table, d / "tags.parquet")
    np.save(d / "p.npy", probs)
    res = run("flag", d / "tags.parquet", "--label", "tags", "--id", "row_id", "--pred-probs",
              d / "p.npy", "--out", d / "tags.flags.parquet", "-q")
    assert res.exit_code == 0, res.output
    res = run("report", d / "tags.flags.parquet", "--out", d / "r.html")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"wrote {d / 'r.html'}"
    return ((d / "r.html").read_text(encoding="utf-8"), pq.read_table(d / "tags.flags.parquet"),
            json.loads((d / "tags.flags.summary.json").read_text()))


def test_cli_report_has_every_multilabel_section_and_chart(cli_report):
    page, flags, summary = cli_report
    for chart in CHART_IDS:
        src = re.search(rf'<img id="{chart}"[^>]* src="data:image/svg\+xml;base64,([^"]+)"', page)
        assert src, chart
        assert ET.fromstring(base64.b64decode(src.group(1))).tag.endswith("svg")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # A multi-label noise matrix is one 2 x 2 matrix per class: no heatmap, no link to one.
    assert 'id="noise-matrix"' not in page and "chart-noise-matrix" not in page
    assert "#noise-matrix" not in page
    assert "<h1>Multi-label issue report</h1>" in page
    headline = page.split('id="headline"', 1)[1].split("</header>", 1)[0]
    tags = summary["flagged_tags"]
    assert f">{tags['missing']} / {tags['spurious']}<" in headline
    assert f">{summary['flagged']} (" in headline
    assert "binary cross-entropy of the given tags" in page
    for table in ("suspicious-rows", "per-class-table", "settings", "versions", "timings"):
        assert f'<table id="{table}"' in page
    assert "<script" not in page.lower()


def test_per_class_table_counts_the_suspect_tags_of_the_flags_table(cli_report):
    page, flags, summary = cli_report
    assert header_cells(page, "per-class-table") == [
        "class", "rows with tag", "est. noise rate", "est. missing", "est. spurious", "suspect missing",
        "suspect spurious"]
    rows = {html.unescape(r[0]): r[1:] for r in table_rows(page, "per-class-table")}
    assert set(rows) == set(summary["classes"])
    for column, at in (("suspect_missing", 4), ("suspect_spurious", 5)):
        tags = [t for row in flags.column(column).to_pylist() if row for t in row]
        for name, cells in rows.items():
            assert int(cells[at]) == tags.count(name), (column, name)
    for name, cells in rows.items():
        assert int(cells[0]) == summary["rows_per_class"][name]
        assert cells[1] == f"{summary['noise_rate_per_class'][name]:.1%}"
        assert int(cells[2]) == summary["missing_per_class"][name]
        assert int(cells[3]) == summary["spurious_per_class"][name]


def test_suspicious_rows_show_given_and_suspect_tags_escaped(cli_report):
    page, flags, _ = cli_report
    head = header_cells(page, "suspicious-rows")
    assert head[:8] == ["row", "given_label", "predicted_label", "suspect_missing", "suspect_spurious",
                        "label_score", "p_noisy", "is_label_issue"]
    # The id column first among the data columns; the tags column repeats given_label, so is left out.
    assert head[8:] == ["row_id", "x", "note"]
    score = flags.column("label_score").to_numpy(zero_copy_only=False)
    expected = np.argsort(np.where(np.isnan(score), np.inf, score), kind="stable")[:50]
    rows = table_rows(page, "suspicious-rows")
    assert [int(r[0]) for r in rows] == expected.tolist()
    given = flags.column("given_label").to_pylist()
    missing = flags.column("suspect_missing").to_pylist()
    spurious = flags.column("suspect_spurious").to_pylist()
    for r in rows:
        i = int(r[0])
        for cell, value in ((r[1], given[i]), (r[3], missing[i]), (r[4], spurious[i])):
            text = ", ".join(value) if value else "\u2014"
            # Cut like any long value (the whole list is in the tooltip).
            cut = text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "\u2026"
            assert html.unescape(cell) == cut
    # The payload tags are shown as text, in the colours of a suspect tag.
    body = page.split('id="suspicious-rows"', 1)[1]
    esc_script = html.escape(SCRIPT, quote=True)
    assert SCRIPT not in page and IMG not in page
    assert f'class="spurious">{esc_script}' in body or f'class="missing">{esc_script}' in body
    assert re.search(r'class="(?:missing|spurious)">[^<]*' + re.escape(html.escape(IMG, quote=True)), body)
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "header", "div", "h1", "h2", "h3",
                    "main", "nav", "a", "section", "p", "figure", "img", "table", "thead", "tbody", "tr",
                    "th", "td", "span", "em", "ul", "li", "footer"}, tags
    assert page.count("<img ") == len(CHART_IDS)


def test_flag_multilabel_report_end_to_end(make_multilabel_result, tmp_path):
    # Real cross-validation this time: flag fits the one-vs-rest models, then writes the report.
    _, table, _ = make_multilabel_result(n=240, seed=1)
    pq.write_table(table, tmp_path / "tags.parquet")
    out = tmp_path / "tags.flags.parquet"
    res = run("flag", tmp_path / "tags.parquet", "--label", "tags", "--multi-label", "--model", "logreg",
              "--folds", "3", "--out", out, "--report", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    report = tmp_path / "tags.flags.report.html"
    assert summary["outputs"]["report"] == str(report) and summary["multi_label"] is True
    page = report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    for chart in CHART_IDS:
        assert f'<img id="{chart}"' in page
    assert "logreg" in page.split('id="settings"', 1)[1]  # the run's settings
    assert 'id="timings"' in page and "oof" in page.split('id="timings"', 1)[1]
    assert len(table_rows(page, "suspicious-rows")) == 50


def test_zero_one_label_columns_are_not_listed_as_data(make_multilabel_result):
    result, _, _ = make_multilabel_result(label_columns=True)
    page = build_report(result.table, result.summary)
    assert header_cells(page, "suspicious-rows")[8:] == ["row_id", "x", "note"]


def test_training_section_follows_per_class_and_precedes_run(make_multilabel_result,
                                                              make_training_metrics):
    result, _, _ = make_multilabel_result()
    page = build_report(result.table, result.summary, training=make_training_metrics())
    toc = re.findall(r'<a href="#([^"]+)">', page.split('<nav class="toc">', 1)[1].split("</nav>", 1)[0])
    assert toc == ["loss-mixture", "per-class", "scores", "suspicious", "training", "run"]
    assert [s for s in re.findall(r'<section id="([^"]+)">', page)] == toc


def test_mismatched_flags_and_summary_raise_input_errors(make_multilabel_result, flagged):
    result, _, _ = make_multilabel_result()
    with pytest.raises(InputError, match="is multi-label .* but its summary is not"):
        build_report(result.table, flagged.summary)
    with pytest.raises(InputError, match="lacks the column.*suspect_missing, suspect_spurious"):
        build_report(flagged.table, result.summary)
    with pytest.raises(InputError, match="lacks missing_per_class"):
        build_report(result.table, {k: v for k, v in result.summary.items() if k != "missing_per_class"})


def test_stacked_per_class_chart_with_many_classes():
    k = MAX_BAR_CLASSES + 5
    names = [f"tag {i}" for i in range(k)]
    svg = per_class_chart(names, None, np.linspace(0, 0.5, k), title="suspect tags",
                          parts={"suspect missing": range(k), "suspect spurious": range(k, 0, -1)})
    assert ET.fromstring(svg).tag.endswith("svg")
