"""Saving and showing a figure the way the report expects.

``show_figure(fig, directory, name, caption)`` writes ``<directory>/<name>.png`` and
``.pdf``, then displays the PNG in the notebook with the metadata
``{"symtele_figure": {"name": ..., "caption": ...}}``; the report builder numbers
every output carrying that metadata and prints its caption beneath it.
"""

from __future__ import annotations

from pathlib import Path

FIGURE_KEY = "symtele_figure"


def save_figure(fig, directory, name: str, dpi: int = 150) -> Path:
    """Write ``name.png`` and ``name.pdf`` under ``directory``; returns the PNG's path.

    The figure's layout engine (constrained layout in ``symtele.plots``) runs once, here, and
    is then switched off, so the two files share one layout instead of each redoing it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
        fig.set_layout_engine(None)
    png = directory / f"{name}.png"
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    fig.savefig(directory / f"{name}.pdf", metadata={"CreationDate": None})
    return png


def show_figure(fig, directory, name: str, caption: str, dpi: int = 150) -> Path:
    """Save the figure (PNG and PDF), display it with its caption metadata, and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    png = save_figure(fig, directory, name, dpi=dpi)
    display(Image(filename=str(png)), metadata={FIGURE_KEY: {"name": name, "caption": caption}})
    plt.close(fig)
    return png
