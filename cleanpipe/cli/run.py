"""``cleanpipe run``: run a pipeline file (oof -> flag -> clean -> retrain) as one resumable job."""

from __future__ import annotations

import json

import click

from ..errors import CleanpipeError
from ..pipeline import STAGES, load_pipeline, run_pipeline
from ..settings import ENGINES
from ..sources import redact
from ._group import cli
from ._progress import progress_bar
from .options import json_option, overwrite_option, quiet_option


@cli.command("run")
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(path_type=str))
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(path_type=str),
              help="Root of the run directories: <runs-dir>/<pipeline>/<run-id>/.")
@click.option("--run-id", default=None,
              help="Run directory name (default: src-<hash of where the source is>, so reruns resume).")
@click.option("--force", is_flag=True, help="Recompute every selected stage, even current ones.")
@click.option("--from", "from_stage", default=None, type=click.Choice(STAGES),
              help="Start at this stage (recomputed with the ones after it; earlier ones are reused).")
@click.option("--until", "until_stage", default=None, type=click.Choice(STAGES),
              help="Stop after this stage.")
@click.option("--backend", "--engine", "backend", default=None, type=click.Choice(ENGINES),
              help="Where the pipeline runs (overrides [oof] backend): the fold fits on loky or "
                   "dask, or every stage on spark.")
@click.option("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 "
              "(with --engine spark: the Spark master, e.g. local[4]).")
# envvar=[]: opting in to importing code must be typed on the command line, never inherited
# from the environment (the CLI otherwise maps every option to CLEANPIPE_<OPTION>).
@click.option("--allow-custom-model", is_flag=True, envvar=[],
              help="Allow [oof] model = \"package.module:Class\" (imports and runs that code).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a pipeline key, repeatable (e.g. --set oof.folds=3).")
@click.option("--check", "check_only", is_flag=True,
              help="Validate the file, source, columns and sink, then stop.")
@overwrite_option("Let a [sink] target replace an existing file or table that cleanpipe did not "
                  "write (its own earlier outputs are always replaced).")
@json_option("Print the outcome as one JSON object.")
@quiet_option()
def run(pipeline_file, runs_dir, run_id, force, from_stage, until_stage, backend, scheduler,
        allow_custom_model, overrides, check_only, overwrite, as_json, quiet):
    """Run a pipeline file: the stages oof -> flag -> clean -> retrain, or a contiguous part.

    Every run writes RUNS-DIR/<pipeline>/<run-id>/ with one folder per stage and a
    manifest.json. A rerun reuses every stage whose input and settings are unchanged
    and resumes at the first one that changed (or failed). See docs/PIPELINES.md.

    \b
    Examples:
      cleanpipe run pipelines/digits_parquet.toml
      cleanpipe run pipelines/digits_duckdb.toml --until flag --set oof.folds=3
      cleanpipe run pipelines/digits_postgres.toml --backend dask --scheduler tcp://127.0.0.1:8786
      cleanpipe run pipelines/digits_parquet.toml --from clean --set clean.mode=weight
      cleanpipe run nightly.toml --engine spark --scheduler 'local[4]'   # oof, flag, clean on Spark
    """
    extra = list(overrides)
    if backend:
        extra.append(f"oof.backend={json.dumps(backend)}")
    if scheduler:
        extra.append(f"oof.scheduler={json.dumps(scheduler)}")
    pipeline = load_pipeline(pipeline_file, overrides=extra, allow_custom_model=allow_custom_model)
    show = not (quiet or as_json)

    def on_event(stage, action, record):
        if not show:
            return
        if action == "running":
            click.echo(f"{stage}: running", err=True)
        elif action == "done":
            click.echo(f"{stage}: done in {record['seconds']:.1f} s ({_rows(record)})", err=True)
        elif action == "reused":
            click.echo(f"{stage}: reused (input and settings unchanged)", err=True)

    try:
        with progress_bar(show) as update:  # folds and epochs, with time left, inside each stage
            result = run_pipeline(pipeline, runs_dir=runs_dir, run_id=run_id, force=force,
                                  from_stage=from_stage, until_stage=until_stage, check_only=check_only,
                                  on_event=on_event, overwrite=overwrite, progress=update)
    except Exception as exc:
        # A driver message could quote a connection string: never let a secret reach the terminal.
        text = str(exc)
        if redact(text) == text:
            raise
        if isinstance(exc, CleanpipeError):
            raise type(exc)(redact(text)) from None
        raise RuntimeError(f"{type(exc).__name__}: {redact(text)}") from None
    if check_only:
        if as_json:
            click.echo(json.dumps({"pipeline": pipeline.name, "ok": True, "run_dir": str(result.run_dir)}))
        elif not quiet:
            click.echo(f"{pipeline_file}: ok; stages {' -> '.join(pipeline.stages)}; "
                       f"run directory {result.run_dir}")
        return
    m = result.manifest
    if as_json:
        click.echo(json.dumps({"pipeline": pipeline.name, "run_id": m["run_id"], "run_dir": str(result.run_dir),
                               "status": m["status"], "actions": result.actions, "input": m["input"],
                               "stages": m["stages"]}, ensure_ascii=False))
    elif not quiet:
        click.echo(format_run(pipeline.name, result))


def _rows(record: dict) -> str:
    a, b = record.get("rows_in"), record.get("rows_out")
    if a is None:
        return "no rows"
    return f"{a} rows" if a == b else f"{a} -> {b} rows"


def format_run(name: str, result) -> str:
    """The terminal summary: one line per stage, then where the outputs are."""
    m = result.manifest
    lines = [f"{name}: run {m['run_id']} {m['status']} ({m['input'].get('rows')} input rows from "
             f"{m['input'].get('source')})"]
    for stage, action in result.actions.items():
        rec = m["stages"].get(stage, {})
        detail = f"{rec.get('seconds', 0):7.1f} s  {_rows(rec)}" if action == "ran" else ""
        lines.append(f"  {stage:<8} {action:<8} {detail}".rstrip())
    outs = [o for s in result.actions if result.actions[s] != "skipped"
            for o in m["stages"].get(s, {}).get("outputs", {}).values()]
    lines.append(f"run directory {result.run_dir}" + (f" ({', '.join(outs)})" if outs else ""))
    for stage, rec in m["stages"].items():
        if rec.get("published") and result.actions.get(stage) != "skipped":
            name = {"flag": "flags", "clean": "cleaned"}.get(stage, stage)
            lines.append(f"{name} table written to {rec['published']['target']}")
    return "\n".join(lines)
