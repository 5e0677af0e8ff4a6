"""The data checks inside the flag stage (``cleanpipe flag --checks``): their inputs and columns.

The checks themselves are pure functions over arrays in :mod:`cleanpipe.checks`; this module is
the edge between them and the flag stage. It reads the feature columns once for both the checks
and the cross-validated model, opens and checks the second table of ``--against`` (the same
feature columns, of the same kinds) before any slow work, and turns a
:class:`~cleanpipe.checks.CheckResult` into output columns appended to the flags table in the
same batches as the flag columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import InputError
from .checks import CheckResult, feature_matrices, run_checks
from .features import Features, _kind, columns_hint, table_to_features
from .formats import STDIN, TableFormat
from .flagsfile import FLAG_METADATA, flag_provenance
from .io import open_dataset, write_parquet
from .settings import CheckSettings


@dataclass(frozen=True)
class CheckColumns:
    """Per-row check results (numpy vectors of one length), sliceable like the flag columns."""

    columns: dict

    def arrays(self, start: int = 0, stop: int | None = None, *, rows=None) -> dict:
        """The columns for rows ``start..stop`` (or the indices ``rows``) as Arrow arrays."""
        sl = slice(start, stop) if rows is None else np.asarray(rows, dtype=np.int64)
        # NaN (no labelled duplicate, an unlabelled row) becomes null, as in the flag columns
        return {name: pa.array(np.asarray(v)[sl], from_pandas=True) for name, v in self.columns.items()}

    def fields(self) -> list:
        return [pa.field(name, pa.from_numpy_dtype(np.asarray(v).dtype))
                for name, v in self.columns.items()]


@dataclass(frozen=True)
class Appended:
    """Two column sets side by side (the flag columns, then the check columns)."""

    first: object
    second: object

    def arrays(self, start: int = 0, stop: int | None = None, *, rows=None) -> dict:
        return {**self.first.arrays(start, stop, rows=rows), **self.second.arrays(start, stop, rows=rows)}

    def fields(self) -> list:
        return self.first.fields() + self.second.fields()


@dataclass(frozen=True)
class CheckInputs:
    """What the checks read from DATA (and ``--against``), resolved before any slow work.

    Attributes
    ----------
    settings : CheckSettings
    table : pyarrow.Table
        DATA's feature columns, for the table-level checks.
    columns : list of str
        Those columns' names (an entirely null one included, which the matrix leaves out).
    features : Features
        Their matrix, the one the cross-validated model is fitted on too.
    against : pyarrow.Table or None
        The second table's feature columns.
    against_name : str or None
        Where it came from (the ``--against`` path).
    """

    settings: CheckSettings
    table: pa.Table
    columns: list
    features: Features
    against: pa.Table | None = None
    against_name: str | None = None


def read_against(path, columns: list, schema: pa.Schema, *, fmt: TableFormat = TableFormat()) -> pa.Table:
    """The feature ``columns`` of the table at ``path``, checked against DATA's ``schema``.

    The second table is read in the format its bytes or name tell (CSV delimiter and header as
    for DATA); it must hold every feature column of DATA with a type of the same kind (numbers,
    categories, times or vectors), since its rows are compared with DATA's in one feature space.

    Raises
    ------
    InputError
        The path is missing or unreadable, a feature column is missing, or one has another kind.
    """
    if os.fspath(path) == STDIN:
        raise InputError("--against - is not supported; pass the second table as a file")
    dataset = open_dataset(path, what="--against", fmt=TableFormat(None, delimiter=fmt.delimiter,
                                                                   header=fmt.header))
    names = dataset.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"--against '{path}' lacks the feature column(s) {columns_hint(missing, 5)} "
                         f"of DATA (its columns: {columns_hint(names)}); pass a table with DATA's "
                         "feature columns, or choose the shared ones with --features")
    table = dataset.to_table(columns=list(columns))
    for c in columns:
        mine, theirs = schema.field(c).type, table.schema.field(c).type
        if mine == theirs:
            continue
        # The checks encode both tables as one, which needs one type per column: a cast that
        # keeps the values (int -> float, a dictionary -> its values) is fine, any other is not.
        try:
            cast = table.column(c).cast(mine)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            cast = None
        if cast is None or _kind(mine) != _kind(theirs) and not pa.types.is_null(theirs):
            raise InputError(f"--against '{path}' column '{c}' has type {theirs} but DATA's has "
                             f"{mine}; cast one of them, or leave the column out with --exclude {c}")
        table = table.set_column(table.schema.get_field_index(c), pa.field(c, mine), cast)
    return table


def check_inputs(settings: CheckSettings, table: pa.Table, columns: list, *, against=None,
                 fmt: TableFormat = TableFormat()) -> CheckInputs:
    """Check the settings and build the :class:`CheckInputs` of DATA's feature ``table``."""
    if not isinstance(settings, CheckSettings):
        raise InputError(f"checks must be a CheckSettings, not {type(settings).__name__}")
    settings.check()
    other = None
    if against is not None:
        other = read_against(against, columns, table.schema, fmt=fmt)
    return CheckInputs(settings, table, list(columns), table_to_features(table, columns), other,
                       None if against is None else os.fspath(against))


def run_flag_checks(inputs: CheckInputs, labels, pred_probs, *, seed: int) -> CheckResult:
    """Run the checks on DATA's features (and the ``--against`` table's).

    ``labels`` are class codes (-1 for null) or None (multi-label data: the label checks are
    skipped); ``pred_probs`` the out-of-fold probabilities of every row (an array in memory), or
    None.
    """
    if inputs.against is None:
        X, X_against = inputs.features.X, None
    else:  # encoded together, so a category has one code in both
        X, X_against = feature_matrices(inputs.table, inputs.columns, inputs.against)
    return run_checks(X, labels, pred_probs=pred_probs, table=inputs.table,
                      columns=inputs.columns, against=X_against, settings=inputs.settings,
                      seed=seed)


def write_against(checked: CheckResult, summary: dict, path, outputs) -> None:
    """The ``--against`` table's rows and their check columns (``row``: the position in that table)
    to the Parquet file ``path``, staged by ``outputs``."""
    n = len(next(iter(checked.against_columns.values()))) if checked.against_columns else 0
    table = pa.table({"row": np.arange(n, dtype=np.int64),
                      **CheckColumns(checked.against_columns).arrays()})
    # The flag run's provenance marks the file as cleanpipe's (a rerun may replace it)
    write_parquet(table, outputs.stage(path), metadata={FLAG_METADATA: flag_provenance(summary)})
