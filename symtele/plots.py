"""Figures of the report as pure functions of result records; each returns a matplotlib Figure.

* :func:`level_sets`       — contours of a 2-D loss with optimisation paths; a teleport is a dashed jump.
* :func:`curves`           — a per-epoch quantity (loss, ‖∇L‖²) against epoch or wall-clock time,
                             one line per method, the mean over seeds with a ±1 std band.
* :func:`loss_vs_grad`     — loss against ‖∇L‖² along each run (mean over seeds), log–log.

Methods keep one colour across every figure (:func:`method_color`).
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .problems import get_problem
from .summaries import by_method, curve_stats

LABELS = {"loss": "Loss", "grad_norm_sq": r"$\|\nabla L\|^2$", "time_s": "Time (s)", "epoch": "Epoch"}
#: tab10 index of each optimiser; its teleporting variant takes the next colour (GL(n): C4)
_COLOR_INDEX = {"gd": 0, "gd-ls": 0, "sgd": 0, "adagrad": 2, "momentum": 2, "rmsprop": 4, "adam": 6,
                "adagrad-torch": 8}


def method_color(method: str) -> str:
    """A fixed colour per method: ``C<k>`` for the optimiser, ``C<k+1>`` when it teleports."""
    base, _, teleport = method.partition("+")
    if teleport == "gln":
        return "C4"
    return f"C{_COLOR_INDEX.get(base, 6) + (1 if teleport else 0)}"


def _axes(ax, figsize=(5.0, 3.6)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def level_sets(problem: str, records, *, x_range=(-10.0, 10.0), y_range=(-10.0, 10.0), levels: int = 20,
               log_levels: bool = False, labels: dict | None = None, title: str | None = None,
               colorbar: bool = False, ax=None):
    """Contours of ``problem`` with the ``path`` of each record (from ``convex_so2``/``level_set``).

    Consecutive path entries with the same epoch are a teleport: drawn as a dashed arrow
    from the point before to the point after. The minimum is marked as "target".
    ``labels`` maps a method to its legend text (default: the method name).
    """
    prob = get_problem(problem)
    fig, ax = _axes(ax, figsize=(4.6, 4.2))
    gx, gy, values = prob.grid(x_range, y_range, n=300)
    if log_levels:
        lv = np.geomspace(max(values.min(), 1e-3), values.max(), levels)
        cs = ax.contourf(gx, gy, values, levels=lv, norm=matplotlib.colors.LogNorm(), cmap="viridis", alpha=0.75)
    else:
        cs = ax.contourf(gx, gy, values, levels=levels, cmap="viridis", alpha=0.75)
    if colorbar:
        fig.colorbar(cs, ax=ax)
    for r in records:
        path = np.asarray(r["path"], dtype=float)
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
    teleport_epochs = set()
    for method, group in by_method(records).items():
        mean, std = curve_stats(group, key)
        xs = np.arange(len(mean)) if x == "epoch" else curve_stats(group, "time_s")[0]
        color = method_color(method)
        ax.plot(xs, mean, color=color, lw=1.6, label=(labels or {}).get(method, method))
        if len(group) > 1:
            low = np.maximum(mean - std, mean * 1e-3) if logy else mean - std
            ax.fill_between(xs, low, mean + std, color=color, alpha=0.2, lw=0)
        teleport_epochs.update(e for r in group for e in r["teleport_epochs"])
    if mark_teleports and x == "epoch":
        for e in sorted(teleport_epochs):
            ax.axvline(e, color="0.5", ls=":", lw=1)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(LABELS[x])
    ax.set_ylabel(LABELS[key])
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def loss_vs_grad(records, *, labels: dict | None = None, title: str | None = None, ax=None):
    """Loss against ‖∇L‖² along each method's run (means over seeds), on log–log axes."""
    fig, ax = _axes(ax)
    for method, group in by_method(records).items():
        loss, _ = curve_stats(group, "loss")
        grad, _ = curve_stats(group, "grad_norm_sq")
        ax.plot(grad, loss, ".-", ms=3, lw=1.2, color=method_color(method),
                label=(labels or {}).get(method, method))
    ax.set_xscale("log")
    ax.set_yscale("log")
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
