"""Bad input is refused with an error naming the argument, before any compute;
teleports never hand back non-finite parameters."""

import math

import pytest
import torch
from torch import nn

import symtele as st
from symtele.study.experiments import course_regression_task
from symtele.study.settings import QUADRATIC_START


@pytest.fixture
def regression():
    return course_regression_task(0)


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), float("inf")])
def test_train_rejects_bad_learning_rates(regression, lr):
    objective, weights = regression
    with pytest.raises(ValueError, match=r"Invalid lr: .*"):
        st.train(objective, weights, lr=lr, epochs=3)


def test_train_rejects_non_numeric_learning_rate(regression):
    objective, weights = regression
    with pytest.raises(TypeError, match=r"Invalid lr: '0.1'"):
        st.train(objective, weights, lr="0.1", epochs=3)


@pytest.mark.parametrize(
    "teleport_cls,kwargs,name",
    [
        (st.PositiveScale, {"lr": 0}, "lr"),
        (st.PositiveScale, {"lr": -1}, "lr"),
        (st.PositiveScale, {"clamp": 0}, "clamp"),
        (st.PositiveScale, {"steps": -1}, "steps"),
        (st.SO2, {"lr": -1e-3}, "lr"),
        (st.GLn, {"lr": 0.0}, "lr"),
        (st.LevelSet, {"rho": 0}, "rho"),
        (st.LevelSet, {"line_search_steps": 0}, "line_search_steps"),
    ],
)
def test_teleports_reject_bad_settings(teleport_cls, kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"Invalid {name}: {value}"):
        teleport_cls(**kwargs)


@pytest.mark.parametrize("epoch", [10, 11, 500])
def test_schedule_epochs_outside_the_run(regression, epoch):
    objective, weights = regression
    with pytest.raises(ValueError, match=rf"Invalid schedule epoch: {epoch}"):
        st.train(objective, weights, lr=1e-4, epochs=10, teleport=st.PositiveScale(), schedule=[2, epoch])


def test_schedule_negative_epoch():
    with pytest.raises(ValueError, match=r"Invalid schedule epoch: -1"):
        st.Schedule.at([-1])


def test_teleport_without_schedule_is_refused(regression):
    objective, weights = regression
    with pytest.raises(ValueError, match=r"Invalid schedule: None"):
        st.train(objective, weights, lr=1e-4, epochs=10, teleport=st.PositiveScale())


@pytest.mark.parametrize("dims", [[4, 5], [4, 0, 6], [4, 5.5, 6], "456"])
def test_bad_dims(dims):
    with pytest.raises(ValueError, match=r"Invalid dims"):
        course_regression_task(0, dims=dims)


def test_weights_that_do_not_match_the_dims(regression):
    objective, weights = regression
    wrong = [weights[0], weights[1].T.contiguous(), weights[2]]
    with pytest.raises(ValueError, match=r"Invalid weights\[1\]: shape \(6, 7\)"):
        st.train(objective, wrong, lr=1e-4, epochs=3)


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"1 \(Tanh\), which no positive scale passes"):
        st.teleport_sequential(model, nn.functional.mse_loss, x, y)
    objective = st.ModuleObjective(model, nn.functional.mse_loss, x, y)
    with pytest.raises(ValueError, match=r"1 \(Tanh\)"):
        st.train(objective, objective.initial_params(), lr=0.1, epochs=3, teleport=st.PositiveScale(), schedule=1)


def test_so2_on_an_mlp_is_refused(regression):
    objective, weights = regression
    with pytest.raises(TypeError, match=r"Invalid teleport: SO\(2\)"):
        st.train(objective, weights, lr=1e-4, epochs=3, teleport=st.SO2(), schedule=1)


def test_gln_needs_leaky_relu(regression):
    objective, weights = regression
    with pytest.raises(ValueError, match=r"negative_slope"):
        st.train(objective, weights, lr=1e-4, epochs=3, teleport=st.GLn(), schedule=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters_are_refused(regression, bad):
    objective, weights = regression
    broken = [w.clone() for w in weights]
    broken[2][0, 0] = bad
    with pytest.raises(ValueError, match=r"Invalid params\[2\]: contains 1 non-finite"):
        st.train(objective, broken, lr=1e-4, epochs=3)
    with pytest.raises(ValueError, match=r"Invalid params\[2\]"):
        _, grads = objective.loss_and_grad(weights)
        st.positive_scale_teleport(broken, grads, objective.symmetry(weights), objective.loss)


def test_non_finite_data_is_refused():
    with pytest.raises(ValueError, match=r"Invalid X: contains"):
        st.MLPRegression(torch.full((3, 2), math.nan), torch.zeros(1, 2), n_layers=2)


def test_unknown_names():
    with pytest.raises(ValueError, match=r"Invalid optimizer: 'sgdd'"):
        st.train(st.QUADRATIC, [torch.tensor(QUADRATIC_START, dtype=torch.float64)], optimizer="sgdd", lr=0.1, epochs=2)
    with pytest.raises(ValueError, match=r"Invalid problem: 'himmelblau'"):
        st.get_problem("himmelblau")
    with pytest.raises(ValueError, match=r"Invalid state: 'clear'"):
        st.train(st.QUADRATIC, [torch.tensor(QUADRATIC_START, dtype=torch.float64)], lr=0.1, epochs=2, state="clear")


def test_errors_come_before_any_compute(regression, monkeypatch):
    objective, weights = regression
    calls = []
    monkeypatch.setattr(objective, "loss_and_grad", lambda p: calls.append(1))
    with pytest.raises(ValueError):
        st.train(objective, weights, lr=1e-4, epochs=10, teleport=st.PositiveScale(), schedule=[20])
    assert calls == []


def test_so2_step_that_overflows_is_rejected():
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    new, record = st.so2_teleport(st.QUADRATIC, w, lr=1e308, steps=5, angle=0.3)
    assert torch.isfinite(new).all()
    assert record.stopped is not None and "rejected" in record.stopped
    assert record.loss_after == pytest.approx(record.loss_before, rel=1e-12)


def test_gln_step_that_overflows_is_rejected():
    objective, weights = course_regression_task(0, negative_slope=0.1)
    new, grads, loss, record = st.gln_teleport(objective, weights, lr=1e30, steps=3)
    assert all(torch.isfinite(w).all() for w in new)
    assert record.stopped is not None and "non-finite" in record.stopped
