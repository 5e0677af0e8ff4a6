"""The single-label detector as passes over partitions, with the in-memory answer for any partitioning.

:func:`~cleanpipe.detect.combine.detect` learns a handful of things from the whole table; each is
either a sum or count (class counts, per-class threshold sums, the confident joint, the anchor
cells, the loss histogram, the null test's moments, the expected-F1 sums) or an order statistic
(the loss percentiles the mixture clips at, each class's anchors, each cell's pruning quota, the
``k`` lowest ``rank_by``). Here each is a *partial* that a partition computes from its own rows and
an associative *merge*; sums are exact (:mod:`~cleanpipe.detect.exactsum`) and order statistics
are found by radix selection (:mod:`~cleanpipe.detect.radix`), so the flags, scores and estimates
are bit-identical to ``detect``'s on the concatenated rows, for every method, whatever the
partition boundaries (empty partitions included).

How to drive it
---------------
The detector is a generator of :class:`Step` objects, :func:`detection_plan`. An engine (in-memory
:class:`LocalRunner`, Dask, Spark) runs each step on every partition, merges the partials, and sends
the merged partial back; when the generator stops, its value is the final :class:`Estimates`, and
each partition's rows are then scored on their own by :func:`partition_result`::

    plan = detection_plan(n_classes, method="combined")
    step = next(plan)
    while True:
        partials = [partition_partial(step, source_i, cache_i) for i in partitions]   # on workers
        merged = merge_partials(step, partials)      # in partition order; any grouping
        try:
            step = plan.send(merged)
        except StopIteration as stop:
            est = stop.value
            break
    results = [partition_result(est, source_i, cache_i, i) for i in partitions]     # on workers

- ``source_i`` is a callable returning ``(labels, pred_probs)`` of partition ``i`` (labels: int
  class indices, shape (n,); pred_probs: (n, n_classes) float32/float64). It is called only by
  the passes that need the probabilities (three), once per call of :func:`partition_partial`.
- ``cache_i`` is a dict the engine keeps per partition between steps, or None: everything is
  then recomputed from ``source_i`` (a pass over the probabilities per step; Spark's
  ``mapInPandas`` works that way). It keeps only what a later pass that does not read the
  probabilities needs (:data:`_KEEP`, per method), each array in the narrowest dtype that holds
  it exactly (:func:`narrowest`), and drops what no later pass reads: with float32
  probabilities, ``combined`` keeps 15-25 bytes a row at its largest (K = 2 to 10; labels 1,
  loss 4, arg-max 1 and its probability 4, the cells' pruning candidates ~14 a cell, then
  ``rank_by`` 8). Any entry may be missing at any step (a restarted worker): it is recomputed,
  bit for bit.
- Partials are tuples, dicts and small dataclasses of numpy arrays: turn them into bytes with
  :func:`~cleanpipe.detect.partial_codec.dumps` to send or store them (a ``bytes`` column of a
  Spark DataFrame, a file for resumption) and back with ``partial_codec.loads``, which never
  unpickles.
- ``merge_partials`` takes the partials in partition order. :func:`merge_pair` merges two
  neighbours; it is associative, so a tree reduction on the workers gives the same merged
  partial; it is commutative too except for the ``"ties"`` step, whose partial is the ordered
  list of its partitions' counts.
- ``Step`` and ``Estimates`` are small frozen dataclasses of numpy arrays: pickle them to the
  workers (broadcast) as they are.
- ``partition_result(est, source, cache, index)`` needs the partition's index in the order used
  for the steps: the methods ``noise_rate``, ``per_class`` and ``both`` break ties between equal
  margins by row position, as the in-memory detector does.

In one process, :func:`detect_partitions` runs all of this (with :class:`LocalRunner`);
:mod:`cleanpipe.partitions` runs it on Dask over a Parquet dataset.

Multi-label data has its own plan in the same protocol,
:func:`~cleanpipe.detect.partitioned_multilabel.multilabel_detection_plan`: its estimates say
``multi_label``, and :func:`partition_partial`, :func:`merge_pair` and :func:`partition_result`
hand such steps to that module, so every engine drives both kinds with the same loop.

Validation: each partition's inputs are checked when first read (:func:`check_partition`);
:func:`detection_plan` raises :class:`~cleanpipe.errors.InputError` if the partitions hold no
row at all.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from ..settings import DEFAULT_METHOD, DEFAULT_MIXTURE, METHODS, default_noisy_threshold
from ._validate import check_labels, check_pred_probs
from .combine import (_LOSS_FLOOR, NULL_EXCESS_Z, combined_count, cross_entropy, dinkelbach_step,
                      noisy_component_present, null_cut, null_exceeded, null_moments,
                      posterior_scores, shifted_rank)
from .confident import (ANCHOR_SHARE, ConfidentLearning, ConfidentRows, _gather_given,
                        calibrate_confident_joint, confident_rows, joint_prior_noise,
                        posterior_noise_matrix, prune_counts, thresholds_from_sums)
from .exactsum import empty_sums, exact_group_sums
from .mixture import (MIN_SPREAD, LossHistogram, LossMixture, loss_histogram,
                      mixture_from_histogram)
from .temperature import block_error_prob, fit_sample, sample_log_probs, temperature_from_sample
from .radix import (Selection, key_values, merge_select, order_keys,
                    percentile_from_order, percentile_ranks, select_partial)

Source = Callable[[], tuple]

#: The loss percentiles the mixture clips at (as :func:`~cleanpipe.detect.mixture.fit_loss_mixture`).
_CLIP = (5.0, 95.0)


@dataclass(frozen=True)
class Chosen:
    """The outcome of a top-``quota`` selection per group, as each partition applies it.

    A member is picked when its key is below ``value`` (order keys: smaller = picked first), or
    equal to it and ``take_ties``; a group that was not searched picks all its members when
    ``all_in`` (quota >= members) and none otherwise. With ties by position, the tied members a
    partition takes are given per partition by ``tie_take`` (set after the ``ties`` step).
    """

    searched: np.ndarray
    value: np.ndarray
    take_ties: np.ndarray
    all_in: np.ndarray
    by_position: bool = False
    tie_take: tuple = ()  # per partition: (groups, how many of their tied members, first first)

    def picked(self, groups: np.ndarray, keys: np.ndarray, index: int | None = None) -> np.ndarray:
        groups = np.asarray(groups, dtype=np.int64)
        v = self.value[groups]
        s = self.searched[groups]
        below = keys < v
        tie = s & (keys == v)
        out = np.where(s, below | (tie & self.take_ties[groups]), self.all_in[groups])
        if self.by_position and index is not None and self.tie_take:
            tg, tn = self.tie_take[index]
            if len(tg):
                quota = np.zeros(len(self.value), np.int64)
                quota[tg] = tn
                rows = np.flatnonzero(tie)
                g = groups[rows]
                order = np.argsort(g, kind="stable")  # by group, then position
                sg = g[order]
                rank = np.arange(len(sg)) - np.searchsorted(sg, sg, side="left")
                out[rows[order]] |= rank < quota[sg]
        return out


@dataclass(frozen=True)
class Estimates:
    """What the passes have learnt so far about the whole table (small; shipped with every step)."""

    n_classes: int
    method: str
    mixture: str
    noisy_threshold: float
    n_rows: int = 0
    label_counts: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    bounds: tuple | None = None
    mix: LossMixture | None = None
    calibrated_joint: np.ndarray | None = None
    t_matrix: np.ndarray | None = None
    temperature: float | None = None
    cut: float | None = None
    chosen: dict = field(default_factory=dict)
    rank: Chosen | None = None
    confident: ConfidentLearning | None = None
    k: int | None = None
    #: Multi-label estimates (:mod:`~cleanpipe.detect.partitioned_multilabel`) say True.
    multi_label = False


@dataclass(frozen=True)
class Step:
    """One pass over every partition: ``kind`` says what :func:`partition_partial` computes."""

    kind: str
    est: Estimates
    requests: dict = field(default_factory=dict)
    f1_threshold: float = 0.0


@dataclass(frozen=True)
class PartitionDetection:
    """One partition's rows, scored: the per-row fields of :class:`~cleanpipe.detect.combine.Detection`."""

    is_label_issue: np.ndarray
    label_score: np.ndarray
    p_noisy: np.ndarray
    predicted: np.ndarray
    loss: np.ndarray


# ---------------------------------------------------------------- per-partition rows


def _partition_probs(pred_probs, n_classes: int) -> np.ndarray:
    """One partition's probabilities as an array, checked to have ``n_classes`` columns (the
    shape check of :func:`check_partition` and of the multi-label
    :func:`~cleanpipe.detect.partitioned_multilabel.check_tag_partition`)."""
    pred_probs = np.asarray(pred_probs)
    if pred_probs.ndim != 2 or pred_probs.shape[1] != n_classes:
        raise InputError(f"pred_probs has shape {pred_probs.shape}; every partition needs "
                         f"{n_classes} probability columns, one per class")
    return pred_probs


def _float_probs(pred_probs: np.ndarray) -> np.ndarray:
    """Checked probabilities as floats: float32 and float64 kept, anything else as float64."""
    if pred_probs.dtype not in (np.float32, np.float64):
        return pred_probs.astype(np.float64)
    return pred_probs


def check_partition(labels, pred_probs, n_classes: int):
    """Validate one partition's inputs (an empty partition is fine); return them as arrays."""
    pred_probs = _partition_probs(pred_probs, n_classes)
    labels = np.asarray(labels)
    if len(labels) == 0:
        if pred_probs.shape[0]:
            raise InputError(f"pred_probs has {pred_probs.shape[0]} rows but labels has 0")
        return labels.astype(np.int64), pred_probs
    labels = check_labels(labels, n_classes)
    check_pred_probs(pred_probs, len(labels))
    return labels, _float_probs(pred_probs)


def narrowest(values: np.ndarray) -> np.ndarray:
    """``values`` in the narrowest dtype that holds every one of them exactly.

    Integers go to the smallest of int8, int16, int32 (uint8, uint16, uint32 if unsigned) that
    holds their range, when narrower than theirs; float64 goes
    to float32 when every value survives the round trip bit for bit (a value read from float32
    probabilities does); anything else is returned as it is. ``narrowest(v).astype(v.dtype)``
    equals ``v`` bit for bit: what a partition's cache keeps (:func:`widened` undoes it).

    Examples
    --------
    >>> narrowest(np.array([0, 9, 3])).dtype, narrowest(np.array([-1, 40000])).dtype
    (dtype('int8'), dtype('int32'))
    >>> narrowest(np.array([0.5, 0.25])).dtype, narrowest(np.array([0.1])).dtype
    (dtype('float32'), dtype('float64'))
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        ladder = ((np.uint8, np.uint16, np.uint32) if values.dtype.kind == "u"
                  else (np.int8, np.int16, np.int32))
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        for dtype in ladder:
            info = np.iinfo(dtype)
            if info.bits < 8 * values.dtype.itemsize and info.min <= lo and hi <= info.max:
                return values.astype(dtype)
        return values
    if values.dtype == np.float64:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            narrow = values.astype(np.float32)
        back = narrow.astype(np.float64)
        # the bits, so that -0.0, tiny values and NaN payloads survive too
        if np.array_equal(back.view(np.uint64), values.view(np.uint64)):
            return narrow
    return values


def widened(kept: tuple) -> np.ndarray:
    """The array a cache entry ``(narrowest(v), v.dtype)`` was made from, bit for bit."""
    values, dtype = kept
    return values.astype(dtype, copy=False)


#: What a partition keeps between passes, per method (single-label): everything else is
#: recomputed in the pass that needs it, from the partition's probabilities (the passes that read
#: them anyway: totals, confident, quality, the first of the top-``k`` cut's, the results) or
#: from what is kept (``p_noisy`` from ``loss``).
_KEEP_ALWAYS = ("labels", "loss", "predicted", "p_predicted")
_KEEP = {
    "combined": _KEEP_ALWAYS + ("cell_rows", "cell_keys", "cell_margin", "pruned", "error_disagree",
                                "rank_by"),
    "noise_rate": _KEEP_ALWAYS + ("pair_rows", "pair_true", "pair_margin"),
    "both": _KEEP_ALWAYS + ("pair_rows", "pair_true", "pair_margin", "p_given"),
    "per_class": _KEEP_ALWAYS + ("p_given",),
    "mixture": _KEEP_ALWAYS,
}
#: Entries no later pass reads, dropped when a step of this kind starts: the anchors and the
#: cells' pruning candidates once ``pruned`` is known, the disagreeing rows' error
#: probabilities once the top-``k`` cut's selection starts (the expected-F1 passes are over).
_DROP = {"anchors": ("p_predicted", "cell_rows", "cell_keys", "cell_margin"),
         "rank": ("error_disagree",)}
_CONF = ("predicted", "p_predicted", "pair_rows", "pair_true", "pair_margin", "cell_rows",
         "cell_keys", "cell_margin")


class _Kept:
    """One partition's per-row arrays for one step, computed on demand (``_<name>`` methods).

    What later steps read (the names in ``keep``) is kept in ``cache``, narrowed by
    :func:`narrowest`; the rest lives for this step only and is recomputed, bit for bit, by the
    step that needs it. With ``cache=None`` every step recomputes everything it reads.
    """

    def __init__(self, est, source: Source, cache: dict | None, keep: tuple):
        self.est = est
        self.source = source
        self.c = cache
        self.v = {}
        self._data = None
        self.keep = keep

    def __getitem__(self, name):
        if name not in self.v:
            if self.c is not None and name in self.c:
                self.v[name] = widened(self.c[name])
            else:
                getattr(self, "_" + name)()
        return self.v[name]

    def put(self, name, value):
        self.v[name] = value
        if self.c is not None and name in self.keep and name not in self.c:
            self.c[name] = (narrowest(value), value.dtype)

    def drop(self, names):
        for name in names:
            if self.c is not None:
                self.c.pop(name, None)

    def _p_noisy(self):
        self.put("p_noisy", self.est.mix.p_noisy(self["loss"]))


class _Rows(_Kept):
    """A single-label partition's per-row arrays (kept: :data:`_KEEP`)."""

    def __init__(self, est: Estimates, source: Source, cache: dict | None):
        super().__init__(est, source, cache, _KEEP[est.method])

    def data(self):
        if self._data is None:
            self._data = check_partition(*self.source(), self.est.n_classes)
        return self._data

    def _labels(self):
        labels, pred = self.data()
        p_given = _gather_given(labels, pred, None)
        self.put("labels", labels)
        self.put("p_given", p_given)
        self.put("loss", cross_entropy(p_given))

    _p_given = _loss = _labels

    def _conf(self):
        labels, pred = self.data()
        if not len(labels):
            k = self.est.n_classes
            z, zi = np.zeros(0), np.zeros(0, np.int64)
            conf = ConfidentRows(np.zeros(k * k, np.int64), z, zi, z, zi, zi, z, zi, zi, z)
        else:
            conf = confident_rows(labels, pred, self.est.thresholds, p_given=self["p_given"])
        self.v["conf"] = conf
        for name in _CONF:
            self.put(name, getattr(conf, name))

    _predicted = _p_predicted = _pair_rows = _pair_true = _pair_margin = _conf
    _cell_rows = _cell_keys = _cell_margin = _conf

    def _score(self):
        labels, pred = self.data()
        self.put("score", posterior_scores(labels, pred, self.est.t_matrix, self["p_given"]))

    def _error_prob(self):
        labels, pred = self.data()
        t = self.est.t_matrix
        self.put("error_prob", block_error_prob(labels, pred, t, np.linalg.inv(t).T, self.est.temperature)
                 if len(labels) else np.zeros(0))

    def _error_disagree(self):
        self.put("error_disagree", self["error_prob"][self["predicted"] != self["labels"]])

    def _pruned(self):
        picked = self.est.chosen["cells"].picked(self["cell_keys"],
                                                 order_keys(self["cell_margin"], descending=True))
        pruned = np.zeros(len(self["labels"]), dtype=bool)
        pruned[self["cell_rows"][picked]] = True
        self.put("pruned", pruned & (self["predicted"] != self["labels"]))

    def _rank_by(self):
        self.put("rank_by", shifted_rank(self["score"], self["pruned"], self.est.calibrated_joint,
                                         self["labels"], self["predicted"]))

    # selections: (groups, order keys) of the members
    def members(self, name):
        k = self.est.n_classes
        if name.startswith("loss"):
            loss = self["loss"]
            return np.zeros(len(loss), np.int64), order_keys(loss)
        if name == "rank":
            r = self["rank_by"]
            return np.zeros(len(r), np.int64), order_keys(r)
        if name == "classes":
            return self["labels"], order_keys(-self["p_given"], descending=True)
        if name == "anchors":
            return self["predicted"], order_keys(self["p_predicted"], descending=True)
        if name == "cells":
            return self["cell_keys"], order_keys(self["cell_margin"], descending=True)
        if name == "pairs":
            groups = self["labels"][self["pair_rows"]] * k + self["pair_true"]
            return groups, order_keys(self["pair_margin"], descending=True)
        raise ValueError(f"unknown selection {name!r}")


# ---------------------------------------------------------------- partials and merges


def partition_partial(step: Step, source: Source, cache: dict | None = None):
    """What one partition contributes to ``step`` (run on the worker that holds the partition)."""
    if step.est.multi_label:
        from . import partitioned_multilabel
        return partitioned_multilabel.partition_partial(step, source, cache)
    rows = _Rows(step.est, source, cache)
    est = step.est
    kind = step.kind
    if kind == "totals":
        labels, p_given, loss = rows["labels"], rows["p_given"], rows["loss"]
        k = est.n_classes
        lo = float(loss.min()) if len(loss) else np.inf
        hi = float(loss.max()) if len(loss) else -np.inf
        return (len(labels), np.bincount(labels, minlength=k),
                exact_group_sums(p_given, labels, k), lo, hi)
    if kind == "select":
        if "rank" in step.requests:
            rows.drop(_DROP["rank"])
        return {name: select_partial(req, *rows.members(name)) for name, req in step.requests.items()}
    if kind == "hist":
        return loss_histogram(rows["loss"], est.bounds)
    if kind == "confident":
        conf, labels = rows["conf"], rows["labels"]
        k = est.n_classes
        sample = None
        if est.method == "combined":
            # the temperature fit's rows (a hash of each row's values picks them)
            rows_in = np.flatnonzero(fit_sample(labels, rows["p_given"], est.n_rows, k))
            sample = sample_log_probs(labels, rows.data()[1], rows_in)
        return (conf.confident_counts.astype(np.int64), np.bincount(conf.predicted, minlength=k),
                np.bincount(conf.cell_keys, minlength=k * k),
                np.bincount(labels[conf.pair_rows] * k + conf.pair_true, minlength=k * k), sample)
    if kind == "ties":
        return tie_counts(est.chosen, rows.members)
    if kind == "anchors":
        labels = rows["labels"]
        k = est.n_classes
        picked = est.chosen["anchors"].picked(*rows.members("anchors"))
        flat = labels[picked] * k + rows["predicted"][picked]
        n_pruned = int(np.count_nonzero(rows["pruned"])) if "cells" in est.chosen else 0
        rows.drop(_DROP["anchors"])
        return np.bincount(flat, minlength=k * k), n_pruned
    if kind == "quality":
        labels = rows["labels"]
        observed = int(np.count_nonzero(rows["p_noisy"] > est.noisy_threshold))
        null = empty_sums(2)
        if est.cut is not None and est.cut > _LOSS_FLOOR and len(labels):
            null = null_moments(rows.data()[1], est.cut)
        if est.method != "combined":  # only its count reads the error probabilities
            return null, observed, empty_sums(), empty_sums()
        q = rows["error_prob"]
        return null, observed, exact_group_sums(rows["error_disagree"]), exact_group_sums(q)
    if kind == "f1":
        q = rows["error_disagree"]
        taken = q[q > step.f1_threshold]
        return len(taken), exact_group_sums(taken)
    raise ValueError(f"unknown step {kind!r}")


def merge_pair(step: Step, a, b):
    """Merge the partials of two neighbouring runs of partitions (``a`` before ``b``)."""
    kind = step.kind
    if step.est.multi_label and kind not in ("select", "ties"):
        from . import partitioned_multilabel
        return partitioned_multilabel.merge_pair(step, a, b)
    if kind == "totals":
        return (a[0] + b[0], a[1] + b[1], a[2].merge(b[2]), min(a[3], b[3]), max(a[4], b[4]))
    if kind == "select":
        return {name: merge_select(a[name], b[name]) for name in a}
    if kind == "hist":
        return a.merge(b)
    if kind == "confident":
        sample = None if a[4] is None else tuple(np.concatenate([x, y]) for x, y in zip(a[4], b[4]))
        return (*(x + y for x, y in zip(a[:4], b[:4])), sample)
    if kind == "ties":
        return a + b
    if kind == "anchors":
        return a[0] + b[0], a[1] + b[1]
    if kind == "quality":
        return a[0].merge(b[0]), a[1] + b[1], a[2].merge(b[2]), a[3].merge(b[3])
    if kind == "f1":
        return a[0] + b[0], a[1].merge(b[1])
    raise ValueError(f"unknown step {kind!r}")


def merge_tree(merge: Callable, partials):
    """Partials in partition order merged pairwise, neighbours first, in a balanced tree.

    The one reduction of every engine: in this process (:func:`merge_partials`,
    ``LocalEngine.reduce``, Spark's driver) and on a cluster, where ``merge`` submits a task and
    returns its future (``DaskEngine.reduce_handle``). ``merge(a, b)`` gets ``a`` before ``b``;
    for an associative merge the result is the left fold's, in ``log2 P`` rounds, so a merge
    whose cost grows with its inputs (a sample re-sorted, a histogram grown) does not redo the
    growing result ``P`` times.

    Parameters
    ----------
    merge : callable
        ``merge(a, b) -> partial``, associative.
    partials : iterable
        At least one partial.

    Examples
    --------
    >>> merge_tree(lambda a, b: f"({a}{b})", "abcde")
    '(((ab)(cd))e)'
    """
    level = list(partials)
    if not level:
        raise ValueError("merge_tree needs at least one partial")
    while len(level) > 1:
        level = [merge(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def merge_partials(step: Step, partials):
    """All partitions' partials of ``step``, in partition order, merged into one
    (:func:`merge_tree`)."""
    return merge_tree(functools.partial(merge_pair, step), partials)


# ---------------------------------------------------------------- the plan


def _chosen(sel: Selection, quota: np.ndarray, counts: np.ndarray, by_position: bool) -> Chosen:
    # all-or-none: the tied members are taken when they all fit; by position, per partition
    take_ties = (sel.below + sel.equal <= quota) & (not by_position)
    return Chosen(sel.searched, sel.value, take_ties, quota >= counts, by_position=by_position)


def _select(est: Estimates, wanted: dict):
    """Run several selections to the end, one pass for all: ``{name: (ranks, counts)}``."""
    sels = {name: Selection(r, c) for name, (r, c) in wanted.items()}
    while True:
        reqs = {name: s.request() for name, s in sels.items()}
        reqs = {name: r for name, r in reqs.items() if r is not None}
        if not reqs:
            return sels
        merged = yield Step("select", est, reqs)
        for name, req in reqs.items():
            sels[name].absorb(req, merged[name])


def loss_bounds(est, n: int, loss_min: float, loss_max: float):
    """The ``(lo, hi)`` clip bounds of the loss mixture over partitions (a sub-plan: ``yield from``).

    The loss percentiles :func:`~cleanpipe.detect.mixture.fit_loss_mixture` clips at, by radix
    selection of their order statistics (members ``"loss<rank>"``), bit-identical to
    ``np.percentile``; the range ``[loss_min, loss_max]`` when most losses are equal.
    """
    ranks = sorted({r for q in _CLIP for r in percentile_ranks(n, q)})
    sels = yield from _select(est, {f"loss{r}": ([r + 1], [n]) for r in ranks})

    def order_stat(i):
        return float(key_values(sels[f"loss{i}"].value[:1])[0])

    lo, hi = (percentile_from_order(n, q, order_stat) for q in _CLIP)
    if hi - lo < MIN_SPREAD:
        lo, hi = loss_min, loss_max  # as mixture._loss_bounds: most losses are equal
    return (float(lo), float(hi))


def tie_counts(chosen: dict, members: Callable) -> list:
    """One partition's ``"ties"`` partial: per by-position selection, its members tied at the
    boundary per group (``members(name) -> (groups, keys)``)."""
    out = {}
    for name, c in chosen.items():
        if c.by_position:
            groups, keys = members(name)
            tie = c.searched[groups] & (keys == c.value[groups])
            out[name] = np.bincount(groups[tie], minlength=len(c.value))
    return [out]


def tie_shares(chosen: dict, per_part: list, plan: dict, sels: dict) -> dict:
    """``chosen`` with each by-position selection's tied members shared out over the partitions,
    earlier partitions first (from the merged ``"ties"`` partials, in partition order)."""
    chosen = dict(chosen)
    for name, c in list(chosen.items()):
        if not c.by_position:
            continue
        q = plan[name][0]
        take = np.where(c.searched, q - sels[name].below, 0)
        counts = np.array([p[name] for p in per_part]).reshape(len(per_part), -1)
        before = np.cumsum(counts, axis=0) - counts
        share = np.clip(take[None, :] - before, 0, counts)
        tie_take = tuple((np.flatnonzero(s), s[s > 0]) for s in share)
        chosen[name] = dataclasses.replace(c, tie_take=tie_take)
    return chosen


def detection_plan(n_classes: int, *, method: str = DEFAULT_METHOD, mixture: str = DEFAULT_MIXTURE,
                   noisy_threshold: float | None = None):
    """The passes of :func:`~cleanpipe.detect.combine.detect` over partitions (a generator).

    Yields :class:`Step` objects and receives each step's merged partial; returns the final
    :class:`Estimates` (see the module docstring for the loop that drives it).

    Parameters
    ----------
    n_classes : int
        Columns of ``pred_probs`` (the same in every partition).
    method, mixture, noisy_threshold
        As for :func:`~cleanpipe.detect.combine.detect`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    if noisy_threshold is None:
        noisy_threshold = default_noisy_threshold(method)
    k = int(n_classes)
    est = Estimates(k, method, mixture, float(noisy_threshold))

    # 1. class counts, threshold sums, the loss range
    n, label_counts, sums, loss_min, loss_max = yield Step("totals", est)
    if n == 0:
        raise InputError("labels is empty; there are no rows to check")
    est = dataclasses.replace(est, n_rows=int(n), label_counts=label_counts,
                              thresholds=thresholds_from_sums(label_counts, sums.totals()))

    # 2. the loss percentiles the mixture clips at, then its histogram and fit
    bounds = yield from loss_bounds(est, n, loss_min, loss_max)
    est = dataclasses.replace(est, bounds=bounds)
    hist: LossHistogram = yield Step("hist", est)
    mix = mixture_from_histogram(hist, bounds, family=mixture)
    est = dataclasses.replace(est, mix=mix)

    # 3. the confident joint and the candidates' counts
    cj, pred_counts, cell_counts, pair_counts, sample = yield Step("confident", est)
    confident_joint = cj.reshape(k, k)
    calibrated = calibrate_confident_joint(confident_joint, label_counts)
    joint, prior, noise = joint_prior_noise(calibrated)
    empty = np.zeros(0)
    cl = ConfidentLearning(est.thresholds, confident_joint, calibrated, joint, prior, noise,
                           label_counts, empty, empty.astype(np.int64), np.zeros((k, k), np.int64),
                           *(empty,) * 6)
    quota = prune_counts(cl)
    anchor_quota = np.ceil(ANCHOR_SHARE * pred_counts).astype(np.int64)
    wanted = {"anchors": (anchor_quota, pred_counts)}
    plan = {"anchors": (anchor_quota, pred_counts, False)}
    if method == "combined":
        wanted["cells"] = (quota.ravel(), cell_counts)
        plan["cells"] = (quota.ravel(), cell_counts, False)
    if method in ("noise_rate", "both"):
        wanted["pairs"] = (quota.ravel(), pair_counts)
        plan["pairs"] = (quota.ravel(), pair_counts, True)
    if method in ("per_class", "both"):
        wanted["classes"] = (quota.sum(axis=1), label_counts)
        plan["classes"] = (quota.sum(axis=1), label_counts, True)
    temperature = None
    if sample is not None:
        # as fit_temperature: 1 when the labels hold one class only
        temperature = (1.0 if k < 2 or np.count_nonzero(label_counts) < 2
                       else temperature_from_sample(*sample))
    est = dataclasses.replace(est, calibrated_joint=calibrated, temperature=temperature)
    sels = yield from _select(est, wanted)
    chosen = {name: _chosen(sels[name], *plan[name]) for name in sels}
    est = dataclasses.replace(est, chosen=chosen)

    # 4. ties by position: each partition's share of every boundary's tied members
    if any(c.by_position for c in chosen.values()):
        per_part = yield Step("ties", est)
        est = dataclasses.replace(est, chosen=tie_shares(chosen, per_part, plan, sels))

    # 5. the anchor joint, the noise matrix label_score conditions on
    anchors, n_pruned = yield Step("anchors", est)
    anchor = anchors.reshape(k, k)
    t, _ = posterior_noise_matrix(calibrated, pattern_joint=anchor)
    cut = null_cut(mix, est.noisy_threshold) if mix.fit is not None else None
    cl = dataclasses.replace(cl, anchor_joint=anchor)
    est = dataclasses.replace(est, t_matrix=t, cut=cut, confident=cl)

    # 6. label_score, the null test, the expected-F1 count
    null, observed, q_sums, q_all = yield Step("quality", est)
    if method != "combined":
        return est
    counts = False
    if noisy_component_present(mix):
        if cut <= _LOSS_FLOOR:
            counts = observed > NULL_EXCESS_Z
        else:
            mean, var = null.totals()
            counts = null_exceeded(observed, mean, var)
    eligible_total = float(q_sums.totals()[0])
    total = max(float(q_all.totals()[0]), eligible_total)
    k0 = 0
    if eligible_total > 0:
        threshold = 0.0
        while True:
            n_taken, taken = yield Step("f1", est, f1_threshold=threshold)
            ratio, done = dinkelbach_step(threshold, n_taken, float(taken.totals()[0]), total)
            if done:
                k0 = n_taken
                break
            threshold = ratio
    if counts:
        k0 = max(k0, observed)
    k_flag = combined_count(k0, n_pruned)

    # 7. the k lowest rank_by
    rank = None
    if 0 < k_flag < n:
        sels = yield from _select(est, {"rank": ([k_flag], [n])})
        rank = _chosen(sels["rank"], np.array([k_flag]), np.array([n]), False)
    elif k_flag >= n:
        rank = Chosen(np.zeros(1, bool), np.zeros(1, np.uint64), np.zeros(1, bool), np.ones(1, bool))
    return dataclasses.replace(est, rank=rank, k=int(k_flag))


def partition_result(est: Estimates, source: Source, cache: dict | None = None,
                     index: int | None = None) -> PartitionDetection:
    """Score and flag one partition's rows under the final estimates of :func:`detection_plan`.

    ``index`` is the partition's position in the order the steps saw (needed by ``noise_rate``,
    ``per_class`` and ``both``, whose ties go by row position).
    """
    if est.multi_label:
        from . import partitioned_multilabel
        return partitioned_multilabel.partition_result(est, source, cache, index)
    rows = _Rows(est, source, cache)
    labels = rows["labels"]
    predicted = rows["predicted"]
    disagrees = predicted != labels
    p_noisy = rows["p_noisy"]
    n = len(labels)
    if est.method == "combined":
        flags = np.zeros(n, dtype=bool)
        if est.rank is not None:
            flags = est.rank.picked(np.zeros(n, np.int64), order_keys(rows["rank_by"]))
        flags &= disagrees
    elif est.method == "mixture":
        flags = (p_noisy > est.noisy_threshold) & disagrees
    else:
        flags = np.ones(n, dtype=bool)
        if est.method in ("noise_rate", "both"):
            picked = est.chosen["pairs"].picked(*rows.members("pairs"), index)
            by_pair = np.zeros(n, dtype=bool)
            by_pair[rows["pair_rows"][picked]] = True
            flags &= by_pair
        if est.method in ("per_class", "both"):
            flags &= est.chosen["classes"].picked(*rows.members("classes"), index) & disagrees
    return PartitionDetection(flags, rows["score"], p_noisy, predicted, rows["loss"])


# ---------------------------------------------------------------- an in-memory engine


class LocalRunner:
    """Runs a plan's steps over partitions in this process, keeping each partition's cache.

    The reference engine (and the tests'): Dask's and Spark's do the same on workers.
    """

    def __init__(self, sources, *, cache: bool = True):
        self.sources = list(sources)
        self.caches = [{} if cache else None for _ in self.sources]

    def merged(self, step: Step):
        merged = None
        for src, cache in zip(self.sources, self.caches):
            part = partition_partial(step, src, cache)
            merged = part if merged is None else merge_pair(step, merged, part)
        return merged

    def results(self, est: Estimates):
        return [partition_result(est, src, cache, i)
                for i, (src, cache) in enumerate(zip(self.sources, self.caches))]


def run_plan(plan, merged: Callable):
    """Drive a plan generator to its end and return its value.

    ``merged(step)`` runs ``step`` on every partition and returns the merged partial.
    """
    step = next(plan)
    while True:
        try:
            step = plan.send(merged(step))
        except StopIteration as stop:
            return stop.value


def detect_partitions(sources, n_classes: int, *, method: str = DEFAULT_METHOD,
                      mixture: str = DEFAULT_MIXTURE, noisy_threshold: float | None = None,
                      cache: bool = True):
    """Detect over partitions in this process: ``(estimates, [PartitionDetection per partition])``.

    ``sources``: callables returning one partition's ``(labels, pred_probs)``. The result equals
    :func:`~cleanpipe.detect.combine.detect` on the concatenated rows, partition by partition.
    """
    return detect_partitions_with(detection_plan(n_classes, method=method, mixture=mixture,
                                                 noisy_threshold=noisy_threshold), sources, cache=cache)


def detect_partitions_with(plan, sources, *, cache: bool = True):
    """Run ``plan`` (single- or multi-label) over ``sources`` in this process with a
    :class:`LocalRunner`: ``(estimates, [result per partition])``."""
    runner = LocalRunner(sources, cache=cache)
    est = run_plan(plan, runner.merged)
    return est, runner.results(est)
