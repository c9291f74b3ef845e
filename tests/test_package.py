"""The package surface: lazy imports and figure helpers."""
import subprocess
import sys
from importlib import import_module

import matplotlib
import pytest

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

import symtele  # noqa: E402
from symtele.figures import save_figure  # noqa: E402
from symtele.plots import UnicodeLogFormatter, log_axis, panels  # noqa: E402


def test_results_and_claims_load_without_torch():
    code = "import sys, symtele.claims, symtele.results, symtele.summaries; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_public_names_resolve_to_their_objects():
    import symtele.experiments  # imports the training module as a submodule  # noqa: F401
    from symtele.training import train

    assert symtele.train is train and callable(symtele.train)
    assert set(symtele.__all__) <= set(dir(symtele))
    for name in symtele.__all__:
        assert getattr(symtele, name) is getattr(import_module(f"symtele.{symtele._MODULE_OF[name]}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        symtele.no_such_name  # noqa: B018


@pytest.mark.parametrize("value, label", [(1e-3, "10⁻³"), (1.0, "10⁰"), (100.0, "10²"), (1e-11, "10⁻¹¹")])
def test_unicode_log_labels(value, label):
    assert UnicodeLogFormatter()(value) == label


def test_unicode_log_labels_mark_the_same_ticks_as_matplotlib():
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(0.3, 2)
    fig.canvas.draw()
    ticks = ax.yaxis.get_minorticklocs()
    theirs = [t.get_text() for t in ax.yaxis.get_minorticklabels()]
    log_axis(ax.yaxis)
    fig.canvas.draw()
    ours = [t.get_text() for t in ax.yaxis.get_minorticklabels()]
    assert [bool(t) for t in ours] == [bool(t) for t in theirs] and any(ours)
    assert ours[list(ticks).index(0.2)] == "2×10⁻¹"
    assert all("$" not in t for t in ours)
    plt.close(fig)


def test_save_figure_lays_out_once_and_writes_png_and_pdf(tmp_path):
    fig, (a, b) = panels(2)
    a.plot([1, 2], [3, 4])
    png = save_figure(fig, tmp_path / "figs", "line")
    assert fig.get_layout_engine() is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figs" / "line.pdf").read_bytes()[:5] == b"%PDF-"
    plt.close(fig)
