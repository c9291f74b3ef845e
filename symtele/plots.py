"""Figures of the report as pure functions of result records; each returns a matplotlib Figure.

* :func:`level_sets`       — contours of a 2-D loss with optimisation paths; a teleport is a dashed jump.
* :func:`curves`           — a per-epoch quantity (loss, ‖∇L‖²) against epoch or wall-clock time,
                             one line per method, the mean over seeds with a ±1 std band.
* :func:`loss_vs_grad`     — loss against ‖∇L‖² along each run (mean over seeds), log–log.
* :func:`final_bars`       — a per-run scalar (test accuracy) per method, mean ± std over seeds.

Each takes an optional ``ax``; :func:`panels` makes a row of them for a multi-part figure.

Methods keep one colour across every figure (:func:`method_color`).
"""
from __future__ import annotations

import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogFormatterSciNotation, NullLocator

from .problems import get_problem
from .summaries import by_method, curve_stats

LABELS = {"loss": "Loss", "grad_norm_sq": "‖∇L‖²", "time_s": "Time (s)", "epoch": "Epoch"}
#: tab10 index of each optimiser; its teleporting variant takes the next colour (GL(n): C4)
_COLOR_INDEX = {"gd": 0, "gd-ls": 0, "sgd": 0, "adagrad": 2, "momentum": 2, "rmsprop": 4, "adam": 6,
                "adagrad-torch": 8}


def method_color(method: str) -> str:
    """A fixed colour per method: ``C<k>`` for the optimiser, ``C<k+1>`` when it teleports."""
    base, _, teleport = method.partition("+")
    if teleport == "gln":
        return "C4"
    return f"C{_COLOR_INDEX.get(base, 6) + (1 if teleport else 0)}"


def panels(n: int, *, width: float = 4.4, height: float = 3.5):
    """A row of ``n`` axes for the sub-figures (a), (b), … of one report figure: ``(fig, axes)``."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), layout="constrained", squeeze=False)
    return fig, list(axes[0])


#: beyond this magnitude a run counts as diverged and is not drawn (log axes cannot place ticks there)
DIVERGED = 1e100


def _finite(values) -> np.ndarray:
    """``values`` with non-finite and diverged entries turned into NaN, which matplotlib leaves out."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(values) < DIVERGED, values, np.nan)


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_MATH_LABEL = re.compile(r"^\$\\mathdefault\{(?:(-?[\d.]+)\\times)?(-?\d+)(?:\^\{(-?\d+)\})?\}\$$")


class UnicodeLogFormatter(LogFormatterSciNotation):
    """matplotlib's log-axis tick labels (``10⁻²``, ``2×10⁻¹``) written in Unicode, not mathtext.

    The same ticks get labels as with matplotlib's own formatter; only the typesetting differs.
    Laying out mathtext labels is the largest part of drawing a small figure.
    """

    def __call__(self, x, pos=None):
        label = super().__call__(x, pos)
        match = _MATH_LABEL.match(label)
        if match is None:
            return label
        coefficient, base, exponent = match.groups()
        text = base + (exponent.translate(_SUPERSCRIPT) if exponent is not None else "")
        return (f"{coefficient}×{text}" if coefficient else text).replace("-", "−")


def log_axis(axis, values=None) -> None:
    """Unicode tick labels on a log axis; minor ticks only when ``values`` span under two decades."""
    axis.set_major_formatter(UnicodeLogFormatter())
    axis.set_minor_formatter(UnicodeLogFormatter(labelOnlyBase=False))
    if values is None:
        return
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 100:
        axis.set_minor_locator(NullLocator())


def _axes(ax, figsize=(5.0, 3.6)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def level_sets(problem: str, records, *, x_range=None, y_range=None, levels: int = 20,
               log_levels: bool = False, labels: dict | None = None, title: str | None = None,
               colorbar: bool = False, ax=None):
    """Contours of ``problem`` with the ``path`` of each record (from ``convex_so2``/``level_set``).

    Consecutive path entries with the same epoch are a teleport: drawn as a dashed arrow
    from the point before to the point after. The minimum is marked as "target".
    ``labels`` maps a method to its legend text (default: the method name). A range left
    ``None`` spans every drawn point and the minimum, with a 10 % margin.
    """
    prob = get_problem(problem)
    fig, ax = _axes(ax, figsize=(4.6, 4.2))
    points = np.concatenate([_finite(r["path"]) for r in records] + [np.array([prob.minimum], dtype=float)])
    points = points[np.isfinite(points).all(1)]
    low, high = points.min(0), points.max(0)
    pad = 0.1 * np.maximum(high - low, 1e-3)
    x_range = (low[0] - pad[0], high[0] + pad[0]) if x_range is None else x_range
    y_range = (low[1] - pad[1], high[1] + pad[1]) if y_range is None else y_range
    gx, gy, values = prob.grid(x_range, y_range, n=140)
    if log_levels:
        lv = np.geomspace(max(values.min(), 1e-3), values.max(), levels)
        cs = ax.contourf(gx, gy, values, levels=lv, norm=matplotlib.colors.LogNorm(), cmap="viridis", alpha=0.75)
    else:
        cs = ax.contourf(gx, gy, values, levels=levels, cmap="viridis", alpha=0.75)
    if colorbar:
        bar = fig.colorbar(cs, ax=ax, ticks=matplotlib.ticker.LogLocator() if log_levels else None)
        if log_levels:
            bar.ax.yaxis.set_major_formatter(UnicodeLogFormatter())
    for r in records:
        path = _finite(r["path"])
        epochs = r["path_epochs"]
        color = method_color(r["method"])
        label = (labels or {}).get(r["method"], r["method"])
        segment = [0]
        for i in range(1, len(path)):
            if epochs[i] == epochs[i - 1]:
                ax.plot(path[segment, 0], path[segment, 1], ".-", color=color, lw=1.4, ms=5, label=label)
                label = None
                ax.annotate("", xy=path[i], xytext=path[i - 1],
                            arrowprops=dict(arrowstyle="->", ls="--", color="C3", lw=1.6))
                ax.plot(*path[i], "*", color="C3", ms=11)
                segment = [i]
            else:
                segment.append(i)
        ax.plot(path[segment, 0], path[segment, 1], ".-", color=color, lw=1.4, ms=5, label=label)
    if any(a == b for r in records for a, b in zip(r["path_epochs"], r["path_epochs"][1:])):
        ax.plot([], [], "*--", color="C3", ms=9, label="teleport")
    ax.plot(*prob.minimum, "x", color="k", ms=9, mew=2, label="target")
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return fig


def curves(records, *, key: str = "loss", x: str = "epoch", labels: dict | None = None, logy: bool = True,
           mark_teleports: bool = False, title: str | None = None, ax=None):
    """``key`` (``loss`` or ``grad_norm_sq``) per epoch, or against wall-clock time (``x="time_s"``).

    One line per method: the mean over its records, with a ±1 std band when there are
    several seeds. ``mark_teleports`` draws a dotted line at each teleport epoch.
    """
    if key not in ("loss", "grad_norm_sq"):
        raise ValueError(f"Invalid key: {key!r} (choose 'loss' or 'grad_norm_sq')")
    if x not in ("epoch", "time_s"):
        raise ValueError(f"Invalid x: {x!r} (choose 'epoch' or 'time_s')")
    fig, ax = _axes(ax)
    teleport_epochs, drawn = set(), []
    for method, group in by_method(records).items():
        mean, std = (_finite(v) for v in curve_stats(group, key))
        xs = np.arange(len(mean)) if x == "epoch" else curve_stats(group, "time_s")[0]
        color = method_color(method)
        ax.plot(xs, mean, color=color, lw=1.6, label=(labels or {}).get(method, method))
        drawn.append(mean)
        if len(group) > 1:
            low = np.maximum(mean - std, mean / 5) if logy else mean - std
            ax.fill_between(xs, low, mean + std, color=color, alpha=0.2, lw=0)
        teleport_epochs.update(e for r in group for e in r["teleport_epochs"])
    if mark_teleports and x == "epoch":
        for e in sorted(teleport_epochs):
            ax.axvline(e, color="0.5", ls=":", lw=1)
    if logy:
        ax.set_yscale("log")
        log_axis(ax.yaxis, np.concatenate(drawn))
    ax.set_xlabel(LABELS[x])
    ax.set_ylabel(LABELS[key])
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def loss_vs_grad(records, *, labels: dict | None = None, title: str | None = None, ax=None):
    """Loss against ‖∇L‖² along each method's run (means over seeds), on log–log axes."""
    fig, ax = _axes(ax)
    losses, grads = [], []
    for method, group in by_method(records).items():
        loss, grad = _finite(curve_stats(group, "loss")[0]), _finite(curve_stats(group, "grad_norm_sq")[0])
        losses.append(loss)
        grads.append(grad)
        ax.plot(grad, loss, ".-", ms=3, lw=1.2, color=method_color(method),
                label=(labels or {}).get(method, method))
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis, np.concatenate(grads))
    log_axis(ax.yaxis, np.concatenate(losses))
    ax.set_xlabel(LABELS["grad_norm_sq"])
    ax.set_ylabel(LABELS["loss"])
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def final_bars(records, *, key: str = "test_accuracy", title: str | None = None, ax=None):
    """Mean ± std over seeds of a per-run scalar (e.g. ``test_accuracy``), one bar per method."""
    fig, ax = _axes(ax, figsize=(6.4, 3.4))
    groups = by_method(records)
    names = list(groups)
    values = [np.array([r[key] for r in g], dtype=float) for g in groups.values()]
    ax.bar(range(len(names)), [v.mean() for v in values], yerr=[v.std() for v in values], capsize=3,
           color=[method_color(n) for n in names])
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(key.replace("_", " "))
    low = min(v.min() for v in values)
    ax.set_ylim(max(0.0, low - 0.1 * (1 - low) - 0.02), 1.0 if key.endswith("accuracy") else None)
    if title:
        ax.set_title(title)
    return fig
