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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import deltalake
    from pyspark.sql import SparkSession

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
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = (SparkSession.builder.master(f"local[{args.cores}]").appName("spark-flag")
                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                 .config("spark.sql.shuffle.partitions", str(args.partitions))
                 # one partition per file, as a table of large files is read on a cluster
                 .config("spark.sql.files.openCostInBytes", str(128 << 20))
                 .config("spark.driver.memory", "2g").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
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
