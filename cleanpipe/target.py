"""What the label is, decided once from the schema and the options and passed down as a value.

A label is one of three forms: ``"class"`` (one column, one class per row: int, string, bool or
dictionary), ``"list"`` (one list column, a set of tags per row) or ``"columns"`` (several 0/1
columns, one per tag). The last two are multi-label. :func:`resolve_target` names the form and the
columns; :meth:`Target.encode` turns the table's label column(s) into codes (or a 0/1 tag matrix)
and the class list that the output columns decode back into the label's own type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .features import columns_hint, encode_label_columns, encode_label_lists, encode_labels, is_list_type
from .flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS

#: The forms of a label.
FORMS = ("class", "list", "columns")


def split_label(label) -> list:
    """The column names of ``label``: a name, a list of names, or ``"a,b,c"`` when that is not
    itself a column (the caller checks)."""
    if isinstance(label, str):
        return [label]
    return list(dict.fromkeys(label))


def is_multilabel(schema: pa.Schema, label, multi_label: bool = False) -> bool:
    """Whether ``label`` on ``schema`` is multi-label: ``multi_label`` says so, ``label`` names a
    list column, or it names several columns (a list, or ``"a,b,c"`` that is not itself a column).
    Only the schema is read."""
    if multi_label:
        return True
    if not isinstance(label, str):
        return len(split_label(label)) > 1
    if label in schema.names:
        return is_list_type(schema.field(label).type)
    return "," in label


def is_multilabel_flags(table) -> bool:
    """Whether a flags table (a table or its schema) is the output of ``flag`` on multi-label data:
    it holds the suspect columns or its ``given_label`` is a list column."""
    schema = getattr(table, "schema", table)
    if all(c in schema.names for c in SUSPECT_COLUMNS):
        return True
    return "given_label" in schema.names and is_list_type(schema.field("given_label").type)


def resolve_label_columns(schema: pa.Schema, label, *, where: str = "DATA") -> tuple:
    """The multi-label label column(s) of ``schema`` and their form, ``"list"`` or ``"columns"``.

    ``label`` is a column name, a comma-separated list of names, or a list of names.

    Raises
    ------
    InputError
        A missing column, or a single column that is not a list of tags.
    """
    names = schema.names
    cols = split_label(label)
    if len(cols) == 1 and cols[0] not in names and "," in cols[0]:
        cols = [c.strip() for c in cols[0].split(",") if c.strip()]
    missing = [c for c in cols if c not in names]
    if missing:
        raise InputError(f"label column '{missing[0]}' not found in {where} (columns: "
                         f"{columns_hint(names)}); pass --label with a list column or 0/1 columns")
    if not cols:
        raise InputError("no label column given; pass --label with a list column or 0/1 columns")
    if len(cols) == 1:
        t = schema.field(cols[0]).type
        if not is_list_type(t):
            raise InputError(f"label column '{cols[0]}' has type {t}, not a list of tags; for "
                             "multi-label data pass a list column, or several 0/1 columns as "
                             "--label a,b,c (or drop --multi-label)")
        return cols, "list"
    lists = [c for c in cols if is_list_type(schema.field(c).type)]
    if lists:
        raise InputError(f"label column '{lists[0]}' is a list column; pass it alone as --label "
                         f"{lists[0]}, or pass only 0/1 columns")
    return cols, "columns"


@dataclass(frozen=True)
class Encoded:
    """A label encoded for the detectors.

    Attributes
    ----------
    values : ndarray
        ``"class"``: int codes of shape (n_rows,), -1 where the label is null; multi-label: the
        0/1 tag matrix of shape (n_rows, n_classes).
    labelled : ndarray of bool, shape (n_rows,)
    classes : pyarrow.Array
        The classes in code order.
    value_type : pyarrow.DataType
        The type the output columns decode the classes into (lists of it for multi-label).
    """

    values: np.ndarray
    labelled: np.ndarray
    classes: pa.Array
    value_type: pa.DataType


@dataclass(frozen=True)
class Target:
    """The label of a table: its ``form`` (one of :data:`FORMS`), ``columns`` and the schema type
    of its (first) column, ``label_type``."""

    form: str
    columns: tuple
    label_type: pa.DataType

    @property
    def multi_label(self) -> bool:
        return self.form != "class"

    @property
    def output_columns(self) -> tuple:
        """The columns ``flag`` adds for this label."""
        return FLAG_COLUMNS + SUSPECT_COLUMNS if self.multi_label else FLAG_COLUMNS

    @property
    def setting(self):
        """The label as the settings record it: a column name, or the list of 0/1 columns."""
        return list(self.columns) if self.form == "columns" else self.columns[0]

    @property
    def described(self) -> str:
        """The label column(s) as messages name them."""
        if self.form == "columns":
            return f"label columns {', '.join(self.columns)}"
        return f"label column '{self.columns[0]}'"

    def encode(self, table: pa.Table) -> Encoded:
        """Encode the label column(s) of ``table`` (a table holding at least :attr:`columns`).

        A ``"class"`` label's classes are its sorted distinct values; a list column's the sorted
        union of its tags (an empty list = no tag, a null list = unlabelled); 0/1 columns' the
        column names in order.
        """
        if self.form == "class":
            codes, classes = encode_labels(table.column(self.columns[0]), self.columns[0])
            t = self.label_type
            return Encoded(codes, codes >= 0, classes, t.value_type if pa.types.is_dictionary(t) else t)
        if self.form == "list":
            Y, labelled, classes = encode_label_lists(table.column(self.columns[0]), self.columns[0])
            return Encoded(Y, labelled, classes, classes.type)
        Y, labelled, classes = encode_label_columns(table.select(list(self.columns)), list(self.columns))
        return Encoded(Y, labelled, classes, pa.string())


def resolve_target(schema: pa.Schema, label, *, multi_label: bool = False,
                   where: str = "DATA") -> Target:
    """Decide what ``label`` is on ``schema`` (see :func:`is_multilabel`) and check it exists.

    Raises
    ------
    InputError
        A missing label column, a multi-label label that is neither one list column nor several
        non-list columns.
    """
    if is_multilabel(schema, label, multi_label):
        cols, form = resolve_label_columns(schema, label, where=where)
        return Target(form, tuple(cols), schema.field(cols[0]).type)
    if label not in schema.names:
        raise InputError(f"label column '{label}' not found in {where} (columns: "
                         f"{columns_hint(schema.names)}); pass --label with one of them")
    return Target("class", (label,), schema.field(label).type)


def encode_tags(target: Target, table: pa.Table, classes: pa.Array) -> tuple:
    """A multi-label label of part of a table encoded against the whole table's ``classes``.

    A partition's own tags may be a subset of the classes: :meth:`Target.encode` finds them, and
    its columns are placed at their classes' positions. Returns ``(tags, labelled, value_type)``
    as :class:`Encoded` holds them.

    Raises
    ------
    InputError
        As :meth:`Target.encode`; a tag not among ``classes``.
    """
    enc = target.encode(table)
    if target.form == "columns":
        return enc.values, enc.labelled, enc.value_type
    local = enc.classes
    idx = pc.index_in(local, value_set=classes.cast(local.type))
    if idx.null_count:
        missing = local.filter(idx.is_null())[0].as_py()
        raise InputError(f"{target.described} holds the tag {missing!r}, which the classes of the "
                         "whole table do not; read the table again")
    tags = np.zeros((len(enc.values), len(classes)), dtype=np.uint8)
    tags[:, idx.to_numpy(zero_copy_only=False).astype(np.int64)] = enc.values
    return tags, enc.labelled, enc.value_type
