"""Run the performance benchmarks and write their JSON files (what ``make bench`` calls).

    python benchmarks/run.py [--device cpu|cuda] [--out build/bench] [--only cost,target,batched] [--full]

Writes, under ``--out`` (files carry ``-cuda`` in their name on a GPU, so CPU and GPU
results can sit side by side, e.g. committed under ``benchmarks/results/``):

* ``teleport_cost.json``: one record per (method, dims), see :func:`symtele.study.bench.teleport_cost`;
  the cost table (the three networks of ``COST_DIMS``) and a width sweep at depth 3,
  dims ``[256, 784, w, w, 10]`` (records with ``"sweep": true``).
* ``time_to_target.json``: :func:`symtele.study.bench.time_to_target` on the course project's regression.
* ``batched_seeds.json``: :func:`symtele.study.bench.batched_vs_loop`.
* ``network_cost.json``: :func:`symtele.study.bench_networks.network_teleport_cost` for every network of
  ``MODELS`` (an MLP, the digits CNN and ResNet, a ResNet-18 on batches of 32 images of 32×32), the
  closed form against double backpropagation.
* ``attention_cost.json``: :func:`symtele.study.bench_attention.attention_teleport_cost` on the GPT of
  ``GPT_CONFIG`` (batches of 16 sequences of 64 random tokens), 1 and 10 ascent steps: the closed form beyond
  the gradient against double backpropagation.
* ``amp_cost.json``: :func:`symtele.study.bench_amp.amp_teleport_cost` for the ResNet-18 (batches of 32 images
  of 32×32) and the GPT of ``GPT_CONFIG`` (16 sequences of 64 tokens): a Teleporter's teleport against the
  training step's gradient, with automatic mixed precision off and on (bfloat16 autocast on a CPU, float16
  with a ``GradScaler`` on a GPU).
* ``discovery_time.json``: :func:`symtele.study.bench_networks.discovery_time` for every network of ``MODELS``
  on an example batch of 2 inputs, with and without the numerical verification.
* ``distributed_teleport.json`` (CPU only): :func:`symtele.study.bench_distributed.distributed_teleport_cost`, the
  all-reduce's share of a teleport of a ResNet-18 on 2 gloo processes of 16 images each, the share inside the
  collectives of the teleport from the gradient in ``p.grad``, and both teleports' cost in gradients in one
  process (``one_process``), with ``machine``.

Without ``--full``, the slowest measurements are cut: on the largest network ``gln`` and
``posscale-ref`` are not run (their records say so, with ``grad_evals: null``) and
``levelset-step`` takes 2 rounds; in the sweep ``posscale-ref`` stops at width 512.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from symtele import checks
from symtele.study import bench, bench_amp, bench_attention, bench_distributed, bench_networks, bench_records
from symtele.study.bench import sweep_dims
from symtele.study.bench_protocol import machine as measured_on

SWEEP_WIDTHS = (64, 128, 256, 512, 1024, 2048)
SWEEP_REF_MAX = 512  # widest sweep network timed with posscale-ref unless --full
PARTS = ("cost", "target", "batched", "networks", "attention", "amp", "discovery", "distributed")
ATTENTION_STEPS = (1, 10)  # ascent steps of the attention teleports timed


def not_measured(method, dims, device, why):
    return bench_records.record(
        "teleport_cost",
        method=method,
        dims=list(dims),
        steps=None,
        device=device,
        dtype="float32",
        grad_evals=None,
        teleport_s=None,
        grad_s=None,
        reps=0,
        note=why,
    )


def cost_records(device: str, full: bool, log) -> list[dict]:
    """The cost table and the width sweep."""
    records = []
    big = bench.COST_DIMS[-1]
    for dims in bench.COST_DIMS:
        methods, caps = list(bench.METHODS), {}
        if dims == big and not full:
            methods = ["posscale", "levelset-step"]
            caps = {"levelset-step": 2}
        log(f"teleport cost {list(dims)}: {', '.join(methods)}")
        for r in bench.teleport_cost(dims, methods, device=device, max_reps=caps):
            r["sweep"] = tuple(dims) == sweep_dims(512)
            records.append(r)
        if dims == big and not full:
            for m in ("posscale-ref", "gln"):
                records.append(not_measured(m, dims, device, "not run without --full (minutes per call on a CPU)"))
    for width in SWEEP_WIDTHS:
        if width == 512:
            continue  # measured in the table
        methods = ["posscale"] + (["posscale-ref"] if full or width <= SWEEP_REF_MAX else [])
        log(f"teleport cost sweep width {width}: {', '.join(methods)}")
        caps = {"posscale-ref": 2} if width > SWEEP_REF_MAX and "posscale-ref" in methods else {}
        for r in bench.teleport_cost(sweep_dims(width), methods, device=device, max_reps=caps):
            r["sweep"] = True
            records.append(r)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default="build/bench", help="output folder (default build/bench)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--full", action="store_true", help="also the slow measurements (hours on a CPU)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: a shared machine then slows every measurement alike)",
    )
    args = parser.parse_args(argv)

    parts = [p for p in args.only.split(",") if p]
    for p in parts:
        if p not in PARTS:
            parser.error(f"invalid --only part: {p!r} (choose from {', '.join(PARTS)})")
    if args.threads < 1:
        parser.error(f"invalid --threads: {args.threads} (must be >= 1)")
    torch.set_num_threads(args.threads)
    try:
        device = str(checks.device("--device", args.device))
    except ValueError as err:
        print(f"benchmarks skipped: {err}", file=sys.stderr)
        return 0
    suffix = "" if device == "cpu" else f"-{torch.device(device).type}"
    out = Path(args.out)
    machine = measured_on()

    def log(msg):
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if "cost" in parts:
        records = cost_records(device, args.full, log)
        log(f"wrote {bench_records.write(out / f'teleport_cost{suffix}.json', 'teleport_cost', records, machine)}")
    if "networks" in parts:
        records = []
        for model in bench_networks.MODELS:
            log(f"network teleport cost: {model}")
            caps = {"rescale-ref": 2} if model == "resnet18" and not args.full else {}
            records += bench_networks.network_teleport_cost(model, bench_networks.METHODS, device=device, max_reps=caps)
        path = out / f"network_cost{suffix}.json"
        log(f"wrote {bench_records.write(path, 'network_teleport_cost', records, machine)}")
    if "attention" in parts:
        records = []
        for steps in ATTENTION_STEPS:
            log(f"attention teleport cost: GPT, {steps} step(s)")
            records += bench_attention.attention_teleport_cost(steps=steps, device=device)
        path = out / f"attention_cost{suffix}.json"
        log(f"wrote {bench_records.write(path, 'attention_teleport_cost', records, machine)}")
    if "amp" in parts:
        records = []
        for model in bench_amp.MODELS:
            log(f"teleport with AMP off and on: {model}")
            records += bench_amp.amp_teleport_cost(model, device=device)
        log(f"wrote {bench_records.write(out / f'amp_cost{suffix}.json', 'amp_teleport_cost', records, machine)}")
    if "discovery" in parts:
        records = []
        for model in bench_networks.MODELS:
            log(f"discovery time: {model}")
            records += bench_networks.discovery_time(model, device=device)
        log(f"wrote {bench_records.write(out / f'discovery_time{suffix}.json', 'discovery_time', records, machine)}")
    if "distributed" in parts:
        if device != "cpu":
            log("distributed teleport: not measured on a GPU (it times gloo processes on the CPU)")
        else:
            log("distributed teleport: a ResNet-18 on 2 gloo processes")
            result = bench_distributed.distributed_teleport_cost()
            path = out / "distributed_teleport.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**result, "machine": machine}, indent=1))
            log(f"wrote {path}")
    if "target" in parts:
        log("time to target (the course project's regression, 5 seeds batched)")
        result = bench.time_to_target(reps=9, device=device)
        log(f"wrote {bench_records.write(out / f'time_to_target{suffix}.json', 'time_to_target', result, machine)}")
    if "batched" in parts:
        log("batched seeds against a loop over seeds")
        records = bench.batched_vs_loop(device=device)
        log(f"wrote {bench_records.write(out / f'batched_seeds{suffix}.json', 'batched_seeds', records, machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
