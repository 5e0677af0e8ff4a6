"""The command-line reference, written from the click definitions themselves.

``docs/CLI.md`` is this module's output (``python -m cleanpipe.cli.reference > docs/CLI.md``),
and a test keeps the two equal, so the reference can never disagree with ``--help``.
"""

from __future__ import annotations

import click

from ._group import cli


def _default(param: click.Parameter) -> str:
    if isinstance(param, click.Argument) or (getattr(param, "is_flag", False)
                                             and not getattr(param, "secondary_opts", None)):
        return ""
    value = param.default
    if value is None or value == () or callable(value):
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _names(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"`{param.human_readable_name}`"
    names = [*param.opts, *param.secondary_opts]
    metavar = "" if getattr(param, "is_flag", False) or getattr(param, "count", False) else \
        f" {param.make_metavar(click.Context(click.Command('x')))}"
    return ", ".join(f"`{n}{metavar if n.startswith('--') else ''}`" for n in names)


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _choices(param) -> str:
    if isinstance(param.type, click.Choice):
        return " (one of: " + ", ".join(f"`{c}`" for c in param.type.choices) + ")"
    return ""


def command_markdown(name: str, command: click.Command) -> str:
    """One command's section: its help, its arguments and every option with default and help."""
    lines = [f"## `cleanpipe {name}`", "", _cell(command.get_short_help_str(limit=300)), "",
             f"Examples and details: `cleanpipe {name} --help`.", ""]
    lines += ["| option | default | what it does |", "| --- | --- | --- |"]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        help_text = getattr(param, "help", None) or ("argument" if isinstance(param, click.Argument) else "")
        env = getattr(param, "envvar", None)
        extra = f" (env `{env}`)" if isinstance(env, str) else ""
        lines.append(f"| {_names(param)} | {_default(param)} | {_cell(help_text)}{_choices(param)}{extra} |")
    lines.append("| `-h`, `--help` | | show the command's help and exit |")
    return "\n".join(lines) + "\n"


def markdown(group: click.Group) -> str:
    """The whole reference: the group's own options, then every command in name order."""
    ctx = click.Context(group)
    parts = ["# Command-line reference", "",
             "Written from the command definitions by `python -m cleanpipe.cli.reference`; "
             "a test keeps this file equal to its output.", "",
             command_markdown("[global options]", group)
             .replace("## `cleanpipe [global options]`", "## Global options")
             .replace("`cleanpipe [global options] --help`", "`cleanpipe --help`")]
    for name in group.list_commands(ctx):
        parts.append(command_markdown(name, group.get_command(ctx, name)))
    return "\n".join(parts)


if __name__ == "__main__":
    click.echo(markdown(cli), nl=False)
