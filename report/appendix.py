"""Write one appendix: ``<build>/report/appendix/<stem>.html``, an executed notebook with its code.

JupyterLab's look (nbconvert's ``lab`` template, via ``appendix.html.j2``), with no script or
stylesheet from the network: the Markdown (cells and ``text/markdown`` outputs) is rendered here,
its math typeset like the report's (``mathtext.py``), and passed to nbconvert as ready HTML.
One appendix per ``make`` target, so each is exported as soon as its notebook has run.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from .assemble import HERE, write_atomically
from .mathtext import Typesetter


def prerender(nb, math: Typesetter, stem: str) -> None:
    """Replace the notebook's Markdown (cells and outputs) by HTML with formula tokens, in place."""
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
    """Put the typeset formulas in place of their tokens (cells and HTML outputs)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = math.fill(cell.source)
        for output in cell.get("outputs", []):
            if "text/html" in output.get("data", {}):
                output.data["text/html"] = math.fill("".join(output.data["text/html"]))


def export(build: Path, stem: str, katex_dir: Path | None) -> Path:
    from nbconvert import HTMLExporter

    nb = nbformat.read(build / "notebooks" / f"{stem}.ipynb", as_version=4)
    math = Typesetter(katex_dir)
    prerender(nb, math, stem)
    math.typeset()
    fill(nb, math)
    exporter = HTMLExporter(template_name="lab", template_file="appendix.html.j2", extra_template_paths=[str(HERE)])
    body, _ = exporter.from_notebook_node(nb, resources={"math_css": math.stylesheet()})
    target = build / "report" / "appendix" / f"{stem}.html"
    write_atomically(target, body)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stem", help="the executed notebook, without .ipynb")
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--katex", type=Path, default=None, help="the katex npm package (else MathML)")
    args = parser.parse_args(argv)
    export(args.build, args.stem, args.katex)
    return 0


if __name__ == "__main__":
    sys.exit(main())
