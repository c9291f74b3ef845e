"""Training with a teleport schedule (writeup Algorithm 1).

For each epoch ``k = 0 … epochs−1``: compute ``L(w)`` and ``∇L(w)``; if ``k`` is in the
schedule, teleport (the new point's gradient comes from the teleport); record the loss,
``‖∇L‖²`` and the wall-clock time at the point the step starts from; take one optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import checks
from .history import History
from .objective import grad_norm_sq
from .optimizers import Optimizer
from .schedule import Schedule
from .states import TRAIN_STATES
from .teleports.base import Teleport
from .timing import clock

#: Armijo steps tried per loss evaluation on an objective that ``takes_batches`` (a 2-D problem from far
#: out needs about ten halvings per epoch; one evaluation of sixteen points costs about as much as one)
ARMIJO_TRIALS = 16


def method_name(optimizer: str, teleport: Teleport | None, schedule: Schedule | None, epochs: int) -> str:
    """``gd``, ``adagrad+posscale``, ``gd-ls+levelset``, …: the names used in the results files.

    Args:
        optimizer: the optimiser's name.
        teleport: the teleport, or ``None``.
        schedule: the teleport's schedule, or ``None``.
        epochs: the run's number of epochs.

    Returns:
        ``optimizer``, followed by ``+`` and the teleport's name when the schedule teleports within the run.
    """
    if teleport is None or schedule is None or not schedule.epochs_in(epochs):
        return optimizer
    return f"{optimizer}+{teleport.name}"


def _checked_schedule(teleport, schedule, epochs: int) -> Schedule:
    """``schedule`` as a :class:`Schedule` whose epochs lie in the run; raises on a mismatch with ``teleport``."""
    if teleport is not None and not isinstance(teleport, Teleport):
        raise TypeError(f"Invalid teleport: {teleport!r} (expected a symtele Teleport, e.g. PositiveScale())")
    if schedule is None:
        if teleport is not None:
            raise ValueError("Invalid schedule: None (a teleport needs a schedule, e.g. Schedule.at(5))")
        return Schedule.never()
    schedule = schedule if isinstance(schedule, Schedule) else Schedule.at(schedule)
    schedule.epochs_in(epochs)  # raises if a listed epoch lies outside the run
    return schedule


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().cpu().clone() for p in params]


def train(
    objective,
    params,
    *,
    optimizer: str = "gd",
    lr: float,
    epochs: int,
    teleport: Teleport | None = None,
    schedule: Schedule | int | list | None = None,
    state: str = "keep",
    max_halvings: int = 50,
    progress: bool = False,
    keep_path: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> History:
    """Run ``epochs`` optimiser steps from ``params``, teleporting as ``schedule`` says.

    Every argument is checked before any compute.

    Args:
        objective: the :class:`~symtele.objective.Objective` (``loss``, ``loss_and_grad``).
        params: the starting point: a list of finite floating-point tensors (not changed in place).
        optimizer: one of :data:`~symtele.optimizers.OPTIMIZERS`.
        lr: the step (``gd-ls``: the first step the Armijo search tries).
        epochs: the number of steps (``≥ 1``).
        teleport: the :class:`~symtele.teleports.base.Teleport` to apply, or ``None``.
        schedule: a :class:`Schedule`, an epoch or a list of epochs; needed with ``teleport``.
        state: what happens to the optimiser's state at a teleport, one of
            :data:`~symtele.states.TRAIN_STATES`: ``keep`` or ``reset``.
        max_halvings: the most halvings of the Armijo search (``gd-ls``).
        progress: show a ``tqdm`` progress bar.
        keep_path: store every visited point in ``history.path`` (for trajectory plots).
        should_stop: polled every epoch; returning True ends the run early.

    Returns:
        The run's :class:`~symtele.history.History`.

    Raises:
        TypeError: a teleport that is not a symtele ``Teleport``; arguments of the wrong type.
        ValueError: an unknown optimiser or ``state``; a teleport without a schedule; a scheduled epoch
            outside the run; non-finite parameters; what the objective's and the teleport's checks raise.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    trials = ARMIJO_TRIALS if getattr(objective, "takes_batches", False) else 1
    opt = Optimizer(optimizer, lr, max_halvings=max_halvings, trials=trials)
    checks.choice("state", state, TRAIN_STATES)
    schedule = _checked_schedule(teleport, schedule, epochs)
    teleport_epochs = set(schedule.epochs_in(epochs))
    params = [p.detach() for p in checks.finite_tensors("params", params)]
    if hasattr(objective, "check_params"):
        objective.check_params(params)
    if teleport is not None and teleport_epochs:
        teleport.check(objective, params)

    history = History(method=method_name(optimizer, teleport, schedule, epochs))
    device = params[0].device
    losses, norms, times, steps = [], [], [], []
    iterator = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=history.method, leave=False)
    start = clock(device)
    for epoch in iterator:
        loss, grads = objective.loss_and_grad(params)
        if keep_path:
            history.path.append((epoch, _snapshot(params)))
        if epoch in teleport_epochs:
            params, grads, loss, record = teleport(objective, params, grads, loss)
            if keep_path:
                history.path.append((epoch, _snapshot(params)))
            record.epoch = epoch
            history.teleports.append(record)
            if state == "reset":
                opt.reset()
        losses.append(loss.detach())
        norms.append(grad_norm_sq(grads, loss.dim()))
        times.append(clock(device) - start)
        params, step = opt.step(params, grads, loss, objective.loss)
        steps.append(step)
        if should_stop is not None and should_stop():
            break
    return _finished(history, losses, norms, times, steps, params, keep_path)


def _finished(history: History, losses, norms, times, steps, params, keep_path: bool) -> History:
    """The history with its per-epoch lists as plain numbers, the final point and (if kept) the path's end."""
    history.loss = torch.stack(losses).cpu().tolist()
    history.grad_norm_sq = torch.stack(norms).cpu().tolist()
    history.time_s = times
    history.step_size = steps
    history.final_params = [p.detach() for p in params]
    if keep_path:
        history.path.append((len(losses), _snapshot(params)))
    return history
