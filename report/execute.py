"""Run one numbered notebook with papermill, so that no failure, signal or power cut loses work.

The notebook runs with cwd = its folder and the parameters of its stamp file, and writes everything
into a staging folder, ``<build>/.staging/<stem>/`` (its ``output_dir`` parameter): the executed
notebook, ``results/<stem>.json`` and ``figures/<stem>/``. The build's own results, figures and
executed notebook are not touched while it runs. Only when it has finished are its outputs moved
into place, each file by one atomic rename (figures first, then the results file, then the executed
notebook, which ``make`` takes as the sign that the notebook is done); stale figures go last. So a
kill at any moment (SIGTERM, SIGHUP, SIGKILL, a power cut) leaves every file readable, old or new,
and the next build reruns whatever did not finish.

On failure the executed notebook is kept as ``<build>/failed/<stem>.ipynb``, the failing cell and its
error are printed, the parameter stamp goes back to what the last good run used (so a failed
``PARAMS=...`` is not remembered), and the exit status is 1, so ``make`` stops before the report is
rebuilt. The kernel talks to papermill over local IPC sockets, not TCP. It is stopped at once when the
last cell is done (nbclient's ``shutdown_kernel="immediate"``): by then every output has reached the
notebook and every file the cells write is closed, and a graceful stop waits 0.5–2 s for the kernel's
own teardown, on every notebook of the build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from symtele.study.results import write_text

KERNEL = "symtele"
KERNELSPEC = {"name": KERNEL, "display_name": "Python (symtele)", "language": "python"}


def staging(build: Path, stem: str) -> Path:
    """The folder where a run of notebook ``stem`` writes its outputs before they are promoted.

    Args:
        build: the build folder.
        stem: the notebook's name.

    Returns:
        ``<build>/.staging/<stem>``.
    """
    return build / ".staging" / stem


def remove(path: Path) -> None:
    """Remove a file, a link or a folder with its contents; nothing when ``path`` does not exist.

    Args:
        path: what to remove.
    """
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def promote(build: Path, stem: str, stage: Path) -> None:
    """Move the staged outputs into the build, one atomic rename per file; the executed notebook last.

    Figures of the notebook that the run did not write again are removed, and so is the staging folder.

    Args:
        build: the build folder.
        stem: the notebook's name.
        stage: its staging folder.
    """
    figures, staged_figures = build / "figures" / stem, stage / "figures" / stem
    figures.mkdir(parents=True, exist_ok=True)
    new = sorted(p.name for p in staged_figures.iterdir()) if staged_figures.is_dir() else []
    for name in new:
        os.replace(staged_figures / name, figures / name)
    staged_results = stage / "results" / f"{stem}.json"
    if staged_results.exists():
        (build / "results").mkdir(parents=True, exist_ok=True)
        os.replace(staged_results, build / "results" / f"{stem}.json")
    (build / "notebooks").mkdir(parents=True, exist_ok=True)
    os.replace(stage / f"{stem}.ipynb", build / "notebooks" / f"{stem}.ipynb")
    for old in figures.iterdir():
        if old.name not in new:
            remove(old)
    remove(stage)


def source_cell_index(notebook: Path, source: str) -> int | None:
    """Index (0-based) of the cell with this source in the notebook as written.

    Args:
        notebook: the notebook's path.
        source: the cell's source.

    Returns:
        The index, or ``None`` when no cell has that source.
    """
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, cell in enumerate(cells) if cell.source == source), None)


def strip_ansi(text: str) -> str:
    """``text`` without its ANSI colour codes.

    Args:
        text: a traceback's text.

    Returns:
        The text.
    """
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def describe_failure(stem: str, notebook: Path, error, kept: Path) -> str:
    """The message naming the notebook, the failing cell and its error.

    Args:
        stem: the notebook's name.
        notebook: its path.
        error: what papermill (or the run) raised.
        kept: where the failed executed notebook is kept.

    Returns:
        The message, several lines.
    """
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


def restore_stamp(build: Path, stem: str, params_file: Path) -> None:
    """Put back the parameter stamp the last good run used, or remove the stamp when there is no good run.

    The stamp is kept, as text, in the executed notebook's metadata; it is put back older than that notebook.

    Args:
        build: the build folder.
        stem: the notebook's name.
        params_file: the stamp's path.
    """
    done = build / "notebooks" / f"{stem}.ipynb"
    if not done.exists():
        remove(params_file)
        return
    ran_with = nbformat.read(done, as_version=4).metadata.get("symtele", {}).get("parameters")
    if ran_with is None:
        remove(params_file)
        return
    write_text(params_file, ran_with)
    earlier = done.stat().st_mtime - 1
    os.utime(params_file, (earlier, earlier))


class Progress:
    """One line per executed code cell, named by its notebook, so that parallel notebooks read clearly.

    Args:
        stem: the notebook's name.
        total: its number of code cells.
    """

    def __init__(self, stem: str, total: int):
        self.stem, self.total, self.done, self.start = stem, total, 0, time.perf_counter()

    def __call__(self, cell=None, cell_index=None, execute_reply=None) -> None:
        """Count one more cell done and print the progress line.

        Args:
            cell: the cell (unused).
            cell_index: its index (unused).
            execute_reply: the kernel's reply (unused).
        """
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(
            f"make report: {self.stem}: cell {self.done}/{self.total} done, {elapsed:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def local_kernel_manager(sockets: Path, log: Path):
    """A kernel manager class whose kernel listens on IPC sockets under ``sockets``, logging to ``log``.

    ``sockets`` is a folder of this run's own, so that notebooks running side by side never share one: local,
    and no 'TCP without encryption'. The kernel process's own standard error (its log lines, not the cells'
    output, which reaches the notebook) goes to the file ``log``: jupyter_client interrupts a kernel before
    shutting it down, and an idle kernel logs that as "KeyboardInterrupt caught in kernel". Only public
    settings change: the manager's ``transport`` and ``ip``, and the ``stderr`` that ``start_kernel`` passes
    to the process.

    Args:
        sockets: the folder of the kernel's IPC sockets.
        log: the file the kernel process's standard error goes to.

    Returns:
        The kernel manager class, for papermill.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("ip")
        def _default_ip(self):
            return str(sockets / "kernel")

        async def start_kernel(self, **kw):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as stream:  # the kernel keeps its own copy of the descriptor
                return await super().start_kernel(**{"stderr": stream, **kw})

    return IPCKernelManager


def execute(notebook: Path, build: Path, params_file: Path) -> int:
    """Run the notebook; 0 on success, 1 on failure (after the clean-up described above).

    Args:
        notebook: the notebook's path.
        build: the build folder.
        params_file: the notebook's parameter stamp (JSON).

    Returns:
        The exit status.
    """
    import papermill

    stem = notebook.stem
    stage = staging(build, stem)
    remove(stage)  # what an interrupted run left
    stage.mkdir(parents=True)
    parameters = {**json.loads(params_file.read_text()), "output_dir": os.path.relpath(stage, notebook.parent)}
    running, failed = stage / f"{stem}.ipynb", build / "failed" / f"{stem}.ipynb"
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(notebook, as_version=4).cells) + 1  # + injected
    print(f"make report: running {stem}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    sockets = Path(tempfile.mkdtemp(prefix="symtele-kernel-"))  # short: a socket's path has at most 107 bytes
    try:
        papermill.execute_notebook(
            str(notebook),
            str(running),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(notebook.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=local_kernel_manager(sockets, (build / "logs" / f"{stem}.kernel.log").resolve()),
            on_cell_executed=Progress(stem, code_cells),
            shutdown_kernel="immediate",
        )
    except (Exception, KeyboardInterrupt) as error:
        failed.parent.mkdir(parents=True, exist_ok=True)
        if running.exists():
            os.replace(running, failed)
        remove(stage)
        restore_stamp(build, stem, params_file)
        print(describe_failure(stem, notebook, error, failed), file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    if not (stage / "results" / f"{stem}.json").exists():  # ran to the end, yet its results went elsewhere
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(running, failed)
        remove(stage)
        restore_stamp(build, stem, params_file)
        print(
            f"make report: {stem} FAILED: it ran to the end but wrote no results/{stem}.json in its output_dir; "
            f"executed notebook kept in {failed}; previous results, figures and report left as they were",
            file=sys.stderr,
        )
        return 1
    nb = nbformat.read(running, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC  # it ran on the project's kernel, whatever the source names
    nb.metadata.setdefault("papermill", {})["output_path"] = str(build / "notebooks" / f"{stem}.ipynb")
    nb.metadata["symtele"] = {"parameters": params_file.read_text()}  # the stamp as it was, keys in order
    nbformat.write(nb, running)
    promote(build, stem, stage)
    remove(failed)
    print(f"make report: {stem} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Execute the notebook named on the command line.

    Args:
        argv: the command line's arguments; by default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 when the notebook ran, 1 when it failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--params", type=Path, required=True, help="the notebook's parameter stamp (JSON)")
    args = parser.parse_args(argv)
    return execute(args.notebook, args.build, args.params)


if __name__ == "__main__":
    sys.exit(main())
