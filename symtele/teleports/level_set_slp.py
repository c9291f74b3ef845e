"""Level-set teleportation by normalised sequential linear programming (Mishkin, Bietti & Gower 2024).

The formulation of the paper's code, next to :mod:`~symtele.teleports.level_set` (the writeup's):
maximise the *log* of the gradient norm on the sub-level set,

    max_w φ(w) = ½ log‖∇L(w)‖²   subject to   L(w) ≤ L₀ = L(w_k).

At an iterate ``x`` with ``g = ∇L(x)``, ``G = ‖g‖²``, ``q = ∇²L(x) g`` (one Hessian-vector product),
``u = q / G = ∇φ(x)``, ``s = ⟨u, g⟩`` and ``c = L(x) − L₀``, the step for a step size ρ is

    v = (ρ s + c) / G,      x⁺ = x + ρ u − v g     (the ``− v g`` term only when v > 0),

the projection of the ascent step ``x + ρ u`` onto the linearised sub-level set
``{z : c + ⟨g, z − x⟩ ≤ 0}``. ρ is found by backtracking (ρ ← βρ) until the merit

    M(x) = ½ log‖∇L(x)‖² − γ (L(x) − L₀)₊,   γ = penalty if c ≤ 0, else penalty · (s/G) · v / c

(γ recomputed for each trial ρ) passes the Armijo test ``M(x⁺) ≥ M(x) + α (γ c₊ + ½⟨u, x⁺ − x⟩)``.
A trial point that is not finite, or where L or ∇L is not, is rejected like a failed test. After an
accepted step whose Armijo ratio (the test's left side over its right side) is at least ``grow_ratio``,
ρ grows to ρ/β for the next iteration; otherwise the accepted ρ carries over. Being a ratio of
log-values, it reaches 5 only when ½ log‖∇L‖² is just above 0, so ρ rarely grows. The iteration stops when

    ‖(s/G) g − u‖² ≤ tol   and   c₊ ≤ tol     (``kkt_residual``: the part of ∇φ off the normal ∇L),

when no trial of a line search passes, or when ρ ≤ ``min_rho``. (On a failed search the reference
grows ρ 32-fold and tries again from the same point; here it ends the teleport. A failure happens
when a step overshoots far above L₀: on x² + 9y² from (2, −0.5) the first step reaches c ≈ 0.84,
where γ is too small for any step back to pass the test.)

Which point is returned: the reference returns the last iterate, which approaches the level set from
outside (c > 0, shrinking like 1/k) and so is usually a little above L₀. Here the loss never rises
by more than ``delta``: the result is the iterate with the largest ‖∇L‖² among those with
``L ≤ L₀ + delta``, the start included. With ``pull_back`` (the default) the last iterate, when above
that, is first pulled back onto the level set by at most :data:`PULL_BACK_STEPS` Newton steps along
``−∇L``, ``x ← x − (L(x) − L₀)₊ ∇L / ‖∇L‖²``, and competes too: with the paper's code's constants
(100 steps) no iterate but the start lies within ``delta`` of the sub-level set on x² + 9y², Booth
or Rosenbrock, so without the pull-back the teleport would move nothing, while one or two Newton steps
keep almost all the gain (‖∇L‖² 1552 → 3380.57 on x² + 9y² from (8, −2), against 3380.59 for the last iterate).

Cost: one gradient per trial point (the start included; an accepted trial's gradient is reused),
one Hessian-vector product per iteration, from the graph of the gradient already built, and one
gradient per pull-back step. ``record.grad_evals`` and ``record.hvp_evals`` count them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import checks
from ..history import TeleportRecord
from .level_set import OnFlatParameters

#: the constants of the paper's 2-D experiments (its Figure 1); the defaults are those of its main code
FIGURE_1 = {"rho": 10.0, "steps": 1000, "beta": 0.8, "line_search_steps": 100}

#: at most this many Newton steps pull the last iterate back onto the level set
PULL_BACK_STEPS = 20


def _finite(*tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class _Evaluator:
    """``L`` and ``∇L`` of ``loss_fn``, counting the gradients and Hessian-vector products it computes."""

    def __init__(self, loss_fn):
        self.loss_fn, self.grads, self.hvps = loss_fn, 0, 0

    def __call__(self, x):
        """``(L(x), ∇L(x), point)``, keeping in ``point`` the graph of ∇L for :meth:`hvp`."""
        self.grads += 1
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            loss = self.loss_fn(leaf)
            (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
        return loss.detach(), g.detach(), (leaf, g)

    def hvp(self, point):
        """``∇²L(x) ∇L(x)`` from the graph kept at ``x`` (zero where ∇L does not depend on x)."""
        self.hvps += 1
        leaf, g = point
        if not g.requires_grad:
            return torch.zeros_like(leaf)
        with torch.enable_grad():
            (q,) = torch.autograd.grad(g, leaf, grad_outputs=g.detach(), allow_unused=True)
        return torch.zeros_like(leaf) if q is None else q.detach()


def _line_search(evaluate, x, loss, g, q, level, rho, o):
    """Backtrack ρ ← βρ from ``rho`` until the trial step passes the Armijo test on the merit.

    Returns ``(ρ, ratio, x⁺, L(x⁺), ∇L(x⁺), point)`` for the accepted trial (``ratio``: the test's
    left side over its right side), or ``None`` when ``line_search_steps`` trials fail.
    """
    gsq = g.square().sum().item()
    u = q / gsq
    s, gap = (u @ g).item(), (loss - level).item()
    excess = max(gap, 0.0)
    merit = 0.5 * math.log(gsq)
    for _ in range(o.line_search_steps):
        v = (rho * s + gap) / gsq
        x_new = x + rho * u - v * g if v > 0 else x + rho * u
        gamma = o.penalty * (s / gsq) * v / excess if excess > 0 else o.penalty
        if _finite(x_new):
            new_loss, new_g, point = evaluate(x_new)
            new_gsq = new_g.square().sum().item()
            if _finite(new_loss, new_g) and new_gsq > 0:
                lhs = 0.5 * math.log(new_gsq) - gamma * max((new_loss - level).item(), 0.0)
                rhs = merit - (1 - o.alpha) * gamma * excess + o.alpha * 0.5 * (u @ (x_new - x)).item()
                if lhs >= rhs:
                    return rho, (lhs / rhs if rhs != 0 else math.inf), x_new, new_loss, new_g, point
        rho *= o.beta
    return None


def _pull_back(evaluate, x, loss, g, level, delta):
    """Newton steps ``x ← x − (L − L₀) ∇L / ‖∇L‖²`` until ``L ≤ L₀ + delta``: ``(x, L, ∇L)`` or ``None``."""
    for _ in range(PULL_BACK_STEPS):
        gap, gsq = (loss - level).item(), g.square().sum().item()
        if not gsq > 0:
            return None
        x = x - gap / gsq * g
        if not _finite(x):
            return None
        loss, g, _ = evaluate(x)
        if not _finite(loss, g):
            return None
        if (loss - level).item() <= delta:
            return x, loss, g
    return None


def level_set_slp_teleport(loss_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, **options):
    """Teleport the parameter vector ``w`` towards the steepest point of its sub-level set (normalised SLP).

    Args:
        loss_fn: maps a 1-D tensor to a scalar; must be twice differentiable by autograd.
        w: the parameter vector (1-D, finite).
        **options: the fields of :class:`LevelSetSLP`.

    Returns:
        ``(w_new, record)``: the teleported vector and the :class:`~symtele.history.TeleportRecord`.
        ``record.trace`` holds per iteration the objective ``½‖∇L‖²``, the constraint gap ``L − L₀``, the KKT
        residual ``‖(s/G) g − u‖²`` and the accepted step size ρ (0.0 when none); ``record.grad_evals`` and
        ``record.hvp_evals`` count the gradients and Hessian-vector products it took. When the returned point
        is ``w`` itself, ``record.stopped`` begins with "moved nothing".

    Raises:
        TypeError: ``w`` is not a floating-point tensor, or an option has the wrong type.
        ValueError: an option out of range, a non-finite ``w``, or a ``w`` that is not 1-D.
    """
    return _teleport(loss_fn, w, LevelSetSLP(**options))


def _teleport(loss_fn, w: torch.Tensor, o: LevelSetSLP):
    """:func:`level_set_slp_teleport` with its options checked: iterate, pull back, keep the best point, record."""
    checks.finite_vector("w", w)
    start_time = time.perf_counter()
    evaluate = _Evaluator(loss_fn)
    x = w.detach().clone()
    level, g, point = evaluate(x)
    loss, gsq = level, g.square().sum().item()
    record = TeleportRecord(method="levelset-slp", loss_before=level.item(), grad_norm_sq_before=gsq)
    trace = {"objective": [], "constraint_gap": [], "kkt_residual": [], "step_size": []}
    start = best = (x, level.item(), gsq)
    rho = o.rho
    if not _finite(level, g):
        record.stopped = "non-finite loss or gradient at the start"

    for _ in range(0 if record.stopped else o.steps):
        if not gsq > 0:
            record.stopped = "zero gradient"
            break
        q = evaluate.hvp(point)
        if not _finite(q):
            record.stopped = "non-finite Hessian-vector product"
            break
        u, gap = q / gsq, (loss - level).item()
        kkt = ((u @ g).item() / gsq * g - u).square().sum().item()
        trace["objective"].append(0.5 * gsq)
        trace["constraint_gap"].append(gap)
        trace["kkt_residual"].append(kkt)
        if kkt <= o.tol and gap <= o.tol:
            record.stopped = "stopping test met"
        step = None if record.stopped else _line_search(evaluate, x, loss, g, q, level, rho, o)
        if step is None:
            record.stopped = record.stopped or "line search failed"
            trace["step_size"].append(0.0)
            break
        accepted, ratio, x, loss, g, point = step
        trace["step_size"].append(accepted)
        record.steps_taken += 1
        gsq = g.square().sum().item()
        if (loss - level).item() <= o.delta and gsq > best[2]:
            best = (x, loss.item(), gsq)
        rho = accepted / o.beta if ratio >= o.grow_ratio else accepted
        if rho <= o.min_rho:
            record.stopped = f"step size {rho:.3g} at or below min_rho"
            break

    last = (loss - level).item(), gsq
    if o.pull_back and last[0] > o.delta and _finite(loss, g):
        pulled = _pull_back(evaluate, x, loss, g, level, o.delta)
        if pulled is not None and pulled[2].square().sum().item() > best[2]:
            best = (pulled[0], pulled[1].item(), pulled[2].square().sum().item())

    if best is start:
        why = record.stopped or ("steps=0" if o.steps == 0 else f"all {o.steps} steps taken")
        if record.steps_taken > 0:
            why = (
                f"no iterate within the sub-level set beat the start (last iterate: L − L₀ = {last[0]:.3g}, "
                f"‖∇L‖² = {last[1]:.6g}); {why}"
            )
        record.stopped = f"moved nothing: {why}"
    x, record.loss_after, record.grad_norm_sq_after = best
    record.trace = trace
    record.grad_evals, record.hvp_evals = evaluate.grads, evaluate.hvps
    record.cost_s = time.perf_counter() - start_time
    return x.detach(), record


def _fraction(name: str, value) -> float:
    """``value`` as a float in (0, 1)."""
    value = checks.positive(name, value)
    if value >= 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be < 1)")
    return value


@dataclass(frozen=True)
class LevelSetSLP(OnFlatParameters):
    """Normalised-SLP level-set teleport on the flattened parameters (any twice-differentiable objective).

    At most ``steps`` iterations, each a line search of at most ``line_search_steps`` trials from the carried
    step size (``rho`` at first). The defaults are the constants of the paper's main code; :data:`FIGURE_1`
    holds those of its 2-D experiments.

    Args:
        rho: the first step size ρ (positive).
        steps: the most iterations (``≥ 0``).
        beta: the step size shrinks by ``beta`` after each rejected trial and grows by ``1/beta`` after an
            acceptance whose Armijo ratio is at least ``grow_ratio`` (in (0, 1)).
        line_search_steps: the most trials of one line search (``≥ 1``).
        alpha: the Armijo fraction (in (0, 1)).
        penalty: the scale of the merit's penalty γ (positive).
        grow_ratio: the Armijo ratio at which the step size grows (positive).
        tol: the stopping tolerance of the KKT residual and of the constraint gap (``≥ 0``).
        min_rho: the step size at or below which the iteration stops (``≥ 0``).
        delta: the returned point has ``L ≤ L₀ + delta`` (``≥ 0``).
        pull_back: let the last iterate compete after at most :data:`PULL_BACK_STEPS` Newton steps back onto
            the level set.

    Raises:
        TypeError: ``pull_back`` not a bool, or another field of the wrong type.
        ValueError: a field out of range (``rho``, ``penalty`` or ``grow_ratio`` not finite and positive,
            ``beta`` or ``alpha`` outside (0, 1), a negative ``steps``, ``tol``, ``min_rho`` or ``delta``,
            ``line_search_steps < 1``).
    """

    name = "levelset-slp"
    rho: float = 1.0
    steps: int = 100
    beta: float = 0.5
    line_search_steps: int = 25
    alpha: float = 0.5
    penalty: float = 0.1
    grow_ratio: float = 5.0
    tol: float = 1e-6
    min_rho: float = 1e-16
    delta: float = 1e-8
    pull_back: bool = True

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        if not isinstance(self.pull_back, bool):
            raise TypeError(f"Invalid pull_back: {self.pull_back!r} (expected True or False)")
        self._set(
            rho=checks.positive("rho", self.rho),
            steps=checks.count("steps", self.steps),
            beta=_fraction("beta", self.beta),
            line_search_steps=checks.count("line_search_steps", self.line_search_steps, minimum=1),
            alpha=_fraction("alpha", self.alpha),
            penalty=checks.positive("penalty", self.penalty),
            grow_ratio=checks.positive("grow_ratio", self.grow_ratio),
            tol=checks.non_negative("tol", self.tol),
            min_rho=checks.non_negative("min_rho", self.min_rho),
            delta=checks.non_negative("delta", self.delta),
        )

    def solve(self, loss_fn, w):
        """Teleport the flat parameter vector ``w`` as :func:`level_set_slp_teleport` does, with these options.

        Args:
            loss_fn: the loss as a function of the flat parameter vector.
            w: the flat parameter vector.

        Returns:
            ``(w_new, record)``, as :func:`level_set_slp_teleport`.

        Raises:
            TypeError: ``w`` is not a floating-point tensor.
            ValueError: a non-finite ``w``, or a ``w`` that is not 1-D.
        """
        return _teleport(loss_fn, w, self)
