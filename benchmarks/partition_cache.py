"""What a partition keeps between the detector's passes: cache bytes per row, per array (issue 21).

Runs the partitioned detector in one process (a ``LocalRunner`` over equal partitions, each
partition's cache kept, as a Dask worker keeps them) on synthetic float32 probabilities, and
reports, per case:

- the cache's bytes per row at its largest (after the step where the caches of all partitions
  together were largest), broken down by array (arrays shared between entries counted once);
- the bytes per row still cached when the results are out;
- the peak RSS above the process's RSS before the run, per row (sampled every 2 ms, glibc's mmap
  threshold fixed at 64 KiB so freed arrays leave the RSS, after a warm-up run on 4,000 rows so
  lazily imported modules are not counted; each partition's result is let go once counted, as
  an engine writes it and lets it go: the caches, plus one partition's temporaries and the
  merged partials);
- the wall seconds of the run (plan and results).

Each case runs in a fresh subprocess, so the peaks do not mix. The script imports only
``cleanpipe.detect``, so it also runs against another commit's package
(``PYTHONPATH=/tmp/base python benchmarks/partition_cache.py ...``)::

    python benchmarks/partition_cache.py --rows 1e6 --cases single:2,single:5,single:10,multi:20
    python benchmarks/partition_cache.py --rows 2e5 --cases single:10 --method noise_rate --check

Single-label data (``single:K``): labels uniform over K classes, logits N(0, 1) plus 2 on the
true class, softmax as float32, 10% of the labels moved to another class (seeded). Multi-label
(``multi:K``): 20% of the cells true, probabilities ``clip(0.55 true + N(0.2, 0.2))`` as float32,
1% of the cells flipped (as ``benchmarks/multilabel_partitions.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np


def single_table(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 2.0
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    probs = logits.astype(np.float32)
    del logits
    given = true.copy()
    flip = rng.random(n) < 0.10
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    return given, probs


def multi_table(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    true = rng.random((n, k)) < 0.2
    p = np.clip(true * 0.55 + rng.normal(0.2, 0.2, (n, k)), 0.0, 1.0).astype(np.float32)
    given = (true ^ (rng.random((n, k)) < 0.01)).astype(np.uint8)
    return given, p


def arrays(value, name: str = ""):
    """``(name, array)`` of every numpy array in a cache value (dicts, tuples, dataclasses)."""
    if isinstance(value, np.ndarray):
        yield name, value
    elif isinstance(value, dict):
        for key, v in value.items():
            yield from arrays(v, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from arrays(v, f"{name}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from arrays(getattr(value, f.name), f"{name}.{f.name}")


def cache_bytes(caches) -> dict:
    """Bytes per array name over all partitions' caches, each buffer counted once."""
    seen, out = set(), {}
    for cache in caches:
        for name, a in arrays(cache or {}):
            base = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) in seen:
                continue
            seen.add(id(base))
            out[name] = out.get(name, 0) + base.nbytes
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(case: str, n: int, parts: int, method: str, seed: int, check: bool) -> dict:
    from cleanpipe.detect.partitioned import LocalRunner, detection_plan, partition_result, run_plan
    kind, k = case.split(":")
    k = int(k)
    labels, probs = (single_table if kind == "single" else multi_table)(n, k, seed)
    if kind == "single":
        def plan():
            return detection_plan(k, method=method)
    else:
        from cleanpipe.detect.partitioned_multilabel import multilabel_detection_plan

        def plan():
            return multilabel_detection_plan(k, method=method)
    ref = None
    if check:  # before the baseline: the reference's arrays are not the run's
        if kind == "single":
            from cleanpipe.detect.combine import detect
            ref = detect(labels, probs, method=method)
        else:
            from cleanpipe.detect.multilabel import detect_multilabel
            ref = detect_multilabel(labels, probs, method=method)
    # a warm-up on a small slice first: the modules the passes import lazily are not counted
    warm = LocalRunner([lambda: (labels[:4000], probs[:4000])])
    warm.results(run_plan(plan(), warm.merged))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    runner = LocalRunner([lambda lo=lo, hi=hi: (labels[lo:hi], probs[lo:hi])
                          for lo, hi in zip(bounds[:-1], bounds[1:])])
    peak = {"total": 0, "by": {}, "step": ""}
    steps = []

    def merged(step):
        out = runner.merged(step)
        steps.append(step.kind)
        by = cache_bytes(runner.caches)
        if sum(by.values()) > peak["total"]:
            peak.update(total=sum(by.values()), by=by, step=f"{len(steps)}:{step.kind}")
        return out

    base = rss_bytes()
    top = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            top[0] = max(top[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    est = run_plan(plan(), merged)
    # each partition's result compared and let go, as an engine writes it out and lets it go
    flagged, identical = 0, True
    for i, (src, cache) in enumerate(zip(runner.sources, runner.caches)):
        r = partition_result(est, src, cache, i)
        flagged += int(r.is_label_issue.sum())
        if ref is not None:
            lo, hi = bounds[i], bounds[i + 1]
            identical &= bool(np.array_equal(r.is_label_issue, ref.is_label_issue[lo:hi])
                              and np.array_equal(r.label_score, ref.label_score[lo:hi]))
        del r
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    end = cache_bytes(runner.caches)
    if sum(end.values()) > peak["total"]:
        peak.update(total=sum(end.values()), by=end, step="results")
    out = {"case": case, "rows": n, "partitions": parts, "method": method, "seconds": seconds,
           "passes": len(steps), "peak_step": peak["step"],
           "cache_per_row": peak["total"] / n,
           "by_array": {name: b / n for name, b in sorted(peak["by"].items())},
           "end_per_row": sum(end.values()) / n,
           "rss_per_row": (top[0] - base) / n,
           "flagged": flagged}
    if check:
        out["identical"] = identical
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1e6")
    ap.add_argument("--cases", default="single:2,single:5,single:10,multi:20")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--method", default=None, help="default: combined / posterior (multi-label)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="also compare with the in-memory detector")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON object per case")
    a = ap.parse_args()
    rows = [int(float(r)) for r in a.rows.split(",")]
    cases = a.cases.split(",")
    if a.one:
        method = a.method or ("combined" if cases[0].startswith("single") else "posterior")
        print(json.dumps(one(cases[0], rows[0], a.partitions, method, a.seed, a.check)))
        return
    got = []
    for n in rows:
        for case in cases:
            cmd = [sys.executable, __file__, "--one", "--rows", str(n), "--cases", case,
                   "--partitions", str(a.partitions), "--seed", str(a.seed)]
            cmd += (["--method", a.method] if a.method else []) + (["--check"] if a.check else [])
            # a fixed mmap threshold: freed arrays go back to the system, so RSS follows the arrays
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            got.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                 env=env).stdout.strip().splitlines()[-1]))
    if a.json:
        for g in got:
            print(json.dumps(g))
        return
    print("| case | method | rows | seconds | passes | cache B/row at peak (step) | at the end | "
          "peak RSS B/row | flagged" + (" | identical" if a.check else "") + " |")
    print("| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---:"
          + (" | :---" if a.check else "") + " |")
    for g in got:
        print(f"| {g['case']} | {g['method']} | {g['rows']:,} | {g['seconds']:.2f} | {g['passes']} | "
              f"{g['cache_per_row']:.1f} ({g['peak_step']}) | {g['end_per_row']:.1f} | "
              f"{g['rss_per_row']:.0f} | {g['flagged']:,}"
              + (f" | {g['identical']}" if a.check else "") + " |")
    print()
    print("Bytes per row per array at the cache's peak:")
    print()
    for g in got:
        parts = ", ".join(f"{name} {b:.1f}" for name, b in g["by_array"].items())
        print(f"- {g['case']} ({g['method']}, {g['rows']:,} rows): {parts}")


if __name__ == "__main__":
    main()
