"""Level-set teleportation (Mishkin, Bietti & Gower 2024; writeup Algorithm 3).

Instead of moving along a symmetry, solve

    max_w ½‖∇L(w)‖²   subject to   L(w) ≤ L(w_k)

by sequential linearised steps. With ``g_t = ‖∇L(x_t)‖²``, ``q_t = ∇²L(x_t) ∇L(x_t)``
(a Hessian-vector product) and ``r_t = L(x_t) − L(w_k)``, the step of the log-objective
subproblem is (writeup Proposition 2.2)

    v_t = −(ρ ⟨q_t, ∇L(x_t)⟩ / g_t + r_t)₊ ∇L(x_t),      x_{t+1} = x_t + (ρ q_t + v_t) / g_t ,

with ρ chosen by an Armijo-type line search on the merit function
``φ_γ(x) = −½‖∇L(x)‖² + γ (L(x) − L(w_k))₊``: starting from twice the last accepted ρ,
halve ρ until

    φ_γ(x_{t+1}) < φ_γ(x_t) + ½ min(0, D_t),   D_t = −(⟨q_t, v_t⟩ + ρ‖q_t‖²) / g_t − γ (r_t)₊ ,

``D_t`` being the bound on the directional derivative of the merit (writeup Lemma 2.3).
The penalty is ``γ = penalty · ‖∇L(w_k)‖² / L(w_k)``, which makes the merit's two terms
commensurate whatever the scale of the loss. (The writeup's ``γ = 10⁹`` accepts only
steps of about ``10⁻⁹``: on x² + 9y² from (8, −2), 100 iterations move ‖∇L‖² from 1552
to 1552.006, against 3600, the level set's maximum, reached here.)

The iteration stops early when the KKT residual ``‖P_t q_t‖`` (``P_t`` projects onto the
orthogonal complement of ``∇L(x_t)``) is at most ``eps`` and ``r_t ≤ delta``. An
accepted step that leaves the sub-level set by more than ``delta`` is pulled back onto
the level set by Newton steps along ``−∇L``, ``x ← x − r ∇L/‖∇L‖²``. The returned point is the
iterate with the largest gradient norm among those with ``L ≤ L(w_k) + delta``, so the loss
never rises by more than ``delta``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import checks
from ..history import TeleportRecord
from .base import Teleport


def _loss_grad(loss_fn, x, create_graph=False):
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        loss = loss_fn(leaf)
        (g,) = torch.autograd.grad(loss, leaf, create_graph=create_graph)
    return loss, g, leaf


def _loss_grad_hvp(loss_fn, x):
    """``L(x)``, ``∇L(x)`` and ``q = ∇²L(x) ∇L(x)`` (differentiating ``½‖∇L‖²``)."""
    with torch.enable_grad():
        loss, g, leaf = _loss_grad(loss_fn, x, create_graph=True)
        (q,) = torch.autograd.grad(0.5 * g.square().sum(), leaf)
    return loss.detach(), g.detach(), q.detach()


def _restore(loss_fn, x, level, delta, steps):
    """Newton steps along ``−∇L`` onto ``L = L(w_k)``: ``x ← x − (L(x) − L(w_k))₊ ∇L / ‖∇L‖²``."""
    for _ in range(steps):
        loss, g, _ = _loss_grad(loss_fn, x)
        gap = loss.detach() - level
        if bool(gap <= delta):
            return x
        gsq = g.detach().square().sum()
        if not bool(gsq > 0):
            return None
        x = (x - gap / gsq * g.detach()).detach()
        if not bool(torch.isfinite(x).all()):
            return None
    return None


def _merit(loss, grad_sq, level, gamma):
    """``φ_γ = −½‖∇L‖² + γ (L − L(w_k))₊``."""
    return -0.5 * grad_sq + gamma * torch.clamp(loss - level, min=0)


def _line_search(loss_fn, x, loss, g, q, level, gamma, rho, halvings):
    """One sequential step from ``x``: halve ρ from ``rho`` until the merit decreases enough.

    Returns ``(ρ, x_new, L(x_new))`` for the accepted step, or ``None`` when ``halvings`` trials fail.
    """
    gsq, gap = g.square().sum(), loss - level
    phi = _merit(loss, gsq, level, gamma)

    def candidate(r):
        v = -torch.clamp(r * (q @ g) / gsq + gap, min=0) * g
        return x + (r * q + v) / gsq, v

    r = rho
    x_new, v = candidate(r)
    for _ in range(halvings):
        if bool(torch.isfinite(x_new).all()):
            new_loss, new_g, _ = _loss_grad(loss_fn, x_new)
            new_loss, new_g = new_loss.detach(), new_g.detach()
            if bool(torch.isfinite(new_loss)) and bool(torch.isfinite(new_g).all()):
                phi_new = _merit(new_loss, new_g.square().sum(), level, gamma)
                slope = -((q @ v) + r * q.square().sum()) / gsq - gamma * torch.clamp(gap, min=0)
                if bool(phi_new < phi + 0.5 * torch.clamp(slope, max=0)):
                    return r, x_new, new_loss
        r = r / 2
        x_new, v = candidate(r)
    return None


def _stop_reason(gsq, kkt, gap, eps, delta) -> str | None:
    """Why the iteration ends at this point, or ``None`` to go on."""
    if not bool(gsq > 0):
        return "zero gradient"
    if kkt <= eps and gap <= delta:
        return "KKT conditions met"
    return None


def level_set_teleport(loss_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, **options):
    """Teleport the parameter vector ``w`` towards the steepest point of its sub-level set.

    ``loss_fn`` maps a 1-D tensor to a scalar and must be twice differentiable by autograd.
    ``options`` are the fields of :class:`LevelSet` (``rho``, ``steps``, ``line_search_steps``,
    ``eps``, ``delta``, ``penalty``, ``restore_steps``). Returns ``(w_new, record)``;
    ``record.trace`` holds per iteration the objective ``½‖∇L‖²``, the constraint gap
    ``L − L(w_k)``, the KKT residual ``‖P q‖`` and the accepted step size ρ.
    """
    return _teleport(loss_fn, w, LevelSet(**options))


def _teleport(loss_fn, w: torch.Tensor, o: LevelSet):
    """:func:`level_set_teleport` with its options checked: iterate, pull back, keep the best point, record."""
    checks.finite_tensor("w", w)
    if w.dim() != 1:
        raise ValueError(f"Invalid w: expected a 1-D parameter vector, got shape {tuple(w.shape)}")
    start = time.perf_counter()
    x = w.detach().clone()
    level, g, q = _loss_grad_hvp(loss_fn, x)
    loss = level
    record = TeleportRecord(method="levelset", loss_before=level.item(), grad_norm_sq_before=g.square().sum().item())
    trace = {"objective": [], "constraint_gap": [], "kkt_residual": [], "step_size": []}
    best, best_gsq = x, g.square().sum()
    gamma = o.penalty * best_gsq / level.abs().clamp_min(torch.finfo(level.dtype).tiny)
    rho_t, rho_max = o.rho, o.rho * 2.0**20

    for _ in range(o.steps):
        gsq, gap = g.square().sum(), loss - level
        kkt = (q - (q @ g) / gsq * g).norm()
        trace["objective"].append(0.5 * gsq.item())
        trace["constraint_gap"].append(gap.item())
        trace["kkt_residual"].append(kkt.item())
        record.stopped = _stop_reason(gsq, kkt, gap, o.eps, o.delta)
        step = (
            None if record.stopped else _line_search(loss_fn, x, loss, g, q, level, gamma, rho_t, o.line_search_steps)
        )
        if step is None:
            record.stopped = record.stopped or "line search failed"
            trace["step_size"].append(0.0)
            break
        r, x, new_loss = step
        trace["step_size"].append(r)
        rho_t = min(2 * r, rho_max)
        x = x.detach()
        record.steps_taken += 1
        if bool(new_loss - level > o.delta):  # pull the iterate back into the sub-level set along −∇L
            x = _restore(loss_fn, x, level, o.delta, o.restore_steps)
            if x is None:
                record.stopped = "could not return to the sub-level set"
                break
        loss, g, q = _loss_grad_hvp(loss_fn, x)
        if bool(loss - level <= o.delta) and bool(g.square().sum() > best_gsq):
            best, best_gsq = x, g.square().sum()

    final_loss, final_g, _ = _loss_grad(loss_fn, best)
    record.loss_after = final_loss.item()
    record.grad_norm_sq_after = final_g.square().sum().item()
    record.trace = trace
    record.cost_s = time.perf_counter() - start
    return best.detach(), record


def flatten(params) -> torch.Tensor:
    """The parameters as one vector."""
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(vector: torch.Tensor, like) -> list[torch.Tensor]:
    """``vector`` cut into views shaped like ``like``."""
    out, i = [], 0
    for p in like:
        out.append(vector[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


@dataclass(frozen=True)
class LevelSet(Teleport):
    """Level-set teleport on the flattened parameters (any twice-differentiable objective): at most
    ``steps`` iterations, each with at most ``line_search_steps`` halvings of ρ from twice the last
    accepted step (``rho`` at first); the merit's penalty is ``γ = penalty · ‖∇L‖² / L``; the
    iteration ends early when the KKT residual is at most ``eps`` and ``L − L(w_k) ≤ delta``; an
    iterate above the level is pulled back with at most ``restore_steps`` Newton steps."""

    name = "levelset"
    rho: float = 1.0
    steps: int = 100
    line_search_steps: int = 50
    eps: float = 1e-6
    delta: float = 1e-8
    penalty: float = 3.0
    restore_steps: int = 50

    def __post_init__(self):
        self._set(
            rho=checks.positive("rho", self.rho),
            steps=checks.count("steps", self.steps),
            line_search_steps=checks.count("line_search_steps", self.line_search_steps, minimum=1),
            eps=checks.non_negative("eps", self.eps),
            delta=checks.non_negative("delta", self.delta),
            penalty=checks.positive("penalty", self.penalty),
            restore_steps=checks.count("restore_steps", self.restore_steps),
        )

    def check(self, objective, params):
        loss = objective.loss(params)
        if loss.dim() != 0:
            raise ValueError(
                f"Invalid objective: level-set teleport takes one problem copy, got batch {tuple(loss.shape)}"
            )

    def __call__(self, objective, params, grads, loss):
        like = [p.detach() for p in params]
        w, record = _teleport(lambda v: objective.loss(unflatten(v, like)), flatten(like), self)
        params = [p.clone() for p in unflatten(w, like)]
        loss, grads = objective.loss_and_grad(params)
        return params, grads, loss, record
