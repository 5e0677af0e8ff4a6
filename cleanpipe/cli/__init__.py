"""The ``cleanpipe`` command line: parse options, call the API, print results. Nothing else.

One module per command; each registers itself on :data:`cli` (defined in ``_group``); options that
several commands share are in ``options``.
"""

from __future__ import annotations

import click

from . import clean, flag, report, retrain, run  # noqa: F401  (each registers its command on cli)
from ._group import cli


def main() -> None:
    cli.main(prog_name="cleanpipe")


def _environment_variables(group: click.Group) -> None:
    """Make every option settable as ``CLEANPIPE_<OPTION>`` (``--n-jobs`` -> ``CLEANPIPE_N_JOBS``)."""
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar is None and param.name not in ("help", "version"):
                long = max(param.opts, key=len).lstrip("-")  # "--json" even when the name is as_json
                param.envvar = f"CLEANPIPE_{long.upper().replace('-', '_')}"
                param.show_envvar = True


_environment_variables(cli)
