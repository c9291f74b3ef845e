"""The data-dependent GL(h) action of Zhao, Gower, Walters and Yu (ICLR 2024) on a bias-free LeakyReLU MLP.

For the MLP ``x ↦ W_L σ(… σ(W_1 x))`` (:func:`symtele.models.leaky_mlp`), take a hidden layer ``m`` of width
``h``, the batch's activations entering it as the columns of ``X`` (``d × n``, one column per example), the
pre-activations ``Z = W_m X`` (``h × n``), and an invertible ``g`` in GL(h). The action is

    W_m ← g W_m,        W_{m+1} ← W_{m+1} σ(Z) σ(g Z)⁺,

every other weight unchanged (``⁺`` the Moore–Penrose pseudo-inverse). The layer after ``m`` then sees
``W_{m+1} σ(Z) σ(gZ)⁺ σ(gZ)`` where it saw ``W_{m+1} σ(Z)``. What that keeps depends on ``n`` and ``h``:

* the batch's outputs are kept exactly when ``σ(gZ)⁺ σ(gZ) = I_n``, that is when ``σ(gZ)`` has full column
  rank ``n`` (so ``n ≤ h``); with more examples than units (Zhao et al.'s own runs teleport on 2,000 examples
  with ``h`` = 32) the action changes the outputs on the batch itself;
* ``g = I`` leaves the weights unchanged only when ``σ(Z) σ(Z)⁺ = I_h``, that is when ``σ(Z)`` has full row
  rank ``h`` (so ``n ≥ h``); with fewer examples it projects ``W_{m+1}`` onto the span of the batch's
  activations, which changes the network on other data before ``g`` has moved at all;
* with ``n = h`` and ``σ(Z)`` invertible both hold, ``σ(gZ)⁺ = σ(gZ)⁻¹``, and the action is a group action
  (``g₁·(g₂·w) = (g₁g₂)·w``) that keeps the outputs on the batch. On any other input ``x'`` the layer's
  activations ``σ(g W_m x')`` are not a linear image of ``σ(W_m x')``, so the network's function changes: the
  symmetry is one of the loss on that batch, not of the network.

:func:`data_gl_teleport` therefore acts only on a batch of exactly ``h`` examples whose activations entering the
layer after ``m`` are invertible. It parametrises ``g = I + T`` (``T`` in gl(h)), starts at ``T = 0``, and takes
gradient steps on ``T`` to decrease or increase the sharpness φ or the curvature ψ of
:mod:`symtele.teleports.generalisation` (the same objectives as the positive rescalings' teleport, evaluated at
the moved point ``g·w``), all in float64. It reports the training loss on the batch (kept to rounding) and on
held-out data (the price of a data-dependent group), and the condition number of ``σ(gZ)``. The GL(n) baseline of
:mod:`symtele.teleports.gln` is Zhao et al.'s earlier (2022) form of the action, on the regression task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import checks
from .generalisation import DIRECTIONS, ObjectiveMove, _t_range, make_objective, module_loss
from .invariance import default_rtol, preserved
from .rescale import symmetry_of

#: the objectives the GL(h) teleport moves (both from :func:`~symtele.teleports.generalisation.make_objective`)
GL_OBJECTIVES = ("sharpness", "curvature")
#: the group's name in records
GROUP = "gl-data"


def hidden_layers(model: nn.Module) -> list[int]:
    """The positions in ``model`` of the ``Linear`` layers whose outputs are hidden units, checked.

    Args:
        model: a bias-free LeakyReLU MLP, ``nn.Sequential(Linear, LeakyReLU, …, Linear)`` with every ``Linear``
            bias-free (:func:`symtele.models.leaky_mlp`).

    Returns:
        The indices into ``model`` of every ``Linear`` but the last (hidden layer ``m`` is entry ``m``).

    Raises:
        ValueError: ``model`` of another structure, naming what is wrong.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"Invalid model: {type(model).__name__} (expected nn.Sequential(Linear, LeakyReLU, …, Linear))"
        )
    modules = list(model)
    for i, module in enumerate(modules):
        expected = nn.Linear if i % 2 == 0 else nn.LeakyReLU
        if not isinstance(module, expected):
            raise ValueError(
                f"Invalid model: layer {i} is {type(module).__name__}, expected {expected.__name__} "
                "(the structure Linear, LeakyReLU, …, Linear)"
            )
        if isinstance(module, nn.Linear) and module.bias is not None:
            raise ValueError(f"Invalid model: layer {i} (Linear) has a bias (the action is for bias-free MLPs)")
    if len(modules) < 3 or len(modules) % 2 == 0:
        raise ValueError(
            f"Invalid model: {len(modules)} layers (expected Linear, LeakyReLU, …, Linear with a hidden layer)"
        )
    return list(range(0, len(modules) - 1, 2))


def _forward_to(model: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor, stop: int) -> torch.Tensor:
    """The input of layer ``stop`` of ``model`` at the weights ``params`` (rows: examples)."""
    for i in range(stop):
        x = x @ params[f"{i}.weight"].T if isinstance(model[i], nn.Linear) else model[i](x)
    return x


def _moved(model, params, inputs, position, g) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``g·w`` on the hidden layer at ``position``, and ``σ(gZ)`` (``h × n``)."""
    first, second = f"{position}.weight", f"{position + 2}.weight"
    z = params[first] @ _forward_to(model, params, inputs, position).T  # h × n
    sigma = model[position + 1]
    moved_activations = sigma(g @ z)
    out = dict(params)
    out[first] = g @ params[first]
    out[second] = params[second] @ sigma(z) @ torch.linalg.pinv(moved_activations)
    return out, moved_activations


def gl_act(
    model: nn.Module, params: dict[str, torch.Tensor], inputs: torch.Tensor, layer: int, g: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The parameters ``g·w``: ``W_m ← g W_m``, ``W_{m+1} ← W_{m+1} σ(W_m X) σ(g W_m X)⁺`` (the module's docstring).

    No condition is checked on the batch: with ``n ≠ h`` examples, or ``σ(W_m X)`` singular, the result need not
    keep the batch's outputs nor be ``w`` at ``g = I`` (the module's docstring says when it does).
    :func:`data_gl_teleport` checks them.

    Args:
        model: a bias-free LeakyReLU MLP (:func:`hidden_layers`); its own parameters are not used or changed.
        params: every parameter of ``model`` by name (``"0.weight"``, ``"2.weight"``, …); autograd flows through
            them and ``g``.
        inputs: the batch ``X``, one example per row.
        layer: the hidden layer ``m``, 0 for the first.
        g: an ``h × h`` matrix, ``h`` the layer's width.

    Returns:
        The moved parameters by name (the others the same tensors as in ``params``).

    Raises:
        ValueError: a model of another structure, a layer out of range, or ``g`` of the wrong shape.
    """
    positions = hidden_layers(model)
    layer = _layer(layer, positions)
    width = model[positions[layer]].out_features
    if not isinstance(g, torch.Tensor) or tuple(g.shape) != (width, width):
        shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"Invalid g: shape {shape} (hidden layer {layer} has width {width}: expected {width}×{width})")
    return _moved(model, params, inputs, positions[layer], g)[0]


def _layer(layer, positions: list[int]) -> int:
    layer = checks.count("layer", layer)
    if layer >= len(positions):
        raise ValueError(
            f"Invalid layer: {layer} (the model has {len(positions)} hidden layers: 0 to {len(positions) - 1})"
        )
    return layer


@dataclass(kw_only=True)
class DataGLRecord(ObjectiveMove):
    """What :func:`data_gl_teleport` did.

    The fields of :class:`~symtele.teleports.generalisation.ObjectiveMove` (``stopped`` also says why the
    teleport could not act at all), and the data-dependent group's own.

    Attributes:
        group: ``"gl-data"``.
        layer: the hidden layer acted on (0 for the first).
        width: its width ``h`` (the batch's size).
        g_distance: ``‖g − I‖_F`` of the returned point.
        rank: the rank of ``σ(gZ)`` at the returned point (``h`` for a valid action).
        condition: its condition number (largest over smallest singular value).
        condition_before: the condition number of ``σ(Z)``, at ``w``.
        held_out_loss_before: the loss on the held-out batch at ``w`` (``None`` without one).
        held_out_loss_after: the loss on it at the returned point.
        held_out_loss_change: ``(after − before) / |before|``, signed.
    """

    group: str
    layer: int
    width: int
    g_distance: float
    rank: int
    condition: float
    condition_before: float
    held_out_loss_before: float | None = None
    held_out_loss_after: float | None = None
    held_out_loss_change: float | None = None


def _pair(name: str, value) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(b, torch.Tensor) for b in value):
        raise TypeError(f"Invalid {name}: expected (inputs, targets), two tensors, got {type(value).__name__}")
    return value[0], value[1]


def _spectrum(activations: torch.Tensor) -> tuple[int, float]:
    """The rank and condition number of a square matrix (singular values in float64)."""
    values = torch.linalg.svdvals(activations.detach().double())
    tol = values.max() * max(activations.shape) * torch.finfo(torch.float64).eps
    rank = int((values > tol).sum())
    smallest = float(values.min())
    return rank, (float(values.max()) / smallest if smallest > 0 else math.inf)


def _loss(model, loss_fn, params, batch) -> float:
    with torch.no_grad():
        return float(module_loss(model, loss_fn, *batch)(params))


def data_gl_teleport(
    model: nn.Module,
    loss_fn: Callable,
    batch: tuple[torch.Tensor, torch.Tensor],
    objective: str = "sharpness",
    direction: str = "decrease",
    *,
    layer: int = 0,
    steps: int = 10,
    max_step: float = 0.1,
    seed: int = 0,
    directions: int = 100,
    t_range: tuple[float, float] = (0.1, 1.0),
    t_count: int = 10,
    samples: int = 100,
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_condition: float = 1e6,
    loss_rtol: float | None = None,
) -> tuple[dict[str, torch.Tensor], DataGLRecord]:
    """Move ``model``'s parameters by the data-dependent GL(h) action to decrease or increase φ or ψ.

    With ``g = I + T`` acting on hidden layer ``layer`` given the batch (the module's docstring), from ``T = 0``
    each step moves ``T`` by ``max_step`` in Frobenius norm along ``±∂objective/∂T`` (autograd through the
    action and the objective, float64). A step that does not improve the objective, or makes ``σ(gZ)`` worse
    conditioned than ``max_condition``, is retried at half its size. The objective is
    :func:`~symtele.teleports.generalisation.make_objective`'s sharpness (on the batch) or curvature, evaluated
    at ``g·w``. The moved weights are cast to the model's dtype and the batch's loss confirmed with one forward
    pass (within ``loss_rtol``: 1e-5 in float32, 1e-10 in float64 by default), walking back step by step if
    rounding breaks it. The model itself is not changed.

    When the teleport cannot act (``σ(W_m X)`` singular or worse conditioned than ``max_condition`` at ``w``) it
    returns ``w`` with ``steps_taken`` 0 and ``stopped`` saying why.

    Args:
        model: a bias-free LeakyReLU MLP (``nn.Sequential(Linear, LeakyReLU, …, Linear)``, as
            :func:`symtele.models.leaky_mlp` builds).
        loss_fn: ``(outputs, targets) → scalar``.
        batch: ``(inputs, targets)`` with exactly ``h`` examples, ``h`` the width of hidden layer ``layer``.
        objective: ``"sharpness"`` or ``"curvature"``.
        direction: ``"decrease"`` or ``"increase"``.
        layer: the hidden layer ``m`` acted on, 0 for the first.
        steps: gradient steps on ``T``.
        max_step: ``‖ΔT‖_F`` of a full step.
        seed: the seed of the objective's random directions or Lie-algebra elements.
        directions: the sharpness's random directions.
        t_range: the sharpness's range of step sizes.
        t_count: the sharpness's step sizes.
        samples: the curvature's random Lie-algebra elements (of the positive rescalings, as for their teleport).
        held_out: ``(inputs, targets)`` the loss is also measured on before and after (any size), or ``None``.
        max_condition: the largest condition number of ``σ(gZ)`` accepted.
        loss_rtol: the relative change of the batch's loss accepted.

    Returns:
        ``(params, record)``: the new parameters by name (every parameter of the model, its dtype) and a
        :class:`DataGLRecord`.

    Raises:
        ValueError: a bad argument (named, before any compute): a model of another structure, a layer out of
            range, a batch of other than ``h`` examples, an objective other than :data:`GL_OBJECTIVES`, a bad
            direction, count, step, range, seed or tolerance.
        TypeError: a loss_fn that is not callable, or a batch or held-out batch that is not two tensors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    positions = hidden_layers(model)
    layer = _layer(layer, positions)
    if not callable(loss_fn):
        raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
    inputs, targets = _pair("batch", batch)
    if held_out is not None:
        _pair("held_out", held_out)
    width = model[positions[layer]].out_features
    if len(inputs) != width:
        raise ValueError(
            f"Invalid batch: {len(inputs)} examples (hidden layer {layer} has width {width}: the action keeps the "
            f"batch's outputs and is the identity at g = I only on exactly {width} examples; with more it changes "
            "the batch's outputs, with fewer it projects the next layer's weights)"
        )
    checks.choice("objective", objective, GL_OBJECTIVES)
    checks.choice("direction", direction, DIRECTIONS)
    steps = checks.count("steps", steps, minimum=1)
    max_step = checks.positive("max_step", max_step)
    seed = checks.count("seed", seed)
    _t_range(t_range)
    for name, value in (("directions", directions), ("t_count", t_count), ("samples", samples)):
        checks.count(name, value, minimum=1)
    max_condition = checks.positive("max_condition", max_condition)
    if max_condition < 1:
        raise ValueError(f"Invalid max_condition: {max_condition!r} (a condition number is at least 1)")
    loss_rtol = None if loss_rtol is None else checks.positive("loss_rtol", loss_rtol)

    start = time.perf_counter()
    position = positions[layer]
    own = {n: p.detach() for n, p in model.named_parameters()}
    params = {n: p.double() for n, p in own.items()}
    x64 = inputs.detach().double()
    measure = make_objective(
        objective,
        module_loss(model, loss_fn, x64, targets),
        params,
        symmetry_of(model, inputs),
        directions=directions,
        t_range=t_range,
        t_count=t_count,
        samples=samples,
        seed=seed,
    )
    eye = torch.eye(width, dtype=torch.float64, device=x64.device)

    def evaluate(t: torch.Tensor) -> tuple[float, torch.Tensor, int, float]:
        """The objective at ``(I + t)·w``, its gradient in ``t``, and the rank and condition of ``σ(gZ)``."""
        with torch.enable_grad():
            t = t.detach().clone().requires_grad_(True)
            moved, activations = _moved(model, params, x64, position, eye + t)
            value = measure.at(moved)
            (slope,) = torch.autograd.grad(value, t)
        return float(value.detach()), slope, *_spectrum(activations)

    sign = 1.0 if direction == "increase" else -1.0
    per_slope = directions * t_count if objective == "sharpness" else 0
    t = torch.zeros(width, width, dtype=torch.float64, device=x64.device)
    value, slope, rank, condition = evaluate(t)
    evaluations = per_slope
    trail, values, conditions, ranks, stopped, shrink = [t], [value], [condition], [rank], None, 1.0
    if rank < width or not condition <= max_condition:
        stopped = (
            f"cannot act: σ(W_m X) of hidden layer {layer} on the batch has rank {rank} of {width} and condition "
            f"number {condition:.3g} (at most {max_condition:g} accepted): the action needs it invertible"
        )
    for k in range(steps if stopped is None else 0):
        norm = float(slope.norm())
        if not math.isfinite(norm) or norm == 0:
            stopped = f"step {k + 1}: the objective's gradient in g is {'zero' if norm == 0 else 'not finite'}"
            break
        candidate = t + shrink * max_step * sign * slope / norm
        value, new_slope, rank, condition = evaluate(candidate)
        evaluations += per_slope
        if not math.isfinite(value):
            stopped = f"step {k + 1} rejected: the objective is not finite"
            break
        if not sign * value > sign * values[-1] or rank < width or not condition <= max_condition:
            shrink /= 2  # overshot, or σ(gZ) near singular: the same direction, half the step
            if shrink < 2**-20:
                stopped = f"step {k + 1}: no progress at 2^-20 of the step (a stationary point or the rank's edge)"
                break
            continue
        t, slope = candidate, new_slope
        trail.append(t)
        values.append(value)
        conditions.append(condition)
        ranks.append(rank)
    if stopped is None and len(trail) - 1 < steps:
        stopped = f"{steps - len(trail) + 1} of {steps} steps overshot (retried at half the step)"
    loss_before = _loss(model, loss_fn, own, batch)
    rtol = default_rtol(next(iter(own.values())).dtype) if loss_rtol is None else loss_rtol
    for k in range(len(trail) - 1, -1, -1):
        with torch.no_grad():
            moved = _moved(model, params, x64, position, eye + trail[k])[0] if k else params
        moved = {n: p.to(own[n].dtype) if k else own[n].clone() for n, p in moved.items()}
        loss_after = _loss(model, loss_fn, moved, batch)
        pair = torch.tensor([loss_before, loss_after], dtype=torch.float64)
        if k == 0 or bool(preserved(pair[0], pair[1], rtol)):
            break
        stopped = f"the batch's loss changed beyond {rtol:g} at step {k}: walked back to step {k - 1}"
    held = {}
    if held_out is not None:
        before, after = _loss(model, loss_fn, own, held_out), _loss(model, loss_fn, moved, held_out)
        held = dict(
            held_out_loss_before=before,
            held_out_loss_after=after,
            held_out_loss_change=(after - before) / max(abs(before), math.ulp(0.0)),
        )
    record = DataGLRecord(
        objective=objective,
        direction=direction,
        loss_before=loss_before,
        loss_after=loss_after,
        steps_taken=k,
        stopped=stopped,
        trace=values[: k + 1],
        cost_s=time.perf_counter() - start,
        gradient_evaluations=evaluations,
        group=GROUP,
        layer=layer,
        width=width,
        g_distance=float(trail[k].norm()),
        rank=ranks[k],
        condition=conditions[k],
        condition_before=conditions[0],
        **held,
    )
    return moved, record
