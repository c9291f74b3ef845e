"""Write ``report.html`` from the executed notebooks and the front/back matter.

The report is one self-contained HTML file: ``front.md`` (title, abstract, theory, algorithms),
``experiments.md`` and the numbered notebooks as its subsections, the claims notebook
(``*_claims``) as a section of its own, ``back.md`` (conclusion, references), and links to the
appendices (``report/appendix.py``). From the notebooks it keeps the Markdown cells and the
figure, HTML and Markdown outputs (code and printed streams are hidden); figures are embedded as
data URIs, numbered, with the caption of their ``symtele_figure`` metadata. The file is written to
a temporary name and renamed into place.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from string import Template

import nbformat

from symtele.plots.figures import FIGURE_KEY  # the metadata show_figure attaches
from symtele.study.results import write_text

from . import stems_command_line
from .mathtext import Typesetter

HERE = Path(__file__).parent

UNNUMBERED = {"Abstract", "Contents", "References", "Appendices"}
HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>", re.DOTALL)


class Outline:
    """Numbers the h2/h3 headings of the report in order and collects the contents list."""

    def __init__(self):
        self.section, self.subsection, self.entries = 0, 0, []

    def headings(self, fragment: str, shift: int = 0) -> str:
        """The fragment with headings moved ``shift`` levels down, numbered and given ids.

        Args:
            fragment: an HTML fragment.
            shift: how many levels its headings move down (at most to h6).

        Returns:
            The fragment; its h2 headings join the contents list.
        """

        def number(match: re.Match) -> str:
            level, text = min(int(match.group(1)) + shift, 6), match.group(2).strip()
            plain = re.sub(r"<[^>]+>", "", text)
            label = ""
            if level == 2 and plain not in UNNUMBERED:
                self.section, self.subsection = self.section + 1, 0
                label = f"{self.section}"
            elif level == 3 and self.section:
                self.subsection += 1
                label = f"{self.section}.{self.subsection}"
            anchor = f"sec-{label}" if label else re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")
            if level == 2:
                self.entries.append((anchor, label, text))
            number_html = f'<span class="section-number">{label}</span>' if label else ""
            return f'<h{level} id="{anchor}">{number_html}{text}</h{level}>'

        return HEADING.sub(number, fragment)

    def toc(self) -> str:
        """The table of contents: a list linking every numbered section met so far."""
        items = "".join(f'<li><a href="#{a}">{f"{n} " if n else ""}{t}</a></li>' for a, n, t in self.entries)
        return f'<ol class="toc-list" style="list-style:none">{items}</ol>'


class Figures:
    """Numbers the figures across the whole report."""

    def __init__(self):
        self.count = 0

    def figure(self, mime: str, data: str, caption_html: str) -> str:
        """The next numbered figure, as HTML.

        Args:
            mime: the image's MIME type.
            data: the image, base64.
            caption_html: the caption, as HTML.

        Returns:
            A ``<figure>`` with its number.
        """
        self.count += 1
        return (
            f'<figure id="figure-{self.count}"><img src="data:{mime};base64,{data}" '
            f'alt="Figure {self.count}"><figcaption><span class="figure-label">Figure {self.count}.'
            f"</span> {caption_html}</figcaption></figure>"
        )


def image_data(value) -> str:
    """An output's base64 image data as one string (a list of lines joined, newlines removed).

    Args:
        value: the data, a string or a list of lines.

    Returns:
        The data.
    """
    return "".join(value).replace("\n", "") if isinstance(value, list) else value.replace("\n", "")


def output_html(output, where: str, figures: Figures, math: Typesetter) -> str:
    """One cell output as shown in the report: figures, HTML, Markdown and images; nothing else.

    Args:
        output: a display or result output.
        where: the cell, for warnings.
        figures: the report's figure numbering.
        math: the report's typesetter.

    Returns:
        The output's HTML, or ``""``.
    """
    if output.output_type not in ("display_data", "execute_result"):
        return ""
    data, meta = output.get("data", {}), output.get("metadata", {})
    figure = meta.get(FIGURE_KEY) or meta.get("image/png", {}).get(FIGURE_KEY)
    if figure and "image/png" in data:
        caption = math.markdown(figure.get("caption", ""), where)
        caption = re.sub(r"^\s*<p>(.*)</p>\s*$", r"\1", caption, flags=re.DOTALL)
        return figures.figure("image/png", image_data(data["image/png"]), caption)
    if "text/html" in data:
        return f'<div class="output">{"".join(data["text/html"])}</div>'
    if "text/markdown" in data:
        return f'<div class="output">{math.markdown("".join(data["text/markdown"]), where)}</div>'
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            return f'<div class="output"><img src="data:{mime};base64,{image_data(data[mime])}" alt=""></div>'
    if "image/svg+xml" in data:
        return f'<div class="output">{"".join(data["image/svg+xml"])}</div>'
    return ""


def notebook_section(nb, stem: str, shift: int, outline: Outline, figures: Figures, math: Typesetter) -> str:
    """A notebook as a report section: Markdown cells and shown outputs, in order.

    Args:
        nb: the executed notebook.
        stem: its name.
        shift: how many levels its headings move down.
        outline: the report's heading numbering.
        figures: the report's figure numbering.
        math: the report's typesetter.

    Returns:
        The ``<section>``.
    """
    parts = []
    for index, cell in enumerate(nb.cells):
        where = f"{stem} cell {index}"
        if cell.cell_type == "markdown":
            parts.append(outline.headings(math.markdown(cell.source, where), shift))
        elif cell.cell_type == "code":
            parts += [output_html(out, where, figures, math) for out in cell.get("outputs", [])]
    return f'<section class="notebook" id="nb-{stem}">\n' + "\n".join(p for p in parts if p) + "\n</section>"


def notebook_title(nb, stem: str) -> str:
    """The first level-1 Markdown heading of the notebook, else its ``stem``.

    Args:
        nb: the notebook.
        stem: its name.

    Returns:
        The title.
    """
    for cell in nb.cells:
        match = re.search(r"^#\s+(.+)$", cell.source, re.MULTILINE) if cell.cell_type == "markdown" else None
        if match:
            return match.group(1).strip()
    return stem


def build_info(build: Path, stems: list[str], notebooks: dict, engine: str) -> str:
    """When and how fast the report was built, with which parameters.

    Args:
        build: the build folder (its parameter stamps).
        stems: the notebooks' names.
        notebooks: the executed notebooks, by name.
        engine: the math typesetter's name.

    Returns:
        One line of escaped HTML.
    """
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"Built {now}"]
    start = os.environ.get("REPORT_START")
    if start:
        parts[0] += f" in {time.time() - float(start):.1f} s"
    durations = [nb.metadata.get("papermill", {}).get("duration") for nb in notebooks.values()]
    if all(d is not None for d in durations) and durations:
        parts.append(f"notebooks executed in {sum(durations):.1f} s of kernel time")
    overrides, quick = [], False
    defaults_file = build / "params" / "defaults.json"
    defaults = json.loads(defaults_file.read_text()) if defaults_file.exists() else {}
    for stem in stems:
        params = json.loads((build / "params" / f"{stem}.json").read_text())
        quick = quick or params.pop("quick", False)
        params.pop("build_dir", None)
        known = defaults.get(stem, {}).get("parameters", {})
        default_of = {k: spec["quick" if quick else "default"] for k, spec in known.items()}
        overrides += [f"{stem}.{k}={json.dumps(v)}" for k, v in params.items() if k not in known or v != default_of[k]]
    parts.append("QUICK smoke build (small sizes)" if quick else "full sizes")
    parts.append("parameters changed: " + (", ".join(overrides) if overrides else "none, the notebooks' defaults"))
    parts.append(f"math: {engine}")
    return html.escape(" · ".join(parts))


def assemble(build: Path, stems: list[str], katex_dir: Path | None) -> Path:
    """Write ``<build>/report/report.html``.

    Args:
        build: the build folder (its executed notebooks).
        stems: the notebooks, in report order (the claims notebook's section comes last).
        katex_dir: the ``katex`` npm package, or ``None`` (MathML).

    Returns:
        The report's path.
    """
    math, outline, figures = Typesetter(katex_dir), Outline(), Figures()
    notebooks = {s: nbformat.read(build / "notebooks" / f"{s}.ipynb", as_version=4) for s in stems}
    claims = [s for s in stems if s.endswith("_claims")]

    front = outline.headings(math.markdown((HERE / "front.md").read_text(), "report/front.md"))
    heading, _, front = front.partition("</h1>")
    parts = [front, outline.headings(math.markdown((HERE / "experiments.md").read_text(), "report/experiments.md"))]
    parts += [notebook_section(notebooks[s], s, 2, outline, figures, math) for s in stems if s not in claims]
    parts += [notebook_section(notebooks[s], s, 1, outline, figures, math) for s in claims]
    parts.append(outline.headings(math.markdown((HERE / "back.md").read_text(), "report/back.md")))
    links = "".join(
        f'<li><a href="appendix/{s}.html">{html.escape(notebook_title(notebooks[s], s))}</a>'
        f" (<code>{s}.ipynb</code>, executed, with its code)</li>"
        for s in stems
    )
    links += (
        '<li><a href="api/index.html">The <code>symtele</code> API</a> (every public name of the library, '
        "generated from its docstrings)</li>"
    )
    parts.append(outline.headings("<h2>Appendices</h2>") + f'<ol type="A">{links}</ol>')

    math.typeset()
    page = Template((HERE / "page.html").read_text()).substitute(
        title=html.escape(re.sub(r"<[^>]+>", "", heading)).strip(),
        math_css=math.stylesheet(),
        style=(HERE / "style.css").read_text(),
        heading=math.fill(heading + "</h1>"),
        build_info=build_info(build, stems, notebooks, math.engine),
        toc=outline.toc(),
        body=math.fill("\n".join(parts)),
    )
    target = build / "report" / "report.html"
    write_text(target, page)
    return target


def main(argv=None) -> int:
    """Assemble the report from the notebooks named on the command line.

    Args:
        argv: the command line's arguments; by default ``sys.argv[1:]``.

    Returns:
        The exit status, 0.
    """
    parser = stems_command_line(
        __doc__.splitlines()[0], nargs="*", stems_help="the numbered notebooks, in report order"
    )
    args = parser.parse_args(argv)
    target = assemble(args.build, args.stems, args.katex)
    print(f"make report: wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
