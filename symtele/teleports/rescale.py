"""Closed-form teleportation along any network's positive rescalings (:mod:`~symtele.teleports.discovery`).

A :class:`~symtele.teleports.discovery.Symmetry` acts on every parameter ``p`` by a diagonal factor,
``p ← p · e^{a_p(s)}`` with ``a_p(s) = Σ_t sign_t s[units_t]`` linear in the log-scales ``s``. The loss
is unchanged, ``L(g_s·w) = L(w)`` for every ``w``, so its gradient is equivariant:

    ∇_p L(g_s·w) = e^{−a_p(s)} ∇_p L(w),      ‖∇L(g_s·w)‖² = Σ_p Σ_entries (∇_p L)² e^{−2 a_p(s)} .

The objective of the teleport and its derivative in every scale follow from the gradient already at
hand, whatever the architecture:

    ∂‖∇L(g_s·w)‖² / ∂s_u = −2 Σ_t sign_t Σ_{entries of term t with unit u} (∇_p L)² e^{−2 a_p(s)} .

Summing ``(∇_p L)²`` once over the axes no scale depends on (a 3×3 kernel, say) leaves arrays a
fraction of the weights' size; each ascent step is then a few passes over those, and the teleport
costs about one pass over the weights to apply the scales plus one forward pass to confirm the loss,
instead of a forward–backward–backward pass per step. :func:`gradient_norm_reference` computes the
same objective by double backpropagation, the definition the closed form is tested against, and
:func:`reference_teleport` ascends with it (the teleport by double backpropagation, for tests and benchmarks).

Each ascent step moves the log-scales along ``∂‖∇L‖²/∂s``. By default the step is scale-free: the
largest change of any log-scale per step is ``max_log_step`` (0.1: each scale moves by at most a factor
``e^{0.1}`` per step), ``Δs = max_log_step · ∂ / max_u |∂_u|``, which behaves the same whatever the size of
the loss and of its gradient. With ``lr`` given it is the course project's parameterisation instead,
``d = 1 + clip(lr · ∂, ±clamp)``, ``s ← s + log d``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import checks
from ..history import TeleportRecord
from .base import Teleport
from .discovery import MODULE_INTERNALS, discover
from .invariance import default_rtol, preserved
from .symmetry import Symmetry


class _Squares:
    """The squared gradient, reduced to what the closed form of ``‖∇L(g_s·w)‖²`` needs.

    Per parameter: the squared gradient summed over the axes no scale depends on, in float64; and the squared
    gradient of the parameters no scale acts on, which no scale changes. Per term, what every evaluation of the
    slope needs and no scale changes is kept too: the axes its units do not index (summed over in the slope) and
    its units spread over the rest, flat (the slots of ``index_add_``).
    """

    def __init__(self, symmetry: Symmetry, grads: dict[str, torch.Tensor]):
        self.n = symmetry.n_scales
        acted = set(symmetry.params)
        self.fixed = sum(g.detach().double().square().sum() for n, g in grads.items() if n not in acted)
        self.items = []
        for name in symmetry.params:
            terms = [t for t in symmetry.terms if t.param == name]
            g = grads[name]
            units = [t.units.to(g.device) for t in terms]  # as many dimensions as the parameter
            free = tuple(axis for axis in range(g.dim()) if all(u.shape[axis] == 1 for u in units))
            squares = g.detach().square()
            if free:  # summed in the gradient's dtype (one pass over the weights), then float64
                squares = squares.sum(free, keepdim=True)
            shape = torch.broadcast_shapes(squares.shape, *(u.shape for u in units))  # that of the weighted squares
            parts = []
            for u, t in zip(units, terms):
                axes = tuple(i for i in range(len(shape)) if u.shape[i] == 1 and shape[i] > 1)
                kept = [1 if i in axes else n for i, n in enumerate(shape)]
                parts.append((u, t.sign, axes, u.expand(kept).reshape(-1)))
            self.items.append((squares.double(), parts))

    def objective_and_slope(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``‖∇L(g_s·w)‖²`` and its gradient in ``s`` (float64, ``n_scales`` entries)."""
        padded = torch.cat([s, s.new_zeros(1)])
        value = s.new_zeros(()) + self.fixed
        slope = s.new_zeros(self.n + 1)
        for squares, parts in self.items:
            a = sum(sign * padded[u] for u, sign, _, _ in parts)
            weighted = squares * torch.exp(-2 * a)
            value = value + weighted.sum()
            for _, sign, axes, slots in parts:
                part = weighted.sum(axes, keepdim=True) if axes else weighted
                slope.index_add_(0, slots, (-2.0 * sign) * part.reshape(-1))
        return value, slope[: self.n]


def ascent_step(slope: torch.Tensor, o: Rescale) -> torch.Tensor:
    """The change of the log-scales for one ascent step (see the module's docstring).

    Args:
        slope: ``∂‖∇L(g_s·w)‖²/∂s``.
        o: the options: with ``o.lr`` given, ``log(1 + clip(lr · slope, ±clamp))``; otherwise the scale-free
            ``max_log_step · slope / max_u |slope_u|`` (zero for a zero slope).

    Returns:
        The change of every log-scale, the shape of ``slope``.
    """
    if o.lr is not None:
        return torch.log1p(torch.clamp(o.lr * slope, -o.clamp, o.clamp))
    top = slope.abs().max()
    return slope * (o.max_log_step / top) if bool(top > 0) else torch.zeros_like(slope)


def ascend(symmetry: Symmetry, grads: dict[str, torch.Tensor], o: Rescale):
    """``o.steps`` ascent steps on ``‖∇L(g_s·w)‖²`` from ``s = 0``, in closed form from ``grads``.

    A step whose objective or log-scales are not finite ends the ascent (:func:`rescale_teleport`'s record
    says so).

    Args:
        symmetry: the rescalings.
        grads: the gradient at ``w`` of every parameter, by name.
        o: the options (``steps``, and the step of :func:`ascent_step`).

    Returns:
        ``(trail, values)``: the log-scales after every step (``trail[0]`` is 0), float64, and the objective at
        each of them.
    """
    squares = _Squares(symmetry, grads)
    s = torch.zeros(symmetry.n_scales, dtype=torch.float64, device=next(iter(grads.values())).device)
    value, slope = squares.objective_and_slope(s)
    trail, values = [s], [value]
    for _ in range(o.steps):
        candidate = s + ascent_step(slope, o)
        value, new_slope = squares.objective_and_slope(candidate)
        if not bool(torch.isfinite(value)) or not bool(torch.isfinite(candidate).all()):
            break
        s, slope = candidate, new_slope
        trail.append(s)
        values.append(value)
    return trail, values


def scale_factors(symmetry: Symmetry, s: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``e^{a_p(s)}`` for every parameter a scale acts on, in the parameter's dtype and device.

    Args:
        symmetry: the rescalings.
        s: the log-scales, ``n_scales`` entries.
        params: the parameters, by name (at least those a scale acts on).

    Returns:
        The factor of every parameter a scale acts on, by name, broadcastable to the parameter.
    """
    out = {}
    for name in symmetry.params:
        p = params[name]
        a = symmetry.log_factor(name, s.to(p.device), p)
        out[name] = torch.exp(a).to(p.dtype)
    return out


def scale_derivatives(
    symmetry: Symmetry, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The derivative of the loss along every log-scale at ``s = 0``, from a gradient, and its scale.

    ``∂/∂s_k L(g_s·w)|_{s=0} = Σ_p Σ_entries ∂a_p/∂s_k · w_p ∇_p L``: zero for every ``k`` when ``grads`` is the
    gradient of a loss the rescalings keep (the loss is constant along each scale), whatever the batch, the
    processes it was averaged over, or a common factor (a clipping of the global norm). A penalty such as
    ``λ‖w‖²`` in the loss, or a gradient changed entry by entry (clipped per parameter, noise added), breaks it.

    Args:
        symmetry: the rescalings.
        params: the parameters by name (at least those a scale acts on).
        grads: a gradient by name, the same shapes.

    Returns:
        ``(derivatives, magnitudes)``, ``n_scales`` float64 entries each: the derivative along each scale, and the
        sum of the absolute values of the terms it adds up (its size were they not to cancel).
    """
    n = symmetry.n_scales
    derivatives = torch.zeros(n + 1, dtype=torch.float64)
    magnitudes = torch.zeros(n + 1, dtype=torch.float64)
    for name in symmetry.params:
        w = params[name].detach()
        product = w * grads[name].detach().to(w.dtype)
        size = product.abs()
        for term in (term for term in symmetry.terms if term.param == name):
            units = term.units.reshape((1,) * (product.dim() - term.units.dim()) + tuple(term.units.shape))
            along = [d for d in range(product.dim()) if units.shape[d] == 1 and product.shape[d] != 1]
            for out, values, sign in ((derivatives, product, term.sign), (magnitudes, size, 1)):
                summed = values.sum(dim=along, keepdim=True) if along else values  # in the parameters' dtype
                index = units.expand(summed.shape).reshape(-1).cpu()
                out.index_add_(0, index, summed.reshape(-1).to(torch.float64).cpu(), alpha=sign)
    return derivatives[:n], magnitudes[:n]


def gradient_norm_reference(
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    symmetry: Symmetry,
    s: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``‖∇L(g_s·w)‖²`` and its gradient in ``s`` by double backpropagation.

    Act on the parameters with ``s``, differentiate the loss, square, and differentiate again. The package's
    one definition of the teleport's objective by double backpropagation: the closed forms of :class:`Rescale`
    and of
    :class:`~symtele.teleports.positive_scale.PositiveScale` are tested against it, and
    :func:`reference_teleport` ascends with it.

    Args:
        loss_of: maps a dict of all the parameters to the loss (one value per copy when batched).
        params: all the parameters, by name.
        symmetry: the rescalings.
        s: the log-scales, ``(*batch, n_scales)``: leading dimensions index copies of the network (the leading
            dimensions of its parameters), each with its own scales.

    Returns:
        ``(value, slope)``: ``‖∇L(g_s·w)‖²`` per copy (shape ``batch``) and its gradient in ``s`` (the shape of
        ``s``).
    """
    batch = s.shape[:-1]
    with torch.enable_grad():
        s = s.detach().clone().requires_grad_(True)
        moved = {}
        for name, p in params.items():
            a = symmetry.log_factor(name, s, p)
            moved[name] = p.detach() * torch.exp(a).to(p.dtype) if a is not None else p.detach().requires_grad_(True)
        leaves = [moved[n] for n in params]
        grads = torch.autograd.grad(loss_of(moved).sum(), leaves, create_graph=True)
        value = sum(g.square().reshape(*batch, -1).sum(-1) for g in grads)
        (slope,) = torch.autograd.grad(value.sum(), s)
    return value.detach(), slope


def reference_teleport(
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    symmetry: Symmetry,
    log_step: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    *,
    batch_shape: tuple[int, ...] = (),
) -> dict[str, torch.Tensor]:
    """The teleport by double backpropagation, with no safety checks.

    ``steps`` rounds of ``s ← s + log_step(∂‖∇L(g_s·w)‖²/∂s)`` from ``s = 0``, each slope differentiated
    through the network (:func:`gradient_norm_reference`).

    Args:
        loss_of: maps a dict of all the parameters to the loss (one value per copy when batched).
        params: all the parameters, by name.
        symmetry: the rescalings.
        log_step: the change of the log-scales for a slope (:func:`ascent_step` for :class:`Rescale`,
            :meth:`~symtele.teleports.positive_scale.PositiveScale.log_step` for the course project's step).
        steps: ascent steps.
        batch_shape: the leading dimensions of the parameters that index copies of the network.

    Returns:
        ``g_s·w``: every parameter after the ascent, by name.
    """
    device = next(iter(params.values())).device
    s = torch.zeros(*batch_shape, symmetry.n_scales, dtype=torch.float64, device=device)
    for _ in range(steps):
        _, slope = gradient_norm_reference(loss_of, params, symmetry, s)
        s = s + log_step(slope)
    moved = {}
    for name, p in params.items():
        a = symmetry.log_factor(name, s, p)
        moved[name] = p.detach() if a is None else p.detach() * torch.exp(a).to(p.dtype)
    return moved


@dataclass(frozen=True)
class Rescale(Teleport):
    """Closed-form teleport along every positive rescaling of a ``torch.nn.Module`` that ``torch.fx`` finds.

    Any MLP, CNN or ResNet (see :mod:`~symtele.teleports.discovery`): ``steps`` ascent steps on ``‖∇L‖²`` over
    the log-scales, keeping the steepest step. The loss is checked with one forward pass; if rounding breaks
    it, the teleport walks back to the last step that keeps it. Method name ``rescale``.

    Args:
        steps: the number of ascent steps (``≥ 0``).
        max_log_step: the largest change of any log-scale per step (positive), when ``lr`` is ``None``.
        lr: with ``lr`` given, the course project's step ``d = 1 + clip(lr·∂, ±clamp)`` instead (positive).
        clamp: the clip of that step (in (0, 1), so that ``1 − clamp`` stays positive).
        loss_rtol: the relative change of the loss the teleport may make (positive); ``None`` for the
            parameters' dtype's default (1e-5 in float32, 1e-10 in float64).

    Raises:
        TypeError: a field of the wrong type.
        ValueError: a negative ``steps``; ``max_log_step``, ``lr``, ``clamp`` or ``loss_rtol`` not finite and
            positive; or ``clamp ≥ 1``.
    """

    name = "rescale"
    steps: int = 10
    max_log_step: float = 0.1
    lr: float | None = None
    clamp: float = 0.1
    loss_rtol: float | None = None

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        self._set(
            steps=checks.count("steps", self.steps),
            max_log_step=checks.positive("max_log_step", self.max_log_step),
            lr=None if self.lr is None else checks.positive("lr", self.lr),
            clamp=checks.positive("clamp", self.clamp),
            loss_rtol=None if self.loss_rtol is None else checks.positive("loss_rtol", self.loss_rtol),
        )
        if self.clamp >= 1:
            raise ValueError(f"Invalid clamp: {self.clamp} (must be < 1: a scale 1 − clamp must stay positive)")

    def check(self, objective, params):
        """Raise unless ``objective`` is a module's objective with positively rescalable units.

        Args:
            objective: the objective to teleport.
            params: its parameters (not inspected).

        Raises:
            TypeError: ``objective`` is not a :class:`~symtele.module_objective.ModuleObjective`.
            ValueError: its model has no positively rescalable units (:func:`symmetry_of`).
        """
        from ..module_objective import ModuleObjective

        if not isinstance(objective, ModuleObjective):
            raise TypeError(
                f"Invalid teleport: Rescale acts on a ModuleObjective (a torch.nn.Module and its loss), "
                f"not on {type(objective).__name__}"
            )
        symmetry_of(objective.model, objective.inputs)

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params`` with :func:`rescale_teleport` along the model's rescalings.

        Args:
            objective: the :class:`~symtele.module_objective.ModuleObjective`.
            params: its parameters, in the order of its ``names``.
            grads: the gradient at ``params``, in the same order.
            loss: the loss at ``params``.

        Returns:
            ``(params, grads, loss, record)``: the teleported parameters, their gradient by equivariance, the
            loss of the confirming forward pass, and the :class:`~symtele.history.TeleportRecord`.

        Raises:
            ValueError: the model has no positively rescalable units (:func:`symmetry_of`).
        """
        names = objective.names
        symmetry = symmetry_of(objective.model, objective.inputs)
        new, new_grads, _, record = rescale_teleport(
            dict(zip(names, params)),
            dict(zip(names, grads)),
            symmetry,
            lambda p: objective.loss([p[n] for n in names]),
            loss,
            self,
        )
        new_loss = torch.as_tensor(record.loss_after, dtype=loss.dtype, device=loss.device)
        return [new[n] for n in names], [new_grads[n] for n in names], new_loss, record


_SYMMETRIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _attribute(value, depth: int = 2):
    """A comparable snapshot of one module attribute that a ``forward`` may branch on.

    Numbers, strings, ``None``, dtypes and devices as they are; tuples, lists, dicts and plain objects' attributes
    entry by entry (``depth`` levels, 64 entries); a tensor by its shape and dtype; anything else (a function, a
    module) by its identity.
    """
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return value
    if isinstance(value, torch.Tensor):
        return "tensor", tuple(value.shape), value.dtype
    items = None
    if isinstance(value, (tuple, list, set, frozenset)):
        items = list(enumerate(value)) if isinstance(value, (tuple, list)) else [(0, v) for v in value]
    elif isinstance(value, dict):
        items = list(value.items())
    elif not isinstance(value, torch.nn.Module) and not callable(value) and hasattr(value, "__dict__"):
        items = list(vars(value).items())
    if items is None or depth == 0 or len(items) > 64:
        return type(value).__name__, id(value)
    return type(value).__name__, tuple((repr(k), _attribute(v, depth - 1)) for k, v in items)


def _structure(model: torch.nn.Module) -> tuple:
    """What a discovery depends on besides the input.

    That is the module tree, each module's own attributes (a flag, a number, a function that ``forward`` may
    branch on; :func:`_attribute`), the parameters (and whether they are frozen), the hooks (global ones too),
    and the modes when they are mixed (all-train and all-eval are both covered by every discovery).
    """
    modules = tuple(
        (
            name,
            id(m),
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple((k, _attribute(v)) for k, v in vars(m).items() if k not in MODULE_INTERNALS),
        )
        for name, m in model.named_modules()
    )
    params = tuple((name, id(p), p.requires_grad) for name, p in model.named_parameters())
    modes = tuple(m.training for m in model.modules())
    hooks = torch.nn.modules.module._global_forward_hooks, torch.nn.modules.module._global_forward_pre_hooks
    return modules, params, modes if 0 < sum(modes) < len(modes) else None, tuple(tuple(h) for h in hooks)


def symmetry_of(model: torch.nn.Module, example: torch.Tensor) -> Symmetry:
    """The model's positive rescalings, :func:`~symtele.teleports.discovery.discover` cached.

    Discovered once per model, :func:`_structure` and input shape past the batch dimension (flattening maps a
    channel to as many features as its spatial size); kept while the model lives and its structure stays. A
    ``forward`` that branches on anything else (a global variable, a random draw of Python's ``random``) is traced
    as the branch it took at the discovery: the loss checks of each teleport are then the only guard.

    Args:
        model: the network.
        example: an input batch (its shape past the batch dimension is part of the cache's key).

    Returns:
        The :class:`~symtele.teleports.symmetry.Symmetry`.

    Raises:
        ValueError: the model has no rescalable units (naming its layers left out and why; a model with attention
            head groups but no positive scale is refused too, saying so).
    """
    structure = _structure(model)
    cached = _SYMMETRIES.get(model)
    if cached is None or cached[0] != structure:
        cached = _SYMMETRIES[model] = (structure, {})
    shape = tuple(example.shape[1:]) if isinstance(example, torch.Tensor) else None
    found = cached[1].get(shape)
    if found is None:
        found = discover(model, example)
        if found.n_scales == 0:
            reasons = "; ".join(f"{k}: {v}" for k, v in found.left.items()) or "it has no Linear or Conv layers"
            pairs = len(found.pair_groups)
            also = f"; its {pairs} attention head groups are not teleported without one" if pairs else ""
            raise ValueError(
                f"Invalid model: {type(model).__name__} has no positively rescalable units ({reasons}){also}"
            )
        cached[1][shape] = found
    return found


def _why_walked_back(symmetry, s, params, loss_of, before, after, rtol, k) -> str:
    """The record's reason for walking back from step ``k``.

    That is a loss that is not finite, a change the size of rounding, or a change far beyond it, in which case
    the group whose scales alone break the loss is named (one forward pass per group, on this rare path only).
    """
    change = float((after - before).abs() / before.abs().clamp_min(torch.finfo(before.dtype).tiny))
    if not bool(torch.isfinite(after)):
        return f"the loss is not finite ({float(after)}) after step {k}: walked back to step {k - 1}"
    eps = torch.finfo(before.dtype).eps
    if change <= max(1e3 * eps, 100 * rtol):
        return f"rounding changed the loss by {change:.2g} (beyond {rtol:g}) at step {k}: walked back to step {k - 1}"
    culprits = []
    for i, group in enumerate(symmetry.groups):
        only = torch.zeros_like(s)
        only[list(group.scales)] = s[list(group.scales)]
        factors = scale_factors(symmetry, only, params)
        moved = {n: p * factors[n] if n in factors else p for n, p in params.items()}
        with torch.no_grad():
            if not bool(preserved(before, loss_of(moved), rtol)):
                culprits.append(f"group {i} ({', '.join(symmetry.label(p) for p in group.producers)})")
    which = "; ".join(culprits) or "no single group (only their combination)"
    return (
        f"the loss changed by {change:.2g} at step {k}, far beyond rounding: {which} does not keep it; "
        f"walked back to step {k - 1}"
    )


def rescale_teleport(
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    symmetry: Symmetry,
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    loss_before: torch.Tensor,
    o: Rescale,
):
    """Teleport ``params`` (all of a model's, by name) along ``symmetry`` from the gradient ``grads`` at hand.

    The ascent runs in closed form (:func:`ascend`) and keeps its steepest step; one forward pass (``loss_of``)
    confirms the loss, and if it is not kept within the tolerance the teleport walks back a step at a time
    (one forward pass each; step 0 is the start). The record's ``loss_after`` is the confirming value.

    Args:
        params: all of a model's parameters, by name.
        grads: the gradient at ``params``, by name.
        symmetry: the rescalings.
        loss_of: maps a dict of all the parameters to the loss.
        loss_before: the loss at ``params``.
        o: the options (:class:`Rescale`).

    Returns:
        ``(params, grads, factors, record)``: the new parameters, their gradient by equivariance (no backward
        pass), the factor ``e^{a_p(s)}`` of every parameter a scale acts on, and a
        :class:`~symtele.history.TeleportRecord` whose ``trace["objective"]`` holds ``‖∇L‖²`` per step up to
        the one kept and whose ``log_scales`` are the final log-scales.
    """
    start = time.perf_counter()
    record = TeleportRecord(method=o.name, loss_before=float(loss_before))
    trail, values = ascend(symmetry, grads, o)
    record.grad_norm_sq_before = float(values[0])
    if len(trail) - 1 < o.steps:
        record.stopped = f"step {len(trail)} rejected: non-finite ‖∇L‖²"
    dtype = next(iter(params.values())).dtype
    rtol = default_rtol(dtype) if o.loss_rtol is None else o.loss_rtol
    best = max(range(len(trail)), key=lambda i: float(values[i]))  # a step may overshoot: keep the steepest
    if any(float(v) < float(values[best]) for v in values[best + 1 :]):  # not when ‖∇L‖² never changed
        record.stopped = f"kept step {best} of {len(trail) - 1}, the steepest (later steps overshot)"
    for k in range(best, -1, -1):
        factors = scale_factors(symmetry, trail[k], params)
        moved = {n: p * factors[n] if n in factors else p for n, p in params.items()}
        with torch.no_grad():
            loss_after = loss_of(moved)
        if k == 0 or bool(preserved(loss_before, loss_after, rtol)):
            break
        record.stopped = _why_walked_back(symmetry, trail[k], params, loss_of, loss_before, loss_after, rtol, k)
    record.steps_taken = k
    record.loss_after = float(loss_after)
    record.grad_norm_sq_after = float(values[k])
    new_grads = {n: g / factors[n] if n in factors else g for n, g in grads.items()}
    record.trace = {"objective": [float(v) for v in values[: k + 1]]}
    record.log_scales = trail[k].tolist()
    record.grad_evals = 0  # the gradient at hand is all it uses; its cost is one forward pass and arithmetic
    record.forward_evals = best - k + 1
    if not bool(values[k] > values[0]):
        why = record.stopped or ("steps=0" if o.steps == 0 else "the gradient has no component along the scales")
        record.stopped = f"moved nothing: {why}"
    record.cost_s = time.perf_counter() - start
    return moved, new_grads, factors, record
