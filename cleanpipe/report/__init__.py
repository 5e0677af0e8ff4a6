"""The HTML report of a ``cleanpipe flag`` run: charts of the noise estimates and the rows to check.

:func:`build_report` turns a flags table (or a Parquet file of one) and its summary into one
self-contained HTML document; :func:`write_report` also reads the summary sidecar and writes the
file atomically. A flags table of any length is read in record batches, and only the
``label_score`` and ``is_label_issue`` columns in full: the histograms are accumulated batch by
batch and the lowest scores kept in a running top-``max_rows``, so memory does not grow with
the table. Other columns are read only for the rows that are shown.

A multi-label flags table (``cleanpipe flag --multi-label``, with ``suspect_missing`` and
``suspect_spurious`` list columns and a summary marked ``multi_label``) gets the same page without
the noise-matrix heatmap (its noise matrix is one 2 x 2 matrix per class); the per-class section
shows instead the suspect tags of each class, counted in the same pass over the table, beside the
estimated noise rates, and the rows list shows each row's suspect tags.

Given the ``metrics.json`` of a ``cleanpipe retrain`` run (``training=``), the page gains a
Training section; :mod:`cleanpipe.report.training` reads and checks that file.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import CleanpipeWarning, InputError
from ..flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS, jsonable, summary_path_for
from ..flagsfile import read_summary as _read_summary
from ..io import AtomicOutputs
from . import html as _html
from . import issues as _issues
from .training import Training, check_training, read_training

__all__ = ["build_report", "write_report", "read_summary", "read_training", "summary_path_for"]

log = logging.getLogger(__name__)

#: Summary keys the report reads.
SUMMARY_KEYS = ("rows", "classes", "estimated_noise_rate", "noise_rate_per_class", "rows_per_class",
                "flagged", "flagged_per_class", "noise_matrix", "mixture")
#: Further keys it reads from a multi-label summary (``multi_label`` true).
MULTILABEL_SUMMARY_KEYS = ("missing_per_class", "spurious_per_class")
#: Bins of the label_score histograms.
SCORE_BINS = 40
_BATCH_ROWS = 65_536


def read_summary(path: str | os.PathLike) -> dict:
    """Read and check a summary JSON written by ``cleanpipe flag``.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict
        The summary, with at least the keys in :data:`SUMMARY_KEYS`.

    Raises
    ------
    InputError
        The file is missing, is not JSON, or lacks keys the report needs.
    """
    summary = _read_summary(path, fix="cleanpipe flag writes it beside the flags file; pass its "
                                      "path with --summary")
    _check_summary(summary, f" '{path}'")
    return summary


def _check_summary(summary, where: str) -> None:
    if not isinstance(summary, dict):
        raise InputError(f"summary{where} is a {type(summary).__name__}, not a JSON object; pass the "
                         "summary JSON that cleanpipe flag wrote")
    needed = SUMMARY_KEYS + (MULTILABEL_SUMMARY_KEYS if summary.get("multi_label") else ())
    missing = [k for k in needed if k not in summary]
    if missing:
        raise InputError(f"summary{where} lacks {', '.join(missing)}; pass the summary JSON that "
                         "cleanpipe flag wrote for this flags file")
    _check_summary_values(summary, where)
    if summary.get("issues") is not None:
        _issues.check_issues(summary["issues"], where)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _check_summary_values(summary: dict, where: str) -> None:
    """The values the report computes with have the types and shapes flag writes."""
    def bad(key: str, want: str):
        return InputError(f"summary{where}: {key} = {str(summary.get(key))[:60]!r} is not {want}; "
                          "pass the summary JSON that cleanpipe flag wrote for this flags file")

    for key in ("rows", "flagged"):
        if not _is_count(summary[key]):
            raise bad(key, "a count")
    if not _is_number(summary["estimated_noise_rate"]):
        raise bad("estimated_noise_rate", "a number")
    if not isinstance(summary["classes"], list):
        raise bad("classes", "a list of class names")
    if not isinstance(summary["mixture"], dict):
        raise bad("mixture", "an object")
    names = summary["rows_per_class"]
    if not isinstance(names, dict):
        raise bad("rows_per_class", "an object of counts per class")
    per_class = {"rows_per_class": _is_count, "flagged_per_class": _is_count,
                 "noise_rate_per_class": _is_number}
    if summary.get("multi_label"):
        per_class.update(missing_per_class=_is_count, spurious_per_class=_is_count)
    for key, ok in per_class.items():
        value = summary[key]
        if not isinstance(value, dict) or set(value) != set(names) or not all(map(ok, value.values())):
            raise bad(key, f"an object of {'counts' if ok is _is_count else 'numbers'} for the classes "
                           "of rows_per_class")
    m = summary["noise_matrix"]
    if m is not None and not summary.get("multi_label"):
        k = len(names)
        if not (isinstance(m, list) and len(m) == k and all(
                isinstance(r, list) and len(r) == k and all(map(_is_number, r)) for r in m)):
            raise bad("noise_matrix", f"a {k} x {k} matrix of numbers (one row and column per class)")


@dataclass(frozen=True)
class _Scan:
    """What one pass over ``label_score`` / ``is_label_issue`` gives."""

    n_rows: int
    edges: np.ndarray
    kept: np.ndarray
    flagged: np.ndarray
    top: np.ndarray  # row positions of the lowest scores, lowest first
    #: Multi-label: tag (as its summary key) -> rows naming it, per suspect column.
    suspects: dict = field(default_factory=dict)


def _tag_key(value) -> str:
    """A tag as the summary names it."""
    return str(jsonable(value))


def _count_tags(column, into: dict) -> None:
    counts = pc.value_counts(pc.list_flatten(column))
    for tag, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
        if tag is not None:
            key = _tag_key(tag)
            into[key] = into.get(key, 0) + n


def _scan(batches, n_top: int, *, suspects: bool = False) -> _Scan:
    """One pass: score histograms, the running top-``n_top`` and, with ``suspects``, the tags
    named in :data:`SUSPECT_COLUMNS` (which the batches then hold)."""
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    kept = np.zeros(SCORE_BINS, dtype=np.int64)
    flagged = np.zeros(SCORE_BINS, dtype=np.int64)
    top_idx = np.empty(0, dtype=np.int64)
    top_score = np.empty(0, dtype=np.float64)
    offset = 0
    counts = {c: {} for c in SUSPECT_COLUMNS} if suspects else {}
    for batch in batches:
        for c in counts:
            _count_tags(batch.column(c), counts[c])
        # Null scores (unlabelled rows) become NaN and are neither counted nor ranked.
        score = batch.column("label_score").cast(pa.float64()).to_numpy(zero_copy_only=False)
        issue = pc.fill_null(batch.column("is_label_issue").cast(pa.bool_()), False)
        issue = issue.to_numpy(zero_copy_only=False)
        ok = np.isfinite(score)
        s = np.clip(score, 0.0, 1.0)
        flagged += np.histogram(s[ok & issue], bins=edges)[0]
        kept += np.histogram(s[ok & ~issue], bins=edges)[0]
        idx = np.concatenate([top_idx, np.flatnonzero(ok) + offset])
        val = np.concatenate([top_score, score[ok]])
        # Ties broken by row position, so the table order is stable.
        order = np.lexsort((idx, val))[:n_top]
        top_idx, top_score = idx[order], val[order]
        offset += batch.num_rows
    return _Scan(offset, edges, kept, flagged, top_idx, counts)


def _open(flags):
    """``(schema, batches(columns), take(sorted positions, columns))`` for a table or a path."""
    if isinstance(flags, pa.Table):
        return (flags.schema, lambda cols: flags.select(cols).to_batches(max_chunksize=_BATCH_ROWS),
                lambda pos, cols: flags.select(cols).take(pa.array(pos, pa.int64())))
    path = Path(flags)
    if not path.exists():
        raise InputError(f"flags '{path}' does not exist; pass the Parquet file cleanpipe flag wrote")
    try:
        if path.is_dir():
            dataset = ds.dataset(path, format="parquet", partitioning="hive")
            # Dataset scans keep file and row order, so positions match those of the whole table.
            return (dataset.schema,
                    lambda cols: dataset.to_batches(columns=cols, batch_size=_BATCH_ROWS),
                    lambda pos, cols: dataset.take(pa.array(pos, pa.int64()), columns=cols))
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"flags '{path}' is not a readable Parquet file ({first}); pass the Parquet "
                         "file cleanpipe flag wrote") from None
    meta = pf.metadata
    starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])

    def take(pos: np.ndarray, cols: list) -> pa.Table:
        # Only the row groups holding a wanted row are read, one record batch at a time.
        parts = []
        for g in np.unique(np.searchsorted(starts, pos, side="right") - 1):
            offset = int(starts[g])
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[int(g)], columns=cols):
                local = pos[(pos >= offset) & (pos < offset + batch.num_rows)] - offset
                if local.size:
                    parts.append(pa.Table.from_batches([batch.take(pa.array(local))]))
                offset += batch.num_rows
        return pa.concat_tables(parts)

    return (pf.schema_arrow, lambda cols: pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols), take)


def _flag_columns(summary: dict) -> tuple:
    """The columns ``flag`` added to the table that ``summary`` describes."""
    return FLAG_COLUMNS + (SUSPECT_COLUMNS if summary.get("multi_label") else ())


def _shown_columns(schema: pa.Schema, summary: dict, max_columns: int) -> tuple[list, int]:
    label = (summary.get("settings") or {}).get("label")
    # Multi-label data may name several 0/1 label columns.
    labels = set(label) if isinstance(label, list) else {label}
    own = _flag_columns(summary) + _issues.flag_columns(summary.get("issues"), schema)
    # The id columns are those `flag` put in top_suspicious besides its own keys; show them first.
    ids = [c for c in ((summary.get("top_suspicious") or [{}])[0] or {})
           if c not in ("row", *own) and c in schema.names]
    # The label column(s) repeat given_label, so they are not shown again.
    data = [c for c in schema.names if c not in own and c not in labels and c not in ids]
    cols = (ids + data)[:max_columns]
    return cols, len(ids) + len(data) - len(cols)


def _rows_table(take, positions: np.ndarray, data_cols: list, hidden: int, *,
                suspects: tuple = ()) -> _html.RowsTable:
    # A multi-label row's suspect tags go beside its given and predicted tags.
    columns = ["row", "given_label", "predicted_label", *suspects, "label_score", "p_noisy",
               "is_label_issue", *data_cols]
    if positions.size == 0:
        return _html.RowsTable(columns, [], hidden)
    # Positions are sorted for the read (one pass over the row groups), then put back in score order.
    sorted_pos = np.sort(positions)
    got = take(sorted_pos, [*FLAG_COLUMNS, *suspects, *data_cols])
    where = {int(p): i for i, p in enumerate(sorted_pos)}
    pylists = {c: got.column(c).to_pylist() for c in got.column_names}
    rows = []
    for p in positions:
        i = where[int(p)]
        rows.append([int(p)] + [pylists[c][i] for c in columns[1:]])
    return _html.RowsTable(columns, rows, hidden)


def _training(training) -> Training | None:
    """``training=`` of :func:`build_report` as a checked :class:`Training` (None stays None)."""
    if training is None or isinstance(training, Training):
        return training
    if isinstance(training, (str, os.PathLike)):
        return read_training(training)
    return check_training(training)


def build_report(flags, summary: dict, *, max_rows: int = 50, max_columns: int = 20,
                 training=None) -> str:
    """Render the HTML report of a flags table.

    Parameters
    ----------
    flags : pyarrow.Table or path-like
        The table ``cleanpipe flag`` wrote (or :attr:`cleanpipe.FlagResult.table`), or the path of
        its Parquet file or directory. A path is read in record batches: only ``label_score`` and
        ``is_label_issue`` (and, multi-label, the suspect tags) in full, the other columns only for
        the rows shown.
    summary : dict
        The matching summary (the ``*.summary.json`` sidecar, or :attr:`FlagResult.summary`). A
        multi-label one (``multi_label`` true, from ``cleanpipe flag --multi-label``) needs the
        ``suspect_missing`` and ``suspect_spurious`` columns; its page has no noise matrix, and
        shows the suspect tags per class and in the rows list instead.
    max_rows : int, default=50
        Most suspicious rows (lowest ``label_score``) listed.
    max_columns : int, default=20
        Data columns shown in that list (id columns first); the others are counted, not shown.
    training : dict or path-like, optional
        The metrics of a ``cleanpipe retrain`` run (:attr:`cleanpipe.train.RetrainResult.metrics`),
        or its model directory or ``metrics.json``. Adds a Training section: loss and validation
        accuracy per epoch, the online noise model per epoch when the run fitted one, and the
        run's settings. Without it the page has no such section.

    Returns
    -------
    str
        A self-contained HTML document: no script, and nothing loaded from the network.

    Raises
    ------
    InputError
        ``flags`` lacks the columns flag adds, ``summary`` lacks the keys the report needs or is
        single-label for a multi-label table, or
        ``training`` is missing, unreadable or not the metrics of a retrain run.

    Examples
    --------
    >>> from cleanpipe import flag_table
    >>> result = flag_table(table, label="label")                         # doctest: +SKIP
    >>> Path("report.html").write_text(build_report(result.table, result.summary))  # doctest: +SKIP
    >>> page = build_report(result.table, result.summary, training="model/")  # doctest: +SKIP
    """
    # The charts (and matplotlib, which wants a config folder under HOME) load only when a
    # report is drawn, not with every command that can write one.
    from . import charts
    if max_rows < 0 or max_columns < 0:
        raise InputError(f"max_rows ({max_rows}) and max_columns ({max_columns}) must be >= 0")
    _check_summary(summary, "")
    training = _training(training)  # before the flags are read: a bad path fails fast
    if not isinstance(flags, (pa.Table, str, os.PathLike)):
        try:  # a pandas DataFrame or a dict of columns
            flags = pa.table(flags)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InputError(f"flags must be a pyarrow Table, a DataFrame or a Parquet path, not "
                             f"{type(flags).__name__} ({exc})") from None
    schema, batches, take = _open(flags)
    multi = bool(summary.get("multi_label"))
    where = f"flags '{os.fspath(flags)}'" if isinstance(flags, (str, os.PathLike)) else "flags table"
    missing = [c for c in _flag_columns(summary) if c not in schema.names]
    if missing:
        shown = ", ".join(schema.names[:30]) + (", ..." if len(schema.names) > 30 else "")
        raise InputError(f"{where} lacks the column(s) {', '.join(missing)} that cleanpipe flag adds "
                         f"(columns: {shown}); pass the output of cleanpipe flag"
                         + (" --multi-label with its summary" if multi else ""))
    if not multi and all(c in schema.names for c in SUSPECT_COLUMNS):
        raise InputError(f"{where} is multi-label (it has {' and '.join(SUSPECT_COLUMNS)}) but its "
                         "summary is not; pass the summary written with this flags file (--summary)")
    if not pa.types.is_floating(schema.field("label_score").type):
        raise InputError(f"flags column 'label_score' has type {schema.field('label_score').type}, not "
                         "float; pass the output of cleanpipe flag")
    suspects = SUSPECT_COLUMNS if multi else ()
    scan = _scan(batches(["label_score", "is_label_issue", *suspects]), max_rows, suspects=multi)
    if scan.n_rows != int(summary["rows"]):
        warnings.warn(f"the summary describes {summary['rows']} rows but the flags table has "
                      f"{scan.n_rows}; the charts come from the summary and the lists from the table. "
                      "Pass the summary written with this flags file (--summary)", CleanpipeWarning,
                      stacklevel=2)
    data_cols, hidden = _shown_columns(schema, summary, max_columns)
    table = _rows_table(take, scan.top, data_cols, hidden, suspects=suspects)

    names = list(summary["rows_per_class"])
    noise_rate = [summary["noise_rate_per_class"][n] for n in names]
    # Multi-label: the suspect tags per class, in class order, as the flags table names them.
    tags = {c.removeprefix("suspect_"): [scan.suspects[c].get(n, 0) for n in names] for c in suspects}
    svgs = {
        "chart-loss-mixture": charts.loss_mixture_chart(summary["mixture"]),
        "chart-per-class": (
            charts.per_class_chart(names, None, noise_rate, title="suspect tags of flagged rows",
                                   parts={f"suspect {k}": v for k, v in tags.items()}) if multi
            else charts.per_class_chart(names, [summary["flagged_per_class"][n] for n in names],
                                        noise_rate)),
        "chart-scores": charts.score_chart(scan.edges, scan.kept, scan.flagged),
    }
    if not multi:  # a multi-label noise matrix is one 2 x 2 matrix per class, not a heatmap
        svgs["chart-noise-matrix"] = charts.noise_matrix_chart(summary["noise_matrix"], names)
    parts = _html.sections(summary, svgs, table, n_kept=int(scan.kept.sum()),
                           n_flagged=int(scan.flagged.sum()), suspect_tags=tags or None)
    issues = summary.get("issues")
    if issues:  # flag --checks: a section per check, after the suspicious rows
        checked = _issues.scan_issues(batches(_issues.columns_to_scan(schema)))
        parts[-1:-1] = _issues.sections(summary, checked, take, data_cols)
    toc = _html.toc(multi_label=multi, training=training is not None, checks=_issues.toc(issues))
    if training is None:
        return _html.page(summary, parts, toc=toc)
    flag_rate = summary.get("estimated_noise_rate")
    parts.insert(-1, _html.training_section(training, _training_svgs(
        training, flag_rate=float(flag_rate) if isinstance(flag_rate, (int, float)) else None)))
    return _html.page(summary, parts, toc=toc)


def _training_svgs(training: Training, *, flag_rate: float | None) -> dict:
    from . import charts  # matplotlib only when a report is drawn (see build_report)
    svgs = {}
    if any(v is not None for v in (*training.train_loss, *training.val_loss, *training.val_accuracy)):
        svgs["chart-training-curves"] = charts.training_curve_chart(
            training.train_loss, training.val_loss, training.val_accuracy,
            best_epoch=training.best_epoch)
    if training.noise_model:
        nm = training.noise_model
        svgs["chart-noise-model"] = charts.noise_model_chart(
            [e.epoch for e in nm], [e.noisy_share for e in nm], [e.auroc_vs_flag for e in nm],
            best_epoch=training.best_epoch, flag_rate=flag_rate, converged=[e.converged for e in nm],
            n_epochs=max(len(training.train_loss), len(training.val_loss), len(training.val_accuracy)))
    return svgs


def write_report(flags, out: str | os.PathLike, *, summary=None, max_rows: int = 50,
                 max_columns: int = 20, training=None) -> Path:
    """Build the report and write it to ``out`` atomically (a temporary file renamed into place).

    Parameters
    ----------
    flags : pyarrow.Table or path-like
        See :func:`build_report`.
    out : path-like
        The HTML file to write; an existing file is replaced only once the new one is complete.
    summary : dict or path-like, optional
        The summary or its JSON path; default: the sidecar of ``flags`` (:func:`summary_path_for`),
        which needs ``flags`` to be a path.
    max_rows, max_columns : int
        See :func:`build_report`.
    training : dict or path-like, optional
        See :func:`build_report`; a model directory or ``metrics.json`` path is read before
        anything is written.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    if summary is None:
        if not isinstance(flags, (str, os.PathLike)):
            raise InputError("write_report needs summary= when flags is a table, not a path")
        summary = summary_path_for(flags)
    if not isinstance(summary, dict):
        summary = read_summary(summary)
    text = build_report(flags, summary, max_rows=max_rows, max_columns=max_columns,
                        training=training)
    out = Path(out)
    with AtomicOutputs() as outputs:
        outputs.stage(out).write_text(text, encoding="utf-8")
    log.info("wrote %s (%d bytes)", out, len(text))
    return out
