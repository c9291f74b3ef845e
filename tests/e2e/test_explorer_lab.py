"""End to end: JupyterLab on a loopback port, driven by headless Chromium through Playwright.

Opens a copy of ``notebooks/explorer.ipynb`` (so nothing is saved into the sources), runs
all cells, changes the teleport epoch and the group, and checks that the figure and the
summary change, that an invalid group is answered in the panel, and that no error output
appears. Screenshots go to ``build/e2e/``, with the seconds from the epoch change to the new
summary (``redraw_in_browser.json``, measured, not asserted). JupyterLab is shut down whatever happens.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "e2e"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
STDERR_OUTPUT = '[data-mime-type="application/vnd.jupyter.stderr"]'


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip() -> str:
    """A Chromium executable; installs Debian's when missing and running as root, else skips."""
    path = find_chromium()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
        path = find_chromium()
    if path is None:
        pytest.skip(
            "no Chromium: none on PATH (chromium, chromium-browser, google-chrome) and "
            "`apt-get install -y chromium` was not possible or failed"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_home(work: Path) -> dict:
    """A throwaway Jupyter environment: the venv's kernel as ``symtele``, no news pop-ups."""
    kernel = work / "jupyter-data" / "kernels" / "symtele"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (symtele)",
                "language": "python",
            }
        )
    )
    settings = work / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    return {
        **os.environ,
        "JUPYTER_PATH": str(work / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "lab-workspaces"),
    }


def wait_for_server(process, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-2000:]}")


def stop(process) -> None:
    """SIGTERM to the whole process group, SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def summary_changes(page, old: str, words: str, timeout: float = 120_000) -> str:
    page.wait_for_function(
        """([old, words]) => {
            const s = document.querySelector('.symtele-summary');
            return s && s.innerText !== old && s.innerText.includes(words);
        }""",
        arg=[old, words],
        timeout=timeout,
    )
    return page.inner_text(".symtele-summary")


def shot(page, name: str) -> None:
    page.locator(".symtele-figure").scroll_into_view_if_needed()
    page.screenshot(path=str(OUT / name))


def test_explorer_in_jupyterlab():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = chromium_or_skip()
    work = OUT / "lab"
    shutil.rmtree(work, ignore_errors=True)
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "explorer.ipynb", work / "notebooks" / "explorer.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    log = OUT / "jupyterlab.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={work / 'notebooks'}",
                "--LabApp.expose_app_in_browser=True",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            env=lab_home(work),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(process, f"{base}/api/status?token={token}", log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}", timeout=120_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                page.wait_for_function(
                    "window.jupyterapp && window.jupyterapp.shell.currentWidget"
                    " && window.jupyterapp.shell.currentWidget.sessionContext"
                    " && window.jupyterapp.shell.currentWidget.sessionContext.session",
                    timeout=120_000,
                )
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                summary = summary_changes(page, "", "final loss")
                figure = page.get_attribute(".symtele-figure", "src")
                shot(page, "01_loaded.png")

                seen_s, kernel_s = [], []  # seconds from each change to the new summary: measured, not asserted
                for epoch in ("40", "30", "20"):
                    page.fill(".symtele-at input", epoch)
                    started = time.perf_counter()
                    page.press(".symtele-at input", "Enter")
                    summary = summary_changes(page, summary, "final loss")
                    seen_s.append(time.perf_counter() - started)
                    kernel_s.append(page.inner_text(".symtele-status"))
                    assert page.get_attribute(".symtele-figure", "src") != figure
                    figure = page.get_attribute(".symtele-figure", "src")
                (OUT / "redraw_in_browser.json").write_text(json.dumps({"browser_s": seen_s, "kernel": kernel_s}))
                shot(page, "02_teleport_epoch_20.png")

                page.select_option(".symtele-group select", label="none")
                summary = summary_changes(page, summary, "no teleport: final loss")
                assert page.get_attribute(".symtele-figure", "src") != figure
                shot(page, "03_group_none.png")

                page.select_option(".symtele-group select", label="GL(n)")
                page.wait_for_selector(".symtele-message:has-text('GL(n) needs a LeakyReLU network')")
                shot(page, "04_invalid_group.png")

                assert page.locator(STDERR_OUTPUT).count() == 0, page.locator(STDERR_OUTPUT).all_inner_texts()
                assert "Traceback" not in page.inner_text(".jp-Notebook")
            finally:
                browser.close()
    finally:
        stop(process)
