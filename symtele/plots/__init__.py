"""Every figure of the report, as pure functions of result records (matplotlib Figures).

* :mod:`~symtele.plots.style`: colours per method, panels, Unicode log axes;
* :mod:`~symtele.plots.runs`: per-epoch curves, loss against ‖∇L‖², per-run bars;
* :mod:`~symtele.plots.contours`: contours of a 2-D loss with the optimisation paths;
* :mod:`~symtele.plots.heatmaps`: the schedule sweep's heatmaps;
* :mod:`~symtele.plots.benchmarks`: the benchmark table, scaling and time-to-target figures;
* :mod:`~symtele.plots.figures`: saving a figure and showing it in a notebook with its caption.

``from symtele import plots; plots.curves(records)``: the names are imported on first use, so
``symtele.plots.figures.FIGURE_KEY`` loads without matplotlib.
"""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "benchmarks": ["cost_table", "scaling", "target_bars"],
        "runs": ["curves", "final_bars", "fraction_bars", "loss_vs_grad", "measure_scatter"],
        "figures": ["FIGURE_KEY", "save_figure", "show_figure"],
        "heatmaps": ["sweep_heatmaps"],
        "contours": ["level_sets"],
        "style": ["UnicodeLogFormatter", "log_axis", "method_color", "panels"],
    },
)
