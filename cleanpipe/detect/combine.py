"""The default rule that combines confident learning and the loss mixture, and the other methods.

Each method returns the same :class:`Detection`; every signal stays visible in it whatever the method
(``p_noisy`` from the mixture, the confident-learning estimates, ``label_score``), only
``is_label_issue`` depends on the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import DEFAULT_BLOCK_ROWS, map_blocks
from .confident import ConfidentLearning, confident_learning, flags_by_class, flags_by_noise_rate
from .mixture import LossMixture, fit_loss_mixture

#: Method names accepted by :func:`detect`; the first is the default.
METHODS = ("combined", "noise_rate", "per_class", "both", "mixture")

_LOSS_FLOOR = 1e-12
#: ``p_noisy`` above this counts a row as noisy for the mixture's estimate of the number of issues.
#: Chosen on benchmarks/detection_quality.py: 0.5 over-counts when the noise rate is low and the
#: noisy component overlaps the clean tail (mean F1 0.792 at 0.5, 0.795 at 0.8).
NOISY_THRESHOLD = 0.8


@dataclass(frozen=True)
class Detection:
    """Per-row results and the estimates behind them.

    Attributes
    ----------
    is_label_issue : ndarray of shape (n_samples,), bool
    label_score : ndarray of shape (n_samples,)
        In [0, 1]; higher = more likely correct.
    p_noisy : ndarray of shape (n_samples,)
        Posterior of the high-loss mixture component.
    predicted : ndarray of shape (n_samples,), int
    loss : ndarray of shape (n_samples,)
        Cross-entropy ``-log p_given``.
    confident : ConfidentLearning
    mixture : LossMixture
    method : str
    """

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_noisy: np.ndarray
    predicted: np.ndarray
    loss: np.ndarray
    confident: ConfidentLearning
    mixture: LossMixture
    method: str


def label_quality(labels: np.ndarray, pred_probs, cl: ConfidentLearning, *,
                  block_rows: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """The default ``label_score``: posterior that the given label is the true one.

    Under the class-conditional noise model with the noise matrix ``T = P(given | true)`` that
    confident learning estimated, and the out-of-fold probabilities standing in for ``P(true | x)``:

    ``P(true = given | x, given) = T[given, given] p_given / sum_j T[given, j] p_j``.

    It is 1 when the model and the noise estimate agree that the label is right and falls as the
    other classes, weighted by how often they are mislabeled as the given one, take over.
    """
    t = cl.noise_matrix
    k = len(t)
    out = np.empty(len(labels), dtype=np.float64)

    def score(start, stop, block):
        given = labels[start:stop]
        tb = t.astype(block.dtype)
        den = np.empty(stop - start, dtype=np.float64)
        # sum_j T[g, j] p_j, one matrix-vector product per given class: O(N K), not O(N K^2).
        order = np.argsort(given, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(given, minlength=k))])
        for g in np.flatnonzero(bounds[1:] > bounds[:-1]):
            rows = order[bounds[g]:bounds[g + 1]]
            # An element-wise product and row sums rather than BLAS: the result does not depend
            # on how many rows a block holds, so any block size gives identical scores.
            den[rows] = (block[rows] * tb[g]).sum(axis=1)
        num = t[given, given] * cl.p_given[start:stop]
        out[start:stop] = np.divide(num, den, out=np.ones_like(num), where=den > 0)

    map_blocks(score, pred_probs, block_rows)
    return np.clip(out, 0.0, 1.0, out=out)


def _combined_flags(cl: ConfidentLearning, p_noisy: np.ndarray, score: np.ndarray,
                    disagrees: np.ndarray, noisy_threshold: float = NOISY_THRESHOLD) -> np.ndarray:
    """The default rule: how many from both signals, which from ``label_score``.

    Confident learning's raw confident joint undercounts errors that look plausible to the model
    (instance-dependent noise: they rarely clear the other class's threshold) while the loss
    mixture finds them by their loss; each is a conservative estimate of a different kind of
    error, so the larger is used: ``k = max(off-diagonal of the confident joint,
    #{p_noisy > noisy_threshold})``. The ``k`` rows with the lowest ``label_score`` are flagged,
    except rows whose arg-max class is their given label.
    """
    cj = cl.confident_joint
    k = max(int(cj.sum() - np.trace(cj)), int(np.count_nonzero(p_noisy > noisy_threshold)))
    flags = np.zeros(len(score), dtype=bool)
    if k > 0:
        flags[_lowest(score, k)] = True
    return flags & disagrees


def _lowest(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest scores in O(N).

    Rows tied at the boundary are taken all together or not at all, so the chosen set does not
    depend on row order (it may then hold fewer than ``k`` rows).
    """
    if k >= len(score):
        return np.arange(len(score))
    kth = np.partition(score, k - 1)[k - 1]
    at_most = np.flatnonzero(score <= kth)
    return at_most if len(at_most) <= k else np.flatnonzero(score < kth)


def detect(labels: np.ndarray, pred_probs, *, method: str = "combined", mixture: str = "beta",
           noisy_threshold: float = NOISY_THRESHOLD, block_rows: int = DEFAULT_BLOCK_ROWS) -> Detection:
    """Score and flag rows of validated inputs (see :func:`cleanpipe.find_label_issues`).

    Notes
    -----
    The default ``"combined"`` rule estimates the number of issues ``k`` as the larger of the
    confident joint's off-diagonal count and the number of rows with ``p_noisy > noisy_threshold``,
    ranks all rows by ``label_score`` (the posterior that the given label is true under the
    estimated noise matrix, :func:`label_quality`) and flags the ``k`` lowest, except rows whose
    arg-max class is their given label (see :func:`_combined_flags`). ``mixture`` flags rows with
    ``p_noisy > noisy_threshold`` whose arg-max differs from the label. Other methods: ``noise_rate`` (confident learning,
    prune by noise rate), ``per_class`` (prune by class, ranked by self-confidence), ``both``
    (their intersection), ``mixture`` (``p_noisy >= 0.5`` and arg-max differs from the label).
    """
    cl = confident_learning(labels, pred_probs, block_rows=block_rows)
    loss = -np.log(np.maximum(cl.p_given, _LOSS_FLOOR)).astype(np.float32)
    mix = fit_loss_mixture(loss, family=mixture)
    p_noisy = mix.p_noisy(loss)
    score = label_quality(labels, pred_probs, cl, block_rows=block_rows)
    disagrees = cl.predicted != labels
    if method == "combined":
        flags = _combined_flags(cl, p_noisy, score, disagrees, noisy_threshold)
    elif method == "noise_rate":
        flags = flags_by_noise_rate(cl, labels)
    elif method == "per_class":
        flags = flags_by_class(cl, labels)
    elif method == "both":
        flags = flags_by_noise_rate(cl, labels) & flags_by_class(cl, labels)
    elif method == "mixture":
        flags = (p_noisy > noisy_threshold) & disagrees
    else:
        raise ValueError(f"unknown method {method!r}")
    return Detection(flags, score, p_noisy, cl.predicted, loss, cl, mix, method)
