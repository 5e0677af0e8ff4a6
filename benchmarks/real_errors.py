"""Detection on real, human-verified label errors: cleanpipe vs cleanlab 2.9.

Data: the test sets of ``cleanlab/label-errors`` (Northcutt et al. 2021): cross-validated
probabilities of the authors' models, the original labels, and Mechanical Turk verdicts on the
rows cleanlab v1 proposed. Extract them first (see ``benchmarks/fetch_real_errors.py``)::

    git clone https://github.com/cleanlab/label-errors /tmp/label-errors
    python benchmarks/fetch_real_errors.py /tmp/label-errors
    python benchmarks/real_errors.py            # all sets found
    python benchmarks/real_errors.py --write    # also update benchmarks/RESULTS.md

Without the extracted data the script says how to get it and exits 0.

Only the rows cleanlab v1 proposed were shown to people, so a flag outside them is of unknown
truth. The benchmark therefore reports

- ``flags`` beside ``confirmed`` (errors people confirmed): the flag count should be of the same
  order, and at most 2x the confirmed count on the default rule;
- ``prec_rev``: precision among the flags inside the reviewed rows; ``rec``: share of the confirmed
  errors flagged; ``f1_rev`` from those two;
- ``auprc_rev`` / ``auroc_rev``: ranking of the reviewed rows (positive = confirmed error), and
  ``auprc_all`` / ``auroc_all`` over every row with unreviewed rows counted as correct (a lower
  bound that favours rankings close to cleanlab v1's).

``imdb`` is the held-out set: it was not looked at while the detector was changed, and is
reported apart (``HELD_OUT``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

try:
    from ._common import cleanpipe_version, markdown_table, progress, provenance_block, replace_section
    from .detection_quality import CLEANLAB_FILTERS, CLEANLAB_RANKINGS
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import cleanpipe_version, markdown_table, progress, provenance_block, replace_section
    from detection_quality import CLEANLAB_FILTERS, CLEANLAB_RANKINGS

DATA_DIR = Path(__file__).resolve().parent / "data" / "real_errors"
SETS = ("mnist", "cifar10", "cifar100", "20news", "imdb")
#: Never looked at while choosing the detector's design; reported apart.
HELD_OUT = ("imdb",)
CANDIDATE = "cleanpipe:combined"
CLEANLAB_DEFAULT = "cleanlab:prune_by_noise_rate"
SELF_CONFIDENCE = "cleanlab:rank:self_confidence"


def load(name: str, data_dir: Path = DATA_DIR) -> dict | None:
    path = data_dir / f"{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def flag_row(data: dict, flags: np.ndarray) -> dict:
    reviewed, err = data["reviewed"], data["is_error"]
    flags = np.asarray(flags, dtype=bool)
    in_rev = flags & reviewed
    tp = int(np.count_nonzero(flags & err))
    prec = tp / max(int(in_rev.sum()), 1)
    rec = tp / max(int(err.sum()), 1)
    return {"flags": int(flags.sum()), "flags_rev": int(in_rev.sum()), "prec_rev": prec, "rec": rec,
            "f1_rev": 0.0 if tp == 0 else 2 * prec * rec / (prec + rec)}


def rank_row(data: dict, error_score: np.ndarray) -> dict:
    reviewed, err = data["reviewed"], data["is_error"]
    s = np.asarray(error_score, dtype=np.float64)
    return {"auprc_rev": average_precision_score(err[reviewed], s[reviewed]),
            "auroc_rev": roc_auc_score(err[reviewed], s[reviewed]),
            "auprc_all": average_precision_score(err, s), "auroc_all": roc_auc_score(err, s)}


def evaluate(data: dict, detectors: dict | None = None, *, include_cleanlab: bool = True) -> list[dict]:
    """One row per method on one data set."""
    import cleanpipe

    labels, probs = data["labels"], data["pred_probs"]
    rows = []
    out = cleanpipe.find_label_issues(labels, probs)
    rows.append({"name": CANDIDATE, **flag_row(data, out["is_label_issue"]),
                 **rank_row(data, 1.0 - out["label_score"].to_numpy())})
    for name, det in (detectors or {}).items():
        res = det(labels, probs)
        row = {"name": name, **flag_row(data, res["is_label_issue"])}
        if "label_score" in res:
            row.update(rank_row(data, 1.0 - np.asarray(res["label_score"], dtype=np.float64)))
        rows.append(row)
    if include_cleanlab:
        from cleanlab.filter import find_label_issues as cl_find
        from cleanlab.rank import get_label_quality_scores

        for method in CLEANLAB_FILTERS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flags = cl_find(labels, probs, filter_by=method, n_jobs=1)
            rows.append({"name": f"cleanlab:{method}", **flag_row(data, flags)})
        for method in CLEANLAB_RANKINGS:
            q = get_label_quality_scores(labels, probs, method=method)
            rows.append({"name": f"cleanlab:rank:{method}", **rank_row(data, 1.0 - q)})
    context = {"n": len(labels), "k": probs.shape[1], "reviewed": int(data["reviewed"].sum()),
               "confirmed": int(data["is_error"].sum())}
    return [{**context, **r} for r in rows]


def run(sets: Sequence[str], detectors: dict | None = None, data_dir: Path = DATA_DIR,
        include_cleanlab: bool = True) -> pd.DataFrame:
    rows = []
    for name in sets:
        data = load(name, data_dir)
        if data is None:
            continue
        progress(f"  {name}")
        rows += [{"set": name, **r} for r in evaluate(data, detectors, include_cleanlab=include_cleanlab)]
    return pd.DataFrame(rows)


def best_filter(df: pd.DataFrame) -> str:
    """cleanlab's ``filter_by`` with the best mean ``f1_rev`` over the sets in ``df``."""
    f = df[df["name"].isin([f"cleanlab:{m}" for m in CLEANLAB_FILTERS])]
    return f.groupby("name")["f1_rev"].mean().idxmax()


def check_targets(df: pd.DataFrame, candidate: str = CANDIDATE) -> list[str]:
    """Issue 15's real-set targets for ``candidate``, one line each with PASS/FAIL."""
    out = []
    for name, g in df.groupby("set", sort=False):
        g = g.set_index("name")
        if candidate not in g.index:
            continue
        c = g.loc[candidate]
        tag = " (held out)" if name in HELD_OUT else ""
        ok = c["flags"] <= 2 * c["confirmed"]
        out.append(f"[{'PASS' if ok else 'FAIL'}] {name}{tag}: flags {int(c['flags'])} <= 2 x confirmed "
                   f"{int(c['confirmed'])}")
        sc = g.loc[SELF_CONFIDENCE]
        for col in ("auprc_rev", "auprc_all"):
            ok = c[col] >= sc[col]
            out.append(f"[{'PASS' if ok else 'FAIL'}] {name}{tag}: label_score {col} {c[col]:.3f} >= "
                       f"self-confidence {sc[col]:.3f}")
        d = g.loc[CLEANLAB_DEFAULT]
        ok = c["prec_rev"] >= d["prec_rev"]
        out.append(f"[{'PASS' if ok else 'FAIL'}] {name}{tag}: precision in reviewed {c['prec_rev']:.3f} >= "
                   f"cleanlab default {d['prec_rev']:.3f}")
    return out


COLUMNS = ["set", "name", "confirmed", "flags", "flags_rev", "prec_rev", "rec", "f1_rev",
           "auprc_rev", "auroc_rev", "auprc_all", "auroc_all"]


def mean_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["prec_rev", "rec", "f1_rev", "auprc_rev", "auroc_rev", "auprc_all", "auroc_all"]
    return df.groupby("name", sort=False)[cols].mean().sort_values(["f1_rev", "auprc_rev"], ascending=False)


def render(df: pd.DataFrame, markdown: bool = False) -> str:
    parts = []
    dev = df[~df["set"].isin(HELD_OUT)]
    held = df[df["set"].isin(HELD_OUT)]
    fmt = (lambda t, index=False: markdown_table(t, index=index)) if markdown else (
        lambda t, index=False: t.to_string(index=index, float_format="{:.3f}".format))
    for title, part in (("Development sets", dev), ("Held-out set(s)", held)):
        if part.empty:
            continue
        parts += [f"{'### ' if markdown else '== '}{title}{'' if markdown else ' =='}", "",
                  fmt(part.reindex(columns=COLUMNS)), ""]
        parts += [f"Mean over {', '.join(part['set'].unique())}:", "", fmt(mean_table(part), True), ""]
        parts += [f"Best cleanlab filter_by on these: {best_filter(part)}", ""]
    parts += [f"{'### ' if markdown else '== '}Targets{'' if markdown else ' =='}", ""]
    parts += [("- " if markdown else "") + t for t in check_targets(df)]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list from {','.join(SETS)}")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder of the extracted .npz files")
    parser.add_argument("--write", action="store_true",
                        help="replace the '## Real label errors' section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    found = [s for s in sets if (args.data / f"{s}.npz").is_file()]
    if not found:
        print(f"no real-error data in {args.data}: run `git clone https://github.com/cleanlab/label-errors "
              f"/tmp/label-errors && python benchmarks/fetch_real_errors.py /tmp/label-errors`; skipping.")
        return 0
    df = run(found, data_dir=args.data)
    print(render(df))
    if args.write:
        body = provenance_block("real_errors.py", cleanpipe_version()) + "\n" + render(df, markdown=True)
        replace_section("Real label errors", body)
        progress("wrote the 'Real label errors' section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
