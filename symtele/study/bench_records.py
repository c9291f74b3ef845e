"""The records the benchmarks write: each kind's fields declared once here, every record checked against them.

:data:`SCHEMA` names, for each kind of measurement, its fields with their types, whether one may be
absent, and whether it depends on the machine's speed: ``wall_s`` (seconds of wall clock) or
``wall_ratios`` (a ratio of such seconds). :func:`record` makes a record and checks it; :func:`write`
checks the records again and writes a ``make bench`` file (``build/bench/<file>.json``), in the shape
the report's performance notebook reads; :func:`as_records` turns the measurements into the records of
that notebook's results file, with the machine-dependent fields under ``wall_s`` and ``wall_ratios``,
which :func:`~symtele.study.results.strip_timing` drops when two builds are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .results import write_json

NONE = type(None)
NUMBER = (int, float)


@dataclass(frozen=True)
class Field:
    """One field of a benchmark record.

    Attributes:
        types: the Python types its value may have (``NoneType`` among them when it may be ``None``).
        timing: ``"wall_s"`` for seconds of wall clock, ``"wall_ratios"`` for a ratio of them, ``""``
            for a field that does not depend on the machine's speed.
        required: whether every record of its kind has it.
    """

    types: tuple[type, ...]
    timing: str = ""
    required: bool = True


def _seconds(*, required: bool = True, of=(*NUMBER, NONE)) -> Field:
    return Field(of, "wall_s", required)


def _ratio(*, required: bool = True, of=(*NUMBER, NONE)) -> Field:
    return Field(of, "wall_ratios", required)


def _plain(*types: type, required: bool = True) -> Field:
    return Field(tuple(types), "", required)


MACHINE = _plain(dict, required=False)  # what it was measured on (bench_protocol.machine), added when written

#: every kind of benchmark record: ``{kind: {field: Field}}``
SCHEMA: dict[str, dict[str, Field]] = {
    # bench.teleport_cost; a record of a measurement left out (benchmarks/run.py) has only what it can say
    "teleport_cost": {
        "method": _plain(str),
        "dims": _plain(list),
        "n_params": _plain(int, required=False),
        "steps": _plain(int, NONE),
        "device": _plain(str),
        "dtype": _plain(str),
        "grad_evals": _ratio(),
        "grad_evals_rounds": _ratio(required=False, of=(list,)),
        "teleport_s": _seconds(),
        "grad_s": _seconds(),
        "reps": _plain(int),
        "steps_taken": _plain(int, NONE, required=False),
        "stopped": _plain(str, NONE, required=False),
        "sweep": _plain(bool, required=False),
        "note": _plain(str, required=False),
        "machine": MACHINE,
    },
    # bench_networks.network_teleport_cost
    "network_teleport_cost": {
        "method": _plain(str),
        "model": _plain(str),
        "n_params": _plain(int),
        "n_scales": _plain(int),
        "batch": _plain(list),
        "steps": _plain(int),
        "device": _plain(str),
        "dtype": _plain(str),
        "grad_evals": _ratio(),
        "grad_evals_rounds": _ratio(of=(list,)),
        "teleport_s": _seconds(),
        "grad_s": _seconds(),
        "reps": _plain(int),
        "steps_taken": _plain(int, NONE),
        "stopped": _plain(str, NONE),
        "trials": _plain(int, required=False),
        "forwards": _ratio(required=False),
        "forward_s": _seconds(required=False),
        "machine": MACHINE,
    },
    # bench_attention.attention_teleport_cost
    "attention_teleport_cost": {
        "method": _plain(str),
        "model": _plain(str),
        "config": _plain(dict),
        "n_params": _plain(int),
        "n_groups": _plain(int),
        "d_head": _plain(int),
        "batch": _plain(list),
        "steps": _plain(int),
        "max_step": _plain(float),
        "device": _plain(str),
        "dtype": _plain(str),
        "grad_evals": _ratio(),
        "grad_evals_rounds": _ratio(of=(list,)),
        "teleport_s": _seconds(),
        "grad_s": _seconds(),
        "reps": _plain(int),
        "max_a_diff": _plain(float),
        "gain": _plain(float),
        "speedup": _ratio(required=False),
        "speedup_rounds": _ratio(required=False, of=(list,)),
        "machine": MACHINE,
    },
    # bench_amp.amp_teleport_cost
    "amp_teleport_cost": {
        "method": _plain(str),
        "model": _plain(str),
        "n_params": _plain(int),
        "batch": _plain(list),
        "device": _plain(str),
        "dtype": _plain(str),
        "amp": _plain(bool),
        "amp_dtype": _plain(str, NONE),
        "grad_scaler": _plain(bool),
        "output_dtype": _plain(str),
        "grad_evals": _ratio(),
        "grad_evals_rounds": _ratio(of=(list,)),
        "teleport_s": _seconds(),
        "grad_s": _seconds(),
        "reps": _plain(int),
        "t": _plain(float),
        "loss_rel_change": _plain(float),
        "stopped": _plain(str, NONE),
        "machine": MACHINE,
    },
    # bench_networks.discovery_time
    "discovery_time": {
        "method": _plain(str),
        "model": _plain(str),
        "batch": _plain(list),
        "device": _plain(str),
        "seconds": _seconds(),
        "forwards": _ratio(),
        "seconds_rounds": _seconds(of=(list,)),
        "reps": _plain(int),
        "n_scales": _plain(int),
        "machine": MACHINE,
    },
    # bench.time_to_target: one record for all the runs, each field a dict by run name
    "time_to_target": {
        "seconds": _seconds(of=(dict,)),
        "seconds_rounds": _seconds(of=(dict,)),
        "speedup": _ratio(of=(dict,)),
        "speedup_rounds": _ratio(of=(dict,)),
        "epochs": _plain(dict),
        "final_mean_loss": _plain(dict),
        "curves": _plain(dict),
        "teleport_share": _ratio(of=(dict,)),
        "target": _plain(dict),
        "seeds": _plain(list),
        "dims": _plain(list),
        "epochs_run": _plain(int),
        "reps": _plain(int),
        "device": _plain(str),
        "dtype": _plain(str),
        "machine": MACHINE,
    },
    # one run of bench.time_to_target, as a record of the performance notebook's results file (as_records;
    # made from files `make bench` may have written long ago, so declared here for its fields' roles only)
    "time_to_target_run": {
        "run": _plain(str),
        "epochs": _plain(int, NONE),
        "device": _plain(str),
        "final_mean_loss": _plain(*NUMBER, NONE),
        "loss": _plain(list),
        "time_s": _seconds(of=(list,)),
        "seconds": _seconds(),
        "seconds_rounds": _seconds(of=(list,)),
        "teleport_share": _ratio(),
        "speedup": _ratio(required=False),
        "speedup_rounds": _ratio(required=False, of=(list, NONE)),
    },
    # bench.batched_vs_loop
    "batched_seeds": {
        "method": _plain(str),
        "seeds": _plain(list),
        "dims": _plain(list),
        "epochs": _plain(int),
        "batched_s": _seconds(),
        "loop_s": _seconds(),
        "speedup": _ratio(),
        "max_abs_diff": _plain(*NUMBER),
        "max_rel_diff": _plain(*NUMBER),
        "identical": _plain(bool),
        "reps": _plain(int),
        "device": _plain(str),
        "dtype": _plain(str),
    },
    # benchmarks/report_build.py: `make report` timed cold, warm and no-op
    "report_build": {
        "target": _plain(str),
        "cold_s": _seconds(),
        "warm_s": _seconds(),
        "noop_s": _seconds(),
        "touched_for_warm": _plain(str, required=False),
        "returncode": _plain(dict, required=False),
        "output_tail": _plain(dict, required=False),
        "cpus": _plain(int, NONE, required=False),
    },
}

#: how each kind is laid out in its ``make bench`` file: a list of records, one record, or
#: ``{"records": [...], "machine": {...}}``
FILE_SHAPE = {
    "teleport_cost": "list",
    "network_teleport_cost": "list",
    "attention_teleport_cost": "list",
    "amp_teleport_cost": "list",
    "discovery_time": "list",
    "time_to_target": "one",
    "batched_seeds": "wrapped",
    "report_build": "one",
}

#: the fields that are wall-clock seconds, and those that are ratios of them, whatever the kind
WALL_S = tuple(sorted({n for fields in SCHEMA.values() for n, f in fields.items() if f.timing == "wall_s"}))
WALL_RATIOS = tuple(sorted({n for fields in SCHEMA.values() for n, f in fields.items() if f.timing == "wall_ratios"}))


def _type_names(types) -> str:
    return " or ".join("None" if t is NONE else t.__name__ for t in types)


def check(kind: str, value: dict) -> dict:
    """Check one record against the fields :data:`SCHEMA` declares for its kind.

    Args:
        kind: a key of :data:`SCHEMA`.
        value: the record.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: an unknown kind, a record that is not a dict, a field the kind does not declare, a
            required field missing, or a value of a type the field does not allow.
    """
    if kind not in SCHEMA:
        raise ValueError(f"Invalid kind: {kind!r} (choose from {', '.join(SCHEMA)})")
    if not isinstance(value, dict):
        raise ValueError(f"Invalid {kind} record: {value!r} (expected a dict)")
    fields = SCHEMA[kind]
    unknown = [name for name in value if name not in fields]
    if unknown:
        raise ValueError(f"Invalid {kind} record: unknown fields {unknown} (declared: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if f.required and name not in value]
    if missing:
        raise ValueError(f"Invalid {kind} record: missing fields {missing}")
    for name, v in value.items():
        types = fields[name].types
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ValueError(f"Invalid {kind} record: {name} = {v!r} (expected {_type_names(types)})")
    return value


def record(kind: str, **fields) -> dict:
    """A record of ``kind`` with these fields, checked by :func:`check`.

    Args:
        kind: a key of :data:`SCHEMA`.
        **fields: the record's fields.

    Returns:
        The record, a plain dict in the order the fields were given.

    Raises:
        ValueError: as :func:`check`.
    """
    return check(kind, dict(fields))


def write(path, kind: str, value, machine: dict | None = None) -> Path:
    """Check the measurements of ``kind`` and write them as a ``make bench`` file, atomically.

    Args:
        path: the JSON file to write.
        kind: a key of :data:`FILE_SHAPE`.
        value: the records (a list) or the record (``"one"``-shaped kinds).
        machine: what they were measured on (:func:`~symtele.study.bench_protocol.machine`), added to each
            record, to the one record, or beside the records, as the kind's file shape has it.

    Returns:
        The path written.

    Raises:
        ValueError: an unknown kind, ``value`` not a list for a kind of records, or a record that
            fails :func:`check`.
    """
    if kind not in FILE_SHAPE:
        raise ValueError(f"Invalid kind: {kind!r} (choose from {', '.join(FILE_SHAPE)})")
    shape = FILE_SHAPE[kind]
    extra = {} if machine is None else {"machine": machine}
    if shape == "one":
        out = check(kind, {**value, **extra})
    else:
        if not isinstance(value, list):
            raise ValueError(f"Invalid {kind} records: {value!r} (expected a list)")
        if shape == "list":
            out = [check(kind, {**r, **extra}) for r in value]
        else:
            out = {"records": [check(kind, dict(r)) for r in value], **extra}
    return write_json(path, out)


def _split(measurement: dict, kind: str, rename: dict | None = None) -> dict:
    """A measurement as a results record: its times under ``wall_s``, their ratios under ``wall_ratios``."""
    rename = rename or {}
    out = {"kind": kind}
    out.update({rename.get(k, k): v for k, v in measurement.items() if k not in (*WALL_S, *WALL_RATIOS, "machine")})
    out["wall_s"] = {k: v for k, v in measurement.items() if k in WALL_S}
    out["wall_ratios"] = {k: v for k, v in measurement.items() if k in WALL_RATIOS}
    return out


def as_records(
    cost: list[dict],
    target: dict,
    batched: list[dict],
    build: dict | None = None,
    networks: list[dict] | None = None,
    attention: list[dict] | None = None,
) -> list[dict]:
    """The measurements as the records of a results file, one per measurement, each with its ``kind``.

    Args:
        cost: :func:`~symtele.study.bench.teleport_cost` records.
        target: the :func:`~symtele.study.bench.time_to_target` record.
        batched: :func:`~symtele.study.bench.batched_vs_loop` records.
        build: the report build's timing (``benchmarks/report_build.py``), if measured.
        networks: :func:`~symtele.study.bench_networks.network_teleport_cost` records, if measured.
        attention: :func:`~symtele.study.bench_attention.attention_teleport_cost` records, if measured.

    Returns:
        One record per measurement; what depends on the machine's speed is under ``wall_s`` (seconds)
        and ``wall_ratios`` (ratios of seconds), which ``strip_timing`` drops; ``teleport_cost`` records
        name their teleport ``teleport``, ``batched_seeds`` ones their run ``run``.
    """
    records = [_split(r, "teleport_cost", {"method": "teleport"}) for r in cost]
    records += [_split(r, "network_teleport_cost") for r in networks or []]
    records += [_split(r, "attention_teleport_cost") for r in attention or []]
    for run, seconds in target["seconds"].items():
        measured = {
            "run": run,
            "epochs": target["epochs"][run],
            "device": target["device"],
            "final_mean_loss": target["final_mean_loss"][run],
            "loss": target["curves"][run]["loss"],
            "time_s": target["curves"][run]["time_s"],
            "seconds": seconds,
            "seconds_rounds": target["seconds_rounds"][run],
            "teleport_share": target["teleport_share"][run],
        }
        if run in target["speedup"]:
            measured.update(speedup=target["speedup"][run], speedup_rounds=target["speedup_rounds"][run])
        records.append(_split(measured, "time_to_target"))
    records += [_split(r, "batched_seeds", {"method": "run"}) for r in batched]
    if build is not None:
        records.append(_split({k: build[k] for k in ("target", "cold_s", "warm_s", "noop_s")}, "report_build"))
    return records
