"""Do the labels of a row's duplicates help the label detector? (issue 17: duplicates whose labels
disagree feed the detector as evidence.)

Each bundled table gets 5% symmetric label noise, then 3% of its rows copied with a small jitter
(near duplicates) and their label moved to another class (wrong), and 3% copied with their label
kept. Out-of-fold probabilities: logistic regression, 5 stratified folds. The detector
(``cleanpipe.find_label_issues``, default rule) runs on those probabilities alone and on them
updated by the other labels of each row's duplicate set
(:func:`cleanpipe.detect.evidence.with_duplicate_labels`, sets from ``run_checks``), for several
assumed noise rates. F1 over every wrong label; seed 0 tunes, seed 1 is held out.

    python benchmarks/duplicate_evidence.py --seeds 0,1
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cleanpipe import find_label_issues, run_checks  # noqa: E402
from cleanpipe.detect.evidence import with_duplicate_labels  # noqa: E402

TABLES = ("digits", "wine", "breast_cancer", "iris")
NOISES = (0.05, 0.1, 0.2, 0.3, 0.4)
NEAR = 0.02


def planted(name: str, seed: int):
    from sklearn import datasets
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X = ((X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)).astype(np.float64)
    n, d = X.shape
    k = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    true = np.asarray(y, np.int64)
    given = true.copy()
    flip = rng.random(n) < 0.05
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    m = max(3, int(0.03 * n))
    src = rng.permutation(n)[:2 * m]
    # jitter only columns that vary: a constant column (digits' border pixels) stays constant
    Xc = X[src] + rng.normal(0, NEAR, (2 * m, d)) * (X.std(0) > 0)
    yt = true[src]
    yc = given[src].copy()
    yc[:m] = (yc[:m] + rng.integers(1, k, m)) % k  # moved labels: wrong unless moved back to true
    return np.vstack([X, Xc]), np.r_[given, yc], np.r_[true, yt]


def oof(X, y, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cross_val_predict(LogisticRegression(max_iter=2000), X, y, method="predict_proba",
                                 cv=StratifiedKFold(5, shuffle=True, random_state=seed))


def f1(flags, wrong):
    tp = np.count_nonzero(flags & wrong)
    return 0.0 if tp == 0 else 2 * tp / (flags.sum() + wrong.sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args(argv)
    print("| seed | table | wrong rows | alone F1 (flags) | " + " | ".join(f"noise {e} F1 (flags)" for e in NOISES) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(NOISES))
    for seed in map(int, args.seeds.split(",")):
        means = np.zeros(1 + len(NOISES))
        for name in TABLES:
            X, y, true = planted(name, seed)
            wrong = y != true
            p = oof(X, y, seed)
            sets = run_checks(X, y).columns["duplicate_set"]
            cells = []
            for i, e in enumerate((0.0, *NOISES)):
                q = with_duplicate_labels(p, y, sets, noise=e) if e else p
                flags = find_label_issues(y, q)["is_label_issue"].to_numpy()
                s = f1(flags, wrong)
                means[i] += s / len(TABLES)
                cells.append(f"{s:.3f} ({flags.sum()})")
            print(f"| {seed} | {name} | {wrong.sum()} | " + " | ".join(cells) + " |")
        print(f"| {seed} | **mean** | | " + " | ".join(f"**{v:.3f}**" for v in means) + " |")


if __name__ == "__main__":
    main()
