"""`make report` end to end: the QUICK build of the real notebooks, parameter checks, and failures.

Every build goes to a temporary BUILD directory, so the user's build/ is never touched. The
parameter and failure tests use two tiny notebooks written here, so they do not depend on the
experiments' run time.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from symtele.plots.figures import FIGURE_KEY
from symtele.study.results import strip_timing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUN_FIELDS = {"problem", "method", "seed", "loss", "grad_norm_sq", "time_s", "teleport_epochs", "teleports"}


def make_report(build: Path, *args: str) -> subprocess.CompletedProcess:
    """``make report BUILD=build args...`` in the repository, isolated from any outer make."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", "report", f"BUILD={build}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def figure_outputs(nb) -> list[dict]:
    return [
        out.metadata[FIGURE_KEY]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if FIGURE_KEY in out.get("metadata", {})
    ]


# ---- the QUICK build of the real notebooks --------------------------------------------------


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    if not NOTEBOOKS:
        pytest.skip("no numbered notebooks yet")
    build = tmp_path_factory.mktemp("quick")
    done = make_report(build, "QUICK=1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build, done


def test_quick_build_executes_every_notebook_without_errors(quick_build):
    build, _ = quick_build
    for stem in NOTEBOOKS:
        nb = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
        errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
        assert not errors, f"{stem}: {errors[0]['ename']}: {errors[0]['evalue']}"
        injected = json.loads((build / "params" / f"{stem}.json").read_text())
        assert injected["quick"] is True


def test_quick_build_results_follow_the_schema(quick_build):
    build, _ = quick_build
    for stem in NOTEBOOKS:
        results = json.loads((build / "results" / f"{stem}.json").read_text())
        assert set(results) == {"name", "parameters", "records"}, stem
        assert isinstance(results["records"], list) and results["records"], stem
        runs = [r for r in results["records"] if "method" in r and "kind" not in r]  # a kind: not a run
        for record in runs:
            assert RUN_FIELDS <= set(record), f"{stem}: missing {RUN_FIELDS - set(record)}"
            assert len(record["loss"]) == len(record["grad_norm_sq"]) == len(record["time_s"]), stem


def test_quick_build_figures_exist_as_png_and_are_in_the_report(quick_build):
    build, _ = quick_build
    page = (build / "report" / "report.html").read_text()
    total = 0
    for stem in NOTEBOOKS:
        nb = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
        for figure in figure_outputs(nb):
            total += 1
            assert (build / "figures" / stem / f"{figure['name']}.png").stat().st_size > 0
            assert f"Figure {total}.</span>" in page
        assert (build / "report" / "appendix" / f"{stem}.html").exists()
        assert f'href="appendix/{stem}.html"' in page
    assert page.count('<img src="data:image/png;base64,') >= total
    assert f"Figure {total + 1}." not in page


def test_quick_report_is_self_contained_and_has_the_claims_table(quick_build):
    build, _ = quick_build
    page = (build / "report" / "report.html").read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?:""", page)
    assert "QUICK smoke build" in page and re.search(r"Built .* in [0-9.]+ s", page)
    assert 'class="katex"' in page or "<math" in page  # the math was typeset, not left as TeX
    claims = [s for s in NOTEBOOKS if s.endswith("_claims")]
    for stem in claims:
        section = page.split(f'id="nb-{stem}"', 1)[1]
        assert "<table" in section.split("</section>", 1)[0]


def test_the_report_links_the_api_reference_made_from_the_docstrings(quick_build):
    build, _ = quick_build
    assert 'href="api/index.html"' in (build / "report" / "report.html").read_text()
    page = (build / "report" / "api" / "symtele" / "teleporter.html").read_text()
    assert "class Teleporter" in page or "Teleporter" in page
    assert "lookahead_batch" in page and "Raises" in page
    assert (build / "report" / "api" / "symtele" / "teleports" / "discovery.html").exists()


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium to print the PDF",
)
def test_quick_build_prints_the_pdf(quick_build):
    build, _ = quick_build
    assert (build / "report" / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_build_runs_on_the_project_kernel_quietly_and_reports_progress(quick_build):
    build, done = quick_build
    assert "TCP without encryption" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert sorted(p.name for p in (build / "logs").glob("*.kernel.log")) == [f"{s}.kernel.log" for s in NOTEBOOKS]
    for stem in NOTEBOOKS:
        nb = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "symtele"
        assert nb.metadata["papermill"]["output_path"] == str(build / "notebooks" / f"{stem}.ipynb")
        assert re.search(rf"make report: {stem}: cell 1/\d+ done", done.stderr)
    assert not (build / ".staging").exists() or not list((build / ".staging").iterdir())


class _Tables(HTMLParser):
    """The tables of an HTML fragment, each a list of rows of cell texts (header cells included)."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self._cell = [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None


def test_quick_build_runs_without_diverging_and_its_tables_show_no_nan(quick_build):
    build, _ = quick_build
    for stem in NOTEBOOKS:
        for record in json.loads((build / "results" / f"{stem}.json").read_text())["records"]:
            loss = record.get("loss")  # a curve (per epoch), or a final value (chapter 10's correlation nets)
            if loss or isinstance(loss, float):  # a smoke build exercises every run, and none of them diverges
                last = loss[-1] if isinstance(loss, list) else loss
                assert last is not None and math.isfinite(last), (stem, record.get("method", record.get("net")))
        nb = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
        html = "".join(
            out.data["text/html"]
            for cell in nb.cells
            for out in cell.get("outputs", [])
            if "text/html" in out.get("data", {})
        )
        for table in _Tables(html).tables:
            header = next((row for row in table if any("epoch" in c for c in row)), [])
            columns = [i for i, name in enumerate(header) if "epoch" in name]
            for row in table:
                assert not [c for c in row if c.lower() in ("nan", "<na>", "none")], (stem, row)
                whole = [row[i] for i in columns if i < len(row) and len(row) == len(header)]
                assert not [c for c in whole if re.fullmatch(r"\d+\.0+", c)], (stem, row)  # epochs print whole


def test_files_the_performance_notebook_does_not_read_do_not_make_it_stale(quick_build, tmp_path):
    built, _ = quick_build
    build = tmp_path / "build"
    shutil.copytree(built, build, symlinks=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    target = build / "notebooks" / "05_performance.ipynb"

    bench = tmp_path / "bench"  # where `make bench` writes (build/bench, whatever BUILD is; here a copy's)

    def up_to_date() -> bool:
        question = ["make", "--question", str(target), f"BUILD={build}", f"BENCH_OUT={bench}"]
        return subprocess.run(question, cwd=ROOT, env=env, capture_output=True).returncode == 0

    assert up_to_date()
    bench.mkdir()
    (bench / "explorer_redraw.json").write_text("{}")  # `make explorer-redraw` writes it
    assert up_to_date()
    (bench / "teleport_cost.json").write_text("[]")  # `make bench` writes it, and 05 reads it
    assert not up_to_date()


def test_a_notebook_run_by_hand_writes_to_a_folder_of_its_own(tmp_path):
    """What JupyterLab does: run a notebook from its folder with its defaults, no build around it."""
    import papermill

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    stem = next(s for s in NOTEBOOKS if s.endswith("_claims"))  # reads results only: quick to run
    shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", notebooks)
    papermill.execute_notebook(
        str(notebooks / f"{stem}.ipynb"),
        str(tmp_path / "out.ipynb"),
        kernel_name="symtele",
        cwd=str(notebooks),
        progress_bar=False,
    )
    assert (tmp_path / "build" / "lab" / "results" / f"{stem}.json").exists()
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["lab"]


def test_same_parameters_give_the_same_results(quick_build, tmp_path):
    build, _ = quick_build
    again = tmp_path / "again"
    done = make_report(again, "QUICK=1")
    assert done.returncode == 0, done.stderr[-3000:]
    for stem in NOTEBOOKS:
        first, second = (json.loads((b / "results" / f"{stem}.json").read_text()) for b in (build, again))
        assert strip_timing(first) == strip_timing(second), stem


# ---- tiny notebooks: parameters, incremental rebuilds, failures -------------------------------


def write_notebook(path: Path, parameters: str, code: str, title: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nThe loss is $f(x) = x^2$."),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    nbformat.write(nb, path)


# a 1x1 PNG: the tiny notebooks avoid importing torch and matplotlib, to keep the kernels fast
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
TINY = f"""import base64, json, time
from pathlib import Path
from IPython.display import Image, display
if steps < 1:
    raise ValueError(f"Invalid steps: {{steps}}")
time.sleep(pause)
losses = [(1 - lr) ** (2 * k) for k in range(steps)]
out = Path(output_dir or build_dir)
(out / "results").mkdir(parents=True, exist_ok=True)
record = {{"name": "01_tiny", "parameters": {{"steps": steps, "lr": lr}}, "records": [{{"loss": losses}}]}}
(out / "results" / "01_tiny.json").write_text(json.dumps(record))
(out / "figures" / "01_tiny").mkdir(parents=True, exist_ok=True)
(out / "figures" / "01_tiny" / "loss.png").write_bytes(base64.b64decode("{PNG}"))
caption = {{"{FIGURE_KEY}": {{"name": "loss", "caption": "Loss, $x^2$."}}}}
display(Image(data=base64.b64decode("{PNG}")), metadata=caption)"""
CLAIMS = """import json
from pathlib import Path
from IPython.display import HTML, display
final = json.loads((Path(build_dir) / "results" / "01_tiny.json").read_text())["records"][0]["loss"][-1]
record = {"name": "02_claims", "parameters": {}, "records": [{"final": final}]}
(Path(output_dir or build_dir) / "results").mkdir(parents=True, exist_ok=True)
(Path(output_dir or build_dir) / "results" / "02_claims.json").write_text(json.dumps(record))
display(HTML(f"<table><tr><td>final loss</td><td>{final:.3g}</td></tr></table>"))"""
TINY_PARAMS = """build_dir = "../build"  # the build's folder
output_dir = ""  # where the outputs go ("": build_dir)
quick = False  # smoke build
steps = 4  # steps
lr = 0.1  # step size
pause = 0.0  # seconds the notebook waits, to be caught running"""
CLAIMS_PARAMS = 'build_dir = "../build"  # the build folder\noutput_dir = ""  # outputs\nquick = False  # smoke'


def tiny_report(build: Path, notebooks: Path, *args: str) -> subprocess.CompletedProcess:
    """``make report`` of the tiny notebooks; they do not use symtele, so its sources are no input."""
    return make_report(build, f"NOTEBOOK_DIR={notebooks}", "SYMTELE_SOURCES=", *args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny notebooks (the second reads the first's results) and a successful build of them."""
    root = tmp_path_factory.mktemp("tiny")
    notebooks, build = root / "notebooks", root / "build"
    notebooks.mkdir()
    write_notebook(notebooks / "01_tiny.ipynb", TINY_PARAMS, TINY, "Tiny")
    write_notebook(notebooks / "02_claims.ipynb", CLAIMS_PARAMS, CLAIMS, "Claims")
    done = tiny_report(build, notebooks)
    assert done.returncode == 0, done.stderr[-3000:]
    return notebooks, build


@pytest.mark.parametrize(
    "params, named",
    [
        ("01_tiny.stepz=3", "stepz"),  # unknown name
        ("01_tiny.steps=abc", "01_tiny.steps"),  # ill-typed: int expected
        ("steps=2.5", "steps"),  # ill-typed, unqualified name
        ("03_nothing.steps=1", "03_nothing"),  # unknown notebook
        ("01_tiny.build_dir=/tmp", "BUILD"),  # set by the build, not by PARAMS
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(tiny, tmp_path, params, named):
    notebooks, _ = tiny
    done = tiny_report(tmp_path / "build", notebooks, f"PARAMS={params}")
    assert done.returncode != 0
    assert "refused" in done.stderr and named in done.stderr
    assert not (tmp_path / "build" / "notebooks").exists()


def test_bad_quick_value_is_refused(tiny, tmp_path):
    notebooks, _ = tiny
    done = tiny_report(tmp_path / "build", notebooks, "QUICK=yes")
    assert done.returncode != 0 and "QUICK" in done.stderr


def test_rebuild_reruns_only_what_changed(tiny):
    notebooks, build = tiny
    noop = tiny_report(build, notebooks)
    assert noop.returncode == 0 and "make report: running" not in noop.stderr
    changed = tiny_report(build, notebooks, "PARAMS=01_tiny.steps=6")
    assert changed.returncode == 0, changed.stderr[-3000:]
    ran = re.findall(r"make report: running (\S+)", changed.stderr)
    assert ran == ["01_tiny", "02_claims"]  # the claims notebook depends on the others
    results = json.loads((build / "results" / "01_tiny.json").read_text())
    assert results["parameters"]["steps"] == 6 and len(results["records"][0]["loss"]) == 6
    assert "01_tiny.steps=6" in (build / "report" / "report.html").read_text()


def _report_with_tiny_changed(tiny, old: str, new: str) -> subprocess.CompletedProcess:
    """``make report`` with ``old`` replaced by ``new`` in the tiny notebook's code; the notebook restored after."""
    notebooks, build = tiny
    good = (notebooks / "01_tiny.ipynb").read_text()
    write_notebook(notebooks / "01_tiny.ipynb", TINY_PARAMS, TINY.replace(old, new), "Tiny")
    try:
        return tiny_report(build, notebooks)
    finally:
        (notebooks / "01_tiny.ipynb").write_text(good)


def test_failing_notebook_keeps_the_previous_report_and_names_the_cell(tiny):
    _, build = tiny
    kept = {
        p: p.read_bytes()
        for p in [
            build / "report" / "report.html",
            build / "results" / "01_tiny.json",
            build / "figures" / "01_tiny" / "loss.png",
        ]
    }
    done = _report_with_tiny_changed(tiny, "losses = [", 'raise ValueError(f"diverged at lr={lr}")\nlosses = [')
    assert done.returncode != 0
    assert "notebook 01_tiny FAILED" in done.stderr and "cell 2" in done.stderr
    assert "ValueError: diverged at lr=0.1" in done.stderr
    assert (build / "failed" / "01_tiny.ipynb").exists()
    for path, content in kept.items():
        assert path.read_bytes() == content, path


def test_notebook_that_writes_no_results_file_fails(tiny):
    _, build = tiny
    kept = (build / "results" / "01_tiny.json").read_bytes()
    # a loop variable shadowing the file's name: the notebook runs to the end, its results go elsewhere
    done = _report_with_tiny_changed(tiny, '/ "01_tiny.json").write_text', '/ "elsewhere.json").write_text')
    assert done.returncode != 0
    assert "01_tiny FAILED" in done.stderr and "wrote no results/01_tiny.json" in done.stderr
    assert (build / "results" / "01_tiny.json").read_bytes() == kept
    assert (build / "failed" / "01_tiny.ipynb").exists()


# ---- nothing lost: kills, two builds at once, failed parameters, interactive runs -------------


def _readable(build: Path) -> None:
    """Every output a user reads is there and whole: results, figures, report."""
    results = json.loads((build / "results" / "01_tiny.json").read_text())
    assert results["records"][0]["loss"]
    assert (build / "figures" / "01_tiny" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((build / "results" / "02_claims.json").read_text())["records"]
    assert (build / "report" / "report.html").read_text().rstrip().endswith("</html>")


def _start_report(build: Path, notebooks: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    command = [
        "make",
        "--no-print-directory",
        "report",
        f"BUILD={build}",
        f"NOTEBOOK_DIR={notebooks}",
        "SYMTELE_SOURCES=",
        *args,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_for_the_lock(build: Path, seconds: float = 20.0) -> None:
    """Return once no process holds the build folder's lock (a killed build's processes release it as they go)."""
    deadline = time.time() + seconds
    with open(build / ".build.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.time() < deadline, "the killed build's lock was never released"
                time.sleep(0.1)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP])
def test_a_killed_build_loses_nothing_and_the_next_one_repairs_it(tiny, tmp_path, sig):
    notebooks, built = tiny
    build = tmp_path / "build"
    shutil.copytree(built, build, symlinks=True)
    _readable(build)
    moments = random.Random(int(sig)).sample([0.3, 0.8, 1.5, 2.5, 3.5, 5.0], 3)  # in the middle of every step
    for moment in moments:
        steps = 5 + moments.index(moment)
        running = _start_report(build, notebooks, f"PARAMS=01_tiny.steps={steps} 01_tiny.pause=1.0")
        time.sleep(moment)
        os.killpg(running.pid, sig)  # the whole build: make, papermill, the kernels
        running.wait(timeout=60)
        _readable(build)  # old or new, every file is whole
        assert not list((build / "notebooks").glob(".*"))  # nothing half-done beside the executed notebooks
    _wait_for_the_lock(build)  # the killed build's last processes may take a moment to be gone
    repaired = tiny_report(build, notebooks, f"PARAMS=01_tiny.steps={steps} 01_tiny.pause=1.0")
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    _readable(build)
    assert len(json.loads((build / "results" / "01_tiny.json").read_text())["records"][0]["loss"]) == steps
    assert f"01_tiny.steps={steps}" in (build / "report" / "report.html").read_text()


def test_two_builds_at_once_the_second_is_refused_naming_the_first(tiny, tmp_path):
    notebooks, built = tiny
    build = tmp_path / "build"
    shutil.copytree(built, build, symlinks=True)
    (build / ".build.lock").unlink()  # the copied build's own note of who built it last
    first = _start_report(build, notebooks, "PARAMS=01_tiny.pause=4.0")
    deadline = time.time() + 60
    while "started" not in ((build / ".build.lock").read_text() if (build / ".build.lock").exists() else ""):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.1)
    second = tiny_report(build, notebooks, "PARAMS=01_tiny.pause=4.0")
    assert second.returncode != 0
    assert "another build is running" in second.stderr and "pid " in second.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-3000:]
    _readable(build)


def test_a_failed_parameter_is_not_remembered(tiny, tmp_path):
    notebooks, built = tiny
    build = tmp_path / "build"
    shutil.copytree(built, build, symlinks=True)
    assert tiny_report(build, notebooks).returncode == 0  # the copy's own build folder, settled
    stamp = (build / "params" / "01_tiny.json").read_text()
    failed = tiny_report(build, notebooks, "PARAMS=01_tiny.steps=-5")
    assert failed.returncode != 0 and "Invalid steps: -5" in failed.stderr
    assert (build / "params" / "01_tiny.json").read_text() == stamp
    again = tiny_report(build, notebooks)
    assert again.returncode == 0 and "make report: running" not in again.stderr  # nothing reran
    _readable(build)
