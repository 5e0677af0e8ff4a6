"""Multi-label detection quality: cleanpipe vs cleanlab 2.9 on planted tag noise, with a held-out part.

Datasets
    ``issue6`` (development): ``make_multilabel_classification(n_samples=4000, n_features=20,
    n_classes=6, n_labels=2, random_state=0)``, the table of issue 15; ``digits6`` (development):
    scikit-learn's bundled digits (1797 images, 64 pixel features) with six tags derived from the
    digit (even, prime, >= 5, has a closed loop {0, 6, 8, 9}, perfect square {0, 1, 4, 9},
    Fibonacci {0, 1, 2, 3, 5, 8}); ``heldout10`` (held out: never looked at while choosing):
    ``make_multilabel_classification(n_samples=4000, n_features=20, n_classes=10, n_labels=3,
    random_state=1)``, its noise and folds drawn with ``--seed + 1``.

Noise (on the clean 0/1 tag matrix Y with mean density d = mean(Y))
    ``flip 0.2``: one tag (uniform over the classes) flipped in 20% of the rows.
    ``missing p``: each present tag dropped independently with probability p.
    ``spurious p``: each absent tag added with probability p * d / (1 - d), so the expected number
    of added tags is p times the number of present tags. p in {0.1, 0.3}.
    A row is an *error* when any of its tags changed.

Probabilities (``--model``, default logistic regression; 5 folds stratified on the number of tags
per row)
    ``ovr``: one model per tag on the features (what cleanlab's multi-label tutorial does, and
    cleanpipe before issue 15); ``cond``: cleanpipe's default, each tag's model also given the row's
    other given tags (:func:`cleanpipe.oof.cross_val_probs_multilabel`). ``--skip-ovr`` computes
    ``cond`` only (cleanlab is then compared on ``cond`` alone). Probabilities are cached under
    ``benchmarks/.cache/`` with the seconds they took to compute.

Compared
    cleanpipe ``find_multilabel_issues`` (default ``posterior`` rule) on ``cond``; cleanlab's
    ``multilabel_classification.filter.find_label_issues`` with its best ``filter_by`` per case
    (chosen with the truth, an upper bound on cleanlab) on ``cond`` (the same probabilities: the
    lead the targets use) and on ``ovr``; cleanpipe's
    previous default (``noise_rate``, cleanlab's rule) on ``ovr``. ``ceiling``: the best F1 over
    every cut of the best ranking (cleanpipe's ``p_error``, cleanlab's
    ``get_label_quality_scores``, the weakest tag's self-confidence) on ``cond``: what no count can
    beat with these probabilities. AUPRC of each ranking against the error rows.

Run from the repository root::

    python benchmarks/multilabel.py            # 4 data sets x 5 noise settings (~4 min on 2 cores)
    python benchmarks/multilabel.py --write    # also update the "Multi-label" section of RESULTS.md
    python benchmarks/multilabel.py --model hgb,logreg --skip-ovr   # cleanpipe's default model
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
    from ._common import CACHE_DIR, markdown_table, progress, provenance_block, replace_section
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import CACHE_DIR, markdown_table, progress, provenance_block, replace_section

SCRIPT = "multilabel.py"
CASES = (("flip", 0.2), ("missing", 0.1), ("missing", 0.3), ("spurious", 0.1), ("spurious", 0.3))
FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
             "predicted_neq_given")
_DIGIT_TAGS = {"even": [0, 2, 4, 6, 8], "prime": [2, 3, 5, 7], "ge5": [5, 6, 7, 8, 9],
               "loop": [0, 6, 8, 9], "square": [0, 1, 4, 9], "fibonacci": [0, 1, 2, 3, 5, 8]}


def load_datasets():
    """Yield ``(name, part, X, Y)`` with ``Y`` the clean 0/1 tag matrix, ``part`` dev or held-out."""
    from sklearn.datasets import load_digits, make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=4000, n_features=20, n_classes=6, n_labels=2,
                                          random_state=0)
    yield "issue6", "dev", X, Y
    X, digit = load_digits(return_X_y=True)
    Y = np.stack([np.isin(digit, v) for v in _DIGIT_TAGS.values()], axis=1).astype(np.int64)
    yield "digits6", "dev", X, Y
    X, Y = make_multilabel_classification(n_samples=4000, n_features=20, n_classes=12, n_labels=4,
                                          random_state=2)
    yield "dense12", "dev", X, Y
    X, Y = make_multilabel_classification(n_samples=4000, n_features=20, n_classes=10, n_labels=3,
                                          random_state=1)
    yield "heldout10", "held-out", X, Y


def inject(Y: np.ndarray, kind: str, rate: float, seed: int) -> np.ndarray:
    """Noisy copy of ``Y`` (see the module docstring for the exact noise model)."""
    rng = np.random.default_rng(seed)
    if kind == "flip":
        noisy = Y.copy()
        rows = rng.choice(len(Y), int(round(rate * len(Y))), replace=False)
        noisy[rows, rng.integers(0, Y.shape[1], len(rows))] ^= 1
        return noisy.astype(np.int64)
    d = Y.mean()
    p_missing = rate if kind == "missing" else 0.0
    p_spurious = (rate if kind == "spurious" else 0.0) * d / (1 - d)
    u = rng.random(Y.shape)
    return np.where(Y == 1, u >= p_missing, u < p_spurious).astype(np.int64)


def best_cut_f1(truth: np.ndarray, score: np.ndarray) -> float:
    """Best F1 over every cut of the ranking ``score`` (higher = more suspect)."""
    order = np.argsort(-score, kind="stable")
    tp = np.cumsum(truth[order])
    return float((2 * tp / (np.arange(1, len(truth) + 1) + truth.sum())).max())


def _f1(truth, flags):
    tp = (truth & flags).sum()
    return 2 * tp / max(truth.sum() + flags.sum(), 1)


def cached_probs(name, X, noisy, *, model, cond, seed, n_jobs):
    """Out-of-fold tag probabilities and the seconds they took, cached under ``benchmarks/.cache/``.

    The key holds the data set, the model, the conditioning, the seed and a checksum of the noisy
    tags; the seconds are those of the run that computed them.
    """
    from cleanpipe.oof import cross_val_probs_multilabel

    digest = f"{zlib.crc32(np.ascontiguousarray(noisy).tobytes()):08x}"
    path = CACHE_DIR / (f"ml_{name}_{model.replace(',', '+')}_{'cond' if cond else 'ovr'}_s{seed}_"
                        f"{digest}.npz")
    if path.exists():
        with np.load(path) as f:
            return f["probs"], float(f["secs"])
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_probs_multilabel(
            X.astype(np.float32), noisy, model=model, folds=5, seed=seed, n_jobs=n_jobs,
            condition_on_tags=cond).pred_probs.astype(np.float64)
    secs = time.perf_counter() - t
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, probs=probs, secs=secs)
    tmp.replace(path)
    return probs, secs


def run_case(name, part, X, Y, kind, rate, *, seed, n_jobs, model="logreg", ovr=True):
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find
    from cleanlab.multilabel_classification.rank import get_label_quality_scores as cl_scores
    from sklearn.metrics import average_precision_score

    from cleanpipe import find_multilabel_issues

    noisy = inject(Y, kind, rate, seed=zlib.crc32(f"{name}/{kind}/{rate}/{seed}".encode()))
    truth = (noisy != Y).any(axis=1)
    lists = [np.flatnonzero(r).tolist() for r in noisy]
    probs, secs = {}, {"ovr": np.nan}
    for key, cond in (("ovr", False), ("cond", True)) if ovr else (("cond", True),):
        probs[key], secs[key] = cached_probs(name, X, noisy, model=model, cond=cond, seed=seed,
                                             n_jobs=n_jobs)
    row = {"dataset": name, "part": part, "noise": f"{kind} {rate:g}", "n": len(Y), "k": Y.shape[1],
           "wrong": int(truth.sum()), "oof_s_ovr": secs["ovr"], "oof_s_cond": secs["cond"]}
    t = time.perf_counter()
    ours = find_multilabel_issues(noisy, probs["cond"])
    row["cp_s"] = time.perf_counter() - t
    flags = ours["is_label_issue"].to_numpy()
    p_error = 1 - ours["label_score"].to_numpy()
    row.update(cp_flags=int(flags.sum()), cp_f1=_f1(truth, flags),
               cp_precision=(truth & flags).sum() / max(flags.sum(), 1),
               cp_recall=(truth & flags).sum() / truth.sum(),
               cp_auprc=average_precision_score(truth, p_error))
    row.update(old_flags=np.nan, old_f1=np.nan, cl_ovr_f1=np.nan, cl_ovr_by="", cl_default_flags=np.nan)
    if ovr:
        old = find_multilabel_issues(noisy, probs["ovr"], method="noise_rate")["is_label_issue"].to_numpy()
        row.update(old_flags=int(old.sum()), old_f1=_f1(truth, old))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in probs:
            f1s = {fb: _f1(truth, np.asarray(cl_find(labels=lists, pred_probs=probs[key], filter_by=fb),
                                             bool)) for fb in FILTER_BY}
            best = max(f1s, key=f1s.get)
            row[f"cl_{key}_f1"], row[f"cl_{key}_by"] = f1s[best], best
        key = "ovr" if ovr else "cond"
        row["cl_default_flags"] = int(np.asarray(cl_find(labels=lists, pred_probs=probs[key]), bool).sum())
        cl_rank = 1 - cl_scores(lists, probs["cond"])
    q = np.where(noisy == 1, probs["cond"], 1 - probs["cond"]).min(axis=1)
    row["cl_auprc"] = average_precision_score(truth, cl_rank)
    row["minq_auprc"] = average_precision_score(truth, -q)
    row["ceiling"] = max(best_cut_f1(truth, s) for s in (p_error, cl_rank, -q))
    return row


#: F1 the issue asks for where the probabilities allow it, and the lead over cleanlab's best rule.
F1_TARGET, LEAD, RATIO = 0.70, 0.05, 1.5


def render(df: pd.DataFrame, model: str = "logreg") -> str:
    """The targets and the per-case table of one run (one probability model)."""
    lead = df["cp_f1"] - df["cl_cond_f1"]
    lead_ovr = df["cp_f1"] - df["cl_ovr_f1"]
    ratio = df["cp_flags"] / df["wrong"]
    allowed = df["ceiling"] >= F1_TARGET
    room = df["ceiling"] >= df["cl_cond_f1"] + LEAD
    has_ovr = bool(df["cl_ovr_f1"].notna().any())
    lines = [
        ("Datasets: issue6 (`make_multilabel_classification`, 4000 x 20, 6 tags), digits6 (bundled "
         "digits, 6 derived tags) and dense12 (4000 x 20, 12 tags, 4 per row on average) for "
         "development; heldout10 (4000 x 20, 10 tags, 3 per row on average, noise and folds from "
         "seed + 1), never looked at while choosing. Noise: one tag flipped in 20% of rows (flip), "
         "each present tag dropped with prob. p (missing), each absent tag added with prob. "
         "p*d/(1-d), d = tag density (spurious). Probabilities: "
         f"`{model}`, 5 folds; `cond`: each tag's model also given the row's other given tags "
         "(cleanpipe's default)" + ("; `ovr`: per tag on the features alone" if has_ovr else "")
         + ". cleanlab: its best `filter_by` per case, chosen with the truth. lead: cleanpipe's F1 "
         "minus cleanlab's best on the same `cond` probabilities. ceiling: best F1 over every cut "
         "of the best of three rankings on `cond` (cleanpipe's `p_error`, cleanlab's "
         "`get_label_quality_scores`, the weakest tag's self-confidence)."),
        "",
        "### Targets",
        "",
    ]
    for part in ("dev", "held-out"):
        m = df["part"] == part
        if not m.any():
            continue
        ok_lead = bool((lead[m] >= LEAD).all())
        ok_ratio = bool(((ratio[m] <= RATIO) & (ratio[m] >= 1 / RATIO)).all())
        ok_f1 = bool((df["cp_f1"][m & allowed] >= F1_TARGET).all())
        no_room = df.loc[m & ~room, ["dataset", "noise", "ceiling", "cl_cond_f1"]]
        lines += [
            f"{part}:",
            "",
            (f"- [{'PASS' if ok_lead else 'FAIL'}] F1 >= cleanlab's best `filter_by` + {LEAD} on the "
             f"same probabilities: worst lead {lead[m].min():+.3f}, mean {lead[m].mean():+.3f}; "
             f"{int((m & ~room).sum())} of {int(m.sum())} cases leave no room for it (ceiling < "
             "cleanlab's best + " f"{LEAD}" + (": " + ", ".join(
                 f"{d} {nz} {c:.3f} vs {b:.3f}" for d, nz, c, b in no_room.itertuples(index=False))
                 if len(no_room) else "") + ")"
             + (f"; against cleanlab on `ovr` (its tutorial's probabilities): worst "
                f"{lead_ovr[m].min():+.3f}, mean {lead_ovr[m].mean():+.3f}" if has_ovr else "")),
            (f"- [{'PASS' if ok_ratio else 'FAIL'}] flags within {RATIO}x of the wrong rows: "
             f"{ratio[m].min():.2f}x to {ratio[m].max():.2f}x"
             + (f" (cleanpipe's default before issue 15: "
                f"{(df['old_flags'] / df['wrong'])[m].min():.2f}x to "
                f"{(df['old_flags'] / df['wrong'])[m].max():.2f}x)" if has_ovr else "")),
            (f"- [{'PASS' if ok_f1 else 'FAIL'}] F1 >= {F1_TARGET} where the ceiling allows it "
             f"({int((m & allowed).sum())} of {int(m.sum())} cases; the others' ceilings: "
             + (", ".join(f"{d} {nz} {c:.3f}" for d, nz, c in
                          df.loc[m & ~allowed, ["dataset", "noise", "ceiling"]].itertuples(index=False))
                or "none") + ")"),
            "",
        ]
    lines += ["### Per case", ""]
    table = pd.DataFrame({
        "dataset": df["dataset"], "noise": df["noise"], "wrong": df["wrong"],
        "cp flags": df["cp_flags"], "ratio": ratio, "cp P": df["cp_precision"], "cp R": df["cp_recall"],
        "cp F1": df["cp_f1"], "cl best F1": df["cl_cond_f1"], "cl rule": df["cl_cond_by"],
        "lead": lead, "ceiling": df["ceiling"],
        "AUPRC cp": df["cp_auprc"], "AUPRC cl": df["cl_auprc"], "AUPRC min-q": df["minq_auprc"],
    })
    if has_ovr:
        table["cl best F1 ovr"] = df["cl_ovr_f1"]
        table["old F1"] = df["old_f1"]
        table["old flags"] = df["old_flags"]
    lines.append(markdown_table(table))
    lines += ["", (f"Out-of-fold time (mean per case, `{model}`, 1 worker, from the run that filled "
                   "the cache): `cond` " f"{df['oof_s_cond'].mean():.1f} s"
                   + (f", `ovr` {df['oof_s_ovr'].mean():.1f} s" if has_ovr else "")
                   + f"; detection {df['cp_s'].mean() * 1e3:.0f} ms per case.")]
    return "\n".join(lines)


#: The subsections of the Multi-label section that this script writes; the others (written by hand,
#: by another ``--model`` run of this script, or by benchmarks/multilabel_retrain.py) are kept.
_WRITTEN = ("Targets", "Per case")


def _section_parts() -> tuple:
    """The Multi-label section of RESULTS.md as ``(head, [(title, text), ...])``.

    ``head`` runs from below the heading to the first ``###`` block this script does not write;
    the list holds those other blocks, in order.
    """
    try:
        from ._common import RESULTS_MD
    except ImportError:
        from _common import RESULTS_MD
    lines = RESULTS_MD.read_text().splitlines() if RESULTS_MD.exists() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Multi-label"), None)
    if start is None:
        return "", []
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    heads = [i for i in range(start + 1, end)
             if lines[i].startswith("### ") and lines[i][4:].strip() not in _WRITTEN]
    head = "\n".join(lines[start + 1:heads[0] if heads else end]).strip("\n")
    return head, [(lines[i][4:].strip(), "\n".join(lines[i:j]).rstrip("\n"))
                  for i, j in zip(heads, heads[1:] + [end])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="development seed (held-out: seed + 1)")
    ap.add_argument("--n-jobs", type=int, default=1, help="joblib workers for the out-of-fold fits")
    ap.add_argument("--model", default="logreg", help="out-of-fold model (cleanpipe's --model)")
    ap.add_argument("--skip-ovr", action="store_true",
                    help="only the tag-conditioned probabilities (cleanlab compared on them alone)")
    ap.add_argument("--datasets", default="", help="comma-separated subset of the data sets")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import cleanpipe

    rows = []
    t0 = time.perf_counter()
    for name, part, X, Y in load_datasets():
        if args.datasets and name not in args.datasets.split(","):
            continue
        seed = args.seed + (part == "held-out")
        for kind, rate in CASES:
            progress(f"{name} {kind} {rate}")
            rows.append(run_case(name, part, X, Y, kind, rate, seed=seed, n_jobs=args.n_jobs,
                                 model=args.model, ovr=not args.skip_ovr))
    df = pd.DataFrame(rows)
    body = render(df, args.model)
    wall = f"Whole run: {(time.perf_counter() - t0) / 60:.1f} min wall."
    print(provenance_block(SCRIPT, cleanpipe.__version__) + "\n" + body + "\n\n" + wall)
    if args.write:
        head, kept = _section_parts()
        if args.model == "logreg" and not args.skip_ovr and not args.datasets:
            head = provenance_block(SCRIPT, cleanpipe.__version__) + "\n" + body + "\n\n" + wall
        else:  # another model's run is a subsection of its own, replacing its previous one
            title = f"Model `{args.model}`"
            cmd = " ".join(["python benchmarks/multilabel.py", *(argv if argv is not None else sys.argv[1:])])
            own = (f"### {title}\n\n```\n{cmd}\n```\n\n"
                   + body.replace("### Targets\n", "Targets:\n").replace("### Per case\n", "Per case:\n")
                   + "\n\n" + wall)
            kept = [(t, x) for t, x in kept if t != title] + [(title, own)]
        replace_section("Multi-label", head + "\n\n" + "\n\n".join(x for _, x in kept) + "\n")
        progress("wrote the Multi-label section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
