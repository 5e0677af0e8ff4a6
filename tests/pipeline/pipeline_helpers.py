"""Helpers shared by the pipeline tests (a module of its own: test files import it by name)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

#: Small settings for tests: the shipped files keep their defaults, the tests override these.
FAST = ("--set", "oof.folds=3", "--set", "retrain.epochs=3", "--set", "retrain.patience=0")


def run_cli(*args, **kwargs):
    """Invoke ``cleanpipe`` in-process; returns click's Result."""
    from cleanpipe.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def only_run_dir(runs: Path, pipeline: str) -> Path:
    """The single run directory of ``pipeline`` (through the ``latest`` link)."""
    link = runs / pipeline / "latest"
    assert link.is_symlink()
    return link.resolve()
