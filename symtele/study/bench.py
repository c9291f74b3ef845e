"""Measuring what teleportation costs and what it buys, in wall-clock time.

Every measurement follows the timing protocol of :mod:`~symtele.study.bench_protocol` (interleaved
rounds, minima over the rounds) and is made as a record of :mod:`~symtele.study.bench_records`.

* :func:`teleport_cost` — the cost of one teleport in *gradient evaluations*:

      grad_evals = min_r t_teleport[r] / min_r t_grad[r],

  ``t_grad`` being one forward and backward pass (``loss_and_grad``) of the same
  network on the same batch, timed in the same rounds.
* :func:`scaling_exponent` — the slope of ``log cost`` against ``log #params`` over a sweep.
* :func:`time_to_target` — wall-clock seconds until the mean loss over the seeds first
  reaches GD's final mean loss, teleport costs included, and the speed-up
  ``t(optimizer) / t(optimizer+teleport)``.
* :func:`batched_vs_loop` — one batched run of several seeds against a loop of
  single-seed runs: time and the largest difference of the recorded losses.

Every function takes ``device`` (``"cpu"`` or ``"cuda"``); asking for CUDA on a
machine without it raises ``ValueError`` before any work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import checks
from ..schedule import Schedule
from ..teleports.gln import gln_teleport
from ..teleports.level_set import flatten, level_set_teleport, unflatten
from ..teleports.positive_scale import PositiveScale, PositiveScaleReference
from ..training import train
from . import published
from .bench_protocol import interleaved_times
from .bench_records import record
from .experiments import course_regression_task
from .settings import REGRESSION, RegressionSettings
from .summaries import epochs_to_reach

#: the teleports :func:`teleport_cost` can time
METHODS = ("posscale", "posscale-ref", "gln", "levelset-step")


def sweep_dims(width: int) -> tuple:
    """The network of the width sweep: REFERENCE §2's MNIST-sized one with both hidden layers ``width`` wide.

    Args:
        width: the width of both hidden layers.

    Returns:
        ``(samples, inputs, width, width, outputs)``.
    """
    samples, inputs, *_, outputs = published.COST_DIMS
    return (samples, inputs, width, width, outputs)


#: the dims of the cost table: the course project's network, REFERENCE §2's MNIST-sized one, a wide and deep one
COST_DIMS = (REGRESSION.dims, published.COST_DIMS, (512, 784, 1024, 1024, 1024, 10))
#: the optimisers of the time-to-target runs
OPTIMIZERS = ("gd", "adagrad")


def _teleport_calls(method, dims, steps, dtype, dev, seed):
    """``(teleport, gradient)``: zero-argument calls for ``method`` on the network ``dims``."""
    slope = REGRESSION.negative_slope if method == "gln" else 0.0
    objective, weights = course_regression_task(seed, dims, negative_slope=slope, dtype=dtype, device=dev)
    weights = [w / w.shape[-1] for w in weights]  # fan-in scaling: see teleport_cost

    def grad():
        return objective.loss_and_grad(weights)

    if method == "posscale":
        loss, grads = objective.loss_and_grad(weights)
        teleport = PositiveScale(lr=REGRESSION.teleport_lr_gd, steps=steps, clamp=REGRESSION.clamp)

        def call():
            return teleport(objective, weights, grads, loss)
    elif method == "posscale-ref":
        reference = PositiveScaleReference(lr=REGRESSION.teleport_lr_gd, steps=steps, clamp=REGRESSION.clamp)

        def call():
            return reference.teleported(objective, weights)
    elif method == "gln":

        def call():
            return gln_teleport(objective, weights, lr=REGRESSION.gln_lr_gd, steps=steps)
    else:  # levelset-step
        like = [w.detach() for w in weights]
        vector = flatten(like)

        def call():
            return level_set_teleport(lambda v: objective.loss(unflatten(v, like)), vector, steps=steps)

    return call, grad


def _steps_taken(result):
    """Steps the teleport took, from its record (``None`` for the reference, which returns no record)."""
    record = result[-1] if isinstance(result, tuple) else None
    return getattr(record, "steps_taken", None)


#: teleport steps :func:`teleport_cost` times by default: the writeup's, and one level-set iteration
DEFAULT_STEPS = {
    "posscale": REGRESSION.teleport_steps,
    "posscale-ref": REGRESSION.teleport_steps,
    "gln": REGRESSION.gln_steps_gd,
    "levelset-step": 1,
}


def teleport_cost(
    dims: Sequence[int] = REGRESSION.dims,
    methods: Sequence[str] = METHODS,
    *,
    steps: int | None = None,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    dtype=torch.float32,
    device="cpu",
    seed: int = 0,
    max_reps: dict[str, int] | None = None,
) -> list[dict]:
    """The cost of one teleport of the course project's network ``dims``, in gradient evaluations.

    ``grad_evals = min_r t_teleport[r] / min_r t_grad[r]``, ``t_grad`` being one forward and backward pass
    of the same network on the same batch, timed interleaved with the teleport in the same rounds
    (:mod:`~symtele.study.bench_protocol`). The network is the regression task of ``seed`` with ``dims``
    (ReLU; LeakyReLU for ``gln``, whose gradient is then timed on that network) with each ``W_k`` divided
    by its fan-in ``d_{k−1}``, which keeps the activations of order one at any width (the unscaled
    ``torch.rand`` draw overflows float32 at width 1024 and depth 4); the work done per call does not
    depend on it.

    Args:
        dims: samples, then layer widths.
        methods: teleports among :data:`METHODS`.
        steps: teleport steps (default :data:`DEFAULT_STEPS`, per method).
        reps: rounds.
        warmup: untimed calls of each function first.
        min_time: seconds a timing lasts at least (fast calls are repeated within a round).
        dtype: the arithmetic.
        device: ``"cpu"`` or ``"cuda"``.
        seed: the task's random seed.
        max_reps: at most this many rounds for the named methods (slow ones).

    Returns:
        One ``teleport_cost`` record (:mod:`~symtele.study.bench_records`) per method: ``grad_evals``,
        ``teleport_s``, ``grad_s`` (minima over the rounds), ``grad_evals_rounds`` (every round's ratio),
        and ``steps_taken``/``stopped`` of the last call (``None`` for ``posscale-ref``, which has no
        safety checks).

    Raises:
        ValueError: a bad ``dims``, method, count, dtype or ``max_reps`` key, or CUDA on a machine
            without it.
    """
    dims = checks.dims("dims", dims)
    methods = [checks.choice("method", m, METHODS) for m in methods]
    if not methods:
        raise ValueError("Invalid methods: empty")
    if steps is not None:
        steps = checks.count("steps", steps, minimum=1)
    reps = checks.count("reps", reps, minimum=1)
    warmup = checks.count("warmup", warmup, minimum=1)
    min_time = checks.non_negative("min_time", min_time)
    seed = checks.count("seed", seed)
    dtype = checks.dtype("dtype", dtype)
    dev = checks.device("device", device)
    max_reps = dict(max_reps or {})
    for name in max_reps:
        checks.choice("max_reps key", name, methods)

    fns, method_steps, last = {}, {}, {}
    for m in methods:
        method_steps[m] = DEFAULT_STEPS[m] if steps is None else steps
        call, grad = _teleport_calls(m, dims, method_steps[m], dtype, dev, seed)
        fns[m] = lambda call=call, m=m: last.__setitem__(m, call())
        fns[f"grad:{m}"] = grad
    caps = {**max_reps, **{f"grad:{m}": c for m, c in max_reps.items()}}
    times = interleaved_times(fns, reps=reps, warmup=warmup, min_time=min_time, device=dev, max_reps=caps)
    return [_cost_record(m, dims, method_steps[m], dev, dtype, times[m], times[f"grad:{m}"], last[m]) for m in methods]


def _cost_record(method, dims, steps, dev, dtype, teleport_times, grad_times, last) -> dict:
    """One :func:`teleport_cost` record from the interleaved times of the teleport and of one gradient."""
    return record(
        "teleport_cost",
        method=method,
        dims=list(dims),
        n_params=sum(a * b for a, b in zip(dims[2:], dims[1:-1])),
        steps=steps,
        device=str(dev),
        dtype=str(dtype).replace("torch.", ""),
        grad_evals=min(teleport_times) / min(grad_times),
        grad_evals_rounds=[a / b for a, b in zip(teleport_times, grad_times)],
        teleport_s=min(teleport_times),
        grad_s=min(grad_times),
        reps=len(teleport_times),
        steps_taken=_steps_taken(last),
        stopped=getattr(last[-1], "stopped", None),
    )


TASKS = ("relu", "leaky_relu")


def scaling_exponent(records, method: str, key: str = "teleport_s") -> float | None:
    """Least-squares slope of ``log(key)`` against ``log(n_params)`` over ``method``'s records.

    A slope of 1 means the cost grows in proportion to the parameter count.

    Args:
        records: :func:`teleport_cost` records.
        method: the teleport whose records are fitted.
        key: ``teleport_s``, ``grad_s`` or ``grad_evals``.

    Returns:
        The slope, or ``None`` with fewer than two measured sizes.

    Raises:
        ValueError: another ``key``.
    """
    checks.choice("key", key, ("teleport_s", "grad_s", "grad_evals"))
    points = {r["n_params"]: r[key] for r in records if r["method"] == method and r.get(key)}
    if len(points) < 2:
        return None
    xs = [math.log(n) for n in points]
    ys = [math.log(v) for v in points.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _runs(s: RegressionSettings, dtype, dev, tasks):
    """The training runs timed by :func:`time_to_target`, by ``(task, method)``: zero-argument calls.

    On the ReLU task each optimiser runs without teleport, with the closed-form teleport (``posscale``)
    and with the double-backprop one the writeup timed (``posscale-ref``); on the LeakyReLU task
    without teleport and with GL(n).
    """
    runs = {}
    if "relu" in tasks:
        relu = course_regression_task(s.seeds, s.dims, dtype=dtype, device=dev)
        for opt in OPTIMIZERS:
            options = dict(lr=s.teleport_lr(opt), steps=s.teleport_steps, clamp=s.clamp)
            runs[("relu", opt)] = (relu, dict(optimizer=opt, lr=s.lr(opt)))
            for teleport in (PositiveScale(**options), PositiveScaleReference(**options)):
                runs[("relu", f"{opt}+{teleport.name}")] = (relu, dict(optimizer=opt, lr=s.lr(opt), teleport=teleport))
    if "leaky_relu" in tasks:
        leaky = course_regression_task(s.seeds, s.dims, negative_slope=s.negative_slope, dtype=dtype, device=dev)
        for opt in OPTIMIZERS:
            runs[("leaky_relu", opt)] = (leaky, dict(optimizer=opt, lr=s.lr(opt)))
            runs[("leaky_relu", f"{opt}+gln")] = (leaky, dict(optimizer=opt, lr=s.lr(opt), teleport=s.gln(opt)))
    at = Schedule.at(s.teleport_epoch)
    return {
        key: (lambda task=task, kw=kw: train(*task, epochs=s.epochs, schedule=at if "teleport" in kw else None, **kw))
        for key, (task, kw) in runs.items()
    }


def _mean_curve(history) -> list[float]:
    return [sum(row) / len(row) if isinstance(row, list) else row for row in history.loss]


def _seconds_to(history, target) -> float | None:
    """The run's clock at the first epoch its mean loss over the seeds is ``≤ target`` (``None``: never)."""
    epoch = epochs_to_reach(_mean_curve(history), target)
    return None if epoch is None else history.time_s[epoch]


def _checked_protocol(settings, reps, warmup, dtype, device):
    """The arguments shared by the regression benchmarks, checked: ``(settings, reps, warmup, dtype, device)``."""
    if not isinstance(settings, RegressionSettings):
        raise TypeError(f"Invalid settings: {settings!r} (expected a RegressionSettings)")
    reps, warmup = checks.count("reps", reps, minimum=1), checks.count("warmup", warmup, minimum=1)
    return settings, reps, warmup, checks.dtype("dtype", dtype), checks.device("device", device)


def time_to_target(
    settings: RegressionSettings = REGRESSION, *, reps=5, warmup=1, tasks=TASKS, dtype=torch.float32, device="cpu"
) -> dict:
    """Seconds until the seeds' mean loss first reaches GD's final mean loss, teleport included.

    Runs ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` on the course project's ReLU
    task and ``gd``, ``gd+gln``, ``adagrad``, ``adagrad+gln`` on its LeakyReLU version, all seeds as
    one batched computation, interleaved. On each task the target is the final mean loss of its GD run.
    ``time_s[k]`` of the run (wall clock from its start until ``loss[k]`` is known) at the first
    epoch ``k`` with ``mean loss ≤ target`` is the time to target.

    Args:
        settings: the runs' settings (the writeup's by default, REFERENCE §2–3).
        reps: rounds.
        warmup: untimed runs of each first.
        tasks: ``"relu"`` and/or ``"leaky_relu"``.
        dtype: the arithmetic.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        A ``time_to_target`` record (:mod:`~symtele.study.bench_records`): ``{"seconds": {name: min over
        rounds}, "speedup": {name: t(opt) / t(opt+teleport)}, "seconds_rounds", "speedup_rounds",
        "epochs": {name: k}, "target": {task: loss}, "curves", "teleport_share", ...}``; names on the
        LeakyReLU task carry ``@leaky_relu`` (``gd@leaky_relu``), teleport runs are named by the teleport
        (``gd+posscale``, ``gd+posscale-ref``, ``gd+gln``). A run that never reaches its target has
        ``None`` seconds.

    Raises:
        TypeError: ``settings`` not a :class:`~symtele.study.settings.RegressionSettings`.
        ValueError: a bad count, task, dtype or device.
    """
    s, reps, warmup, dtype, dev = _checked_protocol(settings, reps, warmup, dtype, device)
    tasks = checks.sequence("tasks", list(tasks), lambda name, task: checks.choice(name, task, TASKS))
    runs = _runs(s, dtype, dev, tasks)
    for run in runs.values():
        for _ in range(warmup):
            run()
    histories = {key: [] for key in runs}
    for _ in range(reps):
        for key, run in runs.items():
            histories[key].append(run())
    result = _reach_summary(histories, tasks)
    result.update(
        {
            "seeds": list(s.seeds),
            "dims": list(s.dims),
            "epochs_run": s.epochs,
            "reps": reps,
            "device": str(dev),
            "dtype": str(dtype).replace("torch.", ""),
        }
    )
    return record("time_to_target", **result)


def _reach_summary(histories, tasks) -> dict:
    """What :func:`time_to_target` reports, from every round's history of each ``(task, method)``.

    The machine's load only ever slows a run down, so the least-disturbed round estimates a run's own
    time best: ``seconds`` is the minimum over the rounds of the time to the target (``timeit``'s
    advice), ``speedup`` the ratio of two such minima; ``seconds_rounds`` and ``speedup_rounds`` keep
    every round's value, their spread. ``curves`` holds each run's mean loss per epoch and the clock
    of its fastest round, ``teleport_share`` the part of that round spent teleporting.
    """

    def name(task, method):
        return method if task == "relu" or "+" in method else f"{method}@{task}"

    targets = {task: _mean_curve(histories[(task, "gd")][0])[-1] for task in tasks}
    out = {
        key: {}
        for key in (
            "seconds",
            "seconds_rounds",
            "speedup",
            "speedup_rounds",
            "epochs",
            "final_mean_loss",
            "curves",
            "teleport_share",
        )
    }
    for (task, method), hs in histories.items():
        key, curve = name(task, method), _mean_curve(hs[0])
        rounds = [_seconds_to(h, targets[task]) for h in hs]
        reached = epochs_to_reach(curve, targets[task])
        fastest = min(hs, key=lambda h: h.time_s[-1])
        out["seconds_rounds"][key] = rounds
        out["seconds"][key] = None if reached is None else min(rounds)
        out["epochs"][key], out["final_mean_loss"][key] = reached, curve[-1]
        out["curves"][key] = {"loss": curve, "time_s": fastest.time_s}
        out["teleport_share"][key] = fastest.teleport_cost_s / fastest.time_s[-1]
    for task, method in histories:
        key, base = name(task, method), name(task, method.split("+")[0])
        if "+" in method:
            fast, slow = out["seconds"][key], out["seconds"][base]
            reached = fast is not None and slow is not None
            out["speedup"][key] = slow / fast if reached else None
            pairs = zip(out["seconds_rounds"][base], out["seconds_rounds"][key])
            out["speedup_rounds"][key] = [b / f for b, f in pairs] if reached else None
    return {**out, "target": targets}


def batched_vs_loop(
    settings: RegressionSettings = REGRESSION, *, reps=5, warmup=1, dtype=torch.float32, device="cpu"
) -> list[dict]:
    """The course project's experiment as one batched computation against a loop over seeds, per method.

    The loop trains each seed as a batch of one.

    Args:
        settings: the runs' settings (the writeup's by default).
        reps: rounds.
        warmup: untimed runs of each first.
        dtype: the arithmetic.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        One ``batched_seeds`` record (:mod:`~symtele.study.bench_records`) for each of ``gd``,
        ``gd+posscale``, ``adagrad``, ``adagrad+posscale``: wall-clock seconds (minima over the rounds)
        of the batched run and of the per-seed loop (interleaved), their ratio, and
        ``max_abs_diff``/``max_rel_diff``, the largest absolute and relative difference between the
        losses the two record for any seed and epoch (0.0 when identical).

    Raises:
        TypeError: ``settings`` not a :class:`~symtele.study.settings.RegressionSettings`.
        ValueError: a bad count, dtype or device.
    """
    s, reps, warmup, dtype, dev = _checked_protocol(settings, reps, warmup, dtype, device)
    seeds, dims, epochs = list(s.seeds), s.dims, s.epochs
    at = Schedule.at(s.teleport_epoch)
    batched_task = course_regression_task(seeds, dims, dtype=dtype, device=dev)
    # Each seed of the loop is a batch of one, so both sides run the same batched matrix kernels
    # and agree to the last bit; a loop over plain 2-D matrices would use other kernels and
    # differ by float32 rounding (about 1e-6 relative after 300 epochs).
    single_tasks = [course_regression_task([s], dims, dtype=dtype, device=dev) for s in seeds]
    records = []
    for opt in OPTIMIZERS:
        teleport = PositiveScale(lr=s.teleport_lr(opt), steps=s.teleport_steps, clamp=s.clamp)
        for tp in (None, teleport):
            kw = dict(optimizer=opt, lr=s.lr(opt), epochs=epochs, teleport=tp, schedule=at if tp else None)
            out = {}

            def batched(kw=kw, out=out):
                out["batched"] = train(*batched_task, **kw)

            def loop(kw=kw, out=out):
                out["loop"] = [train(*task, **kw) for task in single_tasks]

            times = interleaved_times(
                {"batched": batched, "loop": loop}, reps=reps, warmup=warmup, min_time=0.0, device=dev
            )
            records.append(_batched_record(out["batched"], out["loop"], times, seeds, dims, epochs, reps, dev, dtype))
    return records


def _batched_record(batched, loop, times, seeds, dims, epochs, reps, dev, dtype) -> dict:
    """One :func:`batched_vs_loop` record: the two runs' times and how far their losses differ."""
    pairs = [(batched.loss[k][i], h.loss[k][0]) for i, h in enumerate(loop) for k in range(epochs)]
    diff = max(abs(a - b) for a, b in pairs)
    rel = max(abs(a - b) / max(abs(b), 1e-300) for a, b in pairs)
    t_b, t_l = min(times["batched"]), min(times["loop"])
    return record(
        "batched_seeds",
        method=batched.method,
        seeds=seeds,
        dims=list(dims),
        epochs=epochs,
        batched_s=t_b,
        loop_s=t_l,
        speedup=t_l / t_b,
        max_abs_diff=diff,
        max_rel_diff=rel,
        identical=diff == 0.0,
        reps=reps,
        device=str(dev),
        dtype=str(dtype).replace("torch.", ""),
    )
