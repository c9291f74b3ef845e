"""What the all-reduce adds to a teleport under ``torch.distributed``: processes on the CPU (gloo), a ResNet-18.

Each process times, interleaved round by round, a teleport of the global batch (the gradient all-reduced
over all processes: :mod:`~symtele.distributed`) and a teleport of its own batch alone (a process group of
one: no collective), on the same network and batch size, and the all-reduce of one flat buffer of the
gradient's size by itself; the processes start each timing together (a barrier). The global teleport waits
for the slowest process at its first all-reduce, which is load imbalance, not communication: so the share
is ``(global − own) / own`` with both of a round taken on its slowest process, the median over rounds
(``share``), and also per process (``share_per_process``, which counts that wait) and as the ratio of the
minima over rounds (``share_of_minima``, the protocol of :mod:`~symtele.study.bench_protocol`). On a
shared machine the teleports' own times drift between one timing and the next by more than the all-reduce
costs; the time spent inside the collectives (packing, sums, waits) is measured within the same teleport, so
``collectives_share``, its fraction of the global teleport on the process that waited least, is the steadier
estimate. The collectives one teleport makes are counted (``collectives``: calls and bytes).

The teleport from the gradient the user's backward pass left in ``p.grad``
(:meth:`~symtele.teleporter.Teleporter.maybe_after_backward`) is timed in the same rounds, on a replica of the
network wrapped by ``DistributedDataParallel`` (whose backward pass averaged ``p.grad`` once, before the
rounds; each teleport rewrites it to the gradient at the point it moves to): ``after_backward_collectives_share``
is the fraction of its time inside the collectives, measured as for the other, and its collectives are
counted (``after_backward_collectives``). :func:`one_process_cost` times, in one process by the protocol of
:mod:`~symtele.study.bench_protocol`, both teleports against one gradient of the network (a forward and a
backward pass on the same batch): their costs in gradient evaluations.

    python -m symtele.study.bench_distributed --out build/bench/distributed_teleport.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..models import resnet18
from ..teleporter import Teleporter
from .bench_protocol import interleaved_times


def _timed(teleporter, x, y, **options) -> float:
    start = time.perf_counter()
    teleporter.teleport(x, y, **options)
    return time.perf_counter() - start


#: the functions of :mod:`~symtele.distributed` a teleport communicates through (packing and unpacking included)
COMMUNICATING = ("sum_over", "mean_value", "mean_values", "gather_values")


def _timed_in_collectives(teleporter, x, y, **options) -> tuple[float, float]:
    """Seconds of one teleport, and of it the seconds spent in :data:`COMMUNICATING` (waits included)."""
    spent, originals = [0.0], {name: getattr(distributed, name) for name in COMMUNICATING}

    def timing(fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return call

    try:
        for name, fn in originals.items():
            setattr(distributed, name, timing(fn))
        total = _timed(teleporter, x, y, **options)
    finally:
        for name, fn in originals.items():
            setattr(distributed, name, fn)
    return total, spent[0]


def _collectives(teleporter, x, y, **options) -> dict:
    """The collective calls one teleport makes, by name: ``{"calls", "bytes"}`` (the tensors' sizes)."""
    counted, originals = {}, {name: getattr(dist, name) for name in ("all_reduce", "all_gather_object", "barrier")}

    def counting(name):
        def call(*args, **kwargs):
            entry = counted.setdefault(name, {"calls": 0, "bytes": 0})
            entry["calls"] += 1
            if args and isinstance(args[0], torch.Tensor):
                entry["bytes"] += args[0].numel() * args[0].element_size()
            return originals[name](*args, **kwargs)

        return call

    try:
        for name in originals:
            setattr(dist, name, counting(name))
        teleporter.teleport(x, y, **options)
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return counted


def _on_each_process(rank, world, store, out, batch, rounds):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        alone = [dist.new_group([r]) for r in range(world)][rank]  # every process makes every group
        torch.manual_seed(0)
        model = resnet18()
        g = torch.Generator().manual_seed(rank)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        options = {"schedule": [0], "state": "keep", "accept": "always"}
        together = Teleporter(model, F.cross_entropy, process_group=dist.group.WORLD, **options)
        own = Teleporter(model, F.cross_entropy, process_group=alone, **options)
        together.teleport(x, y), own.teleport(x, y)  # discovery, the settings' check, warm caches
        replica = DistributedDataParallel(copy.deepcopy(model))
        F.cross_entropy(replica(x), y).backward()  # p.grad: the gradient averaged over the processes
        after = Teleporter(replica, F.cross_entropy, **options)
        after.teleport(x, y, after_backward=True)
        collectives = _collectives(together, x, y)
        after_collectives = _collectives(after, x, y, after_backward=True)
        flat = torch.zeros(sum(p.numel() for p in model.parameters()) + 2)
        numbers = torch.zeros(world, 5, dtype=torch.float64)  # what the teleport from p.grad gathers
        rows = []
        for _ in range(rounds):
            dist.barrier()
            t_together, t_collectives = _timed_in_collectives(together, x, y)
            dist.barrier()
            t_after, t_after_collectives = _timed_in_collectives(after, x, y, after_backward=True)
            dist.barrier()
            t_own = _timed(own, x, y)
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(flat)
            t_alone = time.perf_counter() - start
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(numbers)
            t_numbers = time.perf_counter() - start
            rows.append(
                {
                    "global_s": t_together,
                    "own_s": t_own,
                    "all_reduce_s": t_alone,
                    "collectives_s": t_collectives,
                    "after_backward_s": t_after,
                    "after_backward_collectives_s": t_after_collectives,
                    "numbers_all_reduce_s": t_numbers,
                }
            )
        sent = together.records[-1].trace["all_reduce_bytes"]
        after_sent = after.records[-1].trace["all_reduce_bytes"]
        dist.barrier()  # both processes are done with their collectives before either closes its connections
    finally:
        dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "all_reduce_bytes": sent,
                "collectives": collectives,
                "after_backward_all_reduce_bytes": after_sent,
                "after_backward_collectives": after_collectives,
            }
        )
    )


def distributed_teleport_cost(world: int = 2, batch: int = 16, rounds: int = 9) -> dict:
    """Time teleports of a ResNet-18 on ``world`` CPU processes (gloo), ``batch`` 3×32×32 images each.

    Args:
        world: the number of processes.
        batch: each process's batch size.
        rounds: the interleaved rounds timed (after one untimed, and one whose collectives are counted).

    Returns:
        A dict: the settings; ``ranks``, each process's rows (``global_s``: the teleport with the all-reduce,
        ``own_s``: without, ``all_reduce_s``: the all-reduce of a flat buffer of the gradient's size alone,
        ``collectives_s``: the part of ``global_s`` spent in :data:`COMMUNICATING`, ``after_backward_s``: the
        teleport from the gradient in ``p.grad``, ``after_backward_collectives_s``: its part in them,
        ``numbers_all_reduce_s``: the all-reduce of the numbers it gathers alone, after a barrier, seconds);
        ``all_reduce_bytes`` (the record's); ``collectives`` (process 0's calls and bytes of one teleport, by
        function); and the shares, fractions of a teleport: ``share``, the median over rounds of
        ``(global − own) / own`` on the round's slowest process; ``share_rounds``, that ratio of every round;
        ``share_per_process``, its median over processes and rounds taken per process; ``share_of_minima``,
        ``min global / min own − 1`` over the rounds' slowest; ``all_reduce_share``, the median over processes
        and rounds of ``all_reduce_s / own_s``; and ``collectives_share``, the median over rounds of
        ``collectives_s / global_s`` on the process that spent least in them (the last to arrive at an
        all-reduce waits least), with ``collectives_share_rounds`` every round's; for the teleport from
        ``p.grad``, ``after_backward_all_reduce_bytes``, ``after_backward_collectives``,
        ``after_backward_collectives_share`` and ``after_backward_collectives_share_rounds`` likewise, and
        ``after_backward_over_global``, the median over rounds of its time over the other's on the round's
        slowest process; ``numbers_all_reduce_share``, the median over processes and rounds of
        ``numbers_all_reduce_s / after_backward_s`` (the communication without the wait for the slower process);
        ``one_process``, :func:`one_process_cost` with the same batch and rounds.
    """
    with tempfile.TemporaryDirectory() as folder:
        args = (world, Path(folder, "store"), folder, batch, rounds)
        mp.spawn(_on_each_process, args=args, nprocs=world, join=True)
        ranks = [json.loads(Path(folder, f"{r}.json").read_text()) for r in range(world)]
    rows = [row for rank in ranks for row in rank["rows"]]
    slowest = [
        {key: max(rank["rows"][i][key] for rank in ranks) for key in ("global_s", "own_s")} for i in range(rounds)
    ]
    by_round = [(r["global_s"] - r["own_s"]) / r["own_s"] for r in slowest]
    inside = [
        min(rank["rows"][i]["collectives_s"] / rank["rows"][i]["global_s"] for rank in ranks) for i in range(rounds)
    ]
    after_inside = [
        min(rank["rows"][i]["after_backward_collectives_s"] / rank["rows"][i]["after_backward_s"] for rank in ranks)
        for i in range(rounds)
    ]
    after_over = [
        max(rank["rows"][i]["after_backward_s"] for rank in ranks) / max(rank["rows"][i]["global_s"] for rank in ranks)
        for i in range(rounds)
    ]
    return {
        "network": "resnet18",
        "world": world,
        "batch_per_process": batch,
        "backend": "gloo",
        "threads_per_process": 1,
        "rounds": rounds,
        "all_reduce_bytes": ranks[0]["all_reduce_bytes"],
        "collectives": ranks[0]["collectives"],
        "ranks": [rank["rows"] for rank in ranks],
        "share": statistics.median(by_round),
        "share_rounds": by_round,
        "share_per_process": statistics.median((r["global_s"] - r["own_s"]) / r["own_s"] for r in rows),
        "share_of_minima": min(r["global_s"] for r in slowest) / min(r["own_s"] for r in slowest) - 1,
        "all_reduce_share": statistics.median(r["all_reduce_s"] / r["own_s"] for r in rows),
        "collectives_share": statistics.median(inside),
        "collectives_share_rounds": inside,
        "after_backward_all_reduce_bytes": ranks[0]["after_backward_all_reduce_bytes"],
        "after_backward_collectives": ranks[0]["after_backward_collectives"],
        "after_backward_collectives_share": statistics.median(after_inside),
        "after_backward_collectives_share_rounds": after_inside,
        "after_backward_over_global": statistics.median(after_over),
        "numbers_all_reduce_share": statistics.median(r["numbers_all_reduce_s"] / r["after_backward_s"] for r in rows),
        "one_process": one_process_cost(batch, rounds),
    }


def one_process_cost(batch: int = 16, rounds: int = 9, threads: int = 1) -> dict:
    """The two teleports of a ResNet-18 in gradient evaluations, in one process (no ``torch.distributed``).

    Interleaved in the same rounds (:func:`~symtele.study.bench_protocol.interleaved_times`): one gradient
    (``model(x)``, the loss, ``backward()``), the Teleporter's teleport that computes its gradient
    (``teleport``), and its teleport from the gradient in ``p.grad`` (``after_backward``), each on its own copy
    of the network (seeded alike), ``accept="always"`` and ``state="keep"``: the ascent, the loss checks and the
    move, no look-ahead (:mod:`~symtele.study.bench_networks` times that).

    Args:
        batch: the batch size (3×32×32 images).
        rounds: the interleaved rounds (after one untimed call each).
        threads: torch's intra-op threads during the timing (restored afterwards).

    Returns:
        A dict: the settings; ``grad_s``, ``teleport_s``, ``after_backward_s`` (every round's seconds);
        ``teleport_grad_evals``, ``after_backward_grad_evals`` (the minima's ratio to the gradient's, the
        protocol's estimate) and their ``…_rounds`` (every round's ratio); ``forward_evals`` (the forward passes
        each teleport's record counts).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = resnet18()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        options = {"schedule": [0], "state": "keep", "accept": "always"}
        computing, at_hand, graded = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
        teleport = Teleporter(computing, F.cross_entropy, **options)
        after = Teleporter(at_hand, F.cross_entropy, **options)
        F.cross_entropy(at_hand(x), y).backward()  # p.grad, rewritten by every teleport to the new point's

        def gradient():
            graded.zero_grad()
            F.cross_entropy(graded(x), y).backward()

        times = interleaved_times(
            {
                "grad": gradient,
                "teleport": lambda: teleport.teleport(x, y),
                "after_backward": lambda: after.teleport(x, y, after_backward=True),
            },
            reps=rounds,
            min_time=0.0,
        )
    finally:
        torch.set_num_threads(before)
    return {
        "network": "resnet18",
        "batch": batch,
        "threads": threads,
        "rounds": rounds,
        "grad_s": times["grad"],
        "teleport_s": times["teleport"],
        "after_backward_s": times["after_backward"],
        **{f"{name}_grad_evals": min(times[name]) / min(times["grad"]) for name in ("teleport", "after_backward")},
        **{
            f"{name}_grad_evals_rounds": [t / g for t, g in zip(times[name], times["grad"])]
            for name in ("teleport", "after_backward")
        },
        "forward_evals": {
            "teleport": teleport.records[-1].forward_evals,
            "after_backward": after.records[-1].forward_evals,
        },
    }


def main(argv=None) -> None:
    """Run :func:`distributed_teleport_cost` from the command line and write its JSON.

    Args:
        argv: the command line's arguments (``--out``, ``--world``, ``--batch``, ``--rounds``); by default
            ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench/distributed_teleport.json"))
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    result = distributed_teleport_cost(args.world, args.batch, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    keys = ("share", "share_per_process", "share_of_minima", "all_reduce_share", "collectives_share")
    pct = {k: f"{100 * result[k]:.1f} %" for k in keys}
    inside = statistics.quantiles(result["collectives_share_rounds"], n=4) if args.rounds > 1 else [0.0] * 3
    low, _, high = statistics.quantiles(result["share_rounds"], n=4) if args.rounds > 1 else [result["share"]] * 3
    calls = ", ".join(f"{v['calls']} {k}" for k, v in result["collectives"].items())
    after_calls = ", ".join(f"{v['calls']} {k}" for k, v in result["after_backward_collectives"].items())
    one = result["one_process"]
    print(
        f"{args.out}: the all-reduce adds {pct['share']} to a teleport (median of {args.rounds} rounds, quartiles "
        f"{100 * low:.1f} to {100 * high:.1f} %; per process {pct['share_per_process']}, of the minima "
        f"{pct['share_of_minima']}), the all-reduce alone {pct['all_reduce_share']}, "
        f"{result['all_reduce_bytes']:,} bytes; per teleport: {calls}; inside the collectives "
        f"{pct['collectives_share']} of the teleport (quartiles {100 * inside[0]:.1f} to {100 * inside[2]:.1f} %); "
        f"from p.grad: {100 * result['after_backward_collectives_share']:.2f} % inside the collectives, "
        f"{result['after_backward_all_reduce_bytes']} bytes, per teleport: {after_calls} (their all-reduce alone "
        f"{100 * result['numbers_all_reduce_share']:.2f} %), its time "
        f"{result['after_backward_over_global']:.2f}× the other's; in one process, in gradients: "
        f"{one['teleport_grad_evals']:.2f} (computing one), {one['after_backward_grad_evals']:.2f} (from p.grad)"
    )


if __name__ == "__main__":
    main()
