"""The explorer's panel: ipywidgets controls, one figure redrawn in place, a summary and messages.

Every change of a control starts a run (:func:`symtele.explorer.runs.run`) in a worker thread; a
generation counter lets a newer change stop an older run at its next epoch instead of queueing
behind it. The figure is :class:`symtele.explorer.figure.Plot`.
"""

from __future__ import annotations

import functools
import html
import threading
import time
from contextlib import contextmanager
from dataclasses import fields

import torch
from matplotlib.figure import Figure

from .. import checks
from ..optimizers import OPTIMIZERS
from ..study.settings import SEEDS
from .controls import GROUP_LABELS, OPTIMIZER_LABELS, PROBLEM_LABELS, SCHEDULES, Controls, check, suggest
from .figure import Plot
from .runs import baseline_key, run


class Explorer:
    """The panel: controls, the figure (one PNG image widget redrawn in place), a summary and messages.

    ``Explorer(**values)`` takes any :class:`~symtele.explorer.controls.Controls` field as a keyword and starts
    the first run. Choosing a problem, optimiser or group fills the numeric fields with
    suggested values, which can then be edited. ``wait()`` blocks until the latest run
    has finished; ``log`` lists ``(generation, outcome)`` of every run started.

    Args:
        **values: initial values of controls, by field name.
    """

    def __init__(self, **values):
        import ipywidgets as w

        names = [f.name for f in fields(Controls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"Invalid setting: {unknown[0]!r} (choose from {names})")
        start = Controls(
            **{
                **suggest(
                    values.get("problem", Controls.problem),
                    values.get("optimizer", Controls.optimizer),
                    values.get("group", Controls.group),
                ),
                **values,
            }
        )
        checks.choice("schedule", start.schedule, SCHEDULES)
        self.controls = self._make_controls(w)
        self.generation = 0
        self.log: list[tuple[int, str]] = []
        self.result = None
        self.redraw_s: float | None = None
        self._holding = False
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._baseline: tuple | None = None
        self.plot = Plot(Figure(figsize=(10, 7), dpi=80))
        self.image = w.Image(format="png")
        self.summary = w.HTML()
        self.message = w.HTML()
        self.status = w.HTML()
        self.progress = w.FloatProgress(min=0.0, max=1.0, description="run", **self._wide(w))
        for name, control in self.controls.items():
            control.add_class(f"symtele-{name}")
            control.observe(functools.partial(self._changed, name), names="value")
        for part, name in (
            (self.image, "figure"),
            (self.summary, "summary"),
            (self.message, "message"),
            (self.status, "status"),
        ):
            part.add_class(f"symtele-{name}")
        c = self.controls
        column = [
            [c[k] for k in ("problem", "optimizer", "lr", "epochs", "seeds")],
            [c[k] for k in ("group", "schedule", "at", "every", "start")],
            [c["teleport_lr"], c["teleport_steps"], self.progress, self.status],
        ]
        third = w.Layout(width="33%")
        self.widget = w.VBox(
            [w.HBox([w.VBox(col, layout=third) for col in column]), self.message, self.summary, self.image]
        )
        self.set(**{name: getattr(start, name) for name in names})

    @staticmethod
    def _wide(w) -> dict:
        return dict(style={"description_width": "110px"}, layout=w.Layout(width="96%"))

    def _make_controls(self, w) -> dict:
        """One widget per field of :class:`Controls`, in the panel's order."""
        wide = self._wide(w)
        return {
            "problem": w.Dropdown(options=[(v, k) for k, v in PROBLEM_LABELS.items()], description="problem", **wide),
            "optimizer": w.Dropdown(
                options=[(OPTIMIZER_LABELS[k], k) for k in OPTIMIZERS], description="optimizer", **wide
            ),
            "lr": w.FloatText(description="learning rate", **wide),
            "epochs": w.IntText(description="epochs", **wide),
            "seeds": w.IntSlider(min=1, max=len(SEEDS), description="seeds", continuous_update=False, **wide),
            "group": w.Dropdown(
                options=[(v, k) for k, v in GROUP_LABELS.items()], description="teleport group", **wide
            ),
            "schedule": w.Dropdown(options=[(v, k) for k, v in SCHEDULES.items()], description="schedule", **wide),
            "at": w.Text(description="teleport epochs", continuous_update=False, **wide),
            "every": w.IntText(description="every k", **wide),
            "start": w.IntText(description="from epoch", **wide),
            "teleport_lr": w.FloatText(description="teleport lr (ρ)", **wide),
            "teleport_steps": w.IntText(description="teleport steps", **wide),
        }

    def settings(self) -> Controls:
        """The controls' current values."""
        return Controls(**{name: control.value for name, control in self.controls.items()})

    def set(self, **values) -> None:
        """Set several controls at once, then start one run (as a single change would).

        Args:
            **values: new values of controls, by name.

        Raises:
            ValueError: a name that is not a control.
        """
        with self._hold():
            for name, value in values.items():
                if name not in self.controls:
                    raise ValueError(f"Invalid control: {name!r} (choose one of {sorted(self.controls)})")
                self.controls[name].value = value
        self.update()

    @contextmanager
    def _hold(self):
        held, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = held

    def _changed(self, name: str, change) -> None:
        if self._holding:
            return
        s = self.settings()
        fill = {
            "problem": ("epochs", "at", "lr", "teleport_lr", "teleport_steps"),
            "optimizer": ("lr", "teleport_lr"),
            "group": ("teleport_lr", "teleport_steps"),
        }.get(name, ())
        if fill:
            suggested = suggest(s.problem, s.optimizer, s.group)
            with self._hold():
                if name == "problem":
                    self.controls["schedule"].value = "at"
                for key in fill:
                    self.controls[key].value = suggested[key]
        self.update()

    def _enable(self, s: Controls) -> None:
        off = s.group == "none"
        for name in ("schedule", "teleport_lr", "teleport_steps"):
            self.controls[name].disabled = off
        self.controls["at"].disabled = off or s.schedule != "at"
        self.controls["every"].disabled = self.controls["start"].disabled = off or s.schedule != "every"

    def update(self) -> None:
        """Supersede any running run and start one for the current controls (or show why not)."""
        self.generation += 1
        generation, s = self.generation, self.settings()
        self._enable(s)
        message = check(s)
        if message is not None:
            self.message.value = f'<span style="color:#b00020">⚠ {html.escape(message)}</span>'
            self.summary.value = ""
            self.log.append((generation, "invalid"))
            return
        self.message.value = ""
        self.summary.value = "<i>running…</i>"
        self.status.value = ""
        self.progress.value = 0.0
        worker = threading.Thread(
            target=self._work,
            args=(generation, s, self._worker, time.perf_counter()),
            name=f"explorer-run-{generation}",
            daemon=True,
        )
        self._worker = worker
        worker.start()

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the latest run has finished, or ``timeout`` seconds have passed waiting for it.

        Args:
            timeout: the longest wait for one run, in seconds; a run started meanwhile is waited for in turn.
        """
        worker = self._worker
        while worker is not None:
            worker.join(timeout)
            if worker is self._worker:
                return
            worker = self._worker

    def _work(self, generation: int, s: Controls, previous: threading.Thread | None, started: float) -> None:
        if previous is not None:
            previous.join()  # it stops at its next epoch: it polls the generation

        def stale():
            return self.generation != generation

        shown_at = time.perf_counter()

        def progress(fraction):  # at most ten updates a second: each is a message to the browser
            nonlocal shown_at
            if not stale() and time.perf_counter() - shown_at >= 0.1:
                shown_at = time.perf_counter()
                self.progress.value = fraction

        try:
            cached = self._baseline
            baseline = cached[1] if cached is not None and cached[0] == baseline_key(s) else None
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # small problems: one thread is fastest, and steady on a busy machine
            try:
                result = None if stale() else run(s, should_stop=stale, progress=progress, baseline=baseline)
            finally:
                torch.set_num_threads(threads)
            with self._lock:
                if result is None or stale():
                    self.log.append((generation, "superseded"))
                    return
                self._baseline = (baseline_key(s), result.baseline)
                self.plot.show(result)
                self.image.value = self.plot.png()
                self.redraw_s = time.perf_counter() - started
                self.status.value = f"run and redraw: {self.redraw_s:.2f} s"
                self.progress.value = 1.0
                self.result = result
                self.summary.value = html.escape(result.summary)  # last: the browser test waits for it
                self.log.append((generation, "done"))
        except Exception as error:  # the panel answers any failure with a message, never a traceback
            if not stale():
                self.message.value = (
                    f'<span style="color:#b00020">⚠ the run failed: '
                    f"{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>"
                )
                self.summary.value = ""
            self.log.append((generation, "failed"))
