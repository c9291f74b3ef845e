"""Ask the build's kernel server (:mod:`report.kernel_server`) for a kernel, as a ``Popen``-like handle.

``launch(server, argv, env, cwd)`` returns a :class:`ForkedKernel` for the kernel the server forked, or
``None`` when there is no server, it refuses the command, or it does not answer: the caller then starts
the kernel itself. The handle offers what jupyter_client's local provisioner uses of a ``Popen``:
``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill`` and the (absent) pipes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .kernel_server import address

#: seconds to wait for the server's answer: it binds its socket first, then imports (a few seconds)
ANSWER_TIMEOUT = 120.0


class ForkedKernel:
    """A kernel forked by the server; its exit code arrives on the request's connection."""

    stdin = stdout = stderr = None

    def __init__(self, conn: socket.socket, pid: int):
        self.conn, self.pid, self.returncode, self._buffer, self._closed = conn, pid, None, b"", False

    def _read(self, timeout: float | None) -> None:
        """Take the ``{"exit": code}`` line if it has come (waiting up to ``timeout`` s; ``None``: until it
        comes). A connection that closes without it (the server was killed) counts as an exit once the
        kernel is gone."""
        if self.returncode is not None:
            return
        if self._closed:
            if not _alive(self.pid):
                self.returncode = -signal.SIGKILL
            return
        self.conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self.conn.recv(4096)
                if not chunk:
                    self._closed = True
                    if not _alive(self.pid):
                        self.returncode = -signal.SIGKILL
                    return
                self._buffer += chunk
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            if not _alive(self.pid):
                self.returncode = -signal.SIGKILL
            return
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.returncode = int(json.loads(line.decode())["exit"])
        self.conn.close()

    def poll(self) -> int | None:
        self._read(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"kernel {self.pid} still running after {timeout} s")
            if self._closed:  # no server to say when it ends: watch the process itself
                time.sleep(0.1)
            else:
                self._read(0.5 if left is None else min(0.5, left))
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launch(server: str | None, argv: list[str], env: dict, cwd) -> ForkedKernel | None:
    """The kernel ``argv`` forked by the server at ``server`` with ``env`` in ``cwd``, or ``None`` (module
    docstring); the reason a server did not serve is printed to stderr."""
    server = str(server or "")
    if not server or (not server.startswith("@") and not Path(server).exists()):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(ANSWER_TIMEOUT)
        conn.connect(address(server))
        request = {
            "argv": list(argv),
            "cwd": str(cwd or os.getcwd()),
            "env": dict(env),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),  # a kernel started here would inherit ours
        }
        with open(os.devnull, "rb") as nothing:  # the kernel reads no stdin; its output goes where ours does
            socket.send_fds(conn, [(json.dumps(request) + "\n").encode()], [nothing.fileno(), 1, 2])
        answer = b""
        while b"\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            answer += chunk
        line, _, rest = answer.partition(b"\n")
        reply = json.loads(line.decode())
    except (OSError, ValueError) as error:
        conn.close()
        print(f"make report: kernel server at {server} did not answer ({error}); starting the kernel", file=sys.stderr)
        return None
    if "pid" not in reply:
        conn.close()
        print(f"make report: kernel server refused: {reply.get('refused')}; starting the kernel", file=sys.stderr)
        return None
    kernel = ForkedKernel(conn, int(reply["pid"]))
    kernel._buffer = rest
    return kernel
