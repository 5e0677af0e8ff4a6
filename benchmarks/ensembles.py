"""Ensembles of model families: single models vs averaged out-of-fold probabilities, beside cleanlab.

For every case (dataset x noise) the out-of-fold probabilities of each model family are computed
with ``cleanpipe.out_of_fold_probs`` on the same stratified folds (same seed), and an ensemble's
probabilities are the mean of its members' (what ``--model hgb,logreg`` computes; the tests check
that equality). Each probability set is fed to cleanpipe's default rule and to every cleanlab
``filter_by``; flags are scored against the injected errors (F1) and ``label_score`` by AUPRC.
Wall time is the seconds spent computing each family's out-of-fold probabilities (an ensemble
costs the sum of its members when fitted in turn, ``n_jobs=1``).

Decision rule, fixed before any run: an ensemble replaces ``hgb`` as the default only if, on the
held-out seed, its mean F1 (cleanpipe default rule) and mean AUPRC are both higher than hgb's and
its out-of-fold time is at most 2x hgb's. The tuning seed is the one looked at while choosing.
Added after the tuning seed and before the held-out seed was read, because most real tables have
0-5% wrong labels and there the tuning seed showed every ensemble with logreg ranking worse than hgb
alone: the ensemble must also not lose more than 0.01 mean AUPRC on the 5% noise cases (``sym5``).

Run from the repository root (model threads pinned to 1: on a shared 2-core machine OpenMP
spin-waiting made hgb 9x slower)::

    OMP_NUM_THREADS=1 python benchmarks/ensembles.py --seeds 0          # the tuning seed only
    OMP_NUM_THREADS=1 python benchmarks/ensembles.py --seeds 0,1 --write  # and the held-out seed
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
import zlib
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

try:
    from . import detection_quality as dq
    from ._common import CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block, replace_section
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import detection_quality as dq
    from _common import CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block, replace_section

#: Model families: cleanpipe ``--model`` names (``package.module:Class`` for the third family).
FAMILIES = {"hgb": "hgb", "logreg": "logreg", "et": "sklearn.ensemble:ExtraTreesClassifier"}
#: Probability sets compared: each family alone and every ensemble of two or three.
SETS = [(f,) for f in FAMILIES] + [c for r in (2, 3) for c in combinations(FAMILIES, r)]
BASELINE = ("hgb",)
#: The noise setting of the low-noise condition of the decision rule.
LOW_NOISE = "sym5"

#: The suite's small real tables plus a 4,000-row version of its synth6 (the 20,000-row tables
#: would take tens of minutes per seed on a shared 2-core machine).
DATASETS = {
    "digits": dq.DATASETS["digits"],
    "wine": dq.DATASETS["wine"],
    "breast_cancer": dq.DATASETS["breast_cancer"],
    "iris": dq.DATASETS["iris"],
    "synth6_4k": lambda: make_classification(
        n_samples=4_000, n_features=20, n_informative=10, n_redundant=4, n_classes=6,
        n_clusters_per_class=1, class_sep=1.0, random_state=6),
}
#: name -> (kind, rate): the suite's noises plus a low symmetric rate.
NOISES = {"sym5": ("symmetric", 0.05), **dq.NOISES}
CACHE_VERSION = 1


def load(name: str):
    X, y = DATASETS[name]()
    _, y = np.unique(y, return_inverse=True)
    return np.asarray(X, dtype=np.float64), y.astype(np.int64)


def noisy_labels(dataset: str, noise: str, X, y, seed: int) -> np.ndarray:
    kind, rate = NOISES[noise]
    k = int(y.max()) + 1
    rng = dq.case_rng(seed, dataset, noise)
    if kind == "symmetric":
        return dq.flip_symmetric(y, k, rate, rng)
    if kind == "pair":
        return dq.flip_pair(y, k, rate, rng)
    clean = dq.cached_oof(f"{dataset}_clean", X, y, "logreg", seed, 5, 1)
    return dq.flip_instance(y, k, rate, rng, clean)


def family_oof(dataset: str, noise: str, family: str, X, labels, seed: int) -> tuple[np.ndarray, float]:
    """cleanpipe's out-of-fold probabilities of one family and the seconds they took (cached)."""
    from cleanpipe import out_of_fold_probs

    digest = f"{zlib.crc32(np.ascontiguousarray(labels).tobytes()):08x}"
    path = CACHE_DIR / f"ens{CACHE_VERSION}_{dataset}_{noise}_{family}_s{seed}_{digest}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["probs"], float(z["seconds"])
    folds = dq.effective_folds(labels, 5)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = out_of_fold_probs(X, labels, model=FAMILIES[family], folds=folds, seed=seed)
    seconds = time.perf_counter() - start
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, probs=probs, seconds=seconds)
    tmp.replace(path)
    progress(f"    {dataset}/{noise}/{family}: {seconds:.1f}s")
    return probs, seconds


def run(seed: int, datasets, noises) -> pd.DataFrame:
    import cleanpipe

    detector = {"cleanpipe:combined": lambda labels, P: cleanpipe.find_label_issues(labels, P)}
    rows = []
    for dataset in datasets:
        X, y = load(dataset)
        for noise in noises:
            progress(f"{dataset} / {noise}")
            labels = noisy_labels(dataset, noise, X, y, seed)
            members = {f: family_oof(dataset, noise, f, X, labels, seed) for f in FAMILIES}
            for s in SETS:
                P = np.mean([members[f][0] for f in s], axis=0)
                P /= P.sum(axis=1, keepdims=True)
                case = dq.Case(dataset, noise, "+".join(s), labels, y, P)
                ctx = {"dataset": dataset, "noise": noise, "models": "+".join(s),
                       "oof_s": sum(members[f][1] for f in s),
                       "oof_acc": float((P.argmax(1) == y).mean())}
                rows.append({**ctx, "name": "cleanpipe:combined",
                             **dq.evaluate_detector(case, detector["cleanpipe:combined"])})
                rows.extend({**ctx, **r} for r in dq.cleanlab_rows(case))
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per probability set: mean F1 / AUPRC of cleanpipe's default, cleanlab's best filter_by
    (best by mean F1 over the cases, per set) and self-confidence AUPRC, and total OOF time."""
    filters = [f"cleanlab:{m}" for m in dq.CLEANLAB_FILTERS]
    out = []
    for models, g in df.groupby("models", sort=False):
        cp = g[g["name"] == "cleanpipe:combined"]
        means = g[g["name"].isin(filters)].groupby("name")["f1"].mean()
        best = means.idxmax()
        sc = g[g["name"] == "cleanlab:rank:self_confidence"]
        out.append({"models": models, "cp_f1": cp["f1"].mean(), "cp_auprc": cp["auprc"].mean(),
                    "low_auprc": cp.loc[cp["noise"] == LOW_NOISE, "auprc"].mean(),
                    "cl_best_f1": means.max(), "cl_best": best.split(":", 1)[1],
                    "cl_default_f1": means.get(dq.CLEANLAB_DEFAULT, np.nan),
                    "cl_sc_auprc": sc["auprc"].mean(), "oof_acc": cp["oof_acc"].mean(),
                    "oof_s": cp["oof_s"].sum()})
    res = pd.DataFrame(out).set_index("models")
    res["oof_x_hgb"] = res["oof_s"] / res.loc["+".join(BASELINE), "oof_s"]
    return res


def per_case(df: pd.DataFrame, metric: str = "f1") -> pd.DataFrame:
    cp = df[df["name"] == "cleanpipe:combined"]
    return cp.pivot_table(index=["dataset", "noise"], columns="models", values=metric, sort=False)


def by_noise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean F1 and AUPRC of cleanpipe's default rule per noise setting (rows) and probability set."""
    cp = df[df["name"] == "cleanpipe:combined"]
    table = cp.pivot_table(index="noise", columns="models", values=["f1", "auprc"], sort=False)
    table.columns = [f"{metric}:{models}" for metric, models in table.columns]
    return table


def decide(res: pd.DataFrame) -> str:
    base = res.loc["+".join(BASELINE)]
    lines = []
    for models, r in res.drop(index="+".join(BASELINE)).iterrows():
        if "+" not in models:
            continue
        low = r["low_auprc"] - base["low_auprc"]
        ok = (r["cp_f1"] > base["cp_f1"] and r["cp_auprc"] > base["cp_auprc"]
              and r["oof_x_hgb"] <= 2.0 and not low < -0.01)
        lines.append(f"{models}: F1 {r['cp_f1'] - base['cp_f1']:+.4f}, AUPRC "
                     f"{r['cp_auprc'] - base['cp_auprc']:+.4f}, AUPRC at {LOW_NOISE} {low:+.4f}, "
                     f"time x{r['oof_x_hgb']:.2f} vs hgb -> {'meets' if ok else 'fails'} the rule")
    return "\n".join(lines)


def report(seed: int, role: str, df: pd.DataFrame) -> tuple[str, str]:
    """(terminal text, Markdown) of one seed's results."""
    res = summary(df)
    n_cases = df.groupby(["dataset", "noise"]).ngroups
    title = f"seed {seed} ({role}): means over {n_cases} cases"
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.float_format", "{:.3f}".format):
        text = "\n".join([f"== {title} ==", res.to_string(), "",
                          f"== seed {seed}: per-case F1 of cleanpipe's default rule ==",
                          per_case(df).to_string(), "",
                          f"== seed {seed}: cleanpipe's default rule by noise (mean over datasets) ==",
                          by_noise(df).to_string(), "", f"== seed {seed}: decision rule ==",
                          decide(res), ""])
    md = "\n".join([f"### {title[0].upper()}{title[1:]}", "", markdown_table(res.reset_index()), "",
                    "```", decide(res), "```", "",
                    "Mean F1 / AUPRC of cleanpipe's default rule per noise setting:", "",
                    markdown_table(by_noise(df).reset_index()), "",
                    "Per-case F1 of cleanpipe's default rule:", "",
                    markdown_table(per_case(df).reset_index()), ""])
    return text, md


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1",
                        help="comma list: the first is the tuning seed, the others are held out")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--write", action="store_true",
                        help="replace the 'Ensembles of model families' section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    seeds = [int(v) for v in args.seeds.split(",")]
    parts = []
    for i, seed in enumerate(seeds):
        df = run(seed, args.datasets.split(","), args.noises.split(","))
        text, md = report(seed, "tuning" if i == 0 else "held out", df)
        print(text, flush=True)
        parts.append(md)
    if args.write:
        legend = ("Columns: `cp_f1` / `cp_auprc` = cleanpipe's default rule (F1 of its flags, AUPRC of "
                  "1 - label_score), `low_auprc` = that AUPRC on the sym5 cases only; `cl_best_f1` = cleanlab's best `filter_by` by mean F1 on the same "
                  "probabilities (`cl_best` names it), `cl_default_f1` = cleanlab's default "
                  "(prune_by_noise_rate), `cl_sc_auprc` = cleanlab's self-confidence ranking; `oof_acc` = "
                  "accuracy of the arg-max against the true labels; `oof_s` = seconds computing the "
                  "out-of-fold probabilities over all cases (n_jobs=1, one thread per fit), `oof_x_hgb` "
                  "= that over hgb's. Datasets: " + ", ".join(args.datasets.split(",")) + "; noises: "
                  + ", ".join(args.noises.split(",")) + ".")
        replace_section("Ensembles of model families",
                        "\n".join([provenance_block("ensembles.py", cleanpipe_version()), __doc__.split(
                            "\n\n")[2].replace("\n", " "), "", legend, "", *parts]))
        progress("wrote the 'Ensembles of model families' section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
