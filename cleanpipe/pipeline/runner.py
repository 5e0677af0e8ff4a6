"""Run a pipeline: check everything, pin the input, then run or reuse each stage in order.

Resume rule: a stage is reused when the manifest records it ``done`` with the same key (its
upstream key or input fingerprint, its settings, the cleanpipe version) and its outputs exist;
otherwise it runs, and so does every stage after it (their keys chain on it). ``--force`` runs
every selected stage; ``--from STAGE`` runs STAGE and the stages after it, reusing the earlier
ones (which must be current); ``--until STAGE`` stops after STAGE.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CleanpipeError, ConfigError, InputError
from ..oof import joblib_backend
from ..settings import SCALE_SAMPLE_ROWS
from ..safety import guard_pipeline
from ..sources import redact
from ..sources._sql import error_line
from .config import STAGES, Pipeline
from .extract import extract, in_place
from .manifest import (is_current, load_manifest, now, peak_rss_mib, save_manifest, stage_key,
                       versions)
from .preflight import preflight
from .rules import check_loss
from .rundir import (RunLock, default_run_id, point_latest, remove_stale, run_directory, swap_in,
                     temp_dir)
from . import spark_stages
from .spark_stages import SPARK_STAGES
from .stages import STAGE_FUNCTIONS, StageContext

log = logging.getLogger(__name__)

#: Which output of which stage goes to which ``[sink]`` key.
PUBLISHED = {"flag": "flags", "clean": "cleaned"}


@dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`run_pipeline`.

    Attributes
    ----------
    run_dir : pathlib.Path
    manifest : dict
        The manifest as written.
    actions : dict
        Stage -> ``ran``, ``reused`` or ``skipped`` for this invocation.
    """

    run_dir: Path
    manifest: dict
    actions: dict = field(default_factory=dict)


def select_stages(stages, from_stage: str | None = None, until_stage: str | None = None) -> tuple:
    """The stages ``--from``/``--until`` select out of the pipeline's ``stages``.

    Raises
    ------
    ConfigError
        A stage that is not in the pipeline, or a pair that selects nothing.
    """
    for opt, stage in (("--from", from_stage), ("--until", until_stage)):
        if stage is not None and stage not in stages:
            raise ConfigError(f"{opt} {stage} is not a stage of this pipeline (stages: "
                              f"{', '.join(stages)}); pick one of those")
    i = stages.index(from_stage) if from_stage else 0
    j = stages.index(until_stage) if until_stage else len(stages) - 1
    if i > j:
        raise ConfigError(f"--from {from_stage} --until {until_stage} selects no stage: {from_stage} "
                          f"comes after {until_stage} in {' -> '.join(stages)}; swap them")
    return tuple(stages[i:j + 1])


def stage_settings(p: Pipeline, stage: str, multi_label: bool = False) -> dict:
    """The settings a stage's output depends on (not n_jobs or the joblib backend: they change
    nothing; Spark does: hashed folds and Parquet folders, so ``engine`` is recorded).

    Multi-label settings appear only for multi-label data, so single-label keys stay as they were.
    """
    settings = _stage_settings(p, stage, multi_label)
    if p.spark and stage != "retrain":  # absent otherwise, so the keys of other runs stay as they were
        settings.update(engine="spark", **({"sample_rows": SCALE_SAMPLE_ROWS}
                                           if stage in ("oof", "flag") else {}))
    return settings


def _stage_settings(p: Pipeline, stage: str, multi_label: bool) -> dict:
    c = p.columns
    cols = {"label": c.label, "features": c.features, "exclude": c.exclude, "ids": c.ids}
    clean = {k: v for k, v in vars(p.clean).items() if k not in ("relabel_add", "relabel_remove")}
    if multi_label:
        cols.update(label=c.target, multi_label=True)
        clean = vars(p.clean)
    model = {"model": p.oof.model, "folds": p.oof.folds, "seed": p.oof.seed}
    if stage == "oof":
        return dict(cols, **model)
    if stage == "flag":
        # single-label: the unset settings as their defaults, so keys match runs that spelled them out
        flag = ({k: getattr(p.flag, k) for k in ("method", "mixture", "noisy_threshold")}
                if multi_label else p.flag.detector())
        if p.flag.runs_checks:  # absent otherwise, so the keys of runs without checks stay as they were
            flag.update(checks=p.checks.to_dict(), against=_file_identity(p.flag.against))
        if p.flag.pred_probs is not None:  # no model fitted; partitioned flags are a folder, not a file
            return dict(cols, **flag, pred_probs=p.flag.pred_probs, partitioned=p.partitioned)
        if p.partitioned_oof:  # hashed folds and a bounded sample: not the one-machine folds
            return dict(cols, **flag, **model, partitioned=True, sample_rows=SCALE_SAMPLE_ROWS)
        return dict(cols, **flag, **({} if "oof" in p.stages else model))
    if stage == "clean":
        return dict(clean, label=cols["label"], **({"multi_label": True} if multi_label else {}))
    # threads stays in the key: torch's CPU kernels split sums and matrix products by thread count,
    # so the weights are only guaranteed bit-identical for one thread setting (docs/RELIABILITY.md).
    return dict(cols, **vars(p.retrain))


def _file_identity(path) -> dict | None:
    """A file's path, size and modification time: a changed ``[flag] against`` re-runs the flag stage."""
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return {"path": str(path)}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _needs_folds(p: Pipeline, selected) -> bool:
    return "oof" in selected or ("flag" in selected and "oof" not in p.stages)


def run_pipeline(p: Pipeline, *, runs_dir="runs", run_id: str | None = None, force: bool = False,
                 from_stage: str | None = None, until_stage: str | None = None,
                 check_only: bool = False, on_event=None, overwrite: bool = False,
                 progress=None) -> RunResult:
    """Run (or resume) pipeline ``p``.

    Parameters
    ----------
    p : Pipeline
        From :func:`~cleanpipe.pipeline.config.load_pipeline`.
    runs_dir : path-like, default="runs"
        Root of the run directories.
    run_id : str, optional
        Run directory name; default :func:`~cleanpipe.pipeline.rundir.default_run_id`.
    force : bool, default=False
        Recompute every selected stage.
    from_stage, until_stage : str, optional
        First and last stage to run.
    check_only : bool, default=False
        Validate and open the source and sink, then stop (nothing is written).
    on_event : callable, optional
        Called as ``on_event(stage, action, record)`` when a stage starts, is reused or ends.
    overwrite : bool, default=False
        Let a sink target replace an existing file or table that cleanpipe did not write.
    progress : callable, optional
        Passed to the stages as :attr:`StageContext.progress`.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        Anything found before work starts (see :func:`~cleanpipe.pipeline.preflight.preflight`),
        or ``--from`` on a run whose earlier stages are missing or stale.
    InputError
        Data problems found by a stage.
    """
    origin = str(p.file)
    selected = select_stages(p.stages, from_stage, until_stage)
    emit = on_event or (lambda *a: None)
    with preflight(p, origin) as ends:
        if "retrain" in selected or (check_only and "retrain" in p.stages):
            check_loss(p, origin, multi_label=ends.multi_label)  # the schema tells multi-label
        run_id = run_id or default_run_id(ends.source.identity())
        run_dir = run_directory(runs_dir, p.name, run_id)
        try:
            guard_pipeline(p, ends, run_dir, overwrite=overwrite)
        except InputError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if check_only:
            return RunResult(run_dir, {}, {})
        # Checked before the directory is created (a refused run leaves nothing behind) and again
        # under the lock (another run may have changed the manifest meanwhile).
        _check_earlier_done(p, selected, load_manifest(run_dir, p.name, run_id), run_dir)
        with contextlib.ExitStack() as stack:
            spark = stack.enter_context(_spark_session(p, origin)) if p.spark else None
            if _needs_folds(p, selected) and not p.spark:
                stack.enter_context(_backend(p, origin))  # an unreachable scheduler fails here
            run_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(RunLock(run_dir))
            remove_stale(run_dir)
            manifest = load_manifest(run_dir, p.name, run_id)
            _check_earlier_done(p, selected, manifest, run_dir)
            point_latest(run_dir)
            manifest.update(pipeline_file=origin, settings=p.to_dict(), versions=versions(),
                            status="running")
            manifest["history"] = (manifest.get("history") or [])[-19:] + [
                {"started": now(), "stages": list(selected), "force": force}]
            save_manifest(run_dir, manifest)
            try:
                actions = _run_stages(p, ends, manifest, run_dir, selected, force=force,
                                      from_stage=from_stage, emit=emit, progress=progress,
                                      spark=spark)
            except BaseException as exc:
                manifest["status"] = "failed"
                manifest["error"] = redact(error_line(exc))
                save_manifest(run_dir, manifest)
                raise
            done = all(manifest["stages"].get(s, {}).get("status") == "done" for s in p.stages)
            manifest["status"] = "done" if done else "partial"
            manifest.pop("error", None)
            save_manifest(run_dir, manifest)
    return RunResult(run_dir, manifest, actions)


def _check_earlier_done(p: Pipeline, selected, manifest: dict, run_dir: Path) -> None:
    """With ``--from``, the stages before the first selected one must have completed."""
    first = STAGES.index(selected[0])
    for stage in p.stages:
        if STAGES.index(stage) < first and manifest["stages"].get(stage, {}).get("status") != "done":
            raise ConfigError(f"--from {selected[0]}: stage {stage} has not completed in "
                              f"'{run_dir}'; run without --from first")


@contextlib.contextmanager
def _backend(p: Pipeline, origin: str):
    try:
        ctx = joblib_backend(p.oof.backend, p.oof.scheduler)
        ctx.__enter__()
    except InputError as exc:
        raise ConfigError(f"{origin}: [oof] scheduler: {exc}") from None
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)


@contextlib.contextmanager
def _spark_session(p: Pipeline, origin: str):
    """The Spark session of ``[oof] backend = "spark"``: the active one, or one started on
    ``[oof] scheduler`` (the master) for this run."""
    from ..spark import session
    try:
        ctx = session(p.oof.scheduler)
        spark = ctx.__enter__()
    except InputError as exc:
        raise ConfigError(f"{origin}: [oof] scheduler: {exc}") from None
    try:
        yield spark
    finally:
        ctx.__exit__(None, None, None)


def _run_stages(p, ends, manifest, run_dir: Path, selected, *, force, from_stage, emit,
                progress=None, spark=None) -> dict:
    # Dask's partitioned flag and Spark read the source where it is, on their workers.
    snap = (in_place(ends.source) if p.partitioned or p.spark else
            extract(ends.source, run_dir, manifest.get("input") or {}, batch_rows=p.batch_rows))
    # The stages read the pinned input only; a DuckDB file must not stay open read-only while the
    # sink writes to it.
    ends.source.close()
    manifest["input"] = {"source": ends.source.describe(), "kind": ends.source.kind,
                         "fingerprint": snap.fingerprint, "rows": snap.rows,
                         "data": (str(snap.path.relative_to(run_dir)) if snap.copied
                                  else str(snap.path or getattr(p.source, "path", None)
                                           or ends.source.describe()))}
    save_manifest(run_dir, manifest)
    ctx = StageContext(p, snap.path, ends.source.describe(), multi_label=ends.multi_label,
                       progress=progress, spark=spark)
    upstream_key, actions = snap.fingerprint, {}
    for stage in p.stages:
        key = stage_key(stage, upstream_key, stage_settings(p, stage, ctx.multi_label))
        record = manifest["stages"].get(stage)
        if stage not in selected:
            if STAGES.index(stage) > STAGES.index(selected[-1]):
                actions[stage] = "skipped"
                emit(stage, "skipped", record or {})
                continue
            if not is_current(record, key, run_dir):
                raise ConfigError(f"--from {from_stage}: stage {stage} is out of date (its input or "
                                  "settings changed since it ran); run without --from")
            actions[stage] = "reused"
            emit(stage, "reused", record)
        elif not force and not from_stage and is_current(record, key, run_dir):
            actions[stage] = "reused"
            _publish(stage, ends, manifest, run_dir, key, spark)
            emit(stage, "reused", record)
        else:
            _run_one(stage, ctx, ends, manifest, run_dir, key, upstream_key, emit)
            actions[stage] = "ran"
        ctx.upstream[stage] = run_dir / stage
        upstream_key = key
    return actions


def _run_one(stage, ctx, ends, manifest, run_dir: Path, key, upstream_key, emit) -> None:
    # Marked running first: if the process dies after the folder swap but before "done", the
    # stage is recomputed next time rather than trusted.
    record = {"status": "running", "key": key, "upstream": upstream_key, "started": now(),
              "settings": stage_settings(ctx.pipeline, stage, ctx.multi_label)}
    manifest["stages"][stage] = record
    save_manifest(run_dir, manifest)
    emit(stage, "running", record)
    t0 = time.perf_counter()
    ctx.partial = _partial_dir(run_dir, stage, key)
    tmp = temp_dir(run_dir, stage)
    try:
        result = (SPARK_STAGES if ctx.spark is not None else STAGE_FUNCTIONS)[stage](ctx, tmp)
        swap_in(tmp, run_dir / stage)
        record.update(rows_in=result["rows_in"], rows_out=result["rows_out"], summary=result["summary"],
                      outputs={k: f"{stage}/{v}" for k, v in result["outputs"].items()})
        _publish(stage, ends, manifest, run_dir, key, ctx.spark)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        record.update(status="failed", error=redact(error_line(exc)), finished=now())
        save_manifest(run_dir, manifest)
        emit(stage, "failed", record)
        if isinstance(exc, CleanpipeError):
            raise type(exc)(f"stage {stage}: {exc}") from None
        raise
    seconds = time.perf_counter() - t0
    record.update(status="done", finished=now(), seconds=round(seconds, 3),
                  rows_per_second=round(result["rows_in"] / seconds, 1) if seconds > 0 else None,
                  peak_rss_mib=peak_rss_mib())
    save_manifest(run_dir, manifest)
    emit(stage, "done", record)


def _partial_dir(run_dir: Path, stage: str, key: str) -> Path:
    """``<run>/<stage>.partial-<key>``: where a stage keeps work that a rerun after a failure
    resumes (the partitions already flagged). Named by the stage key, so changed inputs or
    settings start afresh; folders of other keys are removed."""
    path = run_dir / f"{stage}.partial-{key.rsplit(':', 1)[-1][:16]}"
    for old in run_dir.glob(f"{stage}.partial-*"):
        if old != path:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _publish(stage, ends, manifest, run_dir: Path, key, spark=None) -> None:
    """Write a stage's table to the sink unless this exact output is already there (on Spark: its
    Parquet folder to the Delta sink, by the executors, in one commit)."""
    target = ends.targets.get(stage)
    if target is None:
        return
    record = manifest["stages"][stage]
    where = ends.sink.describe(target)
    done = record.get("published") or {}
    if done.get("target") == where and done.get("key") == key:
        return
    path = run_dir / record["outputs"][PUBLISHED[stage]]
    log.info("writing %s to %s", path.name, where)
    t0 = time.perf_counter()
    rows = (spark_stages.publish(spark, path, target) if spark is not None
            else ends.sink.write(target, _parquet_reader(path)))
    record["published"] = {"target": where, "key": key, "rows": rows, "at": now(),
                           "seconds": round(time.perf_counter() - t0, 3)}
    save_manifest(run_dir, manifest)


def _parquet_reader(path: Path):
    """A record batch reader over a Parquet file, one batch at a time."""
    parquet = pq.ParquetFile(path)
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches())
