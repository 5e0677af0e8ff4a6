"""Does the model-free kNN label signal help the label detector? Measured on the suite of
``benchmarks/detection_quality.py`` (same cases, same out-of-fold probabilities, same scoring).

The signal: for every row, the class shares among its ``k`` nearest rows' (noisy) labels
(:func:`cleanpipe.checks.knn_labels.knn_label_probs`; features standardised and clipped as
``run_checks`` does them, exact neighbours).
Combined with the detector by mixing it into the probabilities the detector reads,
``(1 - w) * pred_probs + w * knn_probs`` (SimiFeat-style), and run through cleanpipe's default
rule; ``w = 1`` is the signal alone. Chosen on ``--seed 0``; ``--seed 1`` is held out.

Usage::

    nice -n 10 python benchmarks/knn_label_signal.py --datasets digits,wine,breast_cancer,iris --models logreg --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from detection_quality import DATASETS, NOISES, load_dataset, run_suite  # noqa: E402

WEIGHTS = (0.1, 0.2, 0.3, 0.5, 1.0)


def neighbour_lookup(datasets, k: int):
    """``{n_rows: neighbour indices}`` per dataset (the detectors only see labels and pred_probs;
    the tables of the suite have distinct row counts, which name them)."""
    from cleanpipe.checks.encode import Scaler
    from cleanpipe.neighbors import NeighborIndex
    from cleanpipe.settings import CLIP_Z

    out = {}
    for name in datasets:
        X, _ = load_dataset(name)
        X = X.astype(np.float32)
        if len(X) in out:
            raise SystemExit(f"two datasets with {len(X)} rows; cannot tell them apart")
        out[len(X)] = NeighborIndex.build(Scaler.fit(X).transform(X, clip=CLIP_Z), method="exact").kneighbors(k)[1]
    return out


def detectors(lookup, weights):
    from cleanpipe import find_label_issues
    from cleanpipe.checks.knn_labels import knn_label_probs

    def bind(w):
        def detect(labels, pred_probs):
            knn = knn_label_probs(lookup[len(labels)], labels, pred_probs.shape[1])
            mixed = (1 - w) * pred_probs + w * knn
            return find_label_issues(labels, mixed / mixed.sum(axis=1, keepdims=True))
        return detect

    return {f"knn:w={w}": bind(w) for w in weights}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="digits,wine,breast_cancer,iris")
    p.add_argument("--noises", default=",".join(NOISES))
    p.add_argument("--models", default="logreg")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args(argv)
    datasets = a.datasets.split(",")
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}")
    lookup = neighbour_lookup(datasets, a.k)
    df = run_suite(datasets, a.noises.split(","), a.models.split(","), seed=a.seed,
                   methods=["combined"], detectors=detectors(lookup, WEIGHTS),
                   include_cleanlab=False, verbose=False)
    print(f"# {' '.join(sys.argv)} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | "
          f"load {os.getloadavg()[0]:.1f}")
    mean = df.groupby("name")[["f1", "precision", "recall", "auprc"]].mean()
    base = df[df.name == "cleanpipe:combined"].set_index(["dataset", "noise"])["f1"]
    wins = {}
    for name, g in df.groupby("name"):
        f1 = g.set_index(["dataset", "noise"])["f1"]
        wins[name] = f"{int((f1 > base + 1e-9).sum())}/{int((f1 < base - 1e-9).sum())}"
    print(f"\nseed {a.seed}: means over {df.groupby(['dataset', 'noise']).ngroups} cases "
          "(wins/losses in F1 against cleanpipe:combined)\n")
    print("| detector | F1 | precision | recall | AUPRC | wins/losses |\n|---|---:|---:|---:|---:|---:|")
    for name, r in mean.sort_values("f1", ascending=False).iterrows():
        print(f"| {name} | {r.f1:.3f} | {r.precision:.3f} | {r.recall:.3f} | {r.auprc:.3f} | "
              f"{wins[name]} |")


if __name__ == "__main__":
    main()
