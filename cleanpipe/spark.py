"""Flag and clean Spark DataFrames where they are, partition by partition.

:func:`flag` runs the single-label detector as passes over the DataFrame's partitions
(:mod:`cleanpipe.detect.partitioned`): each pass is one Spark job whose tasks compute a small
*partial* from their partition's labels and probabilities (``mapInArrow``); the driver merges the
partials, in partition order, and plans the next pass; a last job scores every partition on its
own and appends the flag columns. Only the partials (a few KiB each) and the distinct labels reach
the driver, never the rows. The flags equal :func:`cleanpipe.flag_table`'s on the same rows in the
same order, whatever the partitioning.

:func:`clean` is row-wise: each Arrow batch goes through :func:`cleanpipe.clean.clean_table`.

Notes
-----
The probabilities are given (``pred_probs``: columns of the DataFrame, one per class in sorted
class order, or one array column) or, when omitted, fitted out of fold on the cluster from hashed
folds (:mod:`cleanpipe.spark_oof`). Each pass reads ``df`` again, so ``df`` must give the same
rows in the same partitions each time: :func:`flag` persists it (on disk) unless told not to.
Needs pyspark >= 3.3 (``mapInArrow``) and Java 17+: ``pip install 'cleanpipe[spark]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import CleanpipeError, InputError
from .settings import (DEFAULT_FOLDS, DEFAULT_MIXTURE, DEFAULT_MODEL, DEFAULT_SEED, MODES,
                       SCALE_SAMPLE_ROWS)

log = logging.getLogger(__name__)

_HINT = "pip install 'cleanpipe[spark]' (and a Java 17+ runtime)"
#: The columns of a pass's result: the partition, its partial (as bytes, no pickle:
#: :mod:`~cleanpipe.detect.partial_codec`) or its error.
_PARTIAL_DDL = "partition INT, partial BINARY, error STRING"
_PARTIAL_SCHEMA = pa.schema([("partition", pa.int32()), ("partial", pa.binary()), ("error", pa.string())])


def _pyspark_types():
    try:
        from pyspark.sql.pandas import types  # optional (cleanpipe[spark])
    except ImportError:
        raise InputError(f"cleanpipe.spark needs pyspark; {_HINT}") from None
    return types


def arrow_schema(df) -> pa.Schema:
    """The Arrow schema of a Spark DataFrame's rows, as ``mapInArrow`` hands them to Python."""
    types = _pyspark_types()
    try:
        return types.to_arrow_schema(df.schema, prefers_large_types=_large_types(df))
    except TypeError:  # pyspark < 4 has no prefers_large_types
        return types.to_arrow_schema(df.schema)


def _large_types(df) -> bool:
    conf = df.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false")
    return str(conf).lower() == "true"


def _spark_schema(schema: pa.Schema):
    return _pyspark_types().from_arrow_schema(schema)


@contextlib.contextmanager
def session(master: str | None = None):
    """The active SparkSession, or one started on ``master`` (default ``local[*]``) and stopped
    at the end of the block; a session that was already running is left running.

    Raises
    ------
    InputError
        pyspark missing, or Spark could not start (an unknown master, no Java runtime).
    """
    _pyspark_types()
    from pyspark.sql import SparkSession
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    master = master or "local[*]"
    # Local workers run on this machine: this interpreter, which has cleanpipe (pyspark's default,
    # `python3` on the PATH, may not). pyspark reads PYSPARK_PYTHON once, as the context starts.
    pin = master.startswith("local") and not os.environ.get("PYSPARK_PYTHON")
    if pin:
        os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        started = (SparkSession.builder.master(master).appName("cleanpipe")
                   .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    except Exception as exc:  # py4j / runtime errors of the JVM's start
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"Spark could not start on master {master!r} ({first}); "
                         f"check the master URL and {_HINT}") from None
    finally:
        if pin:
            del os.environ["PYSPARK_PYTHON"]
    try:
        yield started
    finally:
        started.stop()


# ---------------------------------------------------------------- the boundary


class _Plan:
    """What every task needs: the label, the probability columns, the classes (small; pickled
    into each task's closure)."""

    def __init__(self, label: str, prob_cols: tuple, array_col: str | None, classes: pa.Array | None,
                 label_type: pa.DataType, n_classes: int, target=None):
        self.label, self.prob_cols, self.array_col = label, prob_cols, array_col
        self.classes, self.label_type, self.n_classes = classes, label_type, n_classes
        self.target = target  # a multi-label Target, None for one class per row

    @property
    def columns(self) -> list:
        labels = list(self.target.columns) if self.target is not None else [self.label]
        return [*labels, *([self.array_col] if self.array_col else self.prob_cols)]

    def empty_source(self):
        """The source of a partition without rows."""
        return _empty_source(self.n_classes, self.target is not None)

    def arrays(self, table: pa.Table):
        """``(codes, labelled, probs)`` of one partition's rows (codes -1 where the label is null;
        for multi-label data the 0/1 tag matrix, 0 where the label is null)."""
        from .features import list_column_matrix

        if self.target is not None:
            from .target import encode_tags
            codes, labelled, _ = encode_tags(self.target, table.select(list(self.target.columns)),
                                             self.classes)
        else:
            codes, labelled = self._codes(table)
        if not table.num_rows:
            probs = np.zeros((0, self.n_classes))
        elif self.array_col:
            # As the in-memory flag reads a list column (features.list_column_matrix), so that
            # the engines agree bit for bit; a null row becomes NaN, refused by the core's check.
            probs = list_column_matrix(table.column(self.array_col), self.array_col).astype(np.float64)
            if probs.shape[1] != self.n_classes:
                raise InputError(f"pred_probs column '{self.array_col}' holds rows of "
                                 f"{probs.shape[1]} probabilities but {self.n_classes} are needed, "
                                 "one per class in sorted class order")
        else:
            probs = np.column_stack([np.asarray(table.column(c).to_numpy(zero_copy_only=False),
                                                dtype=np.float64) for c in self.prob_cols])
        return codes, labelled, probs

    def _codes(self, table: pa.Table):
        col = table.column(self.label)
        if self.classes is None:
            codes = col.to_numpy(zero_copy_only=False) if col.null_count == 0 else \
                np.asarray(pc.fill_null(col, -1)).astype(np.int64)
        else:
            values = col.cast(self.classes.type) if col.type != self.classes.type else col
            codes = np.asarray(pc.fill_null(pc.index_in(values, value_set=self.classes), -1))
        codes = np.asarray(codes, dtype=np.int64)
        return codes, ~np.asarray(col.is_null(), dtype=bool)


def _check_columns(schema: pa.Schema, label: str, pred_probs):
    """Resolve ``label`` and ``pred_probs`` on the DataFrame's schema; one-line errors."""
    from .features import columns_hint

    target = _check_label(schema, label)
    if isinstance(pred_probs, str):
        cols = [pred_probs]
    else:
        cols = list(pred_probs or ())
    if not cols:
        raise InputError("pred_probs names no column; pass the probability columns, one per class "
                         "in sorted class order, or one array column")
    for c in cols:
        if c not in schema.names:
            raise InputError(f"pred_probs column '{c}' not found in the DataFrame (columns: "
                             f"{columns_hint(schema.names)}); pass the probability columns")
    if len(cols) == 1:
        t = schema.field(cols[0]).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
                or not pa.types.is_floating(t.value_type):
            raise InputError(f"pred_probs column '{cols[0]}' has type {t}; pass one array<double> "
                             "column, or one numeric column per class")
        return target, (), cols[0]
    for c in cols:
        t = schema.field(c).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise InputError(f"pred_probs column '{c}' has type {t}; probabilities must be numbers")
    return target, tuple(cols), None


def _classes(df, label: str, label_type: pa.DataType, n_classes: int):
    """The sorted distinct labels (``None`` for integer labels, which are class indices), read with
    one small aggregation; checked against the number of probability columns."""
    from .features import encode_labels
    if pa.types.is_integer(label_type):
        return None
    # A few more than needed: enough to name the count in the usual mistakes, never the rows.
    cap = n_classes + 100
    rows = df.select(label).where(df[label].isNotNull()).distinct().limit(cap + 1).collect()
    values = pa.chunked_array([pa.array([r[0] for r in rows], type=label_type)])
    _, classes = encode_labels(values, label)
    if len(classes) != n_classes:
        more = "more than " if len(rows) > cap else ""
        raise InputError(f"pred_probs has {n_classes} columns but label '{label}' has "
                         f"{more}{min(len(classes), cap)} classes; pass one column per class, in "
                         "sorted class order")
    return classes


# ---------------------------------------------------------------- the passes


def _partition_index() -> int:
    from pyspark import TaskContext
    return TaskContext.get().partitionId()


def _partial_task(plan: _Plan, step):
    """The ``mapInArrow`` function of one pass: this partition's partial (as bytes), or its error."""
    from .detect import partial_codec, partitioned

    def run(batches):
        index = _partition_index()
        try:
            batches = list(batches)
            if batches:
                codes, labelled, probs = plan.arrays(pa.Table.from_batches(batches))
                source = lambda: (codes[labelled], probs[labelled])  # noqa: E731
            else:
                source = plan.empty_source()
            partial = partitioned.partition_partial(step, source)
            out = {"partition": [index], "partial": [partial_codec.dumps(partial)], "error": [None]}
        except CleanpipeError as exc:
            out = {"partition": [index], "partial": [None], "error": [str(exc)]}
        yield pa.RecordBatch.from_pydict(out, schema=_PARTIAL_SCHEMA)

    return run


def _empty_source(n_classes: int, tags: bool = False):
    labels = np.zeros((0, n_classes), np.uint8) if tags else np.zeros(0, np.int64)
    return lambda: (labels, np.zeros((0, n_classes)))


def raise_first_error(rows) -> None:
    """Raise the lowest-numbered partition's error among collected task rows, if any: the same
    message whichever partition order the executors finished in."""
    errors = sorted((r["partition"], r["error"]) for r in rows if r["error"] is not None)
    if errors:
        raise InputError(errors[0][1])


def _merged(selected, plan: _Plan, n_partitions: int):
    """``merged(step)`` for :func:`~cleanpipe.detect.partitioned.run_plan`: one Spark job per step."""
    from .detect import partial_codec, partitioned

    def merged(step):
        rows = selected.mapInArrow(_partial_task(plan, step), _PARTIAL_DDL).collect()
        raise_first_error(rows)
        got = {r["partition"]: partial_codec.loads(r["partial"]) for r in rows}
        # A partition with no rows may run no Python task: its partial is the empty one.
        empty = partitioned.partition_partial(step, plan.empty_source())
        return partitioned.merge_partials(step, [got.get(i, empty) for i in range(n_partitions)])

    return merged


def _score_task(plan: _Plan, est, out_schema: pa.Schema, n_kept: int):
    """The ``mapInArrow`` function of the last pass: every row's first ``n_kept`` columns (the
    DataFrame's own, not fitted probabilities) with its flag columns appended."""
    from .detect import partitioned
    from .flag import FlagColumns, TagFlagColumns, tag_flag_columns

    def run(batches):
        index = _partition_index()
        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        codes, labelled, probs = plan.arrays(table)
        det = partitioned.partition_result(est, lambda: (codes[labelled], probs[labelled]), None, index)
        if plan.target is not None:
            cols = TagFlagColumns(tag_flag_columns(codes, labelled, plan.classes, plan.classes.type,
                                                   probs > 0.5, det))
            yield from _with_columns(batches, cols, out_schema, n_kept)
            return
        n = len(codes)
        predicted = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        predicted[labelled] = det.predicted
        score, p_noisy = np.full(n, np.nan), np.full(n, np.nan)
        score[labelled], p_noisy[labelled] = det.label_score, det.p_noisy
        issue = np.zeros(n, bool)
        issue[labelled] = det.is_label_issue
        classes = plan.classes if plan.classes is not None else \
            pa.array(np.arange(plan.n_classes), type=plan.label_type)
        cols = FlagColumns(codes, classes, plan.label_type, predicted, score, p_noisy, issue)
        yield from _with_columns(batches, cols, out_schema, n_kept)

    return run


def _with_columns(batches, cols, out_schema: pa.Schema, n_kept: int):
    """The batches' first ``n_kept`` columns with the flag columns ``cols`` appended."""
    start = 0
    for batch in batches:
        stop = start + batch.num_rows
        extra = cols.arrays(start, stop)
        arrays = batch.columns[:n_kept] + [extra[f.name].cast(f.type) for f in list(out_schema)[n_kept:]]
        yield pa.RecordBatch.from_arrays(arrays, schema=out_schema)
        start = stop


def flag(df, *, label: str = "label", pred_probs=None, features=None, id_column: str | None = None,
         model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
         sample_rows: int = SCALE_SAMPLE_ROWS, method: str | None = None,
         mixture: str = DEFAULT_MIXTURE, noisy_threshold: float | None = None, persist: bool = True):
    """Flag the likely mislabeled rows of a Spark DataFrame, partition by partition.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The rows; read again by each pass (see the module's Notes).
    label : str, default="label"
        The label column: integer class indices, or strings / booleans matched to the
        probability columns in sorted order. Null labels are kept and not flagged. Multi-label:
        an ``array`` column of tags (or several 0/1 columns as ``"a,b,c"``); ``pred_probs``, if
        given, one probability per tag in sorted tag order (omitted: fitted out of fold with the
        multi-label fold models of the Dask path); the flags then hold the columns of
        :func:`cleanpipe.find_multilabel_issues` (``suspect_missing``, ``suspect_spurious``
        too), and the default method is ``"posterior"``.
    pred_probs : str or sequence of str, optional
        Out-of-fold probabilities: one column per class, in class order, or the name of one
        ``array<double>`` column. Omitted: they are fitted on the cluster from hashed folds
        (:mod:`cleanpipe.spark_oof`) with ``features``, ``id_column``, ``model``, ``folds``,
        ``seed`` and ``sample_rows``.
    features : sequence of str, optional
        Numeric feature columns (default: every numeric column but the label and the id).
    id_column : str, optional
        A column whose stable hash gives each row's fold (any partitioning then gives the same
        folds); default: the row's position in its partition, stable when ``df`` reads files.
    model : str, default="gbm,logreg"
        The model families, as for ``cleanpipe flag --model``.
    folds : int, default=5
    seed : int, default=0
        Draws the folds, the training sample and the models' ``random_state``.
    sample_rows : int, default=200_000
        About this many rows train each fold model (a Bernoulli sample of the other folds' rows,
        :func:`cleanpipe.hashed_folds.training_rate`); each fold model is fitted in its own Spark
        task.
    method, mixture, noisy_threshold
        The detector's settings, as for :func:`cleanpipe.find_label_issues` (multi-label:
        :func:`cleanpipe.find_multilabel_issues`); ``method`` None takes the kind's default.
    persist : bool, default=True
        Persist ``df`` on the executors' local disks (``DISK_ONLY``) for the jobs and the
        scoring: after a shuffle Spark does not promise the same rows in the same order twice,
        the folds of ``id_column=None`` follow the rows' positions, and the ``noise_rate``,
        ``per_class`` and ``both`` methods break ties by row position. ``False`` saves that
        storage when ``df`` reads files directly (its partitions are then stable); a ``df``
        already persisted is used as it is. With fitted probabilities, the label and
        probability columns alone are persisted too, on disk, for the passes (the models
        predict once for all of them, and once more, from the same persisted rows, for the
        scoring); :func:`flag_with_estimates` returns what it persisted, to release with its
        ``unpersist()`` once the flags are written.

        Memory: no cache is held in a JVM heap (``MEMORY_AND_DISK`` filled a local 2 GiB one
        at 2e6 rows x 30 features); a JVM task streams its partition in Arrow batches. A Python
        task holds its partition's label and probabilities (the passes) or its rows (the
        scoring), so the partition size bounds a Python worker's memory; the driver holds the
        training sample (``sample_rows``) and the merged partials, whatever the rows. The local
        disks hold ``df``'s rows and the label and probability columns once.

    Returns
    -------
    pyspark.sql.DataFrame
        ``df``'s columns and rows, in its partitions, with ``given_label``, ``predicted_label``,
        ``label_score``, ``p_noisy`` and ``is_label_issue`` appended (lazy: nothing is computed
        until it is written or collected, beyond the passes that learnt the estimates).

    Raises
    ------
    InputError
        A missing label, probability, feature or id column, a label that is not a class,
        probabilities that are not a distribution (named by the first partition that holds one),
        an unknown method or model, too few rows for the folds.

    Examples
    --------
    >>> flags = cleanpipe.spark.flag(df, label="label", pred_probs=["p0", "p1", "p2"])  # doctest: +SKIP
    >>> flags = cleanpipe.spark.flag(df, label="label", id_column="id", model="logreg")  # doctest: +SKIP
    >>> flags.where("is_label_issue").write.parquet("s3://bucket/flags/")  # doctest: +SKIP
    """
    return flag_with_estimates(df, label=label, pred_probs=pred_probs, features=features,
                               id_column=id_column, model=model, folds=folds, seed=seed,
                               sample_rows=sample_rows, method=method, mixture=mixture,
                               noisy_threshold=noisy_threshold, persist=persist).frame


@dataclass(frozen=True)
class SparkFlags:
    """What :func:`flag_with_estimates` returns.

    Attributes
    ----------
    frame : pyspark.sql.DataFrame
        As :func:`flag` returns it.
    estimates : cleanpipe.detect.partitioned.Estimates
        What the passes learnt about the whole table (noise rate, confident joint).
    classes : list
        The classes, in the probabilities' column order.
    oof : dict or None
        The out-of-fold fit's record (rows per fold, sampling rate, sample size), when fitted.
    persisted : tuple
        The DataFrames :func:`flag_with_estimates` persisted (released by :meth:`unpersist`).
    """

    frame: object
    estimates: object
    classes: list
    oof: dict | None = None
    persisted: tuple = ()

    def unpersist(self) -> None:
        """Release what the passes persisted, once :attr:`frame` is written."""
        for df in self.persisted:
            df.unpersist()


def flag_with_estimates(df, *, label: str = "label", pred_probs=None, features=None,
                        id_column: str | None = None, model=DEFAULT_MODEL, folds: int = DEFAULT_FOLDS,
                        seed: int = DEFAULT_SEED, sample_rows: int = SCALE_SAMPLE_ROWS,
                        method: str | None = None, mixture: str = DEFAULT_MIXTURE,
                        noisy_threshold: float | None = None, persist: bool = True) -> SparkFlags:
    """:func:`flag`, also returning the estimates and the out-of-fold record (for summaries)."""
    from .detect import partitioned
    from .flag import detector_options

    schema = arrow_schema(df)
    tags = _check_label(schema, label).multi_label
    method, noisy_threshold = detector_options(tags, method, mixture, noisy_threshold)
    clash = [c for c in _flag_names(tags) if c in schema.names]
    if clash:
        raise InputError(f"the DataFrame already has the flag column '{clash[0]}'; flag the original "
                         "rows, not a flags table")
    oof = None
    if pred_probs is None:
        target = _check_label(schema, label)
        fit = _check_oof(schema, target.columns, features=features, id_column=id_column, model=model,
                         folds=folds, seed=seed, sample_rows=sample_rows)
    else:
        target, prob_cols, array_col = _check_columns(schema, label, pred_probs)
    label_type = target.label_type
    persisted = []
    if persist and not df.is_cached:
        df = df.persist(_storage())
        persisted.append(df)
    n_kept = len(schema)
    passes = None  # what the detection passes read, when not df's label and probability columns
    if pred_probs is None:
        from . import spark_oof
        classes = (_tags(df, target) if tags else spark_oof.distinct_labels(df, label, label_type))
        df, oof = spark_oof.out_of_fold(df, label=label, classes=classes, model=model, folds=folds,
                                        seed=seed, sample_rows=sample_rows,
                                        target=target if tags else None, **fit)
        if persist:
            # The passes' columns, predicted once; the scoring predicts again from the same
            # persisted rows (the same batches and models: the same probabilities, in this order).
            labels = list(target.columns) if tags else [label]
            passes = df.select(*labels, spark_oof.OOF_COLUMN).persist(_storage())
            persisted.append(passes)
        prob_cols, array_col, n_classes = (), spark_oof.OOF_COLUMN, len(classes)
    else:
        if array_col:
            first = df.select(array_col).where(df[array_col].isNotNull()).limit(1).collect()
            n_classes = len(first[0][0]) if first else 0
        else:
            n_classes = len(prob_cols)
        if n_classes < 2:
            raise InputError(f"pred_probs has {n_classes} columns; pass one per class, at least two")
        classes = _tags(df, target, n_classes) if tags else _classes(df, label, label_type, n_classes)
    plan = _Plan(label, prob_cols, array_col, classes, label_type, n_classes, target if tags else None)
    selected = passes if passes is not None else df.select(*plan.columns)
    n_partitions = selected.rdd.getNumPartitions()
    log.info("flagging %d partitions of a Spark DataFrame", n_partitions)
    if tags:
        from .detect.partitioned_multilabel import multilabel_detection_plan
        detection = multilabel_detection_plan(n_classes, method=method, mixture=mixture,
                                              noisy_threshold=noisy_threshold)
    else:
        detection = partitioned.detection_plan(n_classes, method=method, mixture=mixture,
                                               noisy_threshold=noisy_threshold)
    est = partitioned.run_plan(detection, _merged(selected, plan, n_partitions))
    out_schema = schema
    for f in (_tag_fields(classes.type) if tags else _flag_fields(label_type)):
        out_schema = out_schema.append(f)
    frame = df.mapInArrow(_score_task(plan, est, out_schema, n_kept), _spark_schema(out_schema))
    names = classes.to_pylist() if classes is not None else list(range(n_classes))
    return SparkFlags(frame, est, names, oof, tuple(persisted))


def _storage():
    """Where :func:`flag` persists: on the executors' local disks, streamed batch by batch.

    ``MEMORY_AND_DISK`` built each partition's cached batches in the heap before spilling, and
    the cache of every partition stayed there: a local 2 GiB JVM died of ``OutOfMemoryError`` at
    2e6 rows x 30 features (benchmarks/RESULTS.md, issue 21). On disk, a task holds one batch
    of its partition at a time, whatever the table's size."""
    from pyspark import StorageLevel
    return StorageLevel.DISK_ONLY


def _check_label(schema: pa.Schema, label: str):
    """The label's :class:`~cleanpipe.target.Target` (one class per row, or multi-label)."""
    from .target import resolve_target
    return resolve_target(schema, label, where="the DataFrame")


def _flag_names(tags: bool) -> tuple:
    from .flagsfile import FLAG_COLUMNS, SUSPECT_COLUMNS
    return FLAG_COLUMNS + SUSPECT_COLUMNS if tags else FLAG_COLUMNS


def _tags(df, target, n_classes: int | None = None) -> pa.Array:
    """The tags of a multi-label label in class order (one small aggregation), checked against
    the number of probability columns (``n_classes``; None when they are fitted): a list
    column's sorted distinct tags, or the 0/1 columns."""
    from .spark_oof import MAX_CLASSES
    from pyspark.sql import functions as F

    from .features import _decoded
    if target.form == "columns":
        classes = pa.array(list(target.columns), type=pa.string())
    else:
        cap = (n_classes if n_classes is not None else MAX_CLASSES) + 100
        name = target.columns[0]
        rows = (df.select(F.explode(df[name]).alias("tag")).where("tag IS NOT NULL").distinct()
                .limit(cap + 1).collect())
        values = _decoded(pa.chunked_array([pa.array([r[0] for r in rows],
                                                     type=target.label_type.value_type)]))
        classes = pc.unique(values.combine_chunks())
        classes = classes.take(pc.array_sort_indices(classes))
        if n_classes is None:
            if len(rows) > MAX_CLASSES:
                raise InputError(f"{target.described} has more than {MAX_CLASSES} distinct tags; "
                                 "a tag is a class, not an identifier (pass another label=)")
            if len(classes) < 1:
                raise InputError(f"{target.described} holds no tag; label-error detection needs "
                                 "tags")
            return classes
        if len(classes) != n_classes:
            more = "more than " if len(rows) > cap else ""
            raise InputError(f"pred_probs has {n_classes} columns but {target.described} has "
                             f"{more}{min(len(classes), cap)} tags; pass one column per tag, in "
                             "sorted tag order")
    if n_classes is not None and len(classes) != n_classes:
        raise InputError(f"pred_probs has {n_classes} columns but {target.described} are "
                         f"{len(classes)}; pass one column per tag, in the label columns' order")
    return classes


def _tag_fields(value_type: pa.DataType) -> list:
    """The multi-label flag columns' fields (as :func:`cleanpipe.flag.tag_flag_columns` types them)."""
    tags = pa.list_(value_type)
    return [pa.field("given_label", tags), pa.field("predicted_label", tags),
            pa.field("label_score", pa.float64()), pa.field("p_noisy", pa.float64()),
            pa.field("is_label_issue", pa.bool_()), pa.field("suspect_missing", tags),
            pa.field("suspect_spurious", tags)]


def _check_oof(schema: pa.Schema, labels, *, features, id_column, model, folds, seed,
               sample_rows) -> dict:
    """The out-of-fold settings, checked on the schema before any job; returns the feature and
    id columns for :func:`cleanpipe.spark_oof.out_of_fold`. ``labels``: the column(s) holding the
    label (:attr:`cleanpipe.target.Target.columns`), never features."""
    from .features import columns_hint
    from .oof import make_model, model_list
    from .settings import MIN_FOLDS, check_seed
    from .spark_oof import OOF_COLUMN, feature_columns

    if OOF_COLUMN in schema.names:
        raise InputError(f"the DataFrame already has a column '{OOF_COLUMN}'; pass "
                         f"pred_probs='{OOF_COLUMN}' to flag with it, or rename it to fit new ones")
    if id_column is not None and id_column not in schema.names:
        raise InputError(f"id column '{id_column}' not found in the DataFrame (columns: "
                         f"{columns_hint(schema.names)}); fix id_column=")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < MIN_FOLDS:
        raise InputError(f"folds {folds!r} is out of range; pass an integer of at least {MIN_FOLDS}")
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 1:
        raise InputError(f"sample_rows {sample_rows!r} is out of range; pass a positive integer")
    check_seed(seed, option="seed")
    for m in model_list(model):  # an unknown family fails here, not after the first jobs
        make_model(m)
    cols = feature_columns(schema, label=labels, features=features, id_column=id_column)
    return {"features": cols, "id_column": id_column}


def _flag_fields(label_type: pa.DataType) -> list:
    return [pa.field("given_label", label_type), pa.field("predicted_label", label_type),
            pa.field("label_score", pa.float64()), pa.field("p_noisy", pa.float64()),
            pa.field("is_label_issue", pa.bool_())]


# ---------------------------------------------------------------- clean


def clean(flags, *, mode: str = MODES[0], label: str | None = None, min_weight: float | None = None,
          relabel_p_noisy: float | None = None, relabel_score: float | None = None,
          drop_flag_columns: bool = False):
    """Drop, down-weight or relabel the flagged rows of a Spark flags DataFrame (from :func:`flag`).

    Each Arrow batch goes through :func:`cleanpipe.clean.clean_table` with the same settings: the
    rules are per row, so the result equals ``clean_table`` on the whole table.

    Parameters
    ----------
    flags : pyspark.sql.DataFrame
        Output of :func:`flag` (multi-label flags: ``mode`` "drop" or "weight").
    mode, label, min_weight, relabel_p_noisy, relabel_score, drop_flag_columns
        As for :func:`cleanpipe.clean.clean_table` (``None``: its default).

    Returns
    -------
    pyspark.sql.DataFrame

    Raises
    ------
    InputError
        Not a flags table, an unknown mode, a bad setting, a missing label column; checked on the
        schema before any job runs.
    """
    from .clean import clean_table

    schema = arrow_schema(flags)
    options = {"mode": mode, "label": label, "drop_flag_columns": drop_flag_columns, "source": "the DataFrame"}
    options.update({k: v for k, v in (("min_weight", min_weight), ("relabel_p_noisy", relabel_p_noisy),
                                      ("relabel_score", relabel_score)) if v is not None})
    # The settings and the schema are checked here, once: on no rows, the output's schema.
    out_schema = clean_table(schema.empty_table(), **options).table.schema.remove_metadata()

    def run(batches):
        for batch in batches:
            out = clean_table(pa.Table.from_batches([batch]), **options).table
            for b in out.cast(out_schema).to_batches():
                yield b

    return flags.mapInArrow(run, _spark_schema(out_schema))
