"""cleanpipe.spark on local Spark beside the in-memory flag and cleanlab, on given probabilities.

A table of ``--rows`` rows (``--classes`` classes, 15% of the labels flipped, model-like
probabilities in one list column) is written as a Delta table of ``--partitions`` files. Then:

* in memory: ``cleanpipe.flag_table(table, pred_probs="probs")``;
* cleanlab 2.9 (the peer): ``cleanlab.filter.find_label_issues`` on the same arrays;
* Spark (``local[N]``): ``spark_tables.read_table`` -> ``spark.flag`` -> ``spark_tables.write_delta``,
  every pass a Spark job over the partitions;

and prints wall time, the Spark jobs run, the driver's peak RSS (the Python process; the JVM's heap
is capped by ``spark.driver.memory``), and whether the Spark flags equal the in-memory ones row for
row. Usage::

    python benchmarks/spark_flag.py --rows 200000 --partitions 8 --cores 1

``--oof`` measures the out-of-fold stage too: a table of ``--features`` numeric features (labels
from a noisy linear model, 15% flipped; no probability column) written as ``--partitions``
Parquet files, then

* cleanpipe's hashed folds in this process (:mod:`cleanpipe.hashed_folds` on the whole table:
  the oracle the Spark run must equal bit for bit), then ``flag_table``;
* cleanpipe in memory: ``flag_table(table, model=...)`` (stratified folds over every row);
* cleanlab 2.9: ``estimate_cv_predicted_probabilities`` with the same scikit-learn model, then
  ``find_label_issues``;
* Spark: ``spark_tables.read_table`` -> ``spark.flag(df, id_column="row_id", model=...)`` (fold
  counts, the bounded training sample fitted on the driver, predictions per partition, the
  detector's passes) -> Parquet;

with each one's precision and recall against the planted flips::

    python benchmarks/spark_flag.py --oof --rows 1000000 --features 30 --partitions 8

``--oof --spark-only`` runs the Spark part alone and prints the driver's peak memory from the
session's start (the Python process, its peak reset once the table is written and dropped, and
the JVM's: its RSS peak and its heap's old-generation peak), to see whether it stays flat as the
rows grow, and the seconds of every Spark job, named by the cleanpipe function that started it
(``--driver-memory`` sets the local JVM's heap, default 2g)::

    python benchmarks/spark_flag.py --oof --spark-only --rows 5000000 --features 30 --partitions 40
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, peak_rss_mib  # noqa: E402


def make_table(n: int, k: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1.2, (n, k))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    noisy = y.copy()
    flip = rng.random(n) < 0.15
    noisy[flip] = (y[flip] + rng.integers(1, k, flip.sum())) % k
    probs = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), k).cast(pa.list_(pa.float64()))
    return pa.table({"row_id": np.arange(n), "label": noisy, "probs": probs})


def make_feature_table(n: int, d: int, k: int, seed: int):
    """Features X (n x d float64), true classes from a noisy linear model, 15% of them flipped."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, k))
    y = np.argmax(X @ W + rng.normal(0, 2.0, (n, k)), axis=1)
    noisy = y.copy()
    flip = rng.random(n) < 0.15
    noisy[flip] = (y[flip] + rng.integers(1, k, flip.sum())) % k
    cols = {"row_id": np.arange(n)}
    cols.update({f"f{j}": X[:, j] for j in range(d)})
    cols["label"] = noisy
    return pa.table(cols), noisy != y


def local_session(cores: int, name: str, shuffle_partitions: int | None = None,
                  driver_memory: str = "2g"):
    """A local Spark session set up the way both measurements run: no UI, quiet logs, a 2 GiB
    driver by default, one partition per file (as a table of large files is read on a cluster)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(f"local[{cores}]").appName(name)
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.files.openCostInBytes", str(128 << 20))
               .config("spark.driver.memory", driver_memory))
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _quality(flags: np.ndarray, wrong: np.ndarray) -> dict:
    tp = int((flags & wrong).sum())
    return {"flagged": int(flags.sum()), "precision": tp / max(int(flags.sum()), 1),
            "recall": tp / max(int(wrong.sum()), 1)}


def run_oof(args) -> None:
    """The out-of-fold stage on Spark beside one process and cleanlab (``--oof``)."""
    import pyarrow.parquet as pq

    from cleanpipe import hashed_folds as hf
    from cleanpipe import spark as cs
    from cleanpipe.flag import flag_table
    from cleanpipe.flagsfile import FLAG_COLUMNS
    from cleanpipe.settings import SCALE_SAMPLE_ROWS
    from cleanpipe.spark_tables import read_table

    work = Path(tempfile.mkdtemp(prefix="spark-oof-"))
    try:
        table, wrong = make_feature_table(args.rows, args.features, args.classes, args.seed)
        feats = [f"f{j}" for j in range(args.features)]
        step = -(-args.rows // args.partitions)
        (work / "train").mkdir()
        for i in range(args.partitions):
            pq.write_table(table.slice(i * step, step), work / "train" / f"part-{i:05d}.parquet")
        rows = []
        if args.spark_only:
            del table  # written: the driver holds none of it while Spark runs
            return _spark_only(args, work, feats, wrong)
        X = np.column_stack([table[c].to_numpy() for c in feats])
        codes = table["label"].to_numpy()

        t = time.perf_counter()
        hashes = hf.id_hashes(table["row_id"].to_numpy(), seed=args.seed)
        rate = hf.training_rate(args.rows, args.folds, SCALE_SAMPLE_ROWS)
        sample = hf.sample_partial(X, codes, hashes, n_folds=args.folds, rate=rate)
        models = hf.fit_fold_models(sample.X, sample.y, sample.folds, n_folds=args.folds,
                                    n_classes=args.classes, model=args.model, seed=args.seed)
        probs = hf.predict_out_of_fold(models, X, hf.hashed_folds(hashes, args.folds), args.classes)
        oracle = flag_table(table, label="label", pred_probs=probs).table
        rows.append({"engine": f"cleanpipe hashed folds, one process ({len(sample)} sample rows)",
                     "wall_s": time.perf_counter() - t, "equal": "-",
                     **_quality(oracle["is_label_issue"].to_numpy(zero_copy_only=False), wrong)})
        if not args.skip_full:
            t = time.perf_counter()
            full = flag_table(table, label="label", features=feats, model=args.model, folds=args.folds,
                              seed=args.seed, n_jobs=1).table
            rows.append({"engine": "cleanpipe in memory, stratified folds over every row",
                         "wall_s": time.perf_counter() - t, "equal": "-",
                         **_quality(full["is_label_issue"].to_numpy(zero_copy_only=False), wrong)})
            try:
                from cleanlab.count import estimate_cv_predicted_probabilities
                from cleanlab.filter import find_label_issues
                from sklearn.linear_model import LogisticRegression
                t = time.perf_counter()
                p = estimate_cv_predicted_probabilities(X, codes, clf=LogisticRegression(max_iter=1000),
                                                        cv_n_folds=args.folds, seed=args.seed)
                issues = find_label_issues(codes, p, n_jobs=1)
                rows.append({"engine": "cleanlab 2.9 (peer), LogisticRegression, in memory",
                             "wall_s": time.perf_counter() - t, "equal": "-", **_quality(issues, wrong)})
            except ImportError:
                pass
        del X
        driver_before = peak_rss_mib()
        spark = local_session(args.cores, "spark-oof")
        tracker = spark.sparkContext.statusTracker()
        start_jobs = len(tracker.getJobIdsForGroup(None))
        t = time.perf_counter()
        df = read_table(spark, work / "train")
        n_parts = df.rdd.getNumPartitions()
        result = cs.flag_with_estimates(df, label="label", id_column="row_id", features=feats,
                                        model=args.model, folds=args.folds, seed=args.seed)
        result.frame.write.parquet(str(work / "flags"))
        wall = time.perf_counter() - t
        jobs = len(tracker.getJobIdsForGroup(None)) - start_jobs
        spark.stop()
        got = pq.read_table(work / "flags", columns=["row_id", *FLAG_COLUMNS]).sort_by("row_id")
        equal = got.num_rows == oracle.num_rows and all(
            got[c].to_pylist() == oracle[c].to_pylist() for c in FLAG_COLUMNS)
        rows.append({"engine": f"cleanpipe.spark local[{args.cores}], {n_parts} partitions, {jobs} jobs",
                     "wall_s": wall, "equal": "yes" if equal else "NO",
                     **_quality(got["is_label_issue"].to_numpy(zero_copy_only=False), wrong)})
        import pandas as pd
        print(f"rows={args.rows} features={args.features} classes={args.classes} folds={args.folds} "
              f"model={args.model} seed={args.seed} partitions={args.partitions} "
              f"load={os.getloadavg()[0]:.1f} driver_peak_rss_mib={peak_rss_mib():.0f} "
              f"(before Spark {driver_before:.0f}) sample_rows={result.oof['sample_rows']}")
        print(markdown_table(pd.DataFrame(rows), floatfmt=".3f"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rss_mib(pid="self", field="VmRSS:") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _spark_only(args, work: Path, feats, wrong) -> None:
    """``--spark-only``: the Spark run alone, its driver's peak memory measured from its start.

    The table is written and dropped first and the Python process's peak (VmHWM) is reset
    (``/proc/self/clear_refs``) before the session starts, so the printed peak is what the driver
    held while Spark ran; the JVM's (driver and, in local mode, executor) peak is read from its
    ``/proc`` status before the session stops. No oracle: the row-for-row equality is the default
    ``--oof`` run's."""
    import gc

    import pyarrow.parquet as pq

    from cleanpipe import spark as cs
    from cleanpipe.flagsfile import FLAG_COLUMNS
    from cleanpipe.spark_tables import read_table

    gc.collect()
    rss_before = _rss_mib()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    spark = local_session(args.cores, "spark-oof-only", driver_memory=args.driver_memory)
    jvm = spark.sparkContext._gateway.proc.pid  # spark-submit execs the JVM
    t = time.perf_counter()
    with _job_timer() as jobs:
        df = read_table(spark, work / "train")
        result = cs.flag_with_estimates(df, label="label", id_column="row_id", features=feats,
                                        model=args.model, folds=args.folds, seed=args.seed)
        result.frame.write.parquet(str(work / "flags"))
    wall = time.perf_counter() - t
    jvm_peak = _rss_mib(jvm, "VmHWM:")
    old_gen = _old_gen_peak_mib(spark)
    result.unpersist()
    spark.stop()
    got = pq.read_table(work / "flags", columns=["row_id", *FLAG_COLUMNS]).sort_by("row_id")
    q = _quality(got["is_label_issue"].to_numpy(zero_copy_only=False), wrong[got["row_id"].to_numpy()])
    print(f"rows={args.rows} features={args.features} classes={args.classes} partitions={args.partitions} "
          f"cores={args.cores} model={args.model} load={os.getloadavg()[0]:.1f} wall_s={wall:.1f} "
          f"python_rss_before_spark_mib={rss_before:.0f} python_driver_peak_mib={peak_rss_mib():.0f} "
          f"jvm_peak_mib={jvm_peak:.0f} jvm_old_gen_peak_mib={old_gen:.0f} "
          f"driver_memory={args.driver_memory} sample_rows={result.oof['sample_rows']} "
          f"precision={q['precision']:.3f} recall={q['recall']:.3f}")
    print("jobs (caller: seconds): " + ", ".join(f"{name} {sec:.1f}" for name, sec in jobs))


@contextlib.contextmanager
def _job_timer():
    """Time every ``collect`` and Parquet write (the Spark jobs the run starts), named by the
    cleanpipe function that started it: where the wall time goes, without the Spark UI."""
    from pyspark.sql import DataFrameWriter
    try:
        from pyspark.sql.classic.dataframe import DataFrame  # pyspark 4: the class that runs jobs
    except ImportError:
        from pyspark.sql import DataFrame

    spent = []

    def timed(fn):
        def run(*a, **kw):
            caller = next((f for f in inspect.stack(0)[1:] if "cleanpipe" in f.filename), None)
            name = caller.function if caller else fn.__name__
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent.append((name, time.perf_counter() - t))
        return run

    saved = DataFrame.collect, DataFrameWriter.parquet
    DataFrame.collect, DataFrameWriter.parquet = timed(saved[0]), timed(saved[1])
    try:
        yield spent
    finally:
        DataFrame.collect, DataFrameWriter.parquet = saved


def _old_gen_peak_mib(spark) -> float:
    """The JVM heap's old generation at its fullest (MiB): what stayed live across collections
    (caches, unrolled blocks), unlike the RSS, which a 2 GiB heap grows into whatever it holds."""
    jvm = spark.sparkContext._jvm
    for pool in jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():
        if "Old Gen" in pool.getName() or "Tenured" in pool.getName():
            return pool.getPeakUsage().getUsed() / 2**20
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oof", action="store_true", help="measure the out-of-fold stage (see above)")
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", default="logreg")
    ap.add_argument("--skip-full", action="store_true", help="--oof without the whole-table runs")
    ap.add_argument("--spark-only", action="store_true",
                    help="--oof: only the Spark run, its driver's peak memory measured from its start")
    ap.add_argument("--driver-memory", default="2g",
                    help="--spark-only: spark.driver.memory (the local JVM's heap, driver and executor)")
    args = ap.parse_args()
    if args.oof:
        return run_oof(args)

    import deltalake

    from cleanpipe import spark as cs
    from cleanpipe.flag import flag_table
    from cleanpipe.flagsfile import FLAG_COLUMNS
    from cleanpipe.spark_tables import read_table, write_delta

    work = Path(tempfile.mkdtemp(prefix="spark-flag-"))
    try:
        table = make_table(args.rows, args.classes, args.seed)
        step = -(-args.rows // args.partitions)
        for i in range(args.partitions):  # one commit per file: a Delta table of `partitions` files
            deltalake.write_deltalake(str(work / "train"), table.slice(i * step, step), mode="append")
        rows = []
        t = time.perf_counter()
        want = flag_table(table, label="label", pred_probs="probs").table
        rows.append({"engine": "cleanpipe in memory", "wall_s": time.perf_counter() - t, "jobs": 0,
                     "flagged": int(want["is_label_issue"].to_numpy().sum()), "equal": "-"})
        try:
            from cleanlab.filter import find_label_issues
            probs = np.stack(table["probs"].to_numpy(zero_copy_only=False))
            t = time.perf_counter()
            issues = find_label_issues(table["label"].to_numpy(), probs, n_jobs=1)
            rows.append({"engine": "cleanlab 2.9 (peer), in memory", "wall_s": time.perf_counter() - t,
                         "jobs": 0, "flagged": int(issues.sum()), "equal": "-"})
        except ImportError:
            pass
        driver_before = peak_rss_mib()
        spark = local_session(args.cores, "spark-flag", shuffle_partitions=args.partitions)
        tracker = spark.sparkContext.statusTracker()
        start_jobs = len(tracker.getJobIdsForGroup(None))
        t = time.perf_counter()
        df = read_table(spark, work / "train")
        n_parts = df.rdd.getNumPartitions()
        flags = cs.flag(df, label="label", pred_probs="probs")
        written = write_delta(flags, work / "flags")
        wall = time.perf_counter() - t
        jobs = len(tracker.getJobIdsForGroup(None)) - start_jobs
        got = deltalake.DeltaTable(str(work / "flags")).to_pyarrow_dataset().to_table().sort_by("row_id")
        equal = got.num_rows == written == want.num_rows and all(
            got[c].to_pylist() == want[c].to_pylist() for c in FLAG_COLUMNS)
        rows.append({"engine": f"cleanpipe.spark local[{args.cores}], {n_parts} partitions",
                     "wall_s": wall, "jobs": jobs, "flagged": int(got["is_label_issue"].to_numpy().sum()),
                     "equal": "yes" if equal else "NO"})
        spark.stop()
        import pandas as pd
        print(f"rows={args.rows} classes={args.classes} partitions={args.partitions} "
              f"load={os.getloadavg()[0]:.1f} driver_peak_rss_mib={peak_rss_mib():.0f} "
              f"(before Spark {driver_before:.0f})")
        print(markdown_table(pd.DataFrame(rows), floatfmt=".1f"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
