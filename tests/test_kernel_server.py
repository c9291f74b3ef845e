"""The build's kernel server: kernels forked from a process that has imported what notebooks import."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from report import warm_kernel
from report.execute import SERVER_VARIABLE
from report.kernel_server import address

ROOT = Path(__file__).resolve().parents[1]
PROBE = """import json, os, sys
from pathlib import Path
parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
probe = {
    "torch_already_imported": "torch" in sys.modules,
    "parent": parent,
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "cwd": os.getcwd(),
    "probe_variable": os.environ.get("SYMTELE_PROBE"),
    "x": x,
}
(Path(output_dir) / "results").mkdir(parents=True, exist_ok=True)
(Path(output_dir) / "results" / "01_probe.json").write_text(json.dumps(probe))
"""


def _connectable(name: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(address(name))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module", autouse=True)
def symtele_kernel():
    """The project's kernel, registered as `make report` registers it (a fresh clone has none before)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "symtele" not in KernelSpecManager().find_kernel_specs():
        command = [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "symtele"]
        subprocess.run([*command, "--display-name", "Python (symtele)"], check=True, capture_output=True)


@pytest.fixture
def server():
    name = f"@symtele-test-kernels-{os.getpid()}-{time.monotonic_ns()}"
    command = [sys.executable, "-Xfrozen_modules=off", "-m", "report.kernel_server", name]
    process = subprocess.Popen(command, cwd=ROOT)
    _wait_until(lambda: _connectable(name))
    yield name, process
    process.terminate()
    process.wait(timeout=30)


def _probe_notebook(folder: Path, build: Path) -> tuple[Path, Path]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('build_dir = ""\noutput_dir = ""\nx = 0', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(PROBE),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "01_probe.ipynb")
    params = build / "params" / "01_probe.json"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(json.dumps({"build_dir": str(build), "x": 7}))
    return folder / "01_probe.ipynb", params


def _run(notebook: Path, build: Path, params: Path, *, server: str | None, nice: int = 0) -> dict:
    env = {**os.environ, "SYMTELE_PROBE": "passed"}
    env.pop(SERVER_VARIABLE, None)
    if server:
        env[SERVER_VARIABLE] = server
    command = ["nice", "-n", str(nice), sys.executable, "-m", "report.execute", str(notebook)]
    done = subprocess.run(
        [*command, "--build", str(build), "--params", str(params)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((build / "results" / "01_probe.json").read_text())


def test_a_notebook_runs_in_a_kernel_forked_by_the_server_as_it_would_alone(server, tmp_path):
    name, process = server
    notebook, params = _probe_notebook(tmp_path / "notebooks", tmp_path / "build")
    forked = _run(notebook, tmp_path / "build", params, server=name, nice=3)
    alone = _run(notebook, tmp_path / "build", params, server=None, nice=3)
    assert "report.kernel_server" in forked["parent"] and "report.kernel_server" not in alone["parent"]
    assert forked["torch_already_imported"] and not alone["torch_already_imported"]
    for probe in (forked, alone):  # the notebook's folder, environment, priority and parameters either way
        assert probe["cwd"] == str(notebook.parent)
        assert probe["probe_variable"] == "passed" and probe["nice"] == 3 and probe["x"] == 7
    # the kernel is gone once the notebook is done: the server has no child left
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    _wait_until(lambda: children.read_text().strip() == "", 10)


def test_the_server_refuses_what_it_cannot_start_and_nothing_is_served_without_one(server, capsys):
    name, _ = server
    env, cwd = dict(os.environ), str(ROOT)
    assert warm_kernel.launch(name, ["/bin/echo", "-m", "ipykernel_launcher"], env, cwd) is None
    assert "refused" in capsys.readouterr().err
    options = [sys.executable, "-m", "ipykernel_launcher", "-f", "x.json"]  # without the server's -X option
    assert warm_kernel.launch(name, options, env, cwd) is None
    assert "interpreter options" in capsys.readouterr().err
    assert warm_kernel.launch(None, options, env, cwd) is None
    assert warm_kernel.launch("@symtele-no-such-server", options, env, cwd) is None
    assert "did not answer" in capsys.readouterr().err


def test_the_server_ends_with_the_build_that_started_it():
    name = f"@symtele-test-kernels-{os.getpid()}-orphan"
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -Xfrozen_modules=off -m report.kernel_server {name} & wait"], cwd=ROOT
    )
    _wait_until(lambda: _connectable(name))
    shell.kill()  # SIGKILL: no trap runs; the server hears of it from the kernel (parent-death signal)
    shell.wait(timeout=10)
    _wait_until(lambda: not _connectable(name), 20)
