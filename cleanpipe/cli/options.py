"""Options that several commands take, declared once; click types built from :mod:`cleanpipe.settings`.

A setting's default and range come from its declaration there, so ``--help`` shows the same
default and range that a pipeline file is checked against.
"""

from __future__ import annotations

import functools

import click

from ..formats import FORMATS, TableFormat
from ..settings import DEVICES, SEED, Setting


def csv_option(value):
    """Split a comma-separated option value; ``None`` stays ``None``."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def click_type(setting: Setting) -> click.ParamType:
    """The click type of a declared setting: ``Choice``, ``IntRange`` or ``FloatRange``."""
    if setting.choices is not None:
        return click.Choice(list(setting.choices))
    if any(a is not None for a in setting.also):  # e.g. -1 for every core: not a range click shows
        return click.INT
    rng = click.IntRange if setting.kind is int else click.FloatRange
    return rng(setting.lo, setting.hi, min_open=setting.lo_open, max_open=setting.hi_open)


def setting_option(flag: str, setting: Setting, *, help: str | None = None, **kwargs):
    """An option whose default, type and range are those of ``setting`` (shown in ``--help``)."""
    return click.option(flag, default=setting.default, show_default=setting.default is not None,
                        type=click_type(setting), help=help, **kwargs)


def label_option(help: str, default: str | None = None):
    return click.option("--label", default=default, show_default=default is not None, help=help)


def multi_label_option(help: str):
    return click.option("--multi-label", is_flag=True, help=help)


features_option = click.option("--features", default=None,
                               help="Comma-separated feature columns (default: all others).")
exclude_option = click.option("--exclude", default=None, help="Comma-separated columns that are not features.")


def ids_option(help: str = "Comma-separated id columns (kept, not features)."):
    return click.option("--id", "ids", default=None, help=help)


def seed_option(help: str | None = None):
    return setting_option("--seed", SEED, help=help)


def device_option(help: str | None = None):
    return click.option("--device", default=DEVICES[0], show_default=True, type=click.Choice(list(DEVICES)),
                        help=help)


def overwrite_option(help_text: str = "Replace existing output files that cleanpipe did not write "
                                        "(its own earlier outputs are always replaced)."):
    """``--overwrite``: the one switch that lets an output replace a file cleanpipe did not write."""
    return click.option("--overwrite", is_flag=True, help=help_text)


def input_format_options(f):
    """``--format``, ``--delimiter``, ``--no-header``: how DATA is read (by default, from its
    first bytes, else its name); passed to the command as ``fmt``, a :class:`TableFormat`."""
    f = click.option("--no-header", "no_header", is_flag=True,
                     help="CSV: the first line is data; columns are named f0, f1, ...")(f)
    f = click.option("--delimiter", default=None, metavar="CHAR",
                     help="CSV field delimiter (default: tab for .tsv, else comma).")(f)
    f = click.option("--format", "data_format", default=None, type=click.Choice(FORMATS),
                     help="Format of DATA (default: from its first bytes, else its name; - reads "
                          "standard input, CSV unless told).")(f)

    @functools.wraps(f)
    def wrapper(*args, data_format, delimiter, no_header, **kwargs):
        return f(*args, fmt=TableFormat(data_format, delimiter=delimiter, header=not no_header), **kwargs)
    return wrapper


def json_option(help: str):
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = "Print nothing on success."):
    return click.option("-q", "--quiet", is_flag=True, help=help)
