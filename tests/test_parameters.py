"""The build's parameter step on the real notebooks: every bad value refused before anything runs, by the
settings' own checks; the smoke build's sizes; what the user typed wins; the stamps hold every parameter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from report.parameters import RESERVED, ParameterError, load_defaults, resolve
from symtele.study.settings import CONVEX, REGRESSION

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STEMS = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def run(tmp_path: Path, params: str = "", quick: str = "") -> dict:
    return resolve(NOTEBOOKS, tmp_path / "build", STEMS, quick, params)


@pytest.mark.parametrize(
    "params, named",
    [
        ("02_relu_posscale.epochs=-5", "Invalid epochs: -5"),
        ("02_relu_posscale.teleport_epoch=400", "Invalid teleport_epoch: 400 (the run has epochs 0..299)"),
        ("01_convex_so2.start=[1,2,3]", "Invalid start: [1, 2, 3]"),
        ("01_convex_so2.booth_lr=0", "Invalid booth_lr: 0"),
        ("03_level_set.rosenbrock_teleport_epochs=[1,2000]", "Invalid rosenbrock_teleport_epochs[1]: 2000"),
        ("04_beyond_optimizers.lrs='{lbfgs: 1.0}'", "Invalid lrs key: 'lbfgs'"),
        ("06_schedule_sweep.teleport_lrs='{so2: [0.001]}'", "Invalid teleport_lrs key: 'so2'"),
        ("06_schedule_sweep.optimizers=['adam']", "Invalid optimizers[0]: 'adam'"),
        ("06_schedule_sweep.n_jobs=0", "Invalid n_jobs: 0"),
        ("05_performance.reps=0", "Invalid reps: 0"),
        ("threads=0", "Invalid threads: 0"),
        ("02_relu_posscale.seeds=[0,0]", "values repeat"),
    ],
)
def test_bad_values_are_refused_by_the_settings_checks_and_nothing_is_written(tmp_path, params, named):
    with pytest.raises(ParameterError) as refused:
        run(tmp_path, params)
    assert named in str(refused.value) and "notebook " in str(refused.value)
    assert not list((tmp_path / "build" / "params").glob("[0-9]*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_on_a_machine_without_it_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="CUDA is not available"):
        run(tmp_path, "02_relu_posscale.device=cuda")


def test_values_read_as_a_user_types_them(tmp_path):
    resolved = run(tmp_path, "01_convex_so2.start=(1,2) 01_convex_so2.booth_start=[3,4] 02_relu_posscale.gd_lr=1e-3")
    assert resolved["01_convex_so2"]["start"] == [1, 2] and resolved["01_convex_so2"]["booth_start"] == [3, 4]
    assert resolved["02_relu_posscale"]["gd_lr"] == 1e-3
    stamp = json.loads((tmp_path / "build" / "params" / "01_convex_so2.json").read_text())
    assert stamp["start"] == [1, 2]


def test_the_stamps_hold_every_parameter_the_notebook_runs_with(tmp_path):
    resolved = run(tmp_path)
    notebooks = load_defaults(NOTEBOOKS, STEMS, tmp_path / "cache.json")
    for stem in STEMS:
        stamp = json.loads((tmp_path / "build" / "params" / f"{stem}.json").read_text())
        assert set(stamp) == set(notebooks[stem]["parameters"]) - {"output_dir"}, stem
        assert stamp == json.loads(json.dumps(resolved[stem]))
    assert resolved["02_relu_posscale"]["epochs"] == REGRESSION.epochs
    assert resolved["01_convex_so2"]["start"] == list(CONVEX.start)


def test_the_smoke_build_takes_the_quick_sizes_but_what_the_user_typed_wins(tmp_path):
    resolved = run(tmp_path, "02_relu_posscale.epochs=80", quick="1")
    assert resolved["02_relu_posscale"]["epochs"] == 80  # typed
    assert resolved["01_convex_so2"]["rosenbrock_epochs"] == CONVEX.quick().rosenbrock_epochs  # the quick size
    assert resolved["04_beyond_optimizers"]["seeds"] == [0] and all(r["quick"] for r in resolved.values())
    full = run(tmp_path)
    assert full["02_relu_posscale"]["epochs"] == REGRESSION.epochs and not full["02_relu_posscale"]["quick"]


def test_every_notebook_has_the_build_parameters_and_runs_here_into_a_folder_of_its_own(tmp_path):
    notebooks = load_defaults(NOTEBOOKS, STEMS, tmp_path / "cache.json")
    for stem, entry in notebooks.items():
        assert set(RESERVED) <= set(entry["parameters"]), stem
        assert entry["parameters"]["build_dir"]["default"] == "../build/lab", stem  # never the report's build
        assert entry["parameters"]["output_dir"]["default"] == "", stem


def test_a_dict_parameter_keeps_its_order_which_is_the_order_of_the_runs(tmp_path):
    from symtele.study.settings import DIGITS

    run(tmp_path)
    stamp = json.loads((tmp_path / "build" / "params" / "04_beyond_optimizers.json").read_text())
    assert list(stamp["lrs"]) == list(DIGITS.lrs) != sorted(DIGITS.lrs)


@pytest.mark.parametrize("stem", STEMS)
def test_papermill_reads_every_parameter_of_every_notebook(stem, recwarn):
    # papermill parses the parameters cell line by line; a comment it cannot read (an "=" in it, say) drops
    # the parameter with only a warning, and `make report PARAMS=...` would then inject it as unknown
    import ast

    import nbformat
    import papermill

    cell = next(
        c
        for c in nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4).cells
        if "parameters" in c.metadata.get("tags", [])
    )
    names = [n.targets[0].id for n in ast.parse(cell.source).body if isinstance(n, ast.Assign)]
    assert list(papermill.inspect_notebook(str(NOTEBOOKS / f"{stem}.ipynb"))) == names
    assert not [w for w in recwarn if "Unable to parse" in str(w.message)]
