"""The report's sections about the data checks (``cleanpipe flag --checks``).

A flags table written with ``--checks`` carries the check columns and a summary with an
``issues`` object; this module reads what those sections need in one pass over the table (set
sizes, histograms, the first rows of each kind), checks the ``issues`` values it uses, and renders
one section per check: duplicates (with a chart of set sizes), outliers (a histogram of the score
with its threshold), the neighbours' labels (their agreement score for rows the label detector
kept and flagged), table-level findings (tables only) and leakage against a second table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..flagsfile import CHECK_COLUMNS
from . import html as _html

#: Rows listed per check (label conflicts, top outliers, leaked rows).
ROWS_PER_CHECK = 20
#: Bins of the outlier-score histogram, log-spaced over :data:`OUTLIER_RANGE` (scores outside it
#: are counted in the end bins). A typical row scores about 1.
OUTLIER_BINS, OUTLIER_RANGE = 48, (0.05, 1000.0)
#: Bins of the knn_label_score histograms.
KNN_BINS = 40

#: ``(section id, name)`` of each check's section, with the ``issues`` key that makes it appear.
SECTIONS = (("duplicates", "Duplicates", "duplicates"), ("outliers", "Outliers", "outliers"),
            ("knn-labels", "Neighbours' labels", "knn_labels"),
            ("table-checks", "Table checks", "table"), ("leakage", "Leakage", "leakage"))


def toc(issues: dict | None) -> list:
    """``(section id, name)`` of the check sections this summary's ``issues`` gives."""
    return [(sid, name) for sid, name, key in SECTIONS if issues and key in issues]


def flag_columns(issues: dict | None, schema: pa.Schema) -> tuple:
    """The check columns of the flags table (none when its summary has no ``issues``)."""
    return tuple(c for c in CHECK_COLUMNS if c in schema.names) if issues else ()


def check_issues(issues, where: str) -> None:
    """The ``issues`` values the sections compute with have the types ``flag --checks`` writes.

    Raises
    ------
    InputError
    """
    def bad(key: str, want: str):
        return InputError(f"summary{where}: issues.{key} is not {want}; pass the summary JSON that "
                          "cleanpipe flag --checks wrote for this flags file")

    if not isinstance(issues, dict):
        raise bad("", "an object")
    counts = {"duplicates": ("exact_rows", "exact_sets", "near_rows", "near_sets", "near_extra_rows"),
              "outliers": ("rows",), "label_conflicts": ("rows", "sets"),
              "knn_labels": ("rows_outvoted", "k"),
              "leakage": ("rows", "exact_rows", "against_rows")}
    for part, keys in counts.items():
        if part not in issues:
            continue
        if not isinstance(issues[part], dict):
            raise bad(part, "an object")
        for key in keys:
            v = issues[part].get(key)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise bad(f"{part}.{key}", "a count")
    for part, key in (("duplicates", "radius"), ("outliers", "threshold")):
        v = (issues.get(part) or {}).get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)):
            raise bad(f"{part}.{key}", "a number")
    if "table" in issues and not isinstance(issues["table"], dict):
        raise bad("table", "an object")


@dataclass
class IssueScan:
    """What one pass over the check columns gives."""

    exact_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    near_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outlier_edges: np.ndarray = field(default_factory=lambda: np.geomspace(*OUTLIER_RANGE, OUTLIER_BINS + 1))
    outlier_kept: np.ndarray = field(default_factory=lambda: np.zeros(OUTLIER_BINS, np.int64))
    outlier_flagged: np.ndarray = field(default_factory=lambda: np.zeros(OUTLIER_BINS, np.int64))
    knn_edges: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, KNN_BINS + 1))
    knn_kept: np.ndarray = field(default_factory=lambda: np.zeros(KNN_BINS, np.int64))
    knn_flagged: np.ndarray = field(default_factory=lambda: np.zeros(KNN_BINS, np.int64))
    #: Row positions: the highest outlier scores (highest first), the first label conflicts and
    #: the first rows that leak into the second table.
    top_outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    conflicts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leaked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _np(batch, name: str, fill):
    return pc.fill_null(batch.column(name), fill).to_numpy(zero_copy_only=False)


def _set_sizes(counts: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """``counts`` (rows per set id so far) with the rows of ``sets`` (ids, -1: none) added."""
    sets = sets[sets >= 0].astype(np.int64)
    if sets.size == 0:
        return counts
    grown = np.bincount(sets, minlength=counts.size)
    grown[:counts.size] += counts
    return grown


def _first(have: np.ndarray, mask: np.ndarray, offset: int, n: int) -> np.ndarray:
    if have.size >= n:
        return have
    return np.concatenate([have, np.flatnonzero(mask)[: n - have.size] + offset])


def columns_to_scan(schema: pa.Schema) -> list:
    """The check columns the scan reads (those present), plus ``is_label_issue``."""
    wanted = ("duplicate_set", "exact_duplicate_set", "outlier_score", "is_outlier", "knn_label_score",
              "label_conflict", "leaks_into_against")
    return [c for c in wanted if c in schema.names] + ["is_label_issue"]


def scan_issues(batches, n_top: int = ROWS_PER_CHECK) -> IssueScan:
    """One pass over record batches holding :func:`columns_to_scan`."""
    s = IssueScan()
    exact, near = np.zeros(0, np.int64), np.zeros(0, np.int64)
    top_idx, top_val = np.zeros(0, np.int64), np.zeros(0)
    offset = 0
    for batch in batches:
        names = batch.schema.names
        issue = _np(batch, "is_label_issue", False).astype(bool)
        if "exact_duplicate_set" in names:
            exact = _set_sizes(exact, _np(batch, "exact_duplicate_set", -1))
        if "duplicate_set" in names:
            near = _set_sizes(near, _np(batch, "duplicate_set", -1))
        if "outlier_score" in names:
            score = batch.column("outlier_score").cast(pa.float64()).to_numpy(zero_copy_only=False)
            out = _np(batch, "is_outlier", False).astype(bool) if "is_outlier" in names else np.zeros(
                len(score), bool)
            ok = np.isfinite(score)
            clipped = np.clip(score, s.outlier_edges[0], s.outlier_edges[-1])
            s.outlier_kept += np.histogram(clipped[ok & ~out], bins=s.outlier_edges)[0]
            s.outlier_flagged += np.histogram(clipped[ok & out], bins=s.outlier_edges)[0]
            idx = np.concatenate([top_idx, np.flatnonzero(ok) + offset])
            val = np.concatenate([top_val, score[ok]])
            order = np.lexsort((idx, -val))[:n_top]  # highest first, ties by position
            top_idx, top_val = idx[order], val[order]
        if "knn_label_score" in names:
            knn = batch.column("knn_label_score").cast(pa.float64()).to_numpy(zero_copy_only=False)
            ok = np.isfinite(knn)
            k = np.clip(knn, 0.0, 1.0)
            s.knn_kept += np.histogram(k[ok & ~issue], bins=s.knn_edges)[0]
            s.knn_flagged += np.histogram(k[ok & issue], bins=s.knn_edges)[0]
        if "label_conflict" in names:
            s.conflicts = _first(s.conflicts, _np(batch, "label_conflict", False).astype(bool), offset, n_top)
        if "leaks_into_against" in names:
            s.leaked = _first(s.leaked, _np(batch, "leaks_into_against", False).astype(bool), offset, n_top)
        offset += batch.num_rows
    s.exact_sizes, s.near_sizes, s.top_outliers = exact[exact > 0], near[near > 0], top_idx
    return s


def _rows(take, table_id: str, positions: np.ndarray, columns: list, data_cols: list) -> str:
    """A small table of the rows at ``positions`` (in that order): ``row``, ``columns``, data."""
    if positions.size == 0:
        return ""
    sorted_pos = np.sort(positions)
    got = take(sorted_pos, [*columns, *data_cols])
    where = {int(p): i for i, p in enumerate(sorted_pos)}
    values = {c: got.column(c).to_pylist() for c in got.column_names}
    head = "".join(f"<th>{_html.esc(c)}</th>" for c in ["row", *columns, *data_cols])
    body = "".join("<tr>" + _html.cell(int(p)) + "".join(_html.cell(values[c][where[int(p)]])
                                                          for c in [*columns, *data_cols]) + "</tr>"
                   for p in positions)
    return (f'<div class="scroll" style="max-height:360px;margin-top:12px"><table id="{table_id}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _duplicates(issues: dict, scan: IssueScan, svgs: dict, rows) -> str:
    d = issues["duplicates"]
    how = ("calibrated on the table: a share of the median distance from a row to its nearest other "
           "row" if d.get("radius_calibrated") else "as set with --near-radius")
    lead = (f"{d['exact_rows']:,} rows in {d['exact_sets']:,} sets with identical feature values; "
            f"{d['near_rows']:,} rows in {d['near_sets']:,} near-duplicate sets (rows within "
            f"{d['radius']:.3g} of each other in standardised feature units, {how}; a set holds its "
            f"exact duplicates too). Keeping one row of each set (clean --drop-duplicates) would "
            f"remove {d['near_extra_rows']:,} rows.")
    body = _html.img("chart-duplicate-sizes", svgs["chart-duplicate-sizes"],
                     "number of exact and near duplicate sets by size")
    c = issues.get("label_conflicts")
    if c:
        body += (f'<p class="lead" style="margin-top:12px"><em>Label conflicts.</em> {c["rows"]:,} rows '
                 f"in {c['sets']:,} duplicate set(s) whose labels disagree: the features cannot tell "
                 "them apart, so at least one label of each set is likely wrong. The first ones:</p>"
                 + rows(scan.conflicts, "label-conflict-rows",
                        ["duplicate_set", "given_label", "label_score", "is_label_issue"]))
    return _html.section("duplicates", "Duplicates", lead, body)


def _outliers(issues: dict, scan: IssueScan, svgs: dict, rows) -> str:
    o = issues["outliers"]
    threshold = o.get("threshold")
    where = ("" if threshold is None else
             f" above the threshold {threshold:.3g}, {o.get('z', '?')} robust standard deviations over "
             "the table's median (calibrated on the table itself)")
    lead = (f"outlier_score is a row's mean distance to its nearest rows over the table's median "
            f"(1 is typical, higher is more isolated). {o['rows']:,} rows score{where}.")
    if "probs_ood_median" in o:
        lead += (" probs_ood_score, the normalised entropy of the out-of-fold probabilities (1: the "
                 f"model cannot place the row in any class), has median {o['probs_ood_median']:.3g}.")
    body = (_html.img("chart-outliers", svgs["chart-outliers"], "histogram of outlier scores with the threshold")
            + rows(scan.top_outliers, "outlier-rows", ["outlier_score", "is_outlier", "given_label"]))
    return _html.section("outliers", "Outliers", lead, body)


def _knn(issues: dict, scan: IssueScan, svgs: dict) -> str:
    k = issues["knn_labels"]
    lead = (f"knn_label_score is the smoothed share of a row's {k['k']} nearest neighbours (in "
            "feature space, no model) that carry its label: a model-free second opinion on the label. "
            f"{k['rows_outvoted']:,} rows are outvoted by their neighbours. Rows the label detector "
            "flagged should mostly score low.")
    if isinstance(k.get("label_issues"), int) and isinstance(k.get("weight"), (int, float)):
        lead += (f" The kNN-assisted rule (the out-of-fold probabilities mixed with {k['weight']:g} of "
                 f"the neighbours' label shares, --knn-weight) flags {k['label_issues']:,} rows "
                 "(knn_is_label_issue).")
    return _html.section("knn-labels", "Neighbours' labels", lead,
                         _html.img("chart-knn-labels", svgs["chart-knn-labels"],
                                   "knn_label_score histograms of kept and flagged rows"))


def _table(issues: dict) -> str:
    t = issues["table"]
    items = {}
    for key, what in (("constant_columns", "constant columns"), ("id_like_columns", "id-like columns"),
                      ("null_heavy_columns", "null-heavy columns")):
        if key in t:
            items[what] = list(t[key] or [])
    if "null_heavy_rows" in t:
        items["null-heavy rows"] = t["null_heavy_rows"]
    balance = issues.get("class_balance") or {}
    if "underrepresented" in balance:
        items["under-represented classes"] = list(balance["underrepresented"] or [])
    if "ratio" in balance:
        items["smallest / largest class"] = balance["ratio"]
    nulls = t.get("null_fraction_by_column") or {}
    worst = sorted(nulls.items(), key=lambda kv: (-kv[1] if isinstance(kv[1], (int, float)) else 0, kv[0]))
    null_rows = "".join(f"<tr>{_html.cell(str(c))}<td class='num'>{float(v):.1%}</td></tr>"
                        for c, v in worst[:20] if isinstance(v, (int, float)))
    nulls_html = ('<div class="scroll" style="max-height:360px;width:fit-content;margin-top:12px">'
                  '<table id="null-fractions" class="compact"><thead><tr><th>feature column</th>'
                  f'<th class="num">nulls</th></tr></thead><tbody>{null_rows}</tbody></table></div>'
                  if null_rows else "")
    return _html.section("table-checks", "Table checks",
                         "Cheap checks of the whole table: columns that cannot help a model (constant, "
                         "or an identifier with a distinct value per row), nulls per row and column, "
                         "and class balance.",
                         _html.key_value_table("table-findings", items) + nulls_html)


def _leakage(issues: dict, scan: IssueScan, rows, against: str | None) -> str:
    leak = issues["leakage"]
    other = f" ({_html.esc(against)})" if against else ""
    lead = (f"{leak['rows']:,} rows of this table ({leak['exact_rows']:,} exact) duplicate a row of the "
            f"second table{other}, and {leak['against_rows']:,} of its rows duplicate one of these: "
            "a model evaluated on it would be tested on rows it was trained on. against_row is the "
            "matching row of the second table (cleanpipe flag writes that table's own matches to "
            "<em>&lt;out stem&gt;.against.parquet</em>).")
    return _html.section("leakage", "Leakage", lead,
                         rows(scan.leaked, "leaked-rows", ["against_row", "against_distance", "given_label"]))


def chart_svgs(issues: dict, scan: IssueScan) -> dict:
    """The SVG of each check's chart (matplotlib loads here, as in the rest of the report)."""
    from . import charts

    svgs = {}
    if "duplicates" in issues:
        svgs["chart-duplicate-sizes"] = charts.duplicate_sizes_chart(scan.exact_sizes, scan.near_sizes)
    if "outliers" in issues:
        svgs["chart-outliers"] = charts.outlier_chart(scan.outlier_edges, scan.outlier_kept,
                                                      scan.outlier_flagged, issues["outliers"].get("threshold"))
    if "knn_labels" in issues:
        svgs["chart-knn-labels"] = charts.score_chart(
            scan.knn_edges, scan.knn_kept, scan.knn_flagged,
            xlabel="knn_label_score (higher = neighbours agree with the label)")
    return svgs


def sections(summary: dict, scan: IssueScan, take, data_cols: list) -> list:
    """The check sections of the page, in the order of :func:`toc`.

    Parameters
    ----------
    summary : dict
        The flag summary; its ``issues`` were checked by :func:`check_issues`.
    scan : IssueScan
    take : callable
        ``take(sorted positions, columns)`` -> pyarrow.Table of those rows of the flags table.
    data_cols : list of str
        Data columns shown beside each listed row (ids first).
    """
    issues = summary["issues"]
    svgs = chart_svgs(issues, scan)
    shown = data_cols[:8]

    def rows(positions, table_id, columns):
        return _rows(take, table_id, positions, columns, shown)

    against = (summary.get("settings") or {}).get("against")
    parts = []
    if "duplicates" in issues:
        parts.append(_duplicates(issues, scan, svgs, rows))
    if "outliers" in issues:
        parts.append(_outliers(issues, scan, svgs, rows))
    if "knn_labels" in issues:
        parts.append(_knn(issues, scan, svgs))
    if "table" in issues:
        parts.append(_table(issues))
    if "leakage" in issues:
        parts.append(_leakage(issues, scan, rows, against if isinstance(against, str) else None))
    return parts
