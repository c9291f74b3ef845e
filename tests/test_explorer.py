"""The explorer's logic without a browser.

Changing a control starts a run, the figure data and the summary follow, invalid
combinations get a message, and a newer change supersedes a running one.
"""

import threading
import time

import numpy as np
import pytest

import symtele.explorer.panel as panel
import symtele.explorer.runs as runs
from symtele.explorer import Controls, Explorer, check, run

pytest.importorskip("ipywidgets")


def changed(e: Explorer, **values):
    """Set controls one by one, as a user would, and wait for the resulting run."""
    for name, value in values.items():
        e.controls[name].value = value
    e.wait()


def teleported_loss(e: Explorer) -> np.ndarray:
    return np.asarray(e.plot.lines["loss", "teleported"].get_ydata()).copy()


def test_default_panel_reproduces_the_course_project_result():
    e = Explorer()
    e.wait()
    assert e.log == [(1, "done")]
    assert bytes(e.image.value).startswith(b"\x89PNG")
    # writeup: GD + teleport reaches GD's final mean loss (1.9197) at epoch 49; final 1.1932
    assert "final loss 1.193 (mean of 5 seeds) (no teleport: 1.92)" in e.summary.value
    assert "at epoch 49," in e.summary.value and "(no teleport: epoch 299," in e.summary.value
    assert "1 teleport, total cost" in e.summary.value
    assert e.status.value == f"run and redraw: {e.redraw_s:.2f} s"
    assert len(teleported_loss(e)) == 300


def test_changing_the_teleport_epoch_reruns_and_changes_figure_and_summary():
    e = Explorer(epochs=80)
    e.wait()
    before_loss, before_summary, before_png = teleported_loss(e), e.summary.value, bytes(e.image.value)
    baseline = e.result.baseline
    changed(e, at="30")
    assert [outcome for _, outcome in e.log] == ["done", "done"]
    after = teleported_loss(e)
    np.testing.assert_allclose(after[:31], baseline.loss.mean(1)[:31])  # no teleport before epoch 30
    assert not np.allclose(after, before_loss)
    assert e.summary.value != before_summary and bytes(e.image.value) != before_png
    assert [seg[0][0] for seg in e.plot.marks["loss"].get_segments()] == [30]
    assert e.result.baseline is baseline  # the baseline did not change, so it was reused


def test_every_k_schedule_teleports_on_each_multiple():
    e = Explorer(epochs=60)
    changed(e, schedule="every", every=20, start=5)
    assert e.result.teleported.teleport_epochs == [5, 25, 45]
    assert "3 teleports" in e.summary.value
    assert e.controls["at"].disabled and not e.controls["every"].disabled


def test_group_none_hides_the_teleported_curve():
    e = Explorer(epochs=40)
    changed(e, group="none")
    assert e.result.teleported is None
    assert not e.plot.lines["loss", "teleported"].get_visible()
    assert "no teleport: final loss" in e.summary.value
    assert e.controls["teleport_lr"].disabled


@pytest.mark.parametrize(
    "values, words",
    [
        (dict(group="so2"), "SO(2) acts on the 2-D problems only"),
        (dict(group="gln"), "GL(n) needs a LeakyReLU network"),
        (dict(group="levelset"), "Invalid seeds: 5"),
        (dict(at="300"), "Invalid schedule epoch: 300 (the run has epochs 0..299)"),
        (dict(at="five"), "Invalid teleport epochs: 'five'"),
        (dict(lr=-1.0), "Invalid lr: -1.0"),
        (dict(epochs=0), "Invalid epochs: 0"),
        (dict(problem="quadratic", group="posscale"), "positive scale acts on ReLU networks"),
        (dict(schedule="every", start=400), "Invalid schedule start: 400"),
    ],
)
def test_invalid_combinations_give_a_message(values, words):
    message = check(Controls(**{**vars(Controls()), **values}))
    assert message is not None and words in message


def test_an_invalid_change_shows_the_message_and_runs_nothing():
    e = Explorer(epochs=40)
    e.wait()
    png = bytes(e.image.value)
    e.controls["group"].value = "so2"
    e.wait()
    assert e.log[-1][1] == "invalid"
    assert "SO(2) acts on the 2-D problems only" in e.message.value and e.summary.value == ""
    assert bytes(e.image.value) == png
    changed(e, problem="quadratic")  # now valid: the message goes, the run happens
    assert e.message.value == "" and e.log[-1][1] == "done"
    assert "GD + SO(2)" in e.summary.value


def test_choosing_a_problem_fills_suggested_values_and_draws_the_trajectory():
    e = Explorer(epochs=40)
    changed(e, problem="quadratic", group="so2")
    s = e.settings()
    assert (s.lr, s.epochs, s.at, s.teleport_lr) == (0.08, 10, "4", 1e-3)
    assert e.result.teleported.path.shape == (12, 5, 2)  # 10 epochs, the teleported point, the end point
    assert len(e.plot.ax_path.lines) == 5 + 5 + 1  # baseline and teleported run per seed, the minimum
    # writeup, quadratic: the SO(2) teleport at epoch 4 reaches 0.004328 after 10 epochs
    assert np.allclose(e.result.teleported.loss[-1], 0.004328, rtol=1e-3)


def test_level_set_on_one_copy_and_digits_run():
    e = Explorer(problem="rosenbrock", group="levelset", seeds=1, epochs=20, at="5")
    e.wait()
    assert e.log[-1][1] == "done" and e.result.teleported.teleport_epochs == [5]
    e = Explorer(problem="digits", optimizer="gd", seeds=2, epochs=3, at="1")
    e.wait()
    assert e.log[-1][1] == "done" and e.result.baseline.loss.shape == (3, 2)  # the seeds run one by one
    assert e.result.teleported.label == "GD + positive scale"


def test_run_stops_when_asked_and_reports_progress():
    seen = []
    polls = iter(range(1000))
    result = run(Controls(epochs=50_000), should_stop=lambda: next(polls) >= 10, progress=seen.append)
    assert result is None
    assert len(seen) == 11 and seen[-1] == pytest.approx(11 / 100_000)


def test_a_newer_change_supersedes_a_running_one(monkeypatch):
    epochs_done = {}

    def counting_train(*args, should_stop, **kwargs):
        name = threading.current_thread().name
        epochs_done[name] = 0

        def poll():
            epochs_done[name] += 1
            return should_stop()

        return real_train(*args, should_stop=poll, **kwargs)

    real_train = runs.train
    monkeypatch.setattr(runs, "train", counting_train)
    e = Explorer(epochs=100_000)
    deadline = time.monotonic() + 120  # a guard against hanging, not a timing assertion
    while not epochs_done and time.monotonic() < deadline:  # wait until the first run is under way
        time.sleep(0.01)
    changed(e, epochs=50)
    assert [outcome for _, outcome in e.log] == ["superseded", "done"]
    assert e.result.settings.epochs == 50
    assert epochs_done["explorer-run-1"] < 100_000  # stopped early, not run to the end
    assert len(teleported_loss(e)) == 50


def test_a_failing_run_shows_a_message_not_a_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(panel, "run", broken)
    e = Explorer(epochs=10)
    e.wait()
    assert e.log == [(1, "failed")]
    assert "the run failed: RuntimeError: out of memory" in e.message.value


def test_bad_construction_arguments_name_themselves():
    with pytest.raises(TypeError, match="Invalid setting: 'colour'"):
        Explorer(colour="red")
    with pytest.raises(ValueError, match="Invalid problem: 'cubic'"):
        Explorer(problem="cubic")
    e = Explorer(epochs=10)
    with pytest.raises(ValueError, match="Invalid control: 'speed'"):
        e.set(speed=2)
    e.wait()
