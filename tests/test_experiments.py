"""The report's experiment, summary, plot and claim functions, called the way the notebooks call them."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from symtele import plots
from symtele.study import experiments, published  # noqa: E402
from symtele.study.claims import CLAIMS, check_claims  # noqa: E402
from symtele.study.results import load_results, write_results  # noqa: E402
from symtele.study.settings import CONVEX, DIGITS, LEVEL_SET, REGRESSION, SWEEP  # noqa: E402
from symtele.study.summaries import (
    below_and_above,
    by_method,
    curve_stats,
    epochs_to_reach,
    reach_table,  # noqa: E402
    time_in_teleports,
)
from symtele.teleports import SO2

SCHEMA = {"problem", "method", "seed", "loss", "grad_norm_sq", "time_s", "teleport_epochs", "teleports"}


def well_formed(records, epochs):
    for r in records:
        assert SCHEMA <= set(r)
        assert len(r["loss"]) == len(r["grad_norm_sq"]) == len(r["time_s"]) == epochs
        assert all(isinstance(v, float) for v in r["loss"])
        assert r["time_s"] == sorted(r["time_s"])
        assert [t["epoch"] for t in r["teleports"]] == r["teleport_epochs"]
        assert ("+" in r["method"]) == bool(r["teleports"])


@pytest.fixture(scope="module")
def quadratic():
    return experiments.convex_so2()


@pytest.fixture(scope="module")
def regression_records():
    return experiments.relu_posscale()


def test_convex_so2_reproduces_reference(quadratic):
    gd, tele = quadratic
    well_formed(quadratic, 10)
    assert (gd["method"], tele["method"]) == ("gd", "gd+so2")
    assert gd["loss"] == pytest.approx(published.QUADRATIC_GD, rel=1e-4)
    assert tele["loss"] == pytest.approx(published.QUADRATIC_SO2, rel=1e-4)
    assert tele["teleport_epochs"] == [4]


def test_convex_so2_path_marks_the_jump(quadratic):
    gd, tele = quadratic
    assert gd["path"][0] == [8.0, -2.0] and len(gd["path"]) == 11  # ten epochs and the final point
    assert tele["path_epochs"] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10]
    before, after = tele["path"][4], tele["path"][5]
    assert before == gd["path"][4]
    assert abs(after[0]) < 1e-3 < abs(before[0])  # all of the loss moved into v = 3y


def test_relu_posscale_matches_reference_per_seed(regression_records):
    well_formed(regression_records, REGRESSION.epochs)
    groups = by_method(regression_records)
    assert list(groups) == ["gd", "gd+posscale", "adagrad", "adagrad+posscale"]
    for method, reference in published.RELU_FINAL.items():
        finals = [r["loss"][-1] for r in groups[method]]
        assert finals == pytest.approx(reference, abs=5e-5)
        mean, std = published.RELU_FINAL_MEAN_STD[method]
        assert (np.mean(finals), np.std(finals)) == pytest.approx((mean, std), abs=5e-5)


def test_epochs_to_gd_final_loss_match_reference(regression_records):
    groups = by_method(regression_records)
    target = curve_stats(groups["gd"])[0][-1]
    rows = {r["method"]: r for r in reach_table(regression_records, target)}
    assert {m: rows[m]["epochs_to_target"] for m in rows} == published.RELU_EPOCHS_TO_GD_FINAL
    assert all(rows[m]["time_to_target_s"] is not None for m in rows)


def test_gln_baseline_moves_the_loss_and_posscale_does_not():
    records = experiments.gln_baseline(REGRESSION.replace(seeds=(0, 12345), epochs=12))
    well_formed(records, 12)
    groups = by_method(records)
    methods = ["gln", "gln-updated", "posscale"]
    assert list(groups) == [f"{o}{m}" for o in ("gd", "adagrad") for m in ("", *(f"+{m}" for m in methods))]
    for method in ("gd+gln", "gd+gln-updated", "adagrad+gln", "adagrad+gln-updated"):
        for r in groups[method]:
            (t,) = r["teleports"]
            assert abs(t["loss_after"] - t["loss_before"]) > 1e-3 * t["loss_before"]
            assert t["steps_taken"] == REGRESSION.gln(method.split("+")[0]).steps
    for r in groups["gd+posscale"] + groups["adagrad+posscale"]:
        (t,) = r["teleports"]
        assert t["loss_after"] == pytest.approx(t["loss_before"], rel=1e-4)
        assert t["grad_norm_sq_after"] > t["grad_norm_sq_before"]


def test_level_set_keeps_the_loss_and_steepens():
    records = experiments.level_set("booth", LEVEL_SET.replace(booth_epochs=6, booth_teleport_epochs=(1,)))
    well_formed(records, 6)
    assert [r["method"] for r in records] == ["gd-ls", "gd-ls+levelset", "gd", "gd+levelset"]
    for r in records[1::2]:
        (t,) = r["teleports"]
        assert t["loss_after"] <= t["loss_before"] + 1e-8
        assert t["grad_norm_sq_after"] > t["grad_norm_sq_before"]
        assert r["path_epochs"].count(1) == 2
    short = LEVEL_SET.replace(
        rosenbrock_epochs=4,
        rosenbrock_teleport_epochs=(0, 2),
        rosenbrock_fixed_teleport_epochs=(1,),
        rosenbrock_other_epochs=(1,),
    )
    only = experiments.level_set("rosenbrock", short, teleport_only=True)
    assert [r["method"] for r in only] == ["gd-ls+levelset", "gd+levelset"]
    assert [r["teleport_epochs"] for r in only] == [[0, 2], [1]]  # Armijo runs and fixed-step runs: their own
    assert {r["dtype"] for r in only} == {"float32"}
    assert all(r["teleports"][0]["grad_evals"] > 0 and r["teleports"][0]["hvp_evals"] > 0 for r in only)
    so2 = experiments.level_set("booth", LEVEL_SET.replace(booth_epochs=4), optimizers=("gd-ls",), teleport=SO2())
    assert [r["method"] for r in so2] == ["gd-ls", "gd-ls+so2"]


def test_same_budget_counts_the_teleports_evaluations():
    s = LEVEL_SET.replace(
        rosenbrock_epochs=60,
        rosenbrock_teleport_epochs=(10,),
        rosenbrock_fixed_teleport_epochs=(10,),
        rosenbrock_other_epochs=(10,),
    )
    plain, tele = experiments.same_budget("rosenbrock", s)
    (t,) = tele["teleports"]
    extra = t["grad_evals"] + t["hvp_evals"]
    assert extra > 0 and tele["evaluations"][-1] == 60 + extra
    assert tele["evaluations"][9] == 10 and tele["evaluations"][10] == 11 + extra  # counted at the teleport's epoch
    assert len(plain["loss"]) == tele["evaluations"][-1] == plain["evaluations"][-1]


def test_level_set_mlp_small():
    small = LEVEL_SET.replace(
        mlp_seeds=(0, 1), mlp_epochs=8, mlp_teleport_epochs=(2,), mlp_samples=16, mlp_hidden=6, teleport_steps=5
    )
    records = experiments.level_set_mlp(small)
    well_formed(records, 8)
    assert [(r["seed"], r["method"]) for r in records] == [(s, m) for s in (0, 1) for m in ("gd", "gd+levelset")]
    assert records[0]["loss"] != records[2]["loss"]  # each seed its own data and weights


def test_beyond_optimizers_small():
    small = DIGITS.replace(seeds=(0,), lrs={"sgd": 0.1, "adam": 1e-3}, epochs=7, hidden=(8,), teleport_epochs=(2,))
    records = experiments.beyond_optimizers(small)
    well_formed(records, 7)
    assert [r["method"] for r in records] == ["sgd", "sgd+posscale", "adam", "adam+posscale"]
    for r in records:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
    # the runs without and with the teleport share the epochs before it; the teleport keeps the loss
    assert records[0]["loss"][:2] == records[1]["loss"][:2]
    assert records[1]["loss"][2] == pytest.approx(records[0]["loss"][2], rel=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: experiments.convex_so2("himmelblau"), "problem"),
        (lambda: experiments.level_set(optimizers=("adam",)), "optimizers"),
        (lambda: experiments.level_set(teleport_steps=-1), "teleport_steps"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "settings, changes, match",
    [
        (CONVEX, {"start": (1.0, 2.0, 3.0)}, "start"),
        (CONVEX, {"teleport_epoch": 10}, "teleport_epoch"),
        (CONVEX, {"booth_lr": float("nan")}, "booth_lr"),
        (REGRESSION, {"gd_lr": -1.0}, "gd_lr"),
        (REGRESSION, {"dims": [4, 5]}, "dims"),
        (REGRESSION, {"seeds": [0, 0]}, "seeds"),
        (REGRESSION, {"teleport_epoch": 300}, "teleport_epoch"),
        (LEVEL_SET, {"mlp_teleport_epochs": [300]}, "mlp_teleport_epochs"),
        (LEVEL_SET, {"rosenbrock_other_epochs": [5, 2000]}, "rosenbrock_other_epochs"),
        (LEVEL_SET, {"line_search_steps": 0}, "line_search_steps"),
        (DIGITS, {"seeds": []}, "seeds"),
        (DIGITS, {"lrs": {"lbfgs": 1.0}}, "lrs"),
        (SWEEP, {"teleport_lrs": {"so2": [1e-3]}}, "teleport_lrs"),
        (SWEEP, {"optimizers": ["adam"]}, "optimizers"),
    ],
)
def test_bad_settings_are_named_when_made(settings, changes, match):
    with pytest.raises(ValueError, match=match):
        settings.replace(**changes)


def test_settings_refuse_unknown_names_and_take_a_notebooks_parameters():
    with pytest.raises(TypeError, match="'epoch'"):
        REGRESSION.replace(epoch=3)
    run = REGRESSION.with_parameters({"epochs": 12, "gd_lr": 1e-3, "build_dir": "x", "quick": True})
    assert (run.epochs, run.gd_lr, run.adagrad_lr) == (12, 1e-3, REGRESSION.adagrad_lr)
    assert run.to_dict()["seeds"] == list(REGRESSION.seeds)
    with pytest.raises(TypeError, match="settings"):
        experiments.relu_posscale(CONVEX)


def test_summaries_on_hand_made_records():
    records = [
        {
            "method": "gd",
            "problem": "p",
            "loss": [4.0, 2.0, 1.0],
            "time_s": [0.0, 1.0, 2.0],
            "grad_norm_sq": [1.0, 1.0, 1.0],
            "teleports": [],
        },
        {
            "method": "gd",
            "problem": "p",
            "loss": [6.0, 4.0, 1.0],
            "time_s": [0.0, 3.0, 4.0],
            "grad_norm_sq": [1.0, 1.0, 1.0],
            "teleports": [{"cost_s": 0.5}],
        },
    ]
    mean, std = curve_stats(records)
    assert mean.tolist() == [5.0, 3.0, 1.0] and std.tolist() == [1.0, 1.0, 0.0]
    assert epochs_to_reach(mean, 3.0) == 1 and epochs_to_reach(mean, 0.5) is None
    (row,) = reach_table(records, 3.0)
    assert (row["epochs_to_target"], row["time_to_target_s"]) == (1, 2.0)
    assert time_in_teleports(records)["gd"] == {"teleport_s": 0.25, "run_s": 3.0}
    with pytest.raises(ValueError, match="records"):
        curve_stats([])
    plain = {"loss": [5.0, 4.0, 3.0, 2.0, 1.0]}
    tele = {"loss": [5.0, 4.0, 1.0, 2.0, 3.0], "teleport_epochs": [1]}  # counted from epoch 1: = < = >
    assert below_and_above(plain, tele) == (0.25, 0.25)


def test_plots_return_figures(quadratic, regression_records):
    fig = plots.level_sets("quadratic", quadratic)
    assert isinstance(fig, matplotlib.figure.Figure)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"gd", "gd+so2", "teleport", "target"} <= set(labels)
    fig = plots.curves(regression_records, x="time_s", mark_teleports=True)
    assert len(fig.axes[0].get_lines()) == 4
    fig, axes = plots.panels(2)
    plots.curves(regression_records, key="grad_norm_sq", ax=axes[0])
    plots.loss_vs_grad(regression_records, ax=axes[1])
    assert len(fig.axes) == 2 and axes[1].get_xscale() == "log"
    tiny = DIGITS.replace(seeds=(0, 1), lrs={"sgd": 0.1}, epochs=2, hidden=(4,), teleport_epochs=(1,))
    records = experiments.beyond_optimizers(tiny)
    assert len(plots.final_bars(records).axes[0].patches) == 2
    with pytest.raises(ValueError, match="key"):
        plots.curves(regression_records, key="accuracy")
    plt.close("all")


def test_claims_from_results_files(tmp_path, quadratic, regression_records):
    write_results(
        tmp_path / "01.json",
        "01_convex_so2",
        {},
        quadratic
        + experiments.convex_so2("booth")
        + experiments.convex_so2("rosenbrock", CONVEX.replace(rosenbrock_epochs=50)),
    )
    write_results(tmp_path / "02.json", "02_relu_posscale", {}, regression_records + experiments.gln_baseline())
    results = {
        "01_convex_so2": load_results(tmp_path / "01.json"),
        "02_relu_posscale": load_results(tmp_path / "02.json"),
        "03_level_set": None,
    }
    assert len(pd.DataFrame(results["02_relu_posscale"]["records"])) == 20 + 40
    rows = check_claims(results)
    assert len(rows) == len(CLAIMS)
    holds = {row["claim"].split(":")[0]: row["holds"] for row in rows}
    # REFERENCE §1: every printed digit of the GD losses; the teleported run's last digits differ
    assert holds["GD on x² + 9y² from (8, −2), step 0.08"] == "yes"
    assert holds["GD + SO(2) teleport at epoch 4"] == "partly"
    # REFERENCE §2 through the results files, each to the printed digits
    for claim in (
        "Final losses per seed",
        "Final mean ± std",
        "Mean loss at epoch 50",
        "Epochs to reach GD's final mean loss",
    ):
        assert holds[claim] == "yes", claim
    gln = next(row for row in rows if row["claim"].startswith("The GL(n) baseline"))
    assert gln["holds"] == "partly" and "gd 5/5" in gln["measured"] and "adagrad 5/5" in gln["measured"]
    for row, (_claim, _source, needs, _check) in zip(rows, CLAIMS):
        if any(stem not in ("01_convex_so2", "02_relu_posscale") for stem in needs):
            assert row["holds"] == "not measured" and "no results file of" in row["measured"], row
    with pytest.raises(TypeError, match="results"):
        check_claims([])


def test_a_claim_about_another_run_is_not_measured_and_says_why(regression_records):
    short = experiments.relu_posscale(REGRESSION.replace(epochs=60))
    rows = {row["claim"]: row for row in check_claims({"02_relu_posscale": {"records": short}})}
    row = next(r for c, r in rows.items() if c.startswith("Final losses per seed"))
    assert row["holds"] == "not measured"
    assert row["measured"] == "02_relu_posscale ran 60 epochs; the claim is about the writeup's 300"


def _figure_runs(plain_loss, tele_loss, teleports, methods=("gd", "gd+levelset")):
    """Rosenbrock records shaped like writeup Fig. 6's (start, epochs, arithmetic), with the given losses."""
    n = LEVEL_SET.rosenbrock_epochs
    base = {
        "problem": "rosenbrock",
        "start": list(LEVEL_SET.rosenbrock_start),
        "dtype": LEVEL_SET.rosenbrock_dtype,
        "lr": 1e-3,
        "grad_norm_sq": [1.0] * n,
        "teleport_epochs": [],
        "teleports": [],
    }
    plain = {**base, "method": methods[0], "loss": plain_loss}
    tele = {**base, "method": methods[1], "loss": tele_loss, "teleport_epochs": [t["epoch"] for t in teleports]}
    return [plain, {**tele, "teleports": teleports}]


def test_level_set_claims_are_as_strict_as_their_words():
    n = LEVEL_SET.rosenbrock_epochs
    jump = {"epoch": 1, "loss_before": 2.0, "loss_after": 2.0, "grad_norm_sq_before": 1.0, "grad_norm_sq_after": 2.0}
    plain = [3.0] + [2.0] * (n - 1)
    below_but_once = [3.0, 2.0] + [1.0] * (n - 3) + [2.5]  # below GD at every epoch after the teleport but the last
    records = _figure_runs(plain, below_but_once, [jump], ("gd-ls", "gd-ls+levelset"))
    records += _figure_runs(plain, [3.0, 2.0] + [1.0] * (n - 2), [jump])
    results = {"03_level_set": {"parameters": {"delta": 1e-8}, "records": records}}
    rows = {row["claim"]: row for row in check_claims(results)}
    fixed = rows["Without line search, level-set teleportation still beats GD on Rosenbrock"]
    assert fixed["holds"] == "yes" and "below GD in 100%" in fixed["measured"]
    # "never raise the loss and always steepen": both, every teleport; a kept loss alone is not enough
    guarantee = rows["Level-set teleports never raise the loss and always steepen the gradient"]
    assert guarantee["holds"] == "yes" and "by construction" in guarantee["measured"]
    flat = {**jump, "grad_norm_sq_after": 1.0}
    records[1]["teleports"] = [flat]
    rows = {row["claim"]: row for row in check_claims(results)}
    assert rows["Level-set teleports never raise the loss and always steepen the gradient"]["holds"] == "partly"


def test_a_diverged_run_says_so():
    from symtele.study.summaries import number_or_diverged

    assert [number_or_diverged(v) for v in (None, float("nan"), float("inf"), "inf", 0.12345)] == [
        "diverged",
        "diverged",
        "diverged",
        "diverged",
        "0.123",
    ]
    n = LEVEL_SET.rosenbrock_epochs
    jump = {"epoch": 1, "loss_before": 2.0, "loss_after": 2.0, "grad_norm_sq_before": 1.0, "grad_norm_sq_after": 2.0}
    records = _figure_runs([3.0] + [2.0] * (n - 2) + [1.13], [3.0, 5.0] + [4.0] * (n - 3) + [None], [jump])
    records += _figure_runs([3.0] * n, [3.0] * n, [jump], ("gd-ls", "gd-ls+levelset"))
    results = {"03_level_set": {"parameters": {}, "records": records}}
    row = next(r for r in check_claims(results) if r["claim"].startswith("Without line search"))
    assert "final diverged vs 1.13" in row["measured"] and row["holds"] == "no"


def test_the_settings_name_only_what_the_library_and_the_sweep_know():
    from symtele.optimizers import OPTIMIZERS
    from symtele.study.settings import DIGITS_OPTIMIZERS, SWEEP_GROUPS
    from symtele.study.sweep import GROUP_TASKS
    from symtele.teleports import TELEPORTS

    assert set(DIGITS_OPTIMIZERS) <= set(OPTIMIZERS) and set(DIGITS.lrs) <= set(DIGITS_OPTIMIZERS)
    assert set(SWEEP_GROUPS) == set(GROUP_TASKS) and set(SWEEP_GROUPS) <= set(TELEPORTS)


@pytest.mark.parametrize("model_name,optimizer", [("digits-cnn", "adam"), ("digits-resnet", "momentum")])
def test_teleported_network_runs_continue_the_plain_run_exactly(model_name, optimizer):
    from symtele.study.settings import NETWORKS

    s = NETWORKS.replace(epochs=2, batch_size=256, teleport_at=(3, 7))
    states = ("keep", "reset", "transport")
    shared = experiments.network_runs(model_name, optimizer, 1, s, states=states)
    alone = experiments.network_runs(model_name, optimizer, 1, s, states=states, share=False)

    def numbers(record):
        teleports = [{k: v for k, v in t.items() if k != "cost_s"} for t in record["teleports"]]
        return {**{k: v for k, v in record.items() if k != "time_s"}, "teleports": teleports}

    assert [numbers(r) for r in shared] == [numbers(r) for r in alone]
    assert [r["state"] for r in shared] == [None, *states]
    assert [r["teleport_epochs"] for r in shared] == [[], [3, 7], [3, 7], [3, 7]]
    assert all(len(r["loss"]) == 3 and r["time_s"] == sorted(r["time_s"]) for r in shared)
    plain, kept, reset, moved = (r["loss"][-1] for r in shared)
    assert len({plain, kept, reset, moved}) == 4  # the teleport and the three treatments of the state differ
