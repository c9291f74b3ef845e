"""Sweeps over teleport schedules: when to teleport × how hard × which symmetry group, over seeds.

A :class:`~symtele.study.settings.Grid` (defined with the other settings; :data:`SWEEP` is the
report's) lists teleport epochs, teleport learning rates per group (``posscale`` on
the course project's ReLU regression, ``gln`` on its LeakyReLU(0.1) variant) and optimisers (``gd``,
``adagrad``). A *grid point* is one (optimiser, group, teleport epoch, teleport lr);
its seeds train as one batched computation, teleporting once, before the step of
the teleport epoch. Each (optimiser, group) also runs the no-teleport baseline on the
same task and seeds.

Every record (results schema of :mod:`symtele.study.results`, one per seed) carries its grid
coordinates (``optimizer``, ``lr``, ``group``, ``teleport_epoch``, ``teleport_lr``,
``teleport_steps``; ``None`` for the baseline), ``final_loss`` and ``to_baseline``:
the baseline's final loss for that seed and the first epoch, and wall-clock seconds
from the start of the run (teleport cost included), at which the run's loss is at or
below it (``None`` if it never gets there). The seconds are those of the batched run.

Points run through joblib: locally by default (``n_jobs=-1``, threads: see :data:`PREFER`;
``joblib.parallel_config(backend="loky")`` for processes), or on a Dask cluster under
``joblib.parallel_config(backend="dask")`` with a ``distributed.Client``. The task data are drawn
once, in the calling process, and each point is a pure function of its arguments, so the records
are the same whatever the backend and whatever order the points finish in; only the timings differ.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from statistics import fmean

from joblib import Parallel, delayed

from ..teleports import make_teleport
from ..training import train
from .experiments import course_regression_task
from .results import batched_records, write_results
from .settings import REGRESSION, SWEEP, Grid
from .summaries import epochs_to_reach

#: the task each group acts on: (problem name in the records, LeakyReLU negative slope; 0 is ReLU)
GROUP_TASKS = {"posscale": ("relu-mlp", 0.0), "gln": ("leaky-relu-mlp", REGRESSION.negative_slope)}
#: joblib's backend hint when no backend is configured. A 300-epoch point is a fraction of a
#: second of small torch operations; threads ran the notebook's sweep as fast as one worker,
#: while a process pool first pays a torch import per worker and ran it over 3× slower (README)
PREFER = "threads"


def run_point(objective, weights, grid: Grid, point: tuple) -> list[dict]:
    """Train one grid point, all seeds batched.

    Args:
        objective: the group's task (its seeds stacked).
        weights: its starting weights.
        grid: the sweep's grid.
        point: ``(optimizer, group, teleport_epoch, teleport_lr)`` (the last two ``None`` for the baseline).

    Returns:
        One record per seed, without ``to_baseline``.
    """
    optimizer, group, teleport_epoch, teleport_lr = point
    steps = grid.teleport_steps[group]
    teleport = None if teleport_epoch is None else make_teleport(group, lr=teleport_lr, steps=steps)
    history = train(
        objective,
        weights,
        optimizer=optimizer,
        lr=grid.lrs[optimizer],
        epochs=grid.epochs,
        teleport=teleport,
        schedule=teleport_epoch,
    )
    records = batched_records(
        GROUP_TASKS[group][0],
        list(grid.seeds),
        history,
        optimizer=optimizer,
        lr=grid.lrs[optimizer],
        group=group,
        teleport_epoch=teleport_epoch,
        teleport_lr=teleport_lr,
        teleport_steps=None if teleport is None else steps,
    )
    for r in records:
        r["final_loss"] = r["loss"][-1]
    return records


def time_to_loss(record: dict, target: float) -> dict:
    """The first epoch, and the run's seconds until then, at which ``loss ≤ target``.

    A missing or NaN ``target`` (a diverged baseline) is never reached.

    Args:
        record: a run's record (``loss`` and ``time_s`` per epoch).
        target: the loss to reach.

    Returns:
        ``{"loss": target, "epochs", "time_s"}``, the last two ``None`` if never reached.
    """
    epoch = epochs_to_reach(record["loss"], target)
    return {"loss": target, "epochs": epoch, "time_s": None if epoch is None else record["time_s"][epoch]}


def sweep(grid: Grid = SWEEP, *, n_jobs: int = -1, path=None, name: str = "sweep") -> list[dict]:
    """Run every point of ``grid`` through joblib.

    Args:
        grid: the grid.
        n_jobs: joblib's workers (``-1``: all cores; ignored by the Dask backend).
        path: where to write the results file ``{"name", "parameters", "records"}`` too (``None``: nowhere).
        name: the results file's name.

    Returns:
        One record per (point, seed), in grid order, each with ``to_baseline``: when it reaches its seed's
        no-teleport final loss.

    Raises:
        TypeError: ``grid`` not a :class:`~symtele.study.settings.Grid`, or ``n_jobs`` not an integer.
        ValueError: ``n_jobs`` of 0.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"Invalid grid: {grid!r} (expected a symtele.study.sweep.Grid)")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral):
        raise TypeError(f"Invalid n_jobs: {n_jobs!r} (expected an integer; -1 means all cores)")
    if n_jobs == 0:
        raise ValueError("Invalid n_jobs: 0 (use a positive count, or -1 for all cores)")
    tasks = {g: course_regression_task(list(grid.seeds), negative_slope=GROUP_TASKS[g][1]) for g in grid.groups}
    runs = Parallel(n_jobs=n_jobs, prefer=PREFER)(
        delayed(run_point)(*tasks[point[1]], grid, point) for point in grid.points()
    )
    records = [r for run in runs for r in run]
    baseline = {
        (r["optimizer"], r["group"], r["seed"]): r["final_loss"] for r in records if r["teleport_epoch"] is None
    }
    for r in records:
        r["to_baseline"] = time_to_loss(r, baseline[r["optimizer"], r["group"], r["seed"]])
    if path is not None:
        write_results(path, name, grid.to_dict(), records)
    return records


def _mean(values):
    if any(v is None or (isinstance(v, Real) and math.isnan(v)) for v in values):
        return None
    return fmean(values)


def summarize(records: list[dict]) -> list[dict]:
    """One row per grid point, measured on the mean loss curve over its seeds (the course project's way).

    Args:
        records: :func:`sweep`'s records.

    Returns:
        One row per point: ``final_loss``, the mean final loss; ``baseline_loss``, the no-teleport run's
        mean final loss; ``epochs_to_baseline``/``seconds_to_baseline``, when the mean curve first reaches
        it (``None`` if never, or if a seed diverged); ``reached``, how many seeds reach their own
        baseline's final loss (the records' ``to_baseline``).
    """
    points: dict[tuple, list[dict]] = {}
    for r in records:
        points.setdefault((r["optimizer"], r["group"], r["teleport_epoch"], r["teleport_lr"]), []).append(r)
    baseline = {(o, g): _mean([r["final_loss"] for r in rs]) for (o, g, e, _), rs in points.items() if e is None}
    rows = []
    for (optimizer, group, epoch, lr), rs in points.items():
        curve = [_mean(losses) for losses in zip(*(r["loss"] for r in rs))]
        target = baseline[optimizer, group]
        reach = time_to_loss({"loss": curve, "time_s": rs[0]["time_s"]}, target)
        rows.append(
            {
                "optimizer": optimizer,
                "group": group,
                "method": rs[0]["method"],
                "teleport_epoch": epoch,
                "teleport_lr": lr,
                "seeds": len(rs),
                "final_loss": curve[-1],
                "baseline_loss": target,
                "epochs_to_baseline": reach["epochs"],
                "seconds_to_baseline": reach["time_s"],
                "reached": sum(r["to_baseline"]["epochs"] is not None for r in rs),
            }
        )
    return rows
