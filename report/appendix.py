"""Write the appendices: ``<build>/report/appendix/<stem>.html``, executed notebooks with their code.

JupyterLab's look (nbconvert's ``lab`` template, via ``appendix.html.j2``), with no script or
stylesheet from the network: the Markdown (cells and ``text/markdown`` outputs) is rendered here,
its math typeset like the report's (``mathtext.py``), and passed to nbconvert as ready HTML.

Only stale appendices are written: those missing, or older than their executed notebook or than
any of the files that shape them (``SOURCES``). All of them are exported in one process, with one
exporter and one batch of math, because the first export in a process costs several times the
next ones (templates, lexers and KaTeX load once).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

from symtele.study.results import write_text

from . import stems_command_line
from .mathtext import KATEX_SCRIPT, Typesetter

HERE = Path(__file__).parent
SOURCES = [Path(__file__), HERE / "appendix.html.j2", HERE / "__init__.py", HERE / "mathtext.py", KATEX_SCRIPT]


def appendix_path(build: Path, stem: str) -> Path:
    """Where the appendix of notebook ``stem`` goes: ``<build>/report/appendix/<stem>.html``.

    Args:
        build: the build folder.
        stem: the notebook's name, without ``.ipynb``.

    Returns:
        The appendix's path.
    """
    return build / "report" / "appendix" / f"{stem}.html"


def stale(build: Path, stems: list[str]) -> list[str]:
    """The stems whose appendix is missing or older than its notebook or than ``SOURCES``.

    Args:
        build: the build folder (its executed notebooks and appendices).
        stems: the notebooks' names.

    Returns:
        The stale ones, in the order given.
    """
    newest_source = max(p.stat().st_mtime for p in SOURCES if p.exists())
    out = []
    for stem in stems:
        target, notebook = appendix_path(build, stem), build / "notebooks" / f"{stem}.ipynb"
        if not target.exists() or target.stat().st_mtime < max(notebook.stat().st_mtime, newest_source):
            out.append(stem)
    return out


def prerender(nb, math: Typesetter, stem: str) -> None:
    """Replace the notebook's Markdown (cells and outputs) by HTML with formula tokens, in place.

    A first cell linking back to the report is added.

    Args:
        nb: the executed notebook.
        math: the typesetter that collects the formulas.
        stem: the notebook's name, for warnings.
    """
    back = nbformat.v4.new_markdown_cell('<p><a href="../report.html">&larr; back to the report</a></p>')
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            rendered = math.markdown(cell.source, f"{stem} cell {index}")
            # one HTML block (no blank line inside), which nbconvert's Markdown passes through untouched
            cell.source = "<div>" + re.sub(r"\n\s*\n", "\n", rendered) + "</div>"
        for output in cell.get("outputs", []):
            if "text/markdown" in output.get("data", {}):
                text = "".join(output.data["text/markdown"])
                output.data["text/html"] = math.markdown(text, f"{stem} cell {index}")
                del output.data["text/markdown"]
    nb.cells.insert(0, back)


def fill(nb, math: Typesetter) -> None:
    """Put the typeset formulas in place of their tokens (cells and HTML outputs), in place.

    Args:
        nb: a notebook :func:`prerender` has rendered.
        math: its typesetter, after ``typeset()``.
    """
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = math.fill(cell.source)
        for output in cell.get("outputs", []):
            if "text/html" in output.get("data", {}):
                output.data["text/html"] = math.fill("".join(output.data["text/html"]))


def export(build: Path, stems: list[str], katex_dir: Path | None) -> None:
    """Export these executed notebooks as appendices.

    Args:
        build: the build folder.
        stems: the notebooks' names.
        katex_dir: the ``katex`` npm package, or ``None`` (MathML).
    """
    if not stems:
        return
    from nbconvert import HTMLExporter

    math = Typesetter(katex_dir)
    notebooks = {}
    for stem in stems:
        notebooks[stem] = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
        prerender(notebooks[stem], math, stem)
    math.typeset()
    exporter = HTMLExporter(template_name="lab", template_file="appendix.html.j2", extra_template_paths=[str(HERE)])
    css = math.stylesheet()
    for stem, nb in notebooks.items():
        fill(nb, math)
        body, _ = exporter.from_notebook_node(nb, resources={"math_css": css})
        write_text(appendix_path(build, stem), body)


def main(argv=None) -> int:
    """Write the stale appendices of the notebooks named on the command line.

    Args:
        argv: the command line's arguments; by default ``sys.argv[1:]``.

    Returns:
        The exit status, 0.
    """
    parser = stems_command_line(__doc__.splitlines()[0], nargs="+", stems_help="the executed notebooks, without .ipynb")
    args = parser.parse_args(argv)
    export(args.build, stale(args.build, args.stems), args.katex)
    return 0


if __name__ == "__main__":
    sys.exit(main())
