"""Variants of the out-of-fold stage, family by family: CPU seconds and detection quality.

For a ``benchmarks/whole_job.py`` table (same cases, same seeds, same cache), each variant's
out-of-fold probabilities are computed in this process with ``cleanpipe.oof.cross_val_probs``
(5 folds, fold seed 0, one thread: set ``OMP_NUM_THREADS=1`` before running) and cached under
``benchmarks/.cache/oof_variants``; a *combination* (``lgb+logreg``) averages its members'
probabilities, renormalised, as ``cross_val_probs`` does for an ensemble, and is scored with
cleanpipe's default rule: F1 of the flags and AUPRC of ``label_score`` against the flipped rows,
and the members' CPU seconds summed. Families are timed one at a time so that each one's share of
the job shows.

Variants (issue 20, third session):

* ``lgb``: cleanpipe's LightGBM fold model (100 rounds at rate 0.1, bins built once).
* ``lgb_es``: early stopping on an inner stratified 10% of each fold's training rows (patience 10
  rounds, tolerance 1e-7: scikit-learn's HistGradientBoosting defaults), at most 1000 rounds;
  ``lgb_es_lr2``: the same at learning rate 0.2. The model keeps the best round.
* ``lgb_q``: LightGBM's quantised gradients (``use_quantized_grad``).
* ``logreg``: the plain scikit-learn pipeline refitted per fold (cleanpipe before this session,
  and the cleanlab path of ``whole_job.py``); ``lrprod``: cleanpipe's ``logreg`` now
  (:class:`cleanpipe.linear.LogisticFolds`, one float32 design per cross-validation).

``--curve`` prints instead the table's own learning curve: on fold 0's training rows, an inner
stratified 10% held out, LightGBM fitted on 1/8, 1/4, 1/2 and all of the rest, with the inner
log-loss and CPU seconds of each fit: what a per-table row cap would have to be chosen from.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/oof_variants.py --case 1e5:numeric:2:0.1 --seeds 0,1 \\
        --variants lgb,logreg,lrprod,lgb_es,lgb_es_lr2 --combos 'lgb+logreg;lgb_es+logreg;lgb'
    OMP_NUM_THREADS=1 python benchmarks/oof_variants.py --curve --case 1e6:numeric:2:0.1 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

try:
    from . import whole_job as wj
    from ._common import CACHE_DIR, markdown_table, progress
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import whole_job as wj
    from _common import CACHE_DIR, markdown_table, progress

CACHE = CACHE_DIR / "oof_variants"
#: Early stopping as scikit-learn's HistGradientBoosting does it above 10,000 rows.
VALIDATION, PATIENCE, TOL = 0.1, 10, 1e-7
LGB = {"lgb": {}, "lgb_es": {"es": True, "rounds": 1000},
       "lgb_es_lr2": {"es": True, "rounds": 1000, "lr": 0.2},
       "lgb_q": {"extra": {"use_quantized_grad": True}}}
VARIANTS = (*LGB, "logreg", "lrprod")


def _lgb_variant(categorical, es=False, rounds=100, lr=0.1, extra=None):
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    from cleanpipe import boosters

    class Variant(boosters.LightGBMFolds):
        def fit_rows(self, X, y, rows):
            k = max(2, int(np.max(y)) + 1)
            params = {**self._params(k), "learning_rate": lr, **(extra or {})}
            ds, rows = self._binned(X, y), np.asarray(rows)
            if es:
                fit, val = (np.sort(r) for r in train_test_split(
                    rows, test_size=VALIDATION, stratify=y[rows], random_state=self.random_state))
                params["metric"] = "multi_logloss" if k > 2 else "binary_logloss"
                self.booster_ = lgb.train(
                    params, ds.subset(fit.astype(np.int32)), num_boost_round=rounds,
                    valid_sets=[ds.subset(val.astype(np.int32))],
                    callbacks=[lgb.early_stopping(PATIENCE, min_delta=TOL, verbose=False)])
            else:
                self.booster_ = lgb.train(params, ds.subset(rows.astype(np.int32)), num_boost_round=rounds)
            self.rounds_ = self.booster_.best_iteration or self.booster_.current_iteration()
            self.classes_ = np.arange(k)
            return self

    return Variant(categorical=categorical, bins_key=boosters.new_bins_key())


def load(case, seed):
    import pyarrow.parquet as pq

    from cleanpipe.features import table_to_features

    data, truth = wj.table_path(*case, seed)
    table = pq.read_table(data)
    feats = table_to_features(table, [c for c in table.column_names if c != "label"])
    return feats.X, feats.categorical, table["label"].to_numpy(), np.load(truth)


def variant_probs(variant, X, cats, y):
    """(out-of-fold probabilities, CPU seconds) of one variant."""
    from cleanpipe.linear import logistic_pipeline
    from cleanpipe.oof import cross_val_probs

    model = (_lgb_variant(cats if cats.any() else None, **LGB[variant]) if variant in LGB
             else logistic_pipeline(cats if cats.any() else None) if variant == "logreg"
             else "logreg")
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = cross_val_probs(X, y, model=model, categorical=cats, seed=wj.FOLD_SEED).pred_probs
    return P, time.process_time() - start


def cache_file(case_text, seed, variant):
    return CACHE / f"{case_text.replace(':', '-')}_{seed}_{variant}.npz"


def cached(case_text, case, seed, variant, data=None):
    f = cache_file(case_text, seed, variant)
    if not f.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        X, cats, y, _ = data or load(case, seed)
        P, cpu = variant_probs(variant, X, cats, y)
        np.savez(f, P=P, cpu=cpu)
        progress(json.dumps({"case": case_text, "seed": seed, "variant": variant, "cpu": round(cpu, 2)}))
    with np.load(f) as z:
        return z["P"], float(z["cpu"])


def score_combo(case_text, case, seed, combo, data):
    import cleanpipe

    parts = [cached(case_text, case, seed, v, data) for v in combo.split("+")]
    P = np.mean([p for p, _ in parts], axis=0).astype(np.float32)
    P /= P.sum(axis=1, keepdims=True)
    _, _, y, truth = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = cleanpipe.find_label_issues(y, P)
    f1, auprc = wj.score(det["is_label_issue"].to_numpy(), det["label_score"].to_numpy(), truth)
    return {"case": case_text, "seed": seed, "combo": combo, "f1": round(f1, 3), "auprc": round(auprc, 3),
            "cpu_s": round(sum(c for _, c in parts), 1), "cpu_parts": "+".join(f"{c:.1f}" for _, c in parts)}


def curve(case_text, case, seed):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from cleanpipe.oof import train_sample

    X, cats, y, _ = load(case, seed)
    train, _ = next(iter(StratifiedKFold(5, shuffle=True, random_state=wj.FOLD_SEED).split(X, y)))
    fit, val = (np.sort(r) for r in train_test_split(train, test_size=VALIDATION, stratify=y[train],
                                                      random_state=0))
    est = _lgb_variant(cats if cats.any() else None)
    out = []
    for frac in (0.125, 0.25, 0.5, 1.0):
        rows = train_sample(fit, y, int(len(fit) * frac), 0)
        start = time.process_time()
        est.fit_rows(X, y, rows)
        cpu = time.process_time() - start
        P = est.predict_proba(X[val])
        loss = float(-np.mean(np.log(np.clip(P[np.arange(len(val)), y[val]], 1e-15, 1))))
        out.append({"case": case_text, "seed": seed, "train_rows": len(rows),
                    "inner_logloss": round(loss, 4), "cpu_s": round(cpu, 2)})
        progress(json.dumps(out[-1]))
    return out


def main(argv=None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", action="append", required=True, help="ROWS:KIND:CLASSES:NOISE, repeatable")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--variants", default="lgb,logreg,lrprod", help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--combos", default="lgb+logreg;lgb+lrprod",
                   help="';'-separated combinations of variants to score ('+' averages)")
    p.add_argument("--curve", action="store_true", help="the table's own learning curve instead")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for RESULTS.md)")
    p.add_argument("--cached-only", action="store_true",
                   help="score only the combinations whose variants are all cached; compute nothing")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for text in args.case:
        case = wj.parse_case(text)
        for seed in seeds:
            if args.curve:
                rows += curve(text, case, seed)
                continue
            data = load(case, seed)
            if not args.cached_only:
                for v in args.variants.split(","):
                    cached(text, case, seed, v, data)
            rows += [score_combo(text, case, seed, c, data) for c in args.combos.split(";")
                     if not args.cached_only
                     or all(cache_file(text, seed, v).exists() for v in c.split("+"))]
    table = pd.DataFrame(rows)
    print(markdown_table(table) if args.markdown else table.to_string(index=False))


if __name__ == "__main__":
    main()
