"""Time ``make report`` in a temporary copy of the working tree: cold, warm and no-op.

    python benchmarks/report_build.py [--out build/bench/report_build.json] [--target report]

The copy holds every tracked and untracked-but-not-ignored file (modification times kept,
so ``make`` sees the environment as up to date) and a symbolic link to this checkout's
``.venv``; the real ``build/`` is never touched. Three builds are timed, one after another:

* ``cold``: no ``build/`` at all;
* ``warm``: one notebook touched (``--touch``, default ``notebooks/05_performance.ipynb``),
  so ``make`` reruns it and whatever depends on it;
* ``noop``: nothing changed.

Writes ``{"cold_s", "warm_s", "noop_s", "returncode", ...}``; a build that fails is
recorded with its return code and the tail of its output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from symtele.study.bench_records import write

ROOT = Path(__file__).resolve().parent.parent


def tree_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working tree (paths relative to ``root``)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (root / p).is_file()})


def copy_tree(root: Path, dest: Path) -> None:
    for rel in tree_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    os.symlink(root / ".venv", dest / ".venv")


def timed_make(dest: Path, target: str, timeout: float) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            ["make", "--no-print-directory", target], cwd=dest, capture_output=True, text=True, timeout=timeout
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, output = "timeout", f"{err}"
    return {"seconds": time.perf_counter() - start, "returncode": code, "tail": output[-1500:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench/report_build.json")
    parser.add_argument("--target", default="report", help="the make target to time (default: report)")
    parser.add_argument("--touch", default="notebooks/05_performance.ipynb", help="file touched for the warm build")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds allowed per build")
    args = parser.parse_args(argv)
    if not (ROOT / ".venv").is_dir():
        parser.error(f"no environment at {ROOT / '.venv'}: run `make env` first")
    if args.timeout <= 0:
        parser.error(f"invalid --timeout: {args.timeout} (must be > 0)")

    with tempfile.TemporaryDirectory(prefix="symtele-report-build-") as tmp:
        dest = Path(tmp)
        copy_tree(ROOT, dest)
        if not (dest / args.touch).is_file():
            parser.error(f"invalid --touch: {args.touch!r} is not a file of the working tree")
        runs = {}
        print(f"[report build] cold build of `make {args.target}` in {dest}", file=sys.stderr, flush=True)
        runs["cold"] = timed_make(dest, args.target, args.timeout)
        (dest / args.touch).touch()
        print("[report build] warm build", file=sys.stderr, flush=True)
        runs["warm"] = timed_make(dest, args.target, args.timeout)
        print("[report build] no-op build", file=sys.stderr, flush=True)
        runs["noop"] = timed_make(dest, args.target, args.timeout)

    result = {f"{k}_s": v["seconds"] for k, v in runs.items()}
    result.update(
        {
            "target": args.target,
            "touched_for_warm": args.touch,
            "returncode": {k: v["returncode"] for k, v in runs.items()},
            "output_tail": {k: v["tail"] for k, v in runs.items() if v["returncode"] != 0},
            "cpus": os.cpu_count(),
        }
    )
    out = write(args.out, "report_build", result)
    print(
        f"[report build] cold {result['cold_s']:.1f} s, warm {result['warm_s']:.1f} s, "
        f"no-op {result['noop_s']:.1f} s -> {out}",
        file=sys.stderr,
    )
    failed = [k for k, v in runs.items() if v["returncode"] != 0]
    if failed:
        print(f"[report build] FAILED: {', '.join(failed)} (see output_tail in {out})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
