"""Pipeline files: TOML -> frozen dataclasses, every key and type checked before any work starts.

A pipeline file names the source, the columns, the settings of the four stages (``oof``, ``flag``,
``clean``, ``retrain``) and where results go (``sink``); see ``docs/PIPELINES.md`` for every key.
:func:`load_pipeline` checks the structure (unknown keys, types, choices, ranges, passwords,
names); :mod:`cleanpipe.pipeline.preflight` then checks that the source and sink are reachable
and the columns exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings as S
from ..errors import ConfigError, InputError
from ..formats import FORMATS, TableFormat
from .rules import check_values, example_value

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib
    except ImportError:
        raise ImportError("cleanpipe run needs tomllib (Python 3.11+) or, on Python 3.10, "
                          "pip install tomli") from None

#: The stages, in the order data flows through them.
STAGES = ("oof", "flag", "clean", "retrain")
SOURCE_TYPES = (*FORMATS, "duckdb", "postgres", "delta", "iceberg")


@dataclass(frozen=True)
class ParquetSource:
    """``[source] type = "parquet"`` (or ``"csv"``, ``"jsonl"``, ``"feather"``): a file,
    directory, glob or ``s3://`` URI of table files in that format; ``delimiter`` and ``header``
    for CSV only."""

    path: str
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_anonymous: bool = False
    delimiter: str | None = None
    header: bool = True
    type: str = "parquet"


@dataclass(frozen=True)
class DuckDBSource:
    """``[source] type = "duckdb"``: a table or a query of a DuckDB database file."""

    database: str
    table: str | None = None
    query: str | None = None
    schema: str | None = None
    type: str = "duckdb"


@dataclass(frozen=True)
class PostgresSource:
    """``[source] type = "postgres"``: a table or a query, over ADBC."""

    uri: str | None = None
    uri_env: str | None = None
    table: str | None = None
    query: str | None = None
    schema: str | None = None
    type: str = "postgres"


@dataclass(frozen=True)
class DeltaSource:
    """``[source] type = "delta"``: a local Delta Lake table (its folder), at its latest
    ``version`` unless one is given."""

    path: str
    version: int | None = None
    type: str = "delta"


@dataclass(frozen=True)
class IcebergSource:
    """``[source] type = "iceberg"``: an Iceberg table ``namespace.name`` of a catalog configured
    in pyiceberg (``catalog``) or here (``catalog_uri``, ``warehouse``), at its current snapshot
    unless ``snapshot_id`` is given."""

    table: str
    catalog: str = "default"
    catalog_uri: str | None = None
    warehouse: str | None = None
    snapshot_id: int | None = None
    type: str = "iceberg"


@dataclass(frozen=True)
class ParquetSink:
    """``[sink] type = "parquet"``: result files, local paths or ``s3://`` URIs."""

    flags: str | None = None
    cleaned: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_anonymous: bool = False
    type: str = "parquet"


@dataclass(frozen=True)
class DuckDBSink:
    """``[sink] type = "duckdb"``: result tables in a DuckDB database file."""

    database: str
    flags: str | None = None
    cleaned: str | None = None
    schema: str | None = None
    type: str = "duckdb"


@dataclass(frozen=True)
class PostgresSink:
    """``[sink] type = "postgres"``: result tables in PostgreSQL."""

    uri: str | None = None
    uri_env: str | None = None
    flags: str | None = None
    cleaned: str | None = None
    schema: str | None = None
    type: str = "postgres"


@dataclass(frozen=True)
class DeltaSink:
    """``[sink] type = "delta"``: result tables as local Delta Lake tables (folders)."""

    flags: str | None = None
    cleaned: str | None = None
    type: str = "delta"


@dataclass(frozen=True)
class IcebergSink:
    """``[sink] type = "iceberg"``: result tables ``namespace.name`` in an Iceberg catalog."""

    flags: str | None = None
    cleaned: str | None = None
    catalog: str = "default"
    catalog_uri: str | None = None
    warehouse: str | None = None
    type: str = "iceberg"


@dataclass(frozen=True)
class Columns:
    """``[columns]``: the label, and which columns are features.

    Multi-label data has either a list ``label`` column (detected from the schema, as ``cleanpipe
    flag`` does) or several 0/1 columns named by ``labels``; ``multi_label = true`` says so
    explicitly (then a ``label`` that is not a list column is an error rather than single-label).
    """

    label: str = "label"
    labels: tuple[str, ...] | None = None
    multi_label: bool = False
    features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    @property
    def target(self):
        """The label as the library takes it: ``label``, or the list ``labels`` of 0/1 columns."""
        return list(self.labels) if self.labels else self.label

    @property
    def label_columns(self) -> tuple:
        """The column(s) holding the label."""
        return tuple(self.labels) if self.labels else (self.label,)


@dataclass(frozen=True)
class OofSettings:
    """``[oof]``: cross-validated probabilities. ``model`` is one family or several: the TOML list
    ``["hgb", "logreg"]`` is kept as ``"hgb,logreg"``, the spelling of ``cleanpipe flag --model``.
    ``backend`` (also spelled ``engine``, as ``--engine`` is ``--backend`` on the command line) is
    where the pipeline runs: ``"spark"`` runs every stage on Spark, ``scheduler`` then being the
    Spark master (default: the active session, else ``local[*]``)."""

    model: str = field(default=S.DEFAULT_MODEL, metadata={"list_as_csv": True})
    folds: int = S.OOF["folds"].default
    seed: int = S.OOF["seed"].default
    n_jobs: int = S.OOF["n_jobs"].default
    backend: str = S.PIPELINE_OOF["backend"].default
    scheduler: str | None = None
    device: str = S.OOF["device"].default


#: What an unset ``[flag] method`` / ``noisy_threshold`` means on single-label data: the defaults of
#: ``cleanpipe flag``. Multi-label data takes the multi-label ones.
SINGLE_LABEL_FLAG_DEFAULTS = {"method": S.DEFAULT_METHOD, "noisy_threshold": S.NOISY_THRESHOLD}


@dataclass(frozen=True)
class FlagSettings:
    """``[flag]``: the detector. ``method`` and ``noisy_threshold`` left unset (None) take the
    detector's defaults for the data: single- and multi-label ones differ, as with ``cleanpipe flag``.
    ``checks = true`` also runs the data checks (``cleanpipe flag --checks``, settings in
    ``[checks]``); ``against`` names a second table for the leakage check (and implies ``checks``).
    ``pred_probs`` names a list column of the source holding out-of-fold probabilities (then no
    model is fitted); with ``[oof] backend = "dask"`` the stage flags a partitioned Parquet dataset
    partition by partition on the cluster (:attr:`Pipeline.partitioned`), computing the
    probabilities there when no column holds them (:attr:`Pipeline.partitioned_oof`)."""

    method: str | None = None
    mixture: str = S.FLAG["mixture"].default
    noisy_threshold: float | None = None
    checks: bool = False
    against: str | None = None
    pred_probs: str | None = None

    def detector(self, multi_label: bool = False) -> dict:
        """The detector's keyword arguments: the settings given, plus, for single-label data, the
        single-label defaults for the unset ones (multi-label data leaves those to its detector)."""
        given = {k: getattr(self, k) for k in S.FLAG if getattr(self, k) is not None}
        return given if multi_label else {**SINGLE_LABEL_FLAG_DEFAULTS, **given}

    @property
    def runs_checks(self) -> bool:
        """Whether the flag stage runs the data checks (``checks``, or a table to compare with)."""
        return self.checks or self.against is not None


@dataclass(frozen=True)
class CleanSettings:
    """``[clean]``: what happens to flagged rows."""

    mode: str = S.CLEAN["mode"].default  # the defaults of ``cleanpipe clean``
    min_weight: float = S.CLEAN["min_weight"].default
    relabel_p_noisy: float = S.CLEAN["relabel_p_noisy"].default
    relabel_score: float = S.CLEAN["relabel_score"].default
    relabel_add: float = S.CLEAN["relabel_add"].default  # multi-label relabel only
    relabel_remove: float = S.CLEAN["relabel_remove"].default
    drop_flag_columns: bool = False
    drop_duplicates: bool = False  # needs flag's checks: keep one row of each duplicate set
    drop_outliers: bool = False


@dataclass(frozen=True)
class RetrainSettings:
    """``[retrain]``: the noise-robust model trained on the cleaned (or flagged) table.

    The defaults are those of ``cleanpipe retrain`` (``loss = None``: its default loss), read from
    :mod:`cleanpipe.settings`; the optimisation settings are the fields of
    :class:`cleanpipe.settings.TrainConfig` (:meth:`train_config` builds it).
    """

    loss: str | None = None
    loss_params: dict = field(default_factory=dict)
    noisy_weight: str = S.RETRAIN["noisy_weight"].default
    warmup: int = S.RETRAIN["warmup"].default
    mixup: float = S.TRAIN["mixup"].default
    prior_reg: float = S.TRAIN["prior_reg"].default
    epochs: int = S.TRAIN["epochs"].default
    batch_size: int = S.TRAIN["batch_size"].default
    lr: float = S.TRAIN["lr"].default
    weight_decay: float = S.TRAIN["weight_decay"].default
    hidden: tuple[int, ...] = S.TRAIN["hidden"].default
    dropout: float = S.TRAIN["dropout"].default
    patience: int = S.TRAIN["patience"].default
    val_fraction: float = S.TRAIN["val_fraction"].default
    seed: int = S.TRAIN["seed"].default
    device: str = S.TRAIN["device"].default
    threads: int | None = S.TRAIN["threads"].default

    def train_config(self) -> S.TrainConfig:
        """The training loop's settings, checked."""
        return S.TrainConfig.take(self).check()


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file.

    Attributes
    ----------
    name : str
        Names the ``runs/<name>/`` directory (default: the file name without ``.toml``).
    file : pathlib.Path
        The pipeline file; relative paths inside it were resolved against its folder.
    stages : tuple of str
        A contiguous run of :data:`STAGES`.
    source, columns, oof, flag, clean, retrain, sink
        The sections (``sink`` is ``None`` when results stay in the run directory only).
    checks : CheckSettings
        ``[checks]``: the data checks' settings, used when ``[flag] checks = true``.
    batch_rows : int
        Rows per record batch when tables are streamed.
    """

    name: str
    file: Path
    stages: tuple
    source: object
    columns: Columns
    oof: OofSettings
    flag: FlagSettings
    clean: CleanSettings
    retrain: RetrainSettings
    sink: object | None = None
    batch_rows: int = 65536
    description: str = ""
    checks: S.CheckSettings = field(default_factory=S.CheckSettings)

    @property
    def spark(self) -> bool:
        """Every stage runs on Spark (``[oof] backend = "spark"``)."""
        return self.oof.backend == "spark"

    @property
    def partitioned(self) -> bool:
        """The flag stage runs partition by partition on Dask (``cleanpipe flag --backend dask
        DATASET``): ``[oof] backend = "dask"`` with a ``[flag] pred_probs`` column, or without
        one on a Parquet dataset (:attr:`partitioned_oof`)."""
        return ("flag" in self.stages and self.oof.backend == "dask"
                and (self.flag.pred_probs is not None or self.partitioned_oof))

    @property
    def partitioned_oof(self) -> bool:
        """The flag stage also computes the out-of-fold probabilities on the workers
        (:mod:`cleanpipe.partitioned_oof`): ``[oof] backend = "dask"``, no ``[flag] pred_probs``,
        and a ``[source]`` that is a Parquet dataset (a directory or an ``s3://`` prefix; a single
        file keeps the one-machine path, its fold fits sent to the cluster)."""
        from ..partitions import is_dataset
        src = self.source
        return ("flag" in self.stages and self.oof.backend == "dask" and self.flag.pred_probs is None
                and getattr(src, "type", None) == "parquet"
                and not any(ch in src.path.split("?", 1)[0] for ch in "*?[")
                and is_dataset(src.path))

    def to_dict(self) -> dict:
        """JSON-ready settings (what the manifest records); holds no secret by construction."""
        out = dataclasses.asdict(self)
        out["file"] = str(self.file)
        return out


_SOURCES = {**{kind: ParquetSource for kind in FORMATS}, "duckdb": DuckDBSource,
            "postgres": PostgresSource, "delta": DeltaSource, "iceberg": IcebergSource}
_SINKS = {"parquet": ParquetSink, "duckdb": DuckDBSink, "postgres": PostgresSink,
          "delta": DeltaSink, "iceberg": IcebergSink}
_SECTIONS = {"columns": Columns, "oof": OofSettings, "flag": FlagSettings, "clean": CleanSettings,
             "retrain": RetrainSettings, "checks": S.CheckSettings}
_TOP = {"name": str, "stages": tuple[str, ...], "batch_rows": int, "description": str}

_WANT = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
         dict: "a table of numbers such as { q = 0.7 }"}


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _toml_type(value) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _coerce(value, hint, where: str, example: str):
    """Check one value against a type hint; return it in the dataclass's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        item = args[0]
        ok = isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        if not ok:
            want = "a list of strings" if item is str else "a list of integers"
            raise ConfigError(f"{where} must be {want}, got {value!r} ({_toml_type(value)}); "
                              f"write e.g. {example}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is dict:
        if not isinstance(value, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            raise ConfigError(f"{where} must be {_WANT[dict]}, got {value!r}; write e.g. {example}")
        return {str(k): float(v) for k, v in value.items()}
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {_WANT.get(hint, hint.__name__)}, got {value!r} "
                          f"({_toml_type(value)}); write e.g. {example}")
    return value


def _build(cls, raw, section: str, origin: str):
    """Build dataclass ``cls`` from the TOML table ``raw`` of ``[section]``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: '{section}' must be a [{section}] table, got {_toml_type(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{origin}: [{section}] has an unknown key '{key}'; "
                              f"{_suggest(key, names)}(keys: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            value = raw[f.name]
            if f.metadata.get("list_as_csv") and isinstance(value, list):
                value = ",".join(_coerce(value, tuple[str, ...], f"{origin}: [{section}] {f.name}",
                                         example_value(f.name, ())))
            kwargs[f.name] = _coerce(value, hints[f.name], f"{origin}: [{section}] {f.name}",
                                     example_value(f.name, f.default))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{origin}: [{section}] {f.name} is missing; add "
                              f"{example_value(f.name, None)}")
    return cls(**kwargs)


def _typed(raw, section: str, origin: str, registry: dict):
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: '{section}' must be a [{section}] table, got {_toml_type(raw)}")
    kind = raw.get("type")
    if kind is None:
        raise ConfigError(f"{origin}: [{section}] type is missing; add type = "
                          + " / ".join('"' + k + '"' for k in registry))
    if kind not in registry:
        raise ConfigError(f"{origin}: [{section}] type = {kind!r} is not known; {_suggest(str(kind), registry)}"
                          f"choose one of: {', '.join(registry)}")
    built = _build(registry[kind], raw, section, origin)
    if isinstance(built, ParquetSource) and kind != "csv" and ("delimiter" in raw or "header" in raw):
        raise ConfigError(f"{origin}: [{section}] delimiter / header apply to type = \"csv\" only; "
                          f"remove them from this type = \"{kind}\" source")
    if isinstance(built, ParquetSource):
        try:  # the format's own checks (a one-character delimiter), named in the file's terms
            TableFormat(kind, delimiter=built.delimiter, header=built.header)
        except InputError as exc:
            raise ConfigError(f"{origin}: [{section}] {exc}") from None
    return built


def apply_overrides(raw: dict, overrides) -> dict:
    """Set ``section.key=value`` pairs (``--set``) on the parsed TOML; values are TOML values,
    falling back to plain strings (``--set oof.model=logreg``)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        path, sep, text = str(item).partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or not all(keys) or len(keys) > 2:
            raise ConfigError(f"--set {item!r} must be KEY=VALUE or SECTION.KEY=VALUE, e.g. "
                              "--set oof.folds=3")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if keys == ["oof", "engine"]:  # the alias, as in the file (_engine_alias)
            keys = ["oof", "backend"]
        if len(keys) == 1:
            raw[keys[0]] = value
        else:
            section = raw.setdefault(keys[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"--set {item!r}: '{keys[0]}' is not a section")
            section[keys[1]] = value
    return raw


def _resolve_paths(source, sink, base: Path, flag=None):
    """Relative local paths are relative to the pipeline file's folder, not the working directory;
    with ``flag``, returns its ``against`` resolved too."""
    def local(p):
        if p is None or "://" in p or p == ":memory:" or Path(p).is_absolute():  # a URI as given
            return p
        return str((base / p).resolve())

    def catalog(section):
        # A SQLite catalog and a file warehouse named by a relative path: relative to the file too.
        uri, wh = section.catalog_uri, section.warehouse
        if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") \
                and uri != "sqlite:///:memory:":
            uri = "sqlite:///" + local(uri[len("sqlite:///"):])
        if wh and "://" not in wh:
            wh = "file://" + local(wh)
        return dataclasses.replace(section, catalog_uri=uri, warehouse=wh)

    if isinstance(source, (ParquetSource, DeltaSource)):
        source = dataclasses.replace(source, path=local(source.path))
    elif isinstance(source, DuckDBSource):
        source = dataclasses.replace(source, database=local(source.database))
    elif isinstance(source, IcebergSource):
        source = catalog(source)
    if isinstance(sink, (ParquetSink, DeltaSink)):
        sink = dataclasses.replace(sink, flags=local(sink.flags), cleaned=local(sink.cleaned))
    elif isinstance(sink, DuckDBSink):
        sink = dataclasses.replace(sink, database=local(sink.database))
    elif isinstance(sink, IcebergSink):
        sink = catalog(sink)
    if flag is not None:
        return source, sink, dataclasses.replace(flag, against=local(flag.against))
    return source, sink


def _engine_alias(raw: dict, origin: str) -> dict:
    """``[oof] engine`` is ``[oof] backend`` under its command-line alias (``--engine``)."""
    oof = raw.get("oof")
    if not isinstance(oof, dict) or "engine" not in oof:
        return raw
    if "backend" in oof:
        raise ConfigError(f"{origin}: [oof] sets both engine and backend, which are one setting; "
                          "keep one")
    oof = {("backend" if k == "engine" else k): v for k, v in oof.items()}
    return {**raw, "oof": oof}


def load_pipeline(path, *, overrides=(), allow_custom_model: bool = False) -> Pipeline:
    """Read and check a pipeline file.

    Parameters
    ----------
    path : str or path-like
        The ``.toml`` file.
    overrides : sequence of str, default=()
        ``SECTION.KEY=VALUE`` settings applied on top of the file (``--set``).
    allow_custom_model : bool, default=False
        Accept ``[oof] model = "package.module:Class"``, which imports and runs that code.

    Returns
    -------
    Pipeline

    Raises
    ------
    ConfigError
        A missing or unparsable file, an unknown section or key, a wrong type, a value out of
        range, a non-contiguous stage list, a password in a URI, a name that could leave the runs
        directory; the message names the file and key and says what to write instead.
    """
    path = Path(path)
    origin = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"pipeline file '{path}' does not exist; pass the path of a .toml file "
                          "such as pipelines/digits_parquet.toml") from None
    except IsADirectoryError:
        raise ConfigError(f"pipeline file '{path}' is a directory; pass a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML ({exc}); fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline file '{path}' ({exc})") from None
    raw = apply_overrides(_engine_alias(raw, origin), overrides)

    known = set(_TOP) | set(_SECTIONS) | {"source", "sink"}
    for key in raw:
        if key not in known:
            kind = "section" if isinstance(raw[key], dict) else "key"
            raise ConfigError(f"{origin}: unknown {kind} '{key}'; {_suggest(key, known)}"
                              f"(allowed: {', '.join(sorted(known))})")
    top = {}
    for key, hint in _TOP.items():
        if key in raw:
            top[key] = _coerce(raw[key], hint, f"{origin}: {key}", example_value(key, None))
    if "source" not in raw:
        raise ConfigError(f"{origin}: the [source] section is missing; add [source] with type = "
                          "\"parquet\" and path = \"data.parquet\" (or a duckdb/postgres source)")
    source = _typed(raw["source"], "source", origin, _SOURCES)
    sink = _typed(raw["sink"], "sink", origin, _SINKS) if "sink" in raw else None
    sections = {name: _build(cls, raw.get(name, {}), name, origin) for name, cls in _SECTIONS.items()}
    source, sink, sections["flag"] = _resolve_paths(source, sink, path.resolve().parent,
                                                    sections["flag"])
    pipeline = Pipeline(name=top.get("name", path.stem), file=path.resolve(),
                        stages=top.get("stages", STAGES), source=source, sink=sink,
                        batch_rows=top.get("batch_rows", 65536),
                        description=top.get("description", ""), **sections)
    check_values(pipeline, origin, allow_custom_model=allow_custom_model)
    return pipeline
