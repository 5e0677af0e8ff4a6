"""Small flagged tables for the report tests, made by ``flag_table`` with given probabilities.

Passing ``pred_probs`` skips cross-validation, so a flagged table costs milliseconds; the
probabilities favour each row's true class, and a few planted label flips give real flags.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cleanpipe import flag_table

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
#: A long value (so it also lands in a tooltip attribute) that tries to close that attribute.
QUOTES = "\" onmouseover=\"alert(1)\" data-x=\"" + "x" * 60


def make_flagged(*, class_names=("cat", "dog", "eel"), feature_names=("x", "y"), n: int = 150,
                 n_flipped: int = 12, n_extra_features: int = 0, mixture: str = "beta",
                 source: str = "synthetic.parquet", note: str | None = None, seed: int = 0):
    """A :class:`cleanpipe.FlagResult` of a synthetic table with ``n_flipped`` flipped labels.

    Columns: ``row_id`` (an id), the numeric ``feature_names``, ``note`` (a long string, or
    ``note`` on every row when given), ``n_extra_features`` more numeric columns, and ``label``.
    """
    rng = np.random.default_rng(seed)
    k = len(class_names)
    classes = sorted(class_names)  # flag_table orders the probability columns by sorted class
    true = rng.integers(0, k, n)
    given = true.copy()
    flip = rng.choice(n, n_flipped, replace=False)
    given[flip] = (true[flip] + rng.integers(1, k, n_flipped)) % k
    alpha = np.ones((n, k))
    alpha[np.arange(n), true] = 12.0
    probs = np.vstack([rng.dirichlet(a) for a in alpha])
    cols = {"row_id": np.arange(n) * 10}
    for j, name in enumerate(feature_names):
        cols[name] = rng.normal(true * 2.0 + j, 1.0)
    cols["note"] = [note if note is not None else f"row {i}: " + "a long free-text value " * 4
                    for i in range(n)]
    for j in range(n_extra_features):
        cols[f"extra_{j}"] = rng.normal(size=n)
    cols["label"] = np.array(classes, dtype=object)[given]
    table = pa.table(cols)
    return flag_table(table, label="label", ids=["row_id"], pred_probs=probs, mixture=mixture,
                      source=source)


@pytest.fixture(scope="session")
def make_flagged_result():
    """:func:`make_flagged` itself, for tests that need their own variant."""
    return make_flagged


@pytest.fixture(scope="session")
def flagged():
    """A plain flagged table (3 classes, 150 rows, 12 flipped labels)."""
    return make_flagged()


@pytest.fixture(scope="session")
def flagged_xss():
    """Class names, column names and the source path carry HTML/script payloads."""
    return make_flagged(class_names=(SCRIPT, IMG, "plain"), feature_names=(SCRIPT, IMG, "x"),
                        source=f"/data/{SCRIPT}.parquet", note=QUOTES)


@pytest.fixture(scope="session")
def report_html(flagged):
    """The report of :func:`flagged`, built once for every test that only reads it."""
    from cleanpipe.report import build_report
    return build_report(flagged.table, flagged.summary)
