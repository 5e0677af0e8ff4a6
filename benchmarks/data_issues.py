"""Data issues beyond wrong labels: cleanpipe's ``run_checks`` beside cleanlab's ``Datalab`` on the
same feature matrices, with planted exact duplicates, near duplicates, duplicates whose labels
disagree and outliers.

Every case plants all four kinds in disjoint rows of one table (scikit-learn's bundled digits,
wine, iris, breast_cancer, or ``make_classification`` with 50 features) after standardising it:

- exact: ``m`` rows replaced by copies of ``m`` other rows;
- near: ``m`` rows replaced by copies of other rows plus N(0, ``NEAR_NOISE``^2) per feature;
- conflict: like near, and the copy's label moved to another class;
- outlier: ``m`` rows replaced by a random row shifted by ``OUTLIER_SHIFT`` standard deviations
  per feature, in a random sign per feature.

Truth per check: *exact*: the rows in a group of equal rows (planted or not); *near*: those plus
the planted near and conflict pairs; *conflict*: the planted conflict pairs plus natural groups of
equal rows with different labels; *outlier*: the shifted rows. Datalab has no exact-duplicate
check: its near-duplicate flag answers for both; its conflicts are its near-duplicate sets put
through the same rule as ours (a set holding two labels).

Each tool runs on each case in a fresh process (``--worker``): wall time and peak RSS (VmHWM) are
its own, the case's matrix loaded from a ``.npz`` beforehand. Tuning part: seed 0 of digits,
wine, iris and synth; held out: breast_cancer (both seeds) and seed 1 of every table.

Usage::

    nice -n 10 python benchmarks/data_issues.py --tables digits,wine,iris,breast_cancer,synth1e5 --seeds 0,1
    nice -n 10 python benchmarks/data_issues.py --tables synth1e6 --seeds 0 --tools cleanpipe
    python benchmarks/data_issues.py --tune --tables digits,wine,iris,synth1e5 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from _common import peak_rss_mib  # the script's folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

CHECKS = ("exact", "near", "conflict", "outlier")
#: Share of rows planted per kind (at least ``MIN_PLANTED``).
PLANT_FRACTION = 0.01
MIN_PLANTED = 3
#: Standard deviation of the noise of a near copy, per standardised feature.
NEAR_NOISE = 0.02
#: Shift of an outlier, in standard deviations per feature.
OUTLIER_SHIFT = 2.0
HELD_OUT_TABLES = ("breast_cancer",)
HELD_OUT_SEEDS = (1,)


def _bundled(name):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def base_table(name: str, seed: int):
    if name.startswith("synth"):
        from sklearn.datasets import make_classification

        n = int(float(name[len("synth"):]))
        return make_classification(n_samples=n, n_features=50, n_informative=10, n_redundant=5,
                                   n_classes=3, random_state=seed)
    return _bundled(name)


def make_case(name: str, seed: int):
    """The standardised matrix with the planted issues, its labels and the truth per check."""
    X, y = base_table(name, seed)
    X = ((X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)).astype(np.float32)
    y = np.asarray(y, np.int64)
    n, d = X.shape
    K = int(y.max()) + 1
    rng = np.random.default_rng(seed + 1000)
    m = max(MIN_PLANTED, int(PLANT_FRACTION * n))
    rows = rng.permutation(n)[:7 * m]  # disjoint: 3 sources, 3 targets, 1 outlier block
    src = rows[:3 * m].reshape(3, m)
    dst = rows[3 * m:6 * m].reshape(3, m)
    out = rows[6 * m:]
    X[dst[0]] = X[src[0]]
    y[dst[0]] = y[src[0]]
    X[dst[1]] = X[src[1]] + rng.normal(0, NEAR_NOISE, (m, d))
    y[dst[1]] = y[src[1]]
    X[dst[2]] = X[src[2]] + rng.normal(0, NEAR_NOISE, (m, d))
    y[dst[2]] = (y[src[2]] + rng.integers(1, K, m)) % K
    base = X[rng.integers(0, n, m)]
    X[out] = base + OUTLIER_SHIFT * rng.choice([-1.0, 1.0], (m, d))
    truth = {c: np.zeros(n, bool) for c in CHECKS}
    # natural groups of equal rows (iris and digits hold some) count as exact duplicates
    _, inv, cnt = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    truth["exact"] = cnt[inv] > 1
    truth["near"] = truth["exact"].copy()
    truth["near"][np.r_[src[1], dst[1], src[2], dst[2]]] = True
    truth["conflict"][np.r_[src[2], dst[2]]] = True
    labels_per_group = np.zeros(len(cnt), np.int64)
    for k in range(K):  # over classes: groups holding class k
        labels_per_group += np.bincount(inv[y == k], minlength=len(cnt)) > 0
    truth["conflict"] |= truth["exact"] & (labels_per_group[inv] > 1)
    truth["outlier"][out] = True
    return X, y, truth


def case_path(name: str, seed: int) -> str:
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cleanpipe_issues_{name}_{seed}.npz")


def conflicts_from_sets(sets: np.ndarray, y: np.ndarray) -> np.ndarray:
    from cleanpipe.checks.duplicates import label_conflicts

    return label_conflicts(sets, y)[0]


def run_cleanpipe(X, y, settings: dict):
    from cleanpipe.checks import CheckSettings, run_checks

    c = run_checks(X, y, settings=CheckSettings(**settings)).columns
    return {"exact": c["is_exact_duplicate"], "near": c["is_near_duplicate"],
            "conflict": c["label_conflict"], "outlier": c["is_outlier"]}


def run_datalab(X, y):
    from cleanlab import Datalab

    lab = Datalab(data={"label": y}, label_name="label", verbosity=0)
    lab.find_issues(features=X, issue_types={"near_duplicate": {}, "outlier": {}})
    nd = lab.get_issues("near_duplicate")
    near = nd["is_near_duplicate_issue"].to_numpy()
    # Datalab's sets list each row's near duplicates; join them into components like ours
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    src = np.repeat(np.arange(len(y)), nd["near_duplicate_sets"].map(len).to_numpy())
    dst = np.concatenate([np.asarray(s, np.int64) for s in nd["near_duplicate_sets"]] + [np.zeros(0, np.int64)])
    g = coo_matrix((np.ones(len(src)), (src, dst)), shape=(len(y), len(y)))
    _, comp = connected_components(g, directed=True, connection="weak")
    sets = np.where(near, comp, -1)
    return {"exact": near, "near": near, "conflict": conflicts_from_sets(sets, y),
            "outlier": lab.get_issues("outlier")["is_outlier_issue"].to_numpy()}


def worker(tool: str, name: str, seed: int, settings: dict) -> dict:
    import resource

    z = np.load(case_path(name, seed))
    X, y = z["X"], z["y"]
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    if tool == "cleanpipe":
        found = run_cleanpipe(X, y, settings)
    else:
        found = run_datalab(X, y)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(),
            "found": {k: np.flatnonzero(v).tolist() for k, v in found.items()}}


def prf(found: np.ndarray, truth: np.ndarray):
    tp = int((found & truth).sum())
    p = tp / found.sum() if found.sum() else (1.0 if not truth.any() else 0.0)
    r = tp / truth.sum() if truth.sum() else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(found_rows: dict, truth: dict) -> dict:
    n = len(truth["exact"])
    out = {}
    for c in CHECKS:
        f = np.zeros(n, bool)
        f[found_rows[c]] = True
        out[c] = prf(f, truth[c])
    return out


def held_out(name: str, seed: int) -> bool:
    return name in HELD_OUT_TABLES or seed in HELD_OUT_SEEDS


def run_case(tool, name, seed, settings, timeout):
    cmd = [sys.executable, __file__, "--worker", tool, name, str(seed), "--settings",
           json.dumps(settings)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"did not finish in {timeout} s"
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["killed"])[-1][:100]
        return None, f"failed (exit {out.returncode}: {tail})"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default="digits,wine,iris,breast_cancer,synth1e5")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--tools", default="cleanpipe,datalab")
    p.add_argument("--settings", default="{}", help="CheckSettings fields as JSON")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--tune", action="store_true",
                   help="grid of near_fraction x outlier_z, cleanpipe only, in this process")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    settings = json.loads(a.settings)
    if a.worker:
        tool, name, seed = a.worker
        print(json.dumps(worker(tool, name, int(seed), settings)))
        return
    tables, seeds = a.tables.split(","), [int(s) for s in a.seeds.split(",")]
    print(f"# {' '.join(sys.argv)} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    cases = {}
    for name in tables:
        for seed in seeds:
            X, y, truth = make_case(name, seed)
            np.savez(case_path(name, seed), X=X, y=y)
            cases[name, seed] = truth
    if a.tune:
        return tune(cases, tables, seeds)
    print("| part | table | seed | rows | tool | " + " | ".join(f"{c} P/R/F1" for c in CHECKS)
          + " | wall s | CPU s | peak RSS MiB | load |")
    print("|---|---|---:|---:|---|" + "---|" * len(CHECKS) + "---:|---:|---:|---:|", flush=True)
    f1 = {}
    for (name, seed), truth in cases.items():
        for tool in a.tools.split(","):
            load = os.getloadavg()[0]
            r, why = run_case(tool, name, seed, settings, a.timeout)
            part = "held-out" if held_out(name, seed) else "tuning"
            head = f"| {part} | {name} | {seed} | {len(truth['exact']):,} | {tool} | "
            if r is None:
                print(head + " | ".join([why] + [""] * (len(CHECKS) - 1)) + f" | | | | {load:.1f} |",
                      flush=True)
                continue
            s = score(r["found"], truth)
            for c in CHECKS:
                f1.setdefault((part, tool, c), []).append(s[c][2])
            cells = " | ".join(f"{s[c][0]:.2f}/{s[c][1]:.2f}/**{s[c][2]:.2f}**" for c in CHECKS)
            print(head + cells + f" | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                  f"{load:.1f} |",
                  flush=True)
    print("\nMean F1 per check\n\n| part | tool | " + " | ".join(CHECKS) + " |\n|---|---|"
          + "---:|" * len(CHECKS))
    for part in ("tuning", "held-out"):
        for tool in a.tools.split(","):
            if (part, tool, CHECKS[0]) in f1:
                print(f"| {part} | {tool} | " + " | ".join(
                    f"{np.mean(f1[part, tool, c]):.3f}" for c in CHECKS) + " |")


def tune(cases, tables, seeds):
    """Mean F1 of each check over the tuning cases for a grid of the two calibrated defaults; the
    neighbours are found once per case and the checks' pure functions rerun per setting."""
    from cleanpipe.checks.duplicates import (default_radius, exact_duplicate_sets, label_conflicts,
                                             near_duplicate_sets)
    from cleanpipe.checks.encode import Scaler
    from cleanpipe.checks.outliers import knn_distance_score, outlier_threshold
    from cleanpipe.neighbors import NeighborIndex
    from cleanpipe.settings import CLIP_Z, DEFAULT_CHECK_K

    tuning = {k: v for k, v in cases.items() if not held_out(*k)}
    fracs, zs = (0.05, 0.1, 0.13, 0.2, 0.3, 0.4), (2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
    f1 = {}
    for key, truth in tuning.items():
        z = np.load(case_path(*key))
        X, y = z["X"], z["y"]
        exact = exact_duplicate_sets(X)
        dist, idx = NeighborIndex.build(Scaler.fit(X).transform(X, clip=CLIP_Z)).kneighbors(min(DEFAULT_CHECK_K, len(X) - 1))
        f1.setdefault("exact", []).append(prf(exact >= 0, truth["exact"])[2])
        for frac in fracs:
            near = near_duplicate_sets(dist, idx, default_radius(dist, frac), exact)
            f1.setdefault(("near", frac), []).append(prf(near >= 0, truth["near"])[2])
            f1.setdefault(("conflict", frac), []).append(
                prf(label_conflicts(near, y)[0], truth["conflict"])[2])
        score_ = knn_distance_score(dist)
        for zz in zs:
            found = score_ > outlier_threshold(score_, zz)
            f1.setdefault(("outlier", zz), []).append(prf(found, truth["outlier"])[2])
    print(f"exact F1 (no setting): {np.mean(f1['exact']):.3f}\n")
    print("| near_fraction | near F1 | conflict F1 |\n|---:|---:|---:|")
    for frac in fracs:
        print(f"| {frac} | {np.mean(f1['near', frac]):.3f} | {np.mean(f1['conflict', frac]):.3f} |")
    print("\n| outlier_z | outlier F1 |\n|---:|---:|")
    for zz in zs:
        print(f"| {zz} | {np.mean(f1['outlier', zz]):.3f} |")


if __name__ == "__main__":
    main()
