"""Out-of-fold probabilities of a Spark DataFrame, fitted on the cluster from hashed folds (issue 21).

Three Spark jobs and one fit, with the pure functions of :mod:`cleanpipe.hashed_folds`:

1. **counts**: every partition hashes its rows' ids (an id column, or each row's position in its
   partition, :func:`~cleanpipe.hashed_folds.position_ids`), takes their folds
   (:func:`~cleanpipe.hashed_folds.hashed_folds`) and returns the labelled rows per fold; the
   driver sets the Bernoulli rate (:func:`~cleanpipe.hashed_folds.training_rate`).
2. **sample**: every partition returns its share of the rows the fold models train on
   (:func:`~cleanpipe.hashed_folds.sample_partial`): about ``sample_rows * F / (F - 1)`` rows in
   all, whatever the table's size, as Arrow IPC bytes; the driver merges them
   (:func:`~cleanpipe.hashed_folds.merge_samples`, sorted by hash, so the sample and the fit do not
   depend on the partitioning).
3. **fit**, on the driver: :func:`~cleanpipe.hashed_folds.fit_fold_models`. The sample is bounded,
   so the driver's memory is too; fitting the F models in F Spark tasks would send that same sample
   to F executors and, on a cluster whose fold fits are short beside the passes over the table,
   saves little (see ``docs/SPARK.md``).
4. **predict** (lazy): a ``mapInArrow`` over the DataFrame appends each row's probabilities from
   the model that did not see its fold (:func:`~cleanpipe.hashed_folds.predict_out_of_fold`); the
   models reach the executors as one broadcast.

Features are numeric columns (integers, floats, booleans; nulls become NaN): a categorical column
would need one encoding agreed by every partition, which this path does not compute yet.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import CleanpipeError, InputError
from .spark import _partition_index, raise_first_error

log = logging.getLogger(__name__)

#: The column :func:`out_of_fold` appends: one ``array<double>`` of probabilities per row, classes
#: in sorted order.
OOF_COLUMN = "pred_probs"
#: Classes beyond which a label is refused (the distinct labels are read onto the driver).
MAX_CLASSES = 1000

_COUNT_SCHEMA = pa.schema([("partition", pa.int32()), ("counts", pa.list_(pa.int64())),
                           ("error", pa.string())])
_SAMPLE_SCHEMA = pa.schema([("partition", pa.int32()), ("rows", pa.binary()), ("error", pa.string())])


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def feature_columns(schema: pa.Schema, *, label: str, features=None, id_column: str | None = None,
                    exclude=()) -> tuple:
    """The feature columns: ``features`` as given (each checked to exist and be numeric), or every
    numeric column other than the label, the id and ``exclude``.

    Raises
    ------
    InputError
        A missing or non-numeric feature column, or no feature at all.
    """
    from .features import columns_hint

    if features is not None:
        cols = [features] if isinstance(features, str) else list(features)
        for c in cols:
            if c not in schema.names:
                raise InputError(f"feature column '{c}' not found in the DataFrame (columns: "
                                 f"{columns_hint(schema.names)}); fix features=")
            if c == label:
                raise InputError(f"features includes the label '{c}'; remove it")
            t = schema.field(c).type
            if not _numeric(t):
                raise InputError(f"feature column '{c}' has type {t}; out-of-fold on Spark fits "
                                 "numeric features only: encode it as numbers first, or leave it "
                                 "out of features=")
    else:
        skip = {label, id_column, *exclude}
        cols = [f.name for f in schema if f.name not in skip and _numeric(f.type)]
        others = [f.name for f in schema if f.name not in skip and not _numeric(f.type)]
        if others:
            log.info("out-of-fold on Spark: non-numeric columns left out of the features: %s",
                     ", ".join(others))
    if not cols:
        raise InputError("the DataFrame has no numeric feature column besides the label; pass "
                         "features= or give pred_probs=")
    return tuple(cols)


class OofPlan:
    """What every task needs (small; shipped in each task's closure)."""

    def __init__(self, label: str, classes: pa.Array, features: tuple, id_column: str | None,
                 n_folds: int, seed: int):
        self.label, self.classes, self.features = label, classes, features
        self.id_column, self.n_folds, self.seed = id_column, n_folds, seed

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def columns(self) -> list:
        return [self.label, *self.features, *([self.id_column] if self.id_column else [])]

    def hashes(self, table: pa.Table, partition: int, start: int) -> np.ndarray:
        """The rows' stable hashes: of the id column, or of their positions in the partition
        (:func:`cleanpipe.hashed_folds.table_hashes`)."""
        from .hashed_folds import table_hashes
        return table_hashes(table, id_column=self.id_column, partition=partition, start=start,
                            seed=self.seed, where=f"partition {partition} of the DataFrame")

    def codes(self, table: pa.Table) -> np.ndarray:
        """Class codes, -1 where the label is null; a label outside the classes is an error."""
        col = table.column(self.label)
        values = col.cast(self.classes.type) if col.type != self.classes.type else col
        codes = np.asarray(pc.fill_null(pc.index_in(values, value_set=self.classes), -1), dtype=np.int64)
        bad = (codes < 0) & np.asarray(col.is_valid(), dtype=bool)
        if bad.any():  # the classes were read before this job: the table changed under it
            raise InputError(f"label column '{self.label}' holds {col[int(np.flatnonzero(bad)[0])]!r}, "
                             "which was not among its classes when the job started; do not change "
                             "the table while it is flagged")
        return codes

    def matrix(self, table: pa.Table) -> np.ndarray:
        """The features as float64, nulls as NaN, columns in :attr:`features` order."""
        return matrix(table, self.features)


def matrix(table: pa.Table, features) -> np.ndarray:
    """``table``'s numeric ``features`` as an ``(n, d)`` float64 matrix, nulls as NaN."""
    out = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        col = table.column(c)
        if pa.types.is_boolean(col.type):
            col = col.cast(pa.int8())
        out[:, j] = np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan), dtype=np.float64)
    return out


def _count_task(plan: OofPlan):
    """Labelled rows per fold of one partition."""
    from .hashed_folds import fold_counts

    def run(batches):
        index, start = _partition_index(), 0
        counts = np.zeros(plan.n_folds, np.int64)
        try:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                counts += fold_counts(plan.hashes(table, index, start), plan.codes(table) >= 0,
                                      plan.n_folds)
                start += batch.num_rows
            out = {"partition": [index], "counts": [counts.tolist()], "error": [None]}
        except CleanpipeError as exc:
            out = {"partition": [index], "counts": [None], "error": [str(exc)]}
        yield pa.RecordBatch.from_pydict(out, schema=_COUNT_SCHEMA)

    return run


def _sample_task(plan: OofPlan, rate: float):
    """One partition's share of the training sample
    (:func:`~cleanpipe.hashed_folds.sample_partial`), as Arrow IPC bytes (never pickled)."""
    from .hashed_folds import sample_partial

    def run(batches):
        index, start, parts = _partition_index(), 0, []
        try:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                part = sample_partial(plan.matrix(table), plan.codes(table),
                                      plan.hashes(table, index, start), n_folds=plan.n_folds, rate=rate)
                if len(part):
                    parts.append(part)
                start += batch.num_rows
            out = {"partition": [index], "rows": [_to_ipc(parts, len(plan.features))], "error": [None]}
        except CleanpipeError as exc:
            out = {"partition": [index], "rows": [None], "error": [str(exc)]}
        yield pa.RecordBatch.from_pydict(out, schema=_SAMPLE_SCHEMA)

    return run


def _to_ipc(parts, d: int) -> bytes | None:
    if not parts:
        return None
    from functools import reduce

    from .hashed_folds import merge_samples
    s = reduce(merge_samples, parts)
    table = pa.table({"hash": s.hashes, "y": s.y, "fold": s.folds,
                      "X": pa.FixedSizeListArray.from_arrays(pa.array(s.X.ravel()), d)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes, d: int):
    from .hashed_folds import TrainingSample
    t = pa.ipc.open_stream(data).read_all().combine_chunks()
    X = np.asarray(t["X"].chunk(0).flatten(), dtype=np.float32).reshape(-1, d)
    return TrainingSample(X, np.asarray(t["y"], np.int64), np.asarray(t["fold"], np.int16),
                          np.asarray(t["hash"], np.uint64))


def merge_tree(parts):
    """The partials merged pairwise in a balanced tree (:func:`~cleanpipe.hashed_folds.merge_samples`
    is associative: the same sample as a left fold, in log P rounds of sorting)."""
    from .hashed_folds import merge_samples
    parts = list(parts)
    while len(parts) > 1:
        parts = [merge_samples(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _predict_task(models, plan: OofPlan, out_schema: pa.Schema):
    """Every row of a partition with its out-of-fold probabilities appended."""
    from .hashed_folds import hashed_folds, predict_out_of_fold

    def run(batches):
        index, start = _partition_index(), 0
        k = plan.n_classes
        for batch in batches:
            table = pa.Table.from_batches([batch])
            folds = hashed_folds(plan.hashes(table, index, start), plan.n_folds)
            probs = predict_out_of_fold(models.value, plan.matrix(table), folds, k)
            column = pa.ListArray.from_arrays(pa.array(np.arange(0, len(probs) * k + 1, k, dtype=np.int32)),
                                              pa.array(probs.ravel()))
            yield pa.RecordBatch.from_arrays(batch.columns + [column.cast(out_schema.field(OOF_COLUMN).type)],
                                             schema=out_schema)
            start += batch.num_rows

    return run


def distinct_labels(df, label: str, label_type: pa.DataType) -> pa.Array:
    """The sorted distinct labels (one small aggregation, at most :data:`MAX_CLASSES` + 1 values)."""
    from .features import encode_labels
    rows = df.select(label).where(df[label].isNotNull()).distinct().limit(MAX_CLASSES + 1).collect()
    if len(rows) > MAX_CLASSES:
        raise InputError(f"label column '{label}' has more than {MAX_CLASSES} distinct values; "
                         "a label is a class, not an identifier (pass another label=)")
    values = pa.chunked_array([pa.array([r[0] for r in rows], type=label_type)])
    _, classes = encode_labels(values, label)
    if len(classes) < 2:
        raise InputError(f"label column '{label}' has {len(classes)} class(es); label-error "
                         "detection needs at least two classes")
    return classes


def out_of_fold(df, *, label: str, classes: pa.Array, features: tuple, id_column: str | None,
                model, folds: int, seed: int, sample_rows: int):
    """``df`` with :data:`OOF_COLUMN` appended (lazy), and what was fitted.

    The inputs are checked by the caller (:func:`cleanpipe.spark.flag`).

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The DataFrame, and ``{"fold_rows", "rate", "sample_rows", "max_sample_rows"}`` for the
        record.
    """
    from .hashed_folds import check_fold_counts, fit_fold_models, training_rate
    from .spark import _spark_schema, arrow_schema

    plan = OofPlan(label, classes, features, id_column, folds, seed)
    selected = df.select(*plan.columns)
    rows = selected.mapInArrow(_count_task(plan), "partition INT, counts ARRAY<LONG>, error STRING").collect()
    raise_first_error(rows)
    counts = np.sum([r["counts"] for r in rows], axis=0) if rows else np.zeros(folds, np.int64)
    counts = np.asarray(counts, dtype=np.int64).reshape(folds)
    check_fold_counts(counts, folds)
    rate = training_rate(int(counts.sum()), folds, sample_rows)
    rows = selected.mapInArrow(_sample_task(plan, rate), "partition INT, rows BINARY, error STRING").collect()
    raise_first_error(rows)
    d = len(features)
    if all(r["rows"] is None for r in rows):
        raise InputError(f"the training sample is empty (rate {rate:.3g} of {int(counts.sum())} "
                         "labelled rows); pass a larger sample_rows")
    sample = merge_tree(_from_ipc(r["rows"], d) for r in sorted(rows, key=lambda r: r["partition"])
                        if r["rows"] is not None)
    log.info("out-of-fold on Spark: %d folds, %d sampled rows of %d, fitted on the driver",
             folds, len(sample), int(counts.sum()))
    models = fit_fold_models(sample.X, sample.y, sample.folds, n_folds=folds,
                             n_classes=plan.n_classes, model=model, seed=seed)
    schema = arrow_schema(df)
    out_schema = schema.append(pa.field(OOF_COLUMN, pa.list_(pa.float64())))
    broadcast = df.sparkSession.sparkContext.broadcast(models)
    frame = df.mapInArrow(_predict_task(broadcast, plan, out_schema), _spark_schema(out_schema))
    info = {"fold_rows": counts.tolist(), "rate": rate, "sample_rows": len(sample),
            "max_sample_rows": sample_rows}
    return frame, info
