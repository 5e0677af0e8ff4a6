"""The oof, flag and clean stages on Spark (``[oof] backend = "spark"``).

Each reads its input as a Spark DataFrame (the source where it is, through
:mod:`cleanpipe.spark_tables`, or the previous stage's folder), runs :mod:`cleanpipe.spark` on the
executors and writes a Parquet folder into the stage's fresh folder ``out`` (Spark's writer: one
file per partition, and ``_SUCCESS``); the runner then renames ``out`` into place, so a stage's
folder appears whole or not at all, as on the other engines. Only counts and the detector's
estimates reach the driver, never the rows.

* ``oof/data/``: the input rows with a ``pred_probs`` column (out of fold, hashed folds,
  :mod:`cleanpipe.spark_oof`), and ``oof.json``;
* ``flag/flags/``: every input column plus the flag columns, and ``summary.json``;
* ``clean/cleaned/``: the cleaned rows, and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..flagsfile import jsonable
from ..io import write_json
from ..settings import SCALE_SAMPLE_ROWS

log = logging.getLogger(__name__)

OOF_DATA, FLAGS_DIR, CLEANED_DIR, SUMMARY, OOF_INFO = "data", "flags", "cleaned", "summary.json", "oof.json"


def source_frame(ctx):
    """The pipeline's ``[source]`` as a Spark DataFrame, read where it is."""
    from ..spark_tables import read_iceberg, read_object_store, read_table
    src = ctx.pipeline.source
    if src.type == "iceberg":
        return read_iceberg(ctx.spark, src.table, catalog=src.catalog, catalog_uri=src.catalog_uri,
                            warehouse=src.warehouse, snapshot_id=src.snapshot_id)
    if "://" in src.path:  # s3:// Parquet (rules.py): the store as [source] sets it up
        from ..sources.parquet import filesystem_for
        storage = filesystem_for(src.path, s3_endpoint=src.s3_endpoint, s3_region=src.s3_region,
                                 s3_anonymous=src.s3_anonymous)
        return read_object_store(ctx.spark, src.path, storage=storage, what="[source]")
    return read_table(ctx.spark, src.path, version=getattr(src, "version", None), what="[source] path")


def _oof_settings(ctx, schema) -> dict:
    """``spark.flag``'s out-of-fold keywords from ``[columns]`` and ``[oof]``."""
    from ..spark_oof import feature_columns
    p, c = ctx.pipeline, ctx.pipeline.columns
    id_column = c.ids[0] if c.ids else None
    features = feature_columns(schema, label=c.label_columns, features=list(c.features) if c.features else None,
                               id_column=id_column, exclude=c.exclude)
    return {"features": features, "id_column": id_column, "model": p.oof.model,
            "folds": p.oof.folds, "seed": p.oof.seed}


def _write(frame, folder: Path) -> None:
    """``frame`` as a Parquet folder (Spark's writer); a write the system refuses (a full disk, a
    permission, a file where a folder should be) is one line naming it and the fix
    (:func:`cleanpipe.safety.spark_write_error`): Spark sends it back as text, not an OSError."""
    try:
        frame.write.mode("errorifexists").parquet(str(folder))
    except Exception as exc:  # noqa: BLE001 - mapped when it is the environment's, else re-raised
        from ..safety import spark_write_error
        user = spark_write_error(exc, folder)
        if user is None:
            raise
        raise user from None


def run_oof(ctx, out: Path) -> dict:
    """``oof/data/`` (the input rows and their ``pred_probs``: one probability per class, or per
    tag on multi-label data, in the flag stage's class order) and ``oof.json``."""
    from ..spark import _check_label, _check_oof, _storage, _tags, arrow_schema
    from ..spark_oof import distinct_labels, out_of_fold

    p, c = ctx.pipeline, ctx.pipeline.columns
    df = source_frame(ctx)
    schema = arrow_schema(df)
    target = _check_label(schema, _label(c))
    settings = _oof_settings(ctx, schema)
    fit = _check_oof(schema, target.columns, sample_rows=SCALE_SAMPLE_ROWS, **settings)
    df = df.persist(_storage())  # the jobs and the write read the same rows
    try:
        tags = target.multi_label
        classes = _tags(df, target) if tags else distinct_labels(df, c.label, schema.field(c.label).type)
        frame, record = out_of_fold(df, label=_label(c), classes=classes, model=p.oof.model,
                                    folds=p.oof.folds, seed=p.oof.seed, sample_rows=SCALE_SAMPLE_ROWS,
                                    target=target if tags else None, **fit)
        _write(frame, out / OOF_DATA)
    finally:
        df.unpersist()
    rows = sum(record["fold_rows"])
    info = {"label": c.target, "classes": [jsonable(v) for v in classes.to_pylist()],
            "features": list(settings["features"]), "id_column": settings["id_column"],
            "model": p.oof.model, "folds": p.oof.folds, "seed": p.oof.seed, "engine": "spark",
            "labelled_rows": rows, **record}
    write_json(info, out / OOF_INFO)
    summary = {k: info[k] for k in ("labelled_rows", "model", "folds", "sample_rows", "multi_label",
                                    "notes") if k in info}
    summary["n_classes"] = len(classes)
    return {"rows_in": rows, "rows_out": rows, "summary": summary,
            "outputs": {"data": OOF_DATA, "info": OOF_INFO}}


def _label(c) -> str:
    """``[columns]``' label as :mod:`cleanpipe.spark` takes it: a column, or 0/1 columns as ``"a,b"``."""
    return ",".join(c.target) if isinstance(c.target, list) else c.label


def run_flag(ctx, out: Path) -> dict:
    """``flag/flags/`` and ``summary.json``: probabilities from the oof stage's folder, from the
    ``[flag] pred_probs`` column, or fitted here (no oof stage)."""
    from ..spark import arrow_schema, flag_with_estimates
    from ..spark_oof import OOF_COLUMN

    p, c = ctx.pipeline, ctx.pipeline.columns
    detector = {k: getattr(p.flag, k) for k in ("mixture", "noisy_threshold")}
    detector["method"] = p.flag.detector(ctx.multi_label).get("method")
    label = _label(c)
    oof_dir = ctx.upstream.get("oof")
    if oof_dir is not None:
        # Files read directly: the same partitions, in the same order, in every pass.
        df = ctx.spark.read.parquet(str(oof_dir / OOF_DATA))
        result = flag_with_estimates(df, label=label, pred_probs=OOF_COLUMN, persist=False, **detector)
        frame = result.frame.drop(OOF_COLUMN)
    else:
        df = source_frame(ctx)
        fit = {} if p.flag.pred_probs is not None else dict(_oof_settings(ctx, arrow_schema(df)),
                                                          sample_rows=SCALE_SAMPLE_ROWS)
        result = flag_with_estimates(df, label=label, pred_probs=p.flag.pred_probs, **fit, **detector)
        frame = result.frame
    try:
        _write(frame, out / FLAGS_DIR)
    finally:
        result.unpersist()  # what flag persisted for its passes
    rows, flagged = _counts(ctx.spark, out / FLAGS_DIR, "is_label_issue")
    est = result.estimates
    # multi-label: the expected rows with a wrong tag, as the one-machine summary counts them
    issues = round(est.expected_issues) if ctx.multi_label else int(est.confident.issues_per_class.sum())
    summary = {"source": ctx.source, "engine": "spark", "rows": rows, "labelled_rows": int(est.n_rows),
               "n_classes": len(result.classes), "classes": [jsonable(v) for v in result.classes],
               "estimated_noise_rate": issues / max(int(est.n_rows), 1), "estimated_issues": issues,
               "flagged": flagged, **detector}
    if result.oof is not None:
        summary["oof"] = result.oof
    elif oof_dir is not None:
        info = json.loads((oof_dir / OOF_INFO).read_text(encoding="utf-8"))
        summary["oof"] = {k: info.get(k) for k in ("model", "folds", "seed", "features", "sample_rows")}
    write_json(summary, out / SUMMARY)
    kept = {k: summary[k] for k in ("rows", "labelled_rows", "n_classes", "estimated_noise_rate",
                                    "estimated_issues", "flagged")}
    return {"rows_in": rows, "rows_out": rows, "summary": kept,
            "outputs": {"flags": FLAGS_DIR, "summary": SUMMARY}}


def _counts(spark, folder: Path, flag_column: str):
    """(rows, rows where ``flag_column`` is true) of a written folder: one aggregation."""
    from pyspark.sql import functions as F
    df = spark.read.parquet(str(folder))
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.sum(F.col(flag_column).cast("long")).alias("k")).collect()[0]
    return int(row["n"]), int(row["k"] or 0)


def run_clean(ctx, out: Path) -> dict:
    """``clean/cleaned/`` and ``summary.json``: the flags folder cleaned batch by batch."""
    from ..spark import clean

    p, s = ctx.pipeline, ctx.pipeline.clean
    flag_dir = ctx.upstream.get("flag")
    flags = ctx.spark.read.parquet(str(flag_dir / FLAGS_DIR)) if flag_dir is not None else source_frame(ctx)
    settings = {"mode": s.mode, "min_weight": s.min_weight, "relabel_p_noisy": s.relabel_p_noisy,
                "relabel_score": s.relabel_score, "drop_flag_columns": s.drop_flag_columns}
    cleaned = clean(flags, label=p.columns.target if ctx.multi_label else p.columns.label, **settings)
    _write(cleaned, out / CLEANED_DIR)
    rows_out = ctx.spark.read.parquet(str(out / CLEANED_DIR)).count()
    rows_in, flagged = _counts(ctx.spark, flag_dir / FLAGS_DIR, "is_label_issue") if flag_dir is not None \
        else (flags.count(), None)
    summary = {"engine": "spark", "rows_in": rows_in, "rows_out": rows_out, "flagged": flagged,
               "settings": settings}
    write_json(summary, out / SUMMARY)
    return {"rows_in": rows_in, "rows_out": rows_out,
            "summary": {k: summary[k] for k in ("rows_in", "rows_out", "flagged")},
            "outputs": {"cleaned": CLEANED_DIR, "summary": SUMMARY}}


#: Stage name -> function, for ``[oof] backend = "spark"``.
SPARK_STAGES = {"oof": run_oof, "flag": run_flag, "clean": run_clean}


def publish(spark, folder: Path, target: str) -> int:
    """Write a stage's Parquet folder to a Delta table ``target`` in one commit (on the executors)."""
    from ..spark_tables import write_delta
    return write_delta(spark.read.parquet(str(folder)), target)
