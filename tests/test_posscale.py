"""Positive-scale teleport: invariance, ascent, agreement with double backpropagation, and its symmetries."""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as hs
from torch import nn

import symtele as st
from symtele.regression import weight_chain_symmetry
from symtele.study.experiments import course_regression_task
from symtele.study.settings import DIGITS, REGRESSION, SEEDS
from symtele.tasks import digits_cnn_task
from symtele.teleports.discovery import discover
from symtele.teleports.positive_scale import PositiveScaleReference, positive_scale_teleport
from symtele.teleports.rescale import reference_teleport
from symtele.teleports.symmetry import Group, Symmetry, Term

LOSSES = {
    "mse": nn.functional.mse_loss,
    "l1": nn.functional.l1_loss,
    "smooth_l1": nn.functional.smooth_l1_loss,
    "sum_cubed": lambda out, target: ((out - target) ** 2).sum() + 0.1 * (out**3).mean(),
    "cross_entropy": None,  # needs class targets; built below
}


@hs.composite
def networks(draw, dtype=torch.float64):
    """A random Sequential of Linear and ReLU/LeakyReLU layers, data and a loss."""
    depth = draw(hs.integers(2, 5))
    widths = draw(hs.lists(hs.integers(1, 64), min_size=depth + 1, max_size=depth + 1))
    bias = draw(hs.booleans())
    slope = draw(hs.sampled_from([0.0, 0.01, 0.1, 0.5]))
    loss_name = draw(hs.sampled_from(sorted(LOSSES)))
    seed = draw(hs.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = []
    for i in range(depth):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < depth - 1:
            layers.append(nn.ReLU() if slope == 0 else nn.LeakyReLU(slope))
    model = nn.Sequential(*layers).to(dtype)
    batch = draw(hs.integers(1, 16))
    x = torch.randn(batch, widths[0], generator=gen, dtype=dtype)
    if loss_name == "cross_entropy":
        y = torch.randint(0, widths[-1], (batch,), generator=gen)
        loss_fn = nn.functional.cross_entropy
    else:
        y = torch.randn(batch, widths[-1], generator=gen, dtype=dtype)
        loss_fn = LOSSES[loss_name]
    return st.ModuleObjective(model, loss_fn, x, y)


def _teleport(objective, **options):
    params = objective.initial_params()
    loss, grads = objective.loss_and_grad(params)
    return (
        params,
        loss,
        grads,
        positive_scale_teleport(
            params, grads, objective.symmetry(), objective.loss, names=objective.names, loss_before=loss, **options
        ),
    )


@given(networks(torch.float64))
def test_loss_invariant_float64_and_gradient_norm_rises(objective):
    params, loss, grads, (new_params, new_grads, new_loss, record) = _teleport(objective)
    fresh_loss, fresh_grads = objective.loss_and_grad(new_params)
    assert abs(fresh_loss.item() - loss.item()) <= 1e-10 * max(abs(loss.item()), 1e-300)
    # the equivariant gradient is the gradient at the teleported point
    for g_closed, g_fresh in zip(new_grads, fresh_grads):
        assert torch.allclose(g_closed, g_fresh, rtol=1e-8, atol=1e-12 * (1 + g_fresh.abs().max().item()))
    # ascent on a function convex in log-scales never lowers ‖∇L‖²
    assert record.grad_norm_sq_after >= record.grad_norm_sq_before * (1 - 1e-12)
    assert record.stopped is None and record.steps_taken == 10


@given(networks(torch.float32))
def test_loss_invariant_float32(objective):
    params, loss, grads, (new_params, _, _, record) = _teleport(objective)
    fresh = objective.loss(new_params).item()
    assert abs(fresh - loss.item()) <= 1e-5 * max(abs(loss.item()), 1e-30)
    assert all(torch.isfinite(p).all() for p in new_params)


@settings(max_examples=20)
@given(networks(torch.float64), hs.sampled_from([1e-4, 1e-3, 1e-2]), hs.sampled_from([0.1, 0.5, None]))
def test_closed_form_equals_double_backprop(objective, lr, clamp):
    params = objective.initial_params()
    loss, grads = objective.loss_and_grad(params)
    closed, _, _, record = st.PositiveScale(lr=lr, steps=10, clamp=clamp)(objective, params, grads, loss)
    # an unclipped step may leave the group, and the reference has no such guard
    assume(record.steps_taken == 10)
    reference = PositiveScaleReference(lr=lr, steps=10, clamp=clamp).teleported(objective, params)
    for a, b in zip(closed, reference):
        assert (a - b).abs().max().item() <= 1e-10 * max(b.abs().max().item(), 1e-300)


def test_regression_closed_form_equals_reference_and_raises_gradient():
    objective, weights = course_regression_task(SEEDS, dtype=torch.float64)
    loss, grads = objective.loss_and_grad(weights)
    closed, _, new_loss, record = positive_scale_teleport(
        weights, grads, objective.symmetry(weights), objective.loss, loss_before=loss
    )
    reference = PositiveScaleReference().teleported(objective, weights)
    for a, b in zip(closed, reference):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
    assert torch.allclose(new_loss, loss, rtol=1e-12, atol=0)
    assert all(after > 1.5 * before for after, before in zip(record.grad_norm_sq_after, record.grad_norm_sq_before))


def test_teleport_sequential_writes_back_and_keeps_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 2)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    before_params = [p.detach().clone() for p in model.parameters()]
    before_out = model(x).detach()
    record = st.teleport_sequential(model, nn.functional.mse_loss, x, y, lr=1e-2, steps=5)
    assert record.steps_taken == 5
    assert any(not torch.equal(a, b) for a, b in zip(before_params, model.parameters()))
    assert torch.allclose(model(x), before_out, rtol=1e-12, atol=1e-12)
    assert record.grad_norm_sq_after > record.grad_norm_sq_before


def test_unclipped_step_leaving_the_group_is_rejected():
    objective, weights = course_regression_task(SEEDS)
    loss, grads = objective.loss_and_grad(weights)
    new, _, new_loss, record = positive_scale_teleport(
        weights, grads, objective.symmetry(weights), objective.loss, lr=1.0, steps=10, clamp=None, loss_before=loss
    )
    assert record.stopped is not None and "rejected" in record.stopped
    assert all(torch.isfinite(p).all() for p in new)
    assert torch.allclose(new_loss, loss, rtol=1e-5)


def test_a_step_that_breaks_the_loss_is_walked_back():
    objective, weights = course_regression_task(0, dtype=torch.float64)
    loss, grads = objective.loss_and_grad(weights)

    def not_invariant(ws):  # weight decay is not invariant under rescaling
        return objective.loss(ws) + 1e-3 * sum(w.square().sum() for w in ws)

    loss = not_invariant(weights)
    new, _, new_loss, record = positive_scale_teleport(
        weights, grads, objective.symmetry(weights), not_invariant, loss_before=loss
    )
    assert record.stopped is not None and "walked back" in record.stopped
    assert record.steps_taken == 0
    assert new_loss.item() == loss.item()
    assert all(torch.equal(a, b) for a, b in zip(new, weights))


def test_the_weight_chain_symmetry_is_what_discovery_finds_in_the_same_network():
    widths = (5, 6, 7, 8)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False), nn.ReLU(), nn.Linear(6, 7, bias=False), nn.ReLU(), nn.Linear(7, 8, bias=False)
    )
    found = discover(model, torch.randn(4, 5))
    stated = weight_chain_symmetry(widths[1:-1])
    assert stated.n_scales == found.n_scales == 13
    as_found = [(f"{2 * int(t.param)}.weight", t.units.tolist(), t.sign) for t in stated.terms]
    assert sorted(as_found) == sorted((t.param, t.units.tolist(), t.sign) for t in found.terms)
    assert [g.size for g in stated.groups] == [g.size for g in found.groups]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("optimizer", ["gd", "adagrad"])
def test_the_report_regression_teleport_is_the_double_backprop_one(optimizer, dtype):
    # the report's teleport (all seeds batched, the writeup's lr, steps, clamp) against double backpropagation
    # in float64 from the same starting weights, one seed at a time
    teleport = st.PositiveScale(REGRESSION.teleport_lr(optimizer), REGRESSION.teleport_steps, REGRESSION.clamp)
    objective, weights = course_regression_task(SEEDS, dtype=dtype)
    loss, grads = objective.loss_and_grad(weights)
    closed, _, new_loss, record = teleport(objective, weights, grads, loss)
    assert record.steps_taken == REGRESSION.teleport_steps and record.stopped is None
    reference = PositiveScaleReference(teleport.lr, teleport.steps, teleport.clamp)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for i, seed in enumerate(SEEDS):
        one, start = course_regression_task(seed, dtype=torch.float64)
        assert all(torch.equal(w[i].double(), s) for w, s in zip(weights, start))
        for a, b in zip(closed, reference.teleported(one, start)):
            assert (a[i].double() - b).abs().max().item() <= tol * b.abs().max().item()


def test_the_report_digits_mlp_teleport_is_the_double_backprop_one():
    # 04's network and teleport settings through discover, against double backpropagation
    objective, params, _ = st.digits_mlp(DIGITS.seeds[0], hidden=tuple(DIGITS.hidden), dtype=torch.float64)
    loss, grads = objective.loss_and_grad(params)
    teleport = st.PositiveScale(lr=DIGITS.teleport_lr, steps=DIGITS.teleport_steps, clamp=DIGITS.clamp)
    closed, _, _, record = teleport(objective, params, grads, loss)
    assert record.steps_taken == DIGITS.teleport_steps
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    reference = PositiveScaleReference(teleport.lr, teleport.steps, teleport.clamp).teleported(objective, params)
    for a, b in zip(closed, reference):
        assert (a - b).abs().max().item() <= 1e-10 * b.abs().max().item()


def test_a_cnn_teleport_is_the_double_backprop_one():
    # convolutions (3×3 kernels summed once) and a Flatten whose reader repeats each channel's scale
    full, params, _ = digits_cnn_task(0, dtype=torch.float64)
    objective = st.ModuleObjective(full.model, full.loss_fn, full.inputs[:32], full.targets[:32])
    loss, grads = objective.loss_and_grad(params)
    teleport = st.PositiveScale(lr=1e-1, steps=10, clamp=0.1)
    closed, _, _, record = teleport(objective, params, grads, loss)
    assert record.steps_taken == 10 and record.grad_norm_sq_after > record.grad_norm_sq_before
    reference = PositiveScaleReference(teleport.lr, teleport.steps, teleport.clamp).teleported(objective, params)
    moved = 0.0
    for a, b, p in zip(closed, reference, params):
        assert (a - b).abs().max().item() <= 1e-10 * b.abs().max().item()
        moved = max(moved, (a - p).abs().max().item() / p.abs().max().item())
    assert moved > 1e-3  # the scales moved, so the comparison says something


def test_units_that_no_scale_acts_on_stay_and_the_rest_match_double_backprop():
    # a symmetry that rescales only the first three of W1's six hidden units (index 3 = "no scale"), and
    # reads them in W2's columns out of order: the closed form's gather path, against double backpropagation
    objective, weights = course_regression_task(0, dtype=torch.float64)
    units = torch.tensor([2, 3, 0, 3, 1, 3])
    symmetry = Symmetry(3, [Term("0", units[:, None], -1), Term("1", units[None, :], 1)], [Group(3, ("0",), ("1",))])
    loss, grads = objective.loss_and_grad(weights)
    teleport = st.PositiveScale(lr=1e-2, steps=10, clamp=0.1)
    closed, _, _, record = positive_scale_teleport(
        weights, grads, symmetry, objective.loss, loss_before=loss, lr=1e-2, steps=10, clamp=0.1
    )
    assert record.steps_taken == 10
    assert torch.equal(closed[0][units == 3], weights[0][units == 3])
    assert torch.equal(closed[1][:, units == 3], weights[1][:, units == 3])
    assert torch.equal(closed[2], weights[2])
    reference = reference_teleport(
        lambda p: objective.loss([p[n] for n in objective.names]),
        dict(zip(objective.names, weights)),
        symmetry,
        teleport.log_step,
        teleport.steps,
    )
    for a, n in zip(closed, objective.names):
        assert (a - reference[n]).abs().max().item() <= 1e-10 * reference[n].abs().max().item()
    assert not torch.equal(closed[0], weights[0])
