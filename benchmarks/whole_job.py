"""Whole job: ``cleanpipe flag t.parquet`` (default options) against the cleanlab path, end to end.

For every case (rows x table kind x classes x noise rate) and seed, a synthetic table with a known
set of flipped labels is written to Parquet; then, each in a fresh child process:

* **cleanpipe**: ``cleanpipe flag t.parquet --out F --quiet`` (every other option at its default);
* **cleanlab**: read the Parquet with pandas, encode the features (numbers as float32, strings as
  category codes), ``cross_val_predict`` of scikit-learn's ``HistGradientBoostingClassifier`` and
  the imputed, one-hot, scaled logistic regression (``cleanpipe.oof.make_model("hgb")`` and
  ``cleanpipe.linear.logistic_pipeline``, so that the settings match ``--model hgb,logreg``;
  cleanpipe's default ``gbm`` is LightGBM when it is installed, with the same tree settings, and
  its logistic regression fits each fold on one design matrix built once) on
  the same folds (``StratifiedKFold(5, shuffle=True, random_state=0)``, what ``flag --seed 0``
  uses), their probabilities averaged, then ``cleanlab.filter.find_label_issues`` (its defaults) for
  the flags and ``cleanlab.rank.get_label_quality_scores`` for the ranking.

Each child's wall time (launch to exit, including imports and Parquet I/O), CPU seconds (user +
system) and peak RSS (``os.wait4``) are measured; F1 of the flags and AUPRC of the ranking (lowest score
first) against the flipped rows are computed here. The seed sets the table and its noise; the
fold seed of both paths is 0 (``flag``'s default).

Tables (``make_classification``: 20 features, 10 informative, 4 redundant, 2 clusters per class):
``numeric`` keeps the 20 float32 columns; ``mixed`` turns 4 informative columns into string
categories (8 quantile levels), adds a 20-level category with no signal, and blanks 5% of one
numeric column. Noise: a fraction of rows gets a uniformly drawn other class.

Both children run with one OpenMP/BLAS thread (``--threads 1``, the default; ``--threads 0``
leaves the environment alone): on a shared 2-core machine two OpenMP threads made one
HistGradientBoosting fit 10-20x slower, which would swamp every other difference. ``--curve``
instead prints the learning curve of the out-of-fold stage (detection F1, AUPRC and CPU seconds
against ``max_train_rows``) in this process.

Usage (from the repository root)::

    python benchmarks/whole_job.py --rows 1e4,1e5 --seeds 0,1,2 --held-out 2 --write
    python benchmarks/whole_job.py --case 1e6:numeric:10:0.1 --case 1e6:mixed:10:0.1 \\
        --seeds 0,1,2 --held-out 2 --write --section "1,000,000 rows"
    python benchmarks/whole_job.py --rows 1e5 --kinds numeric --classes 10 --noises 0.1 \\
        --seeds 0 --only cleanpipe                  # a quick look at cleanpipe alone
    OMP_NUM_THREADS=1 python benchmarks/whole_job.py --curve --case 1e5:numeric:10:0.1 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from ._common import CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block, replace_section
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block, replace_section

KINDS = ("numeric", "mixed")
PATHS = ("cleanpipe", "cleanlab")
FOLDS = 5
FOLD_SEED = 0
N_FEATURES = 20
SECTION = "Whole job"
DATA_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def make_table(rows: int, kind: str, classes: int, noise: float, seed: int):
    """(Arrow table with a ``label`` column, bool mask of the flipped rows)."""
    import pyarrow as pa
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=10,
                               n_redundant=4, n_classes=classes, n_clusters_per_class=2,
                               class_sep=1.0, flip_y=0.0, shuffle=True, random_state=seed)
    X = X.astype(np.float32)
    rng = np.random.default_rng([seed, rows, classes, int(noise * 1000), KINDS.index(kind)])
    flipped = rng.random(rows) < noise
    labels = y.copy()
    labels[flipped] = (y[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    cols = {}
    if kind == "numeric":
        cols = {f"f{j}": X[:, j] for j in range(N_FEATURES)}
    else:
        # make_classification puts the informative columns first, then shuffles columns only
        # when shuffle=True; which columns are informative does not matter for the benchmark.
        for j in range(N_FEATURES):
            if j < 4:
                edges = np.quantile(X[:, j], np.linspace(0, 1, 9)[1:-1])
                level = np.searchsorted(edges, X[:, j])
                names = np.array([f"c{j}_{v}" for v in range(8)])
                cols[f"c{j}"] = pa.array(names[level]).dictionary_encode()
            else:
                col = X[:, j].copy()
                if j == 4:
                    col[rng.random(rows) < 0.05] = np.nan
                cols[f"f{j}"] = pa.array(col, from_pandas=True)
        noise_levels = np.array([f"z{v}" for v in range(20)])
        cols["zcat"] = pa.array(noise_levels[rng.integers(0, 20, rows)]).dictionary_encode()
    cols["label"] = labels.astype(np.int64)
    return pa.table(cols), flipped


def table_path(rows: int, kind: str, classes: int, noise: float, seed: int) -> tuple[Path, Path]:
    import pyarrow.parquet as pq

    d = CACHE_DIR / "whole_job"
    stem = f"v{DATA_VERSION}_{rows}_{kind}_k{classes}_n{int(noise * 100)}_s{seed}"
    data, truth = d / f"{stem}.parquet", d / f"{stem}.truth.npy"
    if not (data.exists() and truth.exists()):
        d.mkdir(parents=True, exist_ok=True)
        table, flipped = make_table(rows, kind, classes, noise, seed)
        pq.write_table(table, data.with_suffix(".tmp"))
        np.save(truth, flipped)
        data.with_suffix(".tmp").replace(data)
    return data, truth


# --------------------------------------------------------------------------------------------------
# The cleanlab path (run in a child: ``whole_job.py --cleanlab-worker DATA OUT``)
# --------------------------------------------------------------------------------------------------


def cleanlab_worker(data: str, out: str) -> None:
    import warnings

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    df = pd.read_parquet(data)
    labels = df.pop("label").to_numpy()
    cats = np.array([isinstance(df[c].dtype, pd.CategoricalDtype) or df[c].dtype == object
                     for c in df.columns])
    X = np.column_stack([
        np.where(df[c].cat.codes.to_numpy() < 0, np.nan, df[c].cat.codes.to_numpy())
        if cat else df[c].to_numpy() for c, cat in zip(df.columns, cats)]).astype(np.float32)
    del df
    # The estimators themselves (not their fitting) come from cleanpipe, so both paths fit the
    # same two model families with the same settings; the logistic regression is the plain
    # scikit-learn pipeline, refitted per fold (cleanpipe builds its design once per run).
    from cleanpipe.linear import logistic_pipeline
    from cleanpipe.oof import make_model

    hgb = make_model("hgb", categorical=cats, seed=FOLD_SEED)
    logreg = logistic_pipeline(cats, random_state=FOLD_SEED)
    cv = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=FOLD_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = np.mean([cross_val_predict(est, X, labels, cv=cv, method="predict_proba")
                     for est in (hgb, logreg)], axis=0)
        issues = find_label_issues(labels, P)
        scores = get_label_quality_scores(labels, P)
    np.savez(out, is_label_issue=issues, label_score=scores)


# --------------------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------------------


def timed_child(cmd: list, env: dict) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MiB, CPU seconds) of ``cmd`` run to completion in a child process.

    CPU seconds (user + system of the child and its own children) do not grow with the load of a
    shared machine the way wall time does, so with one thread per child their ratio is the
    steadier measure of which path does less work.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def run_path(path: str, data: Path, workdir: Path, threads: int | None, flag_args=()
             ) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    if threads:
        env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS")})
    if path == "cleanpipe":
        out = workdir / "t.flags.parquet"
        exe = Path(sys.executable).with_name("cleanpipe")
        wall, rss, cpu = timed_child([str(exe), "flag", str(data), "--out", str(out), "--quiet",
                                      *flag_args], env)
        import pyarrow.parquet as pq

        t = pq.read_table(out, columns=["is_label_issue", "label_score"])
        return wall, rss, cpu, t["is_label_issue"].to_numpy(), t["label_score"].to_numpy()
    out = workdir / "cleanlab.npz"
    wall, rss, cpu = timed_child([sys.executable, __file__, "--cleanlab-worker", str(data), str(out)], env)
    with np.load(out) as z:
        return wall, rss, cpu, z["is_label_issue"], z["label_score"]


def score(flags: np.ndarray, label_score: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, f1_score

    return float(f1_score(truth, flags)), float(average_precision_score(truth, -label_score))


def run_case(case: tuple, seed: int, paths, threads: int | None, flag_args=()) -> list:
    rows, kind, classes, noise = case
    data, truth_file = table_path(rows, kind, classes, noise, seed)
    truth = np.load(truth_file)
    out = []
    for path in paths:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="whole_job_") as tmp:
            wall, rss, cpu, flags, ls = run_path(path, data, Path(tmp), threads, flag_args)
        f1, auprc = score(flags, ls, truth)
        progress(f"  {rows} {kind} k={classes} noise={noise} seed={seed} {path}: {wall:.1f}s "
                 f"(CPU {cpu:.1f}s) {rss:.0f} MiB F1 {f1:.3f} AUPRC {auprc:.3f} (load {load:.1f})")
        out.append({"rows": rows, "kind": kind, "classes": classes, "noise": noise, "seed": seed,
                    "path": path, "wall_s": wall, "cpu_s": cpu, "rss_mib": rss, "f1": f1,
                    "auprc": auprc, "load": load})
    return out


def side_by_side(df: pd.DataFrame) -> pd.DataFrame:
    """One row per case: each path's mean time, RSS, F1, AUPRC over the seeds given, and ratios."""
    keys = ["rows", "kind", "classes", "noise"]
    metrics = [m for m in ("wall_s", "cpu_s", "rss_mib", "f1", "auprc") if m in df.columns]
    g = df.groupby(keys + ["path"], sort=False)[metrics].mean()
    wide = g.unstack("path")
    wide.columns = [f"{m}:{p}" for m, p in wide.columns]
    out = wide.reset_index()
    if {"wall_s:cleanpipe", "wall_s:cleanlab"} <= set(out.columns):
        out["speedup"] = out["wall_s:cleanlab"] / out["wall_s:cleanpipe"]
        if "cpu_s:cleanpipe" in out.columns:
            out["cpu_speedup"] = out["cpu_s:cleanlab"] / out["cpu_s:cleanpipe"]
        out["dF1"] = out["f1:cleanpipe"] - out["f1:cleanlab"]
        out["dAUPRC"] = out["auprc:cleanpipe"] - out["auprc:cleanlab"]
    order = [c for p in metrics for c in (f"{p}:cleanpipe", f"{p}:cleanlab") if c in out.columns]
    return out[keys + order + [c for c in ("speedup", "cpu_speedup", "dF1", "dAUPRC")
                               if c in out.columns]]


def learning_curve(case: tuple, caps: list, seed: int, model: str | None = None) -> pd.DataFrame:
    """Detection F1 / AUPRC and CPU seconds of the out-of-fold stage against ``max_train_rows``.

    In this process, one OpenMP/BLAS thread (set the environment before running), so CPU seconds
    compare the settings however busy the machine is.
    """
    import warnings

    import pyarrow.parquet as pq

    import cleanpipe
    from cleanpipe.features import table_to_features
    from cleanpipe.oof import cross_val_probs

    data, truth_file = table_path(*case, seed)
    table, truth = pq.read_table(data), np.load(truth_file)
    cols = [c for c in table.column_names if c != "label"]
    feats, y = table_to_features(table, cols), table["label"].to_numpy()
    out = []
    for cap in caps:
        cpu = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            P = cross_val_probs(feats.X, y, categorical=feats.categorical, max_train_rows=cap,
                                seed=FOLD_SEED, **({"model": model} if model else {})).pred_probs
        cpu = time.process_time() - cpu
        det = cleanpipe.find_label_issues(y, P)
        f1, auprc = score(det["is_label_issue"].to_numpy(), det["label_score"].to_numpy(), truth)
        out.append({"rows": case[0], "kind": case[1], "classes": case[2], "noise": case[3],
                    "seed": seed, "model": model or "default", "max_train_rows": cap or "all", "oof_cpu_s": cpu, "f1": f1,
                    "auprc": auprc, "oof_accuracy": float((P.argmax(1) == y).mean())})
        progress(str(out[-1]))
    return pd.DataFrame(out)


def parse_rows(text: str) -> list:
    return [int(float(v)) for v in text.split(",")]


def parse_case(text: str) -> tuple:
    rows, kind, classes, noise = text.split(":")
    if kind not in KINDS:
        raise SystemExit(f"--case {text}: kind must be one of {', '.join(KINDS)}")
    return int(float(rows)), kind, int(classes), float(noise)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="1e4,1e5", help="comma-separated row counts of the grid")
    p.add_argument("--kinds", default="numeric,mixed")
    p.add_argument("--classes", default="2,10")
    p.add_argument("--noises", default="0.1,0.3")
    p.add_argument("--case", action="append", type=parse_case, default=[],
                   help="ROWS:KIND:CLASSES:NOISE, repeatable; replaces the grid")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--held-out", type=int, default=None, help="the seed never looked at while tuning")
    p.add_argument("--only", choices=PATHS, default=None, help="run one path only")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP/BLAS threads of both children (0: unset); see the Notes in RESULTS.md")
    p.add_argument("--save", default=None, help="append the raw per-run rows to this CSV")
    p.add_argument("--load", action="append", default=[],
                   help="add the raw rows of earlier runs (CSV from --save) to the tables")
    p.add_argument("--no-run", action="store_true", help="only tabulate the rows given by --load")
    p.add_argument("--write", action="store_true", help="record the tables in benchmarks/RESULTS.md")
    p.add_argument("--section", default=None, help="### subsection of 'Whole job' to (re)write")
    p.add_argument("--curve", action="store_true",
                   help="learning curve of the out-of-fold stage against --caps, in this process")
    p.add_argument("--caps", default="1e4,2e4,4e4,none", help="max_train_rows values for --curve")
    p.add_argument("--model", default=None, help="--curve: the model (default: cleanpipe's)")
    p.add_argument("--flag-args", default="",
                   help="extra options of the cleanpipe child, space-separated (e.g. '--model hgb,logreg')")
    p.add_argument("--cleanlab-worker", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cleanlab_worker:
        cleanlab_worker(*args.cleanlab_worker)
        return
    cases = args.case or [(r, k, int(c), float(n)) for r in parse_rows(args.rows)
                          for k in args.kinds.split(",") for c in args.classes.split(",")
                          for n in args.noises.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.curve:
        caps = [None if c == "none" else int(float(c)) for c in args.caps.split(",")]
        table = pd.concat([learning_curve(c, caps, s, args.model) for c in cases for s in seeds])
        print(table.to_string(index=False))
        if args.write:
            _write(args.section or "Learning curve", [
                provenance_block("whole_job.py", cleanpipe_version()).rstrip(), "",
                markdown_table(table)])
        return
    paths = (args.only,) if args.only else PATHS
    load_before = os.getloadavg()
    rows = []
    for case in [] if args.no_run else cases:
        for seed in seeds:
            rows.extend(run_case(case, seed, paths, args.threads, args.flag_args.split()))
            if args.save:
                pd.DataFrame(rows[-len(paths):]).to_csv(
                    args.save, mode="a", header=not Path(args.save).exists(), index=False)
    df = pd.concat([pd.DataFrame(rows), *(pd.read_csv(f) for f in args.load)], ignore_index=True)
    seeds = sorted(set(df["seed"]))
    load_after = os.getloadavg()
    load_line = ("" if args.no_run else
                 f"load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in load_before)} before, "
                 f"{', '.join(f'{v:.1f}' for v in load_after)} after; ") + (
                 f"1-min load average at the starts of the runs {df['load'].min():.1f}-"
                 f"{df['load'].max():.1f} (mean {df['load'].mean():.1f}); {os.cpu_count()} cores, "
                 f"{platform.machine()}")
    tuned = [s for s in seeds if s != args.held_out]
    parts = []
    for role, ss in (("tuning seeds " + ",".join(map(str, tuned)), tuned),
                     (f"held-out seed {args.held_out}", [args.held_out] if args.held_out in seeds else [])):
        if ss:
            parts.append((role, side_by_side(df[df["seed"].isin(ss)])))
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.float_format", "{:.3f}".format):
        for role, table in parts:
            print(f"== {role} (means over seeds) ==")
            print(table.to_string(index=False))
            print()
    print(load_line)
    if args.write:
        body = [provenance_block("whole_job.py", cleanpipe_version()).rstrip(), "", load_line + ".", ""]
        for role, table in parts:
            body += [f"{role[0].upper()}{role[1:]} (means over the seeds; times in seconds, RSS in "
                     "MiB):", "", markdown_table(table), ""]
        _write(args.section or "Grid", body)


def _write(title: str, body: list) -> None:
    """Replace the ``### title`` subsection of the Whole job section of RESULTS.md (or add it)."""
    import re

    try:
        from ._common import RESULTS_MD
    except ImportError:
        from _common import RESULTS_MD
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    m = re.search(rf"^## {SECTION}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    subs = re.split(r"(?=^### )", m.group(1) if m else "", flags=re.M)
    head = subs[0] if subs and not subs[0].startswith("### ") else ""
    kept = [x for x in subs if x.startswith("### ") and not x.startswith(f"### {title}\n")]
    new = "\n".join([f"### {title}", "", *body])
    replace_section(SECTION, (head.strip("\n") + "\n\n" if head.strip() else "")
                    + "\n".join(x.rstrip("\n") + "\n" for x in kept) + new)


if __name__ == "__main__":
    main()
