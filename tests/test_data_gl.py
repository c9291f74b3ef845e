"""The data-dependent GL(h) action of Zhao et al. (2024) and its teleport of sharpness and curvature.

In float64 on a small bias-free LeakyReLU MLP: the action keeps the outputs on a batch of exactly ``h`` examples
and changes them elsewhere; with more or fewer examples it breaks (the reasons the teleport refuses them); the
teleport moves each objective the way asked, keeps the batch's loss, reports the held-out change, and refuses what
it cannot act on.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from symtele.models import leaky_mlp
from symtele.teleports import data_gl
from symtele.teleports.data_gl import data_gl_teleport, gl_act, hidden_layers
from symtele.teleports.generalisation import make_objective, module_loss
from symtele.teleports.rescale import symmetry_of

WIDTHS = (6, 5, 4, 3)  # hidden layers of 5 and 4 units


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return leaky_mlp(WIDTHS).double()


def _data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, WIDTHS[0], generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def _outputs(model, params, x):
    with torch.no_grad():
        return torch.func.functional_call(model, params, (x,))


def _relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _g(h: int, seed: int = 5, scale: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.eye(h, dtype=torch.float64) + scale * torch.randn(h, h, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("layer, width", [(0, 5), (1, 4)])
def test_the_action_keeps_the_batch_outputs_and_changes_the_others(layer, width):
    model = _net()
    w = _params(model)
    x, _ = _data(width)
    other, _ = _data(50, seed=2)
    moved = gl_act(model, w, x, layer, _g(width))
    assert _relative(_outputs(model, moved, x), _outputs(model, w, x)) < 1e-12
    assert _relative(_outputs(model, moved, other), _outputs(model, w, other)) > 1e-2  # measured: about 0.1–1
    changed = {n for n in w if not torch.equal(moved[n], w[n])}
    assert changed == {f"{2 * layer}.weight", f"{2 * layer + 2}.weight"}


def test_the_identity_is_a_no_op_on_a_batch_of_h_examples():
    model = _net()
    w = _params(model)
    x, _ = _data(5)
    moved = gl_act(model, w, x, 0, torch.eye(5, dtype=torch.float64))
    for n in w:
        assert _relative(moved[n], w[n]) < 1e-12


def test_off_h_examples_the_action_breaks_the_way_the_teleport_refuses():
    model = _net()
    w = _params(model)
    more, _ = _data(12)  # more examples than the 5 units: σ(gZ)⁺σ(gZ) is a projection, the batch's outputs move
    moved = gl_act(model, w, more, 0, _g(5))
    assert _relative(_outputs(model, moved, more), _outputs(model, w, more)) > 1e-2
    fewer, _ = _data(3)  # fewer: at g = I the next layer's weights are projected onto the batch's activations
    moved = gl_act(model, w, fewer, 0, torch.eye(5, dtype=torch.float64))
    assert _relative(_outputs(model, moved, fewer), _outputs(model, w, fewer)) < 1e-12
    assert _relative(moved["2.weight"], w["2.weight"]) > 1e-2


def _objective_at(model, batch, objective, params, seed=0, **sampling):
    measure = make_objective(
        objective,
        module_loss(model, F.cross_entropy, *batch),
        _params(model),
        symmetry_of(model, batch[0]),
        seed=seed,
        **sampling,
    )
    with torch.no_grad():
        return float(measure.at(params))


SAMPLING = dict(directions=4, t_range=(0.2, 1.0), t_count=2, samples=10)


@pytest.mark.parametrize("objective", data_gl.GL_OBJECTIVES)
@pytest.mark.parametrize("direction", ["decrease", "increase"])
def test_the_teleport_moves_the_objective_and_keeps_the_batch_loss(objective, direction):
    model = _net()
    batch, held_out = _data(5), _data(40, seed=3)
    before = _params(model)
    params, record = data_gl_teleport(
        model, F.cross_entropy, batch, objective, direction, steps=5, seed=2, held_out=held_out, **SAMPLING
    )
    assert all(torch.equal(p, before[n]) for n, p in _params(model).items())  # the model is not changed
    assert record.steps_taken > 0 and record.group == "gl-data" and (record.layer, record.width) == (0, 5)
    sign = 1 if direction == "increase" else -1
    assert sign * (record.objective_after - record.objective_before) > 0
    steps = [b - a for a, b in zip(record.trace, record.trace[1:])]
    assert all(sign * d > 0 for d in steps)
    # the record's objective is the objective at the returned point, recomputed independently of the teleport
    assert record.objective_after == pytest.approx(_objective_at(model, batch, objective, params, 2, **SAMPLING))
    assert record.loss_change < 1e-10
    assert _relative(_outputs(model, params, batch[0]), _outputs(model, before, batch[0])) < 1e-9  # every output
    with torch.no_grad():
        assert float(F.cross_entropy(torch.func.functional_call(model, params, (batch[0],)), batch[1])) == (
            pytest.approx(record.loss_before, rel=1e-10)
        )
        held = float(F.cross_entropy(torch.func.functional_call(model, params, (held_out[0],)), held_out[1]))
    assert held == pytest.approx(record.held_out_loss_after, rel=1e-12)
    assert abs(record.held_out_loss_change) > 1e-6  # the data-dependent action changes the loss elsewhere
    assert record.rank == 5 and 1 <= record.condition <= 1e6 and record.g_distance > 0
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()  # plain data


def test_the_teleport_is_deterministic():
    model = _net()
    runs = [data_gl_teleport(model, F.cross_entropy, _data(5), steps=3, seed=4, **SAMPLING) for _ in range(2)]
    (p1, r1), (p2, r2) = runs
    assert all(torch.equal(p1[n], p2[n]) for n in p1)
    assert {**r1.to_dict(), "cost_s": 0} == {**r2.to_dict(), "cost_s": 0}


def test_a_float32_model_keeps_its_batch_loss_within_float32_rounding():
    model = _net().float()
    x, y = _data(5)
    params, record = data_gl_teleport(model, F.cross_entropy, (x.float(), y), "curvature", "decrease", steps=5)
    assert all(p.dtype == torch.float32 for p in params.values())
    assert record.steps_taken > 0 and record.loss_change < 1e-5


def test_a_singular_batch_is_refused_with_the_reason():
    model = _net()
    x, y = _data(5)
    x[4], y[4] = x[3], y[3]  # a repeated example: σ(W_m X) has rank 4 of 5
    params, record = data_gl_teleport(model, F.cross_entropy, (x, y), "curvature", "increase", steps=3)
    assert record.steps_taken == 0 and record.rank == 4
    assert "cannot act" in record.stopped and "rank 4 of 5" in record.stopped
    assert record.objective_after == record.objective_before and record.loss_change == 0
    assert all(torch.equal(p, q) for p, q in zip(params.values(), _params(model).values()))


def test_an_ill_conditioned_batch_is_refused_with_the_reason():
    model = _net()
    _, record = data_gl_teleport(model, F.cross_entropy, _data(5), max_condition=1.0, steps=2, **SAMPLING)
    assert record.steps_taken == 0 and "condition number" in record.stopped


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(batch=_data(6)), ValueError, "Invalid batch: 6 examples"),
        (dict(batch=_data(4)), ValueError, "Invalid batch: 4 examples"),
        (dict(layer=2), ValueError, "Invalid layer: 2"),
        (dict(layer=-1), ValueError, "layer"),
        (dict(objective="hessian_trace"), ValueError, "Invalid objective"),
        (dict(objective="adaptive_sharpness"), ValueError, "Invalid objective"),
        (dict(direction="up"), ValueError, "Invalid direction"),
        (dict(steps=0), ValueError, "steps"),
        (dict(max_step=-0.1), ValueError, "max_step"),
        (dict(max_condition=0.5), ValueError, "max_condition"),
        (dict(directions=0), ValueError, "directions"),
        (dict(t_range=(1.0, 0.5)), ValueError, "t_range"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(loss_rtol=0.0), ValueError, "loss_rtol"),
        (dict(batch=(torch.zeros(5, 6),)), TypeError, "Invalid batch"),
        (dict(held_out=torch.zeros(3)), TypeError, "Invalid held_out"),
        (dict(loss_fn=3), TypeError, "Invalid loss_fn"),
    ],
)
def test_bad_arguments_are_refused_before_any_compute(monkeypatch, changes, error, match):
    def never(*args, **kwargs):
        raise AssertionError("computed before checking the arguments")

    monkeypatch.setattr(data_gl, "make_objective", never)
    arguments = dict(model=_net(), loss_fn=F.cross_entropy, batch=_data(5)) | changes
    with pytest.raises(error, match=match):
        data_gl_teleport(**arguments)


@pytest.mark.parametrize(
    "model, match",
    [
        (nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)), "has a bias"),
        (nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)), "layer 1 is ReLU"),
        (nn.Sequential(nn.Linear(6, 3, bias=False)), "1 layers"),
        (nn.Linear(6, 3, bias=False), "Invalid model: Linear"),
    ],
)
def test_other_architectures_are_refused(model, match):
    with pytest.raises(ValueError, match=match):
        hidden_layers(model)
    with pytest.raises(ValueError, match=match):
        data_gl_teleport(model, F.cross_entropy, _data(5))


def test_gl_act_refuses_a_g_of_the_wrong_shape():
    model = _net()
    with pytest.raises(ValueError, match="Invalid g: shape \\(4, 4\\)"):
        gl_act(model, _params(model), _data(5)[0], 0, torch.eye(4, dtype=torch.float64))
