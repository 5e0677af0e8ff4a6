"""The report's sections about the data checks (flag --checks): one per check, charts where useful."""

from __future__ import annotations

import copy
import re

import pytest

from cleanpipe.errors import InputError
from cleanpipe.report import build_report
from cleanpipe.report.html import TOC

CHECK_CHARTS = ("chart-duplicate-sizes", "chart-outliers", "chart-knn-labels")


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def test_a_section_per_check_in_the_contents(flagged_checks):
    html = build_report(flagged_checks.table, flagged_checks.summary)
    toc = re.findall(r'<a href="#([a-z-]+)">', html)
    assert toc == ["loss-mixture", "noise-matrix", "per-class", "scores", "suspicious", "duplicates",
                   "outliers", "knn-labels", "table-checks", "leakage", "run"]
    for chart in CHECK_CHARTS:
        assert f'id="{chart}"' in html


def test_sections_show_the_planted_rows(flagged_checks, planted_checks):
    at = planted_checks["planted"]
    html = build_report(flagged_checks.table, flagged_checks.summary)
    dup = _section(html, "duplicates")
    assert "2 rows in 1 duplicate set(s) whose labels disagree" in dup
    conflict_rows = re.findall(r'<tr><td class="num ">(\d+)</td>', dup)
    assert conflict_rows == [str(r) for r in at["conflict"]]
    outliers = _section(html, "outliers")
    first = re.search(r'<table id="outlier-rows">.*?<tbody><tr><td class="num ">(\d+)</td>', outliers, re.S)
    assert first.group(1) == str(at["outlier"])  # the highest score first
    leak = _section(html, "leakage")
    assert re.findall(r'<tr><td class="num ">(\d+)</td>', leak) == [str(r) for r in at["leaked"]]
    assert "other.parquet" in leak
    # the id column leads the listed data columns; the check columns are not shown as data
    assert "<th>row_id</th>" in leak and "<th>is_outlier</th>" not in _section(html, "suspicious")
    assert "duplicate rows" in html and "rows leaked into --against" in html  # header cards


def test_a_report_without_checks_has_none_of_their_sections(flagged):
    html = build_report(flagged.table, flagged.summary)
    assert re.findall(r'<a href="#([a-z-]+)">', html) == [sid for sid, _ in TOC]
    assert not any(c in html for c in CHECK_CHARTS)


def test_the_charts_are_identical_for_identical_input(flagged_checks):
    a = build_report(flagged_checks.table, flagged_checks.summary)
    b = build_report(flagged_checks.table, flagged_checks.summary)
    assert a == b


def test_the_report_reads_the_flags_file_in_batches(flagged_checks, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "f.parquet"
    pq.write_table(flagged_checks.table, path, row_group_size=37)  # many row groups
    assert build_report(path, flagged_checks.summary) == build_report(flagged_checks.table,
                                                                      flagged_checks.summary)


@pytest.mark.parametrize("path,value", [(("duplicates", "near_rows"), -1), (("outliers", "threshold"), "x"),
                                        (("leakage",), [1]), ((), "none")])
def test_a_bad_issues_summary_is_one_line(flagged_checks, path, value):
    summary = copy.deepcopy(flagged_checks.summary)
    if not path:
        summary["issues"] = value
    else:
        target = summary["issues"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    with pytest.raises(InputError, match="issues"):
        build_report(flagged_checks.table, summary)
