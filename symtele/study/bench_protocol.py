"""The timing protocol every benchmark of :mod:`~symtele.study` follows (``bench``, ``bench_networks``, ...).

All the functions being compared run in one process, *interleaved*: each round times every function once,
in turn, so a slow spell of the machine hits them all alike, after warm-up calls. The estimate of a time
is its minimum over the ``reps`` rounds: the machine's other work can only slow a function down, never
speed it up, so the fastest round is the least disturbed one (the advice of ``timeit``); a ratio is the
ratio of two such minima, and every round's value is kept to show the spread. A function that takes less
than ``min_time`` seconds is called ``number`` times in a row per round and its time divided by ``number``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable

import torch

from .. import checks
from ..timing import clock


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    *,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    device="cpu",
    max_reps: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, one value per round, the functions timed in turn in every round.

    After ``warmup`` calls of each function (the last one timed to choose ``number``, the calls per
    timing, so that a timing lasts about ``min_time``), every round times each function in turn.

    Args:
        fns: the functions to time, by name; each is called without arguments.
        reps: rounds (at least 1).
        warmup: untimed calls of each function before the rounds (at least 1).
        min_time: seconds a timing should last at least (``≥ 0``); a faster function is called
            ``number = ⌈min_time / t_warmup⌉`` times in a row per round.
        device: ``"cpu"`` or ``"cuda"``; on a GPU the clock waits for the queued work.
        max_reps: at most this many rounds for the named functions (slow ones).

    Returns:
        ``{name: [seconds per call in round r for each round r]}``.

    Raises:
        ValueError: ``fns`` empty or not a dict, a count out of range, ``max_reps`` naming an unknown
            function, or a CUDA device on a machine without one.
        TypeError: a value of ``fns`` that is not callable.
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
    """What the numbers were measured on.

    Returns:
        ``{"torch", "threads", "processor", "python"}`` and ``"gpu"`` (the first GPU's name) when
        CUDA is available.
    """
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
