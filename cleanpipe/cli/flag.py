"""``cleanpipe flag``: find likely mislabeled rows of a Parquet table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..errors import InputError
from ..flag import flag_dataset
from ..flagsfile import against_path_for, summary_path_for
from ..formats import STDIN
from ..io import AtomicOutputs, cleanup_stale_temps, write_json
from ..oof import joblib_backend
from ..report import write_report
from ..safety import guard_files
from ..settings import (ALL_METHODS, DEFAULT_MODEL, FLAG, MIN_FOLDS, MULTILABEL_NOISY_THRESHOLD,
                        NOISY_THRESHOLD, OOF, SCALE_SAMPLE_ROWS)
from ._group import cli
from .options import (check_options, csv_option, device_option, exclude_option, features_option,
                      ids_option, input_format_options, json_option, label_option, multi_label_option,
                      overwrite_option, quiet_option, seed_option, setting_option)
from ._progress import progress_bar


@cli.command()
@click.argument("data", type=click.Path(path_type=str))
@input_format_options
@label_option("Label column (a list column, or a,b,c for 0/1 columns, means multi-label).", default="label")
@multi_label_option("Rows hold sets of tags: a list column, or several 0/1 columns (--label a,b,c).")
@features_option
@exclude_option
@ids_option()
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="gbm (LightGBM when installed, else hgb), hgb, lgb, xgb, logreg, mlp (multi-label "
                   "only: one network for every tag), or package.module:Class of a scikit-learn classifier (imports it); several "
                   "comma-separated (gbm,logreg) average their out-of-fold probabilities.")
@click.option("--folds", default=OOF["folds"].default, show_default=True, type=int,
              help=f"Cross-validation folds (at least {MIN_FOLDS}).")
@seed_option("Seed for folds and models.")
@setting_option("--n-jobs", OOF["n_jobs"], help="Folds fitted in parallel (-1: all cores); on a "
                                                 "dataset with --engine dask, the workers' threads.")
@setting_option("--backend", OOF["backend"], "--engine", "backend",
                help="Where the work runs: local processes, or the Dask cluster at --scheduler "
                     "(for one file, the fold fits; for a dataset directory or s3:// prefix, "
                     "everything, partition by partition, into an --out directory).")
@click.option("--scheduler", default=None, help="Dask scheduler address for --backend dask (tcp://HOST:8786).")
@device_option("Where the boosted fold models fit: cuda runs them as XGBoost on the GPU "
               "(auto: when an NVIDIA GPU and xgboost are present; on a dataset with --engine "
               "dask, the workers' CPUs).")
@click.option("--pred-probs", default=None,
              help="Use these out-of-fold probabilities (.npy, Parquet, or a list column of DATA).")
@click.option("--save-pred-probs", default=None, type=click.Path(path_type=str),
              help="Also write the out-of-fold probabilities to this .npy file.")
@click.option("--method", default=None, show_default="combined; posterior for multi-label data",
              type=click.Choice(ALL_METHODS),
              help="Rule that sets is_label_issue.")
@setting_option("--mixture", FLAG["mixture"], help="Loss-mixture family.")
@click.option("--noisy-threshold", default=None, type=click.FloatRange(0, 1, max_open=True),
              show_default=f"{NOISY_THRESHOLD}; {MULTILABEL_NOISY_THRESHOLD} for multi-label data",
              help="p_noisy above which the mixture counts a row as noisy.")
@check_options
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Output Parquet (default: ./<input stem>.flags.parquet).")
@click.option("--report", "with_report", is_flag=True,
              help="Also write the HTML report to <out stem>.report.html.")
@overwrite_option()
@json_option("Print the summary as one JSON object.")
@quiet_option()
def flag(data, label, multi_label, features, exclude, ids, model, folds, seed, n_jobs, backend, scheduler,
         device, pred_probs, save_pred_probs, method, mixture, noisy_threshold, checks, against, out,
         with_report, overwrite, as_json, quiet, fmt):
    """Flag likely mislabeled rows of a table.

    Computes out-of-fold probabilities by stratified K-fold cross-validation, scores every row with
    confident learning and a loss mixture, and writes the table with five added columns
    (given_label, predicted_label, label_score, p_noisy, is_label_issue) plus a summary JSON.

    \b
    Examples:
      cleanpipe flag data.parquet --label target
      cleanpipe flag data/ --label y --id row_id --model logreg --out flags.parquet
      cleanpipe flag data.parquet --model hgb   # one model family, not the gbm,logreg average
      cleanpipe flag data.parquet --pred-probs oof.npy --json
      cleanpipe flag data/ --backend dask --scheduler tcp://10.0.0.5:8786
      cleanpipe flag s3://bucket/table/ --engine dask --scheduler tcp://10.0.0.5:8786 \\
          --label y --id row_id --out s3://bucket/flags/   # partition by partition
      cleanpipe flag s3://bucket/table/ --engine dask --scheduler tcp://10.0.0.5:8786 \\
          --label y --pred-probs probs --out s3://bucket/flags/   # probabilities given
      cleanpipe flag photos.parquet --label tags        # list column: multi-label
      cleanpipe flag photos.parquet --label cat,dog,sky # 0/1 columns: multi-label

    Multi-label data gets one model per tag (also given the row's other tags) and two more
    list columns, suspect_missing and
    suspect_spurious; its methods are posterior (default), noise_rate, mixture and both.

    \b
    Data checks, in the same pass (--checks):
      cleanpipe flag data.parquet --checks                # duplicates, outliers, ...
      cleanpipe flag train.parquet --against test.parquet # ... and leakage into test
      cleanpipe flag data.parquet --checks --near-radius 0.05 --outlier-z 4
    They add duplicate_set, is_exact_duplicate, is_near_duplicate, label_conflict,
    outlier_score, is_outlier, knn_label_score (and, with --against, the leakage
    columns) to the flags table, and an issues object to the summary; the
    second table's rows get theirs in <out stem>.against.parquet.
    """
    if backend == "dask" and data != STDIN and _partition_wise(data, pred_probs):
        from ..partitioned_oof import OofSettings, check_fit_options
        if not pred_probs:
            check_fit_options(n_jobs, device)
        oof = None if pred_probs else OofSettings(
            model, folds, seed, SCALE_SAMPLE_ROWS, ids=tuple(csv_option(ids) or ()),
            features=tuple(csv_option(features)) if features else None,
            exclude=tuple(csv_option(exclude) or ()))
        return _flag_partitions(data, label=label, multi_label=multi_label, scheduler=scheduler,
                                pred_probs=pred_probs, method=method, mixture=mixture,
                                noisy_threshold=noisy_threshold, out=out, as_json=as_json,
                                quiet=quiet, oof=oof,
                                unsupported={"--checks": checks, "--against": against,
                                             "--report": with_report,
                                             "--save-pred-probs": save_pred_probs})
    stem = "stdin" if data == STDIN else Path(data.rstrip("/")).stem
    out_path = Path(out) if out else Path.cwd() / f"{stem}.flags.parquet"
    summary_path = summary_path_for(out_path)
    report_path = out_path.with_suffix(".report.html")
    against_path = against_path_for(out_path) if against else None
    # --pred-probs may name a list column of DATA rather than a file
    probs_file = pred_probs if pred_probs and os.path.lexists(pred_probs) else None
    guard_files({"DATA": data, "--pred-probs": probs_file, "--against": against},
                {"--out": out_path, "--out (its summary)": summary_path,
                 "--out (its report)": report_path if with_report else None,
                 "--out (its --against rows)": against_path,
                 "--save-pred-probs": save_pred_probs}, overwrite=overwrite)
    cleanup_stale_temps(out_path.parent)
    with joblib_backend(backend if pred_probs is None else None, scheduler), AtomicOutputs() as outputs, \
            progress_bar(not (quiet or as_json)) as update:
        summary = flag_dataset(data, out_path, outputs=outputs, label=label, multi_label=multi_label,
                               features=csv_option(features), exclude=csv_option(exclude) or (),
                               ids=csv_option(ids) or (), model=model, folds=folds, seed=seed,
                               n_jobs=n_jobs, pred_probs=pred_probs, method=method, mixture=mixture,
                               noisy_threshold=noisy_threshold, save_pred_probs=save_pred_probs,
                               progress=update, fmt=fmt, checks=checks, against=against,
                               against_out=against_path, device=device)
        summary["outputs"] = {"flags": str(out_path), "summary": str(summary_path)}
        if against_path is not None:
            summary["outputs"]["against"] = str(against_path)
        if save_pred_probs:
            summary["outputs"]["pred_probs"] = str(save_pred_probs)
        if with_report:
            summary["outputs"]["report"] = str(report_path)
        write_json(summary, outputs.stage(summary_path))
    if with_report:
        write_report(out_path, report_path, summary=summary)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    elif not quiet:
        click.echo(format_summary(summary, ids=csv_option(ids) or ()))


def _partition_wise(data: str, pred_probs: str | None) -> bool:
    """``--engine dask`` flags DATA partition by partition: its probabilities in a column, or
    computed on the workers when DATA is a dataset (a directory or a URI)."""
    from ..partitions import is_dataset
    if pred_probs:
        return not os.path.lexists(pred_probs)
    return is_dataset(data)


def _flag_partitions(data, *, label, multi_label, scheduler, pred_probs, method, mixture,
                     noisy_threshold, out, as_json, quiet, unsupported, oof=None):
    """``flag DATA --backend dask [--pred-probs COLUMN]``: every partition flagged on the
    cluster, the out-of-fold probabilities computed there unless a column holds them."""
    from ..partitions import connect, flag_partitions

    for option, value in unsupported.items():
        if value:
            raise InputError(f"{option} is not available when flagging partition by partition "
                             "(--backend dask on a dataset directory); drop it, or flag on "
                             "one machine")
    out = out or str(Path.cwd() / f"{Path(data.rstrip('/')).stem}.flags")
    engine = connect(scheduler)
    try:
        summary = flag_partitions(data, out, label=label, pred_probs=pred_probs, method=method,
                                  mixture=mixture, noisy_threshold=noisy_threshold, engine=engine,
                                  oof=oof, multi_label=multi_label)
    finally:
        engine.client.close()
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    elif not quiet:
        click.echo(f"{summary['source']}: {summary['labelled_rows']} labelled rows in "
                   f"{summary['partitions']} partitions, {summary['n_classes']} classes; flagged "
                   f"{summary['flagged']} rows with method '{summary['method']}'\nwrote {out}")


def _score(v: float) -> str:
    # Three significant digits: the lowest scores differ in their first non-zero digits, where a
    # fixed 0.000 would print the same for every row.
    return f"{v:.3g}"


def format_summary(s: dict, ids=()) -> str:
    """The terminal summary: noise estimate, flags per class, the most suspicious rows."""
    n_lab = s["labelled_rows"]
    lines = [
        f"{s['source']}: {s['rows']} rows, {s['n_classes']} classes"
        + (f", {s['unlabelled_rows']} with a null label (kept, not checked)" if s["unlabelled_rows"] else ""),
        f"estimated noise rate {s['estimated_noise_rate']:.1%} (~{s['estimated_issues']} rows); "
        f"flagged {s['flagged']} rows ({s['flagged'] / max(n_lab, 1):.1%}) with method '{s['method']}'",
        "",
    ]
    names = list(s["rows_per_class"])
    width = max(8, *(len(n) for n in names[:50]))
    lines.append(f"  {'class':<{width}} {'rows':>8} {'est. noise':>10} {'flagged':>8}")
    for name in names[:50]:
        lines.append(f"  {name:<{width}} {s['rows_per_class'][name]:>8} "
                     f"{s['noise_rate_per_class'][name]:>10.1%} {s['flagged_per_class'][name]:>8}")
    if len(names) > 50:
        lines.append(f"  ... {len(names) - 50} more classes in the summary JSON")
    if s.get("top_suspicious"):
        lines += ["", "most suspicious rows:"]
        head = "  " + " ".join(f"{c:>10}" for c in ["row", *ids, "given", "predicted", "score", "p_noisy"])
        lines.append(head)
        for r in s["top_suspicious"]:
            cells = [str(r["row"]), *(str(r[c]) for c in ids), str(r["given_label"]),
                     str(r["predicted_label"]), _score(r["label_score"]), f"{r['p_noisy']:.3f}"]
            lines.append("  " + " ".join(f"{c[:10]:>10}" for c in cells))
    if s.get("issues"):
        lines += ["", *format_issues(s["issues"])]
    for note in s.get("notes", []):
        lines.append(f"note: {note}")
    outs = s.get("outputs", {})
    lines += ["", "wrote " + ", ".join(outs.values())]
    return "\n".join(lines)


def _n(count: int, noun: str, plural: str | None = None) -> str:
    """``1 set``, ``2 sets``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def format_issues(issues: dict) -> list:
    """The terminal lines of the data checks (``--checks``): one per check that ran."""
    lines = ["data checks:"]
    d = issues.get("duplicates")
    if d:
        lines.append(f"  duplicates: {_n(d['exact_rows'], 'row')} in {_n(d['exact_sets'], 'exact set')}, "
                     f"{d['near_rows']} in {_n(d['near_sets'], 'near-duplicate set')} (radius "
                     f"{d['radius']:.3g}); {_n(d['near_extra_rows'], 'copy', 'copies')} beyond the "
                     "first of each set")
    c = issues.get("label_conflicts")
    if c:
        lines.append(f"  label conflicts: {_n(c['rows'], 'row')} in {_n(c['sets'], 'duplicate set')} "
                     "disagree on the label")
    o = issues.get("outliers")
    if o:
        threshold = "" if o.get("threshold") is None else f" (outlier_score above {o['threshold']:.3g})"
        lines.append(f"  outliers: {_n(o['rows'], 'row')}{threshold}")
    k = issues.get("knn_labels")
    if k:
        lines.append(f"  neighbours' labels: {_n(k['rows_outvoted'], 'row')} outvoted by their {k['k']} "
                     "nearest neighbours"
                     + (f"; {k['label_issues']} label issues with the kNN-assisted rule (weight "
                        f"{k['weight']})" if "label_issues" in k else ""))
    b = issues.get("class_balance") or {}
    if b.get("underrepresented"):
        lines.append(f"  class imbalance: under-represented classes {b['underrepresented']}")
    t = issues.get("table") or {}
    for key, what in (("constant_columns", "constant columns"), ("id_like_columns", "id-like columns"),
                      ("null_heavy_columns", "null-heavy columns")):
        if t.get(key):
            lines.append(f"  {what}: {', '.join(map(str, t[key][:10]))}"
                         + (f" and {len(t[key]) - 10} more" if len(t[key]) > 10 else ""))
    if t.get("null_heavy_rows"):
        lines.append(f"  null-heavy rows: {t['null_heavy_rows']}")
    leak = issues.get("leakage")
    if leak:
        lines.append(f"  leakage: {_n(leak['rows'], 'row')} duplicate a row of --against "
                     f"({leak['exact_rows']} exact); {leak['against_rows']} of its rows duplicate one "
                     "of these")
    return lines
