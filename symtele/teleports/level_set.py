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
commensurate whatever the scale of the loss. (With the writeup's ``γ = 10⁹`` the largest ρ
accepted on x² + 9y² from (8, −2) is 4.8e-7, and 100 iterations move ‖∇L‖² from 1552 to
1552.0006, against 3600, the level set's maximum, which the scaled penalty reaches.)

The iteration stops early when the KKT residual ``‖P_t q_t‖`` (``P_t`` projects onto the
orthogonal complement of ``∇L(x_t)``) is at most ``eps`` and ``r_t ≤ delta``. A trial point
that passes the merit test but lies above the level by more than ``delta`` is pulled back
onto the level set by Newton steps along ``−∇L``, ``x ← x − r ∇L/‖∇L‖²``; when that fails
(on Rosenbrock ‖∇L‖² grows like ``x⁶`` and the penalty like ``x⁴``, so the merit can reward a
far-away step) the trial counts as rejected and ρ is halved. The returned point is the
iterate with the largest gradient norm among those with ``L ≤ L(w_k) + delta``, so the loss
never rises by more than ``delta``; if that is the starting point, the record says the
teleport moved nothing.

Deviations from the writeup's Algorithm 3, all measured in notebook 03: ``γ`` is scaled to
the problem instead of the writeup's ``γ = 10⁹``; ρ starts each iteration at twice the last
accepted value instead of being reset; accepted points are pulled back into the sub-level set;
and the best feasible iterate is returned instead of the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import checks
from ..history import TeleportRecord
from .base import Teleport


class _Counts:
    """Loss gradients and Hessian-vector products computed so far by one teleport."""

    def __init__(self):
        self.grad = self.hvp = 0


def _loss_grad(loss_fn, x, counts: _Counts | None = None, create_graph=False):
    if counts is not None:
        counts.grad += 1
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        loss = loss_fn(leaf)
        (g,) = torch.autograd.grad(loss, leaf, create_graph=create_graph)
    return loss, g, leaf


def _loss_grad_hvp(loss_fn, x, counts: _Counts | None = None):
    """``L(x)``, ``∇L(x)`` and ``q = ∇²L(x) ∇L(x)`` (differentiating ``½‖∇L‖²``)."""
    if counts is not None:
        counts.hvp += 1
    with torch.enable_grad():
        loss, g, leaf = _loss_grad(loss_fn, x, counts, create_graph=True)
        (q,) = torch.autograd.grad(0.5 * g.square().sum(), leaf)
    return loss.detach(), g.detach(), q.detach()


def _restore(loss_fn, x, level, delta, steps, counts, known=None):
    """Newton steps along ``−∇L`` onto ``L = L(w_k)``: ``x ← x − (L(x) − L(w_k))₊ ∇L / ‖∇L‖²``.

    ``known`` is ``(L(x), ∇L(x))`` when the caller has them (they are not computed again). Returns the
    point, or ``None`` if it is not back within ``delta`` of the level after ``steps`` steps, or as soon
    as a step fails to shrink the gap (the iteration is then not converging).
    """
    previous = None
    for _ in range(steps + 1):
        loss, g = known if known is not None else _loss_grad(loss_fn, x, counts)[:2]
        known = None
        gap = loss.detach() - level
        if not bool(torch.isfinite(gap)) or (previous is not None and not bool(gap < previous)):
            return None
        if bool(gap <= delta):
            return x
        gsq = g.detach().square().sum()
        if not bool(gsq > 0):
            return None
        x = (x - gap / gsq * g.detach()).detach()
        if not bool(torch.isfinite(x).all()):
            return None
        previous = gap
    return None


def _merit(loss, grad_sq, level, gamma):
    """``φ_γ = −½‖∇L‖² + γ (L − L(w_k))₊``."""
    return -0.5 * grad_sq + gamma * torch.clamp(loss - level, min=0)


def _line_search(loss_fn, x, loss, g, q, level, gamma, rho, o, counts):
    """One sequential step from ``x``, halving ρ from ``rho`` until a trial point is accepted.

    A trial point is accepted when it passes the merit test and, when it lies above the level by more than
    ``delta``, can be pulled back onto it; one that is not finite, fails the test, or cannot be pulled back is
    a rejected trial. Returns ``(ρ, x_new, None)`` for the accepted step (pulled back if it had to be), or
    ``(None, None, reason)`` when ``line_search_steps`` trials fail.
    """
    gsq, gap = g.square().sum(), loss - level
    phi = _merit(loss, gsq, level, gamma)
    r, rejected = rho, "line search failed"
    for _ in range(o.line_search_steps):
        v = -torch.clamp(r * (q @ g) / gsq + gap, min=0) * g
        x_new = x + (r * q + v) / gsq
        if bool(torch.isfinite(x_new).all()):
            new_loss, new_g, _ = _loss_grad(loss_fn, x_new, counts)
            new_loss, new_g = new_loss.detach(), new_g.detach()
            if bool(torch.isfinite(new_loss)) and bool(torch.isfinite(new_g).all()):
                phi_new = _merit(new_loss, new_g.square().sum(), level, gamma)
                slope = -((q @ v) + r * q.square().sum()) / gsq - gamma * torch.clamp(gap, min=0)
                if bool(phi_new < phi + 0.5 * torch.clamp(slope, max=0)):
                    if not bool(new_loss - level > o.delta):
                        return r, x_new.detach(), None
                    back = _restore(
                        loss_fn, x_new.detach(), level, o.delta, o.restore_steps, counts, known=(new_loss, new_g)
                    )
                    if back is not None:
                        return r, back, None
                    rejected = "line search failed (its last accepted trial could not return to the sub-level set)"
        r = r / 2
    return None, None, rejected


def _stop_reason(gsq, kkt, gap, eps, delta) -> str | None:
    """Why the iteration ends at this point, or ``None`` to go on."""
    if not bool(gsq > 0):
        return "zero gradient"
    if kkt <= eps and gap <= delta:
        return "KKT conditions met"
    return None


def level_set_teleport(loss_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, **options):
    """Teleport the parameter vector ``w`` towards the steepest point of its sub-level set.

    Args:
        loss_fn: maps a 1-D tensor to a scalar; must be twice differentiable by autograd.
        w: the parameter vector (1-D, finite).
        **options: the fields of :class:`LevelSet` (``rho``, ``steps``, ``line_search_steps``, ``eps``,
            ``delta``, ``penalty``, ``restore_steps``, ``gamma``).

    Returns:
        ``(w_new, record)``: the teleported vector and the :class:`~symtele.history.TeleportRecord`.
        ``record.trace`` holds per iteration the objective ``½‖∇L‖²``, the constraint gap ``L − L(w_k)``, the
        KKT residual ``‖P q‖`` and the accepted step size ρ; ``record.grad_evals`` and ``record.hvp_evals``
        count the gradients and Hessian-vector products it took. When the returned point is ``w`` itself,
        ``record.stopped`` begins with "moved nothing".

    Raises:
        TypeError: ``w`` is not a floating-point tensor, or an option has the wrong type.
        ValueError: an option out of range, a non-finite ``w``, or a ``w`` that is not 1-D.
    """
    return _teleport(loss_fn, w, LevelSet(**options))


def _teleport(loss_fn, w: torch.Tensor, o: LevelSet):
    """:func:`level_set_teleport` with its options checked: iterate, pull back, keep the best point, record."""
    checks.finite_vector("w", w)
    start = time.perf_counter()
    counts = _Counts()
    x = w.detach().clone()
    level, g, q = _loss_grad_hvp(loss_fn, x, counts)
    loss = level
    record = TeleportRecord(method="levelset", loss_before=level.item(), grad_norm_sq_before=g.square().sum().item())
    trace = {"objective": [], "constraint_gap": [], "kkt_residual": [], "step_size": []}
    best, best_gsq, moved = x, g.square().sum(), False
    if o.gamma is not None:
        gamma = torch.as_tensor(o.gamma, dtype=level.dtype, device=level.device)
    else:
        gamma = o.penalty * best_gsq / level.abs().clamp_min(torch.finfo(level.dtype).tiny)
    rho_t, rho_max = o.rho, o.rho * 2.0**20

    for _ in range(o.steps):
        gsq, gap = g.square().sum(), loss - level
        kkt = (q - (q @ g) / gsq * g).norm()
        trace["objective"].append(0.5 * gsq.item())
        trace["constraint_gap"].append(gap.item())
        trace["kkt_residual"].append(kkt.item())
        record.stopped = _stop_reason(gsq, kkt, gap, o.eps, o.delta)
        if record.stopped:
            trace["step_size"].append(0.0)
            break
        r, x_new, failure = _line_search(loss_fn, x, loss, g, q, level, gamma, rho_t, o, counts)
        if r is None:
            record.stopped = failure
            trace["step_size"].append(0.0)
            break
        trace["step_size"].append(r)
        rho_t = min(2 * r, rho_max)
        x = x_new
        record.steps_taken += 1
        loss, g, q = _loss_grad_hvp(loss_fn, x, counts)
        if bool(loss - level <= o.delta) and bool(g.square().sum() > best_gsq):
            best, best_gsq, moved = x, g.square().sum(), True

    final_loss, final_g, final_q = _loss_grad_hvp(loss_fn, best)  # a measurement, not counted in the cost
    record.loss_after = final_loss.item()
    record.grad_norm_sq_after = final_g.square().sum().item()
    record.newton_angle_deg = newton_angle(final_g, final_q)
    if not moved:
        reason = record.stopped or f"no iterate of {record.steps_taken} steeper within the sub-level set"
        record.stopped = f"moved nothing: {reason}"
    record.trace = trace
    record.grad_evals, record.hvp_evals = counts.grad, counts.hvp
    record.cost_s = time.perf_counter() - start
    return best.detach(), record


def newton_angle(g: torch.Tensor, q: torch.Tensor) -> float | None:
    """The angle in degrees between the lines of the gradient ``g`` and of ``q = ∇²L g``.

    Args:
        g: the gradient, a vector.
        q: the Hessian-vector product ``∇²L g``, a vector of the same size.

    Returns:
        ``arccos(|⟨g, q⟩| / (‖g‖ ‖q‖))`` in degrees (between 0 and 90), or ``None`` if either is zero.
    """
    norms = g.norm() * q.norm()
    if not bool(norms > 0):
        return None
    cosine = ((g @ q).abs() / norms).clamp(max=1.0)
    return float(torch.rad2deg(torch.arccos(cosine)))


def flatten(params) -> torch.Tensor:
    """The parameters as one vector.

    Args:
        params: the parameter tensors.

    Returns:
        Their entries concatenated, each tensor flattened in turn.
    """
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(vector: torch.Tensor, like) -> list[torch.Tensor]:
    """``vector`` cut into views shaped like ``like`` (the inverse of :func:`flatten`).

    Args:
        vector: a 1-D tensor with at least as many entries as ``like`` has in all.
        like: the tensors whose shapes the pieces take, in order.

    Returns:
        One view of ``vector`` per tensor of ``like``.
    """
    out, i = [], 0
    for p in like:
        out.append(vector[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


class OnFlatParameters(Teleport):
    """What the level-set teleports share: they act on one problem copy's parameters flattened into one vector.

    A subclass implements ``solve(loss_fn, w) -> (w_new, record)``.
    """

    def solve(self, loss_fn, w):
        """Teleport the flat parameter vector ``w``.

        Args:
            loss_fn: the loss as a function of the flat parameter vector.
            w: the flat parameter vector.

        Returns:
            ``(w_new, record)``: the teleported vector and the :class:`~symtele.history.TeleportRecord`.

        Raises:
            NotImplementedError: always, in this class; each level-set teleport overrides it.
        """
        raise NotImplementedError

    def check(self, objective, params):
        """Raise unless ``objective`` at ``params`` is one problem copy (a scalar loss).

        Args:
            objective: the objective to teleport.
            params: its parameters, at which the loss is evaluated.

        Raises:
            ValueError: the loss is not a scalar (a batch of problem copies).
        """
        loss = objective.loss(params)
        if loss.dim() != 0:
            raise ValueError(
                f"Invalid objective: level-set teleport takes one problem copy, got batch {tuple(loss.shape)}"
            )

    def __call__(self, objective, params, grads, loss):
        """Flatten ``params``, teleport them with :meth:`solve`, and cut the result back to their shapes.

        Args:
            objective: the objective (one problem copy).
            params: its parameters.
            grads: the gradient at ``params`` (unused: recomputed).
            loss: the loss at ``params`` (unused: recomputed).

        Returns:
            ``(params, grads, loss, record)``: the teleported parameters, the gradient and loss there, and the
            record of :meth:`solve`.
        """
        like = [p.detach() for p in params]
        w, record = self.solve(lambda v: objective.loss(unflatten(v, like)), flatten(like))
        params = [p.clone() for p in unflatten(w, like)]
        loss, grads = objective.loss_and_grad(params)
        return params, grads, loss, record


@dataclass(frozen=True)
class LevelSet(OnFlatParameters):
    """Level-set teleport on the flattened parameters (any twice-differentiable objective).

    At most ``steps`` iterations, each with at most ``line_search_steps`` trials, halving ρ from twice the
    last accepted step (``rho`` at first; never more than ``rho · 2²⁰``).

    Args:
        rho: the first step size ρ (positive).
        steps: the most iterations (``≥ 0``).
        line_search_steps: the most trials of one line search (``≥ 1``).
        eps: the tolerance on the KKT residual (``≥ 0``): the iteration ends early when the residual is at most
            ``eps`` and ``L − L(w_k) ≤ delta``.
        delta: the rise of the loss allowed (``≥ 0``): a trial point more than ``delta`` above the level is
            pulled back, and the point returned has ``L ≤ L(w_k) + delta``.
        penalty: scales the merit's penalty, ``γ = penalty · ‖∇L(w_k)‖² / max(|L(w_k)|, tiny)`` (positive).
        restore_steps: the most Newton steps that pull a trial point above the level back (``≥ 0``).
        gamma: the merit's penalty ``γ`` as an absolute value (such as the writeup's ``1e9``; positive) instead
            of the scaled one; ``None`` for the scaled one.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: a field out of range (``rho``, ``penalty`` or ``gamma`` not finite and positive, a negative
            ``steps``, ``eps``, ``delta`` or ``restore_steps``, ``line_search_steps < 1``).
    """

    name = "levelset"
    rho: float = 1.0
    steps: int = 100
    line_search_steps: int = 50
    eps: float = 1e-6
    delta: float = 1e-8
    penalty: float = 3.0
    restore_steps: int = 50
    gamma: float | None = None

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        self._set(
            rho=checks.positive("rho", self.rho),
            steps=checks.count("steps", self.steps),
            line_search_steps=checks.count("line_search_steps", self.line_search_steps, minimum=1),
            eps=checks.non_negative("eps", self.eps),
            delta=checks.non_negative("delta", self.delta),
            penalty=checks.positive("penalty", self.penalty),
            restore_steps=checks.count("restore_steps", self.restore_steps),
            gamma=None if self.gamma is None else checks.positive("gamma", self.gamma),
        )

    def solve(self, loss_fn, w):
        """Teleport the flat parameter vector ``w`` as :func:`level_set_teleport` does, with these options.

        Args:
            loss_fn: the loss as a function of the flat parameter vector.
            w: the flat parameter vector.

        Returns:
            ``(w_new, record)``, as :func:`level_set_teleport`.

        Raises:
            TypeError: ``w`` is not a floating-point tensor.
            ValueError: a non-finite ``w``, or a ``w`` that is not 1-D.
        """
        return _teleport(loss_fn, w, self)
