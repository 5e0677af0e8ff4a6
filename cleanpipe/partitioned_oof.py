"""Out-of-fold probabilities of a partitioned Parquet dataset, computed on the workers (issue 21).

The edge of :mod:`cleanpipe.hashed_folds` over the partitions of :mod:`cleanpipe.partitions`:

1. each worker reads its partition's features and labels and keeps its rows of the bounded
   training sample (:func:`cleanpipe.hashed_folds.sample_partial`); the partials are merged on
   the workers (a tree) into one sample, which stays there;
2. the ``K`` fold models are fitted on that sample, one task per fold, on the workers;
3. each worker predicts its partition with the models that did not see its rows and writes the
   probabilities beside the flags (``OUT/_work/oof-KEY/probs/``), atomically, one file per
   partition; the detector's passes then read them there.

Nothing collects the table on the driver: it sees the schema, the classes, row counts and one
integer (the sample's size). A row's fold is a hash of its id (``--id``) or of its position
(partition number, row), so no shuffle is needed. Every partition's sample partial and
probabilities are kept until the flags are committed: a rerun after a failure recomputes only
the partitions that had not finished (the fold models are refitted, the same models, when any
partition still needs them).

The kind of label travels with the partitions (their ``target``, :meth:`FeatureSource.labels`):
one class per row, or a multi-label label (a list-of-tags column or 0/1 columns), whose sample
holds each row's 0/1 tags and whose fold models are the one-machine multi-label families
(:mod:`cleanpipe.hashed_folds_multilabel`: per tag, on the features and the row's other given
tags), predicting one probability per tag. Everything else (folds, sample, resume) is shared.

Feature columns are numbers, bools, dates/times, numeric vectors and text or dictionary columns,
as on one machine. A categorical column is coded with one vocabulary for the whole table: the
count pass also returns each partition's value counts
(:func:`cleanpipe.features.value_counts`), merged associatively like the other partials
(:func:`cleanpipe.features.merge_value_counts`); the merged counts give the one-machine codes
(:func:`cleanpipe.features.vocabulary`: the :data:`~cleanpipe.settings.MAX_CATEGORIES` most
frequent values, the rest one "other" code), which every partition then uses. A column with more
than :data:`~cleanpipe.settings.MAX_VOCABULARY` distinct values is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs

from . import hashed_folds as hf
from .errors import InputError
from .features import (_column_block, _kind, categorical_columns, category_codes,
                       check_vocabulary_size, columns_hint, merge_value_counts,
                       select_feature_columns, value_counts, vocabulary)
from .partitions import WORK, _atomic_write, _filesystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OofSettings:
    """How the fold models are built: what ``[oof]`` / ``flag --model --folds --seed`` set."""

    model: str
    folds: int
    seed: int
    sample_rows: int
    ids: tuple = ()
    features: tuple | None = None
    exclude: tuple = ()

    def as_list(self) -> list:
        return [self.model, self.folds, self.seed, self.sample_rows, list(self.ids),
                None if self.features is None else list(self.features), list(self.exclude)]


def default_settings() -> OofSettings:
    """The defaults of ``flag``: the default model, folds and seed; the default sample size."""
    from .settings import DEFAULT_FOLDS, DEFAULT_MODEL, DEFAULT_SEED, SCALE_SAMPLE_ROWS
    return OofSettings(DEFAULT_MODEL, DEFAULT_FOLDS, DEFAULT_SEED, SCALE_SAMPLE_ROWS)


#: Why the one-machine fit options do not apply, per engine that fits the fold models itself:
#: ``(where the fits run, why n_jobs does not apply, where they fit instead of a GPU, the fix)``.
_FIT_PLACES = {
    "dask": ("when the fold models are fitted partition by partition on Dask",
             "each fold model is its own task on the workers, so the folds already fit in "
             "parallel there (as many as the workers have threads)",
             "the fold models fit on the workers' CPUs", "or flag on one machine"),
    "spark": ("when the fold models are fitted in Spark tasks",
              "each fold model is its own task on the executors, so the folds already fit in "
              "parallel there (as many as the executors have task slots)",
              "the fold models fit on the executors' CPUs", "or run on one machine"),
}


def check_fit_options(n_jobs: int, device: str, *, names=("--n-jobs", "--device"),
                      engine: str = "dask") -> None:
    """Refuse the one-machine fit options that the partitioned paths' fold models do not take.

    On Dask each fold model is one task on the workers, so the folds already fit in parallel
    there (as many at once as the workers have threads, ``dask worker --nthreads``); a per-task
    thread count on top would oversubscribe the workers. On Spark likewise each fold model is one
    task on the executors (as many at once as they have task slots), one thread each. Both fit on
    CPUs: ``cuda`` (XGBoost on a GPU) is a one-machine option. The
    defaults (``n_jobs=1``, ``device="auto"``) and ``device="cpu"`` pass. One rule for both
    engines, so neither ignores a setting silently.

    Parameters
    ----------
    n_jobs : int
    device : str
    names : (str, str), default=("--n-jobs", "--device")
        How the caller spells the two options (``[oof] n_jobs`` in a pipeline).
    engine : {"dask", "spark"}, default="dask"
        Where the fold models are fitted.

    Raises
    ------
    InputError
        A value the partitioned path would otherwise silently ignore.
    """
    from .settings import DEFAULT_DEVICE, OOF
    why, parallel, cpus, fix = _FIT_PLACES[engine]
    if n_jobs != OOF["n_jobs"].default:
        raise InputError(f"{names[0]} {n_jobs} does not apply {why}: {parallel}; drop {names[0]}")
    if device not in (DEFAULT_DEVICE, "cpu"):
        raise InputError(f"{names[1]} {device} is not available {why}: {cpus}; drop {names[1]}, "
                         f"{fix}")


def feature_columns(schema: pa.Schema, label, oof: OofSettings) -> list:
    """The feature columns (every column but the label(s), ids and excluded; or ``features``)."""
    return select_feature_columns(schema, label, features=list(oof.features or ()) or None,
                                  exclude=oof.exclude, ids=oof.ids)


def check_features(schema: pa.Schema, columns, where: str, categorical=()) -> None:
    """Each feature column is in the partition, of a supported type, and categorical (text or
    dictionary) exactly where the whole dataset's is (``categorical``: those columns, decided over
    every partition's schema by :func:`cleanpipe.features.categorical_columns`)."""
    for name in columns:
        if name not in schema.names:
            raise InputError(f"feature column '{name}' not found in DATA partition '{where}' "
                             f"(columns: {columns_hint(schema.names)}); give every partition the "
                             f"same columns, or --exclude {name}")
        t = schema.field(name).type
        kind = _kind(t)
        if kind is None:
            raise InputError(f"feature column '{name}' has unsupported type {t} (DATA partition "
                             f"'{where}'); drop it with --exclude {name}")
        if kind != "null" and (kind == "categorical") != (name in categorical):
            others = "text or categories" if name in categorical else "no text or categories"
            raise InputError(f"feature column '{name}' has type {t} in DATA partition '{where}' "
                             f"but holds {others} in the other partitions; give every partition "
                             f"the same column types, or --exclude {name}")


def partition_matrix(table: pa.Table, columns, where: str, vocabularies=None) -> np.ndarray:
    """The float32 feature matrix of one partition, the same column layout in every partition
    (a column null throughout this partition is NaN here, not dropped). A categorical column is
    coded with its merged vocabulary (``vocabularies[name]``, :func:`cleanpipe.features.vocabulary`),
    so every partition codes it as the whole table would."""
    vocabularies = vocabularies or {}
    blocks = []
    for name in columns:
        col = table.column(name)
        if name in vocabularies:
            blocks.append(category_codes(col, vocabularies[name])[:, None])
            continue
        kind = _kind(col.type)
        if kind == "null":
            blocks.append(np.full((len(col), 1), np.nan, np.float32))
            continue
        block, _ = _column_block(col, kind, name)
        blocks.append(np.where(np.isinf(block), np.float32(np.nan), block))
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((table.num_rows, 0), np.float32)
    return np.ascontiguousarray(X, dtype=np.float32)


@dataclass(frozen=True)
class FeatureSource:
    """One partition as the out-of-fold passes read it (picklable: a worker rebuilds the rest)."""

    part: object  # cleanpipe.partitions.PartitionSource (its path, label and classes)
    index: int
    columns: tuple
    oof: OofSettings
    categorical: tuple = ()
    vocabularies: dict | None = None  # name -> the merged vocabulary (after the count pass)

    @property
    def mask(self) -> np.ndarray:
        """Which columns of :meth:`read`'s matrix hold category codes."""
        return np.array([c in self.categorical for c in self.columns], dtype=bool)

    def read(self):
        """``(X, labels, labelled, hashes)`` of every row (:meth:`labels`)."""
        ids = list(self.oof.ids[:1])
        table = self.part.read(list(dict.fromkeys([*self.part.label_columns, *ids, *self.columns])))
        X = partition_matrix(table, self.columns, self.part.path, self.vocabularies)
        return (X, *self.labels(table), self.hashes(table))

    def labels(self, table: pa.Table):
        """``(labels, labelled)`` of every row: class codes (``-1`` where the label is null), or
        for a multi-label label (the partition's ``target``) the 0/1 tag matrix over the dataset's
        classes (0 on rows without tags). The one place the kind of label decides what is read."""
        if self.part.target is not None:
            tags, labelled, _ = self.part.tags(table)
            return tags, np.asarray(labelled, dtype=bool)
        codes = self.part.codes(table.select([self.part.label]))
        return codes, codes >= 0

    def hashes(self, table: pa.Table) -> np.ndarray:
        """The rows' stable hashes (:func:`cleanpipe.hashed_folds.table_hashes`)."""
        return hf.table_hashes(table, id_column=self.oof.ids[0] if self.oof.ids else None,
                               partition=self.index, seed=self.oof.seed,
                               where=f"DATA partition '{self.part.path}'")


def _store(filesystem, path: str, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(filesystem, path, buf.getvalue())


def _load(filesystem, path: str):
    """The arrays stored at ``path``, or None (missing, or not what this version wrote)."""
    try:
        with filesystem.open_input_file(path) as fh:
            data = fh.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return None


def _sample_task(out: str, key: str, src: FeatureSource, rate: float):
    """One partition's share of the training sample (kept under ``_work`` for a rerun)."""
    filesystem, root = _filesystem(out)
    path = f"{root}/{WORK}/{key}/sample/{os.path.basename(src.part.path)}.npz"
    got = _load(filesystem, path)
    if got is not None and set(got) == {"X", "y", "folds", "hashes"}:
        return hf.TrainingSample(got["X"], got["y"], got["folds"], got["hashes"])
    X, labels, labelled, hashes = src.read()
    sample = hf.sample_partial(X, labels, hashes, n_folds=src.oof.folds, rate=rate,
                               labelled=labelled)
    filesystem.create_dir(f"{root}/{WORK}/{key}/sample", recursive=True)
    _store(filesystem, path, {"X": sample.X, "y": sample.y, "folds": sample.folds,
                              "hashes": sample.hashes})
    return sample


def _fit_task(sample: hf.TrainingSample, fold: int, n_classes: int, oof: OofSettings,
              categorical: np.ndarray, tags: bool = False, untagged_rows: bool = False):
    """Fold ``fold``'s model on the sample: one class per row, or (``tags``) the multi-label
    families (:mod:`cleanpipe.hashed_folds_multilabel`; ``untagged_rows``: the table has rows
    without tags, predicted from the features alone)."""
    if len(sample) and sample.X.shape[1] == 0:
        raise InputError("no feature columns are left; pass --features or fewer --exclude columns")
    if tags:
        from .hashed_folds_multilabel import fit_tag_fold_model
        return fit_tag_fold_model(sample.X, sample.y, sample.folds, fold, model=oof.model,
                                  seed=oof.seed, categorical=categorical,
                                  untagged_rows=untagged_rows)
    return hf.fit_fold_model(sample.X, sample.y, sample.folds, fold, n_classes=n_classes,
                             model=oof.model, seed=oof.seed, categorical=categorical)


def probs_path(out: str, key: str, src_path: str) -> str:
    _, root = _filesystem(out)
    return f"{root}/{WORK}/{key}/probs/{os.path.basename(src_path)}.npy"


def load_probs(out: str, path: str, n_rows: int, n_classes: int, where: str) -> np.ndarray:
    """A partition's stored out-of-fold probabilities (float64 for the detector)."""
    filesystem, _ = _filesystem(out)
    try:
        with filesystem.open_input_file(path) as fh:
            P = np.load(io.BytesIO(fh.read()), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"the out-of-fold probabilities of DATA partition '{where}' could not be "
                         f"read ({str(exc).splitlines()[0]}); run the command again") from None
    if P.shape != (n_rows, n_classes):
        raise InputError(f"the out-of-fold probabilities of DATA partition '{where}' have shape "
                         f"{P.shape}, not ({n_rows}, {n_classes}): the partition changed during "
                         "the run; run the command again")
    return P.astype(np.float64)


def _finished(out: str, key: str) -> set:
    """The probabilities files a run with this key has written (one listing, not one request
    per partition)."""
    filesystem, root = _filesystem(out)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(f"{root}/{WORK}/{key}/probs",
                                                           allow_not_found=True))
    except OSError:
        return set()
    return {i.path for i in infos if i.type == pafs.FileType.File}


def _predict_task(out: str, key: str, src: FeatureSource, models, n_classes: int):
    """Predict one partition with the models that did not see its rows; write them atomically."""
    filesystem, _ = _filesystem(out)
    path = probs_path(out, key, src.part.path)
    X, labels, labelled, hashes = src.read()
    folds = hf.hashed_folds(hashes, src.oof.folds)
    if src.part.target is not None:  # multi-label: each tag given the row's other tags
        from .hashed_folds_multilabel import predict_tags_out_of_fold
        P = predict_tags_out_of_fold(models, X, labels, labelled, folds, n_classes)
    else:
        P = hf.predict_out_of_fold(models, X, folds, n_classes)
    filesystem.create_dir(os.path.dirname(path), recursive=True)
    buf = io.BytesIO()
    np.save(buf, P.astype(np.float32), allow_pickle=False)
    _atomic_write(filesystem, path, buf.getvalue())
    return len(P)


def _count_task(src: FeatureSource):
    """A partition's feature check, labelled rows per fold (the scan the sample rate needs), its
    categorical columns' value counts (the vocabulary partial) and its rows without a label."""
    check_features(src.part.schema(), src.columns, src.part.path, src.categorical)
    table = src.part.read(list(dict.fromkeys([*src.part.label_columns, *src.oof.ids[:1],
                                              *src.categorical])))
    labels, labelled = src.labels(table)
    counts = hf.fold_counts(src.hashes(table), labelled, src.oof.folds)
    # multi-label: rows per tag, for the notes on tags the fold models cannot learn
    tags = labels[labelled].sum(axis=0, dtype=np.int64) if labels.ndim == 2 else None
    vocab = []
    for name in src.categorical:
        vc = value_counts(table.column(name))
        check_vocabulary_size(vc, name=name)
        vocab.append(vc)
    return counts, tuple(vocab), int(len(labelled) - labelled.sum()), tags


def _merge_counts(a, b, names=()):
    """Two count partials together: fold counts, unlabelled rows and rows per tag added, value
    counts merged per column."""
    return (a[0] + b[0], tuple(merge_value_counts(x, y, name=n) for x, y, n in zip(a[1], b[1], names)),
            a[2] + b[2], None if a[3] is None else a[3] + b[3])


def _schema(part) -> pa.Schema:
    return part.schema()


def _size(sample) -> int:
    return len(sample)


def out_of_fold_partitions(engine, out: str, key: str, parts, *, n_classes: int,
                           oof: OofSettings) -> dict:
    """Out-of-fold probabilities of every partition into ``OUT/_work/KEY/probs/``.

    Parameters
    ----------
    engine : cleanpipe.partitions.LocalEngine or DaskEngine
    out : str
        The flags directory (the probabilities live under its ``_work``).
    key : str
        Names this run's inputs and settings: a rerun with the same key reuses what is there.
    parts : list of cleanpipe.partitions.PartitionSource
        The partitions, with the merged classes.
    n_classes : int
    oof : OofSettings

    Returns
    -------
    dict
        What was done: the features, the sample's size, partitions predicted and reused.
    """
    if oof.folds < 2:
        raise InputError(f"--folds {oof.folds} is too small; cross-validation needs at least 2 folds")
    if oof.sample_rows < 2:
        raise InputError(f"the training sample of {oof.sample_rows} rows is too small; pass at "
                         "least 2")
    from .oof import model_list
    model_list(oof.model)  # an unknown model name: one line here, not on every worker
    # every partition's schema (read on the workers): a text column null throughout the first
    # partition is text all the same
    schemas = engine.get(engine.map(_schema, parts))
    tags = parts[0].target is not None  # the kind of label, as the partitions carry it
    columns = tuple(feature_columns(schemas[0], parts[0].label_columns, oof))
    categorical = categorical_columns(schemas, columns, [p.path for p in parts])
    sources = [FeatureSource(p, i, columns, oof, categorical) for i, p in enumerate(parts)]
    clock, cpu_clock = time.perf_counter(), time.process_time()
    seconds, cpu = {}, {}

    def lap(name):  # wall seconds, and this process's CPU (all of it on a LocalEngine)
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), time.process_time()
        seconds[name], cpu[name] = round(now - clock, 3), round(cpu_now - cpu_clock, 3)
        clock, cpu_clock = now, cpu_now

    counts, vocab, unlabelled, tag_rows = engine.reduce(functools.partial(_merge_counts, names=categorical),
                                  engine.map(_count_task, sources))
    hf.check_fold_counts(counts, oof.folds)
    notes = []
    if tags:  # as cross_val_probs_multilabel warns on one machine
        from .errors import CleanpipeWarning
        from .oof import tag_count_notes
        notes = tag_count_notes(tag_rows, int(counts.sum()), oof.folds,
                                [str(c) for c in parts[0].classes])
        for note in notes:
            warnings.warn(note, CleanpipeWarning, stacklevel=3)
    vocabularies = {name: vocabulary(vc) for name, vc in zip(categorical, vocab)}
    sources = [dataclasses.replace(s, vocabularies=vocabularies) for s in sources]
    mask = sources[0].mask
    n_rows = int(counts.sum())
    finished = _finished(out, key)
    todo = [s for s in sources if probs_path(out, key, s.part.path) not in finished]
    info = {"features": list(columns), "categorical": list(categorical), "folds": oof.folds,
            "model": oof.model, "seed": oof.seed, **({"multi_label": True} if tags else {}),
            "sample_rows": oof.sample_rows, "labelled_rows": n_rows, **({"notes": notes} if notes else {}),
            "predicted": len(todo), "reused": len(sources) - len(todo), "training_rows": None,
            "seconds": seconds, "driver_cpu_seconds": cpu}
    lap("scan")
    if not todo:
        return info
    rate = hf.training_rate(n_rows, oof.folds, oof.sample_rows)
    partials = engine.map(_sample_task, [out] * len(sources), [key] * len(sources), sources,
                          [rate] * len(sources))
    sample = engine.reduce_handle(hf.merge_samples, partials)  # stays on the workers
    info["training_rows"] = int(engine.get(engine.map(_size, [sample]))[0])
    lap("sample")
    models = engine.map(_fit_task, [sample] * oof.folds, range(oof.folds),
                        [n_classes] * oof.folds, [oof] * oof.folds, [mask] * oof.folds,
                        [tags] * oof.folds, [unlabelled > 0] * oof.folds)
    models = engine.collect(models)  # one handle holding the K models (on a worker)
    engine.get(engine.map(_size, [models]))
    lap("fit")
    engine.get(engine.map(_predict_task, [out] * len(todo), [key] * len(todo), todo,
                          [models] * len(todo), [n_classes] * len(todo)))
    lap("predict")
    log.info("out-of-fold: %d partitions predicted, %d reused; %d sample rows",
             len(todo), len(sources) - len(todo), info["training_rows"])
    return info
