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
    """Write ``name.png`` and ``name.pdf`` under ``directory``; returns the PNG's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / f"{name}.png"
    # One layout pass for both files: the tight bounding box, padded as savefig would pad it.
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    fig.savefig(png, dpi=dpi, bbox_inches=box, metadata={"Software": None})
    fig.savefig(directory / f"{name}.pdf", bbox_inches=box, metadata={"CreationDate": None})
    return png


def show_figure(fig, directory, name: str, caption: str, dpi: int = 150) -> Path:
    """Save the figure (PNG and PDF), display it with its caption metadata, and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    png = save_figure(fig, directory, name, dpi=dpi)
    display(Image(filename=str(png)), metadata={FIGURE_KEY: {"name": name, "caption": caption}})
    plt.close(fig)
    return png
