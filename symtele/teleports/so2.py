"""SO(2) teleportation for the 2-D problems of :mod:`symtele.problems`.

With ``g_θ · w = φ⁻¹(R_θ φ(w))`` the loss is unchanged for every angle θ, while the
gradient norm is not. Starting from an angle θ₀ drawn uniformly in ``[0, π)``,
``steps`` rounds of gradient ascent

    θ ← θ + lr · ∂/∂θ ‖∇f(g_θ · w)‖²

look for the steepest point of the level set; the teleported point is ``g_θ · w`` for the last
angle (``keep="last"``, the writeup's algorithm). A fixed step can overshoot (on Rosenbrock
‖∇f‖² varies by orders of magnitude along a level set) and θ₀ may start low, so the point
can be less steep than the start: the record then says so. ``keep="steepest"`` takes the
steepest angle visited instead, and the start itself when no angle visited is steeper, so
the teleport never ends less steep than it began (its record says when it kept an earlier
angle or moved nothing). A step whose point is not finite or changes the loss beyond
``loss_rtol`` is rejected and the ascent stops there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import checks
from ..history import TeleportRecord, to_list
from ..problems import Problem2D
from .base import Teleport
from .invariance import default_rtol, preserved


def _loss_and_grad(problem: Problem2D, w: torch.Tensor):
    """``(f(w), ∇f(w))`` per copy, detached."""
    with torch.enable_grad():
        leaf = w.detach().clone().requires_grad_(True)
        loss = problem.loss([leaf])
        (g,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), g


def _grad_norm_sq_at(problem: Problem2D, w: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``‖∇f(g_θ · w)‖²`` per copy, differentiable in ``angle``."""
    point = problem.rotate(w, angle)
    (g,) = torch.autograd.grad(problem.loss([point]).sum(), point, create_graph=True)
    return g.square().sum(-1)


def _initial_angle(w, angle, generator) -> torch.Tensor:
    """θ₀: ``angle`` broadcast to the batch, or drawn uniformly in ``[0, π)`` from ``generator``."""
    batch = w.shape[:-1]
    if angle is None:
        return (torch.rand(batch, generator=generator, dtype=torch.float64) * torch.pi).to(w.device)
    theta = torch.as_tensor(angle, dtype=w.dtype, device=w.device).expand(batch).clone()
    return checks.finite_tensor("angle", theta)


def _ascend(problem, w, theta, lr, steps, rtol, record) -> list[torch.Tensor]:
    """The accepted angles, θ₀ first: ``steps`` ascent steps, each rejected if it breaks the loss."""
    level = problem.loss([w])

    def acceptable(candidate):
        point = problem.rotate(w, candidate)
        return bool((torch.isfinite(point).all(-1) & preserved(level, problem.loss([point]), rtol)).all())

    if not acceptable(theta):
        record.stopped = "initial angle rejected: loss not preserved"
        return [torch.zeros_like(theta)]  # the identity is always in the group
    angles = [theta]
    for _ in range(steps):
        with torch.enable_grad():
            th = angles[-1].detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(_grad_norm_sq_at(problem, w, th).sum(), th)
        candidate = (angles[-1] + lr * slope).detach()
        if not (torch.isfinite(candidate).all() and acceptable(candidate)):
            record.stopped = "step rejected: non-finite or loss not preserved"
            break
        angles.append(candidate)
        record.steps_taken += 1
    return angles


def _chosen_angle(problem, w, angles, start_grad_sq, keep, record) -> torch.Tensor:
    """Per copy, the angle the teleport keeps.

    That is the last angle (``keep="last"``), or the visited angle of largest ``‖∇f(g_θ · w)‖²``, and then 0
    (the start) if none is steeper (``keep="steepest"``); the record says when the result is less steep than
    the start, when an earlier angle was kept, and when the teleport moved nothing.
    """
    values = torch.stack([_loss_and_grad(problem, problem.rotate(w, theta))[1].square().sum(-1) for theta in angles])
    last = len(angles) - 1
    if keep == "last":
        if not bool((values[last] >= start_grad_sq).all()):
            some = "" if values[last].dim() == 0 else " for some copies"
            note = (
                f"ended less steep than the start{some} (the ascent overshot or θ₀ fell low; keep='steepest' avoids it)"
            )
            record.stopped = "; ".join(filter(None, [record.stopped, note]))
        return angles[last]
    index = values.argmax(0)
    # an earlier angle only when it is steeper by more than rounding (near the top the ascent jitters)
    gain = values.gather(0, index.unsqueeze(0)).squeeze(0) > values[last] * (1 + 1e-9)
    index = torch.where(gain, index, torch.full_like(index, last))
    best = torch.stack(angles).gather(0, index.unsqueeze(0)).squeeze(0)
    steeper = values.gather(0, index.unsqueeze(0)).squeeze(0) > start_grad_sq
    notes = []
    if bool(((index != last) & steeper).any()):
        notes.append("kept the steepest angle visited, not the last (the ascent overshot)")
    if not bool(steeper.all()):
        some = "" if steeper.dim() == 0 else " for some copies"
        notes.append(f"moved nothing{some}: no angle visited was steeper than the start")
    if notes:
        record.stopped = "; ".join(filter(None, [record.stopped, *notes]))
    return torch.where(steeper, best, torch.zeros_like(best))


def _in_callers_dtype(problem, w, angles, start_loss, dtype, rtol, record):
    """The last angle whose point, rounded to ``dtype``, still keeps the loss; walks back if needed."""
    for theta in reversed(angles):
        teleported = problem.rotate(w, theta).detach().to(dtype)
        if bool(preserved(start_loss, problem.loss([teleported]), rtol).all()):
            return teleported, theta
        record.stopped = "rounding to the caller's dtype broke the loss: walked back to an earlier angle"
        record.steps_taken -= 1
    record.steps_taken = 0
    record.stopped = "moved nothing: rounding to the caller's dtype broke the loss at every angle kept"
    return w.to(dtype), torch.zeros_like(angles[0])


def so2_teleport(
    problem: Problem2D, w: torch.Tensor, *, angle=None, generator: torch.Generator | None = None, **options
):
    """Teleport ``w`` (shape ``(..., 2)``) along the problem's rotations.

    The ascent runs in double precision; the point is handed back in ``w``'s dtype (walking back to an
    earlier angle, or to ``w``, if rounding to that dtype breaks the loss).

    Args:
        problem: the 2-D problem, whose ``rotate`` is the group action.
        w: the point, shape ``(..., 2)`` (a batch of copies), finite.
        angle: θ₀ (a float or a tensor of the batch shape); ``None`` to draw θ₀ ~ U[0, π) from ``generator``.
        generator: the generator θ₀ is drawn from; by default a new one seeded with ``seed``.
        **options: the fields of :class:`SO2` (``lr``, ``steps``, ``seed``, ``loss_rtol``, ``keep``).

    Returns:
        ``(w_teleported, record)``: the teleported point in ``w``'s dtype and the
        :class:`~symtele.history.TeleportRecord` (its ``trace["angle"]`` is the angle kept).

    Raises:
        TypeError: ``problem`` is not a :class:`~symtele.problems.Problem2D`, ``w`` is not a floating-point
            tensor, or an option has the wrong type.
        ValueError: an option out of range, a non-finite ``w`` or ``angle``, or a last dimension of ``w`` other
            than 2.
    """
    o = SO2(**options)
    o.check(problem, [w])
    if generator is None:
        generator = torch.Generator().manual_seed(o.seed)
    return _teleport(problem, w, o, angle, generator)


def _teleport(problem, w, o: SO2, angle, generator):
    """:func:`so2_teleport` with its options checked: ascend on the angle, round to the caller's dtype, record."""
    checks.finite_tensor("w", w)
    if w.shape[-1] != 2:
        raise ValueError(f"Invalid w: last dimension must be 2 (x, y), got shape {tuple(w.shape)}")
    rtol = default_rtol(torch.float64) if o.loss_rtol is None else o.loss_rtol

    start = time.perf_counter()
    dtype, w = w.dtype, w.detach().to(torch.float64)
    theta = _initial_angle(w, angle, generator)
    _, g0 = _loss_and_grad(problem, w)
    start_loss = problem.loss([w.to(dtype)])  # the loss at the caller's point, in the caller's dtype
    record = TeleportRecord(
        method="so2", loss_before=to_list(start_loss), grad_norm_sq_before=to_list(g0.square().sum(-1))
    )
    angles = _ascend(problem, w, theta, o.lr, o.steps, rtol, record)
    best = _chosen_angle(problem, w, angles, g0.square().sum(-1), o.keep, record)
    tolerance = default_rtol(dtype) if o.loss_rtol is None else rtol
    teleported, theta = _in_callers_dtype(problem, w, [best], start_loss, dtype, tolerance, record)
    loss1, g1 = _loss_and_grad(problem, teleported)
    record.loss_after = to_list(loss1)
    record.grad_norm_sq_after = to_list(g1.square().sum(-1))
    record.trace["angle"] = [to_list(theta)]
    record.cost_s = time.perf_counter() - start
    return teleported, record


@dataclass(frozen=True)
class SO2(Teleport):
    """Rotation of ``φ(w)`` for a 2-D problem: ``steps`` ascent steps of size ``lr`` on the angle.

    The start θ₀ ~ U[0, π) is drawn from a generator seeded with ``seed`` (one per object, so the angles of a
    run's teleports differ and repeat from run to run).

    Args:
        lr: the ascent's step size on the angle (positive).
        steps: the number of ascent steps (``≥ 0``).
        seed: the seed of the object's generator of θ₀ (``≥ 0``).
        loss_rtol: the relative change of the loss a step may make
            (:func:`~symtele.teleports.invariance.preserved`); ``None`` for the dtype's default
            (:func:`~symtele.teleports.invariance.default_rtol`).
        keep: ``"last"`` (the last angle, the writeup's) or ``"steepest"`` (the steepest angle visited, or none).

    Raises:
        TypeError: ``lr``, ``steps``, ``seed`` or ``loss_rtol`` of the wrong type.
        ValueError: ``lr`` or ``loss_rtol`` not finite and positive, a negative ``steps`` or ``seed``, or another
            ``keep``.
    """

    name = "so2"
    lr: float = 1e-3
    steps: int = 10
    seed: int = 0
    loss_rtol: float | None = None
    keep: str = "last"
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        self._set(
            lr=checks.positive("lr", self.lr),
            steps=checks.count("steps", self.steps),
            seed=checks.count("seed", self.seed),
            loss_rtol=None if self.loss_rtol is None else checks.positive("loss_rtol", self.loss_rtol),
            keep=checks.choice("keep", self.keep, ("last", "steepest")),
            _generator=torch.Generator().manual_seed(self.seed),
        )

    def check(self, objective, params):
        """Raise unless ``objective`` is a 2-D problem.

        Args:
            objective: the objective to teleport.
            params: its parameters (not inspected).

        Raises:
            TypeError: ``objective`` is not a :class:`~symtele.problems.Problem2D`.
        """
        if not isinstance(objective, Problem2D):
            raise TypeError(f"Invalid teleport: SO(2) acts on 2-D problems only, not on {type(objective).__name__}")

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params[0]`` as :func:`so2_teleport` does, θ₀ drawn from this object's generator.

        Args:
            objective: the 2-D problem.
            params: ``[w]``, the point.
            grads: the gradient at ``w`` (unused: recomputed).
            loss: the loss at ``w`` (unused: recomputed).

        Returns:
            ``([w_teleported], grads, loss, record)``: the gradient and loss at the teleported point.

        Raises:
            TypeError: ``w`` is not a floating-point tensor.
            ValueError: a non-finite ``w`` or a last dimension other than 2.
        """
        w, record = _teleport(objective, params[0], self, None, self._generator)
        loss, grads = objective.loss_and_grad([w])
        return [w], grads, loss, record
