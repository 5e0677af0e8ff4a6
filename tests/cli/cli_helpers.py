"""What the CLI tests share: invoking ``cleanpipe`` in-process and reading a one-line user error."""

from __future__ import annotations

from click.testing import CliRunner

from cleanpipe.cli import cli

#: retrain settings that train a tiny network in a second or two on CPU
FAST_TRAIN = ["--epochs", "4", "--batch-size", "32", "--lr", "0.01", "--hidden", "16", "--device", "cpu",
              "--threads", "1", "-q"]


def run(*args):
    """``cleanpipe ARGS...`` through click's runner (paths and numbers may be passed as objects)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(res) -> str:
    """The single ``error: ...`` line of a run that must have exited 2 with nothing else printed."""
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]
