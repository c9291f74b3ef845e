"""The null-space teleport (Wu et al. 2025): it keeps each layer's outputs on the teleport batch, raises ‖∇L‖²,
and moves the loss off the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symtele.models_gpt import GPT, next_token_loss
from symtele.teleports.null_space import held_out_loss_change, null_space_basis, null_space_teleport


def _mlp_batch(samples=8, seed=0):
    """A float64 ReLU MLP wider than the batch (each layer's inputs have a null space) and a batch."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(samples, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (samples,), generator=gen)
    return net, x, y


def _layer_inputs(model, x):
    """Each Linear layer's input on ``x``, with the column of ones (``X̃``)."""
    inputs = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return {
        n: torch.cat([t.reshape(-1, t.shape[-1]), torch.ones(t[..., :1].numel(), 1, dtype=t.dtype)], 1)
        for n, t in inputs.items()
    }


def _augmented(params, name):
    return torch.cat([params[f"{name}.weight"], params[f"{name}.bias"].unsqueeze(1)], dim=1)


def test_the_loss_on_the_batch_is_kept_while_the_gradient_grows():
    net, x, y = _mlp_batch()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    params, record = null_space_teleport(net, F.cross_entropy, x, y, steps=5, lr=0.5, epsilon=0.0)
    assert record.stopped is None and record.steps_taken == 5
    assert abs(record.loss_after - record.loss_before) < 1e-4 * record.loss_before
    assert abs(record.loss_after - record.loss_before) < 1e-12 * record.loss_before  # exact null space
    assert record.grad_norm_sq_after > 1.5 * record.grad_norm_sq_before
    assert record.trace["grad_norm_sq"] == sorted(record.trace["grad_norm_sq"])
    assert record.grad_evals == 6 and record.hvp_evals == 5 and record.forward_evals == 0
    assert record.trace["layers"] == ["0", "2", "4"] and record.trace["free_dims"] == [21 - 8, 33 - 8, 33 - 8]
    assert record.trace["cost_in_gradients"] > 0
    moved = max(float((params[k] - start[k]).abs().max()) for k in params)
    assert moved > 1e-3
    assert all(torch.equal(v, start[k]) for k, v in net.state_dict().items())  # the model itself is not changed
    with torch.no_grad():
        check = float(F.cross_entropy(torch.func.functional_call(net, params, (x,)), y))
    assert check == pytest.approx(record.loss_after, rel=1e-12)


def test_every_layer_keeps_its_pre_activations_on_the_batch():
    net, x, y = _mlp_batch()
    inputs = _layer_inputs(net, x)
    start = dict(net.named_parameters())
    params, _ = null_space_teleport(net, F.cross_entropy, x, y, steps=3, lr=0.5, epsilon=0.0)
    for name in ("0", "2", "4"):
        before = inputs[name] @ _augmented(start, name).detach().T
        after = inputs[name] @ _augmented(params, name).T
        torch.testing.assert_close(after, before, rtol=0, atol=1e-12 * float(before.abs().max()))
    # the layers above the first move; the first does not: a change of it in its null space changes no activation
    # and no backward signal, so ‖∇L‖² does not depend on it
    change = {n: float((_augmented(params, n) - _augmented(start, n).detach()).norm()) for n in ("0", "2", "4")}
    assert change["2"] > 1e-3 and change["4"] > 1e-3
    assert change["0"] < 1e-12


def test_with_epsilon_the_pre_activations_move_within_the_bound():
    """More samples than inputs: no exact null space; ``ε`` bounds the change, ``‖X̃ Δᵀ‖ ≤ ‖Δ‖₂ √ε ‖X̃‖_F``."""
    net, x, y = _mlp_batch(samples=64)
    inputs = _layer_inputs(net, x)
    start = dict(net.named_parameters())
    epsilon = 0.1
    params, record = null_space_teleport(
        net, F.cross_entropy, x, y, steps=1, lr=0.5, epsilon=epsilon, max_loss_change=None
    )
    assert all(d > 0 for d in record.trace["free_dims"])
    for name in ("2", "4"):
        delta = _augmented(params, name) - _augmented(start, name).detach()
        moved = (inputs[name] @ delta.T).norm()
        bound = torch.linalg.matrix_norm(delta, ord=2) * epsilon**0.5 * inputs[name].norm()
        assert 0 < moved <= bound * (1 + 1e-9)
    unmoved, record = null_space_teleport(net, F.cross_entropy, x, y, steps=3, lr=0.5, epsilon=0.0)
    assert record.trace["free_dims"] == [0, 0, 0] and "no moved layer has a null space" in record.stopped
    assert record.steps_taken == 0 and record.hvp_evals == 0 and record.grad_evals == 1
    assert all(torch.equal(unmoved[n], p) for n, p in net.named_parameters())


def test_null_space_basis_keeps_the_energy_asked_for():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=gen, dtype=torch.float64) * torch.tensor([10.0, 5, 1, 0.1, 0.01, 0.001])
    augmented = torch.cat([x, torch.ones(200, 1, dtype=x.dtype)], 1)
    for epsilon in (0.0, 1e-6, 1e-3, 0.1):
        basis = null_space_basis(x, epsilon)
        torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=basis.dtype))
        outside = (augmented - augmented @ basis @ basis.T).norm() ** 2
        assert outside <= epsilon * augmented.norm() ** 2 + 1e-12 * augmented.norm() ** 2
        if basis.shape[1] > 1:  # the fewest directions: one fewer would leave more than ε outside
            fewer = basis[:, :-1]
            assert (augmented - augmented @ fewer @ fewer.T).norm() ** 2 > epsilon * augmented.norm() ** 2
    assert null_space_basis(x, 0.0).shape == (7, 7)
    assert null_space_basis(x, 0.0, bias=False).shape == (6, 6)
    assert null_space_basis(x[:3], 0.0).shape == (7, 3)


def test_the_loss_moves_off_the_teleport_batch():
    net, x, y = _mlp_batch()
    params, record = null_space_teleport(net, F.cross_entropy, x, y, steps=5, lr=0.5, epsilon=0.0)
    own = held_out_loss_change(net, F.cross_entropy, params, [(x, y)])
    assert own["loss_before"][0] == pytest.approx(record.loss_before, rel=1e-12)
    assert own["loss_after"][0] == pytest.approx(record.loss_after, rel=1e-12)
    others = [_mlp_batch(seed=s)[1:] for s in (1, 2, 3)]
    change = held_out_loss_change(net, F.cross_entropy, params, others)
    assert len(change["relative_change"]) == 3
    assert max(abs(c) for c in change["relative_change"]) > 1e-3


def test_the_step_that_moves_the_loss_too_much_is_undone():
    net, x, y = _mlp_batch(samples=64)
    params, record = null_space_teleport(
        net, F.cross_entropy, x, y, steps=20, lr=50.0, epsilon=0.3, max_loss_change=1e-3
    )
    assert record.stopped and "max_loss_change" in record.stopped
    assert record.steps_taken < 20 and record.forward_evals == 1
    assert abs(record.loss_after - record.loss_before) <= 1e-3 * record.loss_before
    with torch.no_grad():
        loss = float(F.cross_entropy(torch.func.functional_call(net, params, (x,)), y))
    assert loss == pytest.approx(record.loss_after, rel=1e-12)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_gpt_teleport_keeps_the_batch_loss_and_drops_a_tied_head(attention):
    torch.manual_seed(0)
    model = GPT(vocab_size=7, context=4, n_layer=1, n_head=2, d_model=8, attention=attention, tie_weights=True)
    model = model.double()
    x = torch.randint(0, 7, (1, 4), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 7, (1, 4), generator=torch.Generator().manual_seed(1))
    params, record = null_space_teleport(model, next_token_loss, x, y, steps=3, lr=1.0, epsilon=0.0)
    assert record.trace["dropped"] == [
        {"layer": "lm_head", "reason": "its weight is shared with wte.weight, which the projection does not keep"}
    ]
    assert "lm_head" not in record.trace["layers"] and "blocks.0.attn.c_attn" in record.trace["layers"]
    assert abs(record.loss_after - record.loss_before) < 1e-10 * record.loss_before
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    assert torch.equal(params["wte.weight"], model.wte.weight)


def test_bad_arguments_raise_before_any_compute():
    net, x, y = _mlp_batch()
    cases = [
        ({"steps": 0}, ValueError, "steps"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"epsilon": 1.0}, ValueError, "epsilon"),
        ({"epsilon": -0.1}, ValueError, "epsilon"),
        ({"max_loss_change": -1.0}, ValueError, "max_loss_change"),
        ({"layers": ["1"]}, ValueError, "layers"),
        ({"layers": "0"}, TypeError, "layers"),
        ({"layers": []}, ValueError, "layers"),
    ]
    for options, error, match in cases:
        with pytest.raises(error, match=match):
            null_space_teleport(net, F.cross_entropy, x, y, **options)
    with pytest.raises(TypeError, match="model"):
        null_space_teleport(lambda t: t, F.cross_entropy, x, y)
    with pytest.raises(TypeError, match="loss_fn"):
        null_space_teleport(net, "mse", x, y)
    with pytest.raises(TypeError, match="loss_fn"):
        null_space_teleport(net, lambda out, t: (out - 1).pow(2), x, y)
    with pytest.raises(ValueError, match="no nn.Linear"):
        null_space_teleport(nn.Sequential(nn.ReLU()), F.mse_loss, x, x)
    with pytest.raises(ValueError, match="epsilon"):
        null_space_basis(x, 2.0)
    with pytest.raises(ValueError, match="params"):
        held_out_loss_change(net, F.cross_entropy, {"nope": x}, [(x, y)])
    with pytest.raises(ValueError, match="batches"):
        held_out_loss_change(net, F.cross_entropy, {}, [])
