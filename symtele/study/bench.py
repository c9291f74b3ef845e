"""Measuring what teleportation costs and what it buys, in wall-clock time.

Every measurement here follows one protocol: all the functions being compared run in
one process, *interleaved* (each round times every function once, in turn, so a slow
spell of the machine hits them all alike), after warm-up calls, and the result is the
median over ``reps`` rounds. A function that takes less than ``min_time`` seconds is
called ``number`` times in a row per round and its time divided by ``number``.

* :func:`teleport_cost` — the cost of one teleport in *gradient evaluations*:

      grad_evals = median_r ( t_teleport[r] / t_grad[r] ),

  ``t_grad`` being one forward and backward pass (``loss_and_grad``) of the same
  network on the same batch, timed in the same round.
* :func:`scaling_exponent` — the slope of ``log cost`` against ``log #params`` over a sweep.
* :func:`time_to_target` — wall-clock seconds until the mean loss over the seeds first
  reaches GD's final mean loss, teleport costs included, and the speed-up
  ``t(optimizer) / t(optimizer+teleport)`` (median over rounds of the ratio within a round).
* :func:`batched_vs_loop` — one batched run of several seeds against a loop of
  single-seed runs: time and the largest difference of the recorded losses.

Every function takes ``device`` (``"cpu"`` or ``"cuda"``); asking for CUDA on a
machine without it raises ``ValueError`` before any work.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Callable, Sequence

import torch

from .. import checks
from ..schedule import Schedule
from ..teleports.gln import GLn, gln_teleport
from ..teleports.level_set import flatten, level_set_teleport, unflatten
from ..teleports.positive_scale import PositiveScale
from ..teleports.positive_scale_reference import positive_scale_teleport_reference
from ..timing import clock
from ..training import train
from . import published
from .experiments import course_regression_task
from .settings import REGRESSION, RegressionSettings
from .summaries import epochs_to_reach

#: the teleports :func:`teleport_cost` can time
METHODS = ("posscale", "posscale-ref", "gln", "levelset-step")


def sweep_dims(width: int) -> tuple:
    """The network of the width sweep: REFERENCE §2's MNIST-sized one with both hidden layers ``width`` wide."""
    samples, inputs, *_, outputs = published.COST_DIMS
    return (samples, inputs, width, width, outputs)


#: the dims of the cost table: the course project's network, REFERENCE §2's MNIST-sized one, a wide and deep one
COST_DIMS = (REGRESSION.dims, published.COST_DIMS, (512, 784, 1024, 1024, 1024, 10))
#: the optimisers of the time-to-target runs
OPTIMIZERS = ("gd", "adagrad")


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    *,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    device="cpu",
    max_reps: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, one list of ``reps`` values per function.

    After ``warmup`` calls of each function (the last one timed to choose ``number``,
    the calls per timing, so that a timing lasts about ``min_time``), every round
    times each function in turn. ``max_reps[name]`` caps the rounds of a slow function.
    """
    if not isinstance(fns, dict) or not fns:
        raise ValueError(f"Invalid fns: {fns!r} (need a non-empty dict of name -> callable)")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"Invalid fns[{name!r}]: {fn!r} is not callable")
    reps = checks.count("reps", reps, minimum=1)
    warmup = checks.count("warmup", warmup, minimum=1)
    min_time = checks.non_negative("min_time", min_time)
    max_reps = dict(max_reps or {})
    for name, cap in max_reps.items():
        if name not in fns:
            raise ValueError(f"Invalid max_reps: {name!r} is not one of {sorted(fns)}")
        checks.count(f"max_reps[{name!r}]", cap, minimum=1)
    dev = checks.device("device", device)

    number = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            start = clock(dev)
            fn()
            once = clock(dev) - start
        number[name] = max(1, math.ceil(min_time / max(once, 1e-9)))
    times = {name: [] for name in fns}
    for r in range(reps):
        for name, fn in fns.items():
            if r >= max_reps.get(name, reps):
                continue
            start = clock(dev)
            for _ in range(number[name]):
                fn()
            times[name].append((clock(dev) - start) / number[name])
    return times


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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

        def call():
            return positive_scale_teleport_reference(
                weights,
                objective.chains,
                objective.loss,
                lr=REGRESSION.teleport_lr_gd,
                steps=steps,
                clamp=REGRESSION.clamp,
            )
    elif method == "gln":

        def call():
            return gln_teleport(objective, weights, lr=REGRESSION.gln_lr, steps=steps)
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
    "gln": REGRESSION.gln_steps,
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

    ``steps``: teleport steps (default :data:`DEFAULT_STEPS`). The network is the regression
    task of ``seed`` with ``dims`` (ReLU; LeakyReLU for ``gln``, whose gradient is then timed on
    that network) with each ``W_k`` divided by its fan-in ``d_{k−1}``, which keeps the activations
    of order one at any width (the unscaled ``torch.rand`` draw overflows float32 at width 1024
    and depth 4); the work done per call does not depend on it. Each method and its gradient
    are timed interleaved in the same rounds. Returns one record per method:
    ``method, dims, n_params, steps, device, dtype, grad_evals, teleport_s, grad_s`` (medians),
    ``reps``, and ``steps_taken``/``stopped`` of the last call (``None`` for ``posscale-ref``,
    which has no safety checks).
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
    return {
        "method": method,
        "dims": list(dims),
        "n_params": sum(a * b for a, b in zip(dims[2:], dims[1:-1])),
        "steps": steps,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "grad_evals": statistics.median(a / b for a, b in zip(teleport_times, grad_times)),
        "teleport_s": statistics.median(teleport_times),
        "grad_s": statistics.median(grad_times),
        "reps": len(teleport_times),
        "steps_taken": _steps_taken(last),
        "stopped": getattr(last[-1], "stopped", None),
    }


TASKS = ("relu", "leaky_relu")


def scaling_exponent(records, method: str, key: str = "teleport_s") -> float | None:
    """Least-squares slope of ``log(key)`` against ``log(n_params)`` over ``method``'s records.

    ``key`` is ``teleport_s``, ``grad_s`` or ``grad_evals``; a slope of 1 means the cost grows in
    proportion to the parameter count. ``None`` with fewer than two measured sizes.
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
    """The training runs timed by :func:`time_to_target`, by ``(task, method)``: zero-argument calls."""
    runs = {}
    if "relu" in tasks:
        relu = course_regression_task(s.seeds, s.dims, dtype=dtype, device=dev)
        for opt in OPTIMIZERS:
            teleport = PositiveScale(lr=s.teleport_lr(opt), steps=s.teleport_steps, clamp=s.clamp)
            runs[("relu", opt)] = (relu, dict(optimizer=opt, lr=s.lr(opt)))
            runs[("relu", f"{opt}+posscale")] = (relu, dict(optimizer=opt, lr=s.lr(opt), teleport=teleport))
    if "leaky_relu" in tasks:
        leaky = course_regression_task(s.seeds, s.dims, negative_slope=s.negative_slope, dtype=dtype, device=dev)
        gln = GLn(lr=s.gln_lr, steps=s.gln_steps)
        for opt in OPTIMIZERS:
            runs[("leaky_relu", opt)] = (leaky, dict(optimizer=opt, lr=s.lr(opt)))
            runs[("leaky_relu", f"{opt}+gln")] = (leaky, dict(optimizer=opt, lr=s.lr(opt), teleport=gln))
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
    task and ``gd``, ``gd+gln``, ``adagrad``, ``adagrad+gln`` on its LeakyReLU version (``settings``:
    the writeup's by default, REFERENCE §2–3), all seeds as one batched computation, interleaved
    (``tasks`` picks either task). On each task the target is the final mean loss of its GD run.
    ``time_s[k]`` of the run (wall clock from its start until ``loss[k]`` is known) at the first
    epoch ``k`` with ``mean loss ≤ target`` is the time to target.

    Returns ``{"seconds": {name: median s}, "speedup": {name: median of t(opt) / t(opt+teleport)
    within a round}, "epochs": {name: k}, "target": {task: loss}, ...}``; names on the LeakyReLU
    task carry ``@leaky_relu`` (``gd@leaky_relu``), teleport runs are named by the teleport.
    A run that never reaches its target has ``None`` seconds.
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
    return result


def _reach_summary(histories, tasks) -> dict:
    """``seconds``, ``speedup``, ``epochs``, ``final_mean_loss`` and ``target`` of :func:`time_to_target`
    from every round's history of each ``(task, method)``."""

    def name(task, method):
        return method if task == "relu" or "+" in method else f"{method}@{task}"

    targets = {task: _mean_curve(histories[(task, "gd")][0])[-1] for task in tasks}
    seconds, epochs_to, final, per_round = {}, {}, {}, {}
    for (task, method), hs in histories.items():
        curve = _mean_curve(hs[0])
        per_round[(task, method)] = [_seconds_to(h, targets[task]) for h in hs]
        reached = epochs_to_reach(curve, targets[task])
        seconds[name(task, method)] = None if reached is None else statistics.median(per_round[(task, method)])
        epochs_to[name(task, method)] = reached
        final[name(task, method)] = curve[-1]
    speedup = {}  # the median over rounds of the ratio within a round (the two runs ran side by side)
    for (task, method), fast in per_round.items():
        if "+" in method:
            base = method.split("+")[0]
            ok = seconds[name(task, method)] is not None and seconds[name(task, base)] is not None
            speedup[method] = statistics.median(b / f for b, f in zip(per_round[(task, base)], fast)) if ok else None
    return {"seconds": seconds, "speedup": speedup, "epochs": epochs_to, "final_mean_loss": final, "target": targets}


def batched_vs_loop(
    settings: RegressionSettings = REGRESSION, *, reps=5, warmup=1, dtype=torch.float32, device="cpu"
) -> list[dict]:
    """The course project's experiment as one batched computation against a loop over seeds, per method.

    For ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` (``settings``: the writeup's by
    default): median wall-clock seconds of the batched run and of the per-seed loop (interleaved),
    their ratio, and ``max_abs_diff``/``max_rel_diff``, the largest absolute and relative
    difference between the losses the two record for any seed and epoch (0.0 when identical).
    The loop trains each seed as a batch of one.
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
    t_b, t_l = statistics.median(times["batched"]), statistics.median(times["loop"])
    return {
        "method": batched.method,
        "seeds": seeds,
        "dims": list(dims),
        "epochs": epochs,
        "batched_s": t_b,
        "loop_s": t_l,
        "speedup": t_l / t_b,
        "max_abs_diff": diff,
        "max_rel_diff": rel,
        "identical": diff == 0.0,
        "reps": reps,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
    }
