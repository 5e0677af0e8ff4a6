"""Extract real, human-verified label errors from a snapshot of ``cleanlab/label-errors``.

The public repository behind "Pervasive Label Errors in Test Sets Destabilize Machine Learning
Benchmarks" (Northcutt, Athalye & Mueller, NeurIPS 2021) holds, for the test sets of several
benchmarks, cross-validated predicted probabilities, the original labels and Mechanical Turk
verdicts on the rows cleanlab v1 proposed as errors. Get a snapshot with::

    git clone https://github.com/cleanlab/label-errors /path/to/label-errors

then run, from the repository root::

    python benchmarks/fetch_real_errors.py /path/to/label-errors

It writes one ``<name>.npz`` per data set into ``benchmarks/data/real_errors/`` (git-ignored; never
commit it) with

- ``pred_probs`` (float64, N x K): the cross-validated probabilities;
- ``labels`` (int64, N): the given (original) labels;
- ``reviewed`` (bool, N): rows shown to people (cleanlab v1's candidates);
- ``given_votes``, ``total_votes`` (int, N): workers who chose the given label alone, and all
  votes (0 for rows never reviewed);
- ``is_error`` (bool, N): reviewed and fewer than 3 workers kept the given label (the paper's
  rule; it reproduces its counts: 15 on MNIST, 54 on CIFAR-10, 725 on IMDB).

The snapshot may be a checkout (files on disk) or a bare git directory (read with ``git show``).
Data sets whose probabilities are absent from the snapshot (too large for git: CIFAR-100 is
stored elsewhere, ImageNet and Amazon in parts) are skipped with a note.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "data" / "real_errors"

#: name -> (probabilities, original labels, mturk verdicts) paths inside the snapshot.
SETS = {
    name: (f"cross_validated_predicted_probabilities/{stem}_pyx.npy",
           f"original_test_labels/{stem}_original_labels.npy",
           f"mturk/{name}_mturk.json")
    for name, stem in (("mnist", "mnist_test_set"), ("cifar10", "cifar10_test_set"),
                       ("cifar100", "cifar100_test_set"), ("20news", "20news_test_set"),
                       ("imdb", "imdb_test_set"))
}
#: IMDB's verdicts name rows by file; this maps row index -> file.
IMDB_INDEX = "dataset_indexing/imdb_test_set_index_to_filename.json"


class Snapshot:
    """Files of a checkout, or of a git directory at HEAD."""

    def __init__(self, root: Path):
        self.root = root
        self.is_checkout = (root / "README.md").is_file()
        if not self.is_checkout and not (root / "HEAD").is_file():
            raise SystemExit(f"{root} is neither a checkout nor a git directory of "
                             "cleanlab/label-errors; get one with "
                             "`git clone https://github.com/cleanlab/label-errors`")

    def read(self, path: str) -> bytes | None:
        if self.is_checkout:
            file = self.root / path
            return file.read_bytes() if file.is_file() else None
        done = subprocess.run(["git", "-C", str(self.root), "show", f"HEAD:{path}"],
                              capture_output=True)
        return done.stdout if done.returncode == 0 else None


def _load_npy(data: bytes | None):
    if data is None:
        return None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:  # a Git LFS pointer or a truncated file
        return None


def extract(snapshot: Snapshot, name: str) -> dict | str:
    """The arrays of one data set, or a reason it cannot be extracted."""
    probs_path, labels_path, mturk_path = SETS[name]
    probs = _load_npy(snapshot.read(probs_path))
    labels = _load_npy(snapshot.read(labels_path))
    verdicts = snapshot.read(mturk_path)
    if probs is None or labels is None or verdicts is None:
        return "probabilities, labels or verdicts missing from the snapshot"
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # stored rounded; rows must sum to 1
    labels = labels.astype(np.int64)
    entries = json.loads(verdicts)
    if name == "imdb":
        index = json.loads(snapshot.read(IMDB_INDEX))
        position = {f"test/{f.removesuffix('.txt')}": i for i, f in enumerate(index)}
        rows = np.array([position[e["id"]] for e in entries])
    else:
        rows = np.array([int(e["id"]) for e in entries])
    given = np.zeros(len(labels), dtype=np.int64)
    total = np.zeros(len(labels), dtype=np.int64)
    given[rows] = [e["mturk"]["given"] for e in entries]
    total[rows] = [sum(e["mturk"].values()) for e in entries]
    reviewed = total > 0
    return {"pred_probs": probs, "labels": labels, "reviewed": reviewed, "given_votes": given,
            "total_votes": total, "is_error": reviewed & (given < 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Get a snapshot with: git clone https://github.com/cleanlab/label-errors")
    parser.add_argument("snapshot", type=Path, help="checkout (or git directory) of cleanlab/label-errors")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    args = parser.parse_args(argv)
    snapshot = Snapshot(args.snapshot)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        arrays = extract(snapshot, name)
        if isinstance(arrays, str):
            print(f"{name}: skipped ({arrays})", file=sys.stderr)
            continue
        tmp = args.out / f".{name}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(args.out / f"{name}.npz")
        print(f"{name}: {len(arrays['labels'])} rows, {arrays['pred_probs'].shape[1]} classes, "
              f"{int(arrays['reviewed'].sum())} reviewed, {int(arrays['is_error'].sum())} confirmed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
