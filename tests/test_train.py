"""The training loop: histories, schedules, optimisers and their state at a teleport."""

import math

import pytest
import torch

import symtele as st
from symtele.optimizers import Optimizer
from symtele.study.experiments import course_regression_task
from symtele.study.settings import QUADRATIC_START, ROSENBROCK_TEXTBOOK_START, SEEDS


def test_history_records_loss_gradient_time_and_teleports():
    objective, weights = course_regression_task(SEEDS)
    history = st.train(
        objective, weights, lr=1e-4, epochs=20, teleport=st.PositiveScale(), schedule=st.Schedule.every_k(8, start=2)
    )
    assert history.method == "gd+posscale"
    assert len(history.loss) == len(history.grad_norm_sq) == len(history.time_s) == 20
    assert all(len(row) == 5 for row in history.loss)
    assert history.time_s == sorted(history.time_s)
    assert history.teleport_epochs == [2, 10, 18]
    for record in history.teleports:
        assert record.cost_s > 0
        assert record.loss_after == pytest.approx(record.loss_before, rel=1e-4)
        assert all(a > b for a, b in zip(record.grad_norm_sq_after, record.grad_norm_sq_before))
        assert [row for row in history.grad_norm_sq[record.epoch]] == pytest.approx(record.grad_norm_sq_after)
    per_seed = history.split()
    assert len(per_seed) == 5 and per_seed[3].loss == [row[3] for row in history.loss]
    assert per_seed[3].teleports[0].loss_before == history.teleports[0].loss_before[3]


def test_never_schedule_means_plain_training():
    objective, weights = course_regression_task(0)
    a = st.train(objective, weights, lr=1e-4, epochs=10)
    b = st.train(objective, weights, lr=1e-4, epochs=10, teleport=st.PositiveScale(), schedule=st.Schedule.never())
    assert a.loss == b.loss and b.method == "gd" and b.teleports == []


@pytest.mark.parametrize(
    "optimizer,lr",
    [("sgd", 0.5), ("momentum", 0.05), ("rmsprop", 1e-3), ("adam", 1e-2), ("adagrad-torch", 0.1), ("adagrad", 0.1)],
)
def test_optimizers_decrease_the_digits_loss(optimizer, lr):
    objective, params, data = st.digits_mlp(0, hidden=(16,))
    history = st.train(
        objective, params, optimizer=optimizer, lr=lr, epochs=30, teleport=st.PositiveScale(lr=1e-2), schedule=5
    )
    assert history.method == f"{optimizer}+posscale"
    assert history.loss[-1] < 0.6 * history.loss[0]
    assert 0.6 < st.accuracy(objective, history.final_params, data.x_test, data.y_test) <= 1.0


def test_state_reset_changes_the_run_for_stateful_optimizers():
    objective, params, _ = st.digits_mlp(0, hidden=(16,))
    options = dict(optimizer="adam", lr=1e-2, epochs=15, teleport=st.PositiveScale(lr=1e-2), schedule=5)
    kept = st.train(objective, params, state="keep", **options)
    reset = st.train(objective, params, state="reset", **options)
    assert kept.loss[:6] == reset.loss[:6]
    assert kept.loss[6:] != reset.loss[6:]


def test_armijo_line_search_satisfies_its_condition():
    history = st.train(
        st.ROSENBROCK,
        [torch.tensor(ROSENBROCK_TEXTBOOK_START, dtype=torch.float64)],
        optimizer="gd-ls",
        lr=1.0,
        epochs=50,
    )
    for k in range(49):
        eta, loss, gsq = history.step_size[k], history.loss[k], history.grad_norm_sq[k]
        assert history.loss[k + 1] <= loss - eta / 2 * gsq + 1e-12
        assert 0 < eta <= 1.0


def test_single_problem_line_search_matches_a_batch_of_one():
    start = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    single = st.train(st.ROSENBROCK, [start.clone()], optimizer="gd-ls", lr=1.0, epochs=30)
    batch = st.train(st.ROSENBROCK, [start.clone()[None]], optimizer="gd-ls", lr=1.0, epochs=30)
    assert single.step_size == [steps[0] for steps in batch.step_size]
    assert single.loss == [row[0] for row in batch.loss]


@pytest.mark.parametrize("dtype,start,lr", [(torch.float32, (-1.0, -1.0), 1.0), (torch.float64, (-1.2, 1.0), 0.3)])
@pytest.mark.parametrize("trials", [2, 16, 64])
def test_armijo_steps_tried_in_batches_are_the_sequential_search_bit_for_bit(dtype, start, lr, trials):
    def sequential(params, grads, loss):
        return Optimizer("gd-ls", lr, max_halvings=12)._armijo(params, grads, loss, st.ROSENBROCK.loss)

    w = [torch.tensor(start, dtype=dtype)]
    batched = Optimizer("gd-ls", lr, max_halvings=12, trials=trials)
    halved = 0
    for _ in range(300):
        loss, grads = st.ROSENBROCK.loss_and_grad(w)
        alone, eta = sequential(w, grads, loss)
        together, eta_batched = batched.step(w, grads, loss, st.ROSENBROCK.loss)
        assert eta_batched == eta and torch.equal(together[0], alone[0])
        halved = max(halved, round(math.log2(lr / eta)))
        w = together
    assert halved >= 8  # the search went past the first batch of trials for the smaller batches
    # a search that never passes ends where the sequential one does, after max_halvings + 1 trials
    flat = Optimizer("gd-ls", lr, max_halvings=3, trials=trials)
    never = lambda params: params[0].sum(-1) * 0 + 1e9  # noqa: E731
    loss = torch.tensor(0.0, dtype=dtype)
    (point,), eta = flat.step(w, grads, loss, never)
    assert eta == lr / 16 and torch.equal(point, w[0] - lr / 16 * grads[0])


def test_2d_problems_take_batches_and_train_uses_them():
    assert st.ROSENBROCK.takes_batches and not st.Objective.takes_batches
    start = [torch.tensor((-1.0, -1.0))]
    history = st.train(st.ROSENBROCK, start, optimizer="gd-ls", lr=1.0, epochs=40)
    w, steps = start, []
    for _ in range(40):
        loss, grads = st.ROSENBROCK.loss_and_grad(w)
        w, eta = Optimizer("gd-ls", 1.0)._armijo(w, grads, loss, st.ROSENBROCK.loss)
        steps.append(eta)
    assert history.step_size == steps and torch.equal(history.final_params[0], w[0])


def test_batched_line_search_picks_a_step_per_copy():
    w = torch.tensor([[-1.2, 1.0], [0.5, 0.5]], dtype=torch.float64)
    history = st.train(st.ROSENBROCK, [w], optimizer="gd-ls", lr=1.0, epochs=5)
    for i in range(2):
        alone = st.train(st.ROSENBROCK, [w[i].clone()], optimizer="gd-ls", lr=1.0, epochs=5)
        assert [steps[i] for steps in history.step_size] == alone.step_size
        assert [row[i] for row in history.loss] == alone.loss
    assert history.step_size[0][0] != history.step_size[0][1]


def test_should_stop_ends_the_run_early():
    ticks = []
    history = st.train(
        st.QUADRATIC,
        [torch.tensor(QUADRATIC_START, dtype=torch.float64)],
        lr=0.01,
        epochs=100,
        should_stop=lambda: ticks.append(1) or len(ticks) >= 7,
    )
    assert len(history.loss) == 7


def test_runs_are_deterministic():
    objective, weights = course_regression_task(SEEDS)
    a = st.train(
        objective, weights, optimizer="adagrad", lr=0.1, epochs=30, teleport=st.PositiveScale(lr=1e-5), schedule=5
    )
    b = st.train(
        objective, weights, optimizer="adagrad", lr=0.1, epochs=30, teleport=st.PositiveScale(lr=1e-5), schedule=5
    )
    assert a.loss == b.loss and a.grad_norm_sq == b.grad_norm_sq


def test_gln_teleport_records_how_much_the_loss_changed():
    objective, weights = course_regression_task(SEEDS, negative_slope=0.1)
    history = st.train(objective, weights, lr=1e-4, epochs=10, teleport=st.GLn(), schedule=5)
    (record,) = history.teleports
    assert history.method == "gd+gln" and record.steps_taken == 8
    assert record.loss_change == pytest.approx([a - b for a, b in zip(record.loss_after, record.loss_before)])
    assert max(abs(c) for c in record.loss_change) > 1e-3  # GL(n) on this task does not keep the loss
    assert history.loss[5] == pytest.approx(record.loss_after)


def test_digits_are_scikit_learns():
    from sklearn.datasets import load_digits

    from symtele.tasks import _digits_arrays

    x, y = _digits_arrays()
    expected_x, expected_y = load_digits(return_X_y=True)
    assert (x == expected_x).all() and (y == expected_y).all()


def test_a_linear_sequential_objective_computes_what_functional_call_computes():
    from torch import nn

    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    plain = nn.Sequential(
        nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 3, bias=False), nn.LeakyReLU(0.1), nn.Linear(3, 1)
    )
    normed = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 1))
    for model, layer_by_layer in ((plain.double(), True), (normed.double(), False)):
        objective = st.ModuleObjective(model, nn.functional.mse_loss, x, y)
        assert (objective.layers is not None) == layer_by_layer
        params = [p.detach() + 0.1 * torch.randn_like(p) for p in model.parameters()]
        reference = torch.func.functional_call(model, dict(zip(objective.names, params)), (x,))
        assert torch.equal(objective.output(params), reference)
        loss, grads = objective.loss_and_grad(params)
        assert torch.equal(loss, nn.functional.mse_loss(reference, y))
