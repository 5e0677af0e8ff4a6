"""Scale benchmark: ``cleanpipe flag`` on 10M rows and a whole ``cleanpipe run`` pipeline on 1M rows.

1. A synthetic table (``--rows`` x ``--features`` float32 features, ``--classes`` classes, 10% of
   labels flipped) is written as a hive-partitioned Parquet dataset, with a float32 ``.npy`` of
   out-of-fold-like probabilities (one row per table row, in the dataset's row order).
2. ``cleanpipe flag DATA --pred-probs probs.npy`` runs in a child process (the flag stage alone).
3. A pipeline file over a ``--pipeline-rows`` table runs stage by stage, each stage in its own
   child process (``cleanpipe run PIPE --from S --until S``), so each stage's peak RSS is its own.

Wall time, rows/second and the child's peak RSS (``RUSAGE_CHILDREN`` of a small launcher process)
are printed and,
with ``--write``, replace the ``## Scale`` section of ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/scale.py --write                      # 10M-row flag, 1M-row pipeline
    python benchmarks/scale.py --rows 200000 --pipeline-rows 50000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHUNK = 1_000_000
TARGET_MIB = 2048
STAGES = ("oof", "flag", "clean", "retrain")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(workdir: Path, rows: int, features: int, classes: int, *, seed: int = 0,
             with_probs: bool = True) -> tuple[Path, Path | None]:
    """Write ``data/`` (hive-partitioned by ``part``) and ``probs.npy``; reuse them if present."""
    data, probs = workdir / "data", workdir / "probs.npy"
    marker = workdir / "generated.json"
    spec = {"rows": rows, "features": features, "classes": classes, "seed": seed, "probs": with_probs}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return data, probs if with_probs else None
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.0, (classes, features)).astype(np.float32)
    mm = (np.lib.format.open_memmap(probs, mode="w+", dtype=np.float32, shape=(rows, classes))
          if with_probs else None)
    n_parts = max(1, -(-rows // CHUNK))
    for part in range(n_parts):
        a, b = part * CHUNK, min(rows, (part + 1) * CHUNK)
        n = b - a
        y_true = rng.integers(0, classes, n)
        flip = rng.random(n) < 0.1
        y = np.where(flip, (y_true + rng.integers(1, classes, n)) % classes, y_true)
        X = centers[y_true] + rng.normal(0, 1.5, (n, features)).astype(np.float32)
        cols = {f"f{j:02d}": X[:, j] for j in range(features)}
        cols.update(row_id=np.arange(a, b, dtype=np.int64), label=y.astype(np.int64))
        # Zero-padded partition values keep the directories (and so the rows) in generation order.
        folder = data / f"part={part:03d}"
        folder.mkdir()
        pq.write_table(pa.table(cols), folder / "rows.parquet", compression="zstd")
        if mm is not None:
            logits = rng.normal(0, 1.0, (n, classes))
            logits[np.arange(n), y_true] += 3.0
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            mm[a:b] = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        progress(f"generated rows {a:,}..{b:,}")
    if mm is not None:
        mm.flush()
        del mm
    order = ds.dataset(data, format="parquet", partitioning="hive").files
    assert order == sorted(order), "partition discovery order must match generation order"
    marker.write_text(json.dumps(spec))
    return data, probs if with_probs else None


# A fork inherits its parent's resident set as its starting high-water mark (and exec keeps it),
# so a child of this process, which holds generated data, would report our RSS, not its own. The
# command is therefore started by this small launcher, which reports RUSAGE_CHILDREN.
_LAUNCHER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write(code.stderr.decode(errors="replace")[-2000:])
print(json.dumps({"code": code.returncode, "seconds": time.perf_counter() - t0,
                  "peak_rss_mib": usage.ru_maxrss / 1024}))
"""


def run_child(cmd: list) -> dict:
    """Run ``cmd`` in a fresh process tree; return wall seconds and the child's peak RSS in MiB."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], capture_output=True, text=True)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"launcher failed: {proc.stderr[-2000:]}") from None
    if out["code"] != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({out['code']}):\n{proc.stderr[-2000:]}")
    return {"seconds": out["seconds"], "peak_rss_mib": out["peak_rss_mib"]}


def cleanpipe_cmd(*args) -> list:
    return [sys.executable, "-c", "from cleanpipe.cli import main; main()", *map(str, args)]


def bench_flag(workdir: Path, rows: int, features: int, classes: int) -> dict:
    data, probs = generate(workdir / f"flag-{rows}", rows, features, classes)
    out = workdir / f"flag-{rows}" / "flags.parquet"
    progress(f"cleanpipe flag on {rows:,} rows with --pred-probs ...")
    res = run_child(cleanpipe_cmd("flag", data, "--pred-probs", probs, "--out", out, "-q"))
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    res.update(rows=rows, flagged=summary["flagged"], detect_s=summary["timings"].get("detect_s"),
               data_mib=sum(f.stat().st_size for f in data.rglob("*.parquet")) / 2**20,
               probs_mib=probs.stat().st_size / 2**20)
    return res


PIPELINE = """\
name = "scale"
stages = ["oof", "flag", "clean", "retrain"]
[source]
type = "parquet"
path = "{data}"
[columns]
label = "label"
ids = ["row_id"]
exclude = ["part"]
[oof]
model = "{model}"
folds = 3
n_jobs = 1
[clean]
mode = "drop"
[retrain]
epochs = {epochs}
batch_size = 1024
patience = 0
device = "cpu"
threads = 1
"""


def bench_pipeline(workdir: Path, rows: int, features: int, classes: int, *, model: str,
                   epochs: int) -> list:
    base = workdir / f"pipeline-{rows}"
    data, _ = generate(base, rows, features, classes, with_probs=False)
    pipe = base / "scale.toml"
    pipe.write_text(PIPELINE.format(data=data, model=model, epochs=epochs))
    runs = base / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    out = []
    for stage in STAGES:
        progress(f"cleanpipe run --from {stage} --until {stage} on {rows:,} rows ...")
        res = run_child(cleanpipe_cmd("run", pipe, "--runs-dir", runs, "--run-id", "bench",
                                      "--from", stage, "--until", stage, "-q"))
        rec = json.loads((runs / "scale" / "bench" / "manifest.json").read_text())["stages"][stage]
        res.update(stage=stage, stage_s=rec["seconds"], rows_in=rec["rows_in"], rows_out=rec["rows_out"])
        out.append(res)
    return out


def render(flag: dict | None, stages: list, args) -> str:
    load = os.getloadavg()[0]
    lines = ["```", "python benchmarks/scale.py " + " ".join(sys.argv[1:]), "```", "",
             f"Run on {time.strftime('%Y-%m-%d')}, python {platform.python_version()}, "
             f"{os.cpu_count()} CPUs, load average {load:.1f} when the report was written. "
             "Each measurement is one child process; peak RSS is its `ru_maxrss` (Python, imports "
             "and touched pages of memory-mapped files included).", ""]
    if flag:
        ok = flag["peak_rss_mib"] <= TARGET_MIB
        lines += [f"### Flag stage: {flag['rows']:,} rows x {args.features} features, "
                  f"{args.classes} classes, `--pred-probs`", "",
                  f"Data {flag['data_mib']:.0f} MiB of Parquet in {-(-flag['rows'] // CHUNK)} hive "
                  f"partitions; probabilities {flag['probs_mib']:.0f} MiB float32 `.npy`.", "",
                  "| rows | wall s | rows/s | detect s | peak RSS MiB | flagged |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| {flag['rows']:,} | {flag['seconds']:.1f} | {flag['rows'] / flag['seconds']:,.0f} | "
                  f"{flag['detect_s'] or 0:.1f} | {flag['peak_rss_mib']:.0f} | {flag['flagged']:,} |", "",
                  f"- [{'PASS' if ok else 'FAIL'}] flag stage peak RSS <= {TARGET_MIB} MiB: "
                  f"{flag['peak_rss_mib']:.0f} MiB", ""]
    if stages:
        n = stages[0]["rows_in"]
        lines += [f"### Pipeline: {n:,} rows, stages oof -> flag -> clean -> retrain", "",
                  f"`[oof] model = \"{args.model}\"`, 3 folds, `n_jobs = 1`; `[retrain] epochs = "
                  f"{args.epochs}`, batch 1024, CPU, 1 thread. Stage s is the stage's own time from the "
                  "manifest; wall s adds interpreter start-up and imports.", "",
                  "| stage | rows in | rows out | stage s | wall s | rows/s | peak RSS MiB |",
                  "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in stages:
            lines.append(f"| {r['stage']} | {r['rows_in']:,} | {r['rows_out']:,} | {r['stage_s']:.1f} | "
                         f"{r['seconds']:.1f} | {r['rows_in'] / max(r['stage_s'], 1e-9):,.0f} | "
                         f"{r['peak_rss_mib']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def replace_section(body: str) -> None:
    """Replace ``## Scale`` in RESULTS.md, re-reading the file right before writing (others write
    other sections)."""
    sys.path.insert(0, str(BENCH_DIR))
    from _common import RESULTS_MD
    from _common import replace_section as _replace
    _replace("Scale", body, RESULTS_MD)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1e7, help="rows of the flag benchmark (0: skip)")
    ap.add_argument("--pipeline-rows", type=float, default=1e6, help="rows of the pipeline (0: skip)")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--model", default="logreg", help="[oof] model of the pipeline")
    ap.add_argument("--epochs", type=int, default=2, help="[retrain] epochs of the pipeline")
    ap.add_argument("--workdir", default="/tmp/cleanpipe-scale", help="where data and runs go")
    ap.add_argument("--write", action="store_true", help="replace '## Scale' in benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    flag = bench_flag(workdir, int(args.rows), args.features, args.classes) if args.rows else None
    stages = (bench_pipeline(workdir, int(args.pipeline_rows), args.features, args.classes,
                             model=args.model, epochs=args.epochs) if args.pipeline_rows else [])
    body = render(flag, stages, args)
    print(body)
    if args.write:
        replace_section(body)
        progress("wrote the 'Scale' section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
