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
import time
from typing import Callable, Sequence

import torch

from . import checks
from .gln import gln_teleport
from .levelset import level_set_teleport
from .mlp import SEED_DIMS, SEEDS, _check_dims, seed_task
from .reference import positive_scale_teleport_reference
from .schedule import Schedule
from .teleports import GLn, PositiveScale, flatten, unflatten
from .training import train

#: the teleports :func:`teleport_cost` can time
METHODS = ("posscale", "posscale-ref", "gln", "levelset-step")
#: the dims of the cost table: the seed's network, an MNIST-sized one, a wide and deep one
COST_DIMS = ((4, 5, 6, 7, 8), (256, 784, 512, 512, 10), (512, 784, 1024, 1024, 1024, 10))
#: the seed's settings (REFERENCE §2, §3): optimiser step, teleport step, teleport epoch
SEED_SETTINGS = {
    "gd": {"lr": 1e-4, "posscale_lr": 1e-4},
    "adagrad": {"lr": 1e-1, "posscale_lr": 1e-5},
}
GLN_SETTINGS = {"lr": 1e-7, "steps": 8, "negative_slope": 0.1}
TELEPORT_EPOCH = 5
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device``; raises ``ValueError`` for CUDA on a machine without it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid device: {device!r} ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {device!r} (CUDA is not available on this machine)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"Invalid device: {device!r} (use 'cpu' or 'cuda')")
    return dev


def check_dtype(dtype) -> torch.dtype:
    """``dtype`` given as ``torch.float32``/``float64`` or their names."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ValueError(f"Invalid dtype: {dtype!r} (use float32 or float64)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: dict[str, Callable[[], object]], *, reps: int = 5, warmup: int = 1,
                      min_time: float = 0.01, device="cpu", max_reps: dict[str, int] | None = None
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
    dev = check_device(device)

    number = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            _sync(dev)
            start = time.perf_counter()
            fn()
            _sync(dev)
            once = time.perf_counter() - start
        number[name] = max(1, math.ceil(min_time / max(once, 1e-9)))
    times = {name: [] for name in fns}
    for r in range(reps):
        for name, fn in fns.items():
            if r >= max_reps.get(name, reps):
                continue
            _sync(dev)
            start = time.perf_counter()
            for _ in range(number[name]):
                fn()
            _sync(dev)
            times[name].append((time.perf_counter() - start) / number[name])
    return times


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _teleport_calls(method, dims, steps, dtype, dev, seed):
    """``(teleport, gradient)``: zero-argument calls for ``method`` on the network ``dims``."""
    slope = GLN_SETTINGS["negative_slope"] if method == "gln" else 0.0
    objective, weights = seed_task(seed, dims, negative_slope=slope, dtype=dtype, device=dev)
    weights = [w / w.shape[-1] for w in weights]  # fan-in scaling: see teleport_cost

    def grad():
        return objective.loss_and_grad(weights)

    if method == "posscale":
        loss, grads = objective.loss_and_grad(weights)
        teleport = PositiveScale(lr=SEED_SETTINGS["gd"]["posscale_lr"], steps=steps)

        def call():
            return teleport(objective, weights, grads, loss)
    elif method == "posscale-ref":
        def call():
            return positive_scale_teleport_reference(weights, objective.chains, objective.loss,
                                                     lr=SEED_SETTINGS["gd"]["posscale_lr"], steps=steps)
    elif method == "gln":
        def call():
            return gln_teleport(objective, weights, lr=GLN_SETTINGS["lr"], steps=steps)
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


def teleport_cost(dims: Sequence[int] = SEED_DIMS, methods: Sequence[str] = METHODS, *, steps: int | None = None,
                  reps: int = 5, warmup: int = 1, min_time: float = 0.01, dtype=torch.float32,
                  device="cpu", seed: int = 0, max_reps: dict[str, int] | None = None) -> list[dict]:
    """The cost of one teleport of the seed's network ``dims``, in gradient evaluations.

    ``steps``: teleport steps (default: 10 for ``posscale``/``posscale-ref``, 8 for
    ``gln``, 1 for ``levelset-step``). The network is ``seed_task(seed, dims)`` (ReLU;
    LeakyReLU(0.1) for ``gln``, whose gradient is then timed on that network) with each
    ``W_k`` divided by its fan-in ``d_{k−1}``, which keeps the activations of order one
    at any width (the seed's unscaled ``torch.rand`` draw overflows float32 at width 1024
    and depth 4); the work done per call does not depend on it. Each method and its
    gradient are timed interleaved in the same rounds. Returns one record per method:
    ``method, dims, n_params, steps, device, dtype, grad_evals, teleport_s, grad_s``
    (medians), ``reps``, and ``steps_taken``/``stopped`` of the last call (``None``
    for ``posscale-ref``, which has no safety checks).
    """
    dims = _check_dims(dims)
    methods = [checks.choice("method", m, METHODS) for m in methods]
    if not methods:
        raise ValueError("Invalid methods: empty")
    if steps is not None:
        steps = checks.count("steps", steps, minimum=1)
    reps = checks.count("reps", reps, minimum=1)
    warmup = checks.count("warmup", warmup, minimum=1)
    min_time = checks.non_negative("min_time", min_time)
    seed = checks.count("seed", seed)
    dtype = check_dtype(dtype)
    dev = check_device(device)
    max_reps = dict(max_reps or {})
    for name in max_reps:
        checks.choice("max_reps key", name, methods)

    default_steps = {"posscale": 10, "posscale-ref": 10, "gln": GLN_SETTINGS["steps"], "levelset-step": 1}
    fns, method_steps, last = {}, {}, {}
    for m in methods:
        method_steps[m] = default_steps[m] if steps is None else steps
        call, grad = _teleport_calls(m, dims, method_steps[m], dtype, dev, seed)
        fns[m] = lambda call=call, m=m: last.__setitem__(m, call())
        fns[f"grad:{m}"] = grad
    caps = {m: c for m, c in max_reps.items()}
    caps.update({f"grad:{m}": c for m, c in max_reps.items()})
    times = interleaved_times(fns, reps=reps, warmup=warmup, min_time=min_time, device=dev, max_reps=caps)

    records = []
    for m in methods:
        t, g = times[m], times[f"grad:{m}"]
        records.append({
            "method": m, "dims": list(dims), "n_params": sum(a * b for a, b in zip(dims[2:], dims[1:-1])),
            "steps": method_steps[m], "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
            "grad_evals": statistics.median(a / b for a, b in zip(t, g)),
            "teleport_s": statistics.median(t), "grad_s": statistics.median(g), "reps": len(t),
            "steps_taken": _steps_taken(last[m]), "stopped": getattr(last[m][-1], "stopped", None),
        })
    return records


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


def _runs(dims, dtype, dev, seeds, epochs, tasks):
    """The training runs timed by :func:`time_to_target`, by ``(task, method)``."""
    at = Schedule.at(TELEPORT_EPOCH)
    runs = {}
    if "relu" in tasks:
        relu = seed_task(seeds, dims, dtype=dtype, device=dev)
        for opt, s in SEED_SETTINGS.items():
            runs[("relu", opt)] = (relu, dict(optimizer=opt, lr=s["lr"]))
            runs[("relu", f"{opt}+posscale")] = (relu, dict(optimizer=opt, lr=s["lr"], schedule=at,
                                                            teleport=PositiveScale(lr=s["posscale_lr"])))
    if "leaky_relu" in tasks:
        leaky = seed_task(seeds, dims, negative_slope=GLN_SETTINGS["negative_slope"], dtype=dtype, device=dev)
        gln = GLn(lr=GLN_SETTINGS["lr"], steps=GLN_SETTINGS["steps"])
        for opt, s in SEED_SETTINGS.items():
            runs[("leaky_relu", opt)] = (leaky, dict(optimizer=opt, lr=s["lr"]))
            runs[("leaky_relu", f"{opt}+gln")] = (leaky, dict(optimizer=opt, lr=s["lr"], schedule=at, teleport=gln))
    return {key: (lambda task=task, kw=kw: train(task[0], task[1], epochs=epochs, **kw))
            for key, (task, kw) in runs.items()}


def _mean_curve(history) -> list[float]:
    return [sum(row) / len(row) if isinstance(row, list) else row for row in history.loss]


def _first_reach(curve, times, target):
    for k, (value, t) in enumerate(zip(curve, times)):
        if value <= target:
            return k, t
    return None, None


def _check_run(seeds, dims, epochs, reps):
    """The arguments shared by the seed-task benchmarks, checked and normalised."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("Invalid seeds: empty")
    for s in seeds:
        checks.count("seed", s)
    return seeds, _check_dims(dims), checks.count("epochs", epochs, minimum=1), checks.count("reps", reps, minimum=1)


def time_to_target(seeds: Sequence[int] = SEEDS, dims: Sequence[int] = SEED_DIMS, *, epochs: int = 300,
                   reps: int = 5, warmup: int = 1, tasks: Sequence[str] = TASKS, dtype=torch.float32,
                   device="cpu") -> dict:
    """Seconds until the seeds' mean loss first reaches GD's final mean loss, teleport included.

    Runs ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` on the seed's ReLU
    task and ``gd``, ``gd+gln``, ``adagrad``, ``adagrad+gln`` on its LeakyReLU(0.1)
    version (REFERENCE §2–3 settings, teleport at epoch 5), all seeds as one batched
    computation, interleaved (``tasks`` picks either task). On each task the target is the final mean loss of its GD
    run. ``time_s[k]`` of the run (wall clock from its start until ``loss[k]`` is
    known) at the first epoch ``k`` with ``mean loss ≤ target`` is the time to target.

    Returns ``{"seconds": {name: median s}, "speedup": {name: median of t(opt) / t(opt+teleport)
    within a round},
    "epochs": {name: k}, "target": {task: loss}, ...}``; names on the LeakyReLU task
    carry ``@leaky_relu`` (``gd@leaky_relu``), teleport runs are named by the teleport.
    A run that never reaches its target has ``None`` seconds.
    """
    seeds, dims, epochs, reps = _check_run(seeds, dims, epochs, reps)
    warmup = checks.count("warmup", warmup, minimum=1)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("Invalid tasks: empty")
    for task in tasks:
        checks.choice("task", task, TASKS)
    dtype = check_dtype(dtype)
    dev = check_device(device)

    runs = _runs(dims, dtype, dev, seeds, epochs, tasks)
    for run in runs.values():
        for _ in range(warmup):
            run()
    histories = {key: [] for key in runs}
    for _ in range(reps):
        for key, run in runs.items():
            histories[key].append(run())

    def name(task, method):
        return method if task == "relu" or "+" in method else f"{method}@{task}"

    targets = {task: _mean_curve(histories[(task, "gd")][0])[-1] for task in tasks}
    seconds, epochs_to, final, per_round = {}, {}, {}, {}
    for (task, method), hs in histories.items():
        curve = _mean_curve(hs[0])
        k, _ = _first_reach(curve, hs[0].time_s, targets[task])
        per_round[(task, method)] = [_first_reach(_mean_curve(h), h.time_s, targets[task])[1] for h in hs]
        seconds[name(task, method)] = None if k is None else statistics.median(per_round[(task, method)])
        epochs_to[name(task, method)] = k
        final[name(task, method)] = curve[-1]
    speedup = {}  # the median over rounds of the ratio within a round (the two runs ran side by side)
    for (task, method), fast in per_round.items():
        if "+" in method:
            base = per_round[(task, method.split("+")[0])]
            ok = seconds[name(task, method)] is not None and seconds[name(task, method.split("+")[0])] is not None
            speedup[method] = statistics.median(b / f for b, f in zip(base, fast)) if ok else None
    return {"seconds": seconds, "speedup": speedup, "epochs": epochs_to, "final_mean_loss": final,
            "target": targets, "seeds": seeds, "dims": list(dims), "epochs_run": epochs, "reps": reps,
            "device": str(dev), "dtype": str(dtype).replace("torch.", "")}


def batched_vs_loop(seeds: Sequence[int] = SEEDS, dims: Sequence[int] = SEED_DIMS, *, epochs: int = 300,
                    reps: int = 5, warmup: int = 1, dtype=torch.float32, device="cpu") -> list[dict]:
    """The seed experiment as one batched computation against a loop over seeds, per method.

    For ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` (seed settings):
    median wall-clock seconds of the batched run and of the per-seed loop (interleaved),
    their ratio, and ``max_abs_diff``/``max_rel_diff``, the largest absolute and relative
    difference between the losses the two record for any seed and epoch (0.0 when identical).
    The loop trains each seed as a batch of one.
    """
    seeds, dims, epochs, reps = _check_run(seeds, dims, epochs, reps)
    warmup = checks.count("warmup", warmup, minimum=1)
    dtype = check_dtype(dtype)
    dev = check_device(device)

    at = Schedule.at(TELEPORT_EPOCH)
    batched_task = seed_task(seeds, dims, dtype=dtype, device=dev)
    # Each seed of the loop is a batch of one, so both sides run the same batched matrix kernels
    # and agree to the last bit; a loop over plain 2-D matrices would use other kernels and
    # differ by float32 rounding (about 1e-6 relative after 300 epochs).
    single_tasks = [seed_task([s], dims, dtype=dtype, device=dev) for s in seeds]
    records = []
    for opt, s in SEED_SETTINGS.items():
        for teleport in (None, PositiveScale(lr=s["posscale_lr"])):
            kw = dict(optimizer=opt, lr=s["lr"], epochs=epochs, teleport=teleport,
                      schedule=at if teleport else None)
            out = {}

            def batched(kw=kw):
                out["batched"] = train(*batched_task, **kw)

            def loop(kw=kw):
                out["loop"] = [train(*task, **kw) for task in single_tasks]

            times = interleaved_times({"batched": batched, "loop": loop}, reps=reps, warmup=warmup,
                                      min_time=0.0, device=dev)
            together = out["batched"].loss
            pairs = [(together[k][i], h.loss[k][0]) for i, h in enumerate(out["loop"]) for k in range(epochs)]
            diff = max(abs(a - b) for a, b in pairs)
            rel = max(abs(a - b) / max(abs(b), 1e-300) for a, b in pairs)
            t_b, t_l = statistics.median(times["batched"]), statistics.median(times["loop"])
            records.append({"method": out["batched"].method, "seeds": seeds, "dims": list(dims), "epochs": epochs,
                            "batched_s": t_b, "loop_s": t_l, "speedup": t_l / t_b,
                            "max_abs_diff": diff, "max_rel_diff": rel,
                            "identical": diff == 0.0, "reps": reps, "device": str(dev),
                            "dtype": str(dtype).replace("torch.", "")})
    return records
