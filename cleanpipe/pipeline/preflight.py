"""Before any work: open the source and sink, check the columns, import a custom model.

Every failure becomes a :class:`~cleanpipe.errors.ConfigError` naming the pipeline file and the
key to fix, so a pipeline that would fail halfway fails in the first second instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa

from ..errors import ConfigError, InputError
from ..features import columns_hint
from ..flagsfile import FLAG_COLUMNS as _FLAG_COLUMNS
from ..formats import FORMATS, TableFormat
from ..oof import make_model, model_list
from ..sources import (DeltaSink, DeltaSource, DuckDBSink, DuckDBSource, IcebergSink,
                       IcebergSource, ParquetSink, ParquetSource, PostgresSink, PostgresSource,
                       Sink, Source)
from ..sources.postgres import connect
from ..target import is_multilabel
from .rules import check_multilabel_columns, check_multilabel_settings, check_tags_partition_wise



@dataclass
class Endpoints:
    """The opened source and sink of a pipeline (close them with ``with``)."""

    source: Source
    sink: Sink | None
    schema: pa.Schema
    targets: dict = field(default_factory=dict)  # stage -> sink target
    multi_label: bool = False

    def __enter__(self) -> "Endpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.source.close()
        if self.sink is not None:
            self.sink.close()


def _uri(cfg, section: str, origin: str) -> str | None:
    """The PostgreSQL URI of a section: ``uri``, the variable named by ``uri_env``, or None."""
    if cfg.uri_env is None:
        return cfg.uri
    value = os.environ.get(cfg.uri_env)
    if not value:
        raise ConfigError(f"{origin}: [{section}] uri_env = {cfg.uri_env!r} but that environment "
                          "variable is not set; export it or use uri / the PG* variables")
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{origin}: [{section}] uri_env: ${cfg.uri_env} must hold a postgresql:// URI")
    return value  # may carry a password: it came from the environment, and is always redacted


def make_source(cfg, origin: str = "pipeline") -> Source:
    """The :class:`~cleanpipe.sources.Source` for a ``[source]`` section."""
    if cfg.type in FORMATS:
        return ParquetSource(cfg.path, s3_endpoint=cfg.s3_endpoint, s3_region=cfg.s3_region,
                             s3_anonymous=cfg.s3_anonymous,
                             fmt=TableFormat(cfg.type, delimiter=cfg.delimiter, header=cfg.header))
    if cfg.type == "duckdb":
        return DuckDBSource(cfg.database, table=cfg.table, query=cfg.query, schema=cfg.schema)
    if cfg.type == "delta":
        return DeltaSource(cfg.path, version=cfg.version)
    if cfg.type == "iceberg":
        return IcebergSource(cfg.table, catalog=cfg.catalog, catalog_uri=cfg.catalog_uri,
                             warehouse=cfg.warehouse, snapshot_id=cfg.snapshot_id)
    return PostgresSource(_uri(cfg, "source", origin), table=cfg.table, query=cfg.query, schema=cfg.schema)


def make_sink(cfg, origin: str = "pipeline") -> Sink:
    """The :class:`~cleanpipe.sources.Sink` for a ``[sink]`` section."""
    if cfg.type == "parquet":
        return ParquetSink(s3_endpoint=cfg.s3_endpoint, s3_region=cfg.s3_region,
                           s3_anonymous=cfg.s3_anonymous)
    if cfg.type == "duckdb":
        return DuckDBSink(cfg.database, schema=cfg.schema)
    if cfg.type == "delta":
        return DeltaSink()
    if cfg.type == "iceberg":
        return IcebergSink(cfg.catalog, catalog_uri=cfg.catalog_uri, warehouse=cfg.warehouse)
    return PostgresSink(_uri(cfg, "sink", origin), schema=cfg.schema)


def _connection_key(cfg) -> str:
    return "uri_env" if cfg.uri_env else "uri" if cfg.uri else "(PG* environment variables)"


def _open_source(p, origin: str):
    cfg = p.source
    source = make_source(cfg, origin)
    key = "path" if cfg.type in (*FORMATS, "delta") else "table" if cfg.table else "query"
    try:
        if cfg.type == "duckdb" and not os.path.isfile(cfg.database):
            raise ConfigError(f"{origin}: [source] database: DuckDB file '{cfg.database}' does not "
                              "exist; fix the path (relative paths start at the pipeline file's folder)")
        if cfg.type == "postgres":
            try:
                connect(source.uri).close()
            except InputError as exc:
                raise ConfigError(f"{origin}: [source] {_connection_key(cfg)}: {exc}") from None
        return source, source.schema()
    except InputError as exc:
        source.close()
        raise ConfigError(f"{origin}: [source] {key}: {exc}") from None
    except BaseException:
        source.close()
        raise


def check_columns(p, schema: pa.Schema, origin: str) -> None:
    """The columns the first stage needs exist in the source (and the ones it adds do not)."""
    names = schema.names
    c = p.columns
    first = p.stages[0]

    def missing(key: str, col: str) -> ConfigError:
        return ConfigError(f"{origin}: [columns] {key} names '{col}', which is not a column of the "
                           f"source (columns: {columns_hint(names)}); fix [columns] {key}")

    for col in c.label_columns:
        if col not in names:
            raise missing("labels" if c.labels else "label", col)
    for key in ("features", "exclude", "ids"):
        for col in getattr(c, key) or ():
            if col not in names:
                raise missing(key, col)
    if "flag" in p.stages and p.flag.pred_probs is not None and p.flag.pred_probs not in names:
        raise ConfigError(f"{origin}: [flag] pred_probs names '{p.flag.pred_probs}', which is not a "
                          f"column of the source (columns: {columns_hint(names)}); name the list "
                          "column of out-of-fold probabilities")
    flag_cols = [col for col in _FLAG_COLUMNS if col in names]
    if first in ("oof", "flag") and flag_cols:
        raise ConfigError(f"{origin}: the source already has the flag column '{flag_cols[0]}'; "
                          "point [source] at the original table, or start at the clean stage with "
                          "stages = [\"clean\", \"retrain\"]")
    against = p.flag.against
    if "flag" in p.stages and against is not None and not os.path.lexists(against):
        raise ConfigError(f"{origin}: [flag] against = {against!r} does not exist; name the table "
                          "to compare the data with (a path relative to the pipeline file's folder)")
    if first == "clean" and len(flag_cols) < len(_FLAG_COLUMNS):
        lacking = [col for col in _FLAG_COLUMNS if col not in names]
        raise ConfigError(f"{origin}: stages start at clean, so the source must be a flags table, "
                          f"but it lacks '{lacking[0]}'; add \"flag\" to stages or point [source] at "
                          "the output of cleanpipe flag")


def is_multi_label(columns, schema: pa.Schema) -> bool:
    """Whether the pipeline's label is a set of tags: ``labels``, ``multi_label = true``, or a list
    ``label`` column (:func:`cleanpipe.target.is_multilabel`, as for the CLI)."""
    return is_multilabel(schema, columns.label, bool(columns.labels) or columns.multi_label)


def _check_multilabel(p, schema: pa.Schema, origin: str) -> bool:
    """Check a multi-label pipeline against the schema; return whether it is one."""
    if not is_multi_label(p.columns, schema):
        return False
    check_multilabel_columns(p, schema, origin)
    check_multilabel_settings(p, origin)
    return True


def _check_model(p, origin: str) -> None:
    if ":" not in p.oof.model or not {"oof", "flag"} & set(p.stages):
        return
    try:
        for spec in model_list(p.oof.model):
            if ":" in spec:
                make_model(spec)
    except InputError as exc:
        raise ConfigError(f"{origin}: [oof] model: {exc}") from None


def _check_partitioned(p, multi_label: bool, origin: str) -> None:
    """Flagging partition by partition reads a directory (or ``s3://`` prefix) of Parquet files,
    each a partition, on the workers; a single file cannot be. Multi-label data is flagged there
    with or without its probabilities in a column (:func:`check_tags_partition_wise`)."""
    if not p.partitioned:
        return
    why = ("[oof] backend = \"dask\" with [flag] pred_probs flags partition by partition"
           if p.flag.pred_probs is not None else
           "[oof] backend = \"dask\" on a Parquet dataset flags partition by partition")
    path = p.source.path
    if not path.startswith("s3://") and not os.path.isdir(path):
        raise ConfigError(f"{origin}: {why}, and [source] path '{path}' is a file, not a dataset "
                          "directory; write the table as a directory of Parquet files (one per "
                          "partition), or remove backend = \"dask\" to flag on one machine")
    if multi_label:  # [columns] label is a list column
        check_tags_partition_wise(p, origin, why, "backend = \"dask\" to flag on one machine")
    if p.partitioned_oof:
        from ..partitioned_oof import check_fit_options
        try:
            check_fit_options(p.oof.n_jobs, p.oof.device, names=("[oof] n_jobs", "[oof] device"))
        except InputError as exc:
            raise ConfigError(f"{origin}: {exc}") from None


def _check_spark(p, schema: pa.Schema, multi_label: bool, origin: str) -> None:
    """What Spark's stages need of the source's schema (``[oof] backend = "spark"``)."""
    if not p.spark:
        return
    why = "[oof] backend = \"spark\" runs the stages on Spark"
    if multi_label:  # a list column of tags, or 0/1 columns
        check_tags_partition_wise(p, origin, why, "backend = \"spark\" to run on one machine")
    if not ("oof" in p.stages or ("flag" in p.stages and p.flag.pred_probs is None)):
        return
    from ..spark_oof import OOF_COLUMN, feature_columns
    c = p.columns
    if OOF_COLUMN in schema.names:
        raise ConfigError(f"{origin}: {why} and fits the column '{OOF_COLUMN}', which the source "
                          f"already has; write stages without oof and [flag] pred_probs = "
                          f"\"{OOF_COLUMN}\" to use it, or rename it")
    try:
        feature_columns(schema, label=c.label_columns, features=list(c.features) if c.features else None,
                        id_column=c.ids[0] if c.ids else None, exclude=c.exclude)
    except InputError as exc:
        raise ConfigError(f"{origin}: [columns] features: {exc}") from None


def _check_spark_fit(p, origin: str) -> None:
    """``[oof] n_jobs`` and ``device`` where Spark's stages fit the fold models (one Spark task
    per fold): the rule of the partitioned paths (:func:`cleanpipe.partitioned_oof.check_fit_options`)."""
    if not p.spark or not ("oof" in p.stages or ("flag" in p.stages and p.flag.pred_probs is None)):
        return
    from ..partitioned_oof import check_fit_options
    try:
        check_fit_options(p.oof.n_jobs, p.oof.device, names=("[oof] n_jobs", "[oof] device"),
                          engine="spark")
    except InputError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _open_sink(p, origin: str):
    if p.sink is None:
        return None, {}
    sink = make_sink(p.sink, origin)
    targets = {stage: t for stage, t in (("flag", p.sink.flags), ("clean", p.sink.cleaned)) if t}
    for stage, target in targets.items():
        key = "flags" if stage == "flag" else "cleaned"
        try:
            sink.check(target)
        except (InputError, ConfigError) as exc:
            sink.close()
            where = _connection_key(p.sink) if p.sink.type == "postgres" and "connect" in str(exc) else key
            raise ConfigError(f"{origin}: [sink] {where}: {exc}") from None
    return sink, targets


def preflight(p, origin: str | None = None) -> Endpoints:
    """Open and check everything a pipeline touches; no data is read beyond the schema.

    Parameters
    ----------
    p : Pipeline
    origin : str, optional
        How to name the pipeline in messages (default: its file).

    Returns
    -------
    Endpoints

    Raises
    ------
    ConfigError
        An unreachable or missing source, table or file; a missing column; a multi-label label of
        the wrong type or a setting multi-label data cannot take; an unreachable sink; a custom
        model that cannot be imported.
    """
    origin = origin or str(p.file)
    _check_model(p, origin)
    source, schema = _open_source(p, origin)
    try:
        check_columns(p, schema, origin)
        multi_label = _check_multilabel(p, schema, origin)
        _check_partitioned(p, multi_label, origin)
        _check_spark(p, schema, multi_label, origin)
        _check_spark_fit(p, origin)
        sink, targets = _open_sink(p, origin)
    except BaseException:
        source.close()
        raise
    return Endpoints(source, sink, schema, targets, multi_label)
