"""A walk-through of the whole pipeline on a bundled dataset: flag, inspect, clean, retrain.

Runs the same steps a user would type on the command line, through the CLI, in a working folder:

1. write scikit-learn's digits with 20% of the labels flipped (``make_noisy_digits.py``), and
   hold 30% of the rows out as a test split that no step below sees;
2. ``cleanpipe flag`` the training rows, with the HTML report;
3. look at the flags: how many of the flipped rows were found;
4. ``cleanpipe clean`` (default mode) to a cleaned table;
5. ``cleanpipe retrain`` one model on the noisy training rows and one, with the same settings, on
   the cleaned ones, ``cleanpipe predict`` the held-out rows with each, and compare their
   accuracy against the *true* labels: what cleaning bought.

Usage::

    python examples/walkthrough.py [--workdir DIR] [--noise 0.2] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_noisy_digits import noisy_digits  # noqa: E402


def cleanpipe(*args) -> str:
    """Run one ``cleanpipe`` command (as a user would) and return its stdout."""
    cmd = [sys.executable, "-c", "from cleanpipe.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def accuracy(preds: Path, truth: np.ndarray) -> float:
    return float(np.mean(pq.read_table(preds).column("predicted_label").to_numpy() == truth))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cleanpipe-walkthrough-"))
    work.mkdir(parents=True, exist_ok=True)

    # 1. The data: the truth stays in columns the tool is told to ignore; 30% of the rows are
    # held out, so the accuracies below are measured on rows no model was trained on.
    table = noisy_digits(args.noise, seed=0)
    test_rows = np.random.default_rng(1).random(table.num_rows) < 0.3
    data, test = work / "digits.parquet", work / "digits-test.parquet"
    pq.write_table(table.filter(~test_rows), data)
    pq.write_table(table.filter(test_rows), test)
    ignore = ["--exclude", "true_label,is_flipped", "--id", "row_id"]

    # 2. Flag, with the report.
    summary = json.loads(cleanpipe("flag", data, *ignore, "--out", work / "digits.flags.parquet",
                                   "--report", "--json", "--model", "logreg"))
    print(f"estimated noise rate {summary['estimated_noise_rate']:.1%}, flagged {summary['flagged']}")
    print(f"report: {summary['outputs']['report']}")

    # 3. Inspect: how many flipped rows were found?
    flags = pq.read_table(work / "digits.flags.parquet")
    flagged = flags.column("is_label_issue").to_numpy()
    flipped = flags.column("is_flipped").to_numpy()
    precision = float((flagged & flipped).sum() / max(flagged.sum(), 1))
    recall = float((flagged & flipped).sum() / max(flipped.sum(), 1))
    print(f"flags vs the flipped rows: precision {precision:.2f}, recall {recall:.2f}")

    # 4. Clean (default mode), 5. retrain on the noisy and on the cleaned training rows with the
    # same settings, predict the held-out rows, compare with their true labels.
    cleanpipe("clean", work / "digits.flags.parquet", "--out", work / "digits.cleaned.parquet", "-q")
    truth = pq.read_table(test).column("true_label").to_numpy()
    results = {"precision": precision, "recall": recall, "test_rows": int(test_rows.sum())}
    for name, src in [("noisy", data), ("cleaned", work / "digits.cleaned.parquet")]:
        model = work / f"model-{name}"
        cleanpipe("retrain", src, *ignore, "--loss", "ce", "--epochs", args.epochs, "--out", model,
                  "--overwrite", "--threads", "1", "-q")
        cleanpipe("predict", model, test, "--out", work / f"preds-{name}.parquet")
        results[f"accuracy_{name}"] = accuracy(work / f"preds-{name}.parquet", truth)
    gain = results["accuracy_cleaned"] - results["accuracy_noisy"]
    print(f"accuracy on the {results['test_rows']} held-out rows' true labels: trained on the noisy "
          f"labels {results['accuracy_noisy']:.3f}, on the cleaned ones {results['accuracy_cleaned']:.3f} "
          f"({gain:+.3f} from cleaning)")
    return results


if __name__ == "__main__":
    main()
