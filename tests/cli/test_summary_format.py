"""The terminal summary's most suspicious rows: lowest label_score first, each score readable."""

import numpy as np

from cleanpipe import flag_table
from cleanpipe.cli.flag import format_summary


def test_the_printed_rows_are_the_lowest_scores_with_distinct_values():
    import pyarrow as pa
    rng = np.random.default_rng(0)
    n, k = 400, 3
    y = rng.integers(0, k, n)
    probs = np.full((n, k), 1e-6)
    probs[np.arange(n), y] = 1 - 2e-6
    flipped = np.arange(12)
    given = y.copy()
    given[flipped] = (y[flipped] + 1) % k
    # Distinct, tiny probabilities of the given labels on the flipped rows.
    probs[flipped, given[flipped]] = np.geomspace(1e-9, 1e-2, len(flipped))
    probs /= probs.sum(1, keepdims=True)
    res = flag_table(pa.table({"x": rng.normal(size=n), "label": given}), pred_probs=probs)
    top = res.summary["top_suspicious"]
    scores = [r["label_score"] for r in top]
    assert scores == sorted(scores) and len(top) == 10
    text = format_summary(res.summary)
    lines = text.splitlines()
    start = lines.index("most suspicious rows:") + 2
    printed = [line.split()[3] for line in lines[start:start + 10]]
    assert len(set(printed)) == len(printed), printed  # no column of 0.000
