"""Which approximate neighbour library backs ``cleanpipe.neighbors``: build time, search time, peak
memory and recall@10 of faiss-cpu, hnswlib and pynndescent against exact neighbours.

Each (library, rows) case runs in a fresh process (``--worker``) so that its peak RSS is its own.
The data: ``make_classification`` (50 features, 10 informative), standardised, float32. The task
is the one the checks need: the 10 nearest other rows of every row. Recall@10 is measured on 1,000
random rows against exact neighbours from a blocked brute force.

Usage::

    nice -n 10 python benchmarks/neighbor_index.py --rows 100000,1000000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from _common import peak_rss_mib  # the script's folder is on sys.path

#: ``faiss-ivf<P>`` scans the P nearest of sqrt(n) cells; ``faiss-hnsw`` is M=32, efSearch=64.
LIBS = ("faiss-ivf8", "faiss-ivf32", "faiss-hnsw", "hnswlib", "pynndescent")
K = 10
QUERIES = 1000


def make_data(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import make_classification

    X, _ = make_classification(n_samples=n, n_features=50, n_informative=10, n_redundant=5,
                               random_state=seed)
    X = (X - X.mean(0)) / X.std(0)
    return np.ascontiguousarray(X, dtype=np.float32)


def exact_neighbors(X: np.ndarray, rows: np.ndarray, k: int, block: int = 100) -> np.ndarray:
    sq = np.einsum("ij,ij->i", X, X)
    out = []
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        d2 = sq[None, :] - 2.0 * (X[r] @ X.T)
        d2[np.arange(len(r)), r] = np.inf  # not the row itself
        out.append(np.argpartition(d2, k, axis=1)[:, :k])
    return np.concatenate(out)


def run_lib(lib: str, X: np.ndarray, threads: int, seed: int):
    """Build the index and find the K nearest other rows of every row; return (build_s, search_s, idx)."""
    n, d = X.shape
    t0 = time.perf_counter()
    if lib.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(threads)
        if lib.startswith("faiss-ivf"):
            nlist = int(np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            rng = np.random.default_rng(seed)
            index.train(X[rng.choice(n, min(n, 64 * nlist), replace=False)])
            index.add(X)
            index.nprobe = int(lib[len("faiss-ivf"):])
        else:
            index = faiss.IndexHNSWFlat(d, 32)
            index.hnsw.efConstruction = 40
            index.add(X)
            index.hnsw.efSearch = 64
        t1 = time.perf_counter()
        _, idx = index.search(X, K + 1)
    elif lib == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=seed)
        index.set_num_threads(threads)
        index.add_items(X)
        index.set_ef(64)
        t1 = time.perf_counter()
        idx, _ = index.knn_query(X, k=K + 1, num_threads=threads)
    else:
        import numba
        import pynndescent

        numba.set_num_threads(threads)
        index = pynndescent.NNDescent(X, n_neighbors=K + 1, random_state=seed, n_jobs=threads,
                                      low_memory=True)
        t1 = time.perf_counter()
        idx, _ = index.neighbor_graph  # the self-kNN graph is what the build computes
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.asarray(idx, dtype=np.int64)


def data_path(n: int, seed: int) -> str:
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cleanpipe_nbr_{n}_{seed}.npy")


def worker(lib: str, n: int, threads: int, seed: int) -> dict:
    X = np.load(data_path(n, seed))  # made by the parent, so the peak RSS is the index's
    base = resource.getrusage(resource.RUSAGE_SELF)
    rss_data = peak_rss_mib()
    build_s, search_s, idx = run_lib(lib, X, threads, seed)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (used.ru_utime - base.ru_utime) + (used.ru_stime - base.ru_stime)
    peak = peak_rss_mib()  # before the exact answers, which are the benchmark's, not the index's
    rows = np.random.default_rng(seed + 1).choice(n, QUERIES, replace=False)
    truth = exact_neighbors(X, rows, K)
    found = idx[rows]
    hits = [len(set(t) & (set(f) - {r})) for t, f, r in zip(truth, found, rows)]
    return {"lib": lib, "rows": n, "threads": threads, "build_s": build_s, "search_s": search_s,
            "total_s": build_s + search_s, "cpu_s": cpu_s,
            "peak_rss_mib": peak,
            "data_rss_mib": rss_data, "recall@10": float(np.mean(hits) / K)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="100000,1000000")
    p.add_argument("--libs", default=",".join(LIBS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    p.add_argument("--worker", nargs=2, metavar=("LIB", "ROWS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.threads, a.seed)))
        return
    print(f"# {' '.join(sys.argv)}  | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    print("| library | rows | threads | build s | search s | total s | CPU s | peak RSS MiB "
          "(data alone) | recall@10 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for n in map(int, a.rows.split(",")):
        if not os.path.exists(data_path(n, a.seed)):
            np.save(data_path(n, a.seed), make_data(n, a.seed))
        for lib in a.libs.split(","):
            cmd = [sys.executable, __file__, "--worker", lib, str(n), "--threads", str(a.threads),
                   "--seed", str(a.seed)]
            load = os.getloadavg()[0]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                print(f"| {lib} | {n:,} | {a.threads} | did not finish in {a.timeout} s | | | | | |",
                      flush=True)
                continue
            if out.returncode:
                print(f"| {lib} | {n:,} | {a.threads} | failed: "
                      f"{out.stderr.strip().splitlines()[-1][:80]} | | | | | |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {lib} | {n:,} | {a.threads} | {r['build_s']:.1f} | {r['search_s']:.1f} | "
                  f"{r['total_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} "
                  f"({r['data_rss_mib']:.0f}) | {r['recall@10']:.3f} |  <!-- load {load:.1f} -->",
                  flush=True)


if __name__ == "__main__":
    main()
