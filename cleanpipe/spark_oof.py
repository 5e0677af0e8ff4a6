"""Out-of-fold probabilities of a Spark DataFrame, fitted on the cluster from hashed folds (issue 21).

Four Spark jobs, with the pure functions of :mod:`cleanpipe.hashed_folds`:

1. **counts**: every partition hashes its rows' ids (an id column, or each row's position in its
   partition, :func:`~cleanpipe.hashed_folds.position_ids`), takes their folds
   (:func:`~cleanpipe.hashed_folds.hashed_folds`) and returns the labelled rows per fold; the
   driver sets the Bernoulli rate (:func:`~cleanpipe.hashed_folds.training_rate`).
2. **sample**: every partition returns its share of the rows the fold models train on
   (:func:`~cleanpipe.hashed_folds.sample_partial`): about ``sample_rows * F / (F - 1)`` rows in
   all, whatever the table's size, as Arrow IPC bytes; the driver merges them
   (:func:`~cleanpipe.hashed_folds.merge_samples` in the one balanced tree of every engine,
   :func:`~cleanpipe.detect.partitioned.merge_tree`; sorted by hash, so the sample and the fit do
   not depend on the partitioning).
3. **fit**: one Spark job of F tasks, task ``k`` fitting fold ``k``'s model on the sample (one
   broadcast) with the one-fold fit of the Dask path (:func:`fit_in_tasks`,
   :func:`cleanpipe.partitioned_oof._fit_task`); the folds fit in parallel on the executors, on
   one thread each, and the models come back to the driver.
4. **predict** (lazy): a ``mapInArrow`` over the DataFrame appends each row's probabilities from
   the model that did not see its fold (:func:`~cleanpipe.hashed_folds.predict_out_of_fold`); the
   models reach the executors as one broadcast.

Features are numeric columns (integers, floats, booleans; nulls become NaN) and text columns named
in ``features=``. A text column is coded as one machine codes it, with one vocabulary for the
whole DataFrame: the counts job also returns each partition's value counts
(:func:`cleanpipe.features.value_counts`), the driver merges them
(:func:`cleanpipe.features.merge_value_counts`, associative) into the vocabulary
(:func:`cleanpipe.features.vocabulary`: the most frequent values, the rest one "other" code), and
every task codes with it; the fold models are told which columns hold codes.

A multi-label label (``target=``, the kind of label passed down as on Dask) takes the same passes:
the count job also returns rows without tags and rows per tag, the sample keeps each row's 0/1
tags (``sample_partial(..., labelled=)``), each fit task fits
:func:`cleanpipe.hashed_folds_multilabel.fit_tag_fold_model` for its fold, and the predict task writes
:func:`~cleanpipe.hashed_folds_multilabel.predict_tags_out_of_fold`'s tag probabilities.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .detect.partitioned import merge_tree
from .errors import CleanpipeError, InputError
from .spark import _partition_index, raise_first_error

log = logging.getLogger(__name__)

#: The column :func:`out_of_fold` appends: one ``array<double>`` of probabilities per row, classes
#: in sorted order.
OOF_COLUMN = "pred_probs"
#: Classes beyond which a label is refused (the distinct labels are read onto the driver).
MAX_CLASSES = 1000

_COUNT_SCHEMA = pa.schema([("partition", pa.int32()), ("counts", pa.list_(pa.int64())),
                           ("vocab", pa.list_(pa.binary())), ("unlabelled", pa.int64()),
                           ("tags", pa.list_(pa.int64())), ("error", pa.string())])
_COUNT_DDL = ("partition INT, counts ARRAY<LONG>, vocab ARRAY<BINARY>, unlabelled LONG, "
              "tags ARRAY<LONG>, error STRING")
_SAMPLE_SCHEMA = pa.schema([("partition", pa.int32()), ("rows", pa.binary()), ("error", pa.string())])


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def feature_columns(schema: pa.Schema, *, label, features=None, id_column: str | None = None,
                    exclude=()) -> tuple:
    """The feature columns: ``features`` as given (each checked to exist and be numeric or text),
    or every numeric column other than the label, the id and ``exclude``. ``label`` is the label
    column's name, or the names of the columns holding it (multi-label 0/1 columns: none of them
    is a feature).

    A text column is a feature only when named in ``features``: it is then coded with one
    vocabulary merged over the partitions (:func:`cleanpipe.features.vocabulary`), as on one
    machine. Left to the default, text columns stay out (a free-text or identifier column would
    only be refused for its size, and ``flag`` takes no ``exclude``).

    Raises
    ------
    InputError
        A missing feature column or one of another type, or no feature at all.
    """
    from .features import columns_hint

    labels = {label} if isinstance(label, str) else set(label)
    if features is not None:
        cols = [features] if isinstance(features, str) else list(features)
        for c in cols:
            if c not in schema.names:
                raise InputError(f"feature column '{c}' not found in the DataFrame (columns: "
                                 f"{columns_hint(schema.names)}); fix features=")
            if c in labels:
                raise InputError(f"features includes the label '{c}'; remove it")
            t = schema.field(c).type
            if not (_numeric(t) or _text(t)):
                raise InputError(f"feature column '{c}' has type {t}; out-of-fold on Spark fits "
                                 "numbers and text (categories): encode it as one of them first, "
                                 "or leave it out of features=")
    else:
        skip = {*labels, id_column, *exclude}
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
                 n_folds: int, seed: int, categorical: tuple = (), vocabularies: dict | None = None,
                 target=None):
        self.label, self.classes, self.features = label, classes, features
        self.target = target  # a multi-label Target (the kind of label), None for one class per row
        self.id_column, self.n_folds, self.seed = id_column, n_folds, seed
        self.categorical = categorical  # the text features
        self.vocabularies = vocabularies  # name -> merged vocabulary, after the count job

    @property
    def mask(self) -> np.ndarray:
        """Which feature columns hold category codes."""
        return np.array([c in self.categorical for c in self.features], dtype=bool)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def columns(self) -> list:
        labels = list(self.target.columns) if self.target is not None else [self.label]
        return list(dict.fromkeys([*labels, *self.features,
                                   *([self.id_column] if self.id_column else [])]))

    def labels(self, table: pa.Table):
        """``(labels, labelled)``: class codes (-1 where the label is null), or for a multi-label
        label the 0/1 tag matrix over :attr:`classes` (0 on rows without tags), as
        :meth:`cleanpipe.partitioned_oof.FeatureSource.labels` reads a partition."""
        if self.target is not None:
            from .target import encode_tags
            tags, labelled, _ = encode_tags(self.target, table.select(list(self.target.columns)),
                                            self.classes)
            return tags, np.asarray(labelled, dtype=bool)
        codes = self.codes(table)
        return codes, codes >= 0

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
        return matrix(table, self.features, self.vocabularies)


def matrix(table: pa.Table, features, vocabularies=None) -> np.ndarray:
    """``table``'s ``features`` as an ``(n, d)`` float64 matrix, nulls as NaN; a text column as
    its codes in ``vocabularies[name]`` (:func:`cleanpipe.features.category_codes`)."""
    from .features import category_codes
    vocabularies = vocabularies or {}
    out = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        col = table.column(c)
        if c in vocabularies:
            out[:, j] = category_codes(col, vocabularies[c])
            continue
        if pa.types.is_boolean(col.type):
            col = col.cast(pa.int8())
        out[:, j] = np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan), dtype=np.float64)
    return out


def _count_task(plan: OofPlan):
    """Labelled rows per fold of one partition, and its text features' value counts (the
    vocabulary partials, as Arrow IPC bytes)."""
    from .features import check_vocabulary_size, merge_value_counts, value_counts
    from .hashed_folds import fold_counts

    def run(batches):
        index, start = _partition_index(), 0
        counts = np.zeros(plan.n_folds, np.int64)
        tags = np.zeros(plan.n_classes, np.int64) if plan.target is not None else None
        unlabelled = 0
        vocab = [None] * len(plan.categorical)
        try:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                labels, labelled = plan.labels(table)
                counts += fold_counts(plan.hashes(table, index, start), labelled, plan.n_folds)
                unlabelled += int(len(labelled) - labelled.sum())
                if tags is not None:  # rows per tag, for the notes on tags the folds cannot learn
                    tags += labels[labelled].sum(axis=0, dtype=np.int64)
                for i, name in enumerate(plan.categorical):
                    vc = value_counts(table.column(name))
                    check_vocabulary_size(vc, name=name)  # before it is sent to the driver
                    vocab[i] = vc if vocab[i] is None else merge_value_counts(vocab[i], vc, name=name)
                start += batch.num_rows
            out = {"partition": [index], "counts": [counts.tolist()],
                   "vocab": [[_counts_to_ipc(v) for v in vocab] if plan.categorical else []],
                   "unlabelled": [unlabelled], "tags": [None if tags is None else tags.tolist()],
                   "error": [None]}
        except CleanpipeError as exc:
            out = {"partition": [index], "counts": [None], "vocab": [None], "unlabelled": [None],
                   "tags": [None], "error": [str(exc)]}
        yield pa.RecordBatch.from_pydict(out, schema=_COUNT_SCHEMA)

    return run


def _counts_to_ipc(vc) -> bytes | None:
    if vc is None or not len(vc):
        return None
    sink = io.BytesIO()
    table = pa.table({"value": vc.values, "count": vc.counts})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _counts_from_ipc(data: bytes | None):
    from .features import ValueCounts
    if data is None:
        return ValueCounts(pa.array([], pa.null()), np.zeros(0, np.int64))
    t = pa.ipc.open_stream(data).read_all()
    return ValueCounts(t.column("value").combine_chunks(), np.asarray(t.column("count"), np.int64))


def merged_vocabularies(rows, categorical: tuple) -> dict:
    """The count job's vocabulary partials merged (in partition order, any grouping) into each
    text feature's vocabulary."""
    from .features import merge_value_counts, vocabulary
    rows = sorted(rows, key=lambda r: r["partition"])
    out = {}
    for i, name in enumerate(categorical):
        partials = [_counts_from_ipc(r["vocab"][i]) for r in rows]
        out[name] = vocabulary(merge_tree(lambda a, b: merge_value_counts(a, b, name=name), partials))
    return out


def _sample_task(plan: OofPlan, rate: float):
    """One partition's share of the training sample
    (:func:`~cleanpipe.hashed_folds.sample_partial`), as Arrow IPC bytes (never pickled)."""
    from .hashed_folds import sample_partial

    def run(batches):
        index, start, parts = _partition_index(), 0, []
        try:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                labels, labelled = plan.labels(table)
                part = sample_partial(plan.matrix(table), labels, plan.hashes(table, index, start),
                                      n_folds=plan.n_folds, rate=rate, labelled=labelled)
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
    from .hashed_folds import merge_samples
    s = merge_tree(merge_samples, parts)
    y = (pa.FixedSizeListArray.from_arrays(pa.array(s.y.ravel().astype(np.int8)), s.y.shape[1])
         if s.y.ndim == 2 else s.y)  # multi-label: the 0/1 tag matrix
    table = pa.table({"hash": s.hashes, "y": y, "fold": s.folds,
                      "X": pa.FixedSizeListArray.from_arrays(pa.array(s.X.ravel()), d)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes, d: int):
    from .hashed_folds import TrainingSample
    t = pa.ipc.open_stream(data).read_all().combine_chunks()
    X = np.asarray(t["X"].chunk(0).flatten(), dtype=np.float32).reshape(-1, d)
    col = t["y"].chunk(0)
    if pa.types.is_fixed_size_list(col.type):
        y = np.asarray(col.flatten(), dtype=np.int8).reshape(-1, col.type.list_size)
    else:
        y = np.asarray(col, np.int64)
    return TrainingSample(X, y, np.asarray(t["fold"], np.int16),
                          np.asarray(t["hash"], np.uint64))


def _predict_task(models, plan: OofPlan, out_schema: pa.Schema):
    """Every row of a partition with its out-of-fold probabilities appended."""
    from .hashed_folds import hashed_folds, predict_out_of_fold

    def run(batches):
        index, start = _partition_index(), 0
        k = plan.n_classes
        for batch in batches:
            table = pa.Table.from_batches([batch])
            folds = hashed_folds(plan.hashes(table, index, start), plan.n_folds)
            if plan.target is not None:  # multi-label: each tag given the row's other tags
                from .hashed_folds_multilabel import predict_tags_out_of_fold
                labels, labelled = plan.labels(table)
                probs = predict_tags_out_of_fold(models.value, plan.matrix(table), labels,
                                                 labelled, folds, k)
            else:
                probs = predict_out_of_fold(models.value, plan.matrix(table), folds, k)
            column = pa.ListArray.from_arrays(pa.array(np.arange(0, len(probs) * k + 1, k, dtype=np.int32)),
                                              pa.array(probs.ravel()))
            yield pa.RecordBatch.from_arrays(batch.columns + [column.cast(out_schema.field(OOF_COLUMN).type)],
                                             schema=out_schema)
            start += batch.num_rows

    return run


def _fit_task(sample, plan: OofPlan, settings, untagged_rows: bool):
    """The ``map`` function of the fit job: fold ``k``'s model on the broadcast ``sample``, with
    the Dask path's one-fold fit (:func:`cleanpipe.partitioned_oof._fit_task`), or its error."""
    from .partitioned_oof import _fit_task as fit_fold

    def run(fold: int) -> dict:
        try:
            fitted = fit_fold(sample.value, fold, plan.n_classes, settings, plan.mask,
                              tags=plan.target is not None, untagged_rows=untagged_rows)
            return {"partition": fold, "model": fitted, "error": None}
        except CleanpipeError as exc:
            return {"partition": fold, "model": None, "error": str(exc)}

    return run


def fit_in_tasks(sc, sample, plan: OofPlan, *, model, seed: int, untagged_rows: bool) -> list:
    """The ``plan.n_folds`` fold models, each fitted in its own Spark task (one job).

    The merged training sample (bounded by ``sample_rows``) reaches the executors as one
    broadcast, destroyed once the models are back; the models come back to the driver with the
    job's results and go out again with the predict tasks' broadcast. Each fit runs on one thread,
    as one fold is one task on Dask.

    Raises
    ------
    InputError
        The lowest fold's error (a fold whose training rows are empty, a model that cannot be
        fitted): the one the driver would raise fitting the folds in order.
    """
    from .partitioned_oof import OofSettings
    settings = OofSettings(model, plan.n_folds, seed, len(sample))  # the fit reads model and seed
    shared = sc.broadcast(sample)
    try:
        rows = (sc.parallelize(range(plan.n_folds), plan.n_folds)
                .map(_fit_task(shared, plan, settings, untagged_rows)).collect())
    finally:
        shared.destroy()
    raise_first_error(rows)
    return [r["model"] for r in sorted(rows, key=lambda r: r["partition"])]


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
                model, folds: int, seed: int, sample_rows: int, target=None):
    """``df`` with :data:`OOF_COLUMN` appended (lazy), and what was fitted.

    The inputs are checked by the caller (:func:`cleanpipe.spark.flag`). ``target``, a
    multi-label :class:`~cleanpipe.target.Target` (``classes`` its tags), fits the tag
    probabilities with the multi-label fold models of the partitioned path
    (:func:`cleanpipe.hashed_folds_multilabel.fit_tag_fold_model`); None, one class per row.

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The DataFrame, and ``{"fold_rows", "rate", "sample_rows", "max_sample_rows"}`` for the
        record.
    """
    from .features import categorical_columns
    from .hashed_folds import check_fold_counts, merge_samples, training_rate
    from .spark import _spark_schema, arrow_schema

    schema = arrow_schema(df)
    categorical = categorical_columns([schema], features, ["the DataFrame"])
    plan = OofPlan(label, classes, features, id_column, folds, seed, categorical, target=target)
    selected = df.select(*plan.columns)
    rows = selected.mapInArrow(_count_task(plan), _COUNT_DDL).collect()
    raise_first_error(rows)
    counts = np.sum([r["counts"] for r in rows], axis=0) if rows else np.zeros(folds, np.int64)
    counts = np.asarray(counts, dtype=np.int64).reshape(folds)
    check_fold_counts(counts, folds)
    unlabelled = sum(int(r["unlabelled"]) for r in rows)
    notes = []
    if target is not None:  # as the partitioned path and cross_val_probs_multilabel warn
        import warnings

        from .errors import CleanpipeWarning
        from .oof import tag_count_notes
        tag_rows = np.sum([r["tags"] for r in rows], axis=0, dtype=np.int64).reshape(len(classes))
        notes = tag_count_notes(tag_rows, int(counts.sum()), folds, [str(c) for c in classes])
        for note in notes:
            warnings.warn(note, CleanpipeWarning, stacklevel=3)
    plan = OofPlan(label, classes, features, id_column, folds, seed, categorical,
                   merged_vocabularies(rows, categorical), target=target)
    rate = training_rate(int(counts.sum()), folds, sample_rows)
    rows = selected.mapInArrow(_sample_task(plan, rate), "partition INT, rows BINARY, error STRING").collect()
    raise_first_error(rows)
    d = len(features)
    if all(r["rows"] is None for r in rows):
        raise InputError(f"the training sample is empty (rate {rate:.3g} of {int(counts.sum())} "
                         "labelled rows); pass a larger sample_rows")
    sample = merge_tree(merge_samples, [_from_ipc(r["rows"], d)
                                        for r in sorted(rows, key=lambda r: r["partition"])
                                        if r["rows"] is not None])
    log.info("out-of-fold on Spark: %d folds, %d sampled rows of %d, fitted in %d Spark tasks",
             folds, len(sample), int(counts.sum()), folds)
    models = fit_in_tasks(df.sparkSession.sparkContext, sample, plan, model=model, seed=seed,
                          untagged_rows=unlabelled > 0)
    out_schema = schema.append(pa.field(OOF_COLUMN, pa.list_(pa.float64())))
    broadcast = df.sparkSession.sparkContext.broadcast(models)
    frame = df.mapInArrow(_predict_task(broadcast, plan, out_schema), _spark_schema(out_schema))
    info = {"fold_rows": counts.tolist(), "rate": rate, "sample_rows": len(sample),
            "max_sample_rows": sample_rows, **({"multi_label": True} if target is not None else {}),
            **({"notes": notes} if notes else {})}
    return frame, info
