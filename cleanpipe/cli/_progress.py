"""Progress bars on stderr: shown on a terminal, silent when piped or with --quiet."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


@contextlib.contextmanager
def progress_bar(enabled: bool = True):
    """Yield ``update(stage, done, total, info="")``; draws rich progress bars on a TTY stderr only.

    Each bar shows the steps done, the time elapsed and the time left (estimated from the pace so
    far), and ``info``: what the step just measured, such as an epoch's losses.
    """
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    console = Console(stderr=True)
    bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=console, transient=True)
    tasks = {}

    def update(stage: str, done: int, total: int, info: str | dict = "") -> None:
        if isinstance(info, dict):  # an epoch's metrics
            info = epoch_info(info)
        # The info goes last and is what gets cut on a narrow terminal: rich would otherwise
        # squeeze every column, counts and times included, to make it fit.
        room = console.width - len(stage) - 20 - 32  # bar 20; counts, times, spaces 32
        info = info if len(info) <= room else info[:max(room - 1, 0)] + "\u2026" * (room > 0)
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, info=info)
        bars.update(tasks[stage], completed=done, total=total, info=info)

    with bars:
        yield update


def epoch_info(metrics: dict) -> str:
    """An epoch's losses (and validation accuracy, when measured) for a progress bar."""
    parts = [f"{name} {metrics[key]:.4f}" for key, name in
             (("train_loss", "loss"), ("val_loss", "val")) if metrics.get(key) is not None]
    if metrics.get("val_accuracy") is not None:
        parts.append(f"acc {metrics['val_accuracy']:.3f}")
    return ", ".join(parts)
