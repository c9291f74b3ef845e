"""The package surface: the split by role, lazy imports, renamed names, figure helpers."""

import ast
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

from symtele.plots.figures import save_figure  # noqa: E402
from symtele.plots.style import UnicodeLogFormatter, log_axis, panels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the library side: the core modules and the teleport groups
LIBRARY = sorted([*ROOT.glob("symtele/*.py"), *ROOT.glob("symtele/teleports/*.py")])
#: what the library must never import
REPORT_SIDE = ("symtele.study", "symtele.plots", "symtele.explorer", "report")
#: the public names of earlier versions, answered with a DeprecationWarning
RENAMED = ["seed_task", "SEEDS", "SEED_DIMS", "PROBLEMS"]


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a source file imports, anywhere in it, with relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_the_report_side(path):
    bad = sorted(m for m in _imported_modules(path) if m.startswith(REPORT_SIDE))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_import_check_sees_a_report_side_import(tmp_path):
    (tmp_path / "symtele" / "teleports").mkdir(parents=True)
    source = tmp_path / "symtele" / "teleports" / "new_group.py"
    source.write_text("def f():\n    from ..study import settings\n")
    assert "symtele.study" in _imported_modules(source, tmp_path)


def test_the_library_loads_without_the_report_side():
    code = (
        "import sys, symtele as st, symtele.teleports.positive_scale, symtele.teleports.so2, "
        "symtele.teleports.gln, symtele.teleports.level_set, symtele.training; st.train; "
        "print(sorted(m for m in sys.modules if m.startswith(('symtele.study', 'symtele.plots', "
        "'symtele.explorer'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_results_claims_and_settings_load_without_torch():
    code = (
        "import sys, symtele.study.claims, symtele.study.results, symtele.study.summaries, "
        "symtele.study.settings, symtele.plots.figures; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_public_names_resolve_to_their_objects():
    import symtele
    from symtele.training import train

    assert symtele.train is train and callable(symtele.train)
    assert set(symtele.__all__) <= set(dir(symtele))
    for module, names in symtele._EXPORTS.items():
        for name in names:
            assert getattr(symtele, name) is getattr(import_module(f"symtele.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        symtele.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", RENAMED)
def test_renamed_names_still_answer_with_a_warning(name):
    import symtele

    with pytest.warns(DeprecationWarning, match=name):
        value = getattr(symtele, name)
    assert value is not None


def test_the_old_course_task_name_gives_the_same_task():
    import symtele
    from symtele.study.experiments import course_regression_task

    with pytest.warns(DeprecationWarning):
        old = symtele.seed_task(0)
    new = course_regression_task(0)
    assert all(bool((a == b).all()) for a, b in zip(old[1], new[1]))


@pytest.mark.parametrize("value, label", [(1e-3, "10⁻³"), (1.0, "10⁰"), (100.0, "10²"), (1e-11, "10⁻¹¹")])
def test_unicode_log_labels(value, label):
    assert UnicodeLogFormatter()(value) == label


def test_unicode_log_labels_mark_the_same_ticks_as_matplotlib():
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(0.3, 2)
    fig.canvas.draw()
    ticks = ax.yaxis.get_minorticklocs()
    theirs = [t.get_text() for t in ax.yaxis.get_minorticklabels()]
    log_axis(ax.yaxis)
    fig.canvas.draw()
    ours = [t.get_text() for t in ax.yaxis.get_minorticklabels()]
    assert [bool(t) for t in ours] == [bool(t) for t in theirs] and any(ours)
    assert ours[list(ticks).index(0.2)] == "2×10⁻¹"
    assert all("$" not in t for t in ours)
    plt.close(fig)


def test_save_figure_lays_out_once_and_writes_png_and_pdf_when_asked(tmp_path, monkeypatch):
    fig, (a, b) = panels(2)
    a.plot([1, 2], [3, 4])
    monkeypatch.setenv("SYMTELE_FIGURE_PDF", "1")
    png = save_figure(fig, tmp_path / "figs", "line")
    assert fig.get_layout_engine() is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figs" / "line.pdf").read_bytes()[:5] == b"%PDF-"
    monkeypatch.delenv("SYMTELE_FIGURE_PDF")
    save_figure(fig, tmp_path / "figs", "line")
    assert not (tmp_path / "figs" / "line.pdf").exists()  # not asked for: none, and no stale one left
    save_figure(fig, tmp_path / "figs", "line", pdf=True)
    assert (tmp_path / "figs" / "line.pdf").read_bytes()[:5] == b"%PDF-"
    plt.close(fig)


def _parameter_rows():
    """``(notebook, [names], [defaults])`` of the README's table of notebook parameters."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Notebooks and their parameters") :].split("\n## ")[0]
    rows, notebook = [], None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        notebook = cells[0] or notebook
        names, values = re.findall(r"`([^`]+)`", cells[1]), re.findall(r"`([^`]+)`", cells[2])
        rows.append((notebook, names, values))
    return rows


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_the_readme_lists_every_notebook_parameter_with_its_default():
    from report.parameters import RESERVED, inspect_defaults

    listed: dict[str, set] = {}
    for notebook, names, values in _parameter_rows():
        defaults = inspect_defaults(ROOT / "notebooks" / f"{notebook}.ipynb")["parameters"]
        listed.setdefault(notebook, set()).update(names)
        if len(values) == len(names):  # a row whose defaults are all written as literals
            for name, value in zip(names, values):
                assert _plain(ast.literal_eval(value)) == defaults[name]["default"], (notebook, name)
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(listed) == notebooks
    for notebook in notebooks:
        parameters = set(inspect_defaults(ROOT / "notebooks" / f"{notebook}.ipynb")["parameters"])
        unlisted = parameters - set(RESERVED) - {"device", "threads"} - listed[notebook]  # those named above the table
        assert not unlisted, (notebook, sorted(unlisted))


def test_the_readme_api_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The `symtele` API in ten lines") :]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]
    namespace: dict = {}
    exec(code, namespace)
    history, record = namespace["history"], namespace["record"]
    assert history.method == "gd+posscale" and len(history.loss) == 300
    assert record.grad_norm_sq_after > record.grad_norm_sq_before


def test_a_clone_in_a_folder_named_like_the_package_still_imports_the_package(tmp_path):
    (tmp_path / "symtele").symlink_to(ROOT)  # the clone's root folder, run from its parent
    code = "import symtele; print(symtele.__file__); symtele.train"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(str(Path("symtele", "__init__.py")))


def test_make_help_lines_up_its_columns():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("  make ")]
    starts = {len(line) - len(line[7:].split(None, 1)[1]) for line in rows}
    assert len(rows) > 10 and len(starts) == 1  # every description starts in the same column


def test_the_readme_api_examples_run():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    api = (ROOT / "README.md").read_text().split("## The `symtele` API")[1].split("\n## ")[0]
    examples = [b for b in blocks if b in api]
    assert len(examples) == 2
    namespace: dict = {}
    exec(compile("\n".join(examples), "README.md", "exec"), namespace)
    assert namespace["history"].method == "gd+posscale"
    assert namespace["once"].grad_norm_sq_after > namespace["once"].grad_norm_sq_before


def test_the_readme_teleporter_example_runs():
    """The first example of the README, as a user would paste it: five epochs with the Teleporter's defaults."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Teleport your own network") :].split("\n## ")[0]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    records = namespace["teleporter"].records
    assert [r.epoch for r in records] == [50, 100]
    assert all(r.t in (0.0, 0.25, 0.5, 1.0) and r.grad_evals == 1 and "lookahead" in r.trace for r in records)
