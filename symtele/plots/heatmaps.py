"""Heatmaps of a schedule sweep: teleport epoch × teleport learning rate, one panel per group.

``sweep_heatmaps(rows, value, optimizer=...)`` draws, from the per-point rows of
:func:`symtele.study.sweep.summarize`, one panel per symmetry group with the teleport epoch
across and the teleport learning rate down. Each cell shows ``value`` (the mean over
seeds); a cell without a value (a seed never reached the baseline's loss, or diverged)
is grey and marked "–". The panel's title gives the no-teleport baseline's value.
"""

from __future__ import annotations

import numpy as np

from .. import checks

VALUES = {
    "final_loss": ("final loss", "{:.3f}"),
    "epochs_to_baseline": ("epochs to the baseline's final loss", "{:.0f}"),
    "seconds_to_baseline": ("seconds to the baseline's final loss", "{:.3f}"),
}


def _cell(value, fmt):
    return "–" if value is None else fmt.format(value)


def sweep_heatmaps(rows: list[dict], value: str, *, optimizer: str, note: str | None = None):
    """A figure with one heatmap of ``value`` per group for ``optimizer``'s grid points.

    ``value`` and ``note`` are columns of the summary rows (:data:`VALUES`); ``note``,
    if given, is printed under each cell's value. Lower values, the better ones for all
    three, are brighter (reversed viridis).

    Args:
        rows: the sweep's summary rows.
        value: the column shown by colour, a key of :data:`VALUES`.
        optimizer: the optimiser whose grid points are shown.
        note: another column of :data:`VALUES` printed under each value, or ``None``.

    Returns:
        The figure.

    Raises:
        ValueError: a ``value`` or ``note`` not in :data:`VALUES`; no rows for ``optimizer``.
    """
    import matplotlib.pyplot as plt

    checks.choice("value", value, VALUES)
    if note is not None:
        checks.choice("note", note, VALUES)
    rows = [r for r in rows if r["optimizer"] == optimizer]
    if not rows:
        raise ValueError(f"Invalid optimizer: {optimizer!r} (no rows for it in this sweep)")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    label, fmt = VALUES[value]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        points = [r for r in rows if r["group"] == group and r["teleport_epoch"] is not None]
        baseline = next(r for r in rows if r["group"] == group and r["teleport_epoch"] is None)
        epochs = sorted({r["teleport_epoch"] for r in points})
        lrs = sorted({r["teleport_lr"] for r in points})
        grid = np.full((len(lrs), len(epochs)), np.nan)
        notes = {}
        for r in points:
            i, j = lrs.index(r["teleport_lr"]), epochs.index(r["teleport_epoch"])
            if r[value] is not None:
                grid[i, j] = r[value]
            notes[i, j] = _cell(r[value], fmt)
            if note is not None and r[value] is not None:
                notes[i, j] += f"\n{_cell(r[note], VALUES[note][1])}"
        colours = plt.get_cmap("viridis_r").with_extremes(bad="0.85")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=colours, aspect="auto")
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), text in notes.items():
            dark = np.isfinite(grid[i, j]) and grid[i, j] > middle  # dark end of the colour map
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlabel("teleport epoch")
        ax.set_ylabel("teleport learning rate")
        ax.set_title(f"{optimizer} + {group} (no teleport: {_cell(baseline[value], fmt)})", fontsize=10)
        fig.colorbar(image, ax=ax, label=label, shrink=0.85)
    fig.tight_layout()
    return fig
