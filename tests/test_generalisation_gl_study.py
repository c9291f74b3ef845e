"""Chapter 10's runs with Zhao et al.'s data-dependent GL(h) action beside the rescalings: runs, table and claims."""

import json

import pytest
from test_generalisation_study import TINY as STUDY_TINY  # noqa: E402 (the test helpers beside this file)

from symtele.study import generalisation, generalisation_gl, summaries
from symtele.study.claims import check_claims
from symtele.study.claims.generalisation import STEM
from symtele.study.claims.generalisation_gl import ROWS
from symtele.study.settings import GENERALISATION_ARMS

TINY = STUDY_TINY.replace(gl_steps=3)  # the rescalings' tiny runs, and the GL arms'


@pytest.fixture(scope="module")
def runs():
    return generalisation.teleport_runs("mnist-5k", 0, TINY), generalisation_gl.gl_teleport_runs("mnist-5k", 0, TINY)


def test_gl_runs_continue_the_same_run_and_keep_the_batch_loss(runs):
    plain, gl = runs
    none = plain[0]
    assert [r["arm"] for r in gl] == list(GENERALISATION_ARMS)
    at = TINY.teleport_epoch + 1
    for r in gl:
        assert (r["experiment"], r["group"], r["method"]) == ("teleport-gl", "gl-data", f"sgd+gl-{r['arm']}")
        assert r["loss"][:at] == none["loss"][:at] and r["test_loss"][:at] == none["test_loss"][:at]
        (t,) = r["teleports"]
        assert (t["layer"], t["width"]) == (0, TINY.hidden[0])
        assert t["loss_change"] < 1e-5
        if t["steps_taken"]:
            assert abs(t["held_out_loss_change"]) > 1e-5  # measured: the action changes the loss off its batch
            assert t["validation_loss_after"] != t["validation_loss_before"]
        # the objective on the chapter's batch before the teleport is the one the rescalings' teleport starts from
        rescaled = next(p for p in plain if p["arm"] == r["arm"])["teleports"][0]
        assert t["chapter_objective_before"] == pytest.approx(rescaled["objective_before"], rel=1e-5)
    assert json.loads(json.dumps(gl)) == gl


def test_gl_runs_are_deterministic(runs):
    again = generalisation_gl.gl_teleport_runs("mnist-5k", 0, TINY)

    def numbers(r):
        return {k: v for k, v in r.items() if k not in ("time_s", "teleports")} | {
            "teleports": [{k: v for k, v in t.items() if k != "cost_s"} for t in r["teleports"]]
        }

    assert [numbers(r) for r in again] == [numbers(r) for r in runs[1]]


def test_the_table_puts_both_groups_side_by_side(runs):
    plain, gl = runs
    with pytest.raises(LookupError, match="one seed"):  # one seed: the claims have no interval
        ROWS[0][3]({STEM: {"parameters": {}, "records": plain + gl}})
    rows = summaries.gl_table(plain, gl)
    assert [(row["arm"], row["group"]) for row in rows] == [
        (arm, group) for arm in GENERALISATION_ARMS for group in ("rescale", "gl-data")
    ]
    for row in rows:
        runs_of = [r for r in (plain if row["group"] == "rescale" else gl) if r["arm"] == row["arm"]]
        (t,) = runs_of[0]["teleports"]
        if row["group"] == "rescale":
            assert row["held_out_loss_change"] is None and row["objective_ratio"] == [
                t["objective_after"] / t["objective_before"]
            ]
        else:
            assert row["objective_ratio"] == [t["chapter_objective_after"] / t["chapter_objective_before"]]
            assert row["held_out_loss_change"] == pytest.approx([t["held_out_loss_change"]])


def test_gl_runs_refuse_what_they_cannot_act_on():
    with pytest.raises(ValueError, match="digits"):
        generalisation_gl.gl_teleport_runs("digits", 0, TINY)
    with pytest.raises(ValueError, match="Invalid settings.model: 'digits-cnn'"):
        generalisation_gl.gl_teleport_runs("digits", 0, TINY.for_network("cnn"))
    with pytest.raises(ValueError, match="Invalid teleport_batch: 16"):
        generalisation_gl.gl_teleport_runs("mnist-5k", 0, TINY.replace(teleport_batch=16))
    with pytest.raises(ValueError, match="Invalid gl_layer: 2"):
        TINY.replace(gl_layer=2)
    assert generalisation_gl.generalisation_gl_runs(TINY.replace(gl_arms=())) == []
    assert TINY.for_network("cnn").gl_arms == () == TINY.for_network("resnet").gl_arms


def _gl_results(shift, held_out=0.3, ratio=0.5):
    """Synthetic runs on 3 seeds: the rescalings' arms and the GL arms ``shift`` above the run without a teleport."""
    records = []
    for seed in range(3):

        def run(arm, experiment="teleport", teleport=None, seed=seed):
            return {
                "experiment": experiment,
                "problem": "mnist1d",
                "arm": arm,
                "seed": seed,
                "teleport_epoch": 1,
                "teleports": [] if teleport is None else [teleport],
                "loss": [2.0, 1.0, 0.5, 0.4],
                "test_loss": [2.0, 1.0, 1.0 + (0 if arm == "none" else shift + 0.01 * seed), 1.0],
            }

        records.append(run("none"))
        for arm in GENERALISATION_ARMS:
            up = arm.endswith("increase")
            records.append(run(arm, teleport={"objective_before": 1.0, "objective_after": 1.1 if up else 0.9,
                                              "loss_change": 1e-7, "steps_taken": 3}))  # fmt: skip
            gl = {
                "group": "gl-data",
                "objective_before": 1.0,
                "objective_after": 1.0,
                "chapter_objective_before": 1.0,
                "chapter_objective_after": 1 / ratio if up else ratio,
                "loss_change": 1e-7,
                "steps_taken": 3,
                "held_out_loss_before": 1.0,
                "held_out_loss_after": 1.0 + held_out,
                "held_out_loss_change": held_out,
                "validation_loss_before": 1.0,
                "validation_loss_after": 1.0 + held_out,
                "condition": 10.0,
            }
            records.append({**run(arm, "teleport-gl", gl), "group": "gl-data"})
    return {STEM: {"parameters": {}, "records": records}}


def _rows(results):
    ours = {claim for claim, *_ in ROWS}
    return [row for row in check_claims(results) if row["claim"] in ours]


def test_gl_claims_hold_on_runs_that_agree_and_fail_on_runs_that_do_not():
    rows = _rows(_gl_results(-0.1, held_out=0.0, ratio=0.5))
    assert len(rows) == len(ROWS) == 4
    assert [row["holds"] for row in rows] == ["yes"] * 4, rows
    assert "×0.5 against ×0.9" in rows[2]["measured"]
    rows = _rows(_gl_results(+0.1, held_out=0.3, ratio=0.95))
    assert [row["holds"] for row in rows] == ["no"] * 4, rows
    assert "from 0.3 to 0.3" in rows[3]["measured"]
    assert {row["holds"] for row in _rows({STEM: None})} == {"not measured"}


def test_gl_runs_continue_the_runs_generalisation_runs_kept(runs):
    settings = TINY.replace(sam_data="", arms=("curvature-increase",))  # the arms do not change the start
    starts = {}
    generalisation.generalisation_runs(settings, starts=starts)
    assert list(starts) == [generalisation._start_key("mnist-5k", 0, settings)]
    kept = generalisation_gl.generalisation_gl_runs(settings, starts=starts)
    assert not starts  # taken once, then dropped

    def numbers(r):
        return {k: v for k, v in r.items() if k != "time_s"} | {
            "teleports": [{k: v for k, v in t.items() if k != "cost_s"} for t in r["teleports"]]
        }

    assert [numbers(r) for r in kept] == [numbers(r) for r in runs[1]]  # the same as training the start again
