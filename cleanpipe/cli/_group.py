"""The ``cleanpipe`` click group: error mapping (exit 2 for user errors), logging, ``--version``."""

from __future__ import annotations

import importlib
import logging
import re
import sys
import traceback
import warnings

import click

from .._version import __version__
from ..errors import CleanpipeError, CleanpipeWarning

log = logging.getLogger("cleanpipe")
_STATE = {"verbose": 0}


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, CleanpipeWarning):
        _echo_err(f"warning: {message}")
    else:
        log.debug("%s: %s", category.__name__, message)


_VERBOSE = re.compile(r"-v+|--verbose")

#: Each command: the module of ``cleanpipe.cli`` that defines it, and its one-line help. A command's
#: module (and so scikit-learn, torch, ...) is imported only when that command runs, so
#: ``cleanpipe --help`` starts in a fraction of a second; a test keeps these lines equal to the
#: commands' own.
COMMANDS = {
    "clean": ("clean", "Clean a flags file written by cleanpipe flag."),
    "flag": ("flag", "Flag likely mislabeled rows of a table."),
    "predict": ("retrain", "Score a table with a model written by cleanpipe retrain."),
    "report": ("report", "Write an HTML report of a flags table made by `cleanpipe flag`."),
    "retrain": ("retrain", "Train a tabular MLP on a flags or cleaned table."),
    "run": ("run", "Run a pipeline file: the stages oof -> flag -> clean -> retrain, or a contiguous part."),
}


def _environment_variables(command: click.Command) -> None:
    """Make every option settable as ``CLEANPIPE_<OPTION>`` (``--n-jobs`` -> ``CLEANPIPE_N_JOBS``)."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None and param.name not in ("help", "version"):
            long = max(param.opts, key=len).lstrip("-")  # "--json" even when the name is as_json
            param.envvar = f"CLEANPIPE_{long.upper().replace('-', '_')}"
            param.show_envvar = True


class CleanpipeGroup(click.Group):
    """Maps project errors to exit 2 with one line, internal errors to exit 1; takes ``-v``
    before or after the command (``cleanpipe flag -v x.parquet`` as ``cleanpipe -v flag ...``);
    loads each command's module on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            # The module registers its commands on this group as it is imported.
            importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
            for loaded in self.commands.values():
                _environment_variables(loaded)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        # The one-line helps, without importing every command's module.
        rows = [(name, COMMANDS[name][1] if name in COMMANDS else self.commands[name].get_short_help_str())
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx, args):
        # Only up to a "--", after which every word is an argument.
        end = args.index("--") if "--" in args else len(args)
        verbose = [a for a in args[:end] if _VERBOSE.fullmatch(a)]
        rest = [a for a in args[:end] if not _VERBOSE.fullmatch(a)] + args[end:]
        return super().parse_args(ctx, verbose + rest)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("always", CleanpipeWarning)
            warnings.showwarning = _show_warning
            try:
                rv = super().main(args, prog_name or "cleanpipe", complete_var,
                                  standalone_mode=False, **extra)
            except click.exceptions.Abort:
                _echo_err("aborted")
                sys.exit(130)
            except click.UsageError as exc:
                hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
                _echo_err(f"error: {exc.format_message()}{hint}")
                sys.exit(2)
            except click.ClickException as exc:
                _echo_err(f"error: {exc.format_message()}")
                sys.exit(exc.exit_code)
            except CleanpipeError as exc:
                _echo_err(f"error: {exc}")
                sys.exit(2)
            except Exception as exc:  # noqa: BLE001 - the last line of defence
                # Here, not at the top: safety loads pyarrow, which `cleanpipe --help` must not
                # pay for; any command that got this far has loaded it already.
                from ..safety import environment_error
                user = environment_error(exc)  # a full disk, a permission, a corrupt page
                if user is not None:
                    if _STATE["verbose"]:
                        traceback.print_exc()
                    _echo_err(f"error: {user}")
                    sys.exit(2)
                if _STATE["verbose"]:
                    traceback.print_exc()
                _echo_err(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the "
                          "traceback and please report it)")
                sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=CleanpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cleanpipe")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) and debug details (-vv).")
def cli(verbose: int) -> None:
    """Find and fix label errors in tabular training data.

    \b
    Stages: flag (find likely mislabeled rows), then clean and retrain.
    Exit status: 0 ok, 1 internal error, 2 user error (bad input or option).
    """
    _STATE["verbose"] = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("cleanpipe").setLevel(level)
