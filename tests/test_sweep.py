"""Schedule sweeps: the grid, the records, time to the baseline's loss, backends and the results file."""

import joblib
import matplotlib
import pandas as pd
import pytest

import symtele as st
from symtele.plots import sweep_heatmaps
from symtele.study.experiments import course_regression_task
from symtele.study.results import load_results, strip_timing
from symtele.study.sweep import Grid, summarize, sweep, time_to_loss

matplotlib.use("Agg")

SEEDS = [0, 12345]
EPOCHS = 40


def small_grid(**changes):
    options = dict(
        teleport_epochs=[0, 5],
        teleport_lrs={"posscale": [1e-4, 1e-3], "gln": [1e-8]},
        optimizers=["gd", "adagrad"],
        seeds=SEEDS,
        epochs=EPOCHS,
    )
    options.update(changes)
    return Grid(**options)


@pytest.fixture(scope="module")
def records():
    return sweep(small_grid(), n_jobs=1)


def test_one_record_per_point_and_seed_in_grid_order(records):
    grid = small_grid()
    points = grid.points()
    assert len(points) == 2 * (1 + 4 + 1 + 2)
    assert len(records) == len(points) * len(SEEDS)
    coords = [(r["optimizer"], r["group"], r["teleport_epoch"], r["teleport_lr"]) for r in records]
    assert coords == [p for p in points for _ in SEEDS]
    assert [r["seed"] for r in records] == SEEDS * len(points)
    for r in records:
        assert len(r["loss"]) == len(r["time_s"]) == EPOCHS
        assert r["final_loss"] == r["loss"][-1]
        if r["teleport_epoch"] is None:
            assert r["method"] == r["optimizer"] and r["teleport_epochs"] == [] and r["teleport_steps"] is None
        else:
            assert r["method"] == f"{r['optimizer']}+{r['group']}"
            assert r["teleport_epochs"] == [r["teleport_epoch"]]
            assert r["teleport_steps"] == {"posscale": 10, "gln": 8}[r["group"]]
        assert r["problem"] == {"posscale": "relu-mlp", "gln": "leaky-relu-mlp"}[r["group"]]


def test_a_point_is_the_same_run_as_train(records):
    objective, weights = course_regression_task(SEEDS)
    history = st.train(
        objective,
        weights,
        optimizer="adagrad",
        lr=1e-1,
        epochs=EPOCHS,
        teleport=st.PositiveScale(lr=1e-3, steps=10),
        schedule=5,
    )
    mine = [
        r
        for r in records
        if (r["optimizer"], r["group"], r["teleport_epoch"], r["teleport_lr"]) == ("adagrad", "posscale", 5, 1e-3)
    ]
    assert [r["loss"] for r in mine] == [h.loss for h in history.split()]


def test_time_to_baseline_is_the_first_epoch_at_or_below_the_baselines_final_loss(records):
    baselines = {(r["optimizer"], r["group"], r["seed"]): r for r in records if r["teleport_epoch"] is None}
    for r in records:
        base = baselines[r["optimizer"], r["group"], r["seed"]]
        target = base["loss"][-1]
        reach = r["to_baseline"]
        assert reach["loss"] == target
        k = reach["epochs"]
        if k is None:
            assert min(r["loss"]) > target
        else:
            assert r["loss"][k] <= target and all(loss > target for loss in r["loss"][:k])
            assert reach["time_s"] == r["time_s"][k]
    # the positive-scale teleport at epoch 5 gets GD to the baseline's final loss early on every seed
    fast = [r for r in records if (r["optimizer"], r["group"], r["teleport_epoch"]) == ("gd", "posscale", 5)]
    assert all(r["to_baseline"]["epochs"] < EPOCHS - 1 for r in fast)


def test_time_to_loss_counts_from_the_first_hit():
    record = {"loss": [4.0, 3.0, 1.0, 2.0, 0.5], "time_s": [0.0, 0.1, 0.2, 0.3, 0.4]}
    assert time_to_loss(record, 2.0) == {"loss": 2.0, "epochs": 2, "time_s": 0.2}
    assert time_to_loss(record, 0.1) == {"loss": 0.1, "epochs": None, "time_s": None}
    assert time_to_loss({"loss": [None, 1.0], "time_s": [0.0, 0.1]}, 1.0)["epochs"] == 1
    assert time_to_loss(record, float("nan"))["epochs"] is None


def test_summary_uses_the_mean_curve(records):
    rows = summarize(records)
    assert len(rows) == len(small_grid().points())
    for row in rows:
        rs = [
            r
            for r in records
            if (r["optimizer"], r["group"], r["teleport_epoch"], r["teleport_lr"])
            == (row["optimizer"], row["group"], row["teleport_epoch"], row["teleport_lr"])
        ]
        curve = [sum(col) / len(col) for col in zip(*(r["loss"] for r in rs))]
        assert row["final_loss"] == pytest.approx(curve[-1], rel=1e-12)
        if row["teleport_epoch"] is None:
            assert row["epochs_to_baseline"] == EPOCHS - 1
        elif row["epochs_to_baseline"] is not None:
            assert curve[row["epochs_to_baseline"]] <= row["baseline_loss"] * (1 + 1e-12)


def test_parallel_threads_give_the_same_records(records):
    # strip_timing also drops the seconds inside ``to_baseline``
    assert strip_timing(sweep(small_grid(), n_jobs=2)) == strip_timing(records)


@pytest.mark.slow
def test_a_dask_cluster_on_loopback_gives_the_same_records(records):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert all(address.startswith("tcp://127.0.0.1:") for address in client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as stream, joblib.parallel_config(backend="dask"):
            remote = sweep(small_grid())
        assert len(stream.data) >= 1  # the points ran as tasks on the cluster's workers
    assert strip_timing(remote) == strip_timing(records)


def test_results_file_round_trips_into_pandas(records, tmp_path):
    path = tmp_path / "results" / "sweep.json"
    mine = sweep(small_grid(optimizers=["gd"], teleport_lrs={"posscale": [1e-3]}), path=path, name="sweep_test")
    data = load_results(path)
    assert data["name"] == "sweep_test"
    assert data["parameters"]["teleport_lrs"] == {"posscale": [1e-3]}
    assert data["parameters"]["lrs"] == {"gd": 1e-4}
    frame = pd.json_normalize(data["records"])
    assert len(frame) == len(mine) == 3 * len(SEEDS)
    assert list(frame["teleport_lr"].isna()) == [r["teleport_lr"] is None for r in mine]
    assert list(frame["final_loss"]) == [r["final_loss"] for r in mine]
    assert list(frame["to_baseline.epochs"]) == [r["to_baseline"]["epochs"] for r in mine]
    assert frame["loss"].tolist() == [r["loss"] for r in mine]


def test_heatmaps_have_one_panel_per_group(records):
    rows = summarize(records)
    fig = sweep_heatmaps(rows, "seconds_to_baseline", optimizer="gd", note="epochs_to_baseline")
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "teleport epoch"]
    assert [ax.get_title().split(" (")[0] for ax in panels] == ["gd + posscale", "gd + gln"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0", "5"]
    with pytest.raises(ValueError, match="Invalid value"):
        sweep_heatmaps(rows, "loss", optimizer="gd")
    with pytest.raises(ValueError, match="Invalid optimizer: 'adam'"):
        sweep_heatmaps(rows, "final_loss", optimizer="adam")


@pytest.mark.parametrize(
    "changes,error,message",
    [
        (dict(teleport_epochs=[]), ValueError, r"Invalid teleport_epochs: \[\] \(needs at least 1"),
        (dict(teleport_epochs=[5, 5]), ValueError, r"Invalid teleport_epochs: \[5, 5\] \(values repeat"),
        (dict(teleport_epochs=[EPOCHS]), ValueError, rf"Invalid teleport_epochs\[0\]: {EPOCHS} \(the run has"),
        (dict(teleport_epochs=[-1]), ValueError, r"Invalid teleport_epochs\[0\]: -1"),
        (dict(teleport_epochs=[2.5]), TypeError, r"Invalid teleport_epochs\[0\]: 2.5"),
        (dict(teleport_epochs=5), TypeError, "Invalid teleport_epochs: 5"),
        (dict(teleport_lrs=[1e-4]), TypeError, r"Invalid teleport_lrs: \[0.0001\]"),
        (dict(teleport_lrs={}), ValueError, "Invalid teleport_lrs"),
        (dict(teleport_lrs={"so3": [1e-4]}), ValueError, "Invalid teleport_lrs key: 'so3'"),
        (dict(teleport_lrs={"posscale": [0.0]}), ValueError, r"Invalid teleport_lrs\['posscale'\]\[0\]: 0.0"),
        (dict(teleport_lrs={"gln": [float("inf")]}), ValueError, r"Invalid teleport_lrs\['gln'\]\[0\]: inf"),
        (dict(optimizers=["adam"]), ValueError, r"Invalid optimizers\[0\]: 'adam'"),
        (dict(seeds=[]), ValueError, r"Invalid seeds: \[\] \(needs at least 1"),
        (dict(seeds=[-3]), ValueError, r"Invalid seeds\[0\]: -3"),
        (dict(epochs=0), ValueError, "Invalid epochs: 0"),
        (dict(lrs={"gd": -1.0}), ValueError, r"Invalid lrs\['gd'\]: -1.0"),
        (dict(teleport_steps={"posscale": 1.5}), TypeError, r"Invalid teleport_steps\['posscale'\]: 1.5"),
    ],
)
def test_bad_grid_input_names_the_argument(changes, error, message):
    with pytest.raises(error, match=message):
        small_grid(**changes)


@pytest.mark.parametrize(
    "grid,n_jobs,error,message",
    [
        ({"teleport_epochs": [5]}, -1, TypeError, "Invalid grid"),
        (None, 0, ValueError, "Invalid n_jobs: 0"),
        (None, 1.5, TypeError, "Invalid n_jobs: 1.5"),
    ],
)
def test_bad_sweep_input_is_refused_before_any_run(grid, n_jobs, error, message, monkeypatch):
    ran = []
    monkeypatch.setattr("symtele.study.sweep.train", lambda *a, **k: ran.append(1))
    with pytest.raises(error, match=message):
        sweep(small_grid() if grid is None else grid, n_jobs=n_jobs)
    assert not ran
