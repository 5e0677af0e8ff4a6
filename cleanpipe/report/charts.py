"""The report's charts: plain numbers in, SVG documents (``bytes``) out.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than through ``pyplot``:
pyplot keeps a global registry of open figures and picks a GUI backend, and a report written from a
notebook or a server thread must touch neither. Style settings are applied with
:func:`matplotlib.rc_context`, so the caller's ``rcParams`` are left as they were.

Text is drawn as paths (matplotlib's default ``svg.fonttype``), so an SVG looks the same on a
machine without the fonts, and no string from the data ends up as markup inside the SVG.
(``rc_context`` does set the process-wide ``rcParams`` while a chart is drawn; a plot drawn at
that moment in another thread would pick up this style. That is the one piece of shared state.)
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.special import betaln

from .html import MAX_BAR_CLASSES

#: Colours: kept/clean rows, flagged/noisy rows, the threshold line, neutral bars.
KEPT = "#4c78a8"
FLAGGED = "#e45756"
THRESHOLD = "#222222"
NEUTRAL = "#b8c4d6"
#: Colours of the validation loss and the validation accuracy curves (the training loss is KEPT).
VALIDATION = "#f58518"
ACCURACY = "#54a24b"
#: Colours of the stacked parts of :func:`per_class_chart`: suspect-missing tags (the model says
#: the tag belongs), then suspect-spurious ones (a given tag it rejects, coloured like a flag).
PART_COLOURS = (ACCURACY, FLAGGED)
#: Width of the full-width charts, in inches (the page shows them at about 100 px per inch).
WIDE = 10.0
#: Class names longer than this are shortened on chart axes (tables show them in full).
LABEL_CHARS = 18

_STYLE = {
    "font.size": 9.5, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 9.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#888888",
    "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.8, "axes.axisbelow": True,
    "legend.frameon": False, "xtick.color": "#444444", "ytick.color": "#444444",
    "svg.hashsalt": "cleanpipe",  # stable element ids: the same data gives the same file
    "text.usetex": False,  # a user's usetex=True would send class names through LaTeX
}


def axis_label(name: str) -> str:
    """A class name fit for a matplotlib axis: shortened, and ``$`` not read as mathtext."""
    name = str(name)
    if len(name) > LABEL_CHARS:
        name = name[: LABEL_CHARS - 1] + "\u2026"
    # A name such as "$x$" would be typeset, and an unbalanced one such as "$\frac" would raise.
    return name.replace("$", r"\$")


def _figure(width: float, height: float):
    return Figure(figsize=(width, height), layout="constrained")


def _fit_titles(fig) -> None:
    """Wrap any axes title or axis label longer than its axes, so none is cut at the figure edge
    or runs into the next panel (constrained layout makes room around text, never inside it)."""
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for text, room in ((ax.title, box.width),
                           (ax.xaxis.label, box.width), (ax.yaxis.label, box.height)):
            words = text.get_text()
            width = text.get_window_extent(renderer).width if text is not ax.yaxis.label \
                else text.get_window_extent(renderer).height
            if not words or "\n" in words or width <= room or room <= 0:
                continue
            chars = max(8, int(len(words) * room / width) - 1)
            text.set_text(textwrap.fill(words, chars))


def _nice_upper(ax, top: float, axis: str = "x") -> float:
    """The first tick at or above ``top``: the axis then ends on a labelled tick."""
    locator = (ax.xaxis if axis == "x" else ax.yaxis).get_major_locator()
    ticks = locator.tick_values(0.0, top)
    above = ticks[ticks >= top - 1e-12]
    return float(above[0]) if above.size else top


def _svg(fig) -> bytes:
    _fit_titles(fig)
    buf = io.BytesIO()
    # No date in the metadata, so rerunning a report on the same data gives identical bytes.
    # A tight box: constrained layout misjudges some texts (slanted tick labels anchored at their
    # end), and the saved image then grows to hold them rather than cutting them at its edge.
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.06)
    return buf.getvalue()


def _component_pdf(family: str, params, x: np.ndarray) -> np.ndarray:
    a, b = float(params[0]), float(params[1])
    if family == "beta":
        return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - betaln(a, b))
    return np.exp(-0.5 * ((x - a) / b) ** 2) / (b * np.sqrt(2 * np.pi))


def loss_mixture_chart(mixture: dict) -> bytes:
    """Histogram of normalised per-row losses with the fitted components and the threshold.

    Parameters
    ----------
    mixture : dict
        ``summary["mixture"]``: ``histogram {edges, counts}`` and, when a mixture was fitted,
        ``family``, ``weights``, ``params``, ``noisy_component`` and ``threshold``.

    Returns
    -------
    bytes
        An SVG document.

    Notes
    -----
    Counts are turned into a density, ``counts / (N * bin_width)``, so they share an axis with
    the weighted component densities ``w_k f_k(x)``. The y axis is square-root scaled: the clean
    rows pile up near zero loss and would flatten everything else on a linear axis.
    """
    edges = np.asarray(mixture["histogram"]["edges"], dtype=np.float64)
    counts = np.asarray(mixture["histogram"]["counts"], dtype=np.float64)
    widths = np.diff(edges)
    density = counts / max(counts.sum(), 1.0) / np.where(widths > 0, widths, 1.0)
    with rc_context(_STYLE):
        fig = _figure(WIDE, 4.2)
        ax = fig.add_subplot()
        ax.bar(edges[:-1], density, width=widths, align="edge", color=NEUTRAL, edgecolor="white",
               linewidth=0.4, label="rows (normalised loss)")
        top = float(density.max()) if density.size else 1.0
        if mixture.get("params") is not None:
            # Stay off 0 and 1, where a Beta density with a parameter below 1 is infinite.
            x = np.linspace(1e-3, 1 - 1e-3, 600)
            noisy = int(mixture.get("noisy_component", 1))
            total = np.zeros_like(x)
            for k, (w, p) in enumerate(zip(mixture["weights"], mixture["params"])):
                y = w * _component_pdf(mixture["family"], p, x)
                total += y
                name = "noisy" if k == noisy else "clean"
                shape = (f"\u03b1={p[0]:.2f}, \u03b2={p[1]:.2f}" if mixture["family"] == "beta"
                         else f"\u03bc={p[0]:.2f}, \u03c3={p[1]:.2f}")
                ax.plot(x, y, color=FLAGGED if k == noisy else KEPT, linewidth=2,
                        label=f"{name} component, w={w:.2f} ({shape})")
            ax.plot(x, total, color="#555555", linewidth=1, linestyle=":", label="mixture")
            inner = (x > edges[1]) & (x < edges[-2]) if edges.size > 2 else slice(None)
            top = max(top, float(np.max(total[inner], initial=0.0)))
        threshold = mixture.get("threshold")
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.3,
                       label=f"threshold {threshold:.3f} (p_noisy \u2265 0.5 beyond)")
        ax.set_yscale("function", functions=(np.sqrt, np.square))
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.set_xlim(0, 1)
        ax.set_xlabel("normalised loss (0 = fits the given label, 1 = at or past the loss cap)")
        ax.set_ylabel("density (\u221a scale)")
        # Below the axes: inside, it would cover the threshold line or the high-loss bars.
        fig.legend(loc="outside lower center", ncols=2, fontsize=8.5)
        return _svg(fig)


def noise_matrix_chart(matrix, class_names, *, annotate_max: int = 20) -> bytes:
    """Heatmap of the estimated noise matrix ``P(given label | true label)``.

    Parameters
    ----------
    matrix : array-like of shape (n_classes, n_classes)
        ``summary["noise_matrix"]``, indexed ``[given][true]``.
    class_names : sequence of str
    annotate_max : int, default=20
        Cells carry their value when there are at most this many classes.

    Returns
    -------
    bytes
        An SVG document.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    side = float(np.clip(0.4 * k + 2.4, 4.2, 9.0))
    with rc_context({**_STYLE, "axes.grid": False}):
        fig = _figure(side + 1.2, side)
        ax = fig.add_subplot()
        # A square-root colour scale: the diagonal holds most of the mass and would otherwise
        # leave every off-diagonal cell, the interesting part, the same pale colour.
        im = ax.imshow(m, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=max(float(m.max()), 1e-9)),
                       aspect="equal", interpolation="nearest")
        if k <= 60:
            ticks = np.arange(k)
            names = [axis_label(n) for n in class_names]
            # Turn the true-label names only when they would collide side by side; upright past
            # 15 classes, where slanted names overlap their neighbours.
            turn = 0 if k * max(len(n) for n in names) <= 40 else 45 if k <= 15 else 90
            size = 9.5 if k <= 25 else 7.5
            ax.set_xticks(ticks, names, rotation=turn, ha="right" if turn else "center",
                          rotation_mode="anchor", va="center" if turn == 90 else "top", fontsize=size)
            ax.set_yticks(ticks, names, fontsize=size)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if k <= annotate_max:
            size = 8.5 if k <= 10 else 6.5
            cut = 0.45 * float(m.max())
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=size,
                            color="white" if m[i, j] > cut else "#333333")
        ax.set_xlabel("true label")
        ax.set_ylabel("given label")
        ax.tick_params(length=0)
        fig.colorbar(im, ax=ax, shrink=0.8, label="P(given | true)")
        return _svg(fig)


def per_class_chart(class_names, flagged, noise_rate, *, parts=None, title=None) -> bytes:
    """Flagged rows (or suspect tags) and estimated noise rate per class, as two horizontal bar panels.

    Parameters
    ----------
    class_names : sequence of str
    flagged : sequence of int
        Flagged rows per class: the left panel. Ignored when ``parts`` is given.
    noise_rate : sequence of float
        Estimated noise rate per class, in [0, 1]: the right panel.
    parts : dict of str to sequence of int, optional
        Stacked parts of the left panel instead, in drawing order, coloured with
        :data:`PART_COLOURS` and named in a legend. Multi-label reports pass the suspect-missing
        and suspect-spurious tags per class.
    title : str, optional
        Title of the left panel; default: the names of its series joined by "and".

    Returns
    -------
    bytes
        An SVG document. With more than :data:`MAX_BAR_CLASSES` classes, only those with the
        largest left-panel totals are drawn.
    """
    names = [str(n) for n in class_names]
    if parts is None:
        parts = {"flagged rows": flagged}
        colours = [FLAGGED]
    else:
        colours = list(PART_COLOURS[: len(parts)])
    series = {name: np.asarray(v, dtype=np.float64) for name, v in parts.items()}
    total = np.sum(list(series.values()), axis=0) if series else np.zeros(len(names))
    rate = np.asarray(noise_rate, dtype=np.float64)
    order = np.arange(len(names))
    if len(names) > MAX_BAR_CLASSES:
        order = np.sort(np.argsort(-total, kind="stable")[:MAX_BAR_CLASSES])
    k = len(order)
    with rc_context(_STYLE):
        fig = _figure(WIDE, float(np.clip(0.26 * k + 1.3, 2.4, 12.0)) + (0.4 if len(series) > 1 else 0.0))
        ax1, ax2 = fig.subplots(1, 2, sharey=True)
        y = np.arange(k)
        left = np.zeros(k)
        for (name, values), colour in zip(series.items(), colours):
            ax1.barh(y, values[order], left=left, color=colour, height=0.7, label=name)
            left += values[order]
        ax2.barh(y, rate[order] * 100, color=KEPT, height=0.7)
        ax1.set_yticks(y, [axis_label(names[i]) for i in order])
        # The first class on top, as in the table below the chart; no padding above or below.
        ax1.set_ylim(k - 0.5, -0.5)
        ax1.set_title(title or " and ".join(series), loc="left")
        ax2.set_title("estimated noise rate (%)", loc="left")
        for ax in (ax1, ax2):
            ax.grid(axis="y", visible=False)
            ax.tick_params(axis="y", length=0)
        if k <= 25:
            for yi, v in zip(y, total[order]):
                ax1.text(v, yi, f" {int(v)}", va="center", fontsize=8, color="#333333")
            for yi, v in zip(y, rate[order] * 100):
                ax2.text(v, yi, f" {v:.1f}", va="center", fontsize=8, color="#333333")
            # Room for the value labels, and the axis ends on a labelled tick.
            ax1.set_xlim(0, _nice_upper(ax1, max(float(total.max(initial=0)), 1.0) * 1.18))
            ax2.set_xlim(0, _nice_upper(ax2, max(float(rate.max(initial=0)) * 100, 1.0) * 1.18))
        if len(series) > 1:
            fig.legend(loc="outside lower center", ncols=len(series), fontsize=8.5)
        return _svg(fig)


def score_chart(edges, kept_counts, flagged_counts, *,
                xlabel: str = "label_score (higher = label more likely correct)") -> bytes:
    """``label_score`` histograms of kept and of flagged rows, side by side on a shared x axis.

    Parameters
    ----------
    edges : array-like of shape (n_bins + 1,)
    kept_counts, flagged_counts : array-like of shape (n_bins,)
    xlabel : str
        The score's name (the same chart shows the neighbours' ``knn_label_score``).

    Returns
    -------
    bytes
        An SVG document.
    """
    edges = np.asarray(edges, dtype=np.float64)
    widths = np.diff(edges)
    with rc_context(_STYLE):
        fig = _figure(WIDE, 3.2)
        axes = fig.subplots(1, 2, sharex=True)
        for ax, counts, colour, what in ((axes[0], kept_counts, KEPT, "kept"),
                                         (axes[1], flagged_counts, FLAGGED, "flagged")):
            counts = np.asarray(counts)
            ax.bar(edges[:-1], counts, width=widths, align="edge", color=colour, edgecolor="white",
                   linewidth=0.4)
            ax.set_title(f"{what} rows (n={int(counts.sum()):,})", loc="left")
            ax.set_xlim(0, 1)
            ax.set_xlabel(xlabel)
            if counts.sum() == 0:
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", color="#888888")
        axes[0].set_ylabel("rows")
        return _svg(fig)


def _series(values) -> np.ndarray:
    """Floats with NaN for None, so matplotlib leaves a gap where a value was not recorded."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _epoch_axes(axes, best_epoch, n_points: int) -> dict:
    """Integer epoch ticks, the best epoch marked; line keywords for ``n_points`` points."""
    for i, ax in enumerate(axes):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if best_epoch is not None:
            ax.axvline(best_epoch, color=THRESHOLD, linestyle="--", linewidth=1.1,
                       label=f"best epoch ({best_epoch})" if i == 0 else None)
    # Markers while the points are few enough to tell apart; a lone point needs one to show at all.
    return {"linewidth": 1.8, "marker": "o" if n_points <= 60 else None, "markersize": 3}


def training_curve_chart(train_loss, val_loss, val_accuracy, *, best_epoch=None) -> bytes:
    """Training and validation loss, and validation accuracy, per epoch, as two panels.

    Parameters
    ----------
    train_loss, val_loss, val_accuracy : sequence of float or None
        Per-epoch values, epoch ``i + 1`` at index ``i`` (``metrics.json``'s ``curve``); None
        where not recorded, drawn as a gap.
    best_epoch : int, optional
        The 1-based epoch whose weights were kept, marked with a dashed line.

    Returns
    -------
    bytes
        An SVG document.
    """
    train, val, acc = _series(train_loss), _series(val_loss), _series(val_accuracy)
    n = max(train.size, val.size, acc.size, best_epoch or 0, 1)
    with rc_context(_STYLE):
        fig = _figure(WIDE, 3.6)
        ax1, ax2 = fig.subplots(1, 2, sharex=True)
        line = _epoch_axes((ax1, ax2), best_epoch, n)
        if np.isfinite(train).any():
            ax1.plot(np.arange(1, train.size + 1), train, color=KEPT, label="training loss", **line)
        if np.isfinite(val).any():
            ax1.plot(np.arange(1, val.size + 1), val, color=VALIDATION, label="validation loss", **line)
        if np.isfinite(acc).any():
            ax2.plot(np.arange(1, acc.size + 1), acc * 100, color=ACCURACY, label="validation accuracy",
                     **line)
        else:
            ax2.text(0.5, 0.5, "no validation split", transform=ax2.transAxes, ha="center",
                     color="#888888")
        ax1.set_title("loss per epoch", loc="left")
        ax2.set_title("validation accuracy (%)", loc="left")
        ax1.set_ylabel("mean loss per row")
        ax1.set_xlim(0.5, n + 0.5)
        fig.legend(loc="outside lower center", ncols=4, fontsize=8.5)
        return _svg(fig)


def noise_model_chart(epochs, noisy_share, auroc=None, *, best_epoch=None, flag_rate=None,
                      converged=None, n_epochs=None) -> bytes:
    """The online noise model per epoch: estimated noisy share and, when known, its AUROC vs the flags.

    Parameters
    ----------
    epochs : sequence of int
        1-based epochs after which the loss mixture was fitted.
    noisy_share : sequence of float or None
        Mean posterior ``w`` of the noisy component, in [0, 1], per epoch.
    auroc : sequence of float or None, optional
        AUROC of ``w`` against the flagger's ``p_noisy`` per epoch; the right panel is drawn only
        when at least one value is known.
    best_epoch : int, optional
        Marked with a dashed line.
    flag_rate : float, optional
        The flag run's estimated noise rate, drawn as a horizontal reference line.
    converged : sequence of bool or None, optional
        Per epoch; epochs whose mixture fit did not converge (False) are marked with a cross.
    n_epochs : int, optional
        Epochs the run trained: the x axis then spans 1 to ``n_epochs``, as in
        :func:`training_curve_chart`, so the two charts line up (the warm-up epochs stay empty).

    Returns
    -------
    bytes
        An SVG document.
    """
    x = np.asarray(epochs, dtype=np.float64)
    share = _series(noisy_share) * 100
    auc = _series(auroc if auroc is not None else [None] * x.size)
    with_auc = bool(np.isfinite(auc).any())
    with rc_context(_STYLE):
        fig = _figure(WIDE, 3.6)
        axes = fig.subplots(1, 2 if with_auc else 1, sharex=True, squeeze=False)[0]
        line = _epoch_axes(axes, best_epoch, x.size)
        ax1 = axes[0]
        ax1.plot(x, share, color=FLAGGED, label="estimated noisy share (mean w)", **line)
        if converged is not None:
            bad = np.array([c is False for c in converged], dtype=bool)
            if bad.any():
                ax1.plot(x[bad], share[bad], linestyle="none", marker="x", markersize=7, color=THRESHOLD,
                         label="mixture fit not converged")
        if flag_rate is not None:
            ax1.axhline(flag_rate * 100, color="#555555", linestyle=":", linewidth=1.3,
                        label=f"flag run's estimated noise rate ({flag_rate:.1%})")
        top = max(float(np.nanmax(share, initial=0.0)), (flag_rate or 0.0) * 100, 1.0)
        ax1.set_ylim(0, min(top * 1.15, 100.0))
        ax1.set_title("estimated noisy share of training rows (%)", loc="left")
        if with_auc:
            ax2 = axes[1]
            ax2.plot(x, auc, color=KEPT, label="AUROC of w vs the flags' p_noisy", **line)
            ax2.axhline(0.5, color="#888888", linestyle=":", linewidth=1.0, label="chance (0.5)")
            ax2.set_ylim(min(0.45, float(np.nanmin(auc)) - 0.03), 1.0)
            ax2.set_title("AUROC of w against the flags' p_noisy", loc="left")
        # Wide enough to show the best epoch's line even when it came before the first fit.
        span = [*x.tolist(), *([best_epoch] if best_epoch is not None else []),
                *([1, n_epochs] if n_epochs else [])] or [1.0]
        lo, hi = float(min(span)), float(max(span))
        ax1.set_xlim(lo - 0.5, hi + 0.5)
        fig.legend(loc="outside lower center", ncols=3, fontsize=8.5)
        return _svg(fig)


def duplicate_sizes_chart(exact_sizes, near_sizes, *, largest: int = 10) -> bytes:
    """How many duplicate sets there are of each size, exact and near, as grouped bars.

    Parameters
    ----------
    exact_sizes, near_sizes : array-like of int
        The size (rows) of each exact-duplicate set and of each near-duplicate set.
    largest : int, default=10
        Sizes from this one up share the last bar (``10+``).

    Returns
    -------
    bytes
        An SVG document.
    """
    sizes = np.arange(2, largest + 1)
    names = [str(k) for k in sizes[:-1]] + [f"{largest}+"]

    def counts(values):
        v = np.minimum(np.asarray(values, dtype=np.int64), largest)
        return np.bincount(v, minlength=largest + 1)[2:]

    x = np.arange(sizes.size)
    with rc_context(_STYLE):
        fig = _figure(WIDE, 3.4)
        ax = fig.add_subplot()
        for shift, values, colour, what in ((-0.2, exact_sizes, KEPT, "exact duplicates"),
                                            (0.2, near_sizes, FLAGGED, "near duplicates (exact ones included)")):
            c = counts(values)
            ax.bar(x + shift, c, width=0.4, color=colour, label=f"{what} (sets: {int(c.sum()):,})")
        ax.set_xticks(x, names)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rows in the set")
        ax.set_ylabel("sets")
        fig.legend(loc="outside lower center", ncols=2, fontsize=8.5)
        return _svg(fig)


def outlier_chart(edges, kept_counts, outlier_counts, threshold=None) -> bytes:
    """Histogram of ``outlier_score`` on a log axis, outliers coloured, with the threshold.

    Parameters
    ----------
    edges : array-like of shape (n_bins + 1,)
        Bin edges (positive, increasing); scores outside them were counted in the end bins.
    kept_counts, outlier_counts : array-like of shape (n_bins,)
        Rows below and above the threshold in each bin.
    threshold : float, optional
        The calibrated ``outlier_score`` threshold, drawn as a dashed line.

    Returns
    -------
    bytes
        An SVG document.
    """
    edges = np.asarray(edges, dtype=np.float64)
    widths = np.diff(edges)
    kept, out = np.asarray(kept_counts), np.asarray(outlier_counts)
    with rc_context(_STYLE):
        fig = _figure(WIDE, 3.6)
        ax = fig.add_subplot()
        ax.bar(edges[:-1], kept, width=widths, align="edge", color=KEPT, edgecolor="white",
               linewidth=0.4, label=f"typical rows (n={int(kept.sum()):,})")
        ax.bar(edges[:-1], out, bottom=kept, width=widths, align="edge", color=FLAGGED,
               edgecolor="white", linewidth=0.4, label=f"outliers (n={int(out.sum()):,})")
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.3,
                       label=f"threshold {threshold:.3g}")
        ax.set_xscale("log")
        # The populated bins (and the threshold), a few empty bins either side.
        used = np.flatnonzero(kept + out)
        lo, hi = (int(used[0]), int(used[-1])) if used.size else (0, edges.size - 2)
        left, right = edges[max(lo - 3, 0)], edges[min(hi + 4, edges.size - 1)]
        if threshold is not None and np.isfinite(threshold) and threshold > 0:
            left, right = min(left, threshold / 1.5), max(right, threshold * 1.5)
        ax.set_xlim(left, right)
        # Square-root counts: the typical rows pile up near 1 and would hide the few outliers.
        ax.set_yscale("function", functions=(np.sqrt, np.square))
        top = float((kept + out).max(initial=0))
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.set_xlabel("outlier_score (mean distance to the nearest rows over the table's median; log scale)")
        ax.set_ylabel("rows (\u221a scale)")
        fig.legend(loc="outside lower center", ncols=3, fontsize=8.5)
        return _svg(fig)
