"""Run one numbered notebook with papermill, so that a failure never loses work.

The notebook runs with cwd = its folder and the parameters of its stamp file, into a temporary
file. On success that file becomes ``<build>/notebooks/<stem>.ipynb``. On failure it is kept as
``<build>/failed/<stem>.ipynb``, the notebook's previous results (``results/<stem>.json``) and
figures (``figures/<stem>/``) are put back, the failing cell and its error are printed, and the
exit status is 1, so ``make`` stops before the report is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

KERNEL = "symtele"


def outputs_of(build: Path, stem: str) -> list[Path]:
    """What a notebook writes: its results file and its figure folder."""
    return [build / "results" / f"{stem}.json", build / "figures" / stem]


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def back_up(build: Path, stem: str) -> None:
    """Move the notebook's previous outputs aside (first restoring any left by an interrupted run)."""
    restore(build, stem)
    for path in outputs_of(build, stem):
        if path.exists():
            saved = build / "previous" / path.relative_to(build)
            saved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, saved)


def restore(build: Path, stem: str) -> None:
    """Put back the outputs saved by ``back_up``, replacing whatever the failed run wrote."""
    for path in outputs_of(build, stem):
        saved = build / "previous" / path.relative_to(build)
        if saved.exists():
            remove(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(saved, path)


def discard_backup(build: Path, stem: str) -> None:
    for path in outputs_of(build, stem):
        remove(build / "previous" / path.relative_to(build))


def source_cell_index(notebook: Path, source: str) -> int | None:
    """Index (0-based) of the cell with this source in the notebook as written."""
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, cell in enumerate(cells) if cell.source == source), None)


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def describe_failure(stem: str, notebook: Path, error, kept: Path) -> str:
    """The message naming the notebook, the failing cell and its error."""
    from papermill.exceptions import PapermillExecutionError

    lines = [f"make report: notebook {stem} FAILED"]
    if isinstance(error, PapermillExecutionError):
        index = source_cell_index(notebook, error.source)
        where = f"cell {index}" if index is not None else "a cell"
        lines.append(f"  in {where} (In [{error.exec_count}]) of {notebook}:")
        lines += [f"    | {line}" for line in error.source.splitlines()[:12]]
        marked = [line for line in strip_ansi("\n".join(error.traceback)).splitlines() if re.match(r"-+> ", line)]
        if marked:
            lines.append(f"  failing line: {marked[0].strip()}")
        lines.append(f"  {error.ename}: {error.evalue}")
    else:
        lines.append(f"  {type(error).__name__}: {error}")
    lines.append(f"  executed notebook kept in {kept}; previous results, figures and report left as they were")
    return "\n".join(lines)


def execute(notebook: Path, build: Path, params_file: Path) -> int:
    """Run the notebook; 0 on success, 1 on failure (after the clean-up described above)."""
    import papermill

    stem = notebook.stem
    parameters = json.loads(params_file.read_text())
    done = build / "notebooks" / f"{stem}.ipynb"
    running = build / "notebooks" / f".{stem}.running.ipynb"
    failed = build / "failed" / f"{stem}.ipynb"
    running.parent.mkdir(parents=True, exist_ok=True)
    back_up(build, stem)
    print(f"make report: running {stem}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(running),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(notebook.parent),
            progress_bar=True,
            log_output=False,
        )
    except (Exception, KeyboardInterrupt) as error:
        restore(build, stem)
        failed.parent.mkdir(parents=True, exist_ok=True)
        if running.exists():
            os.replace(running, failed)
        print(describe_failure(stem, notebook, error, failed), file=sys.stderr)
        return 1
    discard_backup(build, stem)
    remove(failed)
    os.replace(running, done)
    print(f"make report: {stem} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--params", type=Path, required=True, help="the notebook's parameter stamp (JSON)")
    args = parser.parse_args(argv)
    return execute(args.notebook, args.build, args.params)


if __name__ == "__main__":
    sys.exit(main())
