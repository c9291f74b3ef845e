"""Positive-scale teleport: invariance, ascent, and agreement with double backpropagation."""

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as hs
from torch import nn

import symtele as st
from symtele.study.experiments import course_regression_task
from symtele.study.settings import SEEDS
from symtele.teleports.positive_scale import positive_scale_teleport
from symtele.teleports.positive_scale_reference import positive_scale_teleport_reference

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
        positive_scale_teleport(params, grads, objective.chains, objective.loss, loss_before=loss, **options),
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
    closed, _, _, record = positive_scale_teleport(
        params, grads, objective.chains, objective.loss, lr=lr, steps=10, clamp=clamp, loss_before=loss
    )
    # an unclipped step may leave the group, and the reference has no such guard
    assume(record.steps_taken == 10)
    reference = positive_scale_teleport_reference(
        params, objective.chains, objective.loss, lr=lr, steps=10, clamp=clamp
    )
    for a, b in zip(closed, reference):
        assert (a - b).abs().max().item() <= 1e-10 * max(b.abs().max().item(), 1e-300)


def test_regression_closed_form_equals_reference_and_raises_gradient():
    objective, weights = course_regression_task(SEEDS, dtype=torch.float64)
    loss, grads = objective.loss_and_grad(weights)
    closed, _, new_loss, record = positive_scale_teleport(
        weights, grads, objective.chains, objective.loss, loss_before=loss
    )
    reference = positive_scale_teleport_reference(weights, objective.chains, objective.loss)
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
        weights, grads, objective.chains, objective.loss, lr=1.0, steps=10, clamp=None, loss_before=loss
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
        weights, grads, objective.chains, not_invariant, loss_before=loss
    )
    assert record.stopped is not None and "walked back" in record.stopped
    assert record.steps_taken == 0
    assert new_loss.item() == loss.item()
    assert all(torch.equal(a, b) for a, b in zip(new, weights))
