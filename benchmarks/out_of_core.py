"""Flagging probabilities that need not fit in memory: peak RSS of the block-wise passes.

Writes N x K float32 out-of-fold probabilities once (a ``.npy`` file and a Parquet file with one
column per class), then runs ``cleanpipe.find_label_issues`` in a fresh process on

* the ``.npy`` memory-mapped (``np.load(mmap_mode="r")``),
* the Parquet file read one row group at a time (``cleanpipe.rows.ParquetMatrix``),
* the whole array loaded in memory (the reference),

and reports wall time, peak RSS of the process and extra peak RSS during the call, and whether the
flags and scores are identical to the in-memory result.

Usage::

    python benchmarks/out_of_core.py [--n 10000000] [--k 10] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import markdown_table, progress, provenance_block, replace_section
from detection_speed import current_rss_kib, peak_rss_kib, reset_peak_rss


def generate(workdir: Path, n: int, k: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """Write labels.npy, probs.npy and probs.parquet chunk by chunk (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    labels = np.empty(n, dtype=np.int64)
    mm = np.lib.format.open_memmap(workdir / "probs.npy", mode="w+", dtype=np.float32, shape=(n, k))
    writer = None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        true = rng.integers(0, k, b - a)
        logits = rng.standard_normal((b - a, k)).astype(np.float32)
        logits[np.arange(b - a), true] += 2.5
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        flip = rng.random(b - a) < 0.2
        labels[a:b] = np.where(flip, rng.integers(0, k, b - a), true)
        mm[a:b] = p
        table = pa.table({str(j): p[:, j] for j in range(k)})
        if writer is None:
            writer = pq.ParquetWriter(workdir / "probs.parquet", table.schema)
        writer.write_table(table, row_group_size=256_000)
    writer.close()
    mm.flush()
    np.save(workdir / "labels.npy", labels)


def child(workdir: Path, mode: str) -> dict:
    """One measured call (runs in a fresh process)."""
    from cleanpipe import find_label_issues
    from cleanpipe.rows import ParquetMatrix

    labels = np.load(workdir / "labels.npy")
    if mode == "memmap":
        probs = np.load(workdir / "probs.npy", mmap_mode="r")
    elif mode == "parquet":
        probs = ParquetMatrix(workdir / "probs.parquet")
    else:
        probs = np.load(workdir / "probs.npy")
    base = current_rss_kib()
    reset_peak_rss()
    t0 = time.perf_counter()
    out = find_label_issues(labels, probs)
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256(out["is_label_issue"].to_numpy().tobytes()
                            + out["label_score"].to_numpy().tobytes()).hexdigest()
    return {"mode": mode, "seconds": seconds, "peak_mib": peak_rss_kib() / 1024,
            "extra_mib": (peak_rss_kib() - base) / 1024, "flagged": int(out["is_label_issue"].sum()),
            "digest": digest}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("WORKDIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return 0
    n, k = int(args.n), args.k
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        workdir = Path(tmp)
        progress(f"writing {n:,} x {k} float32 probabilities to {workdir}")
        generate(workdir, n, k)
        size_mib = (workdir / "probs.npy").stat().st_size / 2**20
        rows = []
        for mode in ("memmap", "parquet", "in-memory"):
            progress(f"running {mode}")
            res = subprocess.run([sys.executable, __file__, "--child", str(workdir), mode],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = rows[-1]["digest"]
    table = pd.DataFrame([{
        "source": r["mode"], "seconds": r["seconds"], "peak RSS MiB": r["peak_mib"],
        "extra peak MiB": r["extra_mib"], "flagged": r["flagged"],
        "identical to in-memory": r["digest"] == ref} for r in rows])
    text = (f"N = {n:,}, K = {k}, float32; pred_probs is {size_mib:.0f} MiB on disk.\n\n"
            + markdown_table(table, floatfmt=".1f"))
    print(text)
    if args.write:
        body = (provenance_block("out_of_core.py", _version()) + "\n"
                "Peak RSS is the whole process (Python, numpy, pyarrow and the labels included); "
                "extra peak is the rise during the call. The memory-mapped and Parquet sources are "
                "walked in row blocks (a statistics pass for the thresholds, a counting pass for "
                "the confident joint, a scoring pass), so only length-N vectors are held.\n\n" + text)
        replace_section("Out-of-core flagging", body)
    return 0


def _version() -> str:
    import cleanpipe
    return cleanpipe.__version__


if __name__ == "__main__":
    sys.exit(main())
