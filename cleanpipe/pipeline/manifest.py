"""``manifest.json``: what a run read, with which settings and versions, and where each stage stands.

The manifest is rewritten atomically (temporary file, fsync, rename) after every change of state,
so a killed run leaves either the previous manifest or the new one. A stage is recorded as
``done`` only after its output folder has been renamed into place and published to the sink;
until then it is ``running`` (or ``failed``), and the next run computes it again.

Each stage carries a ``key``: a hash of everything its output depends on (the key of the stage
before it, or the input fingerprint, plus its own settings and the cleanpipe version). A rerun
reuses a ``done`` stage whose key is unchanged and whose outputs exist.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import resource
import uuid
from importlib import metadata
from pathlib import Path

from .._version import __version__
from ..io import TMP_PREFIX, write_json
from ..sources import digest
from .rundir import fsync_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "cleanpipe.run"
FORMAT_VERSION = 1


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def versions() -> dict:
    """Versions of the packages that shape the results (optional ones only when installed)."""
    out = {"cleanpipe": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "scikit-learn", "pyarrow", "joblib", "torch", "duckdb",
                 "adbc-driver-postgresql", "distributed"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


def stage_key(stage: str, upstream: str, settings: dict) -> str:
    """The key of ``stage``: its output is reusable while this value is unchanged."""
    return digest({"stage": stage, "upstream": upstream, "settings": settings, "cleanpipe": __version__})


def new_manifest(pipeline: str, run_id: str) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "pipeline": pipeline, "run_id": run_id,
            "created": now(), "updated": None, "status": "new", "pipeline_file": None,
            "input": {}, "settings": {}, "versions": {}, "stages": {}, "history": []}


def load_manifest(run_dir: Path, pipeline: str, run_id: str) -> dict:
    """The run's manifest, or a new one when there is none (or it cannot be read)."""
    path = Path(run_dir) / MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("stages"), dict):
            return data
        log.warning("%s is not a cleanpipe run manifest; starting the run afresh", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); starting the run afresh", path, exc)
    return new_manifest(pipeline, run_id)


def save_manifest(run_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically."""
    manifest["updated"] = now()
    final = Path(run_dir) / MANIFEST
    tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{MANIFEST}")
    try:
        write_json(manifest, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(final.parent)


def is_current(record: dict | None, key: str, run_dir: Path) -> bool:
    """Whether a stage record is ``done`` with ``key`` and every output it lists still exists."""
    if not record or record.get("status") != "done" or record.get("key") != key:
        return False
    return all((Path(run_dir) / rel).exists() for rel in record.get("outputs", {}).values())
