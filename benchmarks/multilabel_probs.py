"""Multi-label out-of-fold probability models side by side: ceiling, F1 and count, beside cleanlab.

The data sets, noise and folds of ``benchmarks/multilabel.py`` (issue6, digits6, dense12 for
development; heldout10, noise and folds from seed + 1, held out). For each probability model
(cleanpipe's ``--model`` with ``--multi-label``: every family conditioned on the row's other given
tags; ``mlp`` is one network for every tag, :mod:`cleanpipe.multilabel_mlp`) and case it prints
cleanpipe's F1 (default ``posterior`` rule) and flags / wrong rows, cleanlab's best ``filter_by``
(chosen with the truth) on the same probabilities and on one-vs-rest logistic probabilities (its
tutorial's), the lead, the ceiling (best F1 over every cut of the best of three rankings, as in
``multilabel.py``), ``room`` = ceiling - cleanlab's best (the lead no count can pass), the AUPRC of
cleanpipe's ``p_error`` and the out-of-fold seconds.

Probabilities are cached per family set under ``benchmarks/.cache/`` (the ``multilabel.py`` cache
format). An ensemble written ``a+b`` is the family-weighted mean of its cached parts, which is
what ``--model`` with all their families computes (each family is fitted alone on the same folds
with the same seeds; equal up to float32 rounding); its seconds are the parts' sum.

Run from the repository root::

    python benchmarks/multilabel_probs.py --models "logreg;mlp;gbm,logreg;gbm,logreg+mlp" --part dev
    python benchmarks/multilabel_probs.py --models "logreg;mlp;gbm,logreg;gbm,logreg+mlp" --part held-out
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
import zlib

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import markdown_table, progress  # noqa: E402
from multilabel import (CASES, FILTER_BY, _f1, best_cut_f1, cached_probs, inject,  # noqa: E402
                        load_datasets)


def ensemble(name, X, noisy, spec, seed):
    """Probabilities and seconds of ``spec`` (``a+b``: family-weighted mean of cached parts)."""
    from cleanpipe.oof import model_list

    parts = spec.split("+")
    probs, secs, weights = [], 0.0, []
    for part in parts:
        p, s = cached_probs(name, X, noisy, model=part, cond=True, seed=seed, n_jobs=1)
        probs.append(p)
        secs += s
        weights.append(len(model_list(part)))
    w = np.asarray(weights, float) / sum(weights)
    return sum(wi * p for wi, p in zip(w, probs)), secs


def evaluate(noisy, truth, p):
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find
    from cleanlab.multilabel_classification.rank import get_label_quality_scores as cl_scores
    from sklearn.metrics import average_precision_score

    from cleanpipe import find_multilabel_issues

    lists = [np.flatnonzero(r).tolist() for r in noisy]
    ours = find_multilabel_issues(noisy, p)
    flags = ours["is_label_issue"].to_numpy()
    p_error = 1 - ours["label_score"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl = max(_f1(truth, np.asarray(cl_find(labels=lists, pred_probs=p, filter_by=fb), bool))
                 for fb in FILTER_BY)
        cl_rank = 1 - cl_scores(lists, p)
    q = np.where(noisy == 1, p, 1 - p).min(axis=1)
    ceiling = max(best_cut_f1(truth, s) for s in (p_error, cl_rank, -q))
    return dict(cp_f1=_f1(truth, flags), ratio=flags.sum() / truth.sum(), cl_f1=cl,
                ceiling=ceiling, auprc=average_precision_score(truth, p_error))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="logreg;mlp", help="';'-separated models, 'a+b' averaged")
    ap.add_argument("--part", default="dev", choices=("dev", "held-out"))
    ap.add_argument("--seed", type=int, default=0, help="development seed (held-out: seed + 1)")
    ap.add_argument("--datasets", default="", help="comma-separated subset of the data sets")
    args = ap.parse_args(argv)
    models = args.models.split(";")
    rows = []
    t0 = time.perf_counter()
    for name, part, X, Y in load_datasets():
        if part != args.part or (args.datasets and name not in args.datasets.split(",")):
            continue
        seed = args.seed + (part == "held-out")
        for kind, rate in CASES:
            noisy = inject(Y, kind, rate, seed=zlib.crc32(f"{name}/{kind}/{rate}/{seed}".encode()))
            truth = (noisy != Y).any(axis=1)
            ovr, _ = cached_probs(name, X, noisy, model="logreg", cond=False, seed=seed, n_jobs=1)
            cl_ovr = evaluate(noisy, truth, ovr)["cl_f1"]
            for spec in models:
                progress(f"{name} {kind} {rate} {spec}")
                p, secs = ensemble(name, X, noisy, spec, seed)
                r = evaluate(noisy, truth, p)
                rows.append({"dataset": name, "noise": f"{kind} {rate:g}", "model": spec,
                             "wrong": int(truth.sum()), "cp F1": r["cp_f1"],
                             "flags/wrong": r["ratio"], "cl best F1": r["cl_f1"],
                             "lead": r["cp_f1"] - r["cl_f1"], "ceiling": r["ceiling"],
                             "room": r["ceiling"] - r["cl_f1"], "cl best F1 ovr": cl_ovr,
                             "lead ovr": r["cp_f1"] - cl_ovr, "AUPRC cp": r["auprc"],
                             "oof s": secs})
    df = pd.DataFrame(rows)
    g = df.groupby("model", sort=False)
    summary = pd.DataFrame({
        "mean cp F1": g["cp F1"].mean(), "mean cl best F1": g["cl best F1"].mean(),
        "worst lead": g["lead"].min(), "mean lead": g["lead"].mean(),
        "worst lead ovr": g["lead ovr"].min(), "mean ceiling": g["ceiling"].mean(),
        "cases room >= 0.05": g["room"].apply(lambda s: int((s >= 0.05).sum())),
        "flags/wrong min": g["flags/wrong"].min(), "flags/wrong max": g["flags/wrong"].max(),
        "mean AUPRC": g["AUPRC cp"].mean(), "mean oof s": g["oof s"].mean()}).reset_index()
    print(markdown_table(df))
    print()
    print(markdown_table(summary))
    print(f"\nWhole run: {(time.perf_counter() - t0) / 60:.1f} min wall ({args.part}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
