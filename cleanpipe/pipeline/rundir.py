"""The run directory ``<runs>/<pipeline>/<run-id>/``: safe names, the run id, a lock, atomic
stage folders.

The default run id is ``src-`` plus a hash of *where the data comes from* (the source's kind,
path, table or query; not its content and not the stage settings). Rerunning a pipeline on the
same source therefore lands in the same directory and resumes there, while changed settings are
detected per stage by the manifest; pointing the pipeline at another source starts a separate
directory. ``--run-id NAME`` picks the directory explicitly, and ``<runs>/<pipeline>/latest`` is a
symlink to the directory of the most recent run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

from ..errors import ConfigError
from ..io import TMP_PREFIX, pid_alive
from ..sources import digest

#: Pipeline names and run ids: letters, digits, ``.``, ``_``, ``-``; no path separators, no
#: leading dot (so neither ``..`` nor hidden names), at most 100 characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
LATEST = "latest"
LOCK_FILE = ".lock"


def check_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is safe as a single directory name under the runs directory.

    Raises
    ------
    ConfigError
        ``../x``, ``/abs``, ``a/b``, a NUL byte, an empty or hidden name, or ``latest``.

    Examples
    --------
    >>> check_name("digits-2024.v1")
    'digits-2024.v1'
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name == LATEST:
        shown = repr(name).replace("\\x00", "\\0")
        raise ConfigError(f"{what} {shown} is not allowed: use 1-100 letters, digits, '.', '_' or "
                          "'-', not starting with '.' (no '/', '..' or NUL), and not 'latest'")
    return name


def default_run_id(source_identity: dict) -> str:
    """``src-<10 hex>``: a hash of what the source points at (see the module docstring)."""
    return "src-" + digest(source_identity).split(":", 1)[1][:10]


def run_directory(runs_dir, pipeline: str, run_id: str) -> Path:
    """``<runs_dir>/<pipeline>/<run_id>``, after checking both names cannot leave ``runs_dir``."""
    check_name(pipeline, what="pipeline name")
    check_name(run_id, what="--run-id")
    root = Path(runs_dir).resolve()
    path = (root / pipeline / run_id).resolve()
    if root not in path.parents:  # belt and braces: the names above cannot escape
        raise ConfigError(f"run directory '{path}' would be outside --runs-dir '{root}'")
    return path


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.lock``: one run per directory at a time.

    The kernel drops the lock when the process dies, so a killed run never blocks the next one.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd = None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX only: imported where the lock is taken, not on import
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"run directory '{self.path.parent}' is in use by another cleanpipe "
                                  "run; wait for it to finish or pass another --run-id") from None
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def temp_dir(run_dir: Path, stage: str) -> Path:
    """A fresh hidden folder beside ``<run_dir>/<stage>`` for the stage to write into."""
    path = Path(run_dir) / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{stage}"
    path.mkdir()
    return path


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def swap_in(tmp: Path, final: Path) -> None:
    """Publish the finished folder ``tmp`` as ``final`` (replacing an older one).

    The old folder is renamed aside first (a directory cannot be renamed over a non-empty one) and
    removed last; if the process dies in between, ``final`` is missing or old, never partial, and
    the next run removes the leftovers (:func:`remove_stale`).
    """
    _fsync_tree(tmp)
    trash = None
    if final.exists():
        trash = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-old-{final.name}")
        os.replace(final, trash)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove_stale(run_dir: Path) -> int:
    """Remove temporary files and folders left by killed runs; return how many."""
    removed = 0
    for p in Path(run_dir).glob(f"{TMP_PREFIX}*"):
        pid = p.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed += 1
    return removed


def point_latest(run_dir: Path) -> None:
    """Make ``<pipeline dir>/latest`` a relative symlink to ``run_dir``, replaced atomically."""
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-latest"
    try:
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:  # a filesystem without symlinks: the manifest still names every run
        with contextlib.suppress(OSError):
            tmp.unlink()
