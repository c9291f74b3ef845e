"""The results files every notebook and sweep writes: ``build/results/<name>.json``.

One JSON object ``{"name", "parameters", "records"}``; each record is one run:

``problem``, ``method`` (``gd``, ``gd-ls``, ``adagrad``, ``sgd``, ``momentum``, ``rmsprop``,
``adam``, with ``+so2``, ``+posscale``, ``+gln`` or ``+levelset`` when teleporting), ``seed``,
per-epoch ``loss``, ``grad_norm_sq`` and ``time_s`` lists, ``teleport_epochs``, the
``teleports`` (cost and effect of each) and any extra fields a notebook adds.
``pandas.DataFrame(load_results(path)["records"])`` gives one row per run.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .history import History

TIMING_FIELDS = ("time_s", "cost_s", "wall_s")


def run_record(problem: str, seed, history: History, **extra) -> dict:
    """One run as a plain dict in the results schema."""
    record = {
        "problem": problem,
        "method": history.method,
        "seed": seed,
        "loss": history.loss,
        "grad_norm_sq": history.grad_norm_sq,
        "time_s": history.time_s,
        "teleport_epochs": history.teleport_epochs,
        "teleports": [t.to_dict() for t in history.teleports],
    }
    record.update(extra)
    return record


def batched_records(problem: str, seeds, history: History, **extra) -> list[dict]:
    """Records of a batched run (one history holding several seeds), one per seed."""
    return [run_record(problem, seed, h, **extra) for seed, h in zip(seeds, history.split())]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_results(path, name: str, parameters: dict, records: list[dict]) -> Path:
    """Write the results file atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_clean({"name": name, "parameters": parameters, "records": records}), f, indent=1)
    os.replace(tmp, path)
    return path


def load_results(path) -> dict:
    with open(path) as f:
        return json.load(f)


def strip_timing(value):
    """The results with every timing field removed, for comparing two builds.

    A record marked ``"timing": True`` (a claim measured from wall-clock time) also loses
    its ``measured`` and ``holds`` fields.
    """
    if isinstance(value, dict):
        drop = TIMING_FIELDS + (("measured", "holds") if value.get("timing") is True else ())
        return {k: strip_timing(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value
