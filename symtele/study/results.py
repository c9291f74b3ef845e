"""The results files every notebook and sweep writes: ``build/results/<name>.json``.

One JSON object ``{"name", "parameters", "records"}``; each record is one run:

``problem``, ``method`` (``gd``, ``gd-ls``, ``adagrad``, ``sgd``, ``momentum``, ``rmsprop``,
``adam``, with ``+so2``, ``+posscale``, ``+gln`` or ``+levelset`` when teleporting), ``seed``,
per-epoch ``loss``, ``grad_norm_sq`` and ``time_s`` lists, ``teleport_epochs``, the
``teleports`` (cost and effect of each) and any extra fields a notebook adds.
``pandas.DataFrame(load_results(path)["records"])`` gives one row per run.

Every file of the build is written through :func:`write_text` (or :func:`write_json`): to a
temporary file in the same folder, renamed into place, so that a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

from ..history import History

#: what depends on the machine's speed: wall-clock seconds, and ratios of them
TIMING_FIELDS = ("time_s", "cost_s", "wall_s", "wall_ratios")


def run_record(problem: str, seed, history: History, **extra) -> dict:
    """One run as a plain dict in the results schema.

    Args:
        problem: the problem or task the run trained on.
        seed: its random seed (or ``None``).
        history: what the training loop recorded.
        **extra: further fields of the record.

    Returns:
        ``{"problem", "method", "seed", "loss", "grad_norm_sq", "time_s", "teleport_epochs", "teleports"}``
        and ``extra``.
    """
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
    """Records of a batched run (one history holding several seeds), one per seed.

    Args:
        problem: the problem or task the runs trained on.
        seeds: the seeds, in the order of the history's problem copies.
        history: the batched run's history.
        **extra: further fields of every record.

    Returns:
        One :func:`run_record` per seed.
    """
    return [run_record(problem, seed, h, **extra) for seed, h in zip(seeds, history.split())]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file of a name of its own, renamed into place.

    Args:
        path: the file to write (its folder is made if missing).
        text: its content.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        OSError: the file cannot be written; no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path, value) -> Path:
    """Write ``value`` as JSON atomically; non-finite floats become ``null``, ``"inf"`` or ``"-inf"``.

    Args:
        path: the file to write.
        value: JSON-ready data (dicts, lists, strings, numbers, booleans, ``None``).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    return write_text(path, json.dumps(_clean(value), indent=1))


def write_results(path, name: str, parameters: dict, records: list[dict]) -> Path:
    """Write the results file ``{"name", "parameters", "records"}`` atomically.

    Args:
        path: the results file, ``<build>/results/<name>.json``.
        name: the notebook's or sweep's name.
        parameters: every parameter it ran with.
        records: one dict per run or measurement.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    return write_json(path, {"name": name, "parameters": parameters, "records": records})


def load_results(path) -> dict:
    """A results file as written by :func:`write_results`.

    Args:
        path: the results file.

    Returns:
        ``{"name", "parameters", "records"}``.
    """
    with open(path) as f:
        return json.load(f)


def strip_timing(value):
    """The results with every timing field removed, for comparing two builds.

    Args:
        value: a results file's content, or any part of it.

    Returns:
        A copy of ``value`` without the fields of :data:`TIMING_FIELDS`, at any depth.

    A record marked ``"timing": True`` (a claim measured from wall-clock time) also loses
    its ``measured``, ``holds`` and ``sure`` fields.
    """
    if isinstance(value, dict):
        drop = TIMING_FIELDS + (("measured", "holds", "sure") if value.get("timing") is True else ())
        return {k: strip_timing(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value
