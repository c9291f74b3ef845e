"""`make report` reruns every notebook whose results may depend on a changed source file, and no other.

In a temporary copy of the Makefile, the notebooks and the package, with a build whose every file is newer
than its inputs, each source file of ``symtele/`` is touched in turn and ``make -n`` says which notebooks
would rerun. The notebooks a file matters to are found here independently of the Makefile: the modules
a notebook imports, then, transitively, the modules those import (every ``import`` statement, those inside
functions included, and the submodules a package exports lazily through :func:`symtele.lazy.exports`).
The interactive explorer is imported by no notebook, so touching it reruns none.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "symtele").rglob("*.py"))
EXPLORER = [s for s in SOURCES if s.startswith("symtele/explorer/")]


def _module_file(module: str) -> Path | None:
    """The source file of a ``symtele`` module or package, relative to the repository (``None``: not ours)."""
    base = ROOT / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.relative_to(ROOT)
    return None


def _module_of(path: Path) -> tuple[str, bool]:
    """``(dotted name, is a package)`` of a source file."""
    parts = list(path.with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def _imported(tree: ast.AST, module: str = "", package: bool = False) -> set[str]:
    """The modules a piece of code imports: the named ones, the submodules named in ``from ... import`` and
    the submodules exported lazily (``exports(__name__, {"submodule": [...]})``)."""
    here = module if package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "exports" and len(node.args) > 1:
            table = node.args[1]
            if isinstance(table, ast.Dict):
                found.update(f"{module}.{key.value}" for key in table.keys if isinstance(key, ast.Constant))
    return {name for name in found if name.split(".")[0] == "symtele"}


def _closure(modules: set[str]) -> set[str]:
    """The source files of ``modules``, of their parent packages and of everything they import, transitively."""
    files, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            path = _module_file(".".join(parts[:k]))
            if path is None or path.as_posix() in files:
                continue
            files.add(path.as_posix())
            dotted, package = _module_of(path)
            todo += _imported(ast.parse((ROOT / path).read_text()), dotted, package)
    return files


def _notebook_imports(stem: str) -> set[str]:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    code = "\n".join(
        "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for cell in nb.cells
        if cell.cell_type == "code"
    )
    return _imported(ast.parse(code))


DEPENDS = {stem: _closure(_notebook_imports(stem)) for stem in NOTEBOOKS}


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    """A copy whose build is complete and newer than every input, and a function: the notebooks ``make -n``
    would rerun after touching one file of the copy."""
    if not NOTEBOOKS:
        pytest.skip("no numbered notebooks")
    copy = tmp_path_factory.mktemp("deps")
    shutil.copy(ROOT / "Makefile", copy)
    for folder in ("notebooks", "symtele", "report", "benchmarks/results"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    start = 1_000_000_000
    for path in copy.rglob("*"):
        os.utime(path, (start, start))
    build = copy / "build"
    claims = [s for s in NOTEBOOKS if s.endswith("_claims")]
    made = (
        [(f"params/{s}.json", 10) for s in NOTEBOOKS]
        + [(f"notebooks/{s}.ipynb", 30 if s in claims else 20) for s in NOTEBOOKS]
        + [("report/appendix/.exported", 40), ("report/report.html", 40)]
        + [(f"report/appendix/{s}.html", 40) for s in claims]
    )
    for name, later in made:
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_text("")
        os.utime(build / name, (start + later, start + later))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def rerun_after_touching(source: str | None) -> set[str]:
        if source is not None:
            os.utime(copy / source, (start + 100, start + 100))
        try:
            dry = subprocess.run(
                ["make", "-n", "--no-print-directory", "report-files", "BUILD=build", "CHROMIUM="],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            if source is not None:
                os.utime(copy / source, (start, start))
        return set(re.findall(r"-m report\.execute \S*?notebooks/(\w+)\.ipynb", dry))

    return rerun_after_touching


def test_the_dependencies_found_here_are_not_empty():
    """The import analysis itself: each notebook reaches the modules it plainly uses, and none the explorer."""
    for stem, files in DEPENDS.items():
        assert "symtele/study/settings.py" in files, stem  # every parameters cell reads its settings
        assert not [f for f in files if f in EXPLORER], stem
    claims = [s for s in NOTEBOOKS if s.endswith("_claims")]
    for stem in claims:  # the claims notebook imports the claims package, whose checks live in submodules
        assert any(f.startswith("symtele/study/claims/") and not f.endswith("__init__.py") for f in DEPENDS[stem])


def test_a_settled_build_reruns_nothing(settled):
    assert settled(None) == set()


@pytest.mark.parametrize("source", [s for s in SOURCES if s not in EXPLORER])
def test_touching_a_source_reruns_every_notebook_that_imports_it(settled, source):
    expected = {stem for stem, files in DEPENDS.items() if source in files}
    assert expected <= settled(source), f"{source}: {sorted(expected - settled(source))} would not rerun"


@pytest.mark.parametrize("source", EXPLORER)
def test_touching_the_explorer_reruns_no_notebook(settled, source):
    assert settled(source) == set()
