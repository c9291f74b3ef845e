"""The minibatch-safety experiment (notebook 09): its runs, its table and its claims."""

import math

import pytest
import torch

from symtele.study import experiments, minibatch, summaries
from symtele.study.claims import check_claims
from symtele.study.claims.safety import MEAN_BOUND, SEED_BOUND
from symtele.study.experiments import cosine_lr_factor
from symtele.study.settings import NETWORK_OPTIMIZERS, SAFETY

TINY = SAFETY.replace(models=("digits-mlp",), seeds=(3,), epochs=2, batch_size=256, every=4)


def _numbers(record):
    """A record without what depends on the machine's speed."""
    teleports = [{k: v for k, v in t.items() if k != "cost_s"} for t in record["teleports"]]
    return {**{k: v for k, v in record.items() if k != "time_s"}, "teleports": teleports}


@pytest.fixture(scope="module")
def tiny_runs():
    return minibatch.safety_runs("digits-mlp", "momentum", 3, TINY)


def test_safety_runs_are_well_formed(tiny_runs):
    steps = 2 * -(-1347 // 256)
    assert [r["accept"] for r in tiny_runs] == [None, "always", "lookahead"]
    assert [r["method"] for r in tiny_runs] == ["momentum", "momentum+rescale", "momentum+rescale-lookahead"]
    for r in tiny_runs:
        assert r["steps"] == steps and r["lr"] == TINY.lrs["momentum"]
        for key in ("loss", "grad_norm_sq", "time_s", "test_loss", "test_accuracy"):
            assert len(r[key]) == TINY.epochs + 1, key
        assert all(isinstance(v, float) for v in r["loss"] + r["test_loss"] + r["test_accuracy"])
        assert r["time_s"] == sorted(r["time_s"])
        assert (r["final_loss"], r["final_test_loss"], r["final_test_accuracy"]) == (
            r["loss"][-1],
            r["test_loss"][-1],
            r["test_accuracy"][-1],
        )
        assert [t["epoch"] for t in r["teleports"]] == r["teleport_epochs"]
    plain, always, lookahead = tiny_runs
    assert plain["teleports"] == [] and plain["every"] is None
    assert always["teleport_epochs"] == lookahead["teleport_epochs"] == [4, 8]  # from step `every`, not 0
    assert [t["t"] for t in always["teleports"]] == [1.0, 1.0]
    for t in lookahead["teleports"]:
        assert t["t"] in (0.0, 0.25, 0.5, 1.0)
        trials = t["trace"]["lookahead"]
        assert len(trials["t"]) == len(trials["loss"]) >= 2 and t["t"] in trials["t"]
    assert all(abs(t["loss_after"] / t["loss_before"] - 1) < 1e-5 for t in always["teleports"])


def test_the_full_teleports_trial_is_read_from_the_trace():
    trace = {"lookahead": {"t": [0.0, 1.0, 0.5], "loss": [2.0, 3.0, 1.0]}}
    assert summaries.full_trial_ratio({"trace": trace}) == 1.5
    assert summaries.full_trial_ratio({"trace": {}}) is None and summaries.full_trial_ratio({}) is None


def test_the_run_without_teleports_is_a_plain_training_loop(tiny_runs):
    x, y, x_test, y_test = minibatch.digits_inputs("digits-mlp", 3)
    torch.manual_seed(3)
    model = minibatch.network("digits-mlp", TINY.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=TINY.lrs["momentum"], momentum=0.9)
    losses, test_losses = [], []

    def measure():
        model.eval()
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(model(x), y).item())
            test_losses.append(torch.nn.functional.cross_entropy(model(x_test), y_test).item())
        model.train()

    measure()
    batches = minibatch.minibatch_order(len(y), TINY.batch_size, TINY.epochs, 3)
    assert TINY.lr_schedule == "cosine"
    for step, batch in enumerate(batches):
        opt.param_groups[0]["lr"] = TINY.lrs["momentum"] * 0.5 * (1 + math.cos(math.pi * step / len(batches)))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
        if (step + 1) % (len(batches) // TINY.epochs) == 0:
            measure()
    assert tiny_runs[0]["loss"] == losses and tiny_runs[0]["test_loss"] == test_losses
    assert tiny_runs[0]["lr_schedule"] == "cosine"


@pytest.mark.parametrize("model_name", SAFETY.models)
def test_measuring_in_slices_gives_the_numbers_of_one_pass(model_name):
    """The losses on the whole sets are measured in slices of at most EVAL_ROWS examples: the same numbers.

    Bit for bit where the CPU's kernels compute an example alike in batches of these sizes (the CI machine's do);
    to float32 rounding of the mean loss everywhere, which is what is asserted.
    """
    x, y, x_test, y_test = minibatch.digits_inputs(model_name, 4)
    torch.manual_seed(4)
    model = minibatch.network(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in minibatch.minibatch_order(len(y), 64, 1, 4)[:5]:  # running statistics that are not the initial ones
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    assert len(x) > minibatch.EVAL_ROWS >= len(x_test)  # the training set is measured in two slices
    for inputs, targets in ((x, y), (x_test, y_test)):
        whole = experiments._on_training_set(model, inputs, targets)
        for rows in (minibatch.EVAL_ROWS, 500, 337):
            loss, accuracy = experiments._on_training_set(model, inputs, targets, rows)
            assert loss == pytest.approx(whole[0], rel=1e-6) and accuracy == whole[1], rows
    assert model.training


def test_the_cosine_factor_is_torchs_cosine_annealing_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=37)
    for step in range(37):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * cosine_lr_factor(step, 37), rel=1e-12, abs=1e-15)
        opt.step()
        scheduler.step()


def test_a_constant_schedule_keeps_the_optimizers_step():
    s = TINY.replace(models=("digits-mlp",), epochs=1, every=3, accepts=("always",))
    cosine, constant = (
        minibatch.safety_runs("digits-mlp", "sgd", 1, s.replace(lr_schedule=k))[0] for k in ("cosine", "constant")
    )
    assert constant["lr_schedule"] == "constant" and constant["loss"][-1] != cosine["loss"][-1]
    with pytest.raises(ValueError, match="lr_schedule"):
        s.replace(lr_schedule="linear")


@pytest.mark.parametrize("model_name,optimizer", [("digits-cnn", "adamw"), ("digits-resnet", "sgd")])
def test_the_arms_share_weights_and_batches_and_the_copy_changes_nothing(model_name, optimizer):
    s = TINY.replace(models=(model_name,), epochs=1, every=3)
    shared = minibatch.safety_runs(model_name, optimizer, 1, s)
    alone = minibatch.safety_runs(model_name, optimizer, 1, s, share=False)
    assert [_numbers(r) for r in shared] == [_numbers(r) for r in alone]
    assert len({r["loss"][0] for r in shared}) == 1  # the same initial weights
    never = minibatch.safety_runs(model_name, optimizer, 1, s.replace(every=1000))  # no teleport in the run
    assert [r["teleports"] for r in never] == [[], [], []]
    assert len({tuple(r["loss"] + r["test_loss"]) for r in never}) == 1  # then the arms are the same run


@pytest.mark.parametrize("z", [math.inf, -math.inf], ids=["declines-all", "accepts-all"])
def test_the_look_ahead_arm_follows_the_plain_run_until_a_teleport_is_applied(monkeypatch, z):
    """The look-ahead's arm asks each teleport on a copy of the run without teleports and goes on alone only
    from the first one applied: the same numbers as running it from the start, whether it declines every
    teleport (then it is the run without teleports) or applies every one."""
    monkeypatch.setattr("symtele.teleporter.Z", z)
    s = TINY.replace(epochs=2, every=3, accepts=("lookahead",))
    shared = minibatch.safety_runs("digits-mlp", "adam", 2, s)
    alone = minibatch.safety_runs("digits-mlp", "adam", 2, s, share=False)
    assert [_numbers(r) for r in shared] == [_numbers(r) for r in alone]
    teleports = shared[1]["teleports"]
    assert len(teleports) >= 2 and all((t["t"] == 0) == (z == math.inf) for t in teleports)
    assert (shared[1]["loss"] == shared[0]["loss"]) == (z == math.inf)
    if z == math.inf:  # its clock is the plain run's and the teleports'
        assert all(a > b for a, b in zip(shared[1]["time_s"][1:], shared[0]["time_s"][1:]))


def test_minibatch_safety_runs_every_case():
    s = TINY.replace(epochs=1, every=3, accepts=("always",), lrs={"sgd": 0.1, "adam": 1e-3}, seeds=(0, 1))
    records = minibatch.minibatch_safety(s)
    assert [(r["optimizer"], r["seed"], r["accept"]) for r in records] == [
        (o, seed, a) for o in ("sgd", "adam") for seed in (0, 1) for a in (None, "always")
    ]
    table = summaries.safety_table(records)
    assert [(row["network"], row["optimizer"]) for row in table] == [("digits-mlp", "sgd"), ("digits-mlp", "adam")]
    assert set(table[0]["ratio"]) == {"always"} and table[0]["teleports"]["always"]["t"] == [1.0] * 2


def test_bad_settings_and_arguments_are_named():
    with pytest.raises(ValueError, match="every"):
        SAFETY.replace(every=1)
    with pytest.raises(ValueError, match="accepts"):
        SAFETY.replace(accepts=("sometimes",))
    with pytest.raises(ValueError, match="models"):
        SAFETY.replace(models=("resnet18",))
    with pytest.raises(ValueError, match="optimizer"):
        minibatch.safety_runs("digits-mlp", "rmsprop", 0, TINY)
    assert SAFETY.quick().epochs < SAFETY.epochs


def test_the_network_optimisers_are_named_in_one_list():
    assert set(NETWORK_OPTIMIZERS) == set(experiments.NETWORK_OPTIMIZERS)
    assert set(SAFETY.lrs) <= set(NETWORK_OPTIMIZERS)


def _record(network, optimizer, seed, accept, final, ts=(), drop=0.01):
    return {
        "loss": [2.3, final / (1 - drop), final],
        "problem": network,
        "optimizer": optimizer,
        "method": optimizer + minibatch.ARM_SUFFIX[accept or "none"],
        "seed": seed,
        "accept": accept,
        "lr": 0.1,
        "final_loss": final,
        "final_test_accuracy": 0.9,
        "teleports": [{"t": t} for t in ts],
    }


def _results(always, lookahead, seeds=(0, 1, 2, 3, 4), drop=0.01):
    """Synthetic records: per case, the run without teleports ends at 0.1·(1 + seed/10), its last epoch lowering
    its loss by ``drop``, the arms at that times ``always[case](seed)`` and ``lookahead[case](seed)``."""
    records = []
    for case in always:
        network, optimizer = case
        for seed in seeds:
            base = 0.1 * (1 + seed / 10)
            records.append(_record(network, optimizer, seed, None, base, drop=drop))
            records.append(_record(network, optimizer, seed, "always", base * always[case](seed), [1.0, 1.0]))
            records.append(_record(network, optimizer, seed, "lookahead", base * lookahead[case](seed), [0.0, 0.5]))
    return {"09_minibatch_safety": {"parameters": {}, "records": records}}


def _rows(results):
    from symtele.study.claims.safety import ROWS

    claims = {claim for claim, *_ in ROWS}
    return [row for row in check_claims(results) if row["claim"] in claims]


def test_safety_claims_hold_when_the_records_say_so():
    cases = [("digits-mlp", "sgd"), ("digits-cnn", "adam")]
    always = {case: (lambda seed: 3.0 + seed) for case in cases}
    lookahead = {cases[0]: lambda seed: 0.8 + 0.01 * seed, cases[1]: lambda seed: 0.9 - 0.01 * seed}
    flat, hurts, safe, helps = _rows(_results(always, lookahead))
    assert flat["holds"] == "yes" and "1% (median), 1% at most" in flat["measured"]
    assert hurts["holds"] == "yes" and "in 2 of 2" in hurts["measured"]
    assert safe["holds"] == "yes" and "×0.9" in safe["measured"]  # the largest mean ratio, quoted
    assert "the look-ahead applied 10 of the 20 teleports" in safe["measured"]
    assert helps["holds"] == "yes" and "in 2 of 2 cases" in helps["measured"]
    table = summaries.safety_table(_results(always, lookahead)["09_minibatch_safety"]["records"])
    ratio = table[0]["ratio"]["lookahead"]
    assert ratio["low"] < ratio["geometric"] < ratio["high"] < 1
    assert table[0]["teleports"]["lookahead"] == {"count": 10, "applied": 5, "t": [0.0, 0.5] * 5}


def test_safety_claims_fail_when_the_records_say_so():
    cases = [("digits-mlp", "sgd"), ("digits-cnn", "adam")]
    always = {cases[0]: lambda seed: 0.5, cases[1]: lambda seed: 2.0}
    # the means stay within MEAN_BOUND, but one seed ends worse than SEED_BOUND allows
    lookahead = {cases[0]: lambda seed: 1.0, cases[1]: lambda seed: SEED_BOUND + 0.05 if seed == 4 else 0.99}
    flat, hurts, safe, helps = _rows(_results(always, lookahead, drop=0.2))
    assert flat["holds"] == "no" and "10 by 5% or more" in flat["measured"]
    assert hurts["holds"] == "partly" and "in 1 of 2" in hurts["measured"]
    assert "wholly below 1, in 1: digits-mlp with sgd ×0.5" in hurts["measured"]
    assert safe["holds"] == "no" and "digits-cnn with adam" in safe["measured"]
    assert helps["holds"] == "no" and "in 0 of 2 cases" in helps["measured"]
    over = {cases[0]: lambda seed: MEAN_BOUND + 0.01, cases[1]: lambda seed: 1.0}
    assert _rows(_results(always, over))[2]["holds"] == "no"
    flat, hurts, safe, helps = _rows(_results(always, lookahead, seeds=(0,)))
    assert helps["holds"] == "not measured" and "one seed" in helps["measured"]
    assert {row["holds"] for row in _rows({"09_minibatch_safety": None})} == {"not measured"}
