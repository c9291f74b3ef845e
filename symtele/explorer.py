"""An interactive panel for exploring teleport schedules (``notebooks/explorer.ipynb``).

The logic is plain Python, testable without a browser:

* :class:`Settings` holds the value of every control;
* :func:`check` answers an invalid combination with a message (``None`` when valid);
* :func:`run` trains the chosen problem with the teleport and without it (the baseline),
  and returns the curves and a one-line summary;
* :class:`~symtele.explorer_figure.Plot` shows a :class:`Result` in one figure, updated in place;
* :class:`Explorer` wires ipywidgets controls to these. Every change starts a run in
  a worker thread; a generation counter lets a newer change stop an older run at its
  next epoch (through ``train``'s ``should_stop``) instead of queueing behind it.
"""
from __future__ import annotations

import functools
import html
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from . import checks
from .explorer_figure import Plot
from .mlp import SEEDS, seed_task
from .models import digits_mlp
from .optimizers import OPTIMIZERS, Optimizer
from .problems import PROBLEMS as PROBLEMS_2D
from .problems import Problem2D
from .schedule import Schedule
from .teleports import GLn, LevelSet, PositiveScale, SO2
from .training import train

PROBLEMS = {"quadratic": "quadratic x² + 9y²", "booth": "Booth", "rosenbrock": "Rosenbrock",
            "seed-relu": "seed ReLU task", "seed-leaky": "seed task, LeakyReLU(0.1)", "digits": "digits MLP"}
OPTIMIZER_LABELS = {"gd": "GD", "gd-ls": "GD + line search", "adagrad": "AdaGrad", "sgd": "torch SGD",
                    "momentum": "torch SGD, momentum 0.9", "rmsprop": "torch RMSprop", "adam": "torch Adam",
                    "adagrad-torch": "torch Adagrad"}
GROUPS = {"none": "none", "so2": "SO(2)", "posscale": "positive scale", "gln": "GL(n)", "levelset": "level set"}
SCHEDULES = {"at": "at epochs", "every": "every k epochs"}
MAX_EPOCHS = 100_000

#: suggested learning rate per problem and optimiser, epochs and teleport epochs per problem
SUGGESTED_LR = {
    "quadratic": dict(gd=0.08, adagrad=1.0, sgd=0.08, momentum=0.02, rmsprop=0.1, adam=0.5),
    "booth": dict(gd=0.05, adagrad=1.0, sgd=0.05, momentum=0.01, rmsprop=0.1, adam=0.5),
    "rosenbrock": dict(gd=5e-4, adagrad=0.1, sgd=5e-4, momentum=1e-4, rmsprop=0.01, adam=0.05),
    "seed-relu": dict(gd=1e-4, adagrad=0.1, sgd=1e-4, momentum=1e-5, rmsprop=1e-3, adam=1e-2),
    "digits": dict(gd=0.1, adagrad=0.05, sgd=0.1, momentum=0.05, rmsprop=1e-3, adam=1e-3),
}
SUGGESTED_LR["seed-leaky"] = SUGGESTED_LR["seed-relu"]
SUGGESTED_RUN = {"quadratic": (10, "4"), "booth": (30, "3"), "rosenbrock": (100, "5, 50"),
                 "seed-relu": (300, "5"), "seed-leaky": (300, "5"), "digits": (100, "5")}
#: suggested teleport learning rate (ρ for the level set) and steps per group
SUGGESTED_TELEPORT = {"none": (1e-4, 10), "so2": (1e-3, 10), "posscale": (1e-4, 10), "gln": (1e-7, 8),
                      "levelset": (1.0, 100)}


@dataclass(frozen=True)
class Settings:
    """The value of every control; the defaults are the seed task with one positive-scale teleport."""

    problem: str = "seed-relu"
    optimizer: str = "gd"
    lr: float = 1e-4
    group: str = "posscale"
    schedule: str = "at"
    at: str = "5"
    every: int = 50
    start: int = 5
    teleport_lr: float = 1e-4
    teleport_steps: int = 10
    epochs: int = 300
    seeds: int = 5


def suggest(problem: str, optimizer: str, group: str) -> dict:
    """Suggested values of the numeric controls for a problem, optimiser and group.

    Learning rates that train steadily; the level set's ρ and 100 steps; positive scaling at
    1e-2 on the digits, else at the seed's 1e-4 with gd, gd-ls and sgd and at its AdaGrad rate,
    1e-5, with every other optimiser (momentum included).
    """
    checks.choice("problem", problem, PROBLEMS)
    checks.choice("optimizer", optimizer, OPTIMIZERS)
    checks.choice("group", group, GROUPS)
    rates = SUGGESTED_LR[problem]
    lr = 1.0 if optimizer == "gd-ls" else rates["adagrad" if optimizer == "adagrad-torch" else optimizer]
    teleport_lr, steps = SUGGESTED_TELEPORT[group]
    if group == "posscale" and problem == "digits":
        teleport_lr = 1e-2
    elif group == "posscale" and optimizer not in ("gd", "gd-ls", "sgd"):
        teleport_lr = 1e-5
    epochs, at = SUGGESTED_RUN[problem]
    return dict(lr=lr, teleport_lr=teleport_lr, teleport_steps=steps, epochs=epochs, at=at)


def schedule_of(settings: Settings) -> Schedule:
    """The :class:`Schedule` the schedule controls describe."""
    if settings.schedule == "every":
        return Schedule.every_k(settings.every, settings.start)
    words = settings.at.replace(",", " ").split()
    try:
        epochs = [int(w) for w in words]
    except ValueError:
        raise ValueError(f"Invalid teleport epochs: {settings.at!r} (write integers separated by commas, "
                         "e.g. 5 or 5, 50)") from None
    if not epochs:
        raise ValueError("Invalid teleport epochs: '' (give at least one epoch, or choose the group 'none')")
    return Schedule.at(epochs)


def teleport_of(settings: Settings):
    """The teleport object for the chosen group, or ``None``."""
    lr, steps = settings.teleport_lr, settings.teleport_steps
    if settings.group == "so2":
        return SO2(lr=lr, steps=steps)
    if settings.group == "posscale":
        return PositiveScale(lr=lr, steps=steps)
    if settings.group == "gln":
        return GLn(lr=lr, steps=steps)
    if settings.group == "levelset":
        return LevelSet(rho=lr, steps=steps)
    return None


def _validate(s: Settings):
    """Raise ``ValueError``/``TypeError`` naming the first invalid control or combination."""
    checks.choice("problem", s.problem, PROBLEMS)
    checks.choice("teleport group", s.group, GROUPS)
    checks.choice("schedule", s.schedule, SCHEDULES)
    Optimizer(s.optimizer, s.lr)
    checks.count("epochs", s.epochs, minimum=1)
    if s.epochs > MAX_EPOCHS:
        raise ValueError(f"Invalid epochs: {s.epochs} (at most {MAX_EPOCHS} in the explorer)")
    if isinstance(s.seeds, bool) or not isinstance(s.seeds, int) or not 1 <= s.seeds <= len(SEEDS):
        raise ValueError(f"Invalid seeds: {s.seeds!r} (choose 1 to {len(SEEDS)})")
    if s.group == "none":
        return
    schedule_of(s).epochs_in(s.epochs)
    teleport_of(s)
    label = PROBLEMS[s.problem]
    if s.group == "so2" and s.problem not in PROBLEMS_2D:
        raise TypeError(f"Invalid teleport group: SO(2) acts on the 2-D problems only, not on the {label}")
    if s.group == "posscale" and s.problem in PROBLEMS_2D:
        raise TypeError(f"Invalid teleport group: positive scale acts on ReLU networks, not on {label}")
    if s.group == "gln" and s.problem != "seed-leaky":
        raise TypeError(f"Invalid teleport group: GL(n) needs a LeakyReLU network, not the {label} "
                        f"(choose the problem '{PROBLEMS['seed-leaky']}')")
    if s.group == "levelset" and s.seeds > 1:
        raise ValueError(f"Invalid seeds: {s.seeds} (the level-set teleport takes one problem copy: set seeds to 1)")


def check(settings: Settings) -> str | None:
    """A message naming what is wrong with ``settings``, or ``None`` when they can run."""
    try:
        _validate(settings)
    except (ValueError, TypeError) as error:
        return str(error)
    return None


@dataclass(frozen=True, eq=False)
class _Traced(Problem2D):
    """A 2-D problem that remembers each point its gradient is taken at: the run's trajectory."""

    points: list = field(default_factory=list)

    def loss_and_grad(self, params):
        self.points.append(params[0].detach().clone())
        return super().loss_and_grad(params)


def _traced(problem: Problem2D) -> _Traced:
    return _Traced(**{f.name: getattr(problem, f.name) for f in fields(Problem2D)})


@functools.lru_cache(maxsize=len(SEEDS))
def _digits(seed: int):
    objective, params, _ = digits_mlp(seed)
    return objective, params


def _copies(s: Settings) -> list:
    """``(objective, params)`` pairs to train: one batched pair, or one per seed for the digits."""
    if s.problem in PROBLEMS_2D:
        problem = _traced(PROBLEMS_2D[s.problem])
        (w,) = problem.initial_params()
        return [(problem, [w if s.seeds == 1 else w.expand(s.seeds, 2).clone()])]
    if s.problem == "digits":
        return [_digits(seed) for seed in range(s.seeds)]
    seeds = SEEDS[0] if s.seeds == 1 else SEEDS[:s.seeds]
    return [seed_task(seeds, negative_slope=0.1 if s.problem == "seed-leaky" else 0.0)]


@dataclass
class Curves:
    """One method over all seeds: ``loss`` and ``grad_norm_sq`` are (epochs × seeds) arrays.

    ``time_s`` is the wall-clock time of all seeds together (the digits' seeds run one
    after the other, so their times add up); ``path`` holds, for the 2-D problems, every
    point visited, teleported points included, as (points × seeds × 2).
    """

    label: str
    loss: np.ndarray
    grad_norm_sq: np.ndarray
    time_s: np.ndarray
    teleport_epochs: list
    teleport_cost_s: float
    path: np.ndarray | None = None

    def reach(self, target: float):
        """``(epoch, seconds)`` at which the mean loss first is ≤ ``target``, or ``None``."""
        hits = np.nonzero(self.loss.mean(1) <= target)[0]
        return None if hits.size == 0 else (int(hits[0]), float(self.time_s[hits[0]]))


@dataclass
class Result:
    """The baseline (no teleport), the teleported run (``None`` for the group 'none') and the summary line."""

    settings: Settings
    baseline: Curves
    teleported: Curves | None
    summary: str


def _columns(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a.reshape(len(a), -1)


class _Poll:
    """``should_stop`` for ``train``: counts epochs, reports progress, remembers a stop."""

    def __init__(self, total: int, should_stop, progress):
        self.total, self.done, self.stopped = total, 0, False
        self.should_stop, self.progress = should_stop, progress

    def __call__(self) -> bool:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done / self.total)
        self.stopped = self.stopped or bool(self.should_stop and self.should_stop())
        return self.stopped


def _train_curves(s: Settings, label: str, teleport: bool, poll: _Poll) -> Curves | None:
    histories, paths = [], []
    for objective, params in _copies(s):
        group = teleport_of(s) if teleport else None
        h = train(objective, params, optimizer=s.optimizer, lr=s.lr, epochs=s.epochs, teleport=group,
                  schedule=schedule_of(s) if teleport else None, should_stop=poll)
        if poll.stopped:
            return None
        histories.append(h)
        if isinstance(objective, _Traced):
            points = [p.numpy() for p in objective.points] + [h.final_params[0].numpy()]
            paths.append(np.stack(points).reshape(len(points), -1, 2))
    return Curves(
        label=label,
        loss=np.hstack([_columns(h.loss) for h in histories]),
        grad_norm_sq=np.hstack([_columns(h.grad_norm_sq) for h in histories]),
        time_s=np.sum([h.time_s for h in histories], axis=0),
        teleport_epochs=histories[0].teleport_epochs,
        teleport_cost_s=sum(h.teleport_cost_s for h in histories),
        path=paths[0] if paths else None,
    )


def baseline_key(s: Settings) -> tuple:
    """The settings the baseline depends on (a teleport change can reuse it)."""
    return s.problem, s.optimizer, s.lr, s.epochs, s.seeds


def run(settings: Settings, *, should_stop: Callable[[], bool] | None = None,
        progress: Callable[[float], None] | None = None, baseline: Curves | None = None) -> Result | None:
    """Train with and without the teleport; ``None`` if ``should_stop`` ended the run early.

    ``baseline`` reuses an earlier no-teleport run of the same :func:`baseline_key`.
    ``progress`` receives the fraction of epochs done. Raises ``ValueError`` on invalid settings.
    """
    _validate(settings)
    s = settings
    name = OPTIMIZER_LABELS[s.optimizer]
    teleport = s.group != "none"
    total = s.epochs * (s.seeds if s.problem == "digits" else 1) * ((baseline is None) + teleport)
    poll = _Poll(total, should_stop, progress)
    if baseline is None:
        baseline = _train_curves(s, f"{name}, no teleport", False, poll)
        if baseline is None:
            return None
    teleported = None
    if teleport:
        teleported = _train_curves(s, f"{name} + {GROUPS[s.group]}", True, poll)
        if teleported is None:
            return None
    return Result(s, baseline, teleported, summarise(s, baseline, teleported))


def _reach_text(reach) -> str:
    return "never" if reach is None else f"epoch {reach[0]}, {reach[1]:.3f} s"


def summarise(s: Settings, baseline: Curves, teleported: Curves | None) -> str:
    """Final loss, epochs and seconds to reach the baseline's final loss, the teleports' total cost."""
    seeds = f" (mean of {s.seeds} seeds)" if s.seeds > 1 else ""
    target = float(baseline.loss[-1].mean())
    if teleported is None:
        return (f"{baseline.label}: final loss {target:.4g}{seeds} after {s.epochs} epochs, "
                f"{baseline.time_s[-1]:.3f} s.")
    final = float(teleported.loss[-1].mean())
    if not (np.isfinite(final) and np.isfinite(target)):
        return f"{teleported.label}: the loss is not finite (diverged): lower the learning rate."
    n = len(teleported.teleport_epochs)
    reach = teleported.reach(target)
    reaches = ("Never reaches the no-teleport final loss" if reach is None
               else f"Reaches the no-teleport final loss at {_reach_text(reach)}")
    return (f"{teleported.label}: final loss {final:.4g}{seeds} (no teleport: {target:.4g}). "
            f"{reaches} (no teleport: {_reach_text(baseline.reach(target))}). "
            f"{n} teleport{'s' * (n != 1)}, total cost {teleported.teleport_cost_s:.4f} s.")


class Explorer:
    """The panel: controls, the figure (one PNG image widget redrawn in place), a summary and messages.

    ``Explorer(**settings)`` takes any :class:`Settings` field as a keyword and starts
    the first run. Choosing a problem, optimiser or group fills the numeric fields with
    suggested values, which can then be edited. ``wait()`` blocks until the latest run
    has finished; ``log`` lists ``(generation, outcome)`` of every run started.
    """

    def __init__(self, **values):
        import ipywidgets as w

        unknown = sorted(set(values) - {f.name for f in fields(Settings)})
        if unknown:
            raise TypeError(f"Invalid setting: {unknown[0]!r} (choose from {[f.name for f in fields(Settings)]})")
        s = Settings(**{**suggest(values.get("problem", Settings.problem), values.get("optimizer", Settings.optimizer),
                                  values.get("group", Settings.group)), **values})
        checks.choice("schedule", s.schedule, SCHEDULES)
        wide = dict(style={"description_width": "110px"}, layout=w.Layout(width="96%"))
        self.controls = {
            "problem": w.Dropdown(options=[(v, k) for k, v in PROBLEMS.items()], description="problem", **wide),
            "optimizer": w.Dropdown(options=[(OPTIMIZER_LABELS[k], k) for k in OPTIMIZERS],
                                    description="optimizer", **wide),
            "lr": w.FloatText(description="learning rate", **wide),
            "epochs": w.IntText(description="epochs", **wide),
            "seeds": w.IntSlider(min=1, max=len(SEEDS), description="seeds", continuous_update=False, **wide),
            "group": w.Dropdown(options=[(v, k) for k, v in GROUPS.items()], description="teleport group", **wide),
            "schedule": w.Dropdown(options=[(v, k) for k, v in SCHEDULES.items()], description="schedule", **wide),
            "at": w.Text(description="teleport epochs", continuous_update=False, **wide),
            "every": w.IntText(description="every k", **wide),
            "start": w.IntText(description="from epoch", **wide),
            "teleport_lr": w.FloatText(description="teleport lr (ρ)", **wide),
            "teleport_steps": w.IntText(description="teleport steps", **wide),
        }
        self.generation = 0
        self.log: list[tuple[int, str]] = []
        self.result: Result | None = None
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
        self.progress = w.FloatProgress(min=0.0, max=1.0, description="run", **wide)
        for name, control in self.controls.items():
            control.add_class(f"symtele-{name}")
            control.observe(functools.partial(self._changed, name), names="value")
        for part, name in ((self.image, "figure"), (self.summary, "summary"), (self.message, "message"),
                           (self.status, "status")):
            part.add_class(f"symtele-{name}")
        c = self.controls
        column = [[c[k] for k in ("problem", "optimizer", "lr", "epochs", "seeds")],
                  [c[k] for k in ("group", "schedule", "at", "every", "start")],
                  [c["teleport_lr"], c["teleport_steps"], self.progress, self.status]]
        third = w.Layout(width="33%")
        self.widget = w.VBox([w.HBox([w.VBox(col, layout=third) for col in column]), self.message, self.summary,
                              self.image])
        self.set(**{f.name: getattr(s, f.name) for f in fields(Settings)})

    def settings(self) -> Settings:
        """The controls' current values."""
        return Settings(**{name: control.value for name, control in self.controls.items()})

    def set(self, **values) -> None:
        """Set several controls at once, then start one run (as a single change would)."""
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
        fill = {"problem": ("epochs", "at", "lr", "teleport_lr", "teleport_steps"),
                "optimizer": ("lr", "teleport_lr"), "group": ("teleport_lr", "teleport_steps")}.get(name, ())
        if fill:
            suggested = suggest(s.problem, s.optimizer, s.group)
            with self._hold():
                if name == "problem":
                    self.controls["schedule"].value = "at"
                for key in fill:
                    self.controls[key].value = suggested[key]
        self.update()

    def _enable(self, s: Settings) -> None:
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
        worker = threading.Thread(target=self._work, args=(generation, s, self._worker, time.perf_counter()),
                                  name=f"explorer-run-{generation}", daemon=True)
        self._worker = worker
        worker.start()

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the latest run has finished."""
        worker = self._worker
        while worker is not None:
            worker.join(timeout)
            if worker is self._worker:
                return
            worker = self._worker

    def _work(self, generation: int, s: Settings, previous: threading.Thread | None, started: float) -> None:
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
                self.message.value = (f'<span style="color:#b00020">⚠ the run failed: '
                                      f'{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>')
                self.summary.value = ""
            self.log.append((generation, "failed"))
