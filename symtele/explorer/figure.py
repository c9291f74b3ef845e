"""The explorer's figure: four panels whose artists are made once and updated for each result.

Loss per epoch, loss against wall-clock time, ‖∇L‖² per epoch, and the trajectory on the
level sets for the 2-D problems. It shows a :class:`symtele.explorer.runs.Result` and imports
nothing else of the explorer. Used by :class:`symtele.explorer.panel.Explorer`.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.ticker import FuncFormatter, NullLocator
from PIL import Image as PILImage

from ..problems import PROBLEMS_2D


def _log_limits(arrays) -> tuple[float, float]:
    """Limits of a log axis showing every positive finite value of ``arrays``."""
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 1e-12, 1.0
    return float(values.min()) / 1.5, float(values.max()) * 1.5


class Plot:
    """The explorer's figure: loss per epoch, loss against time, ‖∇L‖² per epoch, trajectory.

    The curves' artists are made once and updated in place by :meth:`show` (a
    redraw recreates no ticks, which is most of a redraw's cost); the mean over
    seeds is a line, their range a shaded band, the teleports dotted verticals.

    Args:
        figure: the matplotlib figure to draw on (its 2 × 2 axes are made here).
    """

    WHICH = {"baseline": "C0", "teleported": "C1"}

    def __init__(self, figure):
        self.figure = figure
        self.axes = figure.subplots(2, 2)
        figure.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.96, hspace=0.3, wspace=0.2)
        ax_loss, ax_time, ax_grad, self.ax_path = self.axes.ravel()
        self.panels = {"loss": ax_loss, "grad_norm_sq": ax_grad}
        self.ax_time = ax_time
        self.lines, self.bands = {}, {}
        for which, color in self.WHICH.items():
            for panel, ax in self.panels.items():
                (self.lines[panel, which],) = ax.plot([], [], color=color)
                self.bands[panel, which] = ax.fill_between([0, 1], [1, 1], [1, 1], color=color, alpha=0.2, linewidth=0)
            (self.lines["time", which],) = ax_time.plot([], [], color=color)
        self.marks = {}
        for panel, ax in self.panels.items():
            self.marks[panel] = LineCollection(
                [], colors="C1", linestyles=":", linewidths=0.8, transform=ax.get_xaxis_transform()
            )
            ax.add_collection(self.marks[panel], autolim=False)
        self.targets = [
            ax.axhline(1.0, color="0.5", linestyle="--", linewidth=0.8, label="no-teleport final loss")
            for ax in (ax_loss, ax_time)
        ]
        ax_loss.set(title="loss per epoch", xlabel="epoch", ylabel="loss", yscale="log")
        ax_time.set(title="loss against wall-clock time", xlabel="seconds", ylabel="loss", yscale="log")
        ax_grad.set(title="‖∇L‖² per epoch", xlabel="epoch", ylabel="‖∇L‖²", yscale="log")
        for ax in (ax_loss, ax_time, ax_grad):  # plain tick labels: mathtext and minor ticks are slow
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    def show(self, result) -> None:
        """Put ``result`` into the figure's artists.

        Args:
            result: the :class:`~symtele.explorer.runs.Result` to show.
        """
        shown = {"baseline": result.baseline, "teleported": result.teleported}
        for which, c in shown.items():
            for key in [("loss", which), ("grad_norm_sq", which), ("time", which)]:
                self.lines[key].set_visible(c is not None)
            for panel in self.panels:
                self.bands[panel, which].set_visible(c is not None and c.loss.shape[1] > 1)
            if c is None:
                continue
            x = np.arange(len(c.loss))
            for panel in self.panels:
                values = getattr(c, panel)
                self.lines[panel, which].set_data(x, values.mean(1))
                self.lines[panel, which].set_label(c.label)
                self.bands[panel, which].set_data(x, values.min(1), values.max(1))
            self.lines["time", which].set_data(c.time_s, c.loss.mean(1))
        epochs = [] if result.teleported is None else result.teleported.teleport_epochs
        target = float(result.baseline.loss[-1].mean())
        for line in self.targets:
            line.set_ydata([target, target])
        runs = [c for c in shown.values() if c is not None]
        last = max(len(result.baseline.loss) - 1, 1)
        for panel, ax in self.panels.items():
            self.marks[panel].set_segments([[(e, 0), (e, 1)] for e in epochs])
            ax.set_xlim(0, last)
            ax.set_ylim(*_log_limits([getattr(c, panel) for c in runs]))
        self.ax_time.set_xlim(0, max(float(np.nanmax(c.time_s)) for c in runs) * 1.02 or 1.0)
        self.ax_time.set_ylim(*_log_limits([c.loss.mean(1) for c in runs]))
        handles = [self.lines["loss", which] for which, c in shown.items() if c is not None]
        self.panels["loss"].legend(handles=handles + self.targets[:1], fontsize=7, loc="upper right")
        self._trajectory(result)

    def _trajectory(self, result) -> None:
        ax = self.ax_path
        ax.cla()
        problem = PROBLEMS_2D.get(result.settings.problem)
        if problem is None:
            ax.set_axis_off()
            ax.text(
                0.5,
                0.5,
                "the trajectory is drawn for the 2-D problems",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
            return
        ax.set_axis_on()
        runs = [c for c in (result.baseline, result.teleported) if c is not None]
        points = np.concatenate([c.path.reshape(-1, 2) for c in runs] + [np.array([problem.minimum])])
        points = points[np.isfinite(points).all(1)]
        low, high = points.min(0), points.max(0)
        pad = 0.15 * np.maximum(high - low, 1e-3)
        gx, gy, f = problem.grid((low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1]), n=100)
        top = max(float(f.max()), 1e-6)
        ax.contour(
            gx, gy, f, levels=np.geomspace(max(float(f.min()), top * 1e-6), top, 15), colors="0.75", linewidths=0.6
        )
        for c, color in zip(runs, self.WHICH.values()):
            for k in range(c.path.shape[1]):
                ax.plot(
                    c.path[:, k, 0],
                    c.path[:, k, 1],
                    ".-",
                    color=color,
                    markersize=3,
                    linewidth=0.8,
                    label=c.label if k == 0 else None,
                )
        ax.plot(*problem.minimum, "k*", markersize=9, label="minimum")
        ax.set(title="trajectory on the level sets", xlabel="x", ylabel="y")
        ax.legend(fontsize=7)

    def png(self) -> bytes:
        """The figure as PNG bytes (rendered by Agg, lightly compressed: it is redrawn often)."""
        canvas = FigureCanvasAgg(self.figure)
        canvas.draw()
        buffer = io.BytesIO()
        PILImage.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).save(
            buffer, "png", compress_level=1
        )
        return buffer.getvalue()
