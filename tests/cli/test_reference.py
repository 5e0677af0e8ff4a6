"""The documentation and ``--help`` agree with the click definitions."""

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.cli.reference import markdown

REPO = Path(__file__).resolve().parents[2]


def test_the_cli_reference_is_generated_from_the_definitions():
    want = markdown(cli)
    got = (REPO / "docs" / "CLI.md").read_text()
    assert got == want, "docs/CLI.md is stale: run python -m cleanpipe.cli.reference > docs/CLI.md"


def test_every_option_of_every_command_is_in_the_reference():
    text = (REPO / "docs" / "CLI.md").read_text()
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        section = text.split(f"## `cleanpipe {name}`")[1].split("\n## ")[0]
        for param in cli.get_command(ctx, name).params:
            for opt in param.opts if isinstance(param, click.Option) else []:
                assert f"`{opt}" in section, (name, opt)


def _readme_rows(command: str):
    """(option, default cell) of each row of the README's table for ``command``."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## The `{command}` command")[1].split("\n## ")[0]
    for line in section.splitlines():
        m = re.match(r"\| `(--?[a-z0-9-]+)[^`]*` \| ([^|]*) \|", line)
        if m:
            yield m.group(1), m.group(2).strip().strip("`")


@pytest.mark.parametrize("command", ["flag"])
def test_the_readme_tables_name_real_options_with_their_real_defaults(command):
    cmd = cli.get_command(click.Context(cli), command)
    params = {opt: p for p in cmd.params for opt in getattr(p, "opts", [])}
    rows = list(_readme_rows(command))
    assert len(rows) > 5
    for opt, default in rows:
        assert opt in params, f"README lists {opt} but `cleanpipe {command}` has no such option"
        p = params[opt]
        if not default or default.startswith(("./", "all ")) or p.is_flag:
            continue  # no default, or one described in words
        if p.default is None:  # resolved from the data: --help's text says how
            assert default.split("`")[0] in str(p.show_default), (opt, p.show_default, default)
        else:
            assert str(p.default) == default, (opt, p.default, default)


def test_verbose_is_taken_before_or_after_the_command(tmp_path):
    from cleanpipe.cli._group import _STATE
    for args, level in ((["-v", "flag", "--help"], 1), (["flag", "-v", "--help"], 1),
                        (["flag", "-vv", "--help"], 2), (["report", "--verbose", "--help"], 1)):
        _STATE["verbose"] = 0
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
        assert _STATE["verbose"] == level, args


def test_the_lazy_command_list_matches_the_commands():
    from cleanpipe.cli._group import COMMANDS
    ctx = click.Context(cli)
    for name, (_, short) in COMMANDS.items():
        assert cli.get_command(ctx, name).get_short_help_str(limit=1000) == short, name


def test_help_imports_no_command_module_and_no_heavy_library():
    import subprocess
    import sys
    code = ("import sys; from cleanpipe.cli import main\n"
            "try:\n    sys.argv = ['cleanpipe', '--help']; main()\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('sklearn', 'torch', 'pandas', 'pyarrow', 'cleanpipe.cli.flag', "
            "'cleanpipe.flag') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
    assert "flag" in out and "Flag likely mislabeled rows" in out
