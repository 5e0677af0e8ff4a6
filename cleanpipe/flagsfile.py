"""The flags file and its summary sidecar: the format ``flag`` writes and ``clean``, ``retrain``,
``report`` and the pipeline read.

A flags file is the input table plus :data:`FLAG_COLUMNS` (and :data:`SUSPECT_COLUMNS` for
multi-label data), with flag's settings under ``cleanpipe.flag`` in its Parquet metadata; beside it
``<stem>.summary.json`` (:func:`summary_path_for`) holds the noise estimates. A cleaned table
carries ``cleanpipe.clean`` provenance (:func:`clean_provenance`), which keeps the noise matrix so
``retrain`` finds it when the cleaned file travels alone (:func:`flag_estimate`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np
import pyarrow as pa
import sklearn

from ._version import __version__
from .errors import InputError
from .io import read_json

#: Columns ``flag`` adds to every table.
FLAG_COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue")
#: Columns ``flag`` adds beyond :data:`FLAG_COLUMNS` for multi-label data.
SUSPECT_COLUMNS = ("suspect_missing", "suspect_spurious")
#: Columns ``flag --checks`` may add (see :class:`cleanpipe.checks.CheckResult`): which appear
#: depends on the run (the label checks need a single-label target, leakage ``--against``).
CHECK_COLUMNS = ("duplicate_set", "exact_duplicate_set", "is_exact_duplicate", "is_near_duplicate",
                 "label_conflict", "duplicate_label_agreement", "outlier_score", "is_outlier",
                 "probs_ood_score", "knn_label_score", "knn_is_label_issue", "knn_label_quality",
                 "null_fraction", "is_null_heavy",
                 "leaks_into_against", "against_row", "against_distance")
#: Columns of ``flag --checks`` that ``clean`` reads: each row's duplicate set (negative or null:
#: none) and whether it is an outlier.
DUPLICATE_SET_COLUMN, OUTLIER_COLUMN = "duplicate_set", "is_outlier"
#: Parquet metadata keys of flag's and clean's provenance.
FLAG_METADATA, CLEAN_METADATA = "cleanpipe.flag", "cleanpipe.clean"
_FIX = "pass the .summary.json that cleanpipe flag wrote"


def summary_path_for(flags_path: str | os.PathLike) -> Path:
    """The summary sidecar of a flags file: ``x.flags.parquet`` -> ``x.flags.summary.json``
    (a dataset folder ``flags/`` -> ``flags.summary.json``)."""
    path = Path(str(flags_path).rstrip("/"))
    return path.with_suffix(".summary.json") if path.suffix else Path(f"{path}.summary.json")


def against_path_for(flags_path: str | os.PathLike) -> Path:
    """Where ``flag --against`` writes the second table's check columns: ``x.flags.parquet`` ->
    ``x.flags.against.parquet``."""
    path = Path(str(flags_path).rstrip("/"))
    return path.with_suffix(".against.parquet") if path.suffix else Path(f"{path}.against.parquet")


def read_summary(path: str | os.PathLike, *, what: str = "summary", fix: str = _FIX) -> dict:
    """Read a ``flag`` summary JSON file.

    Raises
    ------
    InputError
        The file is missing, does not parse, or is not a JSON object.
    """
    obj = read_json(path, what=what, fix=fix)
    if not isinstance(obj, dict):
        raise InputError(f"{what} '{path}' holds a {type(obj).__name__}, not a flag summary object; "
                         f"{_FIX}")
    return obj


def table_metadata(table: pa.Table, key: str) -> dict:
    """The JSON value stored under ``key`` in the table's schema metadata (``{}`` if absent or bad)."""
    raw = (table.schema.metadata or {}).get(key.encode())
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def label_from_metadata(table: pa.Table, summary: dict | None = None) -> str | None:
    """The label column ``flag`` used, from a summary's settings or the table's provenance metadata.

    Several 0/1 label columns (multi-label) come back comma-separated, ``"a,b,c"``, as ``--label``
    takes them.
    """
    label = flag_settings(table, summary).get("label")
    if isinstance(label, str):
        return label
    if isinstance(label, list) and label and all(isinstance(c, str) for c in label):
        return ",".join(label)
    return None


def flag_settings(table: pa.Table, summary: dict | None = None) -> dict:
    """The settings ``flag`` ran with (label, features, ids, exclude, model, ...) for a flags or
    cleaned table: from ``summary``, else the table's ``cleanpipe.flag`` metadata, else the
    ``flag_settings`` its ``cleanpipe.clean`` provenance carries. ``{}`` when none is found."""
    for settings in ((summary or {}).get("settings"), table_metadata(table, FLAG_METADATA).get("settings"),
                     table_metadata(table, CLEAN_METADATA).get("flag_settings")):
        if isinstance(settings, dict) and settings:
            return settings
    return {}


def jsonable(v):
    """A value of an Arrow/numpy column as plain JSON (numbers, text, ISO dates)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (bytes,)):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def _versions() -> dict:
    return {"cleanpipe": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "pyarrow": pa.__version__}


def run_fields(det, settings, timings, notes) -> dict:
    """The summary keys every flag run shares: mixture, method, settings, versions, timings, notes."""
    return {"mixture": det.mixture.to_dict(), "method": det.method, "settings": settings or {},
            "versions": _versions(),
            "timings": {k: round(v, 4) for k, v in (timings or {}).items()},
            "notes": list(notes)}


def flag_provenance(summary: dict) -> dict:
    """What a flags file records under ``cleanpipe.flag``: version, source and settings."""
    # n_jobs changes nothing in the result, so it stays out of the file: outputs are
    # byte-identical across --n-jobs for one --seed.
    return {"cleanpipe_version": __version__, "source": summary["source"],
            "settings": {k: v for k, v in summary["settings"].items() if k != "n_jobs"}}


_UNSET = object()


def clean_provenance(*, source: str, settings: dict, counts: dict, flag_summary: dict | None,
                     flag_settings=None, summary_file=_UNSET, pred_probs=None) -> dict:
    """What a cleaned table records under ``cleanpipe.clean``.

    ``summary_file`` (where ``flag_summary`` was read; recorded when given, even as None),
    ``flag_settings`` (default: the summary's) and ``pred_probs`` (the probabilities a
    multi-label relabel used) are optional.
    """
    provenance = {"cleanpipe_version": __version__, "source": source}
    if summary_file is not _UNSET:
        provenance["flag_summary"] = None if summary_file is None else str(summary_file)
    provenance.update({
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings, "counts": counts,
        "flag_settings": (flag_settings if flag_settings is not None
                          else (flag_summary or {}).get("settings")),
    })
    if pred_probs is not None:
        provenance["pred_probs"] = str(pred_probs)
    if flag_summary is not None and "noise_matrix" in flag_summary:
        # retrain --loss forward finds the noise matrix here when the cleaned file travels alone
        provenance.update(classes=flag_summary.get("classes"), noise_matrix=flag_summary["noise_matrix"])
    return provenance


def flag_estimate(key: str, table: pa.Table, *, explicit=None, summaries=()) -> tuple | None:
    """``(value, classes)`` of a flag estimate (``noise_matrix`` or ``class_prior``) for ``table``.

    Looked up in ``explicit`` (a summary the user named: it must hold ``key``), else the first of
    ``summaries`` (paths; missing files are skipped) that holds it, else the ``cleanpipe.clean``
    provenance of ``table`` (and the summary it names). None when there is none.

    Raises
    ------
    InputError
        ``explicit`` cannot be read or lacks ``key``.
    """
    if explicit:
        s = read_summary(explicit, what="--noise-matrix")
        if key not in s:
            raise InputError(f"--noise-matrix '{explicit}' has no {key!r} key; pass the "
                             ".summary.json that cleanpipe flag wrote")
        return s[key], s.get("classes")
    meta = table_metadata(table, CLEAN_METADATA)
    candidates = [Path(p) for p in summaries]
    if meta.get("flag_summary"):
        candidates.append(Path(meta["flag_summary"]))
    for path in candidates:
        if path.is_file():
            s = read_summary(path, what="summary")
            if key in s:
                return s[key], s.get("classes")
    return (meta[key], meta.get("classes")) if key in meta else None
