"""Multi-label detection over partitions against in memory: time, passes, identical results (issue 21).

Synthetic tags with planted missing and spurious tags (seeded); ``detect_multilabel`` on the whole
arrays, then ``detect_multilabel_partitions`` over equal partitions in one process (a LocalRunner,
each partition's per-row cache kept). Prints a Markdown table.

    python benchmarks/multilabel_partitions.py --rows 1e5,4e5 --classes 20 --partitions 16
    python benchmarks/multilabel_partitions.py --in-memory-only --rows 4e5   # e.g. on another commit
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def table(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    true = rng.random((n, k)) < 0.2
    p = np.clip(true * 0.55 + rng.normal(0.2, 0.2, (n, k)), 0.0, 1.0).astype(np.float32)
    given = (true ^ (rng.random((n, k)) < 0.01)).astype(np.uint8)
    return given, p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1e5,4e5")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="posterior")
    ap.add_argument("--in-memory-only", action="store_true")
    a = ap.parse_args()
    from cleanpipe.detect.multilabel import detect_multilabel
    print("| rows | way | seconds | passes | identical to in-memory | flagged |")
    print("| ---: | :--- | ---: | ---: | :--- | ---: |")
    for n in (int(float(r)) for r in a.rows.split(",")):
        Y, P = table(n, a.classes, a.seed)
        t = time.perf_counter()
        ref = detect_multilabel(Y, P, method=a.method)
        print(f"| {n} | in-memory | {time.perf_counter() - t:.2f} | 0 | | {int(ref.is_label_issue.sum())} |")
        if a.in_memory_only:
            continue
        from cleanpipe.detect.partitioned import LocalRunner, run_plan
        from cleanpipe.detect.partitioned_multilabel import multilabel_detection_plan
        bounds = np.linspace(0, n, a.partitions + 1).astype(int)
        runner = LocalRunner([lambda lo=lo, hi=hi: (Y[lo:hi], P[lo:hi])
                              for lo, hi in zip(bounds[:-1], bounds[1:])])
        passes = []

        def merged(step):
            passes.append(step.kind)
            return runner.merged(step)

        t = time.perf_counter()
        est = run_plan(multilabel_detection_plan(a.classes, method=a.method), merged)
        parts = runner.results(est)
        seconds = time.perf_counter() - t
        same = all(np.array_equal(np.concatenate([getattr(p, f) for p in parts]), getattr(ref, f))
                   for f in ("is_label_issue", "label_score", "p_noisy"))
        same &= bool(np.array_equal(est.noise_matrix, ref.noise_matrix))
        print(f"| {n} | partitioned ({a.partitions}) | {seconds:.2f} | {len(passes)} | {same} | "
              f"{int(sum(p.is_label_issue.sum() for p in parts))} |")


if __name__ == "__main__":
    main()
