"""Warm kernels for the build: import once what every notebook imports, then fork a kernel per notebook.

    python -m report.kernel_server @NAME      # a Linux abstract socket: no file, gone with the server
    python -m report.kernel_server PATH       # a socket file

A notebook's kernel spends about 3.5 s of CPU here importing torch, pandas, matplotlib and IPython's
kernel before its first line runs; a build runs eight. This server imports them once and answers each
request on its Unix socket with a forked child that runs the kernel: the children share the
imported modules (copy on write), so a build pays for those imports once.

A request is one JSON line ``{"argv": [...], "cwd": ..., "env": {...}, "nice": n}``: the kernel command
jupyter_client would run, its working folder, its environment and the caller's niceness, sent with the
three file descriptors of the kernel's stdin, stdout and stderr. Only ``<this Python> [its -X options] -m
ipykernel_launcher ...`` is served; anything else is answered ``{"refused": why}`` and the caller starts its
kernel the usual way (as when no server answers; :mod:`report.execute`). The child starts a process group,
takes the descriptors, folder, environment and niceness and runs ``ipykernel_launcher`` with the rest of
argv; the server answers ``{"pid": ...}`` at once and ``{"exit": code}`` when the child ends.

The socket is bound before the imports, so a notebook that asks early waits for them instead of missing
the server. The server ends when its parent ends (the ``make report`` recipe that started it) or on
SIGTERM, SIGHUP or SIGINT, killing the kernels still running; a kernel whose server died exits by itself
(ipykernel's parent poller sees it orphaned). Nothing here changes what a kernel computes: the same
interpreter, modules, folder and environment as a kernel started from scratch.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from pathlib import Path

#: what the report's notebooks import, in an order that imports each dependency once
PRELOAD = (
    "numpy",
    "torch",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "matplotlib_inline.backend_inline",
    "IPython",
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "symtele",
    "symtele.plots",
    "symtele.study.experiments",
    "symtele.study.summaries",
    "symtele.study.results",
)
#: the backend a Jupyter kernel gives matplotlib, set before matplotlib is imported here
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent ends (a no-op elsewhere; the poll in :func:`serve` remains)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kernel_arguments(argv) -> list[str] | str:
    """The arguments after ``ipykernel_launcher`` when ``argv`` is ``<this Python> [-X...] -m ipykernel_launcher
    ...`` (the ``-X`` options this server was started with: ipykernel's spec asks for ``-Xfrozen_modules=off``),
    else why this server cannot start it."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or "-m" not in argv:
        return f"not a kernel command line: {argv!r}"
    at = argv.index("-m")
    python, options, module = argv[0], argv[1:at], argv[at + 1 : at + 2]
    ours = [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
    if os.path.realpath(python) != os.path.realpath(sys.executable) or module != ["ipykernel_launcher"]:
        return f"not `{sys.executable} -m ipykernel_launcher`: {' '.join(argv[: at + 2])}"
    if sorted(options) != sorted(ours):
        return f"interpreter options {options} differ from this server's {ours}"
    return argv[at + 2 :]


def _run_kernel(request: dict, fds: list[int], inherited: list) -> None:
    """In the forked child: become the kernel ``request`` asks for; never returns."""
    code = 1
    try:
        # a process group of its own (jupyter_client signals the kernel's group), in the build's session: a new
        # session would also be a new scheduler autogroup on Linux, where the build's `nice` has no effect
        os.setpgid(0, 0)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for held in inherited:  # the server's sockets, pipe and selector: a kernel keeps none of them open
            if isinstance(held, int):
                os.close(held)
            else:
                held.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        if sys.modules.get("rfc3987_syntax", "") is None:  # the build's shortcut (report/__init__.py), not the kernel's
            del sys.modules["rfc3987_syntax"]
        if isinstance(request.get("nice"), int) and request["nice"] > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, request["nice"])  # the caller's priority, as if started by it
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        sys.argv = ["ipykernel_launcher", *request["arguments"]]
        if os.environ.get("JPY_PARENT_PID"):  # ipykernel read it when imported here, before this kernel's environment
            sys.argv.append(f"--IPKernelApp.parent_handle={int(os.environ['JPY_PARENT_PID'])}")
        import runpy

        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass


def address(name: str) -> str:
    """The socket address for ``name``: ``@x`` is the abstract socket ``x`` (Linux), anything else a path."""
    return "\0" + name[1:] if name.startswith("@") else name


def serve(name: str) -> int:
    """Bind ``name`` (:func:`address`), import :data:`PRELOAD`, then serve requests until told to stop."""
    _die_with_parent()
    parent = os.getppid()
    path = None if name.startswith("@") else Path(name)
    if path is not None:
        path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address(name))
    listener.listen(64)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    import importlib

    for name in PRELOAD:  # a signal now ends the server at once (no kernel to stop yet)
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - a kernel imports it itself, and fails there if it must
            print(f"report.kernel_server: could not preload {name}: {error}", file=sys.stderr)
    stop = {"signal": None}

    def stopping(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stopping)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector through the pipe
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    kernels: dict[int, socket.socket] = {}
    try:
        while stop["signal"] is None and os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    _answer(conn, [listener, selector, wake_r, wake_w, *kernels.values()], kernels)
                else:
                    os.read(wake_r, 4096)
            _reap(kernels)
    finally:
        for pid in list(kernels):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(kernels, block=True)
        if path is not None:
            path.unlink(missing_ok=True)
    return 0


def _answer(conn: socket.socket, inherited: list, kernels: dict) -> None:
    """Read one request from ``conn`` and fork its kernel (or refuse it); the child closes ``conn`` and
    ``inherited`` (the server's other descriptors)."""
    conn.settimeout(10)
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(data.decode())
        arguments = _kernel_arguments(request.get("argv"))
        why = arguments if isinstance(arguments, str) else None
        if len(fds) != 3:
            why = f"expected 3 file descriptors, got {len(fds)}"
    except (OSError, ValueError, AttributeError) as error:
        fds, request, why = [], {}, f"unreadable request: {error}"
    if why is not None:
        for fd in fds:
            os.close(fd)
        _send(conn, {"refused": why})
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_kernel({**request, "arguments": arguments}, fds, [conn, *inherited])
    for fd in fds:
        os.close(fd)
    kernels[pid] = conn
    _send(conn, {"pid": pid})


def _reap(kernels: dict, block: bool = False) -> None:
    """Collect ended kernels and tell each one's caller its exit code."""
    while kernels:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = kernels.pop(pid, None)
        if conn is not None:
            _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the Unix socket to serve on: @name (abstract, Linux) or a path")
    args = parser.parse_args(argv)
    return serve(args.socket)


if __name__ == "__main__":
    sys.exit(main())
