"""The explorer's runs: train the chosen problem with and without the teleport, and sum it up in a line.

:func:`run` returns a :class:`Result`: the no-teleport baseline and the teleported run as
:class:`Curves` (per epoch and seed), and a one-line summary (:func:`summary_line`). A run
polls ``should_stop`` every epoch, so a newer change of the controls can end it early.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..problems import PROBLEMS_2D, Problem2D
from ..study.experiments import course_regression_task
from ..study.settings import REGRESSION, SEEDS
from ..study.summaries import epochs_to_reach
from ..tasks import digits_cnn_task, digits_mlp
from ..training import train
from .controls import EXPLORER_STARTS, GROUP_LABELS, OPTIMIZER_LABELS, Controls, schedule_of, teleport_of, validate


@dataclass(frozen=True, eq=False)
class _Traced(Problem2D):
    """A 2-D problem that remembers each point its gradient is taken at: the run's trajectory."""

    points: list = field(default_factory=list)

    def loss_and_grad(self, params):
        self.points.append(params[0].detach().clone())
        return super().loss_and_grad(params)


def _traced(problem: Problem2D) -> _Traced:
    return _Traced(**{f.name: getattr(problem, f.name) for f in fields(Problem2D)})


@functools.lru_cache(maxsize=2 * len(SEEDS))
def _digits(seed: int, network: str = "digits"):
    objective, params, _ = (digits_cnn_task if network == "digits-cnn" else digits_mlp)(seed)
    return objective, params


def _copies(s: Controls) -> list:
    """``(objective, params)`` pairs to train: one batched pair, or one per seed for the digits."""
    if s.problem in PROBLEMS_2D:
        problem = _traced(PROBLEMS_2D[s.problem])
        w = torch.tensor(EXPLORER_STARTS[s.problem], dtype=torch.float64)
        return [(problem, [w if s.seeds == 1 else w.expand(s.seeds, 2).clone()])]
    if s.problem in ("digits", "digits-cnn"):
        return [_digits(seed, s.problem) for seed in range(s.seeds)]
    seeds = SEEDS[0] if s.seeds == 1 else SEEDS[: s.seeds]
    slope = REGRESSION.negative_slope if s.problem == "leaky-relu-mlp" else 0.0
    return [course_regression_task(seeds, negative_slope=slope)]


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
        """``(epoch, seconds)`` at which the mean loss first is ≤ ``target``, or ``None``.

        Args:
            target: the loss to reach.

        Returns:
            The first epoch whose mean loss over the seeds is ``≤ target`` and its time, or ``None``.
        """
        epoch = epochs_to_reach(self.loss.mean(1), target)
        return None if epoch is None else (epoch, float(self.time_s[epoch]))


@dataclass
class Result:
    """The baseline (no teleport), the teleported run (``None`` for the group 'none') and the summary line."""

    settings: Controls
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


def _train_curves(s: Controls, label: str, teleport: bool, poll: _Poll) -> Curves | None:
    histories, paths = [], []
    for objective, params in _copies(s):
        group = teleport_of(s) if teleport else None
        h = train(
            objective,
            params,
            optimizer=s.optimizer,
            lr=s.lr,
            epochs=s.epochs,
            teleport=group,
            schedule=schedule_of(s) if teleport else None,
            should_stop=poll,
        )
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


def baseline_key(s: Controls) -> tuple:
    """The settings the baseline depends on (a teleport change can reuse it).

    Args:
        s: the controls.

    Returns:
        ``(problem, optimizer, lr, epochs, seeds)``.
    """
    return s.problem, s.optimizer, s.lr, s.epochs, s.seeds


def run(
    settings: Controls,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
    baseline: Curves | None = None,
) -> Result | None:
    """Train with and without the teleport; ``None`` if ``should_stop`` ended the run early.

    Args:
        settings: the controls.
        should_stop: polled every epoch; returning True ends the run early.
        progress: receives the fraction of epochs done.
        baseline: an earlier no-teleport run of the same :func:`baseline_key`, reused.

    Returns:
        The :class:`Result`, or ``None`` when stopped early.

    Raises:
        ValueError: invalid settings (:func:`~symtele.explorer.controls.validate`).
        TypeError: a teleport group that does not act on the problem.
    """
    validate(settings)
    s = settings
    name = OPTIMIZER_LABELS[s.optimizer]
    teleport = s.group != "none"
    total = s.epochs * (s.seeds if s.problem in ("digits", "digits-cnn") else 1) * ((baseline is None) + teleport)
    poll = _Poll(total, should_stop, progress)
    if baseline is None:
        baseline = _train_curves(s, f"{name}, no teleport", False, poll)
        if baseline is None:
            return None
    teleported = None
    if teleport:
        teleported = _train_curves(s, f"{name} + {GROUP_LABELS[s.group]}", True, poll)
        if teleported is None:
            return None
    return Result(s, baseline, teleported, summary_line(s, baseline, teleported))


def _reach_text(reach) -> str:
    return "never" if reach is None else f"epoch {reach[0]}, {reach[1]:.3f} s"


def summary_line(s: Controls, baseline: Curves, teleported: Curves | None) -> str:
    """Final loss, epochs and seconds to reach the baseline's final loss, the teleports' total cost.

    Args:
        s: the controls.
        baseline: the run without teleport.
        teleported: the teleported run, or ``None``.

    Returns:
        One sentence or a few, for the panel.
    """
    seeds = f" (mean of {s.seeds} seeds)" if s.seeds > 1 else ""
    target = float(baseline.loss[-1].mean())
    if teleported is None:
        return f"{baseline.label}: final loss {target:.4g}{seeds} after {s.epochs} epochs, {baseline.time_s[-1]:.3f} s."
    final = float(teleported.loss[-1].mean())
    if not (np.isfinite(final) and np.isfinite(target)):
        return f"{teleported.label}: the loss is not finite (diverged): lower the learning rate."
    n = len(teleported.teleport_epochs)
    reach = teleported.reach(target)
    reaches = (
        "Never reaches the no-teleport final loss"
        if reach is None
        else f"Reaches the no-teleport final loss at {_reach_text(reach)}"
    )
    return (
        f"{teleported.label}: final loss {final:.4g}{seeds} (no teleport: {target:.4g}). "
        f"{reaches} (no teleport: {_reach_text(baseline.reach(target))}). "
        f"{n} teleport{'s' * (n != 1)}, total cost {teleported.teleport_cost_s:.4f} s."
    )
