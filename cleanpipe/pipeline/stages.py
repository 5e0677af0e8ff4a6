"""The four stages as functions: read the run's input or the previous stage's folder, write files
into a fresh folder ``out``.

Each function returns ``rows_in``, ``rows_out``, ``outputs`` (name -> file inside ``out``) and a
small JSON ``summary``; the runner renames ``out`` into place and records the rest. The work
itself is done by the library functions ``cleanpipe flag``, ``clean`` and ``retrain`` call:
:func:`cleanpipe.flag.out_of_fold`, :func:`cleanpipe.flag.flag_dataset`,
:func:`cleanpipe.clean.clean_table` and :func:`cleanpipe.train.retrain_table`, which take either
kind of label (decided by the preflight, :attr:`StageContext.multi_label`). A multi-label flag stage
also saves the probabilities, as ``--save-pred-probs`` does, for ``clean``'s relabel. With
``[oof] backend = "dask"`` on a Parquet dataset (or with a ``[flag] pred_probs`` column) the flag
stage is :func:`cleanpipe.partitions.flag_partitions` on the cluster, as ``cleanpipe flag --backend
dask``, and the clean stage :func:`cleanpipe.partitions.clean_partitions`, as ``cleanpipe clean FLAGS
--engine dask``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..boosters import resolve_device, resolve_models
from ..clean import clean_table
from ..errors import InputError
from ..flag import dataset_source, flag_dataset, load_pred_probs, out_of_fold
from ..flagsfile import clean_provenance, flag_estimate, jsonable
from ..io import AtomicOutputs, open_dataset, read_table, write_json, write_npy
from ..oof import check_folds, model_label, model_list
from ..settings import SCALE_SAMPLE_ROWS
from ..target import resolve_target

PRED_PROBS, OOF_INFO, AGAINST = "pred_probs.npy", "oof.json", "against.parquet"
FLAGS, CLEANED, SUMMARY, MODEL = "flags.parquet", "cleaned.parquet", "summary.json", "model"
FLAGS_DIR, CLEANED_DIR = "flags", "cleaned"  # partition by partition: folders of Parquet files


@dataclass
class StageContext:
    """What a stage reads.

    Attributes
    ----------
    pipeline : Pipeline
    data : pathlib.Path
        Local Parquet with the run's input rows (see :mod:`cleanpipe.pipeline.extract`).
    source : str
        The source, described without secrets.
    upstream : dict
        Stage name -> output folder of the stages before this one in this pipeline.
    multi_label : bool
        The label is a set of tags (decided by the preflight from the source's schema).
    progress : callable, optional
        ``progress(step, done, total, info)`` as folds and epochs finish (``info``: an epoch's
        metrics); the CLI draws it as progress bars.
    partial : pathlib.Path, optional
        A folder outside ``out`` that survives a failed attempt of the stage (same inputs and
        settings), for work a rerun resumes; set by the runner.
    spark : pyspark.sql.SparkSession, optional
        The session the stages run on with ``[oof] backend = "spark"``
        (:mod:`cleanpipe.pipeline.spark_stages`).
    """

    pipeline: object
    data: Path
    source: str
    upstream: dict = field(default_factory=dict)
    multi_label: bool = False
    progress: object = None
    partial: Path | None = None
    spark: object = None


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def run_oof(ctx: StageContext, out: Path) -> dict:
    """Out-of-fold probabilities of every row: ``pred_probs.npy`` (float32, one row per input row,
    classes in sorted order; multi-label: one column per tag, rows need not sum to 1) and
    ``oof.json`` (classes, features, settings, notes). The block ``cleanpipe flag`` runs when it
    is given no probabilities (:func:`cleanpipe.flag.out_of_fold`)."""

    p, c = ctx.pipeline, ctx.pipeline.columns
    _, src = dataset_source(ctx.data)
    target = resolve_target(src.schema, c.target, multi_label=ctx.multi_label, where=ctx.source)
    enc = target.encode(src.read(list(target.columns)))
    n_lab, k = int(enc.labelled.sum()), len(enc.classes)
    if target.multi_label and (n_lab == 0 or k < 2):
        raise InputError(f"label {', '.join(target.columns)} has {k} tag(s) on {n_lab} labelled "
                         "row(s); multi-label detection needs at least two tags")
    if n_lab == 0 or k < 2:
        raise InputError(f"label column '{c.label}' has {k} class(es) on {n_lab} labelled "
                         "row(s); label-error detection needs at least two classes")
    check_folds(p.oof.folds, n_lab, option="[oof] folds")
    device = resolve_device(p.oof.device)
    models = resolve_models(model_list(p.oof.model), device)  # the families fitted, as recorded
    probs, feature_names, notes = out_of_fold(
        src, target, enc, features=list(c.features or ()) or None, exclude=c.exclude, ids=c.ids,
        model=models, folds=p.oof.folds, seed=p.oof.seed, n_jobs=p.oof.n_jobs,
        progress=ctx.progress, device=device)
    write_npy(probs, out / PRED_PROBS)
    info = {"label": c.target, **({"multi_label": True} if target.multi_label else {}),
            "classes": [jsonable(v) for v in enc.classes.to_pylist()],
            "features": feature_names, "model": model_label(models), "device": device,
            "folds": p.oof.folds, "seed": p.oof.seed,
            "rows": src.n_rows, "labelled_rows": n_lab, "notes": notes}
    write_json(info, out / OOF_INFO)
    keep = ("rows", "labelled_rows", "model", "folds", "notes") + (
        ("multi_label",) if target.multi_label else ())
    summary = {key: info[key] for key in keep}
    summary["n_classes"] = k
    return {"rows_in": src.n_rows, "rows_out": src.n_rows, "summary": summary,
            "outputs": {"pred_probs": PRED_PROBS, "info": OOF_INFO}}


#: Summary keys of the flag stage recorded in the manifest (multi-label adds the per-tag ones).
_FLAG_KEEP = ("rows", "labelled_rows", "n_classes", "estimated_noise_rate", "estimated_issues", "flagged")
_FLAG_KEEP_MULTILABEL = _FLAG_KEEP + ("multi_label", "estimated_wrong_tags", "flagged_tags",
                                      "noise_rate_per_class", "missing_per_class", "spurious_per_class")


def run_flag(ctx: StageContext, out: Path) -> dict:
    """``flags.parquet`` (every input column plus the flag columns) and ``summary.json``.

    With an ``oof`` stage before it, its probabilities are used; otherwise the out-of-fold
    probabilities are computed here with the ``[oof]`` settings, as ``cleanpipe flag`` does.
    Multi-label data also gets ``pred_probs.npy`` (``--save-pred-probs``), which ``clean``'s
    relabel reads.
    """

    p, c = ctx.pipeline, ctx.pipeline.columns
    if p.partitioned:
        return _run_flag_partitions(ctx, out)
    oof_dir = ctx.upstream.get("oof")
    outputs_written = {"flags": FLAGS, "summary": SUMMARY}
    if ctx.multi_label:
        outputs_written["pred_probs"] = PRED_PROBS
    against = p.flag.against
    if against is not None:
        outputs_written["against"] = AGAINST
    with AtomicOutputs() as outputs:
        summary = flag_dataset(
            ctx.data, out / FLAGS, outputs=outputs, label=c.target, multi_label=ctx.multi_label,
            features=list(c.features) if c.features else None, exclude=c.exclude, ids=c.ids,
            model=p.oof.model, folds=p.oof.folds, seed=p.oof.seed, n_jobs=p.oof.n_jobs,
            pred_probs=str(oof_dir / PRED_PROBS) if oof_dir else p.flag.pred_probs,
            save_pred_probs=out / PRED_PROBS if ctx.multi_label else None,
            checks=p.checks if p.flag.runs_checks else None, against=against,
            against_out=out / AGAINST if against is not None else None,
            **p.flag.detector(multi_label=ctx.multi_label))
    summary["source"] = ctx.source
    if oof_dir:
        info = _read_json(oof_dir / OOF_INFO)
        summary["oof"] = {k: info.get(k) for k in ("model", "folds", "seed", "features", "notes")}
    write_json(summary, out / SUMMARY)
    keep = _FLAG_KEEP_MULTILABEL if ctx.multi_label else _FLAG_KEEP
    kept = {k: summary[k] for k in keep}
    if "issues" in summary:  # the checks' counts, without their settings and timings
        kept["issues"] = {k: v for k, v in summary["issues"].items() if k not in ("settings", "timings")}
    return {"rows_in": summary["rows"], "rows_out": summary["rows"], "summary": kept,
            "outputs": outputs_written}


#: Summary keys of a flag stage run partition by partition, recorded in the manifest.
_PARTITIONS_KEEP = ("partitions", "labelled_rows", "n_classes", "estimated_noise_rate",
                    "estimated_issues", "flagged", "written")


def _run_flag_partitions(ctx: StageContext, out: Path) -> dict:
    """``flags/`` (one flags file per input partition, ``_manifest.json``, ``_SUCCESS``) and
    ``summary.json``, written by the Dask workers (:func:`cleanpipe.partitions.flag_partitions`).

    The workers write into :attr:`StageContext.partial`, which outlives a failed attempt, so a
    rerun recomputes only the partitions that had not finished; the committed dataset is then
    moved into ``out``. The run directory must be on storage the workers share.
    """
    from ..partitions import connect, flag_partitions  # distributed: only on this path

    p, c = ctx.pipeline, ctx.pipeline.columns
    oof = None
    if p.flag.pred_probs is None:  # computed on the workers from the other columns
        from ..partitioned_oof import OofSettings
        oof = OofSettings(p.oof.model, p.oof.folds, p.oof.seed, SCALE_SAMPLE_ROWS,
                          ids=tuple(c.ids), features=tuple(c.features) if c.features else None,
                          exclude=tuple(c.exclude))
    engine = connect(p.oof.scheduler)
    try:
        summary = flag_partitions(_dataset_uri(p.source), str(ctx.partial), label=c.target,
                                  pred_probs=p.flag.pred_probs, method=p.flag.method,
                                  mixture=p.flag.mixture, noisy_threshold=p.flag.noisy_threshold,
                                  engine=engine, oof=oof, multi_label=ctx.multi_label)
    finally:
        engine.client.close()
    ctx.partial.rename(out / FLAGS_DIR)
    summary["source"] = ctx.source
    write_json(summary, out / SUMMARY)
    rows = summary["labelled_rows"]
    kept = {k: summary[k] for k in _PARTITIONS_KEEP}
    if "oof" in summary:
        kept["oof"] = {k: summary["oof"][k] for k in ("model", "folds", "sample_rows",
                                                      "training_rows", "predicted", "reused")}
    return {"rows_in": rows, "rows_out": rows, "summary": kept,
            "outputs": {"flags": FLAGS_DIR, "summary": SUMMARY}}


def _dataset_uri(src) -> str:
    """The ``[source]`` path as :mod:`cleanpipe.partitions` opens it on the workers: the S3
    settings of the section go into the URI's query, as pyarrow reads them there."""
    if not src.path.startswith("s3://"):
        return src.path
    query = {"endpoint_override": src.s3_endpoint, "region": src.s3_region,
             "anonymous": "true" if src.s3_anonymous else None}
    if src.s3_endpoint and src.s3_endpoint.startswith("http://"):
        query["scheme"] = "http"
    given = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return src.path + ("?" + given if given else "")


def run_clean(ctx: StageContext, out: Path) -> dict:
    """``cleaned.parquet``: the flags table with flagged rows dropped, down-weighted or relabelled,
    streamed batch by batch (each row is cleaned on its own), and ``summary.json``.

    Multi-label ``relabel`` adds and removes single tags using the flag stage's ``pred_probs.npy``
    (as ``cleanpipe clean`` uses flag's ``--save-pred-probs`` file); that table is cleaned whole,
    because the tags are encoded per table and a batch may lack some of the flag stage's classes.
    """

    p, s = ctx.pipeline, ctx.pipeline.clean
    if p.partitioned:
        return _run_clean_partitions(ctx, out)
    flag_dir = ctx.upstream.get("flag")
    flags_path = flag_dir / FLAGS if flag_dir else ctx.data
    flag_summary = _read_json(flag_dir / SUMMARY) if flag_dir else {}
    dataset = open_dataset(flags_path, what="flags table")
    counts = {"rows_in": 0, "rows_out": 0, "flagged": 0, "null_label": 0, "dropped": 0,
              "down_weighted": 0, "relabelled": 0}
    writer, settings, probs, probs_path = None, {}, None, None
    if ctx.multi_label and s.mode == "relabel":
        tables, probs, probs_path = _relabel_input(flag_dir, flags_path, flag_summary)
    else:
        # Bounded readahead keeps one row group decoded at a time (see ParquetSource.reader).
        batches = dataset.to_batches(batch_size=p.batch_rows, fragment_readahead=1, batch_readahead=1)
        tables = (pa.Table.from_batches([b]) for b in _non_empty(batches, dataset.schema))
    label = p.columns.target if ctx.multi_label else p.columns.label
    seen_sets = None  # duplicate sets that kept a row in an earlier batch
    try:
        for table in tables:
            result = clean_table(table, mode=s.mode, label=label, min_weight=s.min_weight,
                                 relabel_p_noisy=s.relabel_p_noisy, relabel_score=s.relabel_score,
                                 drop_flag_columns=s.drop_flag_columns, source="the flags table",
                                 pred_probs=probs, relabel_add=s.relabel_add,
                                 relabel_remove=s.relabel_remove, drop_duplicates=s.drop_duplicates,
                                 drop_outliers=s.drop_outliers, seen_sets=seen_sets)
            seen_sets = result.seen_sets
            for k, v in result.counts.items():
                counts[k] = counts.get(k, 0) + v  # multi-label relabel adds tags_added/_removed
            settings = result.settings
            if writer is None:
                writer = pq.ParquetWriter(out / CLEANED, result.table.schema, compression="zstd")
            writer.write_table(result.table)
        provenance = clean_provenance(source=ctx.source, settings=settings, counts=counts,
                                      flag_summary=flag_summary, pred_probs=probs_path)
        # Added at the end: the counts are known only once every batch is written.
        writer.add_key_value_metadata({"cleanpipe.clean": json.dumps(provenance)})
    finally:
        if writer is not None:
            writer.close()
    write_json(dict(counts, settings=settings), out / SUMMARY)
    return {"rows_in": counts["rows_in"], "rows_out": counts["rows_out"], "summary": counts,
            "outputs": {"cleaned": CLEANED, "summary": SUMMARY}}


#: Summary keys of a clean stage run partition by partition, recorded in the manifest.
_CLEAN_PARTITIONS_KEEP = ("partitions", "written")


def _run_clean_partitions(ctx: StageContext, out: Path) -> dict:
    """``cleaned/`` (one cleaned file per flags partition, ``_manifest.json``, ``_SUCCESS``) and
    ``summary.json``, written by the Dask workers from the flag stage's ``flags/``: the partitioned
    clean of ``cleanpipe clean FLAGS --engine dask`` (:func:`cleanpipe.partitions.clean_partitions`).

    As the partitioned flag stage: written into :attr:`StageContext.partial`, which outlives a failed
    attempt, so a rerun cleans only the partitions that had not finished, then moved into ``out``.
    """
    from ..partitions import clean_partitions, connect  # distributed: only on this path

    p, s = ctx.pipeline, ctx.pipeline.clean
    engine = connect(p.oof.scheduler)
    try:
        done = clean_partitions(str(ctx.upstream["flag"] / FLAGS_DIR), str(ctx.partial), mode=s.mode,
                                engine=engine, min_weight=s.min_weight,
                                label=p.columns.target if ctx.multi_label else p.columns.label,
                                relabel_p_noisy=s.relabel_p_noisy, relabel_score=s.relabel_score,
                                drop_flag_columns=s.drop_flag_columns)
    finally:
        engine.client.close()
    ctx.partial.rename(out / CLEANED_DIR)
    counts = done["counts"]
    write_json(dict(counts, source=ctx.source, settings=dict(done["settings"], mode=s.mode),
                    **{k: done[k] for k in _CLEAN_PARTITIONS_KEEP}), out / SUMMARY)
    return {"rows_in": counts["rows_in"], "rows_out": counts["rows_out"],
            "summary": dict(counts, **{k: done[k] for k in _CLEAN_PARTITIONS_KEEP}),
            "outputs": {"cleaned": CLEANED_DIR, "summary": SUMMARY}}


def _relabel_input(flag_dir, flags_path: Path, flag_summary: dict):
    """([the whole flags table], its out-of-fold probabilities, their file) for multi-label relabel."""

    path = flag_dir / PRED_PROBS if flag_dir else None
    if path is None or not path.is_file():  # the preflight refuses a pipeline starting at clean
        raise InputError("[clean] mode = \"relabel\" on multi-label data needs the flag stage's "
                         f"{PRED_PROBS}; add \"flag\" to stages or use mode = \"drop\" or \"weight\"")
    table = read_table(flags_path, what="flags table")
    probs = load_pred_probs(str(path), table.column, table.column_names,
                            flag_summary.get("classes") or [])
    return [table], probs, path


def _non_empty(batches, schema):
    """The batches, or one empty batch for an empty table (so the output still has a schema)."""
    seen = False
    for batch in batches:
        seen = True
        yield batch
    if not seen:
        yield pa.RecordBatch.from_pylist([], schema=schema)


def run_retrain(ctx: StageContext, out: Path) -> dict:
    """``model/`` (``model.pt``, ``model.json``, ``metrics.json``) trained on the cleaned table
    (or the flags table, or the input when the pipeline starts here)."""
    from ..train import retrain_table, save_model_dir  # torch: only when the retrain stage runs

    c, r = ctx.pipeline.columns, ctx.pipeline.retrain
    if "clean" in ctx.upstream:
        path = ctx.upstream["clean"] / CLEANED
    elif "flag" in ctx.upstream:
        path = ctx.upstream["flag"] / FLAGS
    else:
        path = ctx.data
    table = read_table(path)
    noise_matrix = classes = None
    # Multi-label: retrain_table takes the multi-label path for the list / 0/1 label (default loss
    # bce); the noise matrix and class prior of a multi-label flag stage are per tag, not for it.
    if r.loss in (None, "auto", "forward") and not ctx.multi_label:
        # auto (the default) reads the matrix to pick its loss and does without one; forward needs it
        noise_matrix, classes = _noise_matrix(ctx, table, required=r.loss == "forward")
    config = r.train_config()
    # auto reads the prior too: the noise rate it chooses by weighs each class's flips by it
    prior = (_class_prior(ctx, table) if (r.prior_reg > 0 or r.loss in (None, "auto"))
             and not ctx.multi_label else None)
    result = retrain_table(table, label=c.target if ctx.multi_label else c.label,
                           features=list(c.features) if c.features else None, exclude=c.exclude, ids=c.ids,
                           weight_col="sample_weight" if "sample_weight" in table.column_names else None,
                           loss=r.loss, loss_params=dict(r.loss_params), noise_matrix=noise_matrix,
                           noise_matrix_classes=classes, noisy_weight=r.noisy_weight, warmup=r.warmup,
                           class_prior=prior, config=config, source=ctx.source,
                           on_epoch=None if ctx.progress is None else (
                               lambda epoch, m: ctx.progress("retrain: epochs", epoch, config.epochs, m)))
    save_model_dir(out / MODEL, result.state_dict, result.spec, result.metrics)
    m = result.metrics
    scores = ("val_micro_f1", "val_macro_f1", "val_map") if ctx.multi_label else ("val_accuracy",)
    summary = {k: m.get(k) for k in ("labelled_rows", "train_rows", "val_rows", *scores, "epochs",
                                     "best_epoch", "device", "samples_per_second")}
    return {"rows_in": table.num_rows, "rows_out": table.num_rows, "summary": summary,
            "outputs": {"model": MODEL}}


def _flag_summaries(ctx: StageContext) -> list:
    return [ctx.upstream["flag"] / SUMMARY] if "flag" in ctx.upstream else []


def _class_prior(ctx: StageContext, table: pa.Table):
    """(prior, classes) the flag stage estimated, or None: retrain then uses the label frequencies."""
    if "flag" not in ctx.upstream:
        return None
    return flag_estimate("class_prior", table, summaries=_flag_summaries(ctx))


def _noise_matrix(ctx: StageContext, table: pa.Table, *, required: bool = True):
    """(noise matrix, classes) of the flag stage or of the cleaned table's metadata; (None, None)
    when there is none and it is not ``required``."""
    found = flag_estimate("noise_matrix", table, summaries=_flag_summaries(ctx))
    if found is not None:
        return found
    if not required:
        return None, None
    raise InputError("[retrain] loss = \"forward\" needs the noise matrix of a flag stage; add "
                     "\"flag\" to stages or pick another loss")


#: Stage name -> function, in data-flow order.
STAGE_FUNCTIONS = {"oof": run_oof, "flag": run_flag, "clean": run_clean, "retrain": run_retrain}
