"""The generalisation objectives along positive rescalings, their teleport, and the offline data of their experiments.

Each objective's value and gradient in the log-scales is checked against an independent computation in float64:
sharpness against forward-mode differentiation of a loop over the perturbed points, curvature against the orbit's
derivatives by nested forward-mode differentiation of the group action, the Hessian trace against the exact
Hessian at the moved point.
"""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from symtele.models import leaky_mlp
from symtele.tasks import digits_mlp
from symtele.tasks_generalisation import mnist1d, mnist_5k
from symtele.teleports import generalisation
from symtele.teleports.discovery import discover
from symtele.teleports.generalisation import (
    Curvature,
    HessianTrace,
    Sharpness,
    act,
    hessian_diagonal,
    module_loss,
    teleport_objective,
)


def _tiny(seed: int = 0):
    """A float64 LeakyReLU MLP with biases, 24 samples of 5 features, 3 classes; its loss, symmetry and batch."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 4), nn.LeakyReLU(0.1), nn.Linear(4, 3), nn.LeakyReLU(0.1), nn.Linear(3, 3)
    ).double()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(24, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=gen)
    params = {n: p.detach() for n, p in model.named_parameters()}
    symmetry = discover(model, x)
    assert symmetry.n_scales == 7
    return model, module_loss(model, F.cross_entropy, x, y), params, symmetry, (x, y)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return bool((a - b).abs().max() <= rtol * b.abs().max())


def _random_s(symmetry, seed: int = 3) -> torch.Tensor:
    return 0.5 * torch.randn(symmetry.n_scales, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sharpness_value_and_gradient_match_forward_mode(adaptive):
    _, loss_of, params, symmetry, _ = _tiny()
    sharp = Sharpness(loss_of, params, symmetry, directions=6, t_range=(0.2, 1.5), t_count=3, adaptive=adaptive)
    s = _random_s(symmetry)

    def reference(s):
        moved = act(symmetry, s, params)
        losses = []
        for k in range(6):
            for t in sharp._t:
                point = {n: p + t * sharp._d[n][k] * (p.abs() if adaptive else 1) for n, p in moved.items()}
                losses.append(loss_of(point))
        return torch.stack(losses).mean()

    value, slope = sharp.value_and_slope(s)
    assert _close(value, reference(s), 1e-12)
    forward = torch.func.jacfwd(reference)(s)
    if adaptive:  # invariant: its gradient in the scales is rounding
        assert slope.abs().max() < 1e-12 and forward.abs().max() < 1e-12
    else:
        assert forward.abs().max() > 1e-3
        assert _close(slope, forward, 1e-8)


def test_adaptive_sharpness_is_invariant_and_plain_sharpness_is_not():
    _, loss_of, params, symmetry, _ = _tiny()
    s = 2 * _random_s(symmetry)
    zero = torch.zeros_like(s)
    adaptive = Sharpness(loss_of, params, symmetry, directions=10, t_count=4, adaptive=True)
    plain = Sharpness(loss_of, params, symmetry, directions=10, t_count=4)
    a0, a1 = adaptive.value(zero), adaptive.value(s)
    p0, p1 = plain.value(zero), plain.value(s)
    assert abs(float(a1 - a0)) <= 1e-10 * abs(float(a0))
    assert abs(float(p1 - p0)) > 1e-2 * abs(float(p0))


def test_sharpness_directions_are_unit_and_seeded():
    _, loss_of, params, symmetry, _ = _tiny()
    a = Sharpness(loss_of, params, symmetry, directions=5, seed=4)
    b = Sharpness(loss_of, params, symmetry, directions=5, seed=4)
    norms = torch.sqrt(sum(d.flatten(1).square().sum(1) for d in a._d.values()))
    assert torch.allclose(norms, torch.ones(5, dtype=torch.float64), atol=1e-14)
    assert all(torch.equal(a._d[n], b._d[n]) for n in params)
    assert torch.allclose(a._t, torch.linspace(0.1, 1.0, 10, dtype=torch.float64))


def _tiny_cnn():
    """A float64 CNN whose convolution kernels have axes no scale depends on (the closed forms sum over them)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
    ).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    symmetry = discover(model, x)
    assert symmetry.n_scales == 5
    params = {n: p.detach() for n, p in model.named_parameters()}
    return model, module_loss(model, F.cross_entropy, x, y), params, symmetry, (x, y)


@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_curvature_closed_form_matches_the_orbit_derivatives(network):
    _, _, params, symmetry, _ = _tiny() if network == "mlp" else _tiny_cnn()
    curvature = Curvature(params, symmetry, samples=8, seed=1)
    s = _random_s(symmetry)

    def flat(t, s, m):
        moved = act(symmetry, s + t * m, params)
        return torch.cat([p.reshape(-1) for p in moved.values()])

    def reference(s):
        values = []
        for m in curvature._m:
            t0, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)

            def velocity(t, m=m, one=one):
                return torch.func.jvp(lambda u: flat(u, s, m), (t,), (one,))[1]

            d1, d2 = torch.func.jvp(velocity, (t0,), (one,))
            n1, n2, dot = d1.square().sum(), d2.square().sum(), (d1 * d2).sum()
            values.append(torch.sqrt(n1 * n2 - dot**2) / n1**1.5)
        return torch.stack(values).mean()

    value, slope = curvature.value_and_slope(s)
    assert _close(value, reference(s), 1e-10)
    auto = torch.func.grad(reference)(s)
    assert auto.abs().max() > 1e-3
    assert _close(slope, auto, 1e-8)


def _exact_trace(loss_of, params, symmetry, s):
    """``tr H`` at ``g_s·w`` from the full Hessian of the flattened parameters (differentiable in ``s``)."""
    names = list(params)
    sizes = [params[n].numel() for n in names]
    moved = act(symmetry, s, params)
    flat = torch.cat([moved[n].reshape(-1) for n in names])

    def loss_flat(v):
        return loss_of({n: x.view_as(params[n]) for n, x in zip(names, v.split(sizes))})

    return torch.func.hessian(loss_flat)(flat).diagonal().sum()


@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_hessian_trace_closed_form_matches_the_exact_hessian(network):
    _, loss_of, params, symmetry, _ = _tiny() if network == "mlp" else _tiny_cnn()
    diagonal = hessian_diagonal(loss_of, params, probes=0, chunk=9)
    s = _random_s(symmetry)
    zero = torch.zeros_like(s)
    trace = HessianTrace(diagonal, symmetry)
    assert _close(trace.value(zero), _exact_trace(loss_of, params, symmetry, zero), 1e-12)
    value, slope = trace.value_and_slope(s)
    assert _close(value, _exact_trace(loss_of, params, symmetry, s), 1e-10)
    auto = torch.func.grad(lambda u: _exact_trace(loss_of, params, symmetry, u))(s)
    assert auto.abs().max() > 1e-3
    assert _close(slope, auto, 1e-8)


def test_hutchinson_diagonal_is_within_its_standard_error():
    _, loss_of, params, symmetry, _ = _tiny()
    names = list(params)
    flat = torch.cat([params[n].reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names]
    hessian = torch.func.hessian(lambda v: loss_of({n: x.view_as(params[n]) for n, x in zip(names, v.split(sizes))}))(
        flat
    )
    probes = 2000
    estimate = torch.cat([v.reshape(-1) for v in hessian_diagonal(loss_of, params, probes=probes, seed=2).values()])
    exact = hessian.diagonal()
    error = (hessian.square().sum(1) - exact.square()).sqrt() / probes**0.5  # per-probe variance Σ_{j≠i} H_ij²
    assert bool(((estimate - exact).abs() <= 5 * error + 1e-12).all())
    assert (estimate - exact).abs().max() > 0  # an estimate, not the exact diagonal


def _digits_trained():
    """The digits MLP (64-32-32-10, ReLU, biases) after 300 full-batch Adam steps (training loss about 2e-4)."""
    objective, _, data = digits_mlp(0, hidden=(32, 32))
    model = objective.model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    return model, (data.x_train, data.y_train)


def test_teleport_decreases_sharpness_at_the_same_loss():
    model, batch = _digits_trained()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    options = dict(directions=10, t_range=(0.5, 5.0), t_count=3, seed=1)
    new, record = teleport_objective(model, F.cross_entropy, batch, "sharpness", "decrease", steps=12, **options)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is not changed
    assert record.loss_change < 1e-5
    assert record.objective_after < 0.9 * record.objective_before
    assert record.trace[0] == record.objective_before and record.trace[-1] == record.objective_after
    # K·T loss gradients per evaluation of φ and its slope: at the start, then once per step tried (kept or not)
    assert record.gradient_evaluations % 30 == 0 and 30 * (record.steps_taken + 1) <= record.gradient_evaluations
    assert record.gradient_evaluations <= 30 * 13
    # the record's value is the objective at the returned parameters
    again = Sharpness(module_loss(model, F.cross_entropy, *batch), new, discover(model, batch[0]), **options)
    assert abs(float(again.value(torch.zeros(again.symmetry.n_scales))) - record.objective_after) < 1e-4
    with torch.no_grad():
        out = torch.func.functional_call(model, new, (batch[0],))
        assert (out - model(batch[0])).abs().max() < 1e-4 * model(batch[0]).abs().max()


@pytest.mark.xfail(
    strict=True,
    reason="a bound of the quantities along the orbit, not of the ascent: from the Adam-trained digits MLP (training "
    "loss 2e-4) the sampled sharpness (10 directions x 3 steps, t in [0.5, 5]) has one minimum along the rescalings, "
    "0.56 of its value there: the descent stops at a stationary point with 40 or 150 steps of up to 0.3 or 1.0 per "
    "log-scale, and a 5x sharper rescaled start reaches the same value (100 x 10 directions: 0.77, and at the 10 x 3 "
    "minimum a held-out 100 x 10 sample is 1.12x its start: few directions are fitted, not flattened). phi >= L(w) "
    "does not bind (phi is 0.008 there): a perturbation of fixed size moves the output by about P sum_l |d_l|/|W_l|, "
    "the product P of the layers' scales fixed by the rescalings, which has a positive minimum. The curvature "
    "psi = std_q(alpha)/|gamma'| falls with the weights' norm, which the rescalings lower only to the orbit's "
    "least-norm point (173.5 against 204.8 in squared norm here): its one maximum, reached from random starts too, "
    "is 1.09 of its start",
)
def test_teleport_halves_sharpness_or_doubles_curvature_on_the_digits_mlp():
    model, batch = _digits_trained()
    options = dict(seed=1, steps=40, max_log_step=0.3)
    sampling = dict(directions=10, t_range=(0.5, 5.0), t_count=3)
    _, flat = teleport_objective(model, F.cross_entropy, batch, "sharpness", "decrease", **options, **sampling)
    _, curved = teleport_objective(model, F.cross_entropy, batch, "curvature", "increase", **options, samples=100)
    assert flat.loss_change < 1e-5 and curved.loss_change < 1e-5
    assert flat.ratio <= 0.5 or curved.ratio >= 2


def test_curvature_has_one_maximum_along_the_orbit_near_its_least_norm_point():
    """Why the curvature rises so little: its maximum is the orbit's, from any start, next to the least-norm point."""
    model, batch = _digits_trained()
    symmetry = discover(model, batch[0])
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    tops = []
    for seed in (None, 0, 1):
        s = torch.zeros(symmetry.n_scales, dtype=torch.float64)
        if seed is not None:  # a randomly rescaled start: the same function, less curved
            s = torch.randn(symmetry.n_scales, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        start = act(symmetry, s, params)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
        _, record = teleport_objective(
            model, F.cross_entropy, batch, "curvature", "increase", steps=150, max_log_step=0.3, samples=100, seed=1
        )
        assert record.loss_change < 1e-5
        tops.append((record.objective_before, record.objective_after))
    (trained, top), *others = tops
    assert all(abs(after - top) < 1e-6 * top and before < 0.5 * top for before, after in others)
    assert 1 < top / trained < 2  # the trained net starts near the top
    # the least-norm point of the orbit (the squared norm of the rescaled weights is convex in the log-scales)
    s = torch.zeros(symmetry.n_scales, dtype=torch.float64, requires_grad=True)
    norm = lambda u: sum((p.double() ** 2).sum() for n, p in act(symmetry, u, params).items() if n in symmetry.params)  # noqa: E731
    lbfgs = torch.optim.LBFGS([s], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        value = norm(s)
        value.backward()
        return value

    lbfgs.step(closure)
    assert float(norm(s.detach())) < 0.9 * float(norm(torch.zeros_like(s)))
    least = Curvature(params, symmetry, samples=100, seed=1).value(s.detach())
    assert abs(float(least) - top) < 0.01 * top


def test_sharpness_descent_reaches_the_same_minimum_from_a_rescaled_start():
    model, batch = _digits_trained()
    options = dict(directions=10, t_range=(0.5, 5.0), t_count=3, seed=1, steps=80, max_log_step=0.3)
    _, first = teleport_objective(model, F.cross_entropy, batch, "sharpness", "decrease", **options)
    symmetry = discover(model, batch[0])
    s = torch.randn(symmetry.n_scales, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    start = act(symmetry, s, {n: p.detach() for n, p in model.named_parameters()})
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    _, second = teleport_objective(model, F.cross_entropy, batch, "sharpness", "decrease", **options)
    assert second.objective_before > 5 * first.objective_before  # a much sharper point of the same orbit
    assert second.loss_change < 1e-5
    assert abs(second.objective_after - first.objective_after) < 1e-3 * first.objective_after


@pytest.mark.parametrize("objective,direction", [("curvature", "increase"), ("hessian_trace", "decrease")])
def test_teleport_moves_curvature_and_hessian_trace_at_the_same_loss(objective, direction):
    model, _, _, _, batch = _tiny()
    _, record = teleport_objective(model, F.cross_entropy, batch, objective, direction, steps=30, probes=0)
    assert record.loss_change < 1e-10
    moved = record.objective_after > record.objective_before if direction == "increase" else record.ratio < 1
    assert moved and record.steps_taken > 0
    # the curvature is a closed form of the weights; the exact diagonal takes one Hessian-vector product per entry
    entries = sum(p.numel() for p in model.parameters())
    assert record.gradient_evaluations == (0 if objective == "curvature" else 2 * entries)


def test_teleport_refuses_adaptive_sharpness_and_bad_arguments():
    model, _, _, _, batch = _tiny()
    with pytest.raises(ValueError, match="invariant"):
        teleport_objective(model, F.cross_entropy, batch, "adaptive_sharpness")
    with pytest.raises(ValueError, match="Invalid objective"):
        teleport_objective(model, F.cross_entropy, batch, "flatness")
    with pytest.raises(ValueError, match="Invalid direction"):
        teleport_objective(model, F.cross_entropy, batch, direction="up")
    with pytest.raises(ValueError, match="Invalid t_range"):
        teleport_objective(model, F.cross_entropy, batch, t_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="Invalid directions"):
        teleport_objective(model, F.cross_entropy, batch, directions=0)
    with pytest.raises(TypeError, match="Invalid batch"):
        teleport_objective(model, F.cross_entropy, batch[0])


def test_hessian_trace_decrease_refuses_a_noisy_estimate():
    model, _, _, _, batch = _tiny()
    with pytest.raises(ValueError, match="unbounded below"):
        teleport_objective(model, F.cross_entropy, batch, "hessian_trace", "decrease", probes=1)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist_5k_is_offline_split_and_deterministic(no_network):
    a, b, c = mnist_5k(0), mnist_5k(0), mnist_5k(1)
    assert a.x_train.shape == (4000, 784) and a.x_test.shape == (1000, 784)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.long
    assert 0 <= float(a.x_train.min()) and float(a.x_train.max()) <= 1
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    assert sorted(torch.cat([a.y_train, a.y_test]).unique().tolist()) == list(range(10))
    with pytest.raises(ValueError, match="validation_fraction"):
        mnist_5k(validation_fraction=1.0)


def test_mnist1d_is_generated_offline_split_and_deterministic(no_network):
    import numpy as np

    state = np.random.get_state()[1].copy()
    a, b = mnist1d(0, samples=200), mnist1d(0, samples=200, dtype=torch.float64)
    assert np.array_equal(np.random.get_state()[1], state)  # the generator's global seeding is undone
    assert a.x_train.shape == (160, 40) and a.x_test.shape == (40, 40) and b.x_train.dtype == torch.float64
    assert torch.equal(a.x_train.double(), b.x_train.float().double()) and torch.equal(a.y_train, b.y_train)
    assert torch.bincount(torch.cat([a.y_train, a.y_test])).tolist() == [20] * 10
    assert not torch.equal(mnist1d(1, samples=200).y_train, a.y_train)
    assert not torch.equal(mnist1d(0, samples=200, data_seed=7).x_train, a.x_train)
    with pytest.raises(ValueError, match="samples"):
        mnist1d(samples=205)


def test_leaky_mlp_is_zhaos_network_and_rescalable():
    model = leaky_mlp()
    assert [tuple(p.shape) for p in model.parameters()] == [(16, 784), (10, 16), (10, 10)]
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in model[1::2])
    assert discover(model, torch.randn(2, 784)).n_scales == 26
    with pytest.raises(ValueError, match="widths"):
        leaky_mlp((784,))


def _tied_mlp() -> nn.Module:
    shared = nn.Linear(6, 6, bias=False)
    return nn.Sequential(shared, nn.LeakyReLU(0.1), shared, nn.LeakyReLU(0.1), nn.Linear(6, 3, bias=False))


def _tied_forward(params: dict, x: torch.Tensor) -> torch.Tensor:
    hidden = F.leaky_relu(F.leaky_relu(x @ params["0.weight"].T, 0.1) @ params["0.weight"].T, 0.1)
    return hidden @ params["4.weight"].T


@pytest.mark.parametrize("make, train", [("resnet", True), ("resnet", False), ("tied", False), ("parametrized", False)])
def test_module_loss_is_the_forward_at_the_given_parameters_bit_for_bit_and_leaves_the_model_alone(make, train):
    from symtele.models import digits_resnet

    torch.manual_seed(0)
    if make == "resnet":  # BatchNorm buffers: swapped for fresh copies, never changed
        model, x = digits_resnet(), torch.randn(16, 1, 8, 8)
    elif make == "tied":  # one Linear twice: its weight swapped in both places
        model, x = _tied_mlp(), torch.randn(16, 6)
    else:  # a parametrization: the loss goes through functional_call
        model, x = leaky_mlp((6, 6, 3)), torch.randn(16, 6)
        nn.utils.parametrize.register_parametrization(model[2], "weight", nn.Identity())
    model.train(train)
    y = torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {n: (p.detach() * 1.1).requires_grad_(True) for n, p in model.named_parameters()}
    assert (generalisation._owners(model) is None) == (make == "parametrized")
    loss = module_loss(model, F.cross_entropy, x, y)(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    if make == "tied":  # torch.func.functional_call leaves a tied model with a plain tensor in place of its weight
        expected = F.cross_entropy(_tied_forward(params, x), y)
    else:
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        expected = F.cross_entropy(torch.func.functional_call(model, {**buffers, **params}, (x,)), y)
    assert torch.equal(loss, expected)
    for g, e in zip(grads, torch.autograd.grad(expected, list(params.values()))):
        assert torch.equal(g, e)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(p) is nn.Parameter for p in model.parameters())
    if make == "tied":
        assert model[0].weight is model[2].weight


def test_module_loss_puts_the_parameters_back_when_the_forward_fails():
    model = leaky_mlp((4, 3, 2))
    own = dict(model.named_parameters())
    loss_of = module_loss(model, F.cross_entropy, torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(RuntimeError):
        loss_of({"0.weight": torch.zeros(3, 7), "2.weight": own["2.weight"].detach()})  # a shape the input refuses
    assert dict(model.named_parameters()) == own and all(type(p) is nn.Parameter for p in own.values())
