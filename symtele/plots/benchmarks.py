"""Figures and tables of the benchmark records (:mod:`symtele.study.bench`), as pure functions of them.

* :func:`cost_table` — grad evaluations per teleport, one row per network, one column per (device, method).
* :func:`scaling`    — seconds per teleport (and per gradient), or gradient evaluations, against the
                       number of parameters, log–log.
* :func:`target_bars` — seconds to reach the target loss per method, with the speed-ups written on the bars.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from .style import log_axis, method_color

METHOD_LABELS = {
    "posscale": "closed form",
    "posscale-ref": "double backprop (reference)",
    "gln": "GL(n)",
    "levelset-step": "level set, one step",
    "grad": "one gradient",
}
_MARKERS = {"cpu": "o", "cuda": "s"}


def device_type(record) -> str:
    """``cpu`` or ``cuda``: a benchmark record's device without its index.

    Args:
        record: a benchmark record (its ``device``).

    Returns:
        The device type.
    """
    return str(record["device"]).split(":")[0]


def cost_table(records):
    """A ``pandas.DataFrame`` of ``grad_evals``: rows ``dims``, columns ``(device, method)``; NaN where not run.

    Args:
        records: the teleport-cost benchmark records (``dims``, ``device``, ``method``, ``grad_evals``).

    Returns:
        The table, its rows in the records' order.
    """
    import pandas as pd

    rows = [
        {
            "dims": str(r["dims"]),
            "parameters": r.get("n_params"),
            "device": device_type(r),
            "method": r["method"],
            "grad_evals": r["grad_evals"],
        }
        for r in records
    ]
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["dims"]))
    table = frame.pivot_table(
        index=["dims"], columns=["device", "method"], values="grad_evals", aggfunc="first", dropna=False
    )
    methods = [m for m in METHOD_LABELS if m in set(frame["method"])]
    devices = list(dict.fromkeys(frame["device"]))
    columns = [(d, m) for d in devices for m in methods if (d, m) in table.columns]
    return table.reindex(index=order, columns=pd.MultiIndex.from_tuples(columns, names=["device", "method"]))


def scaling(records, *, methods=("posscale", "posscale-ref"), y: str = "seconds", ax=None, title: str | None = None):
    """Cost against ``n_params``, log–log, one line per (method, device).

    ``y="seconds"``: ``teleport_s`` of each method and ``grad_s`` (one gradient, dashed);
    ``y="grad_evals"``: the teleports' cost in gradient evaluations.

    Args:
        records: the teleport-cost benchmark records; those without ``grad_evals`` are left out.
        methods: the teleport methods drawn.
        y: ``seconds`` or ``grad_evals``.
        ax: the axes to draw on; by default a new figure's.
        title: the axes' title.

    Returns:
        The figure.

    Raises:
        ValueError: another ``y``.
    """
    if y not in ("seconds", "grad_evals"):
        raise ValueError(f"Invalid y: {y!r} (use 'seconds' or 'grad_evals')")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.6))
    series = {}
    for r in records:
        if r.get("grad_evals") is None:
            continue
        dev = device_type(r)
        if r["method"] in methods:
            value = r["teleport_s"] if y == "seconds" else r["grad_evals"]
            series.setdefault((r["method"], dev), {})[r["n_params"]] = value
        if y == "seconds":
            series.setdefault(("grad", dev), {}).setdefault(r["n_params"], r["grad_s"])
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    colors["grad"] = "0.4"
    for (method, dev), points in sorted(series.items()):
        xs = sorted(points)
        ax.plot(
            xs,
            [points[x] for x in xs],
            marker=_MARKERS.get(dev, "^"),
            color=colors.get(method, "C9"),
            linestyle="-" if method != "grad" else "--",
            label=f"{METHOD_LABELS.get(method, method)} ({dev})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis)
    log_axis(ax.yaxis)
    ax.set_xlabel("Parameters")
    ax.set_ylabel("Seconds per call" if y == "seconds" else "Gradient evaluations per teleport")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax.figure


def target_bars(result, *, labels: dict | None = None, ax=None, title: str | None = None):
    """Bars of ``result["seconds"]`` (:func:`symtele.study.bench.time_to_target`), speed-ups on the teleport bars.

    Args:
        result: the time-to-target result (``seconds`` and ``speedup`` by run; runs that never reached the
            target, ``None``, are left out).
        labels: tick labels by run, instead of the run names.
        ax: the axes to draw on; by default a new figure's.
        title: the axes' title.

    Returns:
        The figure.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.6))
    labels = labels or {}
    names = [n for n, s in result["seconds"].items() if s is not None]
    seconds = [1e3 * result["seconds"][n] for n in names]
    bars = ax.bar(range(len(names)), seconds, color=[method_color(n.split("@")[0]) for n in names])
    for bar, name in zip(bars, names):
        speedup = result["speedup"].get(name)
        if speedup is not None:
            ax.annotate(
                f"{speedup:.1f}×",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([labels.get(n, n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Time to target (ms)")
    if title:
        ax.set_title(title)
    return ax.figure
