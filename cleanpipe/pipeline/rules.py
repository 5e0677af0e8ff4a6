"""Value checks of a parsed pipeline: choices, ranges, stage order, names, passwords.

Each failure is one line naming the file and key, what is wrong and what to write instead. Types
were already checked by :mod:`cleanpipe.pipeline.config`; reachability of the source and sink is
checked later by :mod:`cleanpipe.pipeline.preflight`.
"""

from __future__ import annotations

import difflib

import pyarrow as pa

from .. import settings as S
from ..errors import ConfigError
from ..features import is_list_type
from ..loss_kinds import LOSS_KINDS, loss_choices
from ..sources._sql import quote_ident
from ..sources.postgres import check_identifier, check_uri
from .rundir import check_name

_STAGES = ("oof", "flag", "clean", "retrain")

_EXAMPLES = {
    "name": 'name = "digits"', "stages": 'stages = ["oof", "flag", "clean", "retrain"]',
    "batch_rows": "batch_rows = 65536", "description": 'description = "nightly label audit"',
    "path": 'path = "data/train.parquet"', "database": 'database = "warehouse.duckdb"',
    "table": 'table = "train"', "query": 'query = "SELECT * FROM train"',
    "uri": 'uri = "postgresql://user@host:5432/db"', "uri_env": 'uri_env = "CLEANPIPE_PG_URI"',
    "schema": 'schema = "public"', "flags": 'flags = "train_flags"', "cleaned": 'cleaned = "train_cleaned"',
    "s3_endpoint": 's3_endpoint = "http://127.0.0.1:9000"', "s3_region": 's3_region = "us-east-1"',
    "labels": 'labels = ["cat", "dog", "sky"]',
    "features": 'features = ["x1", "x2"]', "exclude": 'exclude = ["row_id"]', "ids": 'ids = ["row_id"]',
    "scheduler": 'scheduler = "tcp://127.0.0.1:8786"', "threads": "threads = 1",
    "loss_params": "loss_params = { q = 0.7 }", "hidden": "hidden = [256, 128]",
    "model": 'model = ["hgb", "logreg"]', "version": "version = 3", "snapshot_id": "snapshot_id = 1",
    "catalog": 'catalog = "default"', "catalog_uri": 'catalog_uri = "sqlite:///catalog.db"',
    "warehouse": 'warehouse = "warehouse"', "pred_probs": 'pred_probs = "probs"',
}


def example_value(key: str, default) -> str:
    """``key = <a valid TOML value>`` for error messages, from the default when there is one."""
    if key in _EXAMPLES and (default is None or isinstance(default, (tuple, dict))
                             or key in ("name", "stages")):
        return _EXAMPLES[key]
    if isinstance(default, bool):
        return f"{key} = {'true' if default else 'false'}"
    if isinstance(default, str):
        return f'{key} = "{default}"'
    if isinstance(default, (int, float)):
        return f"{key} = {default}"
    return _EXAMPLES.get(key, f"{key} = ...")


def _choice(origin: str, key: str, value, choices) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{origin}: {key} = {value!r} is not known; {hint}choose one of: "
                          f"{', '.join(choices)}")


def _range(origin: str, key: str, ok: bool, value, want: str) -> None:
    if not ok:
        raise ConfigError(f"{origin}: {key} = {value!r} is out of range; it must be {want}")


def check_stages(stages, origin: str) -> None:
    """Known stage names, each once, contiguous and in data-flow order."""
    if not stages:
        raise ConfigError(f"{origin}: stages is empty; list at least one of: {', '.join(_STAGES)}")
    for s in stages:
        _choice(origin, "stages entry", s, _STAGES)
    idx = [_STAGES.index(s) for s in stages]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        want = list(_STAGES[min(idx):max(idx) + 1])
        raise ConfigError(f"{origin}: stages = {list(stages)} must be a contiguous run in the order "
                          f"{' -> '.join(_STAGES)}; write stages = {want}")


def _check_source(src, origin: str) -> None:
    if src.type in ("duckdb", "postgres"):
        if (src.table is None) == (src.query is None):
            raise ConfigError(f"{origin}: [source] needs exactly one of table and query; write "
                              'table = "train" or query = "SELECT ..."')
        for key in ("table", "schema"):
            value = getattr(src, key)
            if value is not None:
                (check_identifier if src.type == "postgres" else quote_ident)(
                    value, key=f"{origin}: [source] {key}")
    if src.type == "iceberg":
        _iceberg_name(src.table, f"{origin}: [source] table")
    _check_connection(src, "source", origin, check_uri)


def _iceberg_name(name: str, where: str) -> None:
    namespace, _, table = name.rpartition(".")
    if not namespace or not table:
        raise ConfigError(f"{where} = {name!r} needs a namespace; write it as 'namespace.table', "
                          "e.g. 'default.train'")


def _check_connection(cfg, section: str, origin: str, check_uri) -> None:
    if cfg.type != "postgres":
        return
    if cfg.uri is not None and cfg.uri_env is not None:
        raise ConfigError(f"{origin}: [{section}] sets both uri and uri_env; keep one")
    if cfg.uri is not None:
        check_uri(cfg.uri, key=f"{origin}: [{section}] uri")


def _check_sink(p, origin: str) -> None:
    sink = p.sink
    if sink.flags is None and sink.cleaned is None:
        raise ConfigError(f"{origin}: [sink] names no target; add flags = ... and/or cleaned = ...")
    for key, stage in (("flags", "flag"), ("cleaned", "clean")):
        target = getattr(sink, key)
        if target is None:
            continue
        if stage not in p.stages:
            raise ConfigError(f"{origin}: [sink] {key} is set but stages = {list(p.stages)} has no "
                              f"{stage} stage; add it to stages or remove [sink] {key}")
        if sink.type == "postgres":
            check_identifier(target, key=f"{origin}: [sink] {key}")
        elif sink.type == "duckdb":
            quote_ident(target, key=f"{origin}: [sink] {key}")
        elif sink.type == "iceberg":
            _iceberg_name(target, f"{origin}: [sink] {key}")
        elif "\x00" in target or not target:
            raise ConfigError(f"{origin}: [sink] {key} must be a file path or s3:// URI")
    if sink.flags is not None and sink.flags == sink.cleaned:
        raise ConfigError(f"{origin}: [sink] flags and cleaned both name {sink.flags!r}; give each "
                          "its own target")
    if getattr(sink, "schema", None) is not None:
        quote_ident(sink.schema, key=f"{origin}: [sink] schema")
    _check_connection(sink, "sink", origin, check_uri)
    # Whether a target collides with the source is decided on canonical identities, once the
    # source and sink are open: cleanpipe.safety.guard_pipeline.


def check_values(p, origin: str, *, allow_custom_model: bool = False) -> None:
    """Check every value of the pipeline ``p`` (a :class:`~cleanpipe.pipeline.config.Pipeline`).

    Raises
    ------
    ConfigError
        The first problem found, naming ``origin`` (the file) and the key.
    """
    check_name(p.name, what=f"{origin}: name")
    check_stages(p.stages, origin)
    _range(origin, "batch_rows", p.batch_rows >= 1, p.batch_rows, "a positive integer")
    c = p.columns
    if not c.label:
        raise ConfigError(f"{origin}: [columns] label is empty; write label = \"<label column>\"")
    if c.features is not None and not c.features:
        raise ConfigError(f"{origin}: [columns] features is an empty list; list feature columns or "
                          "remove the key to use every other column")
    _check_labels(c, origin)
    for key in ("features", "exclude", "ids"):
        clash = [col for col in c.label_columns if col in (getattr(c, key) or ())]
        if clash and (key == "features" or c.labels):
            raise ConfigError(f"{origin}: [columns] {key} includes the label '{clash[0]}'; remove it")

    o = p.oof
    names = [m.strip() for m in o.model.split(",")]
    if "" in names:
        raise ConfigError(f"{origin}: [oof] model = {o.model!r} has an empty name; write e.g. "
                          'model = "hgb" or model = ["hgb", "logreg"]')
    for name in names:
        if ":" in name:
            if not allow_custom_model:
                raise ConfigError(f"{origin}: [oof] model = {o.model!r} names custom code, which "
                                  "cleanpipe would import and run; pass --allow-custom-model to allow it")
        else:
            _choice(origin, "[oof] model", name, S.MODELS)
    if len(set(names)) < len(names):
        raise ConfigError(f"{origin}: [oof] model = {o.model!r} names a model family twice; list "
                          "each once")
    _check_group(origin, "oof", S.PIPELINE_OOF, o)
    if o.backend == "dask" and not o.scheduler:
        raise ConfigError(f"{origin}: [oof] backend = \"dask\" needs scheduler = \"tcp://HOST:8786\" "
                          "(or --scheduler); start one with `dask scheduler`")
    # an unset method / noisy_threshold takes the default of the data's kind; the multi-label
    # subset of methods is checked once the data is known
    _check_group(origin, "flag", S.FLAG, p.flag, skip_none=True)
    _check_group(origin, "checks", S.CHECKS, p.checks, skip_none=True)
    if p.flag.against is not None and ("\x00" in p.flag.against or not p.flag.against):
        raise ConfigError(f"{origin}: [flag] against must be the path of a table file")
    _check_pred_probs(p, origin)
    _check_spark(p, origin)
    _check_clean_drops(p, origin)
    _check_group(origin, "clean", S.CLEAN, p.clean)
    _check_retrain(p, origin)
    if c.labels or c.multi_label:
        check_multilabel_settings(p, origin)
    _check_source(p.source, origin)
    if p.sink is not None:
        _check_sink(p, origin)


def _check_pred_probs(p, origin: str) -> None:
    """``[flag] pred_probs`` (a list column of the source) and, with ``[oof] backend = "dask"``,
    what flagging partition by partition can take (as ``cleanpipe flag --backend dask``)."""
    f = p.flag
    if f.pred_probs is None:
        _check_partitioned(p, origin)
        return
    if not f.pred_probs:
        raise ConfigError(f"{origin}: [flag] pred_probs is empty; name the list column of "
                          'out-of-fold probabilities, e.g. pred_probs = "probs"')
    if "oof" in p.stages:
        rest = [s for s in p.stages if s != "oof"]
        raise ConfigError(f"{origin}: [flag] pred_probs = {f.pred_probs!r} takes the probabilities "
                          "from the source, so the oof stage has nothing to compute; write "
                          f"stages = {rest} or remove pred_probs")
    _check_partitioned(p, origin)


def _check_partitioned(p, origin: str) -> None:
    """What flagging partition by partition on Dask can take (as ``cleanpipe flag --backend dask``
    on a dataset), with the probabilities in a column or computed on the workers."""
    if not p.partitioned:
        return
    f = p.flag
    if f.pred_probs is None:
        why = ("[oof] backend = \"dask\" on a Parquet dataset computes the out-of-fold "
               "probabilities and the flags partition by partition, in the flag stage")
        if "oof" in p.stages:
            rest = [s for s in p.stages if s != "oof"]
            raise ConfigError(f"{origin}: {why}, so the oof stage has nothing to compute; write "
                              f"stages = {rest}, or point [source] path at one file to run the oof "
                              "stage on one machine")
    else:
        why = "[oof] backend = \"dask\" with [flag] pred_probs flags partition by partition"
    src = p.source
    if src.type != "parquet":
        raise ConfigError(f"{origin}: {why}, from a Parquet dataset; [source] type = {src.type!r} "
                          "cannot be read that way: write the table as a directory of Parquet files, "
                          "or remove backend = \"dask\" to flag on one machine")
    if any(ch in src.path.split("?", 1)[0] for ch in "*?["):
        raise ConfigError(f"{origin}: {why}; [source] path = {src.path!r} is a glob: name the "
                          "dataset's directory or s3:// prefix instead")
    for key in ("checks", "against"):
        if (key == "checks" and f.checks) or (key == "against" and f.against is not None):
            raise ConfigError(f"{origin}: {why}, where [flag] {key} is not available; remove "
                              f"{key}, or remove backend = \"dask\" to flag on one machine")
    if p.columns.labels or p.columns.multi_label:
        check_tags_partition_wise(p, origin, why, "backend = \"dask\" to flag on one machine")
    if "retrain" in p.stages:
        rest = [s for s in p.stages if s != "retrain"]
        raise ConfigError(f"{origin}: {why}, and retrain trains one model on one machine; write "
                          f"stages = {rest} (then cleanpipe retrain <run>/clean/cleaned on a machine "
                          "that holds the cleaned rows), or remove backend = \"dask\"")
    if "clean" in p.stages:  # the clean stage cleans partition by partition too
        for key in ("drop_duplicates", "drop_outliers"):
            if getattr(p.clean, key):
                raise ConfigError(f"{origin}: {why}, and cleans partition by partition, where "
                                  f"[clean] {key} is not available; remove it, or remove "
                                  "backend = \"dask\" to run on one machine")
    if p.sink is not None:
        for key, where in (("flags", "<run>/flag/flags/"), ("cleaned", "<run>/clean/cleaned/")):
            if getattr(p.sink, key) is not None and (key == "flags" or "clean" in p.stages):
                raise ConfigError(f"{origin}: {why}; its {key} dataset stays in the run directory "
                                  f"({where}), so remove [sink] {key}")


def check_tags_partition_wise(p, origin: str, why: str, off: str) -> None:
    """What multi-label data needs partition by partition (Dask and Spark): no relabelling, which
    reads the probabilities of the whole table. Both engines fit the tag probabilities out of
    fold when no ``[flag] pred_probs`` is given (:mod:`cleanpipe.hashed_folds_multilabel`)."""
    if "clean" in p.stages and p.clean.mode == "relabel":
        raise ConfigError(f"{origin}: {why}, where [clean] mode = \"relabel\" is not available "
                          "for multi-label data; use mode = \"drop\" or \"weight\", or remove "
                          f"{off}")


#: Source types Spark reads in a pipeline (:mod:`cleanpipe.spark_tables`).
SPARK_SOURCES = ("parquet", "delta", "iceberg")


def _check_spark(p, origin: str) -> None:
    """What ``[oof] backend = "spark"`` can run: oof, flag and clean on Spark, from a table Spark
    reads, into Parquet folders in the run directory (and a Delta sink)."""
    if not p.spark:
        return
    why = "[oof] backend = \"spark\" runs the stages on Spark"
    off = "or remove backend = \"spark\" to run on one machine"
    src = p.source
    if src.type not in SPARK_SOURCES:
        raise ConfigError(f"{origin}: {why}, which reads Parquet, Delta or Iceberg tables; [source] "
                          f"type = {src.type!r} is not one: write the table as Parquet, {off}")
    path = getattr(src, "path", None) or ""
    if src.type in ("parquet", "delta") and "://" in path and not (src.type == "parquet"
                                                                   and path.startswith("s3://")):
        # An s3:// Parquet folder is read by pyarrow in the tasks (spark_tables.read_object_store);
        # other schemes, and a Delta log on an object store, only by Spark's own connectors.
        reader = ("spark.read.format('delta').load('s3a://...') (delta-spark and hadoop-aws on "
                  "the cluster's classpath)" if src.type == "delta" else
                  "spark.read.parquet('s3a://...') (hadoop-aws on the cluster's classpath)")
        raise ConfigError(f"{origin}: {why}; [source] path = {path!r} must be a local Parquet file "
                          f"or directory, or an s3:// folder of Parquet files (read by the "
                          f"executors with pyarrow), as a pipeline does not set up Spark's "
                          f"object-store connector: read it in Python with {reader} and "
                          f"cleanpipe.spark.flag, use backend = \"dask\", {off}")
    if src.type == "parquet" and any(ch in path for ch in "*?["):
        raise ConfigError(f"{origin}: {why}; [source] path = {path!r} must be a local Parquet file "
                          f"or directory, not a glob: pass the directory that holds the files, "
                          f"{off}")
    if "retrain" in p.stages:
        rest = [s for s in p.stages if s != "retrain"]
        raise ConfigError(f"{origin}: {why}, and retrain trains one model on one machine; write "
                          f"stages = {rest} (then cleanpipe retrain <run>/clean/cleaned), {off}")
    f, c = p.flag, p.columns
    for key in ("checks", "against"):
        if (key == "checks" and f.checks) or (key == "against" and f.against is not None):
            raise ConfigError(f"{origin}: {why}, where [flag] {key} is not available; remove {key}, {off}")
    for key in ("drop_duplicates", "drop_outliers"):
        if getattr(p.clean, key) and "clean" in p.stages:
            raise ConfigError(f"{origin}: {why}, where [clean] {key} is not available; remove it, {off}")
    if c.labels or c.multi_label:
        check_tags_partition_wise(p, origin, why, "backend = \"spark\" to run on one machine")
    if len(c.ids) > 1:
        raise ConfigError(f"{origin}: {why}; each row's fold is a hash of one id column, but [columns] "
                          f"ids lists {len(c.ids)}: keep one, e.g. ids = [\"{c.ids[0]}\"]")
    if p.sink is not None and p.sink.type != "delta":
        raise ConfigError(f"{origin}: {why}; its flags and cleaned tables are Parquet folders in the "
                          f"run directory, published only to a Delta table: write [sink] type = "
                          f"\"delta\", or remove [sink]")


def _check_clean_drops(p, origin: str) -> None:
    """``[clean] drop_duplicates`` / ``drop_outliers`` read columns that only the checks write."""
    for key in ("drop_duplicates", "drop_outliers"):
        if getattr(p.clean, key) and "clean" in p.stages and "flag" in p.stages and not p.flag.runs_checks:
            raise ConfigError(f"{origin}: [clean] {key} = true needs the columns of the data checks; "
                              "add checks = true to [flag]")


def check_loss(p, origin: str, *, multi_label: bool = False) -> None:
    """``[retrain] loss`` names a usable loss (from :mod:`cleanpipe.loss_kinds`, no torch). Separate
    from :func:`check_values` because the kind of label may only be known from the data.

    On multi-label data only the multi-label losses are usable (``None`` means their default,
    ``bce``); a single-label loss there is refused as ``cleanpipe retrain`` refuses it.
    """
    loss = p.retrain.loss
    if loss is None:  # None: retrain's default
        return
    names = loss_choices(multi_label)
    if multi_label and (loss in LOSS_KINDS or loss == S.AUTO_LOSS) and loss not in names:
        raise ConfigError(f"{origin}: [retrain] loss = {loss!r} is a single-label "
                          "loss and the label holds sets of tags; choose one of: "
                          f"{', '.join(names)}, or remove the key for {S.DEFAULT_MULTILABEL_LOSS}")
    _choice(origin, "[retrain] loss", loss, names)


def _check_labels(c, origin: str) -> None:
    """``[columns] labels``: at least two distinct 0/1 columns, and not together with ``label``."""
    if c.labels is None:
        return
    if c.label != "label":
        raise ConfigError(f"{origin}: [columns] sets both label = {c.label!r} and labels = "
                          f"{list(c.labels)}; keep label for one list-of-tags column or labels for "
                          "several 0/1 columns")
    if len(c.labels) < 2 or not all(c.labels):
        raise ConfigError(f"{origin}: [columns] labels = {list(c.labels)} must name at least two 0/1 "
                          "columns, e.g. labels = [\"cat\", \"dog\"]; a single 0/1 column is "
                          "single-label: write label = \"cat\"")
    dup = next((col for i, col in enumerate(c.labels) if col in c.labels[:i]), None)
    if dup is not None:
        raise ConfigError(f"{origin}: [columns] labels = {list(c.labels)} names '{dup}' twice; list "
                          "each 0/1 column once")


def check_multilabel_settings(p, origin: str) -> None:
    """The settings that differ for multi-label data (a list label column, ``labels`` or
    ``multi_label = true``). Called when the file says the data is multi-label, and again by the
    preflight when the schema shows a list label column."""
    method = p.flag.method  # None: the multi-label default
    if "flag" in p.stages and method is not None and method not in S.MULTILABEL_METHODS:
        raise ConfigError(f"{origin}: [flag] method = {method!r} is single-label only and the label "
                          f"holds sets of tags; choose one of: {', '.join(S.MULTILABEL_METHODS)}")
    if p.stages[0] == "clean" and p.clean.mode == "relabel":
        raise ConfigError(f"{origin}: [clean] mode = \"relabel\" on multi-label data needs the "
                          "out-of-fold probabilities of a flag stage; add \"flag\" to stages or "
                          "use mode = \"drop\" or \"weight\"")


def check_multilabel_columns(p, schema, origin: str) -> None:
    """The multi-label label column(s) have a usable type: one list column, or 0/1 columns."""
    c = p.columns
    if not c.labels:
        t = schema.field(c.label).type
        if not is_list_type(t):
            raise ConfigError(f"{origin}: [columns] multi_label = true but label '{c.label}' has type "
                              f"{t}, not a list of tags; name a list column, or 0/1 columns with "
                              "labels = [\"a\", \"b\"], or remove multi_label")
        return
    for col in c.labels:
        t = schema.field(col).type
        t = t.value_type if pa.types.is_dictionary(t) else t
        if not (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise ConfigError(f"{origin}: [columns] labels names '{col}' of type {t}; each must be a "
                              "0/1 (or true/false) column, or use label = \"<list column>\" for a "
                              "list of tags")


def _check_group(origin: str, section: str, group: dict, values, *, skip_none: bool = False) -> None:
    """Every setting of ``group`` (:mod:`cleanpipe.settings`) in the ``[section]`` dataclass ``values``."""
    for key, setting in group.items():
        value = getattr(values, key)
        if skip_none and value is None:
            continue
        where = f"[{section}] {key}"
        if setting.choices is not None:
            _choice(origin, where, value, setting.choices)
        else:
            _range(origin, where, setting.ok(value), value, setting.want)


def _check_retrain(p, origin: str) -> None:
    _check_group(origin, "retrain", S.TRAIN, p.retrain)
    _check_group(origin, "retrain", S.RETRAIN, p.retrain)
