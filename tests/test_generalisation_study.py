"""The generalisation chapter (notebook 10): its runs, its correlations, its tables and its claims."""

import copy
import math

import numpy as np
import pytest
import torch

from symtele.study import generalisation, summaries
from symtele.study.claims import check_claims
from symtele.study.claims.generalisation import ROWS, STEM
from symtele.study.settings import GENERALISATION, GENERALISATION_ARMS

TINY = GENERALISATION.replace(
    lrs={"mnist-5k": 0.1},
    seeds=(0,),
    epochs=2,
    teleport_epoch=1,
    batch_size=256,
    teleport_batch=128,
    teleport_steps=3,
    directions=2,
    t_count=2,
    samples=5,
    net_data="mnist-5k",
    nets=3,
    net_epochs=1,
    resamples=100,
)


def _numbers(record):
    """A record without what depends on the machine's speed."""
    teleports = [{k: v for k, v in t.items() if k != "cost_s"} for t in record["teleports"]]
    return {**{k: v for k, v in record.items() if k != "time_s"}, "teleports": teleports}


@pytest.fixture(scope="module")
def tiny_runs():
    return generalisation.teleport_runs("mnist-5k", 0, TINY)


def test_teleport_runs_are_well_formed_and_share_their_start(tiny_runs):
    assert [r["arm"] for r in tiny_runs] == ["none", *GENERALISATION_ARMS]
    assert [r["method"] for r in tiny_runs] == ["sgd", *(f"sgd+{a}" for a in GENERALISATION_ARMS)]
    plain = tiny_runs[0]
    assert plain["teleports"] == [] and plain["teleport_epochs"] == []
    for r in tiny_runs:
        assert r["experiment"] == "teleport" and r["problem"] == "mnist-5k" and r["lr"] == 0.1
        for key in ("loss", "test_loss", "test_accuracy", "grad_norm_sq", "time_s"):
            assert len(r[key]) == TINY.epochs + 1
        assert r["loss"][: TINY.teleport_epoch + 1] == plain["loss"][: TINY.teleport_epoch + 1]  # the same run so far
        assert r["final_test_loss"] == r["test_loss"][-1]
    for r in tiny_runs[1:]:
        (t,) = r["teleports"]
        objective, direction = r["arm"].split("-")
        assert (t["objective"], t["direction"]) == (objective, direction) and r["teleport_epochs"] == [1]
        assert t["loss_change"] < 1e-5
        assert t["steps_taken"] > 0
        moved = t["objective_after"] < t["objective_before"]
        assert moved == (direction == "decrease")
        # the same objective on another sample of its directions, at the same two points
        assert t["held_out_before"] > 0 and t["held_out_after"] > 0 and t["held_out_before"] != t["objective_before"]
        assert t["held_out_after"] != t["held_out_before"]
        assert r["loss"][-1] != plain["loss"][-1]  # a different point of the orbit trains on differently


def test_teleport_runs_are_deterministic(tiny_runs):
    again = generalisation.teleport_runs("mnist-5k", 0, TINY)
    assert [_numbers(r) for r in again] == [_numbers(r) for r in tiny_runs]


def test_teleport_runs_refuse_a_data_set_the_settings_do_not_name():
    with pytest.raises(ValueError, match="mnist1d"):
        generalisation.teleport_runs("mnist1d", 0, TINY)
    with pytest.raises(TypeError, match="settings"):
        generalisation.teleport_runs("mnist-5k", 0, object())


def test_sam_runs_spend_the_same_extra_compute_from_the_same_point(tiny_runs):
    flat, sam = generalisation.sam_runs("mnist-5k", 0, TINY)
    plain = tiny_runs[0]
    assert [(r["experiment"], r["arm"], r["method"]) for r in (flat, sam)] == [
        ("sam", "sharpness-decrease", "sgd+sharpness-decrease"),
        ("sam", "sam", "sgd+sam"),
    ]
    after = 4000 * (TINY.epochs - TINY.teleport_epoch)  # the examples of the epochs after the teleport epoch
    assert plain["gradient_examples"] == 4000 * TINY.epochs
    assert sam["gradient_examples"] == plain["gradient_examples"] + after and sam["rho"] == TINY.sam_rho
    (t,) = flat["teleports"]
    assert t["gradient_evaluations"] > 0 and t["loss_change"] < 1e-5 and t["objective_after"] < t["objective_before"]
    assert plain["gradient_examples"] < flat["gradient_examples"] <= sam["gradient_examples"]
    assert t["sharpness_before"] > 0 and t["sharpness_after"] > 0
    for r in (flat, sam):
        assert r["loss"][: TINY.teleport_epoch + 1] == plain["loss"][: TINY.teleport_epoch + 1]
        assert r["test_loss"][-1] != plain["test_loss"][-1]


def test_matched_sampling_fits_the_budget():
    per_direction = (TINY.teleport_steps + 1) * TINY.t_count  # 8 evaluations of the loss per direction
    assert generalisation.matched_sampling(4000, TINY) == {"directions": 2, "teleport_batch": 128}  # capped
    assert generalisation.matched_sampling(8 * 128, TINY) == {"directions": 1, "teleport_batch": 128}
    assert generalisation.matched_sampling(500, TINY) == {"directions": 1, "teleport_batch": 500 // per_direction}
    with pytest.raises(ValueError, match="budget"):
        generalisation.matched_sampling(per_direction - 1, TINY)


@pytest.mark.parametrize("part,model", [("cnn", "digits-cnn"), ("resnet", "digits-resnet")])
def test_the_digits_networks_teleport_along_their_exact_rescalings(part, model):
    tiny = TINY.replace(
        **{part: dict(lrs={"digits": 0.05}, seeds=(0,), epochs=2, teleport_epoch=1, batch_size=256, teleport_batch=64)}
    ).for_network(part)
    assert tiny.sam_data == "" and tiny.lrs == {"digits": 0.05} and tiny.teleport_batch == 64
    assert tiny.model == model and tiny.cnn == tiny.resnet == {}
    runs = generalisation.generalisation_runs(tiny)
    assert [(r["problem"], r["model"], r["arm"]) for r in runs] == [
        ("digits", model, arm) for arm in ("none", *GENERALISATION_ARMS)
    ]
    for r in runs[1:]:
        (t,) = r["teleports"]
        assert t["loss_change"] < 1e-5 and t["steps_taken"] > 0
        assert (t["objective_after"] < t["objective_before"]) == r["arm"].endswith("decrease")
        assert r["loss"][: tiny.teleport_epoch + 1] == runs[0]["loss"][: tiny.teleport_epoch + 1]


def test_a_teleport_leaves_the_resnets_running_statistics_as_they_were():
    """The teleport's hundreds of forward passes (train mode or eval) must not touch BatchNorm's buffers."""
    from torch.nn import functional as F

    from symtele.models import digits_resnet
    from symtele.teleports.generalisation import teleport_objective

    split = generalisation.data("digits", 0)
    torch.manual_seed(0)
    model = digits_resnet()
    with torch.no_grad():
        model(split.x_train[:256])  # running statistics of the data, not the initial ones
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    batch = (split.x_train[:64], split.y_train[:64])
    for train in (True, False):
        model.train(train)
        _, record = teleport_objective(model, F.cross_entropy, batch, steps=2, directions=2, t_count=2)
        assert record.loss_change < 1e-5 and record.steps_taken > 0
        assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_correlation_nets_are_measured_and_deterministic():
    nets = generalisation.correlation_nets(TINY)
    assert [(n["net"], n["lr"]) for n in nets] == [(0, 0.03), (1, 0.1), (2, 0.3)]
    for n in nets:
        assert n["experiment"] == "correlation" and n["problem"] == "mnist-5k"
        assert all(math.isfinite(n[m]) and n[m] > 0 for m in (*summaries.MEASURES, "loss", "test_loss"))
    assert generalisation.correlation_nets(TINY) == nets


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"teleport_epoch": 2}, "teleport_epoch"),
        ({"lrs": {"cifar": 0.1}}, "lrs key"),
        ({"t_range": (2.0, 1.0)}, "t_range"),
        ({"arms": ("sharpness-sideways",)}, "arms"),
        ({"nets": 2}, "nets"),
        ({"sam_data": "mnist1d"}, "sam_data"),
        ({"cnn": {"nets": 5}}, "cnn key"),
        ({"cnn": {"lrs": {"mnist1d": 0.1}}}, "cnn"),
        ({"cnn": {"lrs": {"digits": 0.1}, "epochs": 0}}, "epochs"),
        ({"resnet": {"model": "digits-cnn"}}, "resnet key"),
        ({"lrs": {"digits": 0.1}}, "lrs"),
        ({"model": "digits-resnet"}, "lrs"),
        ({"net_data": "digits"}, "net_data"),
    ],
)
def test_settings_refuse_bad_values(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TINY.replace(**changes)


def test_pearson_interval_matches_numpy_and_brackets_r():
    gen = np.random.default_rng(0)
    x = gen.normal(size=30)
    y = 0.5 * x + gen.normal(size=30)
    out = summaries.pearson_interval(x, y, resamples=500, seed=1)
    assert out["r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert out["low"] < out["r"] < out["high"] and out["n"] == 30
    assert summaries.pearson_interval(x, y, resamples=500, seed=1) == out
    line = summaries.pearson_interval(x, 3 * x - 1, resamples=100)
    assert line["r"] == pytest.approx(1) and line["low"] == pytest.approx(1)
    with pytest.raises(ValueError, match="constant"):
        summaries.pearson_interval(x, np.ones(30))
    with pytest.raises(ValueError, match="values"):
        summaries.pearson_interval([1, 2], [3, 4])
    with pytest.raises(ValueError, match="confidence"):
        summaries.pearson_interval(x, y, confidence=1.5)


def _run(problem, arm, seed, test_after, loss_change=1e-7, *, experiment="teleport", model="leaky-mlp", examples=100):
    """A synthetic teleport record: validation loss 1 up to the teleport (epoch 1), ``test_after`` after it."""
    teleport = None
    if arm not in ("none", "sam"):
        teleport = {"objective_before": 2.0, "objective_after": 1.0, "loss_change": loss_change, "steps_taken": 3}
    return {
        "experiment": experiment,
        "problem": problem,
        "model": model,
        "method": "sgd" if arm == "none" else f"sgd+{arm}",
        "arm": arm,
        "seed": seed,
        "teleport_epoch": 1,
        "teleport_epochs": [] if teleport is None else [1],
        "teleports": [] if teleport is None else [teleport],
        "loss": [2.0, 1.0, 0.5, 0.4],
        "test_loss": [2.0, 1.0, test_after, test_after],
        "gradient_examples": examples,
        "rho": 0.05,
    }


def _results(shift, *, seeds=(0, 1, 2), slope=1.0, loss_change=1e-7):
    """Runs whose arms end ``shift`` (+ a small per-seed jitter) above the run without a teleport (on the MLP and
    the CNN; SAM ``shift`` and the teleport at SAM's compute ``2·shift`` above it), and nets whose sharpness and
    adaptive sharpness rise and curvature falls with ``slope`` × the validation loss."""
    records = []
    for seed in seeds:
        for problem, model in (("mnist1d", "leaky-mlp"), ("digits", "digits-cnn"), ("digits", "digits-resnet")):
            records.append(_run(problem, "none", seed, 1.0, model=model))
            for arm in GENERALISATION_ARMS:
                records.append(_run(problem, arm, seed, 1.0 + shift + 0.01 * seed, loss_change, model=model))
        for arm, after in (("sharpness-decrease", 1.0 + 2 * shift + 0.02 * seed), ("sam", 1.0 + shift + 0.01 * seed)):
            records.append(_run("mnist1d", arm, seed, after, loss_change, experiment="sam", examples=150))
    gen = np.random.default_rng(0)
    for i in range(20):
        test_loss = 1 + 0.1 * i
        records.append(
            {
                "experiment": "correlation",
                "problem": "mnist1d",
                "net": i,
                "lr": 0.1,
                "loss": float(test_loss + gen.normal()),
                "test_loss": test_loss,
                "sharpness": float(slope * test_loss + 0.05 * gen.normal()),
                "adaptive_sharpness": float(slope * test_loss + 0.05 * gen.normal()),
                "curvature": float(-slope * test_loss + 0.05 * gen.normal()),
            }
        )
    return {STEM: {"parameters": {}, "records": records}}


def _rows(results):
    ours = {claim for claim, *_ in ROWS}
    return {row["claim"]: row for row in check_claims(results) if row["claim"] in ours}


def test_the_table_pairs_each_arm_with_its_seeds_run():
    records = _results(-0.1)[STEM]["records"]
    table = summaries.generalisation_table(records)  # the SAM experiment's records are not its
    assert [(row["model"], row["problem"], row["arm"]) for row in table] == [
        (m, p, a)
        for m, p in (("leaky-mlp", "mnist1d"), ("digits-cnn", "digits"), ("digits-resnet", "digits"))
        for a in GENERALISATION_ARMS
    ]
    row = table[0]
    assert row["test_loss_after"]["differences"] == pytest.approx([-0.1, -0.09, -0.08])
    assert row["test_loss_after"]["high"] < 0 < row["test_loss_after"]["low"] + 0.2
    assert row["objective_ratio"] == [0.5, 0.5, 0.5] and row["diverged"] == []


def test_the_sam_table_pairs_each_arm_with_its_reference():
    rows = summaries.sam_table(_results(-0.1)[STEM]["records"])
    assert [(row["arm"], row["reference"]) for row in rows] == [
        ("sharpness-decrease", "none"),
        ("sam", "none"),
        ("sharpness-decrease", "sam"),
    ]
    assert rows[0]["test_loss_after"]["differences"] == pytest.approx([-0.2, -0.18, -0.16])
    assert rows[1]["test_loss_after"]["differences"] == pytest.approx([-0.1, -0.09, -0.08])
    assert rows[2]["test_loss_after"]["differences"] == pytest.approx([-0.1, -0.09, -0.08])
    assert rows[1]["compute"] == [1.5] * 3 and rows[2]["compute"] == [1.0] * 3
    with pytest.raises(LookupError, match="no run without a teleport"):
        summaries.sam_table([r for r in _results(-0.1)[STEM]["records"] if r.get("arm") != "none"])


def test_partial_pearson_interval_is_the_correlation_of_the_residuals():
    gen = np.random.default_rng(0)
    z = gen.normal(size=40)
    x = z + 0.5 * gen.normal(size=40)
    y = 2 * z + 0.3 * x + 0.5 * gen.normal(size=40)

    def residual(v):
        design = np.stack([np.ones_like(z), z], 1)
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    out = summaries.partial_pearson_interval(x, y, z, resamples=500, seed=1)
    assert out["r"] == pytest.approx(np.corrcoef(residual(x), residual(y))[0, 1], abs=1e-12)
    assert out["low"] < out["r"] < out["high"] and out["n"] == 40
    assert np.corrcoef(x, y)[0, 1] > 0.8 > out["r"]  # most of x and y's correlation is z's
    with pytest.raises(ValueError, match="determines"):
        summaries.partial_pearson_interval(x, y, 2 * x + 1)
    with pytest.raises(ValueError, match="values"):
        summaries.partial_pearson_interval(x[:3], y[:3], z[:3])


def test_claims_hold_on_runs_that_agree_with_the_paper():
    rows = _rows(_results(-0.1))
    assert len(rows) == len(ROWS) == 13
    assert {row["holds"] for row in rows.values()} == {"yes"}, rows
    sam = next(row for claim, row in rows.items() if claim.startswith("SAM lowers"))
    assert "compute ×1.5 of SGD's" in sam["measured"]


def test_claims_fail_on_runs_that_disagree_with_the_paper():
    rows = _rows(_results(+0.1, slope=-1.0, loss_change=1e-3))
    assert {row["holds"] for row in rows.values()} == {"no"}, rows
    flat = next(row for claim, row in rows.items() if claim.startswith("Teleporting to lower sharpness"))
    assert "wholly below 0 in 0 of 1" in flat["measured"]


@pytest.mark.parametrize("model,network,other", [("digits-cnn", "CNN", "ResNet"), ("digits-resnet", "ResNet", "CNN")])
def test_each_networks_claims_judge_only_that_network(model, network, other):
    results = _results(-0.1)
    for r in results[STEM]["records"]:
        if r.get("model") == model and r["arm"] != "none":
            r["test_loss"] = [2.0, 1.0, 1.2 + 0.01 * r["seed"], 1.2]
    rows = _rows(results)
    assert rows["Teleporting to lower sharpness lowers the validation loss"]["holds"] == "yes"
    assert rows[f"On the digits {network}, teleporting to lower sharpness lowers the validation loss"]["holds"] == "no"
    assert rows[f"On the digits {other}, teleporting to lower sharpness lowers the validation loss"]["holds"] == "yes"


def test_claims_are_not_measured_without_results_or_with_one_seed():
    assert {row["holds"] for row in _rows({STEM: None}).values()} == {"not measured"}
    rows = _rows(_results(-0.1, seeds=(0,)))
    assert {row["holds"] for claim, row in rows.items() if "eleporting" in claim or "SAM" in claim} == {"not measured"}


def test_adaptive_sharpness_of_a_trained_net_is_unchanged_by_a_rescaling():
    """The measure the correlations use is invariant: the net rescaled along its symmetry measures the same."""
    from torch.nn import functional as F

    from symtele.models import leaky_mlp
    from symtele.teleports.generalisation import act, make_objective, module_loss
    from symtele.teleports.rescale import symmetry_of

    data = generalisation.data("mnist-5k", 0)
    torch.manual_seed(0)
    model = leaky_mlp((784, 16, 10, 10))
    batch = (data.x_train[:64], data.y_train[:64])
    params = {n: p.detach() for n, p in model.named_parameters()}
    symmetry = symmetry_of(model, batch[0])
    s = 0.5 * torch.randn(symmetry.n_scales, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss_of = module_loss(model, F.cross_entropy, *batch)
    zero = torch.zeros(symmetry.n_scales, dtype=torch.float64)
    values = []
    for point in (params, act(symmetry, s, params)):
        objective = make_objective("adaptive_sharpness", loss_of, point, symmetry, directions=3, t_count=2)
        values.append(float(objective.value(zero)))
    assert values[1] == pytest.approx(values[0], rel=1e-5)


def test_sgd_together_takes_the_steps_of_sgd_one_net_at_a_time():
    from torch.nn import functional as F

    from symtele.models import leaky_mlp
    from symtele.study.ensemble import sgd_together
    from symtele.study.experiments import minibatch_order

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 6, generator=gen), torch.randint(0, 3, (100,), generator=gen)
    lrs = [0.05, 0.2, 0.5]
    orders = [minibatch_order(100, 16, 3, seed) for seed in range(3)]  # 7 steps an epoch, the last of 4 examples
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(leaky_mlp((6, 5, 4, 3)))
    alone = [copy.deepcopy(net) for net in nets]
    starts = [torch.cat([p.detach().flatten() for p in net.parameters()]) for net in nets]
    sgd_together(nets, lrs, x, y, orders)
    for net, lr, order in zip(alone, lrs, orders):
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for index in order:
            opt.zero_grad()
            F.cross_entropy(net(x[index]), y[index]).backward()
            opt.step()
    for together, one in zip(nets, alone):
        for a, b in zip(together.parameters(), one.parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [torch.cat([p.detach().flatten() for p in net.parameters()]) for net in nets]
    assert all((m - s).abs().max() > 0.01 for m, s in zip(moved, starts))  # every net trained, from its own start
    with pytest.raises(ValueError, match="lrs"):
        sgd_together(nets, lrs[:2], x, y, orders)
    with pytest.raises(ValueError, match="orders"):
        sgd_together(nets, lrs, x, y, [orders[0], orders[1], minibatch_order(100, 20, 3, 2)])
    with pytest.raises(ValueError, match="buffers"):
        sgd_together([torch.nn.BatchNorm1d(6)], [0.1], x, y, orders[:1])
