"""Contours of a 2-D loss with the optimisation paths drawn on them; a teleport is a dashed jump."""

from __future__ import annotations

import matplotlib
import numpy as np

from ..problems import get_problem
from .style import UnicodeLogFormatter, axes_of, finite, method_color


def _ranges(prob, records, x_range, y_range):
    """The plotted ranges: those given, else every drawn point and the minimum with a 10 % margin."""
    points = np.concatenate([finite(r["path"]) for r in records] + [np.array([prob.minimum], dtype=float)])
    points = points[np.isfinite(points).all(1)]
    low, high = points.min(0), points.max(0)
    pad = 0.1 * np.maximum(high - low, 1e-3)
    x_range = (low[0] - pad[0], high[0] + pad[0]) if x_range is None else x_range
    y_range = (low[1] - pad[1], high[1] + pad[1]) if y_range is None else y_range
    return x_range, y_range


def _contours(ax, prob, x_range, y_range, levels, log_levels, colorbar):
    """Filled contours of the loss (logarithmic levels if ``log_levels``), with a colour bar if asked."""
    gx, gy, values = prob.grid(x_range, y_range, n=140)
    if log_levels:
        lv = np.geomspace(max(values.min(), 1e-3), values.max(), levels)
        cs = ax.contourf(gx, gy, values, levels=lv, norm=matplotlib.colors.LogNorm(), cmap="viridis", alpha=0.75)
    else:
        cs = ax.contourf(gx, gy, values, levels=levels, cmap="viridis", alpha=0.75)
    if colorbar:
        bar = ax.figure.colorbar(cs, ax=ax, ticks=matplotlib.ticker.LogLocator() if log_levels else None)
        if log_levels:
            bar.ax.yaxis.set_major_formatter(UnicodeLogFormatter())


def _path(ax, record, label):
    """One run's path: segments between teleports as lines, each teleport a dashed arrow to a star."""
    path, epochs, color = finite(record["path"]), record["path_epochs"], method_color(record["method"])
    segment = [0]
    for i in range(1, len(path)):
        if epochs[i] == epochs[i - 1]:
            ax.plot(path[segment, 0], path[segment, 1], ".-", color=color, lw=1.4, ms=5, label=label)
            label = None
            ax.annotate(
                "", xy=path[i], xytext=path[i - 1], arrowprops=dict(arrowstyle="->", ls="--", color="C3", lw=1.6)
            )
            ax.plot(*path[i], "*", color="C3", ms=11)
            segment = [i]
        else:
            segment.append(i)
    ax.plot(path[segment, 0], path[segment, 1], ".-", color=color, lw=1.4, ms=5, label=label)


def level_sets(
    problem: str,
    records,
    *,
    x_range=None,
    y_range=None,
    levels: int = 20,
    log_levels: bool = False,
    labels: dict | None = None,
    title: str | None = None,
    colorbar: bool = False,
    ax=None,
):
    """Contours of ``problem`` with the ``path`` of each record (from ``convex_so2``/``level_set``).

    Consecutive path entries with the same epoch are a teleport: drawn as a dashed arrow
    from the point before to the point after. The minimum is marked as "target".
    A range left ``None`` spans every drawn point and the minimum, with a 10 % margin.

    Args:
        problem: the 2-D problem's name (``quadratic``, ``booth``, ``rosenbrock``).
        records: run records with ``path`` and ``path_epochs``.
        x_range: ``(low, high)`` of the x axis, or ``None``.
        y_range: ``(low, high)`` of the y axis, or ``None``.
        levels: the number of contour levels.
        log_levels: space the levels logarithmically.
        labels: a method → its legend text (default: the method name).
        title: the axes' title.
        colorbar: add a colour bar.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.

    Raises:
        ValueError: an unknown ``problem``.
    """
    prob = get_problem(problem)
    fig, ax = axes_of(ax, figsize=(4.6, 4.2))
    x_range, y_range = _ranges(prob, records, x_range, y_range)
    _contours(ax, prob, x_range, y_range, levels, log_levels, colorbar)
    for r in records:
        _path(ax, r, (labels or {}).get(r["method"], r["method"]))
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
