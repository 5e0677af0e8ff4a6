"""``cleanpipe report``: one self-contained HTML page about a flags table."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..flagsfile import FLAG_COLUMNS
from ..io import cleanup_stale_temps, open_dataset
from ..report import read_summary, read_training, summary_path_for, write_report
from ..safety import guard_files
from ._group import cli
from .options import overwrite_option, quiet_option


@cli.command()
@click.argument("flags", type=click.Path(path_type=str))
@click.option("--summary", "summary_path", default=None, type=click.Path(path_type=str),
              help="Summary JSON of the flag run (default: the sidecar <flags stem>.summary.json).")
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Output HTML (default: ./<flags stem>.report.html).")
@click.option("--rows", "max_rows", default=50, show_default=True, type=click.IntRange(min=0),
              help="Most suspicious rows listed.")
@click.option("--columns", "max_columns", default=20, show_default=True, type=click.IntRange(min=0),
              help="Data columns shown in that list.")
@click.option("--training", "training_path", default=None, metavar="MODEL_DIR",
              type=click.Path(path_type=str),
              help="Model directory of `cleanpipe retrain` (or its metrics.json): adds a Training "
                   "section with the loss curves and the online noise model per epoch.")
@overwrite_option()
@quiet_option()
def report(flags, summary_path, out, max_rows, max_columns, training_path, overwrite, quiet):
    """Write an HTML report of a flags table made by `cleanpipe flag`.

    The page shows the loss mixture with its threshold, the estimated noise matrix, flagged
    rows and noise rate per class, label_score of kept vs flagged rows, the most suspicious
    rows, and the run's settings, versions and timings. For a multi-label flags table
    (cleanpipe flag --multi-label) the noise matrix gives way to the suspect missing and spurious
    tags per class, which the rows list shows too. With --training, it also shows the
    training run of a model: loss and validation accuracy per epoch and, for --noisy-weight
    online, the estimated noisy share per epoch. It is one file that loads nothing from the
    network and runs no script; open it in any browser.

    \b
    Examples:
      cleanpipe report data.flags.parquet
      cleanpipe report flags.parquet --summary flags.summary.json --out report.html
      cleanpipe report data.flags.parquet --training model/
    """
    stem = Path(flags.rstrip("/")).stem
    out_path = Path(out) if out else Path.cwd() / f"{stem}.report.html"
    summary_file = Path(summary_path) if summary_path else summary_path_for(flags.rstrip("/"))
    # The metrics file, not its directory: a report may be written into the model directory.
    training_file = ([Path(training_path) / "metrics.json" if Path(training_path).is_dir()
                      else training_path] if training_path else [])
    guard_files({"FLAGS": flags, "--summary": summary_file,
                 "--training": training_file[0] if training_file else None},
                {"--out": out_path}, overwrite=overwrite)
    # Checked before the summary so a mistyped FLAGS is not reported as a missing summary.
    if not Path(flags).exists():
        raise InputError(f"flags '{flags}' does not exist; pass the Parquet file cleanpipe flag wrote")
    # An unreadable FLAGS, or a table flag did not write, is named before its summary is sought.
    names = open_dataset(flags, what="FLAGS").schema.names
    missing = [c for c in FLAG_COLUMNS if c not in names]
    if missing:
        raise InputError(f"'{flags}' is not a flags table (it has no {missing[0]} column); run "
                         f"cleanpipe flag {flags} first and report the .flags.parquet it writes")
    summary = read_summary(summary_file)
    training = read_training(training_path) if training_path else None
    cleanup_stale_temps(out_path.parent)
    write_report(flags, out_path, summary=summary, max_rows=max_rows, max_columns=max_columns,
                 training=training)
    if not quiet:
        click.echo(f"wrote {out_path}")
