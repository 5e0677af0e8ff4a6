"""Faults for the partitioned paths' tests: a disk that fills while one partition is written.

Tests run as root in CI, where a read-only folder (chmod) does not stop a write; this injects the
error the operating system gives on a full disk, inside the writer, on the workers of the
in-process cluster and on the local engine alike.
"""

from __future__ import annotations

import errno
import os


class _FullDisk:
    """A local file system on which writing one file fails half-way, as on a full disk: the
    writer's own stream raises ``OSError(ENOSPC)`` after part of the bytes went out."""

    def __init__(self, victim):
        from pyarrow import fs
        self.inner, self.victim = fs.LocalFileSystem(), victim

    def open_output_stream(self, path, *args, **kwargs):
        stream = self.inner.open_output_stream(path, *args, **kwargs)
        if not path.endswith(self.victim):
            return stream
        return _HalfStream(stream)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _HalfStream:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()

    def write(self, data):
        self.stream.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def full_disk(monkeypatch, out, victim):
    """Make every write of a file named ``victim`` under ``out`` fail half-way (workers of the
    in-process cluster and the local engine look the file system up at call time)."""
    import cleanpipe.partitions as partitions
    real = partitions._filesystem

    def patched(uri):
        got = real(uri)
        return (_FullDisk(victim), got[1]) if os.path.abspath(uri) == os.path.abspath(out) else got

    monkeypatch.setattr(partitions, "_filesystem", patched)


def error_lines(output):
    """The ``error:`` lines of a CLI run (the in-process cluster's workers log their task errors
    into the same stream; on a real cluster those go to the workers' logs)."""
    return [line for line in output.splitlines() if line.startswith(("error:", "internal error:"))]
