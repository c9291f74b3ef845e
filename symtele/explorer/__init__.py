"""The explorer: a panel for trying teleport schedules in JupyterLab (``notebooks/explorer.ipynb``).

* :mod:`~symtele.explorer.controls`: the value of every control (:class:`Controls`), which
  combinations can run (:func:`check`) and suggested values (:func:`suggest`);
* :mod:`~symtele.explorer.runs`: train with and without the teleport (:func:`run`) into a
  :class:`Result` with its one-line summary;
* :mod:`~symtele.explorer.figure`: the four-panel figure, updated in place (:class:`Plot`);
* :mod:`~symtele.explorer.panel`: the ipywidgets panel wiring them together (:class:`Explorer`).

Everything but the panel is plain Python, testable without a browser.
"""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "controls": ["Controls", "check", "suggest"],
        "figure": ["Plot"],
        "panel": ["Explorer"],
        "runs": ["Curves", "Result", "run", "summary_line"],
    },
)
