"""The multi-label side of :mod:`cleanpipe.partitions`: a tag label read, checked and flagged
partition by partition (``cleanpipe flag DATA --engine dask [--pred-probs COLUMN]`` on a
list-of-tags or 0/1-columns label), with the columns the one-machine ``flag`` writes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .features import _decoded, columns_hint


def partition_tags(src, table: pa.Table):
    """``(tags, labelled, value_type)`` of a multi-label partition (a
    :class:`~cleanpipe.partitions.PartitionSource` with a ``target``), over the dataset's classes."""
    from .target import encode_tags
    value_type = pa.string()  # 0/1 columns: the classes are their names
    if src.target.form == "list":
        value_type = _decoded(pc.list_flatten(table.column(src.label))).type
    return encode_tags(src.target, table, pa.array(list(src.classes), type=value_type))


def scan_tags(src):
    """:func:`cleanpipe.partitions._scan` of a multi-label partition: its tags' type, its distinct tags, its rows."""
    from .target import resolve_target
    where = f"DATA partition '{src.path}'"
    schema = src.schema()
    if src.probs is not None and src.probs not in schema.names:
        raise InputError(f"--pred-probs column '{src.probs}' not found in {where} (columns: "
                         f"{columns_hint(schema.names)}); pass --pred-probs with one of them")
    target = resolve_target(schema, src.target.setting, multi_label=True, where=where)
    if target.form != src.target.form:
        raise InputError(f"{src.target.described} is a {src.target.form} label in the first "
                         f"partition but a {target.form} label in {where}; give every partition "
                         "the same label type")
    enc = target.encode(src.read(list(target.columns)))
    return str(enc.value_type), enc.classes, len(enc.labelled)


def with_tag_flags(table: pa.Table, src, res) -> pa.Table:
    """A multi-label partition with the one-machine ``flag``'s columns appended
    (:func:`cleanpipe.flag.tag_flag_columns`)."""
    from .flag import tag_flag_columns
    from .partitions import _appended
    tags, labelled, value_type = src.tags(table)
    probs = src.probabilities(table)
    classes = pa.array(list(src.classes), type=value_type)
    return _appended(table, tag_flag_columns(tags, labelled, classes, value_type, probs > 0.5, res))


def tag_target(data: str, first: str, label, multi_label: bool):
    """The multi-label :class:`~cleanpipe.target.Target` of DATA (read off its first partition's
    schema), or None for one class per row. Its probabilities are a column of DATA
    (``--pred-probs``) or fitted out of fold on the workers
    (:mod:`cleanpipe.partitioned_oof`, with the multi-label families of
    :mod:`cleanpipe.hashed_folds_multilabel`)."""
    from .partitions import PartitionSource
    from .target import is_multilabel, resolve_target
    schema = PartitionSource(data, first, "", None).schema()
    if not is_multilabel(schema, label, multi_label):
        return None
    return resolve_target(schema, label, multi_label=True, where=f"DATA partition '{first}'")
