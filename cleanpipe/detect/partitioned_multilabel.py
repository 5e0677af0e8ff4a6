"""The multi-label detector as passes over partitions, with the in-memory answer for any partitioning.

:func:`~cleanpipe.detect.multilabel.detect_multilabel` learns from the whole table: the class
counts and the one-vs-rest threshold sums, the ``K`` binary confident joints, the few-tags counts
of the anchors, the tag-count calibration's binned logits, the per-row BCE's clip percentiles and
histogram for the loss mixture, the two anchor tails (the ``m`` surest cells each way), the flip
posteriors' sums and ``sum(p_error)``, and the order statistic at which
:func:`~cleanpipe.detect.multilabel.flag_top_expected` cuts, or the noise-rate rule's per-class
quotas. Each is a partial a partition computes from its own rows with the same pure functions as
the in-memory path, and an associative merge: sums and counts exactly
(:mod:`~cleanpipe.detect.exactsum`), order statistics by radix selection
(:mod:`~cleanpipe.detect.radix`), ties as in memory (an anchor tail's tied edge pro rata, the
top-``m`` cut's ties all or none, the noise-rate quotas' ties by position). So the flags, scores,
suspect cells and estimates are bit-identical to ``detect_multilabel`` on the concatenated rows.

The protocol is the single-label one (:mod:`~cleanpipe.detect.partitioned`):
:func:`multilabel_detection_plan` is a generator of :class:`~cleanpipe.detect.partitioned.Step`
objects whose estimates are a :class:`MultilabelEstimates` (``multi_label = True``), and
``partitioned.partition_partial`` / ``merge_pair`` / ``partition_result`` / ``LocalRunner`` /
``run_plan`` serve both kinds (they hand a multi-label step to this module). A partition's
source returns ``(labels, pred_probs)`` with ``labels`` the 0/1 tag matrix ``(n, n_classes)`` and
``pred_probs`` the tag probabilities (rows need not sum to 1).

Passes: totals; the loss percentiles (2-4 selection passes); the histograms (mixture, calibration,
confident joints, candidate counts); the anchor tails and the noise-rate quotas (selection
passes); ties by position (``noise_rate``/``both``); the anchor tails' given tags; the flip
posteriors; the top-``m`` cut (``posterior``: selection passes). The per-partition cache keeps
the per-row loss and ``p_error`` (16 bytes a row), and the sparse candidate cells only for the
methods that read them after the histograms pass (:data:`_KEEP`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..settings import DEFAULT_MIXTURE, DEFAULT_MULTILABEL_METHOD, MULTILABEL_METHODS, MULTILABEL_NOISY_THRESHOLD
from ._validate import check_pred_probs
from .anchors import (ANCHOR_FEW_TAGS, anchor_size, few_tags_counts, few_tags_limits_from_counts,
                      noise_from_rates, tail_rate)
from .confident import thresholds_from_sums
from .exactsum import exact_group_sums
from .mixture import LossMixture, loss_histogram, mixture_from_histogram
from .multilabel import (MultilabelConfident, binary_cross_entropy, binary_threshold_sums,
                         candidate_cells, expected_count, expected_wrong_from_sums,
                         multilabel_confident_counts, multilabel_estimates, posterior_rows,
                         posterior_suspect_cells, prune_quota, suspect_lists, take_tied)
from .partitioned import (Chosen, Source, Step, _chosen, _float_probs, _Kept, _partition_probs, _select,
                          detect_partitions_with, loss_bounds, tie_counts, tie_shares)
from .radix import order_keys, select_partial
from .tag_calibration import (TagCountCalibration, calibration_cap, calibration_from_histogram,
                              calibration_histogram)

_EMPTY = np.zeros(0, np.int64)


@dataclass(frozen=True)
class MultilabelEstimates:
    """What the passes have learnt so far about the whole multi-label table (small; shipped with
    every step). The attributes named as in :class:`~cleanpipe.detect.multilabel.MultilabelDetection`
    hold the same values once the plan has ended."""

    n_classes: int
    method: str
    mixture: str
    noisy_threshold: float
    min_keep: int = 1
    n_rows: int = 0
    confident: MultilabelConfident | None = None  # without its per-row arrays
    tags: np.ndarray | None = None  # few_tags_counts, merged
    limits: tuple | None = None
    density: float = 0.0
    cap: int | None = None
    bounds: tuple | None = None
    mix: LossMixture | None = None
    calibration: TagCountCalibration | None = None
    chosen: dict = field(default_factory=dict)
    noise_matrix: np.ndarray | None = None
    expected_wrong: np.ndarray | None = None
    expected_issues: float = 0.0
    m: int = 0
    top: Chosen | None = None
    #: Read by :mod:`~cleanpipe.detect.partitioned` to hand a step to this module.
    multi_label = True


@dataclass(frozen=True)
class PartitionMultilabelDetection:
    """One partition's rows, scored: the per-row fields of
    :class:`~cleanpipe.detect.multilabel.MultilabelDetection`, its suspect cells by local row."""

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_error: np.ndarray
    p_noisy: np.ndarray
    loss: np.ndarray
    predicted: np.ndarray
    issue_rows: np.ndarray
    issue_classes: np.ndarray
    issue_given: np.ndarray

    def suspects(self, *, spurious: bool):
        """As :meth:`~cleanpipe.detect.multilabel.MultilabelDetection.suspects`."""
        return suspect_lists(len(self.is_label_issue), self.issue_rows, self.issue_classes,
                             self.issue_given, spurious=spurious)


def check_tag_partition(labels, pred_probs, n_classes: int):
    """Validate one partition's tags and probabilities (an empty partition is fine)."""
    pred_probs = _partition_probs(pred_probs, n_classes)
    labels = np.asarray(labels)
    if labels.shape != pred_probs.shape:
        raise InputError(f"labels has shape {labels.shape} but pred_probs has shape "
                         f"{pred_probs.shape}; pass one 0/1 column per class")
    if labels.size and (labels.dtype.kind not in "biuf" or np.any((labels != 0) & (labels != 1))):
        raise InputError("labels holds values other than 0 and 1; a tag matrix holds only 0 and 1")
    if len(labels):
        check_pred_probs(pred_probs, len(labels), require_sum_one=False,
                         range_hint="apply a sigmoid to each logit first")
    return labels.astype(bool), _float_probs(pred_probs)


#: What a partition keeps between passes, per method (multi-label): the loss (the percentile
#: selections, the histograms, the results) and ``p_error`` (the top-``m`` cut, the results);
#: the candidate cells where the results (and the noise-rate quotas' selection) read them, each
#: cell's probability rather than its margin ``|2 p - 1|`` (float32 when the probabilities are).
#: ``p_noisy`` is recomputed from the loss; the rest from the probabilities.
_KEEP_ML = ("loss", "p_error")
_CANDIDATES = ("cand_rows", "cand_classes", "cand_given")
_KEEP = {"posterior": _KEEP_ML, "mixture": _KEEP_ML + _CANDIDATES,
         "noise_rate": _KEEP_ML + _CANDIDATES + ("cand_p",),
         "both": _KEEP_ML + _CANDIDATES + ("cand_p",)}


class _TagRows(_Kept):
    """A multi-label partition's per-row arrays for one step (kept: :data:`_KEEP`)."""

    def __init__(self, est: MultilabelEstimates, source: Source, cache: dict | None):
        super().__init__(est, source, cache, _KEEP[est.method])
        self._q = None

    def data(self):
        if self._data is None:
            self._data = check_tag_partition(*self.source(), self.est.n_classes)
        return self._data

    def _loss(self):
        self.put("loss", binary_cross_entropy(*self.data()))

    def _candidates(self):
        y, p = self.data()
        r, c, margin, given = candidate_cells(y, p)
        self.v["candidates"] = r, c, margin, given
        for name, value in zip(_CANDIDATES, (r, c, given)):
            self.put(name, value)
        self.put("cand_p", np.asarray(p[r, c], dtype=np.float64))

    _cand_rows = _cand_classes = _cand_given = _cand_p = _candidates

    def candidates(self):
        """``(rows, classes, margin, given)`` of :func:`~cleanpipe.detect.multilabel.candidate_cells`,
        from the kept cells when they are (the margin from each cell's probability, as there)."""
        if "candidates" not in self.v:
            kept = [name for name in _CANDIDATES + ("cand_p",) if name in self.keep]
            if kept and self.c is not None and all(name in self.c for name in kept):
                # the margin only where a later pass reads it (the noise-rate selection)
                margin = np.abs(2.0 * self["cand_p"] - 1.0) if "cand_p" in kept else None
                self.v["candidates"] = (self["cand_rows"], self["cand_classes"], margin,
                                        self["cand_given"])
            else:
                self._candidates()
        return self.v["candidates"]

    def q(self):
        """The recalibrated probabilities (not cached: ``n x K`` floats)."""
        if self._q is None:
            y, p = self.data()
            self._q = self.est.calibration.apply(y, p)
        return self._q

    def _p_error(self):
        y, _ = self.data()
        self.put("p_error", posterior_rows(y, self.q(), self.est.noise_matrix)[0])

    def anchors(self):
        """``(groups, keys, hits)`` of the anchor tails' members: group 0 the cells eligible for
        the low tail (lowest ``q`` first, hit = given), group 1 for the high one (highest ``q``
        first, hit = not given); a cell may belong to both."""
        y, _ = self.data()
        q = self.q()
        lim0, lim1 = self.est.limits
        other = y.sum(axis=1, dtype=np.int64)[:, None] - y
        ok0, ok1 = other <= lim0, other <= lim1
        groups = np.concatenate([np.zeros(np.count_nonzero(ok0), np.int64),
                                 np.ones(np.count_nonzero(ok1), np.int64)])
        keys = np.concatenate([order_keys(q[ok0]), order_keys(q[ok1], descending=True)])
        hits = np.concatenate([y[ok0], ~y[ok1]])
        return groups, keys, hits

    def members(self, name):
        if name.startswith("loss"):
            loss = self["loss"]
            return np.zeros(len(loss), np.int64), order_keys(loss)
        if name == "anchors":
            return self.anchors()[:2]
        if name == "pairs":
            _, c, margin, given = self.candidates()
            return 2 * c + given, order_keys(margin, descending=True)
        if name == "top":
            p_error = self["p_error"]
            return np.zeros(len(p_error), np.int64), order_keys(p_error, descending=True)
        raise ValueError(f"unknown selection {name!r}")


# ---------------------------------------------------------------- partials and merges


def partition_partial(step: Step, source: Source, cache: dict | None = None):
    """What one partition contributes to a multi-label ``step`` (on the partition's worker)."""
    rows = _TagRows(step.est, source, cache)
    est = step.est
    kind = step.kind
    k = est.n_classes
    if kind == "select":
        return {name: select_partial(req, *rows.members(name)) for name, req in step.requests.items()}
    if kind == "ties":
        return tie_counts(est.chosen, rows.members)
    if kind == "ml_totals":
        y, p = rows.data()
        loss = rows["loss"]
        lo = float(loss.min()) if len(loss) else np.inf
        hi = float(loss.max()) if len(loss) else -np.inf
        return (len(y), y.sum(axis=0, dtype=np.int64), binary_threshold_sums(y, p),
                few_tags_counts(y.reshape(-1, k)), lo, hi)
    if kind == "ml_hist":
        y, p = rows.data()
        cnt, pos = calibration_histogram(y, p, est.cap)
        _, c, _, given = rows.candidates()
        return (loss_histogram(rows["loss"], est.bounds), cnt.astype(np.int64),
                pos.astype(np.int64), multilabel_confident_counts(y, p, est.confident.thresholds),
                np.bincount(2 * c + given, minlength=2 * k).astype(np.int64))
    if kind == "ml_anchors":
        groups, keys, hits = rows.anchors()
        sel = est.chosen["anchors"]
        value = sel.value[groups]
        below = sel.searched[groups] & (keys < value)
        at = sel.searched[groups] & (keys == value)
        return tuple(np.bincount(groups[mask & hits], minlength=2).astype(np.int64)
                     for mask in (below, at, np.ones(len(groups), bool)))
    if kind == "ml_posterior":
        y, _ = rows.data()
        p_error, sums = posterior_rows(y, rows.q(), est.noise_matrix)
        rows.put("p_error", p_error)
        return exact_group_sums(p_error), sums
    raise ValueError(f"unknown step {kind!r}")


def merge_pair(step: Step, a, b):
    """Merge the partials of two neighbouring runs of partitions (``a`` before ``b``)."""
    kind = step.kind
    if kind == "ml_totals":
        return (a[0] + b[0], a[1] + b[1], a[2].merge(b[2]), a[3] + b[3], min(a[4], b[4]),
                max(a[5], b[5]))
    if kind == "ml_hist":
        return (a[0].merge(b[0]), *(x + y for x, y in zip(a[1:], b[1:])))
    if kind == "ml_anchors":
        return tuple(x + y for x, y in zip(a, b))
    if kind == "ml_posterior":
        return a[0].merge(b[0]), a[1].merge(b[1])
    raise ValueError(f"unknown step {kind!r}")


# ---------------------------------------------------------------- the plan


def _anchor_rate(m: int, cells: int, sel, g: int, hits_below, hits_at, hits_all) -> float:
    """A tail's rate as :class:`~cleanpipe.detect.anchors._LowTail` streams it (via ``tail_rate``)."""
    if m <= 0 or cells == 0:
        return 0.0
    if not sel.searched[g]:  # fewer cells than the tail holds: all of them
        return tail_rate(cells, cells, int(hits_all[g]))
    return tail_rate(m, int(sel.below[g]), int(hits_below[g]), int(sel.equal[g]), int(hits_at[g]))


def multilabel_detection_plan(n_classes: int, *, method: str = DEFAULT_MULTILABEL_METHOD,
                              mixture: str = DEFAULT_MIXTURE,
                              noisy_threshold: float = MULTILABEL_NOISY_THRESHOLD,
                              min_keep: int = 1):
    """The passes of :func:`~cleanpipe.detect.multilabel.detect_multilabel` over partitions.

    A generator in the protocol of :func:`~cleanpipe.detect.partitioned.detection_plan`: it
    yields :class:`~cleanpipe.detect.partitioned.Step` objects, receives each step's merged
    partial and returns the final :class:`MultilabelEstimates`.

    Parameters
    ----------
    n_classes : int
        Tag columns (the same in every partition).
    method, mixture, noisy_threshold, min_keep
        As for :func:`~cleanpipe.detect.multilabel.detect_multilabel`.

    Raises
    ------
    InputError
        The partitions hold no row at all.
    """
    if method not in MULTILABEL_METHODS:
        raise ValueError(f"unknown method {method!r}")
    k = int(n_classes)
    est = MultilabelEstimates(k, method, mixture, float(noisy_threshold), int(min_keep))

    # 1. label counts, threshold sums, few-tags counts, the loss range
    n, pos, sums, tags, loss_min, loss_max = yield Step("ml_totals", est)
    if n == 0:
        raise InputError("labels is empty; there are no rows to check")
    label_counts = np.stack([n - pos, pos], axis=1)
    thresholds = thresholds_from_sums(label_counts, sums.totals().reshape(k, 2))
    limits = few_tags_limits_from_counts(tags, ANCHOR_FEW_TAGS)
    density = np.float64(pos.sum()) / (n * k)  # as the bool matrix's mean
    cap = calibration_cap(tags.sum(axis=0)[:k])
    empty = np.zeros(0)
    cl = MultilabelConfident(thresholds, *(None,) * 4, label_counts, empty, empty,
                             np.zeros((0, k), bool), _EMPTY, _EMPTY, empty, np.zeros(0, bool))
    est = dataclasses.replace(est, n_rows=int(n), confident=cl, tags=tags, limits=limits,
                              density=float(density), cap=cap)

    # 2. the loss mixture's clip bounds, then the histograms (mixture, calibration, joints)
    bounds = yield from loss_bounds(est, n, loss_min, loss_max)
    est = dataclasses.replace(est, bounds=bounds)
    hist, cnt, hits, cj_flat, pair_counts = yield Step("ml_hist", est)
    mix = mixture_from_histogram(hist, bounds, family=mixture)
    calibration = calibration_from_histogram(cap, cnt, hits)
    confident_joint = cj_flat.reshape(k, 2, 2)
    calibrated, prior, noise = multilabel_estimates(label_counts, confident_joint, n)
    cl = dataclasses.replace(cl, confident_joint=confident_joint, calibrated_joint=calibrated,
                             prior=prior, noise_matrix=noise)
    est = dataclasses.replace(est, mix=mix, calibration=calibration, confident=cl)

    # 3. the anchor tails and the noise-rate quotas (radix selection)
    lim0, lim1 = limits
    cells = np.array([tags[:, :lim0 + 1].sum(), tags[:, :lim1 + 1].sum()], np.int64)
    sizes = np.array([anchor_size(int(tags[0, :lim0 + 1].sum())),
                      anchor_size(int(tags[1, :lim1 + 1].sum()))], np.int64)
    wanted = {"anchors": (sizes, cells)}
    plan = {"anchors": (sizes, cells, False)}
    if method in ("noise_rate", "both"):
        quota = prune_quota(cl, min_keep=min_keep).ravel()
        wanted["pairs"] = (quota, pair_counts)
        plan["pairs"] = (quota, pair_counts, True)
    sels = yield from _select(est, wanted)
    chosen = {name: _chosen(sels[name], *plan[name]) for name in sels}
    est = dataclasses.replace(est, chosen=chosen)
    if "pairs" in chosen:  # ties by position: each partition's share of the tied members
        per_part = yield Step("ties", est)
        est = dataclasses.replace(est, chosen=tie_shares(chosen, per_part, plan, sels))

    # 4. the anchor tails' given tags: the noise rates
    hits_below, hits_at, hits_all = yield Step("ml_anchors", est)
    rates = [_anchor_rate(int(sizes[g]), int(cells[g]), sels["anchors"], g, hits_below, hits_at,
                          hits_all) for g in (0, 1)]
    est = dataclasses.replace(est, noise_matrix=noise_from_rates(np.array([rates]), density, k))

    # 5. the flip posteriors: p_error's sum, the expected wrong tags
    total, post_sums = yield Step("ml_posterior", est)
    expected = float(total.totals()[0])
    est = dataclasses.replace(est, expected_wrong=expected_wrong_from_sums(post_sums),
                              expected_issues=expected)
    if method != "posterior":
        return est

    # 6. flag_top_expected: the m-th largest p_error, its ties all or none
    m = expected_count(expected)
    top = None
    if m > 0:
        sels = yield from _select(est, {"top": ([m], [n])})
        sel = sels["top"]
        take = take_tied(m, int(sel.below[0]), int(sel.below[0] + sel.equal[0]))
        top = Chosen(sel.searched, sel.value, np.array([take]), np.zeros(1, bool))
    return dataclasses.replace(est, m=m, top=top)


def partition_result(est: MultilabelEstimates, source: Source, cache: dict | None = None,
                     index: int | None = None) -> PartitionMultilabelDetection:
    """Score and flag one partition's rows under the final estimates of
    :func:`multilabel_detection_plan` (``index``: the partition's position, for ``noise_rate``
    and ``both``, whose ties go by row position)."""
    rows = _TagRows(est, source, cache)
    y, p = rows.data()
    n = len(y)
    p_error = rows["p_error"]
    p_noisy = rows["p_noisy"]
    flags = np.zeros(n, dtype=bool)
    if est.method == "posterior":
        if est.top is not None:
            flags = est.top.picked(*rows.members("top")) & (p_error > 0)
        sel = np.flatnonzero(flags)
        r, c, given = posterior_suspect_cells(y[sel], rows.q()[sel], est.noise_matrix)
        issue = sel[r], c, given
    else:
        r, c, _, given = rows.candidates()
        if est.method in ("noise_rate", "both"):
            cells = est.chosen["pairs"].picked(*rows.members("pairs"), index)
            if est.method == "both":
                cells &= p_noisy[r] >= est.noisy_threshold
        else:  # mixture
            cells = p_noisy[r] >= est.noisy_threshold
        flags[r[cells]] = True
        issue = r[cells], c[cells], given[cells]
    rows_, classes, givens = issue
    return PartitionMultilabelDetection(
        flags, 1.0 - p_error, p_error, p_noisy, rows["loss"], p > 0.5,
        np.asarray(rows_, np.int64), np.asarray(classes, np.int64), np.asarray(givens, bool))


def detect_multilabel_partitions(sources, n_classes: int, *, method: str = DEFAULT_MULTILABEL_METHOD,
                                 mixture: str = DEFAULT_MIXTURE,
                                 noisy_threshold: float = MULTILABEL_NOISY_THRESHOLD,
                                 min_keep: int = 1, cache: bool = True):
    """Detect over partitions in this process: ``(estimates, [PartitionMultilabelDetection per
    partition])``, equal to :func:`~cleanpipe.detect.multilabel.detect_multilabel` on the
    concatenated rows. ``sources``: callables returning one partition's ``(labels, pred_probs)``.

    Examples
    --------
    >>> Y = np.tile([[1, 0], [0, 1]], (10, 1))
    >>> P = np.tile([[.9, .1], [.1, .9]], (10, 1))
    >>> Y[0] = [0, 1]  # row 0's tags were swapped
    >>> parts = [lambda: (Y[:3], P[:3]), lambda: (Y[3:3], P[3:3]), lambda: (Y[3:], P[3:])]
    >>> est, res = detect_multilabel_partitions(parts, 2)
    >>> [np.flatnonzero(r.is_label_issue).tolist() for r in res]
    [[0], [], []]
    >>> res[0].suspects(spurious=False)[1].tolist(), res[0].suspects(spurious=True)[1].tolist()
    ([0], [1])
    """
    plan = multilabel_detection_plan(n_classes, method=method, mixture=mixture,
                                     noisy_threshold=noisy_threshold, min_keep=min_keep)
    return detect_partitions_with(plan, sources, cache=cache)
