"""Tables no machine can hold (issue 21): flagging a partitioned dataset partition by partition.

Writes a partitioned Parquet dataset (id, label, a list column of N x K float32 out-of-fold
probabilities, ``--partitions`` files) at each size of ``--rows``, then flags it three ways, each
in a fresh process so its peak memory is its own:

* ``in-memory``: the dataset read whole into arrays, ``cleanpipe.detect.detect`` (the reference);
* ``partitioned``: ``cleanpipe.partitions.flag_partitions`` in one process (LocalEngine);
* ``dask``: the same on a ``distributed.LocalCluster`` of ``--workers`` worker processes with a
  ``--memory-limit`` each; the driver is the benchmark process, whose peak RSS must stay flat as
  the rows grow (it holds only the partials), and the workers' peak RSS is read on the workers.

and checks that every flag and score equals the in-memory result. With ``--s3`` the dataset and
the flags live on a local moto S3 server (``moto[server]``) instead of the local disk.

The issue's full benchmark (2e7 x 30 features, out-of-fold models trained partition-wise) needs
the feature-based out-of-fold stage at scale, which is not built: this script flags from given
probabilities. Usage::

    python benchmarks/scale_out.py --rows 2e5,5e5,1e6 --classes 10 --partitions 16 --write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import markdown_table, peak_rss_mib, progress, provenance_block, replace_section

SECTION = "Tables no machine can hold (issue 21)"


def generate(root: str, n: int, k: int, partitions: int, seed: int = 0, storage=None) -> None:
    """Write the dataset partition by partition (bounded memory): ``part-XXXXX.parquet`` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n, partitions + 1).astype(np.int64)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        m = int(b - a)
        true = rng.integers(0, k, m)
        logits = rng.normal(0.0, 1.5, (m, k)).astype(np.float32)
        logits[np.arange(m), true] += 2.0
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        noisy = rng.random(m) < 0.2
        labels = np.where(noisy, (true + rng.integers(1, k, m)) % k, true)
        probs = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), k)
        table = pa.table({"id": np.arange(a, b), "label": labels, "probs": probs})
        if storage is None:
            pq.write_table(table, os.path.join(root, f"part-{i:05d}.parquet"))
        else:
            fs, path = storage
            with fs.open_output_stream(f"{path}/part-{i:05d}.parquet") as fh:
                pq.write_table(table, fh)


def run_one(args) -> dict:
    """One way of flagging (in this fresh process); prints a JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    out: dict = {"mode": args.mode}
    if args.mode == "in-memory":
        import pyarrow.dataset as ds
        from cleanpipe.detect import detect
        from cleanpipe.features import list_column_matrix
        table = ds.dataset(args.data, format="parquet").to_table(columns=["label", "probs"])
        labels = table.column("label").to_numpy()
        probs = list_column_matrix(table.column("probs"), "probs").astype(np.float64)
        del table
        det = detect(labels, probs)
        flags, score = det.is_label_issue, det.label_score
    else:
        from cleanpipe.partitions import DaskEngine, flag_partitions
        if args.mode == "dask":
            from distributed import Client, LocalCluster
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                   memory_limit=args.memory_limit, dashboard_address=None)
            client = Client(cluster)
            engine = DaskEngine(client)
            t0 = time.perf_counter()  # the cluster's start-up is not the job's
        else:
            engine = None
        summary = flag_partitions(args.data, args.out, label="label", pred_probs="probs",
                                  engine=engine)
        out["passes"] = len(summary["passes"])
        if args.mode == "dask":
            def worker_peak():
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) / 1024
            out["worker_peak_mib"] = max(client.run(worker_peak).values())
            client.close()
            cluster.close()
        flags = score = None
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = peak_rss_mib()
    if flags is not None:
        np.save(args.out + ".flags.npy", flags)
        np.save(args.out + ".score.npy", score)
    print(json.dumps(out))
    return out


def read_flags(out: str, storage):
    import pyarrow.parquet as pq
    fs, path = storage
    from pyarrow import fs as pafs
    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.path.endswith(".parquet"))
    tables = []
    for f in files:
        with fs.open_input_file(f) as fh:
            tables.append(pq.read_table(fh, columns=["is_label_issue", "label_score"]))
    flags = np.concatenate([t.column("is_label_issue").to_numpy() for t in tables])
    score = np.concatenate([t.column("label_score").to_numpy() for t in tables])
    return flags, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="2e5,5e5,1e6", help="comma-separated sizes")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--s3", action="store_true", help="dataset and flags on a local moto S3 server")
    ap.add_argument("--write", action="store_true", help=f"write the '{SECTION}' section of RESULTS.md")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        run_one(args)
        return

    from pyarrow import fs as pafs
    server = None
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.s3:
        from moto.server import ThreadedMotoServer
        server = ThreadedMotoServer(port=0)
        server.start()
        host, port = server.get_host_and_port()
        env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        query = f"?endpoint_override=http://{host}:{port}&scheme=http&region=us-east-1"
        fs = pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", scheme="http",
                               region="us-east-1", access_key="x", secret_key="x",
                               allow_bucket_creation=True)
        fs.create_dir("bench")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="scale_out-"))
    try:
        for n in (int(float(r)) for r in args.rows.split(",")):
            if args.s3:
                data, out = f"s3://bench/data-{n}{query}", f"s3://bench/flags-{n}{query}"
                storage = (fs, f"bench/data-{n}")
                out_storage = (fs, f"bench/flags-{n}")
            else:
                data, out = str(work / f"data-{n}"), str(work / f"flags-{n}")
                os.makedirs(data)
                storage, out_storage = None, (pafs.LocalFileSystem(), out)
            progress(f"writing {n:,} x {args.classes} in {args.partitions} partitions")
            generate(data if storage is None else None, n, args.classes, args.partitions,
                     storage=storage)
            ref_out = str(work / f"ref-{n}")
            results = {}
            for mode in ("in-memory", "partitioned", "dask"):
                progress(f"  {mode} ...")
                target = ref_out if mode == "in-memory" else out
                if mode == "dask":  # a fresh output: nothing reused from the partitioned run
                    if args.s3:
                        fs.delete_dir_contents(f"bench/flags-{n}")
                    else:
                        shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, __file__, "--mode", mode, "--data", data, "--out", target,
                       "--workers", str(args.workers), "--memory-limit", args.memory_limit]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
                if mode != "in-memory":
                    flags, score = read_flags(out, out_storage)
                    ref_flags = np.load(ref_out + ".flags.npy")
                    ref_score = np.load(ref_out + ".score.npy")
                    results[mode]["identical"] = bool(np.array_equal(flags, ref_flags)
                                                      and np.array_equal(score, ref_score))
                    results[mode]["flagged"] = int(flags.sum())
            for mode, r in results.items():
                rows.append({"rows": n, "way": mode, "seconds": r["seconds"],
                             "driver peak RSS MiB": r["peak_rss_mib"],
                             "worker peak RSS MiB": r.get("worker_peak_mib", float("nan")),
                             "passes": r.get("passes", 0),
                             "identical to in-memory": r.get("identical", True)})
            if not args.s3:
                shutil.rmtree(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.stop()
    df = pd.DataFrame(rows)
    table = markdown_table(df, floatfmt=".1f")
    print(table)
    if args.write:
        import cleanpipe
        load = os.getloadavg()
        body = (provenance_block("scale_out.py", cleanpipe.__version__)
                + f"\nLoad average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
                  "(2 cores shared with other jobs).\n\n"
                + f"K = {args.classes} classes, {args.partitions} partitions, float32 probabilities "
                  "in a list column; dask: LocalCluster of "
                  f"{args.workers} worker processes, {args.memory_limit} each"
                  + (", dataset and flags on moto S3" if args.s3 else ", local disk") + ".\n\n"
                + table + "\n")
        replace_section(SECTION, body)


if __name__ == "__main__":
    main()
