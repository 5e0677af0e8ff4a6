"""The ``cleanpipe`` command line: parse options, call the API, print results. Nothing else.

One module per command; each registers itself on :data:`cli` (defined in ``_group``, which
imports a command's module only when that command is used); options that several commands share
are in ``options``.
"""

from __future__ import annotations

from ._group import cli


def main() -> None:
    cli.main(prog_name="cleanpipe")
