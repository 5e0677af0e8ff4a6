"""Diagnostics of the combined rule's count (issue 15, sixth pass): is instance-dependent noise identifiable?

Not a benchmark of the detector (``detection_quality.py`` is); a measuring tool for the count of
``cleanpipe.detect.combine``'s default rule. For every case of ``detection_quality`` whose
out-of-fold probabilities are cached (``--cached-only``, the default, never fits a model; the
logistic regression is cheap and is fitted when ``--fit-logreg`` is given), it recomputes the
rule's internals once and reports:

``--variants``
    the F1 of the rule's flags under alternative counts (same ranking, same eligible rows), beside
    cleanlab's best ``filter_by`` (best by mean over the noisy cases), per noise family, the worst
    clean table's share flagged and the number of noisy cases flagged over 2x the wrong rows:

    - ``base``: the default rule, as shipped;
    - ``M1``: when the mixture passes its tests, its count read as an expected-F1 count over
      ``p_noisy`` (instead of ``#{p_noisy > 0.8}``);
    - ``R1``: the expected-F1 count's denominator at least the calibrated joint's off-diagonal
      mass (confident learning's estimate of the number of wrong rows) instead of ``sum q``;
    - ``V1``: the top-label calibration test, ``D > E0 + 2 sd`` (``D`` the rows whose arg-max is not
      the given label, ``E0 = sum (1 - max p~)`` what the temperature-calibrated model predicts,
      ``sd^2 = sum max p~ (1 - max p~)``): when it fires, cleanlab's per-cell count is let through
      uncapped;
    - ``L``: when it fires, the count at least the excess ``D - E0``;
    - ``alldis``: every disagreeing row (a reference: what the ``amb`` cases' best cut is close to).

``--bins``
    per case, rows binned by the calibrated top probability: disagreements observed against the
    calibrated model's expectation, and the wrong rows among them.

``--real``
    the calibration test's ``D``, ``E0``, ``z`` on the real-error sets (``real_errors.py``'s data).

Run from the repository root::

    python benchmarks/count_diagnostics.py --variants --seed 0 --models hgb+logreg
    python benchmarks/count_diagnostics.py --bins --seed 0 --models logreg --fit-logreg \
        --datasets digits,breast_cancer --noises clean,amb5,inst25,sym5
    python benchmarks/count_diagnostics.py --real
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

try:
    from . import detection_quality as dq
    from ._common import progress
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import detection_quality as dq
    from _common import progress

from cleanpipe.detect import combine as C
from cleanpipe.detect.confident import confident_learning, flags_by_cell_margin, posterior_noise_matrix
from cleanpipe.detect.exactsum import exact_sum
from cleanpipe.detect.temperature import count_error_prob, fit_temperature

DATASETS = ("digits", "wine", "breast_cancer", "iris", "synth6")
REAL_DIR = Path(__file__).resolve().parent / "data" / "real_errors"
BIN_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0 + 1e-9)


class _NotCached(Exception):
    pass


def _guard_fits(fit_logreg: bool) -> None:
    """Make ``detection_quality`` refuse to fit models other than (optionally) the logistic regression."""
    fit = dq.oof_probs

    def guarded(X, y, model, seed, folds, n_jobs):
        if fit_logreg and model == "logreg":
            return fit(X, y, model, seed, folds, n_jobs)
        raise _NotCached(model)

    dq.oof_probs = guarded


def internals(labels: np.ndarray, probs: np.ndarray) -> dict:
    """The default rule's intermediate estimates, as ``combine.detect`` computes them."""
    cl = confident_learning(labels, probs)
    t, _ = posterior_noise_matrix(cl.calibrated_joint, pattern_joint=cl.anchor_joint)
    score = C.posterior_scores(labels, probs, t, cl.p_given)
    loss = C.cross_entropy(cl.p_given)
    mix = C.fit_loss_mixture(loss, family=C.DEFAULT_MIXTURE)
    p_noisy = mix.p_noisy(loss)
    counts = C.noisy_component_present(mix) and C.mixture_exceeds_null(
        mix, probs, int(np.count_nonzero(p_noisy > C.NOISY_THRESHOLD)))
    temperature = fit_temperature(labels, probs, p_given=cl.p_given)
    return dict(cl=cl, t=t, score=score, p_noisy=p_noisy, pruned=flags_by_cell_margin(cl, labels),
                disagrees=cl.predicted != labels, counts=counts, temperature=temperature,
                q=count_error_prob(labels, probs, t, temperature))


def calibrated_top(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``max_j softmax(log p / temperature)_j`` per row."""
    z = np.log(np.maximum(probs.astype(np.float64), 1e-12)) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


def calibration_test(inner: dict, probs: np.ndarray) -> tuple[int, float, float]:
    """``(D, E0, z)`` of the top-label calibration test (see the module docstring)."""
    m = calibrated_top(probs, inner["temperature"])
    d = int(inner["disagrees"].sum())
    e0 = float((1.0 - m).sum())
    sd = float(np.sqrt(max((m * (1.0 - m)).sum(), 1.0)))
    return d, e0, (d - e0) / sd


def variant_counts(inner: dict, probs: np.ndarray) -> dict[str, int]:
    cl, d, q, pn = inner["cl"], inner["disagrees"], inner["q"], inner["p_noisy"]
    n_pruned = int(inner["pruned"].sum())
    mix_ok = inner["counts"]
    mixk = int(np.count_nonzero(pn > C.NOISY_THRESHOLD))

    def combined(kpost: int, kmix: int) -> int:
        return C.combined_count(max(kpost, kmix) if mix_ok else kpost, n_pruned)

    kpost = C.expected_f1_count(q, d, wrong_rows=exact_sum(q))
    off = float(cl.calibrated_joint.sum() - np.trace(cl.calibrated_joint))
    out = {"base": combined(kpost, mixk),
           "M1": combined(kpost, C.expected_f1_count(pn, d, wrong_rows=exact_sum(pn))),
           "R1": combined(C.expected_f1_count(q, d, wrong_rows=max(exact_sum(q), off)), mixk)}
    n_dis, e0, z = calibration_test(inner, probs)
    fire = z > 2.0
    out["V1"] = max(out["base"], n_pruned) if fire else out["base"]
    out["L"] = max(out["base"], int(round(n_dis - e0))) if fire else out["base"]
    out["alldis"] = n_dis
    return out


def _f1(err: np.ndarray, flags: np.ndarray) -> float:
    tp = int(np.count_nonzero(err & flags))
    denom = int(flags.sum()) + int(err.sum())
    return 2.0 * tp / denom if denom else 0.0


def cases(seed: int, model: str, datasets: Sequence[str], noises: Sequence[str]):
    for dataset in datasets:
        for noise in noises:
            try:
                yield dq.make_case(dataset, noise, model, seed=seed)
            except _NotCached:
                progress(f"    skipped {dataset}/{noise}/{model} (not cached)")


def run_variants(seed: int, model: str, datasets, noises) -> pd.DataFrame:
    rows = []
    for case in cases(seed, model, datasets, noises):
        inner = internals(case.labels, case.pred_probs)
        d, err = inner["disagrees"], case.is_error
        k, rank_by = C.combined_count_and_rank(
            inner["cl"], case.labels, inner["p_noisy"], inner["score"], d, C.NOISY_THRESHOLD,
            pruned=inner["pruned"], mixture_counts=inner["counts"], error_prob=inner["q"])
        counts = variant_counts(inner, case.pred_probs)
        if counts["base"] != k:
            raise AssertionError(f"{case.key}: base count {counts['base']} != the rule's {k}")
        row = {"dataset": case.dataset, "noise": case.noise, "n": len(err),
               "family": dq.FAMILY[dq.NOISES[case.noise][0]], "wrong": int(err.sum())}
        for name, kk in counts.items():
            flags = np.zeros(len(d), dtype=bool)
            if kk > 0:
                flags[C._lowest(rank_by, kk)] = True
            flags &= d
            row[name] = _f1(err, flags)
            row[f"n_{name}"] = int(flags.sum())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for r in dq.cleanlab_rows(case):
                if r["name"].startswith("cleanlab:") and "rank:" not in r["name"]:
                    row[r["name"]] = r["f1"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_variants(df: pd.DataFrame) -> str:
    names = [c[2:] for c in df.columns if c.startswith("n_")]
    noisy = df[df["noise"] != "clean"]
    clean = df[df["noise"] == "clean"]
    cl_cols = [c for c in df.columns if c.startswith("cleanlab:")]
    means = noisy[cl_cols].mean()
    best, best_name = means.max(), means.idxmax()
    lines = [f"{len(noisy)} noisy cases, {len(clean)} clean; cleanlab's best filter_by: {best_name} {best:.4f}",
             "variant  meanF1  lead     symmetric  pair    instance  clean-worst  over-2x"]
    for n in names:
        fam = [noisy[noisy["family"] == f][n].mean() for f in ("symmetric", "pair", "instance")]
        worst = float((clean[f"n_{n}"] / clean["n"]).max()) if len(clean) else float("nan")
        over = int((noisy[f"n_{n}"] > 2 * noisy["wrong"]).sum())
        lines.append(f"{n:8s} {noisy[n].mean():.4f}  {noisy[n].mean() - best:+.4f}  "
                     f"{fam[0]:.4f}     {fam[1]:.4f}  {fam[2]:.4f}    {100 * worst:5.2f}%       {over}")
    return "\n".join(lines)


def run_bins(seed: int, model: str, datasets, noises) -> None:
    for case in cases(seed, model, datasets, noises):
        inner = internals(case.labels, case.pred_probs)
        m = calibrated_top(case.pred_probs, inner["temperature"])
        d, err = inner["disagrees"], case.is_error
        n_dis, e0, z = calibration_test(inner, case.pred_probs)
        print(f"{case.dataset} {case.noise} {model}: temperature {inner['temperature']:.2f}, "
              f"D {n_dis}, E0 {e0:.1f}, z {z:+.1f}, wrong {int(err.sum())}, wrong & disagreeing {int((err & d).sum())}")
        for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
            s = (m >= lo) & (m < hi)
            if s.any():
                print(f"  top p~ [{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}: rows {int(s.sum()):5d}  "
                      f"disagree {int(d[s].sum()):4d}  expected {float((1 - m[s]).sum()):7.1f}  "
                      f"wrong {int(err[s].sum()):4d}  wrong & disagree {int((err & d)[s].sum()):4d}")


def run_real(data_dir: Path) -> None:
    for name in ("mnist", "cifar10", "20news", "imdb"):
        path = data_dir / f"{name}.npz"
        if not path.is_file():
            print(f"{name}: not found under {data_dir}")
            continue
        with np.load(path) as z:
            labels, probs = z["labels"], z["pred_probs"]
            reviewed, is_error = z["reviewed"], z["is_error"]
        inner = internals(labels, probs)
        n_dis, e0, zz = calibration_test(inner, probs)
        cj = inner["cl"].calibrated_joint
        print(f"{name}: temperature {inner['temperature']:.2f}, D {n_dis}, E0 {e0:.1f}, z {zz:+.1f}, "
              f"per-cell count {int(inner['pruned'].sum())}, calibrated joint off-diagonal "
              f"{float(cj.sum() - np.trace(cj)):.0f}, sum q {float(inner['q'].sum()):.1f}, "
              f"confirmed {int(is_error.sum())}")
        d = inner["disagrees"]
        _, rank_by = C.combined_count_and_rank(
            inner["cl"], labels, inner["p_noisy"], inner["score"], d, C.NOISY_THRESHOLD,
            pruned=inner["pruned"], mixture_counts=inner["counts"], error_prob=inner["q"])
        for vname, kk in variant_counts(inner, probs).items():
            flags = np.zeros(len(d), dtype=bool)
            if kk > 0:
                flags[C._lowest(rank_by, kk)] = True
            flags &= d
            in_rev = flags & reviewed
            tp = int((flags & is_error).sum())
            print(f"  {vname:6s} flags {int(flags.sum()):5d}  precision in reviewed "
                  f"{tp / max(int(in_rev.sum()), 1):.3f}  recall {tp / max(int(is_error.sum()), 1):.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--bins", action="store_true")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="hgb+logreg")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--noises", default=",".join(dq.NOISES))
    ap.add_argument("--fit-logreg", action="store_true",
                    help="fit the logistic regression's out-of-fold probabilities when not cached")
    ap.add_argument("--csv", help="write the per-case variant table here")
    args = ap.parse_args(argv)
    _guard_fits(args.fit_logreg)
    datasets, noises = args.datasets.split(","), args.noises.split(",")
    for model in args.models.split(","):
        if args.variants:
            df = run_variants(args.seed, model, datasets, noises)
            if args.csv:
                df.to_csv(args.csv, index=False)
            print(f"== {model}, seed {args.seed}")
            print(summarize_variants(df))
        if args.bins:
            run_bins(args.seed, model, datasets, noises)
    if args.real:
        run_real(REAL_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
