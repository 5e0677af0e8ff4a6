"""--method mixture flags what the report's threshold shows (p_noisy >= 0.5), and says so when it
flags nothing."""

import warnings

import numpy as np
import pytest

from cleanpipe import find_label_issues
from cleanpipe.errors import CleanpipeWarning
from cleanpipe.settings import MIXTURE_FLAG_THRESHOLD, NOISY_THRESHOLD, default_noisy_threshold


def _planted(n=2000, k=4, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 3.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = np.where(rng.random(n) < noise, (y + rng.integers(1, k, n)) % k, y)
    return given, p


def test_the_mixture_method_flags_rows_likelier_noisy_than_clean():
    assert default_noisy_threshold("mixture") == MIXTURE_FLAG_THRESHOLD == 0.5
    assert default_noisy_threshold("combined") == NOISY_THRESHOLD
    given, p = _planted()
    out = find_label_issues(given, p, method="mixture")
    flagged = out["is_label_issue"].to_numpy()
    disagree = out["predicted_label"].to_numpy() != given
    # Exactly the rows with p_noisy >= 0.5 whose arg-max is not their label.
    np.testing.assert_array_equal(flagged, (out["p_noisy"].to_numpy() > 0.5) & disagree)
    assert flagged.sum() > 0


def test_a_mixture_that_flags_nothing_says_how_far_it_fell_short():
    from types import SimpleNamespace

    from cleanpipe.flag import warn_if_nothing_flagged
    nothing = SimpleNamespace(method="mixture", is_label_issue=np.zeros(3, bool),
                              p_noisy=np.array([0.2, 0.699, 0.5]), predicted=np.array([0, 1, 1]),
                              mixture=SimpleNamespace(fit="fitted"))
    with pytest.warns(CleanpipeWarning, match=r"flagged no row: the highest p_noisy is 0\.699, below "
                                              r"the threshold 0\.8"):
        warn_if_nothing_flagged(nothing, np.array([0, 0, 1]), 0.8)
    given, p = _planted()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CleanpipeWarning)
        find_label_issues(given, p, method="mixture")  # flags rows: no warning
        warn_if_nothing_flagged(SimpleNamespace(**{**vars(nothing), "method": "combined"}),
                                np.array([0, 0, 1]), 0.8)  # only the mixture rule
        # Nothing to flag: the model agrees with every label.
        warn_if_nothing_flagged(nothing, np.array([0, 1, 1]), 0.8)
