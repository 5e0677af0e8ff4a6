"""Parquet folders for the Spark pipeline tests: a table written as a few part files, and a
stage's output folder read back whole (Spark's part files in name order)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def write_parts(table: pa.Table, folder, parts: int = 3) -> None:
    """``table`` as ``parts`` files ``part-<i>.parquet`` in the new folder ``folder``."""
    folder.mkdir()
    step = -(-table.num_rows // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i}.parquet")


def read_folder(folder, order_by: str | None = None) -> pa.Table:
    """The ``.parquet`` files of ``folder``, concatenated in name order (or sorted by ``order_by``)."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    table = pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files])
    return table if order_by is None else table.take(pc.sort_indices(table[order_by]))
