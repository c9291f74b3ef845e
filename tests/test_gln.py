"""The GL(n) baseline against a transcription of the original code's arithmetic (Zhao et al. 2022).

The transcription below follows the original ``teleportation.py``/``multi_layer_regression.py`` of
Rose-STL-Lab/Symmetry-Teleportation step by step, one seed at a time in plain 2-D tensors: each
ascent step differentiates ``Σ‖∂L/∂W_i‖²`` with respect to every ``T_m`` through the chain of pairs
acting on the already transformed weights, then applies ``T = lr · ∂/∂T`` pair by pair, first layer
first, each later pair with the input of the weights as they were at the step's start (``start``) or
as the earlier pairs left them (``updated``). In float64 rounding cannot hide a different algorithm.
"""

import pytest
import torch
from torch import nn

import symtele as st
from symtele.study.experiments import course_regression_task
from symtele.study.settings import REGRESSION

SIGMA, SIGMA_INV = nn.LeakyReLU(0.1), nn.LeakyReLU(10)


def _loss(ws, X, Y):
    h = X
    for w in ws[:-1]:
        h = SIGMA(w @ h)
    return 0.5 * torch.norm(Y - ws[-1] @ h) ** 2


def _apply(ws, X, Ts, hidden):
    start, out, h = list(ws), list(ws), X
    for m, T in enumerate(Ts):
        eye = torch.eye(T.shape[0], dtype=T.dtype)
        out[m + 1] = out[m + 1] @ (eye - T)
        out[m] = SIGMA_INV((eye + T) @ SIGMA(out[m] @ h)) @ torch.linalg.pinv(h)
        h = SIGMA((start[m] if hidden == "start" else out[m]) @ h)
    return out


def _teleport(ws, X, Y, lr, steps, hidden):
    for _ in range(steps):
        Ts = [torch.zeros(w.shape[0], w.shape[0], dtype=w.dtype, requires_grad=True) for w in ws[:-1]]
        moved = _apply(ws, X, Ts, "updated")
        grads = torch.autograd.grad(_loss(moved, X, Y), moved, create_graph=True)
        slopes = torch.autograd.grad(sum(torch.norm(g) ** 2 for g in grads), Ts)
        ws = [w.detach() for w in _apply(ws, X, [lr * s for s in slopes], hidden)]
    return ws


def _original_run(seed, optimizer, epochs, hidden):
    objective, weights = course_regression_task(seed, negative_slope=0.1, dtype=torch.float64)
    ws, X, Y = [w.clone() for w in weights], objective.X, objective.Y
    lr = REGRESSION.lr(optimizer)
    teleport = REGRESSION.gln(optimizer)
    sums, losses = [torch.zeros_like(w) for w in ws], []
    for epoch in range(epochs):
        if epoch == REGRESSION.teleport_epoch:
            ws = _teleport(ws, X, Y, teleport.lr, teleport.steps, hidden)
        leaves = [w.detach().requires_grad_() for w in ws]
        loss = _loss(leaves, X, Y)
        grads = torch.autograd.grad(loss, leaves)
        losses.append(loss.item())
        if optimizer == "gd":
            ws = [w - lr * g for w, g in zip(ws, grads)]
        else:
            sums = [s + g * g for s, g in zip(sums, grads)]
            ws = [w - lr * g / (torch.sqrt(s) + 1e-10) for w, g, s in zip(ws, grads, sums)]
    return losses


@pytest.mark.parametrize("optimizer", ["gd", "adagrad"])
@pytest.mark.parametrize("hidden", ["start", "updated"])
def test_gln_runs_follow_the_original_arithmetic_in_float64(optimizer, hidden):
    epochs = REGRESSION.epochs
    objective, weights = course_regression_task(negative_slope=0.1, dtype=torch.float64)
    history = st.train(
        objective,
        weights,
        optimizer=optimizer,
        lr=REGRESSION.lr(optimizer),
        epochs=epochs,
        teleport=REGRESSION.gln(optimizer, hidden=hidden),
        schedule=REGRESSION.teleport_epoch,
    )
    (record,) = history.teleports
    assert record.method == ("gln" if hidden == "start" else "gln-updated")
    assert record.steps_taken == REGRESSION.gln(optimizer).steps
    ours = torch.tensor(history.loss)  # epochs × seeds
    for i, seed in enumerate(REGRESSION.seeds):
        reference = torch.tensor(_original_run(seed, optimizer, epochs, hidden))
        assert torch.allclose(ours[:, i], reference, rtol=1e-7, atol=0), (
            seed,
            (ours[:, i] / reference - 1).abs().max(),
        )


def test_the_two_ways_of_choosing_h_differ_at_the_teleport():
    objective, weights = course_regression_task(0, negative_slope=0.1, dtype=torch.float64)
    losses = {}
    for hidden in ("start", "updated"):
        _, _, loss, record = st.gln_teleport(objective, weights, lr=1e-7, steps=8, hidden=hidden)
        assert record.loss_after == pytest.approx(loss.item())
        losses[hidden] = loss.item()
    assert abs(losses["start"] - losses["updated"]) > 1.0  # the first-order change of the original's h
