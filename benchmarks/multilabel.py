"""Multi-label detection quality and speed: cleanpipe vs cleanlab 2.9 on injected tag noise.

Datasets
    ``synth10``: ``make_multilabel_classification(n_samples=5000, n_features=20, n_classes=10,
    n_labels=2, random_state=0)``; ``synth20``: the same with ``n_classes=20, n_labels=3,
    random_state=1``; ``digits6``: scikit-learn's bundled digits (1797 images, 64 pixel features)
    with six tags derived from the digit (even, prime, >= 5, has a closed loop {0, 6, 8, 9}, perfect
    square {0, 1, 4, 9}, Fibonacci {0, 1, 2, 3, 5, 8}). No multi-label data set ships with an
    installed package (scikit-learn bundles only single-label sets and the multi-output *regression*
    set linnerud; yeast, scene, emotions need a download), so digits6 stands in for real features.

Noise (on the clean 0/1 tag matrix Y with mean density d = mean(Y))
    ``missing p``: each present tag is dropped independently with probability p.
    ``spurious p``: each absent tag is added independently with probability p * d / (1 - d), so the
    expected number of added tags is p times the number of present tags.
    ``mixed p``: both, each at p / 2.
    p in {0.1, 0.3}. A row is an *error* when any of its tags changed.

Probabilities
    One-vs-rest logistic regression (cleanpipe's ``logreg``: median imputation, scaling), 5 folds
    shuffled with the seed and stratified on each row's number of tags
    (:func:`cleanpipe.oof.cross_val_probs_multilabel`); the same matrix goes to both tools.

Compared
    ``cleanpipe.find_multilabel_issues(Y, pred_probs)`` (0/1 matrix in) and
    ``cleanlab.multilabel_classification.filter.find_label_issues(labels=list of lists,
    pred_probs=...)`` (default ``filter_by="prune_by_noise_rate"``). Precision/recall/F1 of the row
    flags against the error rows; AUPRC of cleanpipe's ``label_score`` and of cleanlab's
    ``multilabel_classification.rank.get_label_quality_scores`` (positive class = error row);
    wall time of each call (best of ``--repeats``, the input conversion to lists not timed).

Run from the repository root::

    python benchmarks/multilabel.py            # 3 data sets x 6 noise settings
    python benchmarks/multilabel.py --write    # also update the "Multi-label" section of RESULTS.md
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

try:
    from ._common import markdown_table, progress, provenance_block, replace_section
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import markdown_table, progress, provenance_block, replace_section

SCRIPT = "multilabel.py"
NOISE_KINDS = ("missing", "spurious", "mixed")
RATES = (0.1, 0.3)
_DIGIT_TAGS = {"even": [0, 2, 4, 6, 8], "prime": [2, 3, 5, 7], "ge5": [5, 6, 7, 8, 9],
               "loop": [0, 6, 8, 9], "square": [0, 1, 4, 9], "fibonacci": [0, 1, 2, 3, 5, 8]}


def load_datasets(quick: bool = False):
    """Yield ``(name, X, Y)`` with ``Y`` the clean 0/1 tag matrix."""
    from sklearn.datasets import load_digits, make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=5000, n_features=20, n_classes=10, n_labels=2,
                                          random_state=0)
    yield "synth10", X, Y
    if not quick:
        X, Y = make_multilabel_classification(n_samples=5000, n_features=20, n_classes=20,
                                              n_labels=3, random_state=1)
        yield "synth20", X, Y
    X, digit = load_digits(return_X_y=True)
    Y = np.stack([np.isin(digit, v) for v in _DIGIT_TAGS.values()], axis=1).astype(np.int64)
    yield "digits6", X, Y


def inject(Y: np.ndarray, kind: str, rate: float, seed: int) -> np.ndarray:
    """Noisy copy of ``Y`` (see the module docstring for the exact noise model)."""
    rng = np.random.default_rng(seed)
    d = Y.mean()
    p_missing = {"missing": rate, "spurious": 0.0, "mixed": rate / 2}[kind]
    p_spurious = {"missing": 0.0, "spurious": rate, "mixed": rate / 2}[kind] * d / (1 - d)
    u = rng.random(Y.shape)
    return np.where(Y == 1, u >= p_missing, u < p_spurious).astype(np.int64)


def _best_time(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run_case(name, X, Y, kind, rate, *, seed, repeats, n_jobs):
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find
    from cleanlab.multilabel_classification.rank import get_label_quality_scores as cl_scores
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    from cleanpipe import find_multilabel_issues
    from cleanpipe.oof import cross_val_probs_multilabel

    noisy = inject(Y, kind, rate, seed=zlib.crc32(f"{name}/{kind}/{rate}/{seed}".encode()))
    truth = (noisy != Y).any(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_probs_multilabel(X.astype(np.float32), noisy, model="logreg", folds=5,
                                           seed=seed, n_jobs=n_jobs).pred_probs.astype(np.float64)
    lists = [np.flatnonzero(r).tolist() for r in noisy]
    ours, t_ours = _best_time(lambda: find_multilabel_issues(noisy, probs), repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, t_theirs = _best_time(lambda: cl_find(labels=lists, pred_probs=probs), repeats)
        their_scores = cl_scores(lists, probs)
    row = {"dataset": name, "noise": f"{kind} {rate:g}", "n": len(Y), "k": Y.shape[1],
           "err_rows": truth.mean(),
           "same_flags": bool((ours["is_label_issue"].to_numpy() == np.asarray(theirs, bool)).all())}
    for tool, flags, score, secs in (("cleanpipe", ours["is_label_issue"].to_numpy(),
                                      ours["label_score"].to_numpy(), t_ours),
                                     ("cleanlab", np.asarray(theirs, bool), their_scores, t_theirs)):
        p, r, f, _ = precision_recall_fscore_support(truth, flags, average="binary", zero_division=0)
        row.update({f"{tool}_precision": p, f"{tool}_recall": r, f"{tool}_f1": f,
                    f"{tool}_auprc": average_precision_score(truth, -score), f"{tool}_s": secs})
    return row


def render(df: pd.DataFrame) -> str:
    f1_margin = df["cleanpipe_f1"] - df["cleanlab_f1"]
    speedup = df["cleanlab_s"] / df["cleanpipe_s"]
    ok_f1 = bool((f1_margin >= -1e-12).all())
    ok_speed = bool((speedup > 1).all())
    lines = [
        ("Datasets: synth10 / synth20 (`make_multilabel_classification`, n=5000, K=10 / 20, 20 "
         "features), digits6 (bundled digits, 6 derived tags; no multi-label set ships with an "
         "installed package). Noise: each present tag dropped with prob. p (missing), each absent "
         "tag added with prob. p*d/(1-d), d = tag density (spurious), or both at p/2 (mixed). "
         "Probabilities: one-vs-rest logistic regression, 5 folds, the same for both tools. F1 is "
         "of the row flags against rows with any changed tag; AUPRC ranks rows by label score."),
        "",
        "### Targets",
        "",
        (f"- [{'PASS' if ok_f1 else 'FAIL'}] F1 of cleanpipe >= F1 of cleanlab on every case: "
         f"worst margin {f1_margin.min():+.4f}, mean margin {f1_margin.mean():+.4f}"),
        (f"- [{'PASS' if ok_speed else 'FAIL'}] cleanpipe faster on every case: speed-up "
         f"{speedup.min():.0f}x to {speedup.max():.0f}x (median {speedup.median():.0f}x)"),
        "",
        (f"The default rule (`noise_rate`: per-class confident learning, prune by noise rate, a row "
         f"flagged when any of its cells is) flags the same rows as cleanlab's default on "
         f"{int(df['same_flags'].sum())} of {len(df)} cases: the F1 target is met by a tie, not a win. "
         "Alternatives tried on these cases (re-ranking rows by a row score or a noise-model "
         "posterior within cleanlab's count, scaling the per-class counts, the loss-mixture rules "
         "`mixture` / `both`) gained on some cases and lost 0.03 to 0.43 F1 on others; even at "
         "its best cut (chosen with the truth) the best row ranking tried was only ~0.03 F1 above "
         "this rule on average. cleanpipe's `label_score` ranks better (AUPRC). Most of cleanpipe's "
         "time is the loss-mixture EM behind `p_noisy` (a fixed ~100 ms on a 2048-bin histogram)."),
        "",
        "### Aggregate (mean over cases)",
        "",
    ]
    agg = pd.DataFrame([{"tool": t, "cases": len(df), "f1": df[f"{t}_f1"].mean(),
                         "precision": df[f"{t}_precision"].mean(), "recall": df[f"{t}_recall"].mean(),
                         "auprc": df[f"{t}_auprc"].mean(), "seconds": df[f"{t}_s"].mean()}
                        for t in ("cleanpipe", "cleanlab")])
    lines += [markdown_table(agg), "", "### Per case", ""]
    table = pd.DataFrame({
        "dataset": df["dataset"], "noise": df["noise"], "n": df["n"], "k": df["k"],
        "err rows": df["err_rows"],
        "cp P": df["cleanpipe_precision"], "cp R": df["cleanpipe_recall"], "cp F1": df["cleanpipe_f1"],
        "cl P": df["cleanlab_precision"], "cl R": df["cleanlab_recall"], "cl F1": df["cleanlab_f1"],
        "cp AUPRC": df["cleanpipe_auprc"], "cl AUPRC": df["cleanlab_auprc"],
        "cp ms": (df["cleanpipe_s"] * 1e3).round().astype(int),
        "cl ms": (df["cleanlab_s"] * 1e3).round().astype(int),
    })
    lines.append(markdown_table(table))
    return "\n".join(lines)


def _kept_subsection(title: str) -> str:
    """The ``### title`` block of the Multi-label section of RESULTS.md ("" if absent)."""
    try:
        from ._common import RESULTS_MD
    except ImportError:
        from _common import RESULTS_MD
    if not RESULTS_MD.exists():
        return ""
    lines = RESULTS_MD.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"### {title}"), None)
    if start is None:
        return ""
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith(("## ", "### "))), len(lines))
    return "\n\n" + "\n".join(lines[start:end]).rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="synth10 and digits6 only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="time each call this many times, keep the best")
    ap.add_argument("--n-jobs", type=int, default=1, help="joblib workers for the out-of-fold fits")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import cleanpipe

    rows = []
    for name, X, Y in load_datasets(args.quick):
        for kind in NOISE_KINDS:
            for rate in RATES:
                progress(f"{name} {kind} {rate}")
                rows.append(run_case(name, X, Y, kind, rate, seed=args.seed, repeats=args.repeats,
                                     n_jobs=args.n_jobs))
    df = pd.DataFrame(rows)
    body = provenance_block(SCRIPT, cleanpipe.__version__) + "\n" + render(df)
    print(body)
    if args.write:
        # keep the subsection benchmarks/multilabel_retrain.py writes into this section
        replace_section("Multi-label", body + _kept_subsection("Multi-label clean and retrain"))
        progress("wrote the Multi-label section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
