"""What every figure of the report shares: colours per method, panels, log axes, diverged runs.

Methods keep one colour across every figure (:func:`method_color`); a row of axes for the parts
(a), (b), … of one figure comes from :func:`panels`; log axes get Unicode tick labels
(:func:`log_axis`), and values beyond :data:`DIVERGED` are left out of the lines (:func:`finite`).
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogFormatterSciNotation, NullLocator

LABELS = {
    "loss": "Loss",
    "test_loss": "Held-out loss",
    "val_loss": "Validation loss",
    "grad_norm_sq": "‖∇L‖²",
    "time_s": "Time (s)",
    "epoch": "Epoch",
    "steps": "Step",
    "evaluations": "Gradients + Hessian-vector products",
}
#: tab10 index of each optimiser; its teleporting variant takes the next colour, except the teleports of
#: :data:`_TELEPORT_COLOR`, which are drawn beside the main one and keep a colour of their own
_COLOR_INDEX = {"gd": 0, "gd-ls": 0, "sgd": 0, "adagrad": 2, "momentum": 2, "rmsprop": 4, "adam": 6, "adagrad-torch": 8}

_TELEPORT_COLOR = {
    "sharpness-decrease": "C2",
    "sharpness-increase": "C3",
    "curvature-decrease": "C8",
    "curvature-increase": "C9",
    "gln": "C4",
    "gln-updated": "C6",
    "posscale-ref": "C7",
    "levelset-slp": "C5",
    "so2": "C9",
    "rescale-lookahead": "C9",
    "transport-always": "C3",
    "reset-always": "C5",
    "transport-lookahead": "C9",
    "reset-lookahead": "C8",
}


def method_color(method: str) -> str:
    """A fixed colour per method: ``C<k>`` for the optimiser, ``C<k+1>`` when it teleports.

    Some teleports have a colour of their own, whatever the optimiser.

    Args:
        method: the method's name, ``optimizer`` or ``optimizer+teleport``.

    Returns:
        A matplotlib colour.
    """
    base, _, teleport = method.partition("+")
    if teleport in _TELEPORT_COLOR:
        return _TELEPORT_COLOR[teleport]
    return f"C{_COLOR_INDEX.get(base, 6) + (1 if teleport else 0)}"


def panels(n: int, *, width: float = 4.4, height: float = 3.5):
    """A row of ``n`` axes for the sub-figures (a), (b), … of one report figure.

    Args:
        n: the number of axes.
        width: each axes' width, in inches.
        height: the figure's height, in inches.

    Returns:
        ``(fig, axes)``: the figure and the list of its axes.
    """
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), layout="constrained", squeeze=False)
    return fig, list(axes[0])


#: beyond this magnitude a run counts as diverged and is not drawn (log axes cannot place ticks there)
DIVERGED = 1e100


def finite(values) -> np.ndarray:
    """``values`` with non-finite and diverged entries turned into NaN, which matplotlib leaves out.

    Args:
        values: numbers (a list or an array).

    Returns:
        A float array; entries of magnitude :data:`DIVERGED` or more, or not finite, are NaN.
    """
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
        """The label of the tick at ``x``.

        Args:
            x: the tick's value.
            pos: its position, as matplotlib passes it.

        Returns:
            The label, with Unicode superscripts and minus signs.
        """
        label = super().__call__(x, pos)
        match = _MATH_LABEL.match(label)
        if match is None:
            return label
        coefficient, base, exponent = match.groups()
        text = base + (exponent.translate(_SUPERSCRIPT) if exponent is not None else "")
        return (f"{coefficient}×{text}" if coefficient else text).replace("-", "−")


def log_axis(axis, values=None) -> None:
    """Unicode tick labels on a log axis; minor ticks only when ``values`` span at most two decades.

    Args:
        axis: the matplotlib axis (``ax.xaxis`` or ``ax.yaxis``).
        values: the values drawn along it (their positive finite entries count), or ``None``: minor ticks kept.
    """
    axis.set_major_formatter(UnicodeLogFormatter())
    axis.set_minor_formatter(UnicodeLogFormatter(labelOnlyBase=False))
    if values is None:
        return
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 100:
        axis.set_minor_locator(NullLocator())


def axes_of(ax, figsize=(5.0, 3.6)):
    """``(figure, ax)``: the given axes' figure, or a new figure with one axes.

    Args:
        ax: the axes to draw on, or ``None``.
        figsize: the new figure's size, in inches.

    Returns:
        ``(figure, ax)``.
    """
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax
