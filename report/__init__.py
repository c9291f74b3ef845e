"""The ``make report`` build: notebook parameters, notebook execution, and the report's assembly.

``parameters`` checks the user's parameters against each notebook's ``parameters`` cell and writes
one stamp file per notebook; ``execute`` runs one notebook with papermill, keeping the previous
results when it fails; ``appendix`` exports the executed notebooks, with their code, as appendices;
``assemble`` writes ``report.html`` from the executed notebooks and the ``*.md`` front and back
matter in this folder; ``mathtext`` turns Markdown with LaTeX math into HTML that renders offline.
"""

import argparse
import sys
from pathlib import Path

# jsonschema (under nbformat, papermill and nbconvert) imports the optional `rfc3987_syntax` for an
# "iri" format check that notebooks never need; that import alone takes about 3 s, in every process
# of the build. Marking it absent makes jsonschema skip that one check.
sys.modules.setdefault("rfc3987_syntax", None)


def stems_command_line(description: str, *, nargs: str, stems_help: str) -> argparse.ArgumentParser:
    """The command line of a step that acts on notebooks: their stems, ``--build`` and ``--katex``.

    Args:
        description: the step's description, for ``--help``.
        nargs: how many stems (``argparse``'s ``nargs``: ``"*"``, ``"+"``).
        stems_help: the stems' help text.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("stems", nargs=nargs, help=stems_help)
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--katex", type=Path, default=None, help="the katex npm package (else MathML)")
    return parser
