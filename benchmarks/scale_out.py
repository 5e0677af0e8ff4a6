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

With ``--oof`` the dataset holds features instead (id, label, ``--features`` float32 columns,
and the planted ``is_flipped`` column, excluded from the features) and the out-of-fold stage runs
too: ``flag_partitions`` without ``pred_probs`` (hashed folds, the bounded training sample merged
on the workers, ``K`` fold fits as tasks, each partition predicted on its worker). At every size
the ``dask`` way runs; at sizes up to ``--check-rows`` the ``partitioned`` way (LocalEngine, one
process: the same hashed-fold functions in-process) runs too and its flags are compared with
Dask's. The table then prints the step times and precision / recall against the planted flips;
it is printed, not written (``--write`` is for the flag-only table).

``--engines dask,spark`` (with ``--oof``) also runs ``spark``: a local Spark session
(``local[--workers]``, a ``--driver-memory`` heap) reads the same dataset through
``cleanpipe.spark_tables.read_table`` (on S3: pyarrow in the tasks, no hadoop-aws), fits and
flags it with ``cleanpipe.spark.flag_with_estimates`` (hashed folds: the same functions as Dask's,
so the same flags) and writes the flag columns as Parquet on the local disk (Spark writes to S3
only through its own connector). Its "client" is the Python driver (its peak reset once the session
has started), "worker" the Python workers (the highest peak RSS (VmHWM) of any Python ``pyspark``
process under the JVM, sampled every 0.2 s), and the JVM (driver and executor in local mode) gets columns of its
own: its RSS peak and its heap's old-generation peak. Usage::

    python benchmarks/scale_out.py --rows 2e5,5e5,1e6 --classes 10 --partitions 16 --write
    python benchmarks/scale_out.py --oof --rows 1e6,5e6,1e7 --classes 2 --features 30 \
        --partitions 32 --s3
    python benchmarks/scale_out.py --oof --engines spark --rows 1e6,5e6 --classes 2 \
        --features 30 --partitions 40 --s3
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


def _write_part(table, i: int, storage, root) -> None:
    """Partition ``i`` as ``part-XXXXX.parquet`` under ``root``, or under ``storage`` = (filesystem,
    path) on an object store."""
    import pyarrow.parquet as pq

    if storage is None:
        pq.write_table(table, os.path.join(root, f"part-{i:05d}.parquet"))
    else:
        # A partition's object is written whole or replaced whole, so a failed write is retried as
        # a whole (at 2e7 rows a retried CompleteMultipartUpload that moto had already completed
        # failed with a KeyError on the upload id; a fresh upload of the same key is idempotent).
        fs, path = storage
        for attempt in range(3):
            try:
                with fs.open_output_stream(f"{path}/part-{i:05d}.parquet") as fh:
                    pq.write_table(table, fh)
                return
            except OSError as e:
                if attempt == 2:
                    raise
                progress(f"  partition {i}: write failed ({str(e)[:120]}); writing it again")


def generate(root: str, n: int, k: int, partitions: int, seed: int = 0, storage=None) -> None:
    """Write the dataset partition by partition (bounded memory): ``part-XXXXX.parquet`` files."""
    import pyarrow as pa

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
        _write_part(table, i, storage, root)


def generate_features(n: int, k: int, d: int, partitions: int, seed: int = 0, storage=None,
                      root=None) -> None:
    """``d`` float32 features, a label from a noisy linear score (10% of the labels flipped to
    another class, ``is_flipped`` kept), partition by partition."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, k)).astype(np.float32) * (4 / np.sqrt(d))  # score sd 4, Gumbel 1.3
    bounds = np.linspace(0, n, partitions + 1).astype(np.int64)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        m = int(b - a)
        X = rng.normal(size=(m, d)).astype(np.float32)
        true = (X @ W + rng.gumbel(size=(m, k)).astype(np.float32)).argmax(axis=1)
        flipped = rng.random(m) < 0.1
        labels = np.where(flipped, (true + rng.integers(1, k, m)) % k, true)
        cols = {"id": np.arange(a, b), "label": labels, "is_flipped": flipped}
        cols.update({f"f{j:02d}": X[:, j] for j in range(d)})
        table = pa.table(cols)
        _write_part(table, i, storage, root)


def run_one(args) -> dict:
    """One way of flagging (in this fresh process); prints a JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    out: dict = {"mode": args.mode}
    if args.mode == "spark":
        return run_spark(args)
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
                                   memory_limit=args.memory_limit, dashboard_address=":0")
            client = Client(cluster)
            engine = DaskEngine(client)
            t0 = time.perf_counter()  # the cluster's start-up is not the job's
        else:
            engine = None
        if args.oof:
            from cleanpipe.partitioned_oof import default_settings
            import dataclasses
            oof = dataclasses.replace(default_settings(), ids=("id",), exclude=("is_flipped",))
            summary = flag_partitions(args.data, args.out, label="label", engine=engine, oof=oof)
            out["oof"] = summary["oof"]
            out["steps"] = summary["seconds"]
            out["steps_cpu"] = {**summary["oof"]["driver_cpu_seconds"], **summary["driver_cpu_seconds"]}
        else:
            summary = flag_partitions(args.data, args.out, label="label", pred_probs="probs",
                                      engine=engine)
        out["passes"] = len(summary["passes"])
        if args.mode == "dask":
            def worker_peak():
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) / 1024
            def cpu_seconds():
                import resource
                r = resource.getrusage(resource.RUSAGE_SELF)
                return r.ru_utime + r.ru_stime

            out["worker_peak_mib"] = max(client.run(worker_peak).values())
            out["worker_cpu_s"] = sum(client.run(cpu_seconds).values())
            client.close()
            cluster.close()
        flags = score = None
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = peak_rss_mib()
    import resource
    me = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = me.ru_utime + me.ru_stime  # this process (with --mode partitioned: all the work)
    if flags is not None:
        np.save(args.out + ".flags.npy", flags)
        np.save(args.out + ".score.npy", score)
    print(json.dumps(out))
    return out


def run_spark(args) -> dict:
    """``--mode spark``: the out-of-fold stage and the flags on local Spark (see the docstring)."""
    import threading

    import psutil

    from spark_flag import _job_timer, _old_gen_peak_mib, _rss_mib, local_session

    from cleanpipe import spark as cs
    from cleanpipe.spark_tables import read_table

    spark = local_session(args.workers, "scale-out", driver_memory=args.driver_memory)
    jvm = spark.sparkContext._gateway.proc.pid  # spark-submit execs the JVM
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the driver's peak from here: what it held while Spark ran
    workers: dict = {}
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            try:
                kids = psutil.Process(jvm).children(recursive=True)
            except psutil.Error:
                continue
            for kid in kids:
                try:
                    # Python processes only: a process the JVM forks (its launcher's helper) starts
                    # with the JVM's own VmHWM, until it execs.
                    if kid.name().startswith("python") and "pyspark" in " ".join(kid.cmdline()):
                        workers[kid.pid] = max(workers.get(kid.pid, 0.0), _rss_mib(kid.pid, "VmHWM:"))
                except (psutil.Error, OSError):
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with _job_timer() as jobs:
        df = read_table(spark, args.data)
        features = [c for c in df.columns if c.startswith("f")]
        result = cs.flag_with_estimates(df, label="label", id_column="id", features=features)
        result.frame.select("id", "is_flipped", "is_label_issue", "label_score") \
            .write.parquet(args.out)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    out = {"mode": "spark", "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
           "worker_peak_mib": max(workers.values(), default=float("nan")), "python_workers": len(workers),
           "jvm_peak_mib": _rss_mib(jvm, "VmHWM:"), "jvm_old_gen_peak_mib": _old_gen_peak_mib(spark),
           "partitions": df.rdd.getNumPartitions(), "passes": 0, "cpu_s": float("nan"),
           # Spark's steps are its jobs (printed); the fits run on the driver between them
           "oof": {"seconds": dict.fromkeys(("scan", "sample", "fit", "predict"), float("nan")),
                   "training_rows": result.oof["sample_rows"]},
           "steps": {"detect": float("nan"), "write": float("nan")},
           "jobs": [[name, round(sec, 1)] for name, sec in jobs]}
    result.unpersist()
    spark.stop()
    print(json.dumps(out))
    return out


def read_flags(out: str, storage, extra=()):
    import pyarrow.parquet as pq
    fs, path = storage
    from pyarrow import fs as pafs
    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.path.endswith(".parquet"))
    tables = []
    for f in files:
        with fs.open_input_file(f) as fh:
            tables.append(pq.read_table(fh, columns=["is_label_issue", "label_score", *extra]))
    cols = ["is_label_issue", "label_score", *extra]
    return tuple(np.concatenate([t.column(c).to_numpy() for t in tables]) for c in cols)


def main_oof(args, env, storage_for, work: Path) -> list:
    """The out-of-fold stage and the flags on the workers, per size (see the module docstring)."""
    rows = []
    for n in (int(float(r)) for r in args.rows.split(",")):
        data, out, storage, out_storage = storage_for(n)
        progress(f"writing {n:,} x {args.features} features, {args.classes} classes, "
                 f"{args.partitions} partitions")
        t = time.perf_counter()
        generate_features(n, args.classes, args.features, args.partitions, storage=storage,
                          root=None if storage else data)
        progress(f"  written in {time.perf_counter() - t:.0f} s")
        modes = args.engines.split(",") + (["partitioned"] if n <= float(args.check_rows) else [])
        got = {}
        for mode in modes:
            progress(f"  {mode} ... (load {os.getloadavg()[0]:.1f})")
            _, target, _, target_storage = storage_for(n, {"dask": "", "partitioned": "-local"}
                                                       .get(mode, f"-{mode}"), local=mode == "spark")
            cmd = [sys.executable, __file__, "--mode", mode, "--data", data, "--out", target,
                   "--workers", str(args.workers), "--memory-limit", args.memory_limit, "--oof",
                   "--driver-memory", args.driver_memory]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            r = json.loads(done.stdout.strip().splitlines()[-1])
            flags, score, flipped, ids = read_flags(target, target_storage, ["is_flipped", "id"])
            order = np.argsort(ids, kind="stable")
            flags, score, flipped = flags[order], score[order], flipped[order]
            got[mode] = (flags, score)
            tp = int((flags & flipped).sum())
            steps = {**r["oof"]["seconds"], **r["steps"]}
            rows.append({"rows": n, "way": mode, "wall s": r["seconds"],
                         "client peak RSS MiB": r["peak_rss_mib"],
                         "worker peak RSS MiB": r.get("worker_peak_mib", float("nan")),
                         "JVM peak RSS MiB": r.get("jvm_peak_mib", float("nan")),
                         "JVM old gen MiB": r.get("jvm_old_gen_peak_mib", float("nan")),
                         "sample s": steps.get("scan", 0) + steps.get("sample", 0),
                         "fit s": steps.get("fit", 0), "predict s": steps.get("predict", 0),
                         "detect s": steps["detect"], "write s": steps["write"],
                         "worker CPU s": r.get("worker_cpu_s", r["cpu_s"]),
                         "training rows": r["oof"]["training_rows"],
                         "precision": tp / max(int(flags.sum()), 1),
                         "recall": tp / max(int(flipped.sum()), 1)})
            progress(f"    {rows[-1]}")
            if "steps_cpu" in r:
                progress(f"    this process's CPU seconds per step: {r['steps_cpu']}")
            if "jobs" in r:
                progress(f"    Spark jobs (caller: seconds): {r['jobs']}")
        if "partitioned" in got:
            for r in rows[-len(modes):]:
                if r["way"] != "partitioned":
                    r["flags identical to one process"] = all(
                        np.array_equal(a, b) for a, b in zip(got[r["way"]], got["partitioned"]))
        shutil.rmtree(work / f"flags-{n}-spark", ignore_errors=True)
        if not args.s3:
            shutil.rmtree(data, ignore_errors=True)
        else:  # moto keeps objects in memory: free them before the next size
            fs_, path = storage
            for p in (path, out_storage[1], out_storage[1] + "-local"):
                try:
                    fs_.delete_dir(p)
                except OSError:
                    pass
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="2e5,5e5,1e6", help="comma-separated sizes")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--s3", action="store_true", help="dataset and flags on a local moto S3 server")
    ap.add_argument("--write", action="store_true", help=f"write the '{SECTION}' section of RESULTS.md")
    ap.add_argument("--oof", action="store_true",
                    help="features instead of probabilities: run the out-of-fold stage on the workers")
    ap.add_argument("--features", type=int, default=30, help="feature columns with --oof")
    ap.add_argument("--check-rows", default="1e6",
                    help="with --oof: up to this size also run in one process and compare flags")
    ap.add_argument("--engines", default="dask",
                    help="with --oof: the engines to run, of dask and spark (comma-separated)")
    ap.add_argument("--driver-memory", default="2g", help="spark: the local JVM's heap")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",")]
    if not set(engines) <= {"dask", "spark"} or not engines:
        ap.error(f"--engines {args.engines!r}: choose from dask and spark, comma-separated")
    args.engines = ",".join(engines)
    if args.mode:
        run_one(args)
        return

    from pyarrow import fs as pafs
    server = None
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.s3:
        import logging
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(port=0)
        server.start()
        host, port = server.get_host_and_port()
        env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
        query = f"?endpoint_override=http://{host}:{port}&scheme=http&region=us-east-1"
        fs = pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", scheme="http",
                               region="us-east-1", access_key="x", secret_key="x",
                               allow_bucket_creation=True,
                               # cleanpipe's own S3 timeouts (sources/parquet.py); with the SDK's 3 s
                               # default a slow completion of a ~80 MB multipart object on a loaded
                               # moto is likely given up on and re-sent (the 2e7 failure)
                               connect_timeout=10, request_timeout=60)
        fs.create_dir("bench")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="scale_out-"))

    def storage_for(n, tag="", local=False):
        """(data URI, flags URI, data storage, flags storage); ``tag`` names another output,
        ``local`` puts it on the local disk (Spark's flags: it writes S3 only with hadoop-aws)."""
        if local:
            out = str(work / f"flags-{n}{tag}")
            return None, out, None, (pafs.LocalFileSystem(), out)
        if args.s3:
            return (f"s3://bench/data-{n}{query}", f"s3://bench/flags-{n}{tag}{query}",
                    (fs, f"bench/data-{n}"), (fs, f"bench/flags-{n}{tag}"))
        data, out = str(work / f"data-{n}"), str(work / f"flags-{n}{tag}")
        os.makedirs(data, exist_ok=True)
        return data, out, None, (pafs.LocalFileSystem(), out)

    if args.oof:
        try:
            df = pd.DataFrame(main_oof(args, env, storage_for, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if server is not None:
                server.stop()
        print(markdown_table(df, floatfmt=".3g"))
        load = os.getloadavg()
        print(f"\nLoad average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
        return
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
