"""Multi-label flags with the tag probabilities fitted on the partitions vs on one machine (issue 21).

The cases of ``benchmarks/multilabel.py`` (``load_datasets``, ``inject``): a clean tag matrix,
noise planted with a seed; the table written as ``--partitions`` Parquet files. Each case is
flagged twice with the default model and folds: ``cleanpipe.flag_table`` on the whole table
(one machine: shuffled folds stratified on the tag count, every labelled row trains) and
``cleanpipe.flag_partitions`` without probabilities on a LocalEngine (hashed folds, the bounded
training sample, ``SCALE_SAMPLE_ROWS`` rows per fold model, more than these tables hold). A row
is wrong when any of its tags was changed. Nothing is chosen by these numbers: the held-out
case is reported beside the development ones as ``multilabel.py`` labels them. Prints a
Markdown table.

    python benchmarks/multilabel_partitioned_oof.py --cases issue6,heldout10 --noise flip:0.2 --seeds 0,1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _prf(flags, wrong):
    caught = int((flags & wrong).sum())
    p = caught / max(int(flags.sum()), 1)
    r = caught / max(int(wrong.sum()), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def _table(X, noisy):
    tags = [f"t{j}" for j in range(noisy.shape[1])]
    lists = [[tags[j] for j in np.flatnonzero(row)] for row in noisy]
    cols = {"id": np.arange(len(X)), **{f"x{j}": X[:, j].astype(np.float64) for j in range(X.shape[1])},
            "tags": pa.array(lists, type=pa.list_(pa.string()))}
    return pa.table(cols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="issue6,heldout10")
    ap.add_argument("--noise", default="flip:0.2")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--partitions", type=int, default=8)
    a = ap.parse_args()
    from multilabel import inject, load_datasets

    from cleanpipe import flag_table
    from cleanpipe.partitions import flag_partitions
    kind, rate = a.noise.split(":")
    wanted = a.cases.split(",")
    print("| case | part | noise | seed | way | precision | recall | F1 | flagged | wrong rows | seconds |")
    print("| :--- | :--- | :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, part, X, Y in load_datasets():
        if name not in wanted:
            continue
        for seed in (int(s) for s in a.seeds.split(",")):
            noisy = inject(Y, kind, float(rate), seed)
            wrong = (noisy != Y).any(axis=1)
            table = _table(X, noisy)
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                one = flag_table(table, label="tags", ids=["id"]).table
                rows = [("one machine", one["is_label_issue"].to_numpy(zero_copy_only=False),
                         time.perf_counter() - t)]
                bounds = np.linspace(0, len(X), a.partitions + 1).astype(int)
                os.makedirs(f"{tmp}/data")
                for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                    pq.write_table(table.slice(lo, hi - lo), f"{tmp}/data/part-{i:03d}.parquet")
                from cleanpipe.partitioned_oof import default_settings
                import dataclasses
                oof = dataclasses.replace(default_settings(), ids=("id",))
                t = time.perf_counter()
                flag_partitions(f"{tmp}/data", f"{tmp}/out", label="tags", oof=oof)
                got = pa.concat_tables([pq.read_table(f"{tmp}/out/part-{i:03d}.parquet")
                                        for i in range(a.partitions)])
                rows.append((f"{a.partitions} partitions",
                             got["is_label_issue"].to_numpy(zero_copy_only=False),
                             time.perf_counter() - t))
            for way, flags, seconds in rows:
                p, r, f1 = _prf(flags, wrong)
                print(f"| {name} | {part} | {a.noise} | {seed} | {way} | {p:.3f} | {r:.3f} | {f1:.3f} "
                      f"| {int(flags.sum())} | {int(wrong.sum())} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
