"""Per-epoch curves and per-run bars of the report, as pure functions of result records.

* :func:`curves`       — a per-epoch quantity (loss, held-out loss, ‖∇L‖²) against epoch or wall-clock time,
                         one line per method, the mean over seeds with a ±1 std band.
* :func:`loss_vs_grad` — loss against ‖∇L‖² along each run (mean over seeds), log–log.
* :func:`final_bars`   — a per-run scalar (test accuracy) per method, mean ± std over seeds.
* :func:`fraction_bars` — how often a Teleporter applied each fraction ``t`` of its teleports' paths.
* :func:`measure_scatter` — a measure of trained nets (sharpness, curvature) against their loss, one dot a net.

Each takes an optional ``ax`` and returns the matplotlib Figure.
"""

from __future__ import annotations

import numpy as np

from ..study.summaries import by_method, curve_stats
from .style import LABELS, axes_of, finite, log_axis, method_color


def curves(
    records,
    *,
    key: str = "loss",
    x: str = "epoch",
    labels: dict | None = None,
    logy: bool = True,
    mark_teleports: bool = False,
    title: str | None = None,
    reference: dict | None = None,
    reference_label: str = "writeup",
    ax=None,
):
    """``key`` of each method's runs against the epochs or steps, the wall-clock time or the gradients computed.

    One line per method: the mean over its records, with a ±1 std band when there are
    several seeds.

    Args:
        records: run records (:mod:`symtele.study.results`).
        key: ``loss``, ``test_loss``, ``val_loss`` (the transformer chapter's held-out loss) or ``grad_norm_sq``.
        x: ``epoch``; ``steps`` (the optimiser steps each entry was logged at, for records that have them);
            ``time_s`` (wall-clock time); ``evaluations`` (the gradients and Hessian-vector products computed, for
            records that have them).
        labels: legend labels by method, instead of the method names.
        logy: a log-scaled y axis.
        mark_teleports: draw a dotted line at each teleport epoch.
        title: the axes' title.
        reference: published values ``{epoch: value}``, drawn as black crosses.
        reference_label: the legend label of ``reference``.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.

    Raises:
        ValueError: another ``key`` or ``x``.
    """
    if key not in ("loss", "test_loss", "val_loss", "grad_norm_sq"):
        raise ValueError(f"Invalid key: {key!r} (choose 'loss', 'test_loss', 'val_loss' or 'grad_norm_sq')")
    if x not in ("epoch", "steps", "time_s", "evaluations"):
        raise ValueError(f"Invalid x: {x!r} (choose 'epoch', 'steps', 'time_s' or 'evaluations')")
    fig, ax = axes_of(ax)
    teleport_epochs, drawn = set(), []
    for method, group in by_method(records).items():
        mean, std = (finite(v) for v in curve_stats(group, key))
        xs = np.arange(len(mean)) if x == "epoch" else curve_stats(group, x)[0]
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
    if reference:
        ax.plot(list(reference), list(reference.values()), "kx", ms=6, mew=1.2, label=reference_label)
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
    """Loss against ‖∇L‖² along each method's run (means over seeds), on log–log axes.

    Args:
        records: run records (:mod:`symtele.study.results`).
        labels: legend labels by method, instead of the method names.
        title: the axes' title.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.
    """
    fig, ax = axes_of(ax)
    losses, grads = [], []
    for method, group in by_method(records).items():
        loss, grad = finite(curve_stats(group, "loss")[0]), finite(curve_stats(group, "grad_norm_sq")[0])
        losses.append(loss)
        grads.append(grad)
        ax.plot(grad, loss, ".-", ms=3, lw=1.2, color=method_color(method), label=(labels or {}).get(method, method))
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
    """Mean ± std over seeds of a per-run scalar (e.g. ``test_accuracy``), one bar per method.

    Args:
        records: run records (:mod:`symtele.study.results`) that hold ``key``.
        key: the scalar's field.
        title: the axes' title.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.
    """
    fig, ax = axes_of(ax, figsize=(6.4, 3.4))
    groups = by_method(records)
    names = list(groups)
    values = [np.array([r[key] for r in g], dtype=float) for g in groups.values()]
    ax.bar(
        range(len(names)),
        [v.mean() for v in values],
        yerr=[v.std() for v in values],
        capsize=3,
        color=[method_color(n) for n in names],
    )
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(key.replace("_", " "))
    low = min(v.min() for v in values)
    ax.set_ylim(max(0.0, low - 0.1 * (1 - low) - 0.02), 1.0 if key.endswith("accuracy") else None)
    if title:
        ax.set_title(title)
    return fig


_FRACTION_COLOR = {0.0: "0.6", 0.25: "C0", 0.5: "C1", 1.0: "C2"}


def fraction_bars(counts: dict, *, title: str | None = None, ax=None):
    """Stacked bars of the fractions ``t`` of the teleports' paths a Teleporter applied (0: declined).

    Each bar is split by the values of ``t`` met, from 0 up (declined in grey, the look-ahead's ¼, ½, 1 in
    fixed colours).

    Args:
        counts: a bar's label (an optimiser) → the list of the ``t`` its teleports took.
        title: the axes' title.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.
    """
    fig, ax = axes_of(ax, figsize=(5.0, 3.4))
    labels = list(counts)
    values = sorted({float(t) for ts in counts.values() for t in ts})
    bottom = np.zeros(len(labels))
    for i, value in enumerate(values):
        heights = np.array([sum(float(t) == value for t in counts[k]) for k in labels], dtype=float)
        color = _FRACTION_COLOR.get(value, f"C{3 + i}")
        ax.bar(range(len(labels)), heights, bottom=bottom, color=color, label=f"t = {value:g}")
        bottom += heights
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("teleports")
    if values:  # the legend in a band above the tallest bar
        ax.set_ylim(0, 1.3 * max(bottom.max(), 1))
        ax.legend(fontsize=8, loc="upper center", ncol=len(values), handlelength=1, columnspacing=0.8)
    if title:
        ax.set_title(title)
    return fig


def measure_scatter(nets, measure: str, *, key: str = "test_loss", by: str = "lr", title: str | None = None, ax=None):
    """A measure of each trained net against its ``key``, one dot per net, coloured by ``by``.

    Args:
        nets: records with ``measure``, ``key`` and ``by`` (the correlation experiment's).
        measure: the record field on the x axis (``sharpness``, ``adaptive_sharpness``, ``curvature``).
        key: the record field on the y axis (``test_loss`` or ``loss``).
        by: the field whose values get a colour each (the nets' step).
        title: the axes' title.
        ax: the axes to draw on; by default a new figure's.

    Returns:
        The figure.
    """
    fig, ax = axes_of(ax, figsize=(4.2, 3.4))
    for i, value in enumerate(sorted({n[by] for n in nets})):
        group = [n for n in nets if n[by] == value]
        ax.plot([n[measure] for n in group], [n[key] for n in group], "o", ms=4, color=f"C{i}", label=f"{by} {value:g}")
    ax.set_xlabel(measure.replace("_", " "))
    ax.set_ylabel(LABELS.get(key, key))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
