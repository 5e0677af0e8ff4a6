"""The report page: one self-contained HTML document, built with plain string formatting.

Every value that comes from the data or the summary (labels, feature values, column names, class
names, paths, settings) goes through :func:`esc` before it reaches the page; only this module's own
markup is written unescaped. Charts are SVG documents embedded as ``data:`` URIs of ``<img>``
elements: a browser never runs script inside an image, and the page needs no file beside it.
The page carries no script at all, and a Content-Security-Policy that forbids any, and any load
from the network, as a second line of defence.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass

#: Classes shown by the per-class bar chart; the rest are listed in the HTML table only.
MAX_BAR_CLASSES = 40

#: Characters of a cell value shown before it is cut (the full value goes in the tooltip).
CELL_CHARS = 40
#: Characters of a value kept in a tooltip.
TITLE_CHARS = 500
#: Classes listed in the per-class table.
MAX_TABLE_CLASSES = 200
#: Items of a list-valued setting (such as the feature names) that are shown.
MAX_LIST_ITEMS = 20

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root { --ink:#1f2933; --muted:#65748b; --line:#e3e8ef; --bg:#f6f8fb; --card:#ffffff;
        --kept:#4c78a8; --flag:#e45756; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1120px; margin:0 auto; padding:0 24px 48px; }
header.top { background:#1f2d3d; color:#fff; padding:26px 0 22px; margin-bottom:22px; }
header.top .inner { max-width:1120px; margin:0 auto; padding:0 24px; }
header.top h1 { margin:0 0 4px; font-size:24px; font-weight:650; letter-spacing:.2px; }
header.top .source { color:#c5d1de; font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
       font-size:13px; word-break:break-all; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin-top:18px; }
.card { background:rgba(255,255,255,.08); border:1px solid rgba(255,255,255,.14); border-radius:8px;
        padding:10px 14px; }
.card .v { font-size:22px; font-weight:650; }
.card .k { color:#c5d1de; font-size:12px; text-transform:uppercase; letter-spacing:.6px; }
.card.flag .v { color:#ff9d97; }
nav.toc { display:flex; flex-wrap:wrap; gap:6px 16px; font-size:14px; margin:0 0 18px; }
nav.toc a { color:#2f5f94; text-decoration:none; }
nav.toc a:hover { text-decoration:underline; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin:0 0 20px; }
section h2 { margin:0 0 6px; font-size:18px; }
p.lead { margin:0 0 12px; color:var(--muted); font-size:14px; max-width:860px; }
figure { margin:0; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figure img.wide { width:100%; }

.note { background:#fff8e6; border:1px solid #f1dca7; border-radius:6px; padding:8px 12px;
        font-size:14px; margin:8px 0; }
.scroll { overflow:auto; max-height:640px; border:1px solid var(--line); border-radius:6px; }
table { border-collapse:collapse; font-size:13px; width:100%; }
th, td { padding:5px 10px; text-align:left; border-bottom:1px solid var(--line); white-space:nowrap; }
thead th { background:#eef2f7; position:sticky; top:0; z-index:1; font-weight:600; }
tbody tr:nth-child(even) { background:#fafbfd; }
tbody tr:hover { background:#eef5ff; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.null { color:#a0aab8; font-style:italic; }
td.given, td.spurious { color:var(--flag); font-weight:600; }
td.pred, td.missing { color:#2c7a3f; font-weight:600; }
span.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; }
span.badge.yes { background:#fde2e1; color:#b42318; }
span.badge.no { background:#e8f0fa; color:#35608f; }
.meta { display:grid; grid-template-columns:2fr 1fr 1fr; gap:22px; }
@media (max-width:900px) { .meta { grid-template-columns:1fr; } }
table.compact { width:auto; min-width:min(100%, 520px); }
.muted { color:var(--muted); }
.meta h3 { font-size:14px; margin:0 0 6px; color:var(--muted); text-transform:uppercase;
           letter-spacing:.6px; }
.meta td { white-space:normal; word-break:break-word; }
.meta td:first-child { color:var(--muted); width:38%; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
@media print { body { background:#fff; } section { break-inside:avoid; border:none; }
               .scroll { max-height:none; overflow:visible; } }
"""


@dataclass(frozen=True)
class RowsTable:
    """The most suspicious rows, ready to show.

    Attributes
    ----------
    columns : list of str
        Column names in display order (``row`` first).
    rows : list of list
        Python values, one list per row.
    hidden_columns : int
        Data columns left out to keep the table readable.
    """

    columns: list
    rows: list
    hidden_columns: int


def esc(value) -> str:
    """HTML-escape ``str(value)``, quotes included, so it is safe in text and in attributes."""
    return html.escape(str(value), quote=True)


def img(chart_id: str, svg: bytes, alt: str, cls: str = "wide") -> str:
    """An ``<img>`` showing an SVG document from a ``data:`` URI."""
    data = base64.b64encode(svg).decode("ascii")
    return (f'<figure><img id="{esc(chart_id)}" class="{esc(cls)}" alt="{esc(alt)}" '
            f'src="data:image/svg+xml;base64,{data}"></figure>')


def _fmt_number(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def cell(value, cls: str = "") -> str:
    """A ``<td>`` for one value: numbers right-aligned, nulls marked, long text cut with a tooltip.

    Parameters
    ----------
    value : object
        A Python value from :meth:`pyarrow.Array.to_pylist` (None, bool, int, float, str, bytes,
        or anything with a ``str``).
    cls : str, default=""
        CSS class of the cell.

    Returns
    -------
    str
        The escaped ``<td>`` element. Integers are shown whole (ids and row numbers get no
        thousands separators), floats to 4 significant digits.
    """
    if value is None:
        return '<td class="null">null</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num {cls}">{esc(_fmt_number(value))}</td>'
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else _fmt_number(value)
    title = ""
    if len(text) > CELL_CHARS:
        title = f' title="{esc(text[:TITLE_CHARS])}"'
        text = text[: CELL_CHARS - 1] + "\u2026"
    return f'<td class="{cls}"{title}>{esc(text)}</td>'


def _badge(flag) -> str:
    if flag is None:
        return '<td class="null">null</td>'
    return f'<td><span class="badge {"yes" if flag else "no"}">{"flagged" if flag else "kept"}</span></td>'


#: CSS class of the label cells in the rows table. A single label is shown given (red: suspected
#: wrong) against predicted (green). A multi-label row's tag sets are plain; its suspect tags are
#: coloured instead: spurious (a given tag, likely wrong) red, missing (likely absent by mistake) green.
_LABEL_CLASSES = {"given_label": "given", "predicted_label": "pred"}
_TAG_CLASSES = {"given_label": "", "predicted_label": "", "suspect_missing": "missing",
                "suspect_spurious": "spurious"}


def _tags(value) -> str:
    """A list of tags as text: ``a, b``; an empty list as an em dash."""
    return ", ".join(str(v) for v in value) if value else "\u2014"


def rows_table(table: RowsTable) -> str:
    """The suspicious-rows ``<table>`` (id ``suspicious-rows``).

    Label columns holding lists (a multi-label flags table) are shown as comma-separated tags.
    """
    tags = "suspect_missing" in table.columns
    labels = _TAG_CLASSES if tags else _LABEL_CLASSES
    numeric = {"row", "label_score", "p_noisy"}
    head = "".join(f'<th class="num">{esc(c)}</th>' if c in numeric else f"<th>{esc(c)}</th>"
                   for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for name, value in zip(table.columns, row):
            if name == "is_label_issue":
                cells.append(_badge(value))
            elif name in labels and value is not None:
                # Labels are names even when stored as numbers: left-aligned, shown whole.
                # An empty tag list is a muted dash, not a coloured one.
                cls = "muted" if value == [] else labels[name]
                cells.append(cell(_tags(value) if isinstance(value, list) else str(value), cls))
            elif name in ("label_score", "p_noisy") and isinstance(value, float):
                cells.append(f'<td class="num">{value:.4f}</td>')
            else:
                cells.append(cell(value))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table id="suspicious-rows"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _setting_value(value) -> str:
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value[:MAX_LIST_ITEMS])
        more = len(value) - MAX_LIST_ITEMS
        return esc(shown) + (f" <em>\u2026 (+{more} more)</em>" if more > 0 else "") if value else "\u2014"
    if isinstance(value, dict):
        return esc(json.dumps(value, ensure_ascii=False, default=str))
    if value is None:
        return "\u2014"
    return esc(_fmt_number(value))


def seconds(value) -> str:
    """``551.2`` -> ``9 min 11 s``; ``0.0035`` -> ``0.0035 s``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if value >= 60:
        m, s = divmod(round(value), 60)
        return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min {s} s"
    return f"{value:.3g} s"


def key_value_table(table_id: str, items: dict, *, timings: bool = False) -> str:
    """A two-column table of ``items`` (keys and values escaped)."""
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(seconds(v)) if timings else _setting_value(v)}</td></tr>"
                   for k, v in items.items())
    return f'<table id="{esc(table_id)}"><tbody>{rows or "<tr><td>none recorded</td></tr>"}</tbody></table>'


def class_table(names, columns) -> str:
    """One row per class (id ``per-class-table``), at most :data:`MAX_TABLE_CLASSES` of them.

    Parameters
    ----------
    names : sequence of str
        Class names.
    columns : list of (str, sequence, str)
        ``(header, values per class, kind)``; kind ``"count"`` shows an integer, ``"rate"`` a
        percentage.

    Returns
    -------
    str
    """
    fmt = {"count": lambda v: f"{int(v):,}", "rate": lambda v: f"{float(v):.1%}"}
    head = "".join(f'<th class="num">{esc(h)}</th>' for h, _, _ in columns)
    body = []
    for i, name in enumerate(names[:MAX_TABLE_CLASSES]):
        nums = "".join(f"<td class='num'>{fmt[kind](values[i])}</td>" for _, values, kind in columns)
        body.append(f"<tr>{cell(str(name))}{nums}</tr>")
    more = len(names) - MAX_TABLE_CLASSES
    tail = f'<p class="lead">\u2026 and {more:,} more classes in the summary JSON.</p>' if more > 0 else ""
    return ('<div class="scroll" style="max-height:360px;width:fit-content;max-width:100%;margin-top:12px">'
            f'<table id="per-class-table" class="compact"><thead><tr><th>class</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{tail}')


def section(section_id: str, title: str, lead: str, body: str) -> str:
    """A titled ``<section>``; ``title`` and ``lead`` are this module's own (trusted) markup."""
    return (f'<section id="{section_id}"><h2>{title}</h2>'
            f'{f"<p class=lead>{lead}</p>" if lead else ""}{body}</section>')


def header(summary: dict) -> str:
    """The dark page header: the dataset path and the headline numbers as cards."""
    n_lab = max(int(summary.get("labelled_rows", 0)), 1)
    flagged = int(summary.get("flagged", 0))
    rate = float(summary.get("estimated_noise_rate", 0.0))
    cards = [
        ("rows", f"{int(summary.get('rows', 0)):,}", ""),
        ("classes", f"{len(summary.get('classes', [])):,}", ""),
        ("estimated noise rate", f"{rate:.1%}", ""),
        ("flagged rows", f"{flagged:,} ({flagged / n_lab:.1%})", "flag"),
        ("method", str(summary.get("method", "?")), ""),
    ]
    unlabelled = int(summary.get("unlabelled_rows", 0) or 0)
    if unlabelled:
        cards.insert(1, ("unlabelled rows", f"{unlabelled:,}", ""))
    issues = summary.get("issues") or {}
    for key, count, name in (("duplicates", "near_rows", "duplicate rows"), ("outliers", "rows", "outliers"),
                             ("leakage", "rows", "rows leaked into --against")):
        if isinstance(issues.get(key), dict) and count in issues[key]:
            cards.insert(-1, (name, f"{int(issues[key][count]):,}", "flag"))
    if summary.get("multi_label"):
        tags = summary.get("flagged_tags") or {}
        cards.insert(-1, ("suspect tags missing / spurious",
                          f"{int(tags.get('missing', 0)):,} / {int(tags.get('spurious', 0)):,}", "flag"))
    card_html = "".join(f'<div class="card {cls}"><div class="v">{esc(v)}</div>'
                        f'<div class="k">{esc(k)}</div></div>' for k, v, cls in cards)
    source = summary.get("source") or "(table passed from Python)"
    title = "Multi-label issue report" if summary.get("multi_label") else "Label issue report"
    return (f'<header class="top"><div class="inner"><h1>{title}</h1>'
            f'<div class="source" id="source">{esc(source)}</div>'
            f'<div class="cards" id="headline">{card_html}</div></div></header>')


def sections(summary: dict, svgs: dict, table: RowsTable, *, n_kept: int, n_flagged: int,
             suspect_tags: dict | None = None) -> list:
    """The page's sections, in the order of :func:`toc`, rendered.

    Parameters
    ----------
    summary : dict
        The flag run's summary (escaped here wherever it reaches the page). A multi-label summary
        (``multi_label`` true) gets no noise-matrix section and a per-class section about tags.
    svgs : dict
        SVG documents by chart id: ``chart-loss-mixture``, ``chart-noise-matrix`` (single-label
        only), ``chart-per-class``, ``chart-scores``.
    table : RowsTable
        The most suspicious rows.
    n_kept, n_flagged : int
        Scored rows kept and flagged (from the flags table).
    suspect_tags : dict, optional
        Multi-label only: ``{"missing": [...], "spurious": [...]}``, the suspect tags of each
        class in the flags table, in class order.

    Returns
    -------
    list of str
    """
    multi = bool(summary.get("multi_label"))
    return [
        _mixture_section(summary, svgs["chart-loss-mixture"], multi=multi),
        *([] if multi else [_noise_matrix_section(summary, svgs["chart-noise-matrix"])]),
        _per_class_section(summary, svgs["chart-per-class"], suspect_tags if multi else None),
        section("scores", "Label scores of kept and flagged rows",
                "label_score estimates the probability that the given "
                + ("tags are right (the lowest score over the row's classes)" if multi else "label is right")
                + f". {n_kept:,} rows kept, {n_flagged:,} flagged.",
                img("chart-scores", svgs["chart-scores"], "label_score histograms of kept and flagged rows")),
        _suspicious_section(table, multi=multi),
        _run_section(summary),
    ]


def _mixture_section(summary: dict, svg: bytes, *, multi: bool) -> str:
    mixture = summary["mixture"]
    family = {"beta": "Beta", "gaussian": "Gaussian"}.get(mixture.get("family"), "two-component")
    lo, hi = (mixture.get("loss_bounds") or [None, None])[:2]
    bounds = (f" Losses are scaled to [0, 1] between {lo:.3g} and {hi:.3g}." if isinstance(lo, (int, float))
              and isinstance(hi, (int, float)) else "")
    fit_note = ""
    if mixture.get("params") is None:
        reason = mixture.get("reason") or "unknown reason"
        fit_note = f'<div class="note">No mixture was fitted: {esc(reason)}.</div>'
    loss = ("binary cross-entropy of the given tags summed over the classes, "
            "\u2212\u2211 [y log p + (1 \u2212 y) log(1 \u2212 p)]," if multi else
            "cross-entropy loss of the given label, \u2212log p(given),")
    return section("loss-mixture", "Loss mixture",
                   f"Per-row {loss} under the out-of-fold probabilities, with the fitted {family} mixture: "
                   f"the clean component (low loss) and the noisy one (high loss).{bounds} Rows right of "
                   "the dashed threshold are more likely noisy than clean.",
                   fit_note + img("chart-loss-mixture", svg,
                                  "histogram of normalised losses with the mixture components"))


def _noise_matrix_section(summary: dict, svg: bytes) -> str:
    k = len(summary["rows_per_class"])
    annotate = "" if k <= 20 else f" With {k} classes the cells are not annotated; see the summary JSON."
    return section("noise-matrix", "Estimated noise matrix",
                   "P(given label | true label), estimated by confident learning. Each column sums to 1; "
                   f"the diagonal is the share of each true class that kept its label.{annotate}",
                   # Drawn at its own size, which grows with the number of classes.
                   img("chart-noise-matrix", svg, "estimated noise matrix heatmap", "natural"))


def _per_class_section(summary: dict, svg: bytes, suspect_tags: dict | None) -> str:
    names = list(summary["rows_per_class"])

    def per_class(key):
        return [summary[key][n] for n in names]

    if suspect_tags is None:
        what, lead = "flagged rows", "Flagged rows and the estimated noise rate of each given class."
        columns = [("rows", per_class("rows_per_class"), "count"),
                   ("est. noise rate", per_class("noise_rate_per_class"), "rate"),
                   ("flagged", per_class("flagged_per_class"), "count")]
        alt = "flagged rows and noise rate per class"
    else:
        what = "suspect tags"
        lead = ("Left: the suspect tags of the flagged rows per class: <em>missing</em>, absent from a "
                "row that the model is confident has it, and <em>spurious</em>, given to a row that the "
                "model is confident lacks it. Right: the estimated noise rate, the share of rows whose "
                "tag of that class is wrong. The table adds the rows given each tag and confident "
                "learning\u2019s estimates of the missing and spurious tags in the whole table.")
        columns = [("rows with tag", per_class("rows_per_class"), "count"),
                   ("est. noise rate", per_class("noise_rate_per_class"), "rate"),
                   ("est. missing", per_class("missing_per_class"), "count"),
                   ("est. spurious", per_class("spurious_per_class"), "count"),
                   ("suspect missing", suspect_tags["missing"], "count"),
                   ("suspect spurious", suspect_tags["spurious"], "count")]
        alt = "suspect missing and spurious tags and noise rate per class"
    many = (f" The chart shows the {MAX_BAR_CLASSES} classes with the most {what}; the table lists "
            "every class." if len(names) > MAX_BAR_CLASSES else "")
    return section("per-class", "Per class", lead + many, img("chart-per-class", svg, alt)
                   + class_table(names, columns))


def _suspicious_section(table: RowsTable, *, multi: bool) -> str:
    hidden = (f" {table.hidden_columns:,} more data column(s) are not shown (--columns)."
              if table.hidden_columns else "")
    tags = (" <em>suspect_missing</em> and <em>suspect_spurious</em> name the tags likely missing "
            "from, or wrongly given to, a flagged row." if multi else "")
    return section("suspicious", f"The {len(table.rows)} most suspicious rows",
                   "Lowest label_score first: the rows most worth a second look. <em>row</em> is the "
                   f"position in the flags file (from 0); long values are cut, hover for more.{tags}{hidden}",
                   rows_table(table))


def _run_section(summary: dict) -> str:
    notes = "".join(f"<li>{esc(n)}</li>" for n in summary.get("notes") or [])
    timings = {key.removesuffix("_s"): v for key, v in (summary.get("timings") or {}).items()}
    return section("run", "Run details", "",
                   '<div class="meta"><div><h3>Settings</h3>'
                   + key_value_table("settings", summary.get("settings") or {})
                   + "</div><div><h3>Versions</h3>"
                   + key_value_table("versions", summary.get("versions") or {})
                   + "</div><div><h3>Timings</h3>" + key_value_table("timings", timings, timings=True)
                   + "</div></div>" + (f"<h3>Notes</h3><ul id='notes'>{notes}</ul>" if notes else ""))


def _fact(name: str, value) -> str:
    if name == "samples/s" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.0f}"
    if name.startswith("val accuracy") and isinstance(value, float):
        return f"{value:.2%}"
    return _setting_value(value)


def training_section(training, svgs: dict) -> str:
    """The optional Training section (id ``training``) about a ``cleanpipe retrain`` run.

    Parameters
    ----------
    training : cleanpipe.report.training.Training
    svgs : dict
        ``chart-training-curves`` (absent when no curve was recorded) and ``chart-noise-model``
        (absent when the run fitted no online noise model).

    Returns
    -------
    str
    """
    source = f" (from {esc(training.source)})" if training.source else ""
    best = (" The dashed line marks the best epoch, whose weights the model kept."
            if training.best_epoch is not None else "")
    body = []
    if "chart-training-curves" in svgs:
        body.append(img("chart-training-curves", svgs["chart-training-curves"],
                        "training and validation loss and validation accuracy per epoch"))
    else:
        body.append('<div class="note">The run recorded no per-epoch curve.</div>')
    if "chart-noise-model" in svgs:
        unconverged = [e.epoch for e in training.noise_model if e.converged is False]
        warn = (f'<div class="note">The mixture fit did not converge after epoch(s) '
                f'{esc(", ".join(map(str, unconverged)))}; those epochs\u2019 w are less reliable.</div>'
                if unconverged else "")
        body.append("<p class=lead><em>Online noise model.</em> After each epoch from the end of warm-up, a "
                    "two-component mixture fitted to the network's own per-row losses gives each "
                    "training row a posterior w of being mislabelled. Left: the estimated noisy share, "
                    "the mean of w. Right, when the training table had the flags' p_noisy: the AUROC "
                    "of w against p_noisy, how far the network and the flagger agree on which rows are "
                    "noisy (0.5 = chance).</p>" + warn
                    + img("chart-noise-model", svgs["chart-noise-model"],
                          "estimated noisy share and AUROC against the flags per epoch"))
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{_fact(k, v)}</td></tr>" for k, v in training.facts.items())
    # In the Run details' grid, so it looks like the settings table there.
    body.append('<div class="meta" style="margin-top:14px"><div><h3>Run</h3><table id="training-settings">'
                f'<tbody>{rows or "<tr><td>none recorded</td></tr>"}</tbody></table></div></div>')
    return section("training", "Training",
                   f"The model <em>cleanpipe retrain</em> trained{source}: loss and validation accuracy "
                   f"per epoch.{best}", "".join(body))


def toc(*, multi_label: bool = False, training: bool = False, checks=()) -> list:
    """``(section id, name)`` of the page's sections, in order, for :func:`page`; ``checks`` are
    the sections of the data checks (:func:`cleanpipe.report.issues.toc`), after the rows."""
    return [("loss-mixture", "Loss mixture"), *([] if multi_label else [("noise-matrix", "Noise matrix")]),
            ("per-class", "Per class"), ("scores", "Label scores"), ("suspicious", "Suspicious rows"),
            *checks, *([("training", "Training")] if training else []), ("run", "Run details")]


TOC = toc()
#: The table of contents of a report with a Training section.
TOC_TRAINING = toc(training=True)


def page(summary: dict, parts: list, *, toc: list = TOC) -> str:
    """The whole document around ``parts``, the sections already rendered, listed in ``toc``."""
    version = esc(summary.get("cleanpipe_version") or summary.get("versions", {}).get("cleanpipe", ""))
    toc = "".join(f'<a href="#{sid}">{name}</a>' for sid, name in toc)
    title = f"cleanpipe report: {summary.get('source') or 'table'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f"{header(summary)}<main><nav class=\"toc\">{toc}</nav>\n"
        + "\n".join(parts)
        + f"\n<footer>Generated by cleanpipe {version}. This file is self-contained: it loads "
        "nothing from the network and runs no script.</footer></main></body></html>\n"
    )
