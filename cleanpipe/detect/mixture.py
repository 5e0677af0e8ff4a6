"""Two-component mixtures fitted by EM to per-row losses; the posterior of the high-loss component.

Rows whose label is wrong tend to have a high loss under an out-of-fold model (or under the model
being trained). Fitting a two-component mixture to the normalised losses separates a "clean" and a
"noisy" population; ``p_noisy`` is each row's posterior of the component with the higher mean.

The EM runs on a fine histogram of the normalised losses (counts as weights) once ``N`` is large,
so a fit costs the same for ten thousand or ten million rows. The posterior is read off a grid made
monotone by isotonic regression, so a larger loss is never less suspect.

References
----------
Arazo, Ortego, Albert, O'Connor & McGuinness, "Unsupervised Label Noise Modeling and Loss
Correction", ICML 2019 (Beta mixture with weighted method of moments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaln
from sklearn.isotonic import isotonic_regression

from ._validate import row_chunks

#: Normalised losses are kept this far from 0 and 1 (the Beta log-density is infinite there).
EPS = 1e-4
#: Below this many rows, or this spread of losses, no mixture is fitted and ``p_noisy`` is 0.
MIN_ROWS = 8
MIN_SPREAD = 1e-9
_HIST_BINS = 2048
_GRID = 1024
#: Bins of the loss histogram kept in the summary (for the report); divides ``_HIST_BINS``.
_SUMMARY_BINS = 64


def _dyadic_histogram(x: np.ndarray, bins: int) -> np.ndarray:
    """Counts of ``x`` (in [0, 1]) in ``bins`` equal bins, ``bins`` a power of two.

    ``x * bins`` is exact for a power of two, so the floor is the bin ``np.histogram`` would
    choose with the same edges (the last bin closed), at the cost of one multiply and a bincount.
    """
    idx = (x * bins).astype(np.int32)
    return np.bincount(np.minimum(idx, bins - 1, out=idx), minlength=bins)


@dataclass(frozen=True)
class MixtureFit:
    """A fitted two-component mixture on (0, 1).

    Attributes
    ----------
    family : {"beta", "gaussian"}
    weights : ndarray of shape (2,)
        Mixing proportions.
    params : ndarray of shape (2, 2)
        Per component ``(alpha, beta)`` for a Beta, ``(mean, std)`` for a Gaussian.
    noisy : int
        Index of the component with the higher mean.
    log_likelihood : ndarray
        Mean log-likelihood per row after each EM iteration.
    converged : bool
    """

    family: str
    weights: np.ndarray
    params: np.ndarray
    noisy: int
    log_likelihood: np.ndarray
    converged: bool

    @property
    def means(self) -> np.ndarray:
        if self.family == "beta":
            return self.params[:, 0] / self.params.sum(axis=1)
        return self.params[:, 0].copy()

    def component_log_pdf(self, x: np.ndarray) -> np.ndarray:
        """``log f_k(x)`` for both components, shape ``(len(x), 2)``."""
        return _log_pdf(self.family, np.asarray(x, dtype=np.float64), self.params).T

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Raw posterior of the noisy component at normalised losses ``x`` (not made monotone)."""
        log_pdf = _log_pdf(self.family, np.asarray(x, dtype=np.float64), self.params)
        return _responsibilities(log_pdf, self.weights)[0][self.noisy]

    def to_dict(self) -> dict:
        return {"family": self.family, "weights": self.weights.tolist(),
                "params": self.params.tolist(), "noisy_component": int(self.noisy),
                "means": self.means.tolist(), "iterations": int(len(self.log_likelihood)),
                "converged": bool(self.converged)}


# The EM works components-first: arrays of shape (2, n), so every step runs over contiguous rows.

def _beta_design(x: np.ndarray) -> np.ndarray:
    """``[log x; log(1 - x)]``, shape (2, n): the Beta log-density is ``[a - 1, b - 1]`` times it."""
    return np.stack([np.log(x), np.log1p(-x)])


def _log_pdf(family: str, x: np.ndarray, params: np.ndarray, design=None) -> np.ndarray:
    """Log-density of each component at ``x``, shape (2, n); ``design`` from :func:`_beta_design`."""
    a, b = params[:, 0], params[:, 1]
    if family == "beta":
        design = _beta_design(x) if design is None else design
        out = (params - 1.0) @ design
        out -= betaln(a, b)[:, None]
        return out
    z = (x[None, :] - a[:, None]) / b[:, None]
    return -0.5 * z * z - (np.log(b) + 0.5 * np.log(2 * np.pi))[:, None]


def _responsibilities(log_pdf: np.ndarray, weights: np.ndarray):
    """Posterior of each component per point, shape (2, n), and the log-normaliser per point."""
    joint = log_pdf + np.log(np.maximum(weights, 1e-300))[:, None]
    # An element-wise logaddexp of the two rows: scipy's logsumexp (its checks) or a reduce along
    # a length-2 axis costs several times more per EM step.
    norm = np.logaddexp(joint[0], joint[1])
    joint -= norm
    return np.exp(joint, out=joint), norm


def _clip(value: float, lo: float, hi: float) -> float:
    return min(max(value, lo), hi)


def _m_step(family: str, x: np.ndarray, resp: np.ndarray, counts: np.ndarray) -> np.ndarray:
    params = np.empty((2, 2))
    w = resp * counts  # (2, n): each component's weight per point
    totals = np.maximum(w.sum(axis=1), 1e-300)
    means = (w @ x) / totals
    dev = x - means[:, None]
    dev *= dev
    variances = np.einsum("ij,ij->i", w, dev) / totals
    for c in range(2):
        mean = _clip(float(means[c]), EPS, 1 - EPS)
        var = float(variances[c])
        if family == "beta":
            # Weighted method of moments (Arazo et al. 2019); the variance must stay below
            # mean * (1 - mean) for a valid Beta, and above 0 for a finite one.
            var = _clip(var, 1e-8, mean * (1 - mean) * (1 - 1e-6))
            common = mean * (1 - mean) / var - 1
            params[c] = [_clip(mean * common, 1e-3, 1e5), _clip((1 - mean) * common, 1e-3, 1e5)]
        else:
            params[c] = [mean, np.sqrt(max(var, 1e-8))]
    if family == "beta":
        # Keep the low-loss component's density finite at 1 (beta >= 1) and the high-loss one's
        # finite at 0 (alpha >= 1), keeping each mean: otherwise a J-shaped "clean" fit to a spike
        # of near-zero losses also claims the highest losses, and the posterior turns down there.
        lo, hi = np.argsort(params[:, 0] / params.sum(axis=1))
        for c, side in ((lo, 1), (hi, 0)):
            if params[c, side] < 1.0:
                mean = params[c, 0] / params[c].sum()
                params[c, side] = 1.0
                params[c, 1 - side] = (mean / (1 - mean)) if side == 1 else ((1 - mean) / mean)
    return params


def fit_mixture(x: np.ndarray, *, family: str = "beta", sample_weight: np.ndarray | None = None,
                max_iter: int = 200, tol: float = 1e-7) -> MixtureFit:
    """Fit a two-component Beta or Gaussian mixture to values in (0, 1) by EM.

    Parameters
    ----------
    x : ndarray of shape (n,)
        Values strictly inside (0, 1), e.g. from :func:`normalise_losses`.
    family : {"beta", "gaussian"}, default="beta"
    sample_weight : ndarray of shape (n,), optional
        Non-negative weights (histogram counts, say).
    max_iter : int, default=200
    tol : float, default=1e-7
        Stop when the mean log-likelihood improves by less than this.

    Returns
    -------
    MixtureFit

    Notes
    -----
    Initialisation follows Arazo et al.: a low-loss component ``Beta(1, 2)`` and a high-loss
    component ``Beta(2, 1)`` (for the Gaussian, means 0.25/0.75 with std 0.2), equal weights. The E
    step computes responsibilities ``r_nk ∝ π_k f_k(x_n)``; the M step sets ``π_k = mean_n r_nk``
    and the component parameters from the ``r``-weighted mean and variance (method of moments for
    the Beta, maximum likelihood for the Gaussian).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.beta(2, 8, 4000), rng.beta(8, 2, 1000)])
    >>> fit = fit_mixture(x)
    >>> round(float(fit.weights[fit.noisy]), 1)
    0.2
    """
    x = np.clip(np.asarray(x, dtype=np.float64), EPS, 1 - EPS)
    counts = np.ones_like(x) if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = counts.sum()
    if family == "beta":
        params = np.array([[1.0, 2.0], [2.0, 1.0]])
    elif family == "gaussian":
        params = np.array([[0.25, 0.2], [0.75, 0.2]])
    else:
        raise ValueError(f"unknown mixture family {family!r}; use 'beta' or 'gaussian'")
    design = _beta_design(x) if family == "beta" else None  # fixed across iterations
    weights = np.array([0.5, 0.5])
    history: list[float] = []
    converged = False
    best = (-np.inf, weights, params)
    for _ in range(max_iter):
        resp, norm = _responsibilities(_log_pdf(family, x, params, design), weights)
        history.append(float(counts @ norm / total))
        if history[-1] > best[0]:
            best = (history[-1], weights, params)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
        weights = np.clip((resp @ counts) / total, 1e-6, 1.0)
        weights /= weights.sum()
        params = _m_step(family, x, resp, counts)
    # The method-of-moments M step is not an exact maximisation, so the iterates can cycle; the
    # state with the highest likelihood seen is kept (for an exact EM that is the last one).
    _, weights, params = best
    fit = MixtureFit(family, weights, params, 0, np.asarray(history), converged)
    return MixtureFit(family, weights, params, int(np.argmax(fit.means)), fit.log_likelihood,
                      converged)


def normalise_losses(losses: np.ndarray, *, clip_percentiles=(5.0, 95.0), bounds=None):
    """Map losses to (0, 1): clip to percentile bounds, rescale, keep :data:`EPS` from the ends.

    Parameters
    ----------
    losses : ndarray of shape (n,)
    clip_percentiles : (float, float), default=(5, 95)
        Outliers beyond these percentiles are clipped so a few huge losses cannot squash the rest.
    bounds : (float, float), optional
        Use these ``(lo, hi)`` instead of percentiles (to normalise new rows like the fitted ones).

    Returns
    -------
    x : ndarray of shape (n,)
    bounds : (float, float)
    """
    losses = np.asarray(losses, dtype=np.float64)
    if bounds is None:
        bounds = _loss_bounds(losses, clip_percentiles)
    lo, hi = bounds
    span = hi - lo
    if span < MIN_SPREAD:
        return np.full(losses.shape, EPS), bounds
    x = losses - lo
    x /= span
    return np.clip(x, EPS, 1 - EPS, out=x), bounds


def _loss_bounds(losses: np.ndarray, clip_percentiles) -> tuple[float, float]:
    """The ``(lo, hi)`` clip bounds of :func:`normalise_losses` (float64 ``losses``)."""
    lo, hi = np.percentile(losses, clip_percentiles) if losses.size else (0.0, 0.0)
    if hi - lo < MIN_SPREAD and losses.size:
        # Over 90% of the losses are equal: the few others are what the mixture must see.
        lo, hi = losses.min(), losses.max()
    return float(lo), float(hi)


def interp_uniform(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.interp(x, grid, values)`` for an evenly spaced ``grid``, without a search per point.

    Points outside the grid take the end values, as with ``np.interp``.
    """
    last = len(grid) - 1
    pos = np.subtract(x, grid[0], dtype=np.float64)
    pos *= last / (grid[-1] - grid[0])
    np.clip(pos, 0.0, last, out=pos)
    i = pos.astype(np.int32 if last < 2**31 else np.intp)
    np.minimum(i, last - 1, out=i)
    pos -= i
    out = np.diff(values).take(i)
    out *= pos
    out += np.take(values, i, out=pos)  # pos is spent: its memory takes the left values
    return out


@dataclass(frozen=True)
class LossMixture:
    """A loss mixture ready to score rows: normalisation bounds, the fit, a monotone posterior grid.

    ``fit`` is None when the losses were degenerate (too few rows, or all equal): every row then
    gets ``p_noisy = 0`` and ``reason`` says why.
    """

    bounds: tuple
    fit: MixtureFit | None
    grid: np.ndarray = field(repr=False)
    grid_posterior: np.ndarray = field(repr=False)
    histogram: tuple = field(repr=False)
    reason: str = ""

    @property
    def noisy_mean_loss(self) -> float:
        """Mean of the high-loss component in the losses' own units (NaN without a fit)."""
        if self.fit is None:
            return float("nan")
        lo, hi = self.bounds
        return float(lo + self.fit.means[self.fit.noisy] * (hi - lo))

    def p_noisy(self, losses: np.ndarray) -> np.ndarray:
        """Posterior of the high-loss component for each loss, monotone non-decreasing in the loss."""
        losses = np.asarray(losses)
        if self.fit is None:
            return np.zeros(losses.shape)
        out = np.empty(losses.shape)
        for s, e in row_chunks(len(losses)):  # element-wise: chunks only bound the temporaries
            x, _ = normalise_losses(losses[s:e], bounds=self.bounds)
            out[s:e] = interp_uniform(x, self.grid, self.grid_posterior)
        return out

    def to_dict(self) -> dict:
        edges, counts = self.histogram
        out = {"loss_bounds": list(self.bounds), "reason": self.reason,
               "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
        if self.fit is not None:
            out.update(self.fit.to_dict())
            out["noisy_mean_loss"] = self.noisy_mean_loss
            above = np.flatnonzero(self.grid_posterior >= 0.5)
            out["threshold"] = float(self.grid[above[0]]) if above.size else None
        return out


def fit_loss_mixture(losses: np.ndarray, *, family: str = "beta",
                     clip_percentiles=(5.0, 95.0)) -> LossMixture:
    """Fit the loss mixture to per-row losses (e.g. cross-entropy ``-log p_given``).

    Parameters
    ----------
    losses : ndarray of shape (n_samples,)
        Finite per-row losses; larger = more suspect.
    family : {"beta", "gaussian"}, default="beta"
    clip_percentiles : (float, float), default=(5, 95)

    Returns
    -------
    LossMixture
        Call ``.p_noisy(losses)`` for the per-row posterior of the noisy component.

    Notes
    -----
    EM sees only the rows inside the clip bounds; clipped rows are scored at the ends. For more
    than ``2048`` such rows, EM runs on a 2048-bin histogram of the normalised losses with the
    bin counts as weights (:func:`loss_histogram`, mergeable over partitions, then
    :func:`mixture_from_histogram`). The posterior is evaluated on a 1024-point grid over (0, 1) and projected
    onto non-decreasing functions by weighted isotonic regression (weights: the rows near each grid
    point), then interpolated per row.
    """
    losses = np.asarray(losses, dtype=np.float64)
    bounds = _loss_bounds(losses, clip_percentiles)
    return mixture_from_histogram(loss_histogram(losses, bounds), bounds, family=family)


@dataclass(frozen=True)
class LossHistogram:
    """What the mixture fit needs of the losses once the clip bounds are known: a mergeable partial.

    Attributes
    ----------
    fine : ndarray of shape (2048,), int64
        Counts of the normalised losses on dyadic bins.
    below, above : int
        Rows below the lower and above the upper clip bound.
    n_rows : int
    inside : ndarray or None
        The normalised losses of the rows inside the bounds while there are at most 2048 of
        them (the EM then runs on the rows themselves), else None.
    """

    fine: np.ndarray
    below: int
    above: int
    n_rows: int
    inside: np.ndarray | None

    @property
    def n_inside(self) -> int:
        return self.n_rows - self.below - self.above

    def merge(self, other: "LossHistogram") -> "LossHistogram":
        """Both sets of rows' histogram (associative, commutative up to the order of ``inside``)."""
        n_inside = self.n_inside + other.n_inside
        keep = self.inside is not None and other.inside is not None and n_inside <= _HIST_BINS
        return LossHistogram(self.fine + other.fine, self.below + other.below,
                             self.above + other.above, self.n_rows + other.n_rows,
                             np.concatenate([self.inside, other.inside]) if keep else None)


def loss_histogram(losses: np.ndarray, bounds) -> LossHistogram:
    """The :class:`LossHistogram` of some rows' losses under the clip ``bounds``."""
    losses = np.asarray(losses, dtype=np.float64)
    # One pass over the rows, chunk by chunk: a fine histogram on dyadic bins, from which the
    # coarser ones (for the summary and the isotonic weights) are exact sums of neighbouring bins.
    fine = np.zeros(_HIST_BINS, dtype=np.int64)
    for s, e in row_chunks(len(losses)):
        fine += _dyadic_histogram(normalise_losses(losses[s:e], bounds=bounds)[0], _HIST_BINS)
    below = int(np.count_nonzero(losses < bounds[0]))
    above = int(np.count_nonzero(losses > bounds[1]))
    inside = None
    if len(losses) - below - above <= _HIST_BINS:
        x = normalise_losses(losses, bounds=bounds)[0]  # few rows here
        inside = x[(losses >= bounds[0]) & (losses <= bounds[1])]
    return LossHistogram(fine, below, above, len(losses), inside)


def mixture_from_histogram(counts: LossHistogram, bounds, *, family: str = "beta") -> LossMixture:
    """:func:`fit_loss_mixture` from the losses' :class:`LossHistogram` under clip ``bounds``."""
    fine = counts.fine
    hist = (np.linspace(0.0, 1.0, _SUMMARY_BINS + 1), fine.reshape(_SUMMARY_BINS, -1).sum(axis=1))
    grid = np.linspace(EPS, 1 - EPS, _GRID)
    if counts.n_rows < MIN_ROWS or bounds[1] - bounds[0] < MIN_SPREAD:
        reason = (f"only {counts.n_rows} rows" if counts.n_rows < MIN_ROWS
                  else "all losses are equal")
        return LossMixture(bounds, None, grid, np.zeros(_GRID), hist, reason)
    # Fit on the rows inside the percentile bounds only (as Arazo et al. do): the clipped tails
    # would otherwise sit as point masses at 0 and 1 and pull a Beta component into a U shape.
    if counts.n_inside > _HIST_BINS:
        # Clipped rows sit at EPS and 1 - EPS, in the first and last bins: take them out of the
        # counts rather than copying the inside rows.
        weights = fine.astype(np.float64)
        weights[0] -= counts.below
        weights[-1] -= counts.above
        centres = (np.arange(_HIST_BINS) + 0.5) / _HIST_BINS
        keep = weights > 0
        fit = fit_mixture(centres[keep], family=family, sample_weight=weights[keep])
    else:
        # Sorted, so the EM's sums (and p_noisy) do not depend on row order.
        fit = fit_mixture(np.sort(counts.inside), family=family)
    raw = fit.posterior(grid)
    density = fine.reshape(_GRID, -1).sum(axis=1)
    mono = isotonic_regression(raw, sample_weight=density + 1e-3, increasing=True)
    return LossMixture(bounds, fit, grid, np.clip(mono, 0.0, 1.0), hist)
