"""What the all-reduce adds to a teleport under ``torch.distributed``: processes on the CPU (gloo), a ResNet-18.

Each process times, interleaved round by round, a teleport of the global batch (the gradient all-reduced
over all processes: :mod:`~symtele.distributed`) and a teleport of its own batch alone (a process group of
one: no collective), on the same network and batch size, and the all-reduce of a buffer of the gradient's
size by itself. The share is the median over rounds of ``(global − own) / own``.

    python -m symtele.study.bench_distributed --out build/bench/distributed_teleport.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ..models import resnet18
from ..teleporter import Teleporter


def _timed(teleporter, x, y) -> float:
    start = time.perf_counter()
    teleporter.teleport(x, y)
    return time.perf_counter() - start


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
        flat = torch.zeros(sum(p.numel() for p in model.parameters()) + 2)
        rows = []
        for _ in range(rounds):
            dist.barrier()
            t_together = _timed(together, x, y)
            dist.barrier()
            t_own = _timed(own, x, y)
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(flat)
            rows.append({"global_s": t_together, "own_s": t_own, "all_reduce_s": time.perf_counter() - start})
        sent = together.records[-1].trace["all_reduce_bytes"]
    finally:
        dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(json.dumps({"rows": rows, "all_reduce_bytes": sent}))


def distributed_teleport_cost(world: int = 2, batch: int = 16, rounds: int = 5) -> dict:
    """Time teleports of a ResNet-18 on ``world`` CPU processes (gloo), ``batch`` 3×32×32 images each.

    Args:
        world: the number of processes.
        batch: each process's batch size.
        rounds: the interleaved rounds timed (after one untimed).

    Returns:
        A dict: the settings, each process's ``rows`` (``global_s``: the teleport with the all-reduce, ``own_s``:
        without, ``all_reduce_s``: the all-reduce alone, seconds), ``all_reduce_bytes``, and ``share``: the median
        over processes and rounds of ``(global_s − own_s) / own_s``, and ``all_reduce_share``: of
        ``all_reduce_s / own_s``.
    """
    with tempfile.TemporaryDirectory() as folder:
        args = (world, Path(folder, "store"), folder, batch, rounds)
        mp.spawn(_on_each_process, args=args, nprocs=world, join=True)
        ranks = [json.loads(Path(folder, f"{r}.json").read_text()) for r in range(world)]
    rows = [row for rank in ranks for row in rank["rows"]]
    return {
        "network": "resnet18",
        "world": world,
        "batch_per_process": batch,
        "backend": "gloo",
        "threads_per_process": 1,
        "rounds": rounds,
        "all_reduce_bytes": ranks[0]["all_reduce_bytes"],
        "ranks": [rank["rows"] for rank in ranks],
        "share": statistics.median((r["global_s"] - r["own_s"]) / r["own_s"] for r in rows),
        "all_reduce_share": statistics.median(r["all_reduce_s"] / r["own_s"] for r in rows),
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
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    result = distributed_teleport_cost(args.world, args.batch, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"{args.out}: the all-reduce adds {100 * result['share']:.1f} % to a teleport (median), "
        f"the all-reduce alone {100 * result['all_reduce_share']:.1f} %, {result['all_reduce_bytes']:,} bytes"
    )


if __name__ == "__main__":
    main()
