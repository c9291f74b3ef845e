"""SO(2) teleportation for the 2-D problems of :mod:`symtele.problems`.

With ``g_θ · w = φ⁻¹(R_θ φ(w))`` the loss is unchanged for every angle θ, while the
gradient norm is not. Starting from an angle θ₀ drawn uniformly in ``[0, π)``,
``steps`` rounds of gradient ascent

    θ ← θ + lr · ∂/∂θ ‖∇f(g_θ · w)‖²

look for the steepest point of the level set; the teleported point is ``g_θ · w``.
A step whose point is not finite or changes the loss beyond ``loss_rtol`` is
rejected and the teleport keeps the last good angle.
"""
from __future__ import annotations

import time

import torch

from . import checks
from .history import TeleportRecord, to_list
from .invariance import default_rtol, preserved
from .problems import Problem2D


def _grad_norm_sq_at(problem: Problem2D, w: torch.Tensor, angle: torch.Tensor, create_graph: bool):
    point = problem.rotate(w, angle)
    loss = problem.loss([point])
    (g,) = torch.autograd.grad(loss.sum(), point, create_graph=create_graph)
    return loss, g.square().sum(-1)


def so2_teleport(problem: Problem2D, w: torch.Tensor, *, lr: float = 1e-3, steps: int = 10,
                 angle=None, generator: torch.Generator | None = None, loss_rtol: float | None = None):
    """Teleport ``w`` (shape ``(..., 2)``) along the problem's rotations.

    Returns ``(w_teleported, record)``. ``angle`` fixes θ₀ (a float or a tensor of
    the batch shape); otherwise θ₀ ~ U[0, π) from ``generator``.
    """
    if not isinstance(problem, Problem2D):
        raise TypeError(f"Invalid problem: SO(2) teleport needs a 2-D problem, got {type(problem).__name__}")
    lr = checks.positive("lr", lr)
    steps = checks.count("steps", steps)
    checks.finite_tensor("w", w)
    if w.shape[-1] != 2:
        raise ValueError(f"Invalid w: last dimension must be 2 (x, y), got shape {tuple(w.shape)}")
    rtol = default_rtol(torch.float64) if loss_rtol is None else checks.positive("loss_rtol", loss_rtol)

    start = time.perf_counter()
    dtype = w.dtype
    w = w.detach().to(torch.float64)  # 2-D: work in double precision, hand back the caller's dtype
    batch = w.shape[:-1]
    if angle is None:
        theta = torch.rand(batch, generator=generator, dtype=torch.float64) * torch.pi
        theta = theta.to(w.device)
    else:
        theta = torch.as_tensor(angle, dtype=w.dtype, device=w.device).expand(batch).clone()
        checks.finite_tensor("angle", theta)

    with torch.enable_grad():
        leaf = w.requires_grad_(True)
        loss0 = problem.loss([leaf])
        (g0,) = torch.autograd.grad(loss0.sum(), leaf)
    loss0 = loss0.detach()
    w = w.detach()
    start_loss = problem.loss([w.to(dtype)])  # the loss at the caller's point, in the caller's dtype
    record = TeleportRecord(method="so2", loss_before=to_list(start_loss),
                            grad_norm_sq_before=to_list(g0.square().sum(-1)))

    def acceptable(candidate):
        point = problem.rotate(w, candidate)
        return bool((torch.isfinite(point).all(-1) & preserved(loss0, problem.loss([point]), rtol)).all())

    angles = [theta]
    if not acceptable(theta):
        theta = torch.zeros_like(theta)  # the identity is always in the group
        angles = [theta]
        record.stopped = "initial angle rejected: loss not preserved"
    else:
        for _ in range(steps):
            with torch.enable_grad():
                th = theta.detach().requires_grad_(True)
                _, gsq = _grad_norm_sq_at(problem, w, th, create_graph=True)
                (dtheta,) = torch.autograd.grad(gsq.sum(), th)
            candidate = theta + lr * dtheta
            if not (torch.isfinite(candidate).all() and acceptable(candidate)):
                record.stopped = "step rejected: non-finite or loss not preserved"
                break
            theta = candidate.detach()
            angles.append(theta)
            record.steps_taken += 1

    # Rounding the point to the caller's dtype must keep the loss too; else walk back the angles.
    tolerance = default_rtol(dtype) if loss_rtol is None else rtol
    for theta in reversed(angles):
        teleported = problem.rotate(w, theta).detach().to(dtype)
        if bool(preserved(start_loss, problem.loss([teleported]), tolerance).all()):
            break
        record.stopped = "rounding to the caller's dtype broke the loss: walked back to an earlier angle"
        record.steps_taken -= 1
    else:
        teleported, theta = w.to(dtype), torch.zeros_like(theta)
        record.steps_taken = 0
    with torch.enable_grad():
        leaf = teleported.clone().requires_grad_(True)
        loss1 = problem.loss([leaf])
        (g1,) = torch.autograd.grad(loss1.sum(), leaf)
    record.loss_after = to_list(loss1.detach())
    record.grad_norm_sq_after = to_list(g1.square().sum(-1))
    record.trace["angle"] = [to_list(theta)]
    record.cost_s = time.perf_counter() - start
    return teleported, record
