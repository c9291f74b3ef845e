"""Time the explorer's redraw: from a control change to the new PNG, on the ReLU regression with 5 seeds.

Each change moves the teleport epoch (GD, positive scale, 300 epochs), so the
baseline is reused and one teleported run plus the redraw is timed, as in the
panel. Prints the times and writes them to ``--out`` (JSON) with the load average.
"""

import argparse
import os
import statistics
from pathlib import Path

from symtele.explorer import Explorer
from symtele.study.results import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=10, help="number of teleport-epoch changes to time")
    parser.add_argument("--out", type=Path, default=Path("build/bench/explorer_redraw.json"))
    args = parser.parse_args()
    if args.changes < 1:
        parser.error(f"Invalid --changes: {args.changes} (must be >= 1)")
    explorer = Explorer()  # the ReLU regression, GD, positive scale at epoch 5, 300 epochs, 5 seeds
    explorer.wait()
    first = explorer.redraw_s
    times = []
    for k in range(args.changes):
        explorer.controls["at"].value = str(10 + 10 * k)
        explorer.wait()
        if explorer.log[-1][1] != "done":
            raise RuntimeError(f"run {explorer.log[-1]} did not finish: {explorer.message.value}")
        times.append(explorer.redraw_s)
    record = {
        "first_run_s": first,
        "redraw_s": times,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    write_json(args.out, record)
    print(
        f"explorer redraw (ReLU regression, 5 seeds): median {record['median_s']:.3f} s, "
        f"max {record['max_s']:.3f} s over {len(times)} changes; first run with baseline {first:.3f} s; "
        f"load average {record['load_average_1min']:.2f} on {record['cpus']} CPUs -> {args.out}"
    )


if __name__ == "__main__":
    main()
