"""Options that several commands take, declared once; click types built from :mod:`cleanpipe.settings`.

A setting's default and range come from its declaration there, so ``--help`` shows the same
default and range that a pipeline file is checked against.
"""

from __future__ import annotations

import functools

import click

from ..formats import FORMATS, TableFormat
from ..settings import CHECKS, DEVICES, SEED, CheckSettings, Setting, option_name


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


def setting_option(flag: str, setting: Setting, *names, help: str | None = None, **kwargs):
    """An option whose default, type and range are those of ``setting`` (shown in ``--help``);
    ``names`` may give its parameter name when it differs from the flag's."""
    kwargs.setdefault("show_default", setting.default is not None)
    return click.option(flag, *names, default=setting.default, type=click_type(setting), help=help,
                        **kwargs)


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


#: The options of the data checks: setting (in :data:`cleanpipe.settings.CHECKS`) -> (flag, help).
CHECK_OPTIONS = {
    "near_radius": ("--near-radius", "Distance within which rows are near duplicates, in standard "
                    "deviations of the features."),
    "near_fraction": ("--near-fraction", "The default near-duplicate radius as a share of the median "
                      "nearest-neighbour distance."),
    "outlier_z": ("--outlier-z", "A row is an outlier when its neighbour-distance score is this "
                  "many robust standard deviations above the table's median."),
    "clip": ("--clip", "Standardised feature values are clipped at +/- this before distances are "
             "measured, so one rare value does not make a row an outlier on its own (1e9: no clip)."),
    "knn_weight": ("--knn-weight", "Also apply the label rule to the out-of-fold probabilities mixed "
                   "with this share of the neighbours' labels: knn_is_label_issue (0: off)."),
    "duplicate_noise": ("--duplicate-noise", "The label rule reads the out-of-fold probabilities "
                        "updated by the labels of each row's duplicates, each taken as wrong this "
                        "often (0: not used)."),
    "k": ("--k-neighbors", "Neighbours per row for the outlier score and the neighbours' label "
          "agreement."),
    "null_heavy": ("--null-heavy", "A row or feature column with more than this share of nulls "
                   "is null-heavy."),
    "imbalance": ("--imbalance", "A class with fewer rows than this share of the mean class size "
                  "is under-represented."),
    "neighbors": ("--neighbor-index", "exact, approx (faiss: pip install cleanpipe[issues]) or auto "
                  "(approximate on large tables when faiss is installed)."),
}


def check_options(f):
    """``--checks``, ``--against`` and the checks' settings (:data:`CHECK_OPTIONS`); passed to the
    command as ``checks`` (a :class:`~cleanpipe.settings.CheckSettings`, or None when the checks
    are off) and ``against`` (a path or None). ``--against`` turns the checks on; a check setting
    given on the command line without them is an error rather than silently ignored."""
    for key in reversed(list(CHECKS)):
        # a setting added to CHECKS without a spelling here still gets an option
        flag, help_text = CHECK_OPTIONS.get(key, (option_name(key), f"Data checks: {CHECKS[key].want}."))
        calibrated = {"show_default": "calibrated: --near-fraction of the median distance from a row "
                                      "to its nearest other row"} if key == "near_radius" else {}
        f = setting_option(flag, CHECKS[key], key, help=help_text, **calibrated)(f)
    f = click.option("--against", default=None, type=click.Path(path_type=str),
                     help="A second table with the same feature columns (e.g. the test set): "
                          "also flag the rows of DATA that duplicate one of its rows (leakage); "
                          "implies --checks.")(f)
    f = click.option("--checks", "run_checks", is_flag=True,
                     help="Also run the data checks in the same pass: exact and near duplicates "
                          "(and duplicates whose labels disagree), outliers, the neighbours' label "
                          "agreement, class imbalance, null-heavy rows and columns, constant and "
                          "id-like columns; adds their columns and an issues object to the "
                          "summary.")(f)

    @functools.wraps(f)
    def wrapper(*args, run_checks, against, **kwargs):
        values = {key: kwargs.pop(key) for key in CHECKS}
        ctx = click.get_current_context()
        if not (run_checks or against):
            given = [CHECK_OPTIONS.get(k, (option_name(k),))[0] for k in CHECKS
                     if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE]
            if given:
                raise click.UsageError(f"{given[0]} is a setting of the data checks; add --checks "
                                       "to run them", ctx)
            return f(*args, checks=None, against=None, **kwargs)
        return f(*args, checks=CheckSettings(**values), against=against, **kwargs)
    return wrapper
