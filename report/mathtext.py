r"""Markdown with LaTeX math to HTML whose math renders with no network.

``$...$`` is inline math and ``$$...$$`` display math; ``\$`` is a literal dollar sign. The math
is cut out before the Markdown is parsed (so ``_`` and ``*`` inside it stay math), every formula
of the whole report is typeset in one batch, and the results are put back into the HTML:

- with KaTeX (``npm install katex``, run by Node.js) when both are present: HTML plus a
  stylesheet whose fonts are embedded as data URIs;
- otherwise as MathML (``latex2mathml``), which Chromium and Firefox render natively.

A formula neither can read is shown as code, with a warning naming where it is.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mistune

# $$...$$ first (it may span lines), then $...$ on one line; neither may follow a backslash.
MATH = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(?!\s)([^$\n]+?)(?<![\s\\])\$", re.DOTALL)
TOKEN = re.compile(r"MATHTOKEN(\d+)X")
KATEX_SCRIPT = Path(__file__).with_name("katex_render.js")

_markdown = mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])


class Typesetter:
    """Collects the formulas of many Markdown texts, then typesets them all at once.

    Args:
        katex_dir: the ``katex`` npm package; KaTeX is used when it and Node.js are present, else MathML.
    """

    def __init__(self, katex_dir: Path | None = None):
        node = shutil.which("node")
        usable = katex_dir is not None and (Path(katex_dir) / "package.json").exists() and node
        self.katex_dir = Path(katex_dir).resolve() if usable else None
        self.formulas: list[tuple[str, bool, str]] = []  # (latex, display, where)

    @property
    def engine(self) -> str:
        """The typesetter in use: ``KaTeX`` or ``MathML``."""
        return "KaTeX" if self.katex_dir else "MathML"

    def protect(self, text: str, where: str) -> str:
        """The text with each formula replaced by a token that Markdown leaves alone.

        Args:
            text: Markdown with LaTeX math.
            where: the text's origin, for warnings.

        Returns:
            The text with tokens; the formulas are collected for :meth:`typeset`.
        """

        def keep(match: re.Match) -> str:
            display = match.group(1) is not None
            self.formulas.append((match.group(1) if display else match.group(2), display, where))
            token = f"MATHTOKEN{len(self.formulas) - 1}X"
            return f"\n\n{token}\n\n" if display else token  # display math is a block of its own

        return MATH.sub(keep, text)

    def markdown(self, text: str, where: str) -> str:
        """Markdown to an HTML fragment, its formulas still as tokens (see ``fill``).

        Args:
            text: Markdown with LaTeX math.
            where: the text's origin, for warnings.

        Returns:
            The HTML fragment.
        """
        html = _markdown(self.protect(text, where))
        return re.sub(rf"<p>\s*({TOKEN.pattern})\s*</p>", r"\1", html).replace("\\$", "$")

    def typeset(self) -> None:
        """Typeset every collected formula; ``fill`` then puts them into the texts."""
        results = self._katex() if self.katex_dir else [None] * len(self.formulas)
        self.typeset_html = []
        for (latex, display, where), result in zip(self.formulas, results):
            if not isinstance(result, str):
                result = self._mathml(latex, display, where, result)
            self.typeset_html.append(f'<div class="math-display">{result}</div>' if display else result)

    def fill(self, text: str) -> str:
        """The text with every token replaced by its typeset formula (after ``typeset``).

        Args:
            text: HTML with tokens.

        Returns:
            The HTML with the formulas.
        """
        return TOKEN.sub(lambda m: self.typeset_html[int(m.group(1))], text)

    def stylesheet(self) -> str:
        """CSS the typeset math needs: KaTeX's, with its fonts inlined; empty for MathML."""
        if not self.katex_dir:
            return ""
        dist = self.katex_dir / "dist"
        css = (dist / "katex.min.css").read_text()

        def inline_font(match: re.Match) -> str:
            font = (dist / "fonts" / f"{match.group(1)}.woff2").read_bytes()
            return f'src:url(data:font/woff2;base64,{base64.b64encode(font).decode()}) format("woff2")'

        return re.sub(r"src:url\(fonts/([\w-]+)\.woff2\)[^;}]*", inline_font, css)

    def _katex(self) -> list:
        request = json.dumps([[latex.strip(), display] for latex, display, _ in self.formulas])
        done = subprocess.run(
            ["node", str(KATEX_SCRIPT), str(self.katex_dir)], input=request, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    @staticmethod
    def _mathml(latex: str, display: bool, where: str, katex_error) -> str:
        from latex2mathml.converter import convert

        try:
            if katex_error is not None:
                raise ValueError(katex_error["error"])
            return convert(latex.strip(), display="block" if display else "inline")
        except Exception as error:  # both converters raise many kinds of error on bad input
            print(f"warning: {where}: cannot typeset ${latex}$ ({error})", file=sys.stderr)
            return f'<code class="math-error">{mistune.escape(latex)}</code>'
