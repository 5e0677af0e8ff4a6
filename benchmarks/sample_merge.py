"""Merging P training-sample partials: a left fold against the balanced tree every engine now runs
(``cleanpipe.detect.partitioned.merge_tree``; issue 21). The merged samples are identical (the
merge is associative); the left fold re-sorts the growing sample P times.

Run from the repository root::

    python -m benchmarks.sample_merge --partitions 250 --rows 1000
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from cleanpipe import hashed_folds as hf
from cleanpipe.detect.partitioned import merge_tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=250)
    ap.add_argument("--rows", type=int, default=1000, help="sample rows per partition")
    ap.add_argument("--features", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    parts = [hf.sample_partial(rng.normal(size=(n, args.features)).astype(np.float32),
                               rng.integers(0, 2, n), hf.id_hashes(np.arange(i * n, (i + 1) * n)),
                               n_folds=5, rate=1.0)
             for i in range(args.partitions)]
    got = {}
    for name, run in (("left fold", lambda: functools.reduce(hf.merge_samples, parts)),
                      ("merge_tree", lambda: merge_tree(hf.merge_samples, parts))):
        t = time.process_time()
        got[name] = run()
        print(f"{name}: {len(got[name])} rows, {time.process_time() - t:.2f} CPU s")
    assert all(np.array_equal(getattr(got["left fold"], f), getattr(got["merge_tree"], f))
               for f in ("X", "y", "folds", "hashes"))
    print("identical samples")


if __name__ == "__main__":
    main()
