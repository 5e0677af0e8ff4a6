"""``cleanpipe clean``: drop, down-weight or relabel the rows a flags file marked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..clean import clean_table
from ..errors import InputError
from ..flag import load_pred_probs
from ..flagsfile import (FLAG_METADATA, clean_provenance, label_from_metadata, read_summary,
                         summary_path_for, table_metadata)
from ..io import AtomicOutputs, cleanup_stale_temps, read_table, write_parquet
from ..safety import guard_files
from ..settings import CLEAN, MODES, OOF
from ..target import is_multilabel_flags
from ._group import cli
from .options import json_option, label_option, overwrite_option, quiet_option, setting_option


@cli.command()
@click.argument("flags", type=click.Path(path_type=str))
@click.option("--mode", default=CLEAN["mode"].default, show_default=True,
              help="relabel (label := predicted_label where the evidence is strong), drop (remove "
                   "flagged rows) or weight (add sample_weight).")
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Output Parquet (default: ./<input stem>.cleaned.parquet).")
@label_option("Label column (default: the one cleanpipe flag used, from its summary).")
@click.option("--summary", "summary_path", default=None, type=click.Path(path_type=str),
              help="The flag summary JSON (default: <FLAGS stem>.summary.json beside FLAGS).")
@setting_option("--min-weight", CLEAN["min_weight"], help="weight: floor of a flagged row's sample_weight.")
@setting_option("--relabel-p-noisy", CLEAN["relabel_p_noisy"], help="relabel: a row needs p_noisy at least this.")
@setting_option("--relabel-score", CLEAN["relabel_score"], help="relabel: a row needs label_score at most this.")
@setting_option("--relabel-add", CLEAN["relabel_add"],
                help="relabel, multi-label: add a suspect missing tag when its probability is at least this.")
@setting_option("--relabel-remove", CLEAN["relabel_remove"],
                help="relabel, multi-label: remove a suspect spurious tag when its probability is at "
                     "most 1 - this.")
@click.option("--pred-probs", default=None,
              help="relabel, multi-label: the out-of-fold probabilities flag used (default: its "
                   "--save-pred-probs file, from the summary).")
@click.option("--drop-flag-columns", is_flag=True,
              help="Remove given_label, predicted_label, label_score, p_noisy, is_label_issue "
                   "(and suspect_missing, suspect_spurious, and the columns of flag --checks).")
@click.option("--drop-duplicates", is_flag=True,
              help="Keep one row of each duplicate set (flag --checks): its first row that no other "
                   "rule drops.")
@click.option("--drop-outliers", is_flag=True, help="Drop the rows flag --checks marked is_outlier.")
@setting_option("--backend", OOF["backend"], "--engine", "backend",
                help="Where the work runs: this machine, or, for the flags directory of flag "
                     "--engine dask, the Dask cluster at --scheduler (partition by partition, "
                     "into an --out directory).")
@click.option("--scheduler", default=None, help="Dask scheduler address for --backend dask (tcp://HOST:8786).")
@overwrite_option()
@json_option("Print the counts as one JSON object.")
@quiet_option()
def clean(flags, mode, out, label, summary_path, min_weight, relabel_p_noisy, relabel_score,
          relabel_add, relabel_remove, pred_probs, drop_flag_columns, drop_duplicates, drop_outliers,
          backend, scheduler, overwrite, as_json, quiet):
    """Clean a flags file written by cleanpipe flag.

    \b
    relabel  (default) sets the label to predicted_label where is_label_issue,
             p_noisy >= --relabel-p-noisy and label_score <= --relabel-score, and
             adds original_label with the label before cleaning;
    drop     removes the rows with is_label_issue (rows with a null label are kept);
    weight   keeps every row and adds sample_weight: 1 for unflagged rows,
             clip(min(label_score, 1 - p_noisy), --min-weight, 1) for flagged ones.
    Multi-label flags (flag --multi-label): drop and weight act on whole rows as
    above; relabel adds a tag of suspect_missing whose out-of-fold probability is
    >= --relabel-add and removes a tag of suspect_spurious whose probability is
    <= 1 - --relabel-remove. It needs the probabilities: run flag with
    --save-pred-probs (found through the summary) or pass --pred-probs.
    With the columns of flag --checks, --drop-duplicates keeps the first row of
    each duplicate_set (the first one no other rule drops) and --drop-outliers
    removes the rows with is_outlier; either goes with any --mode.
    Every input column is kept (the flag columns too, unless --drop-flag-columns);
    provenance (source, settings, counts, version) goes into the Parquet metadata
    under 'cleanpipe.clean'. The input is never modified.

    \b
    Examples:
      cleanpipe clean data.flags.parquet --out data.cleaned.parquet
      cleanpipe clean data.flags.parquet --mode drop --json
      cleanpipe clean data.flags.parquet --drop-duplicates --drop-outliers
      cleanpipe clean data.flags.parquet --mode weight --min-weight 0.1 --label target
      cleanpipe flag photos.parquet --label tags --save-pred-probs photos.oof.npy
      cleanpipe clean photos.flags.parquet             # multi-label: adds/removes tags
      cleanpipe clean s3://bucket/flags/ --engine dask --scheduler tcp://10.0.0.5:8786 \\
          --mode drop --out s3://bucket/cleaned/   # the flags of flag --engine dask
    """
    if mode not in MODES:  # checked before reading so a typo fails fast
        raise InputError(f"--mode '{mode}' is not known; choose one of: {', '.join(MODES)}")
    if backend == "dask":
        for option, value in (("--summary", summary_path), ("--pred-probs", pred_probs),
                              ("--drop-duplicates", drop_duplicates),
                              ("--drop-outliers", drop_outliers)):
            if value:
                raise InputError(f"{option} is not available when cleaning partition by partition "
                                 "(--backend dask); drop it")
        from ..partitions import clean_partitions, connect
        out = out or str(Path.cwd() / f"{Path(flags.rstrip('/')).name.split('.')[0]}.cleaned")
        engine = connect(scheduler)
        try:
            summary = clean_partitions(flags, out, mode=mode, engine=engine, label=label,
                                       min_weight=min_weight, relabel_p_noisy=relabel_p_noisy,
                                       relabel_score=relabel_score,
                                       drop_flag_columns=drop_flag_columns)
        finally:
            engine.client.close()
        c = summary["counts"]
        if as_json:
            click.echo(json.dumps(dict(c, mode=mode, out=out)))
        elif not quiet:
            click.echo(f"{flags}: {c['rows_in']} rows in {summary['partitions']} partitions, "
                       f"{c['flagged']} flagged; wrote {c['rows_out']} rows to {out}")
        return
    stem = Path(flags.rstrip("/")).name.split(".")[0] or "data"
    out_path = Path(out) if out else Path.cwd() / f"{stem}.cleaned.parquet"
    side = Path(summary_path) if summary_path else summary_path_for(flags)
    inputs = {"FLAGS": flags, "--summary": side,
              "--pred-probs": pred_probs if pred_probs and os.path.lexists(pred_probs) else None}
    guard_files(inputs, {"--out": out_path}, overwrite=overwrite)
    table = read_table(flags, what="FLAGS")
    summary = read_summary(side, what="--summary") if summary_path or side.is_file() else None
    if label is None:
        label = label_from_metadata(table, summary)
    probs, probs_path = None, None
    if mode == "relabel" and is_multilabel_flags(table):
        probs, probs_path = _multilabel_probs(pred_probs, summary, side, table)
        if probs_path is not None and os.path.lexists(probs_path):  # found through the summary
            guard_files(dict(inputs, **{"--pred-probs": probs_path}), {"--out": out_path},
                        overwrite=overwrite)
    result = clean_table(table, mode=mode, label=label, min_weight=min_weight,
                         relabel_p_noisy=relabel_p_noisy, relabel_score=relabel_score,
                         drop_flag_columns=drop_flag_columns, source=f"FLAGS '{flags}'",
                         pred_probs=probs, relabel_add=relabel_add, relabel_remove=relabel_remove,
                         drop_duplicates=drop_duplicates, drop_outliers=drop_outliers)
    del probs  # unmaps a memory-mapped .npy before the output is written
    provenance = clean_provenance(
        source=str(flags), settings=result.settings, counts=result.counts, flag_summary=summary,
        summary_file=side if summary is not None else None, pred_probs=probs_path,
        flag_settings=(summary or table_metadata(table, FLAG_METADATA)).get("settings"))
    cleanup_stale_temps(out_path.parent)
    with AtomicOutputs() as outputs:
        write_parquet(result.table, outputs.stage(out_path), metadata={"cleanpipe.clean": provenance})
    report = dict(result.counts, mode=mode, out=str(out_path))
    if as_json:
        click.echo(json.dumps(report))
    elif not quiet:
        c = result.counts
        detail = {"drop": f"dropped {c['dropped']}", "weight": f"down-weighted {c['down_weighted']}",
                  "relabel": f"relabelled {c['relabelled']}"}[mode]
        if "tags_added" in c:
            detail += f" (added {c['tags_added']} tags, removed {c['tags_removed']})"
        if drop_duplicates:
            detail += f"; dropped {c['duplicates_dropped']} duplicates"
        if drop_outliers:
            detail += f"; dropped {c['outliers_dropped']} outliers"
        click.echo(f"{flags}: {c['rows_in']} rows, {c['flagged']} flagged; {detail}; "
                   f"wrote {c['rows_out']} rows to {out_path}")


def _multilabel_probs(explicit, summary, summary_file: Path, table):
    """The out-of-fold probabilities of a multi-label flag run and where they came from.

    ``--pred-probs`` if given, else the ``--save-pred-probs`` file the flag summary records (as
    written, then beside the summary); ``(None, None)`` when there is none, which clean_table
    turns into a one-line error.
    """
    spec = explicit
    if spec is None:
        recorded = ((summary or {}).get("outputs") or {}).get("pred_probs")
        if isinstance(recorded, str):
            for candidate in (Path(recorded), summary_file.parent / Path(recorded).name):
                if candidate.is_file():
                    spec = str(candidate)
                    break
    if spec is None:
        return None, None
    classes = (summary or {}).get("classes") or []
    return load_pred_probs(spec, table.column, table.column_names, classes), spec
